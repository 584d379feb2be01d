"""A cell's primary timed quantity, as its scenario declares it (:class:`harness.metrics.Benchmark`): the
samples pytest-benchmark's statistics are made of, and the one figure a progress line shows.

The samples are durations the cell measured in its own process (seconds per decode step, per training
step, per generated token of a serving pass), read from the record's declared metric and converted to
seconds; nothing is timed again here. Reads records only.
"""

from __future__ import annotations

import statistics

from harness.metrics import Benchmark, catalog
from harness.metrics.spec import SECONDS_PER
from harness.results.records import Record
from harness.track.tables import human_seconds


def timed_samples(record: Record) -> tuple[Benchmark, list[float]] | None:
    """The benchmark declaration of ``record``'s scenario and its samples in seconds (the metric's samples,
    or its value alone where an older record kept none); None when the scenario declares none or the
    record did not measure it (a skip, a failure)."""
    bench = catalog().benchmarks.get(str(record.cell.get("scenario")))
    if bench is None or bench.metric not in record.metrics:
        return None
    m = record.metrics[bench.metric]
    scale = SECONDS_PER[m.unit] if m.unit in SECONDS_PER else None
    if scale is None:
        return None
    return bench, [v * scale for v in (m.samples or [m.value])]


def progress_line(record: Record, *, reused: bool = False) -> str:
    """``<cell>: <status> in <duration> s; <metric> <median> (median of n)`` (or the reason of a skip or a
    failure); ``NOT VALID`` where an ``ok`` record's numbers are not trusted."""
    status = "ok, NOT VALID" if record.status == "ok" and not record.trusted else record.status
    line = f"{record.cell_id}: {status}" + (" (recorded earlier, not rerun)" if reused
                                           else "" if record.status == "skipped" else f" in {record.duration_s:.1f} s")
    timed = timed_samples(record)
    if timed is not None and record.status in ("ok", "invalid"):
        bench, samples = timed
        line += f"; {bench.metric} {human_seconds(statistics.median(samples))} (median of {len(samples)})"
    if record.reason:
        line += f": {record.reason}"
    rank, nnodes = record.nodes
    if rank > 0:
        line += f" (node {rank} of {nnodes}: node 0 records this cell, nothing is stored here)"
    return line
