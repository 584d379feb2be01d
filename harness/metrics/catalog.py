"""The catalog: every declared metric, looked up by name (exact names first, then patterns in order).

A name ending in ``_analytic`` or ``_residual`` whose base metric is declared needs no declaration of
its own: it is that metric's prediction (source ``analytic``) or measured - predicted, in its unit,
with no direction (the gate judges measurements, never their models).
"""

from __future__ import annotations

import fnmatch
import functools
from typing import Iterable

from harness.base.errors import HarnessError
from harness.metrics.spec import SECONDS_PER, Benchmark, MetricSpec, SummaryTable

DERIVED = {"_analytic": ("analytic", "the analytic prediction of {base}"),
           "_residual": ("measured", "measured - analytic of {base}")}


class UndeclaredMetricError(HarnessError):
    """A metric name the catalog does not declare (or recorded in another unit than declared)."""


class Catalog:
    """Declared metrics and summary tables (see :func:`catalog`)."""

    def __init__(self, specs: list[MetricSpec], tables: list[SummaryTable], benchmarks: Iterable[Benchmark] = ()) -> None:
        self.specs = specs
        self.tables = tables
        self._exact: dict[str, MetricSpec] = {}
        self._patterns: list[MetricSpec] = []
        for s in specs:
            if s.name in self._exact or any(p.name == s.name for p in self._patterns):
                raise ValueError(f"metric {s.name!r} is declared twice")
            if any(c in s.name for c in "*?["):
                self._patterns.append(s)
            else:
                self._exact[s.name] = s
        self.benchmarks: dict[str, Benchmark] = {}
        for b in benchmarks:
            spec = self.spec(b.metric)
            if spec is None or spec.unit not in SECONDS_PER or b.scenario in self.benchmarks:
                raise ValueError(f"benchmark of {b.scenario!r}: {b.metric!r} must be a declared metric in "
                                 f"{' or '.join(SECONDS_PER)}, one per scenario")
            self.benchmarks[b.scenario] = b

    def spec(self, name: str) -> MetricSpec | None:
        """The declaration of ``name``, or None when it is not declared."""
        found = self._exact.get(name) or next((p for p in self._patterns if fnmatch.fnmatchcase(name, p.name)), None)
        if found is not None:
            return found
        for suffix, (source, text) in DERIVED.items():
            if name.endswith(suffix):
                base = self.spec(name[: -len(suffix)])
                if base is not None:
                    return MetricSpec(name=name, unit=base.unit, direction="neither", kind="analytic",
                                      description=text.format(base=base.name), source=source)  # type: ignore[arg-type]
        return None

    def require(self, name: str) -> MetricSpec:
        """The declaration of ``name``; raises :class:`UndeclaredMetricError` naming where to declare it."""
        found = self.spec(name)
        if found is None:
            raise UndeclaredMetricError(f"metric {name!r} is not declared in the metric catalog (harness/metrics/): "
                                        "declare its unit, direction, kind and description there")
        return found

    def columns(self, table: SummaryTable, names: set[str]) -> list[str]:
        """The metric names among ``names`` that ``table``'s columns select, in column order (a pattern
        column expands to the matching names, shortest first); ``info:`` columns are kept as they are."""
        cols: list[str] = []
        for c in table.columns:
            if c.startswith("info:"):
                cols.append(c)
                continue
            matched = sorted((n for n in names if fnmatch.fnmatchcase(n, c)), key=lambda n: (len(n), n))
            cols += [n for n in matched if n not in cols]
        return cols


@functools.cache
def catalog() -> Catalog:
    """The harness' catalog: the declarations of :mod:`harness.metrics.common`, ``.inference``,
    ``.lmeval``, ``.training`` and ``.serving``, their summary tables and each scenario's benchmark quantity."""
    from harness.metrics import common, inference, lmeval, serving, training

    return Catalog([*common.METRICS, *inference.METRICS, *lmeval.METRICS, *training.METRICS, *serving.METRICS],
                   [*inference.TABLES, *lmeval.TABLES, *training.TABLES, *serving.TABLES],
                   [inference.BENCHMARK, training.BENCHMARK, serving.BENCHMARK])
