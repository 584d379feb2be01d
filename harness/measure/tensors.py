"""Tensor accounting, in one place: the bytes tensors hold, each storage counted once.

Quantized weights keep part of their bytes beside the parameter (bitsandbytes' ``quant_state``:
absmax, code books, the nested double-quantization state; LLM.int8's ``SCB`` row scales), so every
count of parameter bytes includes :func:`attached_tensors`. A DTensor (FSDP2) counts its local shard.
"""

from __future__ import annotations

import math
from typing import Any, Iterable


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


def local(t: Any) -> Any:
    """A DTensor's local shard (the bytes this rank holds), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def param_bytes(params: Iterable[Any]) -> int:
    """Bytes held by ``params`` and their quantization constants, each storage counted once."""
    params = [local(p) for p in params]
    seen: set[tuple[str, int]] = set()
    return storage_bytes(params, seen) + storage_bytes((t for p in params for t in attached_tensors(p)), seen)


def logical_numel(p: Any) -> int:
    """Elements a parameter stands for: a bitsandbytes 4-bit weight packs two per byte (its quant_state
    keeps the real shape); everything else is its ``numel()`` (DTensor: the global count)."""
    state = getattr(p, "quant_state", None)
    shape = getattr(state, "shape", None)
    if type(p).__name__ == "Params4bit" and shape is not None:
        return int(math.prod(shape))
    return p.numel()


def tensor_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the storages behind ``tensors`` (local shards), each once; None entries are ignored."""
    return storage_bytes(local(t) for t in tensors if t is not None)
