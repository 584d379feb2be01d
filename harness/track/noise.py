"""The measured noise floor of a runner: how much each judged metric moves between runs of the same
cell at the same commit, and the smallest change the gate could tell from that movement.

:func:`measure_noise` runs every selected cell ``runs`` times, each run in a fresh process (a group
sharing an engine start stays one process), interleaved: all cells once, then all again in reverse
order, and so on, so a slow drift of the machine falls on every cell alike. Only trusted records
(``ok`` and valid) count; invalid ones are listed.

Per (cell, judged metric), over the runs' values: mean, standard deviation (n - 1), coefficient of
variation, and the minimum detectable change at 95 % for one new run against one base run,
``t(0.975, n-1) * sqrt(2) * sd`` (absolute, and relative to the mean). ``harness compare --noise``
raises a metric's threshold to that change, never lowers it (:meth:`NoiseFile.raise_threshold`).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from harness.base.errors import HarnessError
from harness.metrics import Threshold
from harness.track.compare import rule_for

if TYPE_CHECKING:
    from harness.pipeline.planner import Plan
    from harness.pipeline.runner import Runner
    from harness.results.records import Record
    from harness.results.store import Store

# two-sided 95 % quantiles of Student's t by degrees of freedom (1.96 beyond the table)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    """Student's t 97.5 % quantile for ``df`` degrees of freedom (the nearest tabled df at or below)."""
    if df < 1:
        raise ValueError("need at least 2 values for a spread")
    return T975[max(k for k in T975 if k <= df)] if df <= 30 else 1.96


class MetricNoise(BaseModel):
    """One metric of one cell over the runs."""

    unit: str
    values: list[float]
    mean: float
    sd: float
    cv: float = Field(description="sd / |mean|")
    mdc_absolute: float = Field(description="smallest change detectable at 95 %, in the metric's unit")
    mdc_relative: float = Field(description="mdc_absolute / |mean|")

    @classmethod
    def of(cls, unit: str, values: list[float]) -> "MetricNoise":
        arr = np.asarray(values, dtype=float)
        mean, sd = float(arr.mean()), float(arr.std(ddof=1))
        mdc = t975(len(values) - 1) * math.sqrt(2) * sd
        return cls(unit=unit, values=values, mean=mean, sd=sd, cv=sd / abs(mean) if mean else 0.0,
                   mdc_absolute=mdc, mdc_relative=mdc / abs(mean) if mean else 0.0)


class NoiseFile(BaseModel):
    """What ``harness noise`` writes and ``harness compare --noise`` reads."""

    kind: Literal["harness-noise"] = "harness-noise"
    version: int = 1
    created_at: datetime
    host: dict[str, str | int]
    runs: int
    cells: dict[str, dict[str, MetricNoise]] = Field(description="'<suite>/<cell id>' -> metric -> its noise")
    invalid: list[str] = Field(default_factory=list, description="records left out: not trusted")

    @classmethod
    def read(cls, path: str | Path) -> "NoiseFile":
        try:
            return cls.model_validate_json(Path(path).read_text())
        except OSError as exc:
            raise HarnessError(f"{path}: cannot read the noise file ({exc.strerror})") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise HarnessError(f"{path}: not a noise file of `harness noise`: {'.'.join(map(str, first['loc']))}: "
                               f"{first['msg']}") from None

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=1) + "\n")

    def raise_threshold(self, suite: str, cell: str, name: str, base_value: float, threshold: Threshold,
                        source: str) -> tuple[Threshold, str]:
        """``threshold`` raised to the cell's measured minimum detectable change of ``name`` (never
        lowered), with where the result came from."""
        noise = self.cells.get(f"{suite}/{cell}", {}).get(name)
        if noise is None:
            return threshold, source
        figure = f"noise file: CV {noise.cv:.1%} over {len(noise.values)} runs"
        if threshold.relative is not None and noise.mdc_relative > threshold.relative:
            return Threshold(relative=noise.mdc_relative), f"{figure}, detectable {noise.mdc_relative:.1%}"
        if threshold.absolute is not None and noise.mdc_absolute > threshold.absolute:
            return Threshold(absolute=noise.mdc_absolute), f"{figure}, detectable {noise.mdc_absolute:.4g}"
        return threshold, f"{source}; {figure} allows it"

    def lines(self) -> list[str]:
        """One line per (cell, metric): CV and the smallest detectable change."""
        out = [f"{self.runs} runs per cell" + (f"; {len(self.invalid)} invalid records left out" if self.invalid else "")]
        for cell, metrics in sorted(self.cells.items()):
            for name, n in sorted(metrics.items()):
                out.append(f"{cell} {name}: mean {n.mean:.4g} {n.unit}, CV {n.cv:.2%}, detectable change "
                           f"{n.mdc_relative:.1%} ({len(n.values)} runs)")
        return out


def summarize(records: list["Record"], runs: int) -> NoiseFile:
    """The noise file of ``records`` (several runs of the same cells)."""
    values: dict[str, dict[str, list[float]]] = {}
    units: dict[str, str] = {}
    invalid = []
    host: dict[str, str | int] = {}
    for r in records:
        if not r.trusted:
            invalid.append(f"{r.suite}/{r.cell_id} ({r.record_id}): {r.status}"
                           + (f": {'; '.join(r.validity.reasons)}" if r.validity and r.validity.reasons else ""))
            continue
        host = {"hostname": r.environment.hostname, "cpu_model": r.environment.cpu_model,
                "cpu_count": r.environment.cpu_count, "gpus": ", ".join(g.name for g in r.environment.gpus) or "none"}
        for name, m in r.metrics.items():
            if rule_for(name, m) is not None:
                values.setdefault(f"{r.suite}/{r.cell_id}", {}).setdefault(name, []).append(m.value)
                units[name] = m.unit
    cells = {cell: {name: MetricNoise.of(units[name], vs) for name, vs in ms.items() if len(vs) >= 2}
             for cell, ms in values.items()}
    return NoiseFile(created_at=datetime.now(timezone.utc), host=host, runs=runs,
                     cells={c: ms for c, ms in cells.items() if ms}, invalid=invalid)


def measure_noise(plans: list["Plan"], store: "Store", runner: "Runner", *, runs: int, only: set[str] | None = None,
                  progress: Callable[[str], None] | None = None) -> NoiseFile:
    """Run the plans' runnable cells ``runs`` times, interleaved, each run a fresh process; every record
    goes to ``store``; returns their noise file (see the module docstring)."""
    units: list[tuple["Plan", list[str]]] = []
    for plan in plans:
        taken: set[str] = set()
        for pc in plan.runnable:
            c = pc.cell
            if (only is not None and c.id not in only) or c.id in taken:
                continue
            members = [p.cell.id for p in plan.runnable if p.cell.id == c.id or (
                c.group is not None and p.cell.group == c.group and (only is None or p.cell.id in only))]
            taken |= set(members)
            units.append((plan, members))
    if not units:
        raise HarnessError("no runnable cell selected (check --only and the plan's skips)")
    records: list[Record] = []
    for run in range(runs):
        for plan, ids in (units if run % 2 == 0 else units[::-1]):
            cells = [p.cell for p in plan.runnable if p.cell.id in ids]
            for record in runner.run_group(cells, [plan.command(c) for c in cells]):
                store.append(record)
                records.append(record)
                if progress:
                    progress(f"run {run + 1}/{runs} {record.cell_id}: {record.status}"
                             + ("" if record.trusted else " (not trusted)"))
    return summarize(records, runs)
