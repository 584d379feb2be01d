"""Gradient correctness of a training cell: its trainable gradients against a float64 dense reference.

The reference is the same model rebuilt in float64 from the checkpoint, with every quantized weight
replaced by its dequantized values and every other tensor (adapters included) copied from the cell's
model, so the only differences left are the cell's arithmetic. Both compute the loss of the same
tokens in training mode with dropout off. A trainable tensor without a gradient, or with a relative
error ``||g - g_ref|| / ||g_ref||`` above the tolerance of the cell's compute dtype, fails the check.
This catches, for example, LoRA over bitsandbytes 4-bit weights that ran a no-grad forward first: the
loss still falls while most adapters silently get no gradient.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

from harness.base.errors import HarnessError

TOLERANCE = {"float32": 1e-3, "bfloat16": 0.15, "float16": 0.15}  # measured: fp32 < 3e-5; QLoRA, bf16 compute: < 0.075


class GradientCheckError(HarnessError):
    """The cell's gradients do not match the reference (names the offending tensors)."""


def dequantized(param: Any) -> Any:
    """The float values a (possibly quantized) weight stands for."""
    import torch

    cls = type(param).__name__
    if cls == "Params4bit":
        import bitsandbytes.functional as F

        data, state = param.data, param.quant_state
        if getattr(state, "packing_format_for_cpu", False):  # repacked for CPU inference: read it back
            from bitsandbytes.nn.modules import _convert_weight_packed_for_cpu_inverse

            data, state = _convert_weight_packed_for_cpu_inverse(data, state)
        return F.dequantize_4bit(data, state).to(torch.float64)
    if cls == "Int8Params":
        scb = getattr(param, "SCB", None)
        if scb is None:
            raise GradientCheckError("an int8 weight has no SCB row scales to dequantize it with")
        return param.data.to(torch.float64) * (scb.to(torch.float64)[:, None] / 127.0)
    if not param.dtype.is_floating_point:
        raise GradientCheckError(f"cannot dequantize a {cls} of dtype {param.dtype} for the reference")
    return param.detach().to(torch.float64)


@contextlib.contextmanager
def _no_dropout(model: Any) -> Iterator[None]:
    import torch

    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    saved = [m.p for m in drops]
    for m in drops:
        m.p = 0.0
    try:
        yield
    finally:
        for m, p in zip(drops, saved):
            m.p = p


def reference_model(model: Any, build: Any) -> Any:
    """``build()`` returns a float64 model of the same structure; its tensors are set from ``model``."""
    import torch

    twin = build()
    source = dict(model.named_parameters())
    missing = []
    with torch.no_grad():
        for name, p in twin.named_parameters():
            src = source.get(name)
            if src is None:
                missing.append(name)
                continue
            values = dequantized(src)
            if values.shape != p.shape:
                values = values.reshape(p.shape)
            p.copy_(values)
            p.requires_grad_(src.requires_grad)
    if missing:
        raise GradientCheckError(f"the reference has parameters the model lacks: {', '.join(missing[:5])}")
    return twin


def check(model: Any, twin: Any, input_ids: Any, dtype: str) -> dict[str, Any]:
    """Compare the trainable gradients of ``model`` and its float64 ``twin`` on ``input_ids``.

    Returns ``{"tolerance", "max_rel_error", "tensors", "checked", "missing", "worst"}``; raises
    :class:`GradientCheckError` if a trainable tensor has no gradient or its error exceeds the tolerance.
    Leaves ``model``'s gradients cleared.
    """
    tol = TOLERANCE[dtype]
    for m in (model, twin):
        m.train()
        m.zero_grad(set_to_none=True)
    with _no_dropout(model), _no_dropout(twin):
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        twin(input_ids=input_ids.to(twin.device), labels=input_ids.to(twin.device)).loss.backward()
    ref = {n: p.grad for n, p in twin.named_parameters() if p.requires_grad}
    missing, errors = [], {}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for name, p in trainable:
        if p.grad is None:
            missing.append(name)
            continue
        r = ref.get(name)
        if r is None:
            raise GradientCheckError(f"the reference has no gradient for trainable {name}")
        diff = (p.grad.to(r.dtype) - r).norm().item()
        scale = r.norm().item()
        errors[name] = 0.0 if diff == 0 else diff / scale if scale > 0 else math.inf
    model.zero_grad(set_to_none=True)
    worst = max(errors, key=errors.get) if errors else None
    result = {"tolerance": tol, "dtype": dtype, "tensors": len(trainable), "checked": len(errors),
              "missing": missing, "max_rel_error": errors[worst] if worst else None, "worst": worst,
              "tokens": int(input_ids.numel())}
    if missing:
        raise GradientCheckError(f"gradient check failed: {len(missing)} of {len(trainable)} trainable tensors got no "
                                 f"gradient (e.g. {missing[0]}); the reference gives all of them one")
    bad = {n: e for n, e in errors.items() if e > tol}
    if bad:
        raise GradientCheckError(f"gradient check failed: {len(bad)} of {len(trainable)} trainable tensors differ from "
                                 f"the float64 reference by more than {tol:g} (relative); worst {worst}: {errors[worst]:.3g}")
    return result
