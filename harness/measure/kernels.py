"""Which kernels ran: the Linear module classes that hold a model's weights, and the profiled operators."""

from __future__ import annotations

import collections
from typing import Any

from harness.measure.trackers import sync


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


def kernel_label(modules: dict[str, int], ops: list[dict[str, Any]]) -> str:
    """``Linear4bit / aten::...``: the most common quantized Linear class (else the dense one) and the
    top profiled operator."""
    quantized = {k: v for k, v in modules.items() if not k.endswith("torch.nn.modules.linear.Linear")}
    cls = max(quantized or modules, key=lambda k: (quantized or modules)[k]).rsplit(".", 1)[-1]
    return f"{cls} / {ops[0]['name']}" if ops else cls


def kernel_report(model: Any, ops: list[dict[str, Any]]) -> dict[str, Any]:
    """What a record's ``info.kernels`` holds: the label, the Linear classes by count and the operators."""
    modules = linear_kernels(model)
    return {"label": kernel_label(modules, ops), "modules": modules, "ops": ops}
