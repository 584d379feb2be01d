"""Storage accounting of a loaded model's linear layers: bits per parameter, measured and analytic.

A layer's stored bytes are its parameters and persistent buffers (packed codes, scales, zeros,
group indices) plus the tensors hanging off bitsandbytes parameters (``quant_state`` absmax, code
books and the nested double-quantization state; LLM.int8's ``SCB`` row scales); each storage is
counted once. Bits per parameter = 8 x stored bytes / (in_features x out_features), summed over the
layers before dividing. The analytic side comes from the precision's :class:`StorageModel`; the
residual (measured - analytic per-weight bits) is what the textbook formula leaves out, chiefly the
per-layer constants, which are accounted separately so a test can close the books exactly.

Measure right after loading: bitsandbytes repacks 4-bit weights on CPU at the first forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from harness.measure.kernels import is_linear_like
from harness.measure.tensors import attached_tensors, storage_bytes

if TYPE_CHECKING:
    from harness.precisions import Precision


class StorageReport(BaseModel):
    """Bits per parameter of a model's target layers (the quantized ones, or all Linears when dense)."""

    layers: int = Field(description="target layers counted")
    weights: int = Field(description="logical weights (in x out) of the target layers")
    stored_bytes: int = Field(description="bytes the target layers store, constants included")
    bits_per_param: float = Field(description="8 x stored_bytes / weights")
    analytic_bits_per_param: float = Field(description="the precision's per-weight formula, weighted by layer size")
    constant_bits_per_param: float = Field(description="per-layer constants (code books, g_idx) spread over the weights")
    residual_bits_per_param: float = Field(description="bits_per_param - analytic_bits_per_param")
    unexplained_bits_per_param: float = Field(description="residual - constant_bits_per_param (0 when the books close)")
    formula: str
    unquantized: list[str] = Field(description="Linear layers left in full precision (names)")
    by_class: dict[str, int] = Field(description="target layers by module class")


def layer_bytes(module: Any) -> int:
    """Bytes stored by one layer: parameters, persistent buffers and tensors attached to parameters."""
    skip = getattr(module, "_non_persistent_buffers_set", set())
    params = list(module.parameters(recurse=False))
    buffers = [b for name, b in module.named_buffers(recurse=False) if name not in skip]
    return storage_bytes([*params, *buffers, *(t for p in params for t in attached_tensors(p))])


def storage_report(model: Any, precision: "Precision") -> StorageReport:
    """Account the stored bits of ``model``'s target layers against ``precision``'s analytic model.

    Target layers are the quantized linear layers for a quantized precision, and every Linear except
    the output head for a dense one. Raises ValueError if the model has no target layer.
    """
    import torch

    layers = [(n, m) for n, m in model.named_modules() if is_linear_like(m)]
    quantized = [(n, m) for n, m in layers if type(m) is not torch.nn.Linear]
    if precision.quantized:
        targets = quantized
        unquantized = [n for n, m in layers if type(m) is torch.nn.Linear]
    else:
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        targets = [(n, m) for n, m in layers if m is not head]
        unquantized = []
    if not targets:
        raise ValueError(f"no {'quantized ' if precision.quantized else ''}linear layers found for precision {precision.label!r}")
    weights = stored = 0
    analytic_bits = constant_bits = 0.0
    by_class: dict[str, int] = {}
    formula = ""
    for _, m in targets:
        n = m.in_features * m.out_features
        model_ = precision.storage(m.in_features, m.out_features)
        weights += n
        stored += layer_bytes(m)
        analytic_bits += model_.bits_per_weight * n
        constant_bits += model_.layer_constant_bits
        formula = model_.formula
        cls = type(m).__name__
        by_class[cls] = by_class.get(cls, 0) + 1
    measured = 8 * stored / weights
    analytic = analytic_bits / weights
    constants = constant_bits / weights
    return StorageReport(
        layers=len(targets), weights=weights, stored_bytes=stored, bits_per_param=measured,
        analytic_bits_per_param=analytic, constant_bits_per_param=constants,
        residual_bits_per_param=measured - analytic, unexplained_bits_per_param=measured - analytic - constants,
        formula=formula, unquantized=unquantized, by_class=by_class)
