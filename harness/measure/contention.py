"""Contention and isolation, measured around every timed region of a cell (CPU from the kernel's
counters; CUDA through NVML where a GPU is present).

- :func:`timed_region` wraps one timed region (:class:`~harness.measure.trackers.Stopwatch` enters it
  itself; serving wraps each pass of its workload). Before and after, it reads the busy time of the
  CPUs this process may use (``/proc/stat``: user, nice, system, irq, softirq, steal) and the CPU
  time of this process tree (psutil: user + system of every process, plus what its reaped children
  used). Busy time the tree did not spend is *foreign*: another process on our cores.
- :func:`figures` sums the regions of the cell so far: ``timed_s``, ``timed_regions``,
  ``shortest_region_s``, ``foreign_cpu_s``, ``foreign_cpu_share`` (of the cores' time over the timed
  regions), ``tree_cpu_s``, ``cores`` (affinity), ``threads`` (torch intra-op), ``load_1m``, CPU
  frequency before and after, and on CUDA the foreign GPU processes, clocks and throttle reasons and the
  CUDA events' time beside the wall time of the same regions. Each region also keeps the GPU's energy
  over it (summed into the cell's metrics by :mod:`harness.measure.gpu`).
- :func:`pin_threads` gives torch as many intra-op threads as this process may use cores.
- :func:`reset` starts a new cell.

A region's own bookkeeping (reading counters, walking the tree) happens outside the timed interval.
Clock ticks are 10 ms on Linux, so a single short region is coarse; the share is judged over the sum.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Iterator

from pydantic import BaseModel

BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system [idle iowait] irq softirq steal


class Region(BaseModel):
    """One timed region: wall time, the cores' busy CPU time and the tree's own CPU time over it."""

    name: str
    wall_s: float
    busy_cpu_s: float
    tree_cpu_s: float
    event_s: float | None = None  # CUDA events' time of the region (a Stopwatch on CUDA)
    energy_j: float | None = None  # the GPU's energy over the region (NVML's counter), once CUDA is in use


_REGIONS: list[Region] = []
_GPU: dict[str, Any] = {}


def cores() -> list[int]:
    """The CPUs this process may run on (its affinity)."""
    return sorted(os.sched_getaffinity(0))


def _busy_seconds(cpus: list[int]) -> float:
    """Busy time of ``cpus`` since boot, from ``/proc/stat``, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    wanted = {f"cpu{c}" for c in cpus}
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name in wanted:
                total += sum(int(fields[i]) for i in BUSY_FIELDS if i < len(fields))
    return total / tick


def _tree_cpu() -> dict[int, float]:
    """CPU seconds (user + system) per process of this tree, each with what its reaped children used
    (so ranks or engine workers that end inside a region still count as the tree's)."""
    import psutil

    me = psutil.Process(os.getpid())
    out: dict[int, float] = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out[p.pid] = t.user + t.system + t.children_user + t.children_system
    return out


@contextmanager
def timed_region(name: str) -> Iterator[dict[str, Any]]:
    """Record the contention of the region inside the ``with`` block (see the module docstring), and on
    a GPU in use its energy (:func:`harness.measure.gpu.energy_mj`). The block may put ``event_s``
    (its CUDA events' time) into the mapping it is given."""
    from harness.measure.gpu import energy_delta_j, energy_mj

    cpus = cores()
    if not _GPU:
        _GPU.update(_gpu_state("before"))
    extra: dict[str, Any] = {}
    tree0, busy0 = _tree_cpu(), _busy_seconds(cpus)
    e0 = energy_mj()
    t0 = time.perf_counter()
    try:
        yield extra
    finally:
        wall = time.perf_counter() - t0
        e1 = energy_mj() if e0 is not None else None
        busy1, tree1 = _busy_seconds(cpus), _tree_cpu()
        # a process born in the region spent all its time in it; one gone before the end is lost (foreign)
        tree = sum(max(0.0, v - tree0.get(pid, 0.0)) for pid, v in tree1.items())
        _REGIONS.append(Region(name=name, wall_s=wall, busy_cpu_s=busy1 - busy0, tree_cpu_s=tree,
                               event_s=extra.get("event_s"), energy_j=energy_delta_j(e0, e1)))


def reset() -> None:
    """Forget the regions of the previous cell."""
    _REGIONS.clear()
    _GPU.clear()


def regions() -> list[Region]:
    return list(_REGIONS)


def pin_threads() -> dict[str, Any]:
    """Give torch one intra-op thread per core of this process' affinity (never more), and say so."""
    n = len(cores())
    out: dict[str, Any] = {"cores": n, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    try:
        import torch
    except ImportError:
        return out
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    out["threads"] = torch.get_num_threads()
    return out


def cpu_mhz() -> float | None:
    """The mean current frequency of the cores, in MHz (None where the kernel does not say)."""
    import psutil

    try:
        freq = psutil.cpu_freq()
    except (NotImplementedError, FileNotFoundError, OSError):
        return None
    return None if freq is None or not freq.current else float(freq.current)


def figures(threads: int | None = None) -> dict[str, Any]:
    """The contention figures of the cell's timed regions so far (see the module docstring)."""
    n = len(cores())
    out: dict[str, Any] = {"cores": n, "threads": threads, "timed_regions": len(_REGIONS),
                           "load_1m": round(os.getloadavg()[0], 2), "cpu_mhz": cpu_mhz()}
    if _REGIONS:
        wall = sum(r.wall_s for r in _REGIONS)
        busy = sum(r.busy_cpu_s for r in _REGIONS)
        tree = sum(r.tree_cpu_s for r in _REGIONS)
        foreign = max(0.0, busy - tree)
        out |= {"timed_s": round(wall, 6), "shortest_region_s": round(min(r.wall_s for r in _REGIONS), 6),
                "busy_cpu_s": round(busy, 3), "tree_cpu_s": round(tree, 3), "foreign_cpu_s": round(foreign, 3),
                "foreign_cpu_share": round(foreign / (wall * n), 4) if wall > 0 else 0.0}
        timed_events = [r for r in _REGIONS if r.event_s is not None]
        if timed_events:  # CUDA events beside the synchronized wall clock over the same regions
            out["cuda_event_s"] = round(sum(r.event_s for r in timed_events if r.event_s is not None), 6)
            out["cuda_event_wall_s"] = round(sum(r.wall_s for r in timed_events), 6)
    if _GPU:
        out["gpu"] = dict(_GPU) | {"after": _gpu_state("after").get("after")}
    return out


def _gpu_state(when: str) -> dict[str, Any]:
    """Other compute processes on this process' GPU, its clocks and throttle reasons (NVML); empty
    without CUDA or nvidia-ml-py."""
    try:
        import torch

        if not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return {}
        import pynvml
    except ImportError:
        return {}
    try:
        from harness.measure.gpu import nvml_handle

        h = nvml_handle()
        mine = {os.getpid(), *_tree_cpu()}
        others = [{"pid": p.pid, "memory_bytes": p.usedGpuMemory}
                  for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h) if p.pid not in mine]
        state = {"sm_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                 "mem_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                 "throttle_reasons": _throttle_names(pynvml, pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(h))}
        return {"foreign_processes": others, when: state}
    except Exception as exc:  # noqa: BLE001 - NVML missing or refusing: say so, measure the rest
        return {"error": f"{type(exc).__name__}: {exc}"}


# throttle reasons that mean the clocks were cut (idle and application-clock settings do not)
THROTTLES = ("SwPowerCap", "HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown", "SyncBoost")


def _throttle_names(pynvml: Any, mask: int) -> list[str]:
    names = []
    for name in THROTTLES:
        bit = getattr(pynvml, f"nvmlClocksThrottleReason{name}", None)
        if bit is not None and mask & bit:
            names.append(name)
    return names
