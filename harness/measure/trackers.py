"""Trackers used inside cell workers: context managers around a region (torch is imported lazily).

- :class:`PeakRSS`: peak resident memory of this process and its children, sampled, plus ru_maxrss.
- :class:`Stopwatch`: monotonic time of a region, the device synchronized at both ends (:func:`sync`),
  its contention recorded (:mod:`harness.measure.contention`).
- :func:`cap_memory`: give the process a memory budget, like a device of that size.

Training's memory trackers (saved activations, per-phase allocator peaks) are in :mod:`harness.measure.anatomy`.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any


class PeakRSS:
    """Context manager sampling the resident set size of this process tree every ``interval_s``.

    ``peak_bytes`` is the largest sampled sum over the tree, and (with ``lifetime_peak``) never less
    than this process' own kernel-reported peak (``ru_maxrss``), which catches spikes between samples
    but covers the whole life of the process, including what ran before the ``with`` block.
    """

    def __init__(self, interval_s: float = 0.05, *, lifetime_peak: bool = True) -> None:
        self.interval_s = interval_s
        self.lifetime_peak = lifetime_peak
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> int:
        import psutil

        proc = psutil.Process(os.getpid())
        total = 0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._sample())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakRSS":
        self._thread = threading.Thread(target=self._loop, daemon=True, name="peak-rss")
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        """End the measurement now (what runs after it, until the ``with`` block ends, is not counted;
        the lifetime peak is still read, once). Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, self._sample())
        if self.lifetime_peak:
            self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
            self.peak_bytes = max(self.peak_bytes, self_peak)


def data_segment_bytes() -> int:
    """This process' data segment now (``VmData``: heap and private writable mappings), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise OSError("/proc/self/status has no VmData line (not Linux?)")


def cap_memory(gib: float, device: str) -> dict[str, int]:
    """Give this process ``gib`` GiB from now on, like a device of that size: on CPU, ``RLIMIT_DATA`` is
    set to the data segment already in use (Python, imported libraries) plus ``gib``; on CUDA, the
    allocator's share of the device is ``gib``. Going over raises the allocator's out-of-memory error,
    which the worker records as ``oom``. Returns ``{"cap_bytes", "baseline_bytes"}``."""
    cap = int(gib * 2**30)
    if device.startswith("cuda"):
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
        return {"cap_bytes": cap, "baseline_bytes": 0}
    baseline = data_segment_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = baseline + cap if hard == resource.RLIM_INFINITY else min(baseline + cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return {"cap_bytes": cap, "baseline_bytes": baseline}


def sync(device: str) -> None:
    """Block until queued work on ``device`` is done (no-op on CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Stopwatch:
    """Monotonic timing of a region, synchronizing the device at both ends. The region is a timed
    region of the cell: its contention is recorded (:func:`harness.measure.contention.timed_region`),
    with the bookkeeping outside the measured interval. On CUDA, two CUDA events also time it on the
    device (``event_seconds``, recorded beside the wall time in the contention figures): the stream's
    own account of the region, which the synchronized wall clock should match."""

    def __init__(self, device: str = "cpu", name: str = "stopwatch") -> None:
        self.device = device
        self.name = name
        self.seconds = 0.0
        self.event_seconds: float | None = None

    def __enter__(self) -> "Stopwatch":
        from harness.measure.contention import timed_region

        self._region = timed_region(self.name)
        self._extra = self._region.__enter__()
        sync(self.device)
        self._events = None
        if self.device.startswith("cuda"):
            import torch

            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._events is not None:
            self._events[1].record()
        sync(self.device)
        self.seconds = time.perf_counter() - self._start
        if self._events is not None:
            self.event_seconds = self._events[0].elapsed_time(self._events[1]) / 1000.0
            self._extra["event_s"] = self.event_seconds
        self._region.__exit__(*exc)
