"""The regression gate: compare two result sets cell by cell, metric by metric, like with like.

A result set is a store folder (``results/``, every ``<suite>.jsonl``) or one ``.jsonl`` file. On each
side the latest record of each (suite, cell, machine) counts; the base is the latest *trusted* one (``ok``
and valid, :attr:`~harness.results.records.Record.trusted`). A cell is judged within its logical machine
(the runner name, :mod:`harness.results.machine`): an H100 runner's night is never the base of an L4
runner's. Across machines only when asked (``across_machines``), and every such change says so.

- **Like with like.** A pair is judged only when both records have the same cell key (the resolved
  configuration: model, precision, settings) and ran on the same device (GPU name, or CPU model);
  otherwise it is *not comparable*, listed with what differs, and judged only with
  ``allow_incomparable`` (and then labelled).
- **Never passes by omission.** A cell whose base was trusted and whose new record is missing or not
  ``ok`` (error, oom, timeout, invalid, skipped), and a judged metric the base had and the new record
  lacks, are *lost* and fail the gate, unless the suite's ``may_lose`` patterns allow them. A new
  record that is ``ok`` but not valid is not judged (it fails the gate as *invalid*) unless
  ``allow_invalid``, and then its changes say so.
- **Judging.** Each metric's direction and kind come from its declaration in the metric catalog
  (:mod:`harness.metrics`, :func:`rule_for`): speed and memory by their relative change, accuracy
  (ratios) by its absolute change in points, perplexity and KL by their relative change. Analytic
  predictions, residuals, counts, host facts, one-off costs and undeclared names are not judged.
  A change worse than its threshold is a *regression*, as large the other way an *improvement*.
  Where both sides keep at least :data:`MIN_SAMPLES` raw samples, a change beyond the threshold
  counts only if the 95 % bootstrap intervals of the two medians do not overlap (seeded); otherwise
  it is *noise*.
- **Thresholds.** The catalog's (by kind, :data:`harness.metrics.DEFAULT_THRESHOLDS`, unless a
  declaration sets its own), overridden per metric name or fnmatch pattern by the suite's
  ``compare:`` block; a noise file (:mod:`harness.track.noise`) raises a threshold to the smallest
  change the runner can detect, never lowers it. Each verdict says which threshold it used.

Pure: numpy only.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

from harness.measure.intervals import thin
from harness.metrics import Threshold, spec_for
from harness.results.machine import machine_of
from harness.results.records import Metric, Record, device_of
from harness.results.store import latest_per_cell, read_records

if TYPE_CHECKING:
    from harness.track.noise import NoiseFile

Kind = Literal["speed", "memory", "energy", "accuracy", "quality"]
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


MAX_BOOTSTRAP_SAMPLES = 4096  # an older record may hold any number; thinned, a bootstrap stays near 65 MB


def _median_interval(samples: list[float], seed: int) -> tuple[float, float]:
    arr = thin(samples, MAX_BOOTSTRAP_SAMPLES)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(arr, size=(BOOTSTRAP, arr.size), replace=True), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


class Change(BaseModel):
    """One judged metric of one cell."""

    suite: str
    cell_id: str
    machine: str = Field(default="", description="the logical machine of the pair (base -> new when compared across machines)")
    metric: str
    unit: str
    base: float
    new: float
    delta: float = Field(description="new - base")
    relative: float | None = Field(description="delta / |base| (None when base is 0)")
    threshold: Threshold
    threshold_source: str = Field(default="default", description="default, suite, or the noise file's figure")
    direction: Literal["higher", "lower"]
    verdict: Literal["regression", "improvement", "unchanged", "noise"]
    test: str = Field(description="how the verdict was reached")
    caveat: str | None = Field(default=None, description="why this pair would not normally be judged (allowed by option)")


class Unjudged(BaseModel):
    """A cell (or one metric of it) the gate could not judge, and why."""

    suite: str
    cell_id: str
    machine: str = ""
    metric: str | None = None
    why: str
    allowed: bool = Field(default=False, description="the suite's may_lose lets it go (does not fail the gate)")


class Comparison(BaseModel):
    """Every judged change; the pairs not comparable, lost or invalid; the cells on one side only."""

    changes: list[Change]
    not_comparable: list[Unjudged] = Field(default_factory=list)
    lost: list[Unjudged] = Field(default_factory=list, description="trusted in the base, missing or failed in the new")
    invalid: list[Unjudged] = Field(default_factory=list, description="new records that are ok but not valid")
    only_base: list[str] = Field(default_factory=list)
    only_new: list[str] = Field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def failures(self) -> list[str]:
        """Why the gate fails (empty: it passes)."""
        out = [f"regression: {self.where(c)} {c.metric}" for c in self.regressions]
        out += [f"lost: {self.where(u)}" + (f" {u.metric}" if u.metric else "") for u in self.lost if not u.allowed]
        out += [f"invalid: {self.where(u)}" for u in self.invalid if not u.allowed]
        return out

    @property
    def machines(self) -> set[str]:
        """The machines (or ``base -> new`` pairs) of the judged and unjudged pairs."""
        return {x.machine for x in [*self.changes, *self.not_comparable, *self.lost, *self.invalid]}

    def where(self, x: "Change | Unjudged") -> str:
        """``suite/cell``, with `` @ machine`` where the comparison spans more than one machine."""
        several = len(self.machines) > 1 or "->" in x.machine
        return f"{x.suite}/{x.cell_id}" + (f" @ {x.machine}" if several and x.machine else "")


def load_results(path: str | Path) -> list[Record]:
    """Every record under ``path`` (a store folder or a .jsonl file); :func:`compare` picks per cell."""
    return read_records(path)


def threshold_for(name: str, rule: Rule, overrides: dict[str, Threshold]) -> tuple[Threshold, str]:
    """The suite's threshold for ``name`` (exact name first, then the first matching pattern), else the
    kind's default; with where it came from."""
    if name in overrides:
        return overrides[name], "suite"
    for pattern, t in overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            return t, f"suite ({pattern})"
    return rule.threshold, "default"


def judge(suite: str, cell_id: str, name: str, base: Metric, new: Metric, rule: Rule, threshold: Threshold,
          source: str = "default") -> Change:
    """The verdict on one metric (see the module docstring)."""
    delta = new.value - base.value
    rel = delta / abs(base.value) if base.value else None
    worse = delta < 0 if rule.direction == "higher" else delta > 0
    size = abs(delta) if threshold.absolute is not None else (abs(rel) if rel is not None else (0.0 if delta == 0 else float("inf")))
    limit = threshold.absolute if threshold.absolute is not None else threshold.relative
    verdict: str = "unchanged"
    test = f"|change| {size:.4g} vs threshold {limit:g} ({'absolute' if threshold.absolute is not None else 'relative'}, {source})"
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
                  relative=rel, threshold=threshold, threshold_source=source, direction=rule.direction,
                  verdict=verdict, test=test)  # type: ignore[arg-type]


def _difference(b: Record, n: Record) -> str | None:
    """Why two records of one cell are not like with like (None when they are)."""
    if device_of(b, detail=True) != device_of(n, detail=True):
        return f"device: {device_of(b, detail=True)} -> {device_of(n, detail=True)}"
    if b.cell_key != n.cell_key:
        changed = sorted(k for k in set(b.cell) | set(n.cell) if b.cell.get(k) != n.cell.get(k) and k not in ("id", "timeout_s", "group", "validity"))
        return f"cell configuration changed ({', '.join(changed) or 'cell key'}): {b.cell_key} -> {n.cell_key}"
    return None


def _may_lose(patterns: list[str], cell_id: str, metric: str | None = None) -> bool:
    target = cell_id if metric is None else f"{cell_id}:{metric}"
    return any(fnmatch.fnmatchcase(target, p) for p in patterns)


def compare(base: list[Record] | dict[tuple[str, str], Record], new: list[Record] | dict[tuple[str, str], Record],
            overrides: dict[str, dict[str, Threshold]] | None = None, *, noise: "NoiseFile | None" = None,
            may_lose: dict[str, list[str]] | None = None, allow_invalid: bool = False,
            allow_incomparable: bool = False, across_machines: bool = False, machine: str | None = None) -> Comparison:
    """Judge every comparable cell (see the module docstring). ``overrides`` and ``may_lose`` map suite
    name -> metric thresholds / patterns; ``noise`` raises thresholds to what the runner can detect.
    Pairs are made within one logical machine (:func:`harness.results.machine.machine_of`); with
    ``across_machines``, each cell's latest records whatever their machines, each change labelled
    ``base machine -> new machine``. ``machine``: judge that machine's records only (a per-runner gate)."""
    overrides, may_lose = overrides or {}, may_lose or {}
    base_list = list(base.values()) if isinstance(base, dict) else base
    new_list = list(new.values()) if isinstance(new, dict) else new
    if machine is not None:
        base_list = [r for r in base_list if machine_of(r) == machine]
        new_list = [r for r in new_list if machine_of(r) == machine]
    bases = _keyed(latest_per_cell([r for r in base_list if r.trusted]), across_machines)
    latest = _keyed(latest_per_cell(new_list), across_machines)
    seen_base = {(r.suite, r.cell_id, "*" if across_machines else machine_of(r)) for r in base_list if r.status != "skipped"}
    several = len({m for _, _, m in [*bases, *latest, *seen_base]}) > 1  # name the machine only where there are two
    where = lambda s, c, m: f"{s}/{c}" + (f" @ {m}" if several else "")  # noqa: E731
    out = Comparison(changes=[])
    for key in sorted(bases):
        b, n = bases[key], latest.get(key)
        suite, cell, _ = key
        machine = machine_of(b) if n is None or machine_of(n) == machine_of(b) else f"{machine_of(b)} -> {machine_of(n)}"
        lose = may_lose.get(suite, [])
        if n is None or n.status != "ok":
            why = "missing from the new results" if n is None else f"now {n.status}" + (f": {n.reason}" if n.reason else "")
            out.lost.append(Unjudged(suite=suite, cell_id=cell, machine=machine, why=why, allowed=_may_lose(lose, cell)))
            continue
        caveats = [f"across machines: {machine}"] if "->" in machine else []
        if not n.trusted:
            reasons = "; ".join(n.validity.reasons) if n.validity else "not valid"
            out.invalid.append(Unjudged(suite=suite, cell_id=cell, machine=machine, why=reasons, allowed=allow_invalid))
            if not allow_invalid:
                continue
            caveats.append(f"new record invalid ({reasons})")
        diff = _difference(b, n)
        if diff is not None:
            out.not_comparable.append(Unjudged(suite=suite, cell_id=cell, machine=machine, why=diff,
                                               allowed=allow_incomparable))
            if not allow_incomparable:
                continue
            caveats.append(f"not like with like ({diff})")
        for name in sorted(b.metrics):
            rule = rule_for(name, b.metrics[name])
            if rule is None:
                continue
            if name not in n.metrics:
                out.lost.append(Unjudged(suite=suite, cell_id=cell, machine=machine, metric=name,
                                         why="judged metric missing from the new record", allowed=_may_lose(lose, cell, name)))
                continue
            t, source = threshold_for(name, rule, overrides.get(suite, {}))
            if noise is not None:
                t, source = noise.raise_threshold(suite, cell, name, b.metrics[name].value, t, source)
            change = judge(suite, cell, name, b.metrics[name], n.metrics[name], rule, t, source)
            change.machine = machine
            change.caveat = "; ".join(caveats) or None
            out.changes.append(change)
    out.only_base = [where(*k) for k in sorted(seen_base - set(latest) - set(bases))]
    out.only_new = [where(*k) for k in sorted(set(latest) - seen_base) if latest[k].status != "skipped"]
    return out


def _keyed(latest: dict[tuple[str, str, str], Record], across: bool) -> dict[tuple[str, str, str], Record]:
    """``latest`` as is (one entry per machine), or across machines: each cell's latest record, keyed ``*``."""
    if not across:
        return latest
    out: dict[tuple[str, str, str], Record] = {}
    for (suite, cell, _), r in latest.items():
        key = (suite, cell, "*")
        if key not in out or r.started_at >= out[key].started_at:
            out[key] = r
    return out
