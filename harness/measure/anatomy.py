"""Where training memory goes, tracked during a step (torch is imported lazily).

- :class:`SavedActivations`: bytes autograd saves for backward (``saved_tensors_hooks``), parameters
  excluded, each storage once. With non-reentrant checkpointing only the checkpoints' inputs are saved.
- :class:`PhasePeaks`: peak bytes allocated above the start of a profiled step, per phase (forward,
  backward, optimizer), from the profiler's allocation events; on CPU this is the only allocator view,
  on CUDA it sits beside ``max_memory_allocated``.

The byte counts of parameters, gradients and optimizer state are :mod:`harness.measure.tensors`'.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from harness.measure.tensors import local


class SavedActivations:
    """Counts storages autograd saves for backward, excluding parameters (each storage once).

    A saved ``Parameter``, or a view of one, is parameter memory whatever its storage (FSDP gathers
    parameters into new storages for each layer's computation), so it is not counted either.

    Use as ``with counter.hooks(): loss = model(...)``; ``bytes`` accumulates over the uses.
    """

    def __init__(self, model: Any) -> None:
        self._params = {local(p).untyped_storage().data_ptr() for p in model.parameters()}
        self._seen: set[int] = set()
        self.bytes = 0

    def pack(self, t: Any) -> Any:
        import torch

        if isinstance(t, torch.nn.Parameter) or isinstance(t._base, torch.nn.Parameter):
            return t
        if t.device.type != "meta":
            t_local = local(t)
            ptr = t_local.untyped_storage().data_ptr()
            if ptr not in self._params and ptr not in self._seen:
                self._seen.add(ptr)
                self.bytes += t_local.untyped_storage().nbytes()
        return t

    @contextlib.contextmanager
    def hooks(self) -> Iterator["SavedActivations"]:
        import torch

        with torch.autograd.graph.saved_tensors_hooks(self.pack, lambda x: x):
            yield self


class PhasePeaks:
    """Profile one step and report, per phase, the peak bytes allocated above the step's start.

    ``with peaks.phase("forward"): ...`` marks a phase; after the ``with peaks:`` block, ``peaks.bytes``
    maps each phase to its peak (the running sum of the device's allocation events since the profile
    started) and ``peaks.bytes["step"]`` is the overall peak. On CUDA, ``cuda_max_allocated`` and
    ``cuda_max_reserved`` also hold each phase's ``torch.cuda.max_memory_allocated/reserved`` (the
    peak statistics are reset when a phase starts; a phase entered again keeps its largest value).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.bytes: dict[str, int] = {}
        self.cuda_max_allocated: dict[str, int] = {}
        self.cuda_max_reserved: dict[str, int] = {}
        self._prof: Any = None

    def __enter__(self) -> "PhasePeaks":
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.startswith("cuda") else [])
        self._prof = profile(activities=acts, profile_memory=True)
        self._prof.__enter__()
        return self

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        import torch
        from torch.profiler import record_function

        from harness.measure.gpu import reset_peaks

        cuda = self.device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            reset_peaks()  # the cell's own peaks (harness.measure.gpu) carry across the reset
        with record_function(f"harness-phase:{name}"):
            yield
        if cuda:
            torch.cuda.synchronize()
            self.cuda_max_allocated[name] = max(self.cuda_max_allocated.get(name, 0), torch.cuda.max_memory_allocated())
            self.cuda_max_reserved[name] = max(self.cuda_max_reserved.get(name, 0), torch.cuda.max_memory_reserved())

    def __exit__(self, *exc: Any) -> None:
        from harness.measure.trackers import sync

        sync(self.device)
        self._prof.__exit__(*exc)
        if exc[0] is not None:
            return
        events = list(self._prof.profiler.kineto_results.events())
        want = "cuda" if self.device.startswith("cuda") else "cpu"
        mem = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == "[memory]" and str(e.device_type()).lower().endswith(want))
        phases = [(e.name().split(":", 1)[1], e.start_ns(), e.start_ns() + e.duration_ns()) for e in events
                  if e.name().startswith("harness-phase:")]
        running, peak = 0, 0
        peaks = {name: 0 for name, _, _ in phases}
        for t, nbytes in mem:
            running += nbytes
            peak = max(peak, running)
            for name, start, end in phases:
                if start <= t <= end:
                    peaks[name] = max(peaks[name], running)
        self.bytes = peaks | {"step": peak}
