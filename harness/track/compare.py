"""The regression gate: compare two result sets cell by cell, metric by metric.

A result set is a store folder (``results/``, every ``<suite>.jsonl``) or one ``.jsonl`` file; the
latest ``ok`` record of each (suite, cell) is compared. Each metric's direction and kind come from
its declaration in the metric catalog (:mod:`harness.metrics`, :func:`rule_for`): speed (throughput
higher, latency and durations lower) and memory (bytes lower) are judged by their relative change,
accuracy (ratios of quality: exact match, agreement) by its absolute change in points, perplexity
and KL by their relative change. Analytic predictions, residuals, counts, host properties, one-off
costs and names the catalog does not declare are not judged. A change worse than the metric's threshold is
a *regression*, a change as large the other way an *improvement*.

Where both sides keep at least :data:`MIN_SAMPLES` raw samples (repeats, per-request latencies), a
change beyond the threshold counts only if the 95 % bootstrap intervals of the two medians do not
overlap (seeded, so the verdict is reproducible); otherwise it is *noise*.

Thresholds come from the catalog (by kind, :data:`harness.metrics.DEFAULT_THRESHOLDS`, unless a
declaration sets its own) and are overridden per metric name or
fnmatch pattern by the suite's ``compare:`` block. Cells present on one side only are listed, never
dropped silently. Pure: numpy only.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from harness.metrics import Threshold, spec_for
from harness.results.records import Metric, Record
from harness.results.store import latest_per_cell, read_records

Kind = Literal["speed", "memory", "accuracy", "quality"]
MIN_SAMPLES = 3
BOOTSTRAP = 2000


class Rule(BaseModel):
    """How one metric is judged."""

    direction: Literal["higher", "lower"]
    kind: Kind
    threshold: Threshold = Field(description="the catalog's threshold for it (a suite's `compare:` may override)")


def rule_for(name: str, metric: Metric) -> Rule | None:
    """The direction and kind of a metric, from its declaration in the metric catalog; None when the gate
    does not judge it (predictions, residuals, counts, host facts, one-off costs, undeclared names)."""
    spec = spec_for(name)
    if spec is None or not spec.judged or metric.source == "analytic":
        return None
    return Rule(direction=spec.direction, kind=spec.kind, threshold=spec.default_threshold)  # type: ignore[arg-type]


def _median_interval(samples: list[float], seed: int) -> tuple[float, float]:
    arr = np.asarray(samples, dtype=float)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(arr, size=(BOOTSTRAP, arr.size), replace=True), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


class Change(BaseModel):
    """One judged metric of one cell."""

    suite: str
    cell_id: str
    metric: str
    unit: str
    base: float
    new: float
    delta: float = Field(description="new - base")
    relative: float | None = Field(description="delta / |base| (None when base is 0)")
    threshold: Threshold
    direction: Literal["higher", "lower"]
    verdict: Literal["regression", "improvement", "unchanged", "noise"]
    test: str = Field(description="how the verdict was reached")


class Comparison(BaseModel):
    """Every judged change, and the cells found on one side only."""

    changes: list[Change]
    only_base: list[str]
    only_new: list[str]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]


def load_results(path: str | Path) -> dict[tuple[str, str], Record]:
    """The latest ``ok`` record of each (suite, cell id) under ``path`` (a store folder or a .jsonl file)."""
    return latest_per_cell(read_records(path), ("ok",))


def threshold_for(name: str, rule: Rule, overrides: dict[str, Threshold]) -> Threshold:
    """The suite's threshold for ``name`` (exact name first, then the first matching pattern), else the kind's default."""
    if name in overrides:
        return overrides[name]
    for pattern, t in overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return t
    return rule.threshold


def judge(suite: str, cell_id: str, name: str, base: Metric, new: Metric, rule: Rule, threshold: Threshold) -> Change:
    """The verdict on one metric (see the module docstring)."""
    delta = new.value - base.value
    rel = delta / abs(base.value) if base.value else None
    worse = delta < 0 if rule.direction == "higher" else delta > 0
    size = abs(delta) if threshold.absolute is not None else (abs(rel) if rel is not None else (0.0 if delta == 0 else float("inf")))
    limit = threshold.absolute if threshold.absolute is not None else threshold.relative
    verdict: str = "unchanged"
    test = f"|change| {size:.4g} vs threshold {limit:g} ({'absolute' if threshold.absolute is not None else 'relative'})"
    if size > limit:  # type: ignore[operator]
        verdict = "regression" if worse else "improvement"
        if len(base.samples) >= MIN_SAMPLES and len(new.samples) >= MIN_SAMPLES:
            lo_b, hi_b = _median_interval(base.samples, 0)
            lo_n, hi_n = _median_interval(new.samples, 1)
            overlap = lo_n <= hi_b and lo_b <= hi_n
            test += f"; 95 % median intervals base [{lo_b:.4g}, {hi_b:.4g}] new [{lo_n:.4g}, {hi_n:.4g}]"
            if overlap:
                verdict = "noise"
    return Change(suite=suite, cell_id=cell_id, metric=name, unit=base.unit, base=base.value, new=new.value, delta=delta,
                  relative=rel, threshold=threshold, direction=rule.direction, verdict=verdict, test=test)  # type: ignore[arg-type]


def compare(base: dict[tuple[str, str], Record], new: dict[tuple[str, str], Record],
            overrides: dict[str, dict[str, Threshold]] | None = None) -> Comparison:
    """Judge every metric both sides have, cell by cell; ``overrides`` maps suite name -> metric -> threshold."""
    overrides = overrides or {}
    changes = []
    for key in sorted(set(base) & set(new)):
        b, n = base[key], new[key]
        for name in sorted(set(b.metrics) & set(n.metrics)):
            rule = rule_for(name, b.metrics[name])
            if rule is None:
                continue
            t = threshold_for(name, rule, overrides.get(key[0], {}))
            changes.append(judge(key[0], key[1], name, b.metrics[name], n.metrics[name], rule, t))
    return Comparison(changes=changes, only_base=[f"{s}/{c}" for s, c in sorted(set(base) - set(new))],
                      only_new=[f"{s}/{c}" for s, c in sorted(set(new) - set(base))])
