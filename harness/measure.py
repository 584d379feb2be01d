"""Trackers and tensor accounting used inside cell workers (torch is imported lazily).

- :class:`PeakRSS`: peak resident memory of this process and its children, sampled, plus ru_maxrss.
- :func:`weight_bytes`: bytes of a model's weights as stored (quantization constants included).
- :func:`linear_kernels`: which Linear module classes hold the weights (the kernel that runs).
- :func:`sync`: wait for the device, so a monotonic clock measures the work.
"""

from __future__ import annotations

import collections
import os
import resource
import threading
import time
from typing import Any, Iterable


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
    """Monotonic timing of a region, synchronizing the device at both ends."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> "Stopwatch":
        sync(self.device)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._start


def quant_state_tensors(obj: Any, depth: int = 0) -> Iterable[Any]:
    """Tensors held by a bitsandbytes quantization state (absmax, code, nested state2...)."""
    import torch

    if depth > 3 or obj is None:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
        return
    for value in vars(obj).values() if hasattr(obj, "__dict__") else ():
        if isinstance(value, torch.Tensor):
            yield value
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("bitsandbytes"):
            yield from quant_state_tensors(value, depth + 1)


def attached_tensors(param: Any) -> list[Any]:
    """Tensors stored beside a parameter rather than in it: bitsandbytes' ``quant_state`` (absmax, code
    books, nested double-quantization state) and LLM.int8's ``SCB`` row scales."""
    return [t for attr in ("quant_state", "SCB") for t in quant_state_tensors(getattr(param, attr, None))]


def storage_bytes(tensors: Iterable[Any], seen: set[tuple[str, int]] | None = None) -> int:
    """Bytes of the storages behind ``tensors``, each counted once (also across calls sharing ``seen``);
    a view counts its whole storage, meta tensors count nothing."""
    seen = set() if seen is None else seen
    total = 0
    for t in tensors:
        if t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = (t.device.type, storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def weight_bytes(model: Any) -> dict[str, int]:
    """Bytes of a model's weights as stored, each storage counted once (tied weights once).

    Returns ``{"weights": params+buffers, "quant_constants": bnb scales/absmax/codes, "total": sum}``.
    Measure right after loading: bitsandbytes repacks 4-bit weights on CPU at the first forward.
    """
    seen: set[tuple[str, int]] = set()
    weights = storage_bytes([*model.parameters(), *model.buffers()], seen)
    constants = storage_bytes((t for p in model.parameters() for t in attached_tensors(p)), seen)
    return {"weights": weights, "quant_constants": constants, "total": weights + constants}


def is_linear_like(module: Any) -> bool:
    """A ``torch.nn.Linear`` (bitsandbytes' classes subclass it) or a packed quantized linear (``qweight``)."""
    import torch

    return isinstance(module, torch.nn.Linear) or (hasattr(module, "qweight") and hasattr(module, "in_features"))


def linear_kernels(model: Any) -> dict[str, int]:
    """Count of Linear-like modules by class (``Linear4bit``, ``TorchAtenLinear``, ``Linear``...): the kernels
    that run. bitsandbytes' classes subclass ``torch.nn.Linear``; gptqmodel's carry ``qweight``."""
    counts: collections.Counter[str] = collections.Counter()
    for module in model.modules():
        if is_linear_like(module):
            counts[f"{type(module).__module__}.{type(module).__name__}"] += 1
    return dict(counts)


MATMUL_HINTS = ("mm", "matmul", "linear", "gemv", "gemm", "int4", "int8", "bitsandbytes", "dequant", "woq", "wna16")


def op_census(fn: Any, device: str, top: int = 8) -> list[dict[str, Any]]:
    """Run ``fn()`` once under torch.profiler; the ``top`` operators by self time that look like matmul
    or (de)quantization work (``name``, ``self_ms``, ``calls``): the kernels that actually ran."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    rows = []
    for ev in prof.key_averages():
        self_us = ev.self_cpu_time_total + (getattr(ev, "self_device_time_total", 0) or 0)
        if any(h in ev.key.lower() for h in MATMUL_HINTS) and self_us > 0:
            rows.append({"name": ev.key, "self_ms": self_us / 1000, "calls": ev.count})
    return sorted(rows, key=lambda r: -r["self_ms"])[:top]
