"""Optimizers a training cell can step with, and what their state costs (the estimator's model of it).

Names: ``adamw`` (torch), ``adamw8bit``, ``paged_adamw``, ``paged_adamw8bit`` (bitsandbytes) and ``sgd``
(torch, no momentum: no state). bitsandbytes' paged optimizers fall back to ordinary memory on CPU
(they warn); :func:`build` says whether paging was in effect so a CPU record never claims it.

State bytes per trainable tensor of ``n`` elements (exact, as the optimizers allocate it):

- ``adamw``: two moments in the parameter's dtype + one fp32 ``step`` scalar tensor.
- ``paged_adamw``: two fp32 moments (bitsandbytes' 32-bit state); ``step`` is a Python int.
- ``adamw8bit``/``paged_adamw8bit``: tensors of at least ``MIN_8BIT_SIZE`` elements keep two uint8
  moments + two fp32 absmax per block of ``BLOCK_8BIT``; smaller tensors keep fp32 moments. The two
  256-entry fp32 quantization maps are shared by all tensors (counted once).
- ``sgd``: nothing.
"""

from __future__ import annotations

import math
from typing import Any, Literal

OptimizerName = Literal["adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit", "sgd"]
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamw8bit", "paged_adamw", "paged_adamw8bit", "sgd")
BNB_OPTIMIZERS = {"adamw8bit": "AdamW8bit", "paged_adamw": "PagedAdamW", "paged_adamw8bit": "PagedAdamW8bit"}
MIN_8BIT_SIZE = 4096  # bitsandbytes: tensors smaller than this keep 32-bit state
BLOCK_8BIT = 256  # bitsandbytes: elements per absmax of blockwise 8-bit state
QMAP_BYTES = 2 * 256 * 4  # the signed and unsigned dynamic maps, fp32, shared


def requires(name: str) -> str | None:
    """The package an optimizer needs beyond torch (``bitsandbytes``), or None."""
    return "bitsandbytes" if name in BNB_OPTIMIZERS else None


def state_bytes(name: str, numels: list[int], element_bytes: list[int], *, mixed_precision: bool = False) -> int:
    """Exact optimizer-state bytes for trainable tensors of ``numels`` elements whose parameters hold
    ``element_bytes`` bytes per element. ``mixed_precision`` adds an fp32 master copy of each tensor
    and keeps AdamW's moments in fp32 (16-bit parameters and gradients beside them)."""
    total = 0
    any_8bit = False
    for n, eb in zip(numels, element_bytes):
        master = 4 * n if mixed_precision else 0
        moment = 4 if mixed_precision else eb
        if name == "adamw":
            total += master + 2 * moment * n + 4
        elif name == "paged_adamw":
            total += master + 2 * 4 * n
        elif name in ("adamw8bit", "paged_adamw8bit"):
            if n < MIN_8BIT_SIZE:
                total += master + 2 * 4 * n
            else:
                any_8bit = True
                total += master + 2 * n + 2 * 4 * math.ceil(n / BLOCK_8BIT)
        elif name == "sgd":
            total += master
        else:
            raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return total + (QMAP_BYTES if any_8bit else 0)


def replicated_bytes(name: str, tensors: int) -> int:
    """State every rank keeps whole when the rest is sharded (ZeRO/FSDP): torch AdamW's fp32 ``step``
    scalar per tensor."""
    return 4 * tensors if name == "adamw" else 0


def build(name: str, params: list[Any], lr: float, device: str) -> tuple[Any, dict[str, Any]]:
    """The optimizer over ``params`` and facts about it: ``class``, ``paged`` (asked for) and
    ``paged_in_effect`` (provisional: on CPU bitsandbytes falls back to ordinary memory; after the first
    step, :func:`paged_state` says whether the state really is paged)."""
    import torch

    if name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr)
    elif name == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    elif name in BNB_OPTIMIZERS:
        import bitsandbytes as bnb

        opt = getattr(bnb.optim, BNB_OPTIMIZERS[name])(params, lr=lr)
    else:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    paged = name.startswith("paged_")
    return opt, {"name": name, "class": f"{type(opt).__module__}.{type(opt).__name__}", "paged": paged,
                 "paged_in_effect": paged and device.startswith("cuda")}


def state_tensors(optimizer: Any) -> list[Any]:
    """Every tensor the optimizer keeps in its per-parameter state."""
    import torch

    return [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]


def paged_state(optimizer: Any) -> bool:
    """Whether any state tensor really is paged (bitsandbytes marks paged tensors ``is_paged``)."""
    return any(getattr(t, "is_paged", False) for t in state_tensors(optimizer))
