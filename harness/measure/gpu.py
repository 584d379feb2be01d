"""GPU memory and energy through NVML (nvidia-ml-py) and torch's allocator, for cells on a CUDA device.

- :class:`GpuMonitor`: over a whole cell, samples NVML every ``interval_s``: the memory of this
  process tree's compute processes on the cell's GPU (a vLLM engine core is a child process) and the
  device's used memory; at the end it adds torch's allocated and reserved peaks over the cell
  (:func:`allocator_peaks`, which survive the per-phase resets of :func:`reset_peaks`).
  :meth:`GpuMonitor.metrics` gives ``gpu_process_peak_bytes``, ``gpu_device_used_peak_bytes``,
  ``cuda_max_allocated_bytes``, ``cuda_max_reserved_bytes``; :meth:`GpuMonitor.info` the device, its
  power limit and what could not be measured, with the reason.
- :func:`energy_mj`: NVML's total-energy counter of the cell's GPU (millijoules since the driver
  loaded), read by :func:`harness.measure.contention.timed_region` before and after every timed
  region while a monitor runs (the worker runs every CUDA cell under one; an engine in a child
  process is on the same device, so its work counts); :func:`region_energy_j` sums the regions of a name
  (``energy_j``, ``energy_j_per_step``, ``energy_j_per_output_token``).

The arithmetic on NVML's answers is in pure functions (:func:`tree_bytes`, :func:`energy_delta_j`),
tested on recorded values without a GPU. Without CUDA or nvidia-ml-py every reader answers None and
says why (:func:`unavailable`); nothing here imports torch unless the process already did.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from typing import Any, Iterable

_CARRIED: dict[str, int] = {"allocated": 0, "reserved": 0}  # allocator peaks before the last reset
_ACTIVE: list["GpuMonitor"] = []  # the monitor of the cell running now (energy is read while one is)


def tree_bytes(processes: Iterable[tuple[int, int | None]], tree: set[int]) -> int | None:
    """GPU memory of the processes in ``tree`` among NVML's compute processes ``(pid, usedGpuMemory)``;
    None when none of them is listed (NVML does not see this tree's pids: another pid namespace) or
    NVML withholds their memory (``usedGpuMemory`` None, as without the right to read it)."""
    mine = [used for pid, used in processes if pid in tree]
    if not mine or any(used is None for used in mine):
        return None
    return sum(int(u) for u in mine if u is not None)


def energy_delta_j(before_mj: int | None, after_mj: int | None) -> float | None:
    """Joules between two readings of NVML's total-energy counter (millijoules); None when either is
    missing or the counter went back (a driver reload between them)."""
    if before_mj is None or after_mj is None or after_mj < before_mj:
        return None
    return (after_mj - before_mj) / 1000.0


def _torch_cuda() -> Any:
    """torch, if this process imported it and initialized CUDA; else None (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch


def unavailable() -> str | None:
    """Why NVML cannot be read here, or None when it can."""
    try:
        nvml_handle()
    except Exception as exc:  # noqa: BLE001 - no library, no driver, no device: the reason is the answer
        return f"NVML unavailable: {type(exc).__name__}: {exc}"
    return None


def _index() -> int:
    """NVML's index of the device this process uses (CUDA_VISIBLE_DEVICES mapped; torch's current one)."""
    torch = _torch_cuda()
    local = torch.cuda.current_device() if torch is not None else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        entry = visible.split(",")[local].strip()
        if entry.isdigit():
            return int(entry)
    return local


@functools.lru_cache(maxsize=8)
def _nvml_handle(index: int) -> Any:
    import pynvml

    pynvml.nvmlInit()
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def nvml_handle() -> Any:
    """NVML's handle of the device this process uses (NVML initialized once); raises where NVML cannot be read."""
    return _nvml_handle(_index())


def energy_mj() -> int | None:
    """NVML's total energy of this cell's GPU in millijoules, or None (no :class:`GpuMonitor` running,
    as on CPU cells; no NVML; a GPU without the counter: :func:`energy_unsupported` says which)."""
    if not _ACTIVE or _ACTIVE[-1].reason is not None:
        return None
    try:
        import pynvml

        return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(nvml_handle()))
    except Exception:  # noqa: BLE001 - see energy_unsupported
        return None


def energy_unsupported() -> str | None:
    """Why the energy counter cannot be read (None when it can)."""
    reason = unavailable()
    if reason:
        return reason
    try:
        import pynvml

        pynvml.nvmlDeviceGetTotalEnergyConsumption(nvml_handle())
    except Exception as exc:  # noqa: BLE001
        return f"this GPU has no total-energy counter (NVML: {type(exc).__name__}: {exc})"
    return None


def region_energies(name: str | None = None) -> list[float | None]:
    """The GPU's joules over each of this cell's timed regions named ``name`` (all when None), in order;
    None for a region whose counter was not read."""
    from harness.measure.contention import regions

    return [r.energy_j for r in regions() if name is None or r.name == name]


def region_energy_j(name: str | None = None) -> tuple[float | None, int]:
    """Joules over this cell's timed regions named ``name`` (all when None) and how many regions that
    is; None when any of them has no reading (the counter was unreadable)."""
    chosen = region_energies(name)
    if not chosen or any(e is None for e in chosen):
        return None, len(chosen)
    return sum(e for e in chosen if e is not None), len(chosen)


def reset_peaks() -> None:
    """Reset torch's peak statistics (a phase's peaks start here), carrying the peaks so far into the
    cell's (:func:`allocator_peaks`)."""
    torch = _torch_cuda()
    if torch is None:
        return
    _CARRIED["allocated"] = max(_CARRIED["allocated"], torch.cuda.max_memory_allocated())
    _CARRIED["reserved"] = max(_CARRIED["reserved"], torch.cuda.max_memory_reserved())
    torch.cuda.reset_peak_memory_stats()


def allocator_peaks() -> dict[str, int] | None:
    """torch's allocated and reserved peaks since the cell started (across :func:`reset_peaks`), or None
    when this process never used CUDA."""
    torch = _torch_cuda()
    if torch is None:
        return None
    return {"allocated": max(_CARRIED["allocated"], torch.cuda.max_memory_allocated()),
            "reserved": max(_CARRIED["reserved"], torch.cuda.max_memory_reserved())}


def _tree_pids() -> set[int]:
    import psutil

    me = psutil.Process(os.getpid())
    pids = {me.pid}
    for p in me.children(recursive=True):
        pids.add(p.pid)
    return pids


class GpuMonitor:
    """Samples the cell's GPU memory over a ``with`` block (see the module docstring). On a host
    without NVML it measures nothing and :meth:`info` says why."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.process_peak: int | None = None
        self.device_used_peak: int | None = None
        self.process_view: str | None = None
        self.reason = unavailable()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peaks: dict[str, int] | None = None

    def _sample(self) -> None:
        import pynvml

        h = _nvml_handle(self._first_index)
        used = int(pynvml.nvmlDeviceGetMemoryInfo(h).used)
        self.device_used_peak = max(self.device_used_peak or 0, used)
        procs = [(p.pid, p.usedGpuMemory) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)]
        mine = tree_bytes(procs, _tree_pids())
        if mine is not None:
            self.process_peak = max(self.process_peak or 0, mine)
        elif procs and self.process_peak is None:
            self.process_view = (f"NVML lists {len(procs)} compute process(es) on the GPU but none of this "
                                 "process tree's pids (another pid namespace) or withholds their memory")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception as exc:  # noqa: BLE001 - one failed read stops the sampling, with why
                self.reason = f"NVML sampling failed: {type(exc).__name__}: {exc}"
                return
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "GpuMonitor":
        _CARRIED.update(allocated=0, reserved=0)
        torch = _torch_cuda()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        if self.reason is None:
            self._first_index = _index()
            self._thread = threading.Thread(target=self._loop, daemon=True, name="gpu-monitor")
            self._thread.start()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self.reason is None:
                try:
                    self._sample()
                except Exception as err:  # noqa: BLE001
                    self.reason = f"NVML sampling failed: {type(err).__name__}: {err}"
        self._peaks = allocator_peaks()

    def metrics(self) -> dict[str, Any]:
        """The cell's GPU memory metrics (only those that were measured)."""
        from harness.metrics import metric

        out = {}
        if self.process_peak is not None:
            out["gpu_process_peak_bytes"] = metric("gpu_process_peak_bytes", self.process_peak)
        if self.device_used_peak is not None:
            out["gpu_device_used_peak_bytes"] = metric("gpu_device_used_peak_bytes", self.device_used_peak)
        if self._peaks is not None:
            out["cuda_max_allocated_bytes"] = metric("cuda_max_allocated_bytes", self._peaks["allocated"])
            out["cuda_max_reserved_bytes"] = metric("cuda_max_reserved_bytes", self._peaks["reserved"])
        return out

    def info(self) -> dict[str, Any]:
        """The device, its power limit and clocks, and the reason for each figure not measured."""
        out: dict[str, Any] = {}
        if self.reason is not None:
            out["nvml"] = self.reason
        else:
            out |= device_facts()
            if self.process_peak is None:
                out["gpu_process_peak_bytes"] = self.process_view or "no compute process of this tree was seen on the GPU"
            energy = energy_unsupported()
            if energy:
                out["energy"] = energy
        if self._peaks is None:
            out["cuda_allocator"] = "this process never used CUDA"
        return out


def device_facts() -> dict[str, Any]:
    """Name, power limit (W), SM and memory clocks (MHz) of the cell's GPU, as NVML reports them."""
    import pynvml

    h = nvml_handle()
    out: dict[str, Any] = {"index": _index()}
    for key, read in (("name", lambda: pynvml.nvmlDeviceGetName(h)),
                      ("power_limit_w", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
                      ("sm_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
                      ("mem_mhz", lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
                      ("max_sm_mhz", lambda: pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM))):
        try:
            value = read()
            out[key] = value.decode() if isinstance(value, bytes) else value
        except Exception as exc:  # noqa: BLE001 - a field NVML does not give on this GPU
            out[key] = f"unavailable: {type(exc).__name__}"
    return out
