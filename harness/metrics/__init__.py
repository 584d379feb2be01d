"""The metric catalog: every metric the harness records, declared once with its unit, direction, kind,
description and summary statistic; and the summary tables that show them.

Producers make metrics with :func:`metric` (unit, statistic and source come from the declaration;
a name the catalog does not declare raises :class:`UndeclaredMetricError`), the worker refuses a
result holding an undeclared metric (:func:`check`), and the faces read the catalog instead of
guessing from names: ``harness compare`` (direction, kind, default threshold), the asv export
(which series asv's detection runs on) and the summary and report tables.

Declarations live in :mod:`harness.metrics.common`, ``.inference``, ``.training`` and ``.serving``;
a new metric is one line there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from harness.metrics.catalog import Catalog, UndeclaredMetricError, catalog
from harness.metrics.spec import DEFAULT_THRESHOLDS, Benchmark, MetricSpec, SummaryTable, Threshold

if TYPE_CHECKING:
    from harness.results.records import Metric

__all__ = ["Benchmark", "Catalog", "DEFAULT_THRESHOLDS", "MetricSpec", "SummaryTable", "Threshold", "UndeclaredMetricError",
           "catalog", "check", "metric", "spec_for"]


def spec_for(name: str) -> MetricSpec | None:
    """The declaration of metric ``name`` (None when undeclared, e.g. in a record from older code)."""
    return catalog().spec(name)


def metric(name: str, value: float, *, samples: Iterable[float] = (), stat: str | None = None,
           description: str | None = None, ci: tuple[float, float, str] | None = None) -> "Metric":
    """A :class:`~harness.results.records.Metric` named ``name``, in its declared unit, summary statistic
    (unless ``stat`` says how this value summarizes its samples) and source; ``description`` adds the
    producer's detail (else the declared one); ``ci`` is the value's 95 % interval as
    ``(low, high, method)``. Raises :class:`UndeclaredMetricError`."""
    from harness.results.records import Metric

    spec = catalog().require(name)
    return Metric(value=value, unit=spec.unit, samples=[float(v) for v in samples], stat=stat or spec.stat,
                  source=spec.source, description=spec.description if description is None else description,
                  **({} if ci is None else {"ci_low": float(ci[0]), "ci_high": float(ci[1]), "ci_method": ci[2]}))


def check(metrics: dict[str, Any]) -> None:
    """Raise :class:`UndeclaredMetricError` for a metric ``metrics`` holds that the catalog does not
    declare, or holds in another unit than declared (``metrics`` maps names to Metric or its dict)."""
    for name, m in metrics.items():
        spec = catalog().require(name)
        unit = m["unit"] if isinstance(m, dict) else m.unit
        if unit != spec.unit:
            raise UndeclaredMetricError(f"metric {name!r} recorded in {unit!r}; the catalog declares {spec.unit!r}")
