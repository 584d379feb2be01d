"""Validity rules: whether a cell's figures can be trusted, each verdict with the figure behind it.

:func:`judge` reads the contention figures of the cell's timed regions
(:func:`harness.measure.contention.figures`) and its metrics, and returns a
:class:`~harness.results.records.Validity` whose reasons name each broken rule and its figure:

- **foreign CPU**: busy time of the cell's cores not spent by its own process tree, as a share of
  the cores' time over the timed regions, above ``max_foreign_cpu_share`` (when the cell's threads
  leave cores idle, the idle share is allowed on top);
- **foreign GPU processes**: another process computing on the cell's GPU;
- **throttling**: the GPU's clocks cut (power, thermal) before or after the timed regions;
- **too short**: the timed regions shorter than ``min_timed_s`` in all, or one shorter than ``min_region_s``;
- **too few samples**: a judged speed metric that is the median of repeated measurements (decode
  tok/s over repeats, step time over steps, serving throughput over passes, latency over requests)
  with fewer than ``min_samples`` of them (no interval can be made from fewer);
- **no timed region**: nothing was timed, so contention is unknown.

The rules are a suite's ``validity:`` block (:class:`ValidityRules`); ``strict`` turns an invalid cell
into status ``invalid`` (retried ``retries`` times after ``retry_pause_s``), else it stays ``ok`` with
``validity.valid`` false. Pure: no torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from harness.base.specbase import StrictModel
from harness.metrics import spec_for
from harness.results.records import Metric, Validity


class ValidityRules(StrictModel):
    """The suite's ``validity:`` block: when a cell's numbers are not to be trusted, and what then."""

    max_foreign_cpu_share: float = Field(default=0.15, ge=0, le=1, description=(
        "Most share of the cell's cores' time that other processes may take during its timed regions."))
    min_timed_s: float = Field(default=0.05, ge=0, description="Least total time of a cell's timed regions, in seconds.")
    min_region_s: float = Field(default=1e-4, ge=0, description="Least time of one timed region, in seconds.")
    min_samples: int = Field(default=3, ge=1, description="Least samples of a judged speed metric (for its interval).")
    allow_foreign_gpu_processes: bool = Field(default=False, description="Let other processes compute on the cell's GPU.")
    allow_throttling: bool = Field(default=False, description="Let GPU clocks be cut by power or thermal limits.")
    strict: bool = Field(default=False, description="Record an invalid cell as status `invalid` (and retry it).")
    retries: int = Field(default=1, ge=0, description="With strict: runs again of an invalid cell.")
    retry_pause_s: float = Field(default=30.0, ge=0, description="With strict: seconds to wait before a retry.")


def judge(figures: dict[str, Any], metrics: dict[str, Metric], rules: ValidityRules) -> Validity:
    """The cell's validity under ``rules`` from its contention ``figures`` and its ``metrics``."""
    reasons: list[str] = []
    regions = figures.get("timed_regions", 0)
    if not regions:
        reasons.append("no timed region was measured: contention unknown")
    else:
        share, cores, threads = figures["foreign_cpu_share"], figures["cores"], figures.get("threads") or figures["cores"]
        idle = max(0, cores - threads) / cores
        if share > rules.max_foreign_cpu_share + idle:
            reasons.append(f"foreign CPU: other processes took {share:.0%} of the cell's {cores} cores "
                           f"({figures['foreign_cpu_s']:.2f} CPU s over {figures['timed_s']:.2f} s timed; "
                           f"at most {rules.max_foreign_cpu_share:.0%}" + (f" + {idle:.0%} idle" if idle else "") + ")")
        if figures["timed_s"] < rules.min_timed_s:
            reasons.append(f"too short: {regions} timed regions took {figures['timed_s']:.4g} s in all "
                           f"(at least {rules.min_timed_s:g} s)")
        if figures["shortest_region_s"] < rules.min_region_s:
            reasons.append(f"too short: a timed region took {figures['shortest_region_s']:.3g} s "
                           f"(at least {rules.min_region_s:g} s)")
    gpu = figures.get("gpu") or {}
    if gpu.get("foreign_processes") and not rules.allow_foreign_gpu_processes:
        procs = ", ".join(f"pid {p['pid']} ({(p.get('memory_bytes') or 0) / 2**20:.0f} MiB)" for p in gpu["foreign_processes"])
        reasons.append(f"foreign GPU processes on the cell's device: {procs}")
    throttled = sorted({t for when in ("before", "after") for t in (gpu.get(when) or {}).get("throttle_reasons", [])})
    if throttled and not rules.allow_throttling:
        reasons.append(f"throttling: GPU clocks cut by {', '.join(throttled)}")
    for name, m in sorted(metrics.items()):
        spec = spec_for(name)
        # a median summarizes repeated measurements; means and percentiles of a distribution are its companions
        if spec is None or not spec.judged or spec.kind != "speed" or spec.stat != "median" or m.source != "measured":
            continue
        if len(m.samples) < rules.min_samples:
            reasons.append(f"too few samples: {name} has {len(m.samples)} (an interval needs {rules.min_samples})")
    return Validity(valid=not reasons, reasons=reasons, figures=figures)
