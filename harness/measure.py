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

    ``peak_bytes`` is the largest sampled sum over the tree, and never less than this process' own
    kernel-reported peak (``ru_maxrss``), which catches spikes between samples.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
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
        self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        self.peak_bytes = max(self.peak_bytes, self_peak)


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


def _tensors_of(obj: Any, depth: int = 0) -> Iterable[Any]:
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
            yield from _tensors_of(value, depth + 1)


def weight_bytes(model: Any) -> dict[str, int]:
    """Bytes of a model's weights as stored, each storage counted once (tied weights once).

    Returns ``{"weights": params+buffers, "quant_constants": bnb scales/absmax/codes, "total": sum}``.
    Measure right after loading: bitsandbytes repacks 4-bit weights on CPU at the first forward.
    """
    seen: set[tuple[str, int]] = set()

    def count(t: Any) -> int:
        if t.device.type == "meta":
            return 0
        storage = t.untyped_storage()
        key = (t.device.type, storage.data_ptr())
        if key in seen:
            return 0
        seen.add(key)
        return storage.nbytes()

    weights = sum(count(p) for p in model.parameters()) + sum(count(b) for b in model.buffers())
    constants = 0
    for p in model.parameters():
        for attr in ("quant_state", "SCB"):
            for t in _tensors_of(getattr(p, attr, None)):
                constants += count(t)
    return {"weights": weights, "quant_constants": constants, "total": weights + constants}


def linear_kernels(model: Any) -> dict[str, int]:
    """Count of Linear-like modules by class (``Linear4bit``, ``Linear``, ...): the kernels that run."""
    import torch

    counts: collections.Counter[str] = collections.Counter()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):  # bitsandbytes' Linear4bit/Linear8bitLt subclass it
            counts[f"{type(module).__module__}.{type(module).__name__}"] += 1
    return dict(counts)
