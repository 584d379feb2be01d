"""The quantization axis: how weights are stored and computed (fp32/bf16/fp16, bitsandbytes, GPTQ, AWQ).

One module per method, each registering its config class in :data:`PRECISIONS`. A precision knows
whether it can run on a host (``supports``), how to make its checkpoint (``prepare``: a no-op for
methods that quantize while loading, a cached calibration run for GPTQ/AWQ), how to load a
transformers model in it (``load``), how to ask vLLM for it (``vllm_args``, or the reason vLLM
cannot), and what its quantized layers should cost in storage (``storage``, the analytic formula
the measurement is compared with). Config classes import no torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from harness.base.dtypes import TORCH_NAMES, element_bytes, short_name
from harness.base.registry import Registry
from harness.base.specbase import Implementation

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host
    from harness.base.resolved import ResolvedModel

PRECISIONS: Registry = Registry("precision", "harness.precisions")


class Prepared(BaseModel):
    """A checkpoint ready to load in a precision, and what making it cost (nothing for most methods)."""

    path: Path
    made: bool | None = Field(default=None, description="True: made by this call; False: reused from the cache; "
                                                        "None: nothing to make (the method quantizes while loading)")
    key: str | None = Field(default=None, description="cache key (model, method, settings, toolchain versions)")
    make_s: float | None = Field(default=None, description="seconds it took to make (when it was made, even if reused now)")
    make_peak_rss_bytes: int | None = Field(default=None, description="peak RSS of the process that made it")
    info: dict[str, Any] = Field(default_factory=dict)

    def on(self, model: "ResolvedModel") -> "ResolvedModel":
        """``model`` pointing at this checkpoint (same provenance)."""
        return model.model_copy(update={"path": self.path})


class StorageModel(BaseModel):
    """Analytic storage of one quantized layer of ``in_features x out_features`` weights.

    ``bits_per_weight`` is the textbook per-weight cost (codes plus per-group constants, e.g. NF4
    with double quantization 4 + 8/64 + 32/(64*256)); ``layer_constant_bits`` is what the format
    stores once per layer on top (code books, group indices). ``formula`` says it in words.
    """

    bits_per_weight: float
    layer_constant_bits: float = 0.0
    formula: str


class Precision(Implementation):
    """Base of a precision config.

    Capabilities other floors ask of a precision rather than naming kinds:
    ``quantized`` (its Linear weights are stored quantized), ``adapter_mode`` (the training mode whose
    adapters train over this base: ``lora`` over dense or LLM.int8 weights, ``qlora`` over 4-bit
    bitsandbytes weights, None where the harness trains nothing over it), :meth:`storage` and
    :meth:`layer_bytes` (its exact storage formula), :meth:`estimator_quant` (how ``harness estimate``
    names it).
    """

    quantized: ClassVar[bool] = False
    adapter_mode: ClassVar[str | None] = "lora"
    requires: ClassVar[tuple[str, str] | None] = None  # (tracked package, install hint)

    @property
    def dtype(self) -> str:
        """torch dtype name of the unquantized weights and of activations (``compute_dtype`` or the kind)."""
        return TORCH_NAMES[getattr(self, "compute_dtype", None) or self.kind]

    @property
    def dense_dtype(self) -> str:
        """``fp32``, ``bf16`` or ``fp16``: the suite name of :attr:`dtype`."""
        return short_name(self.dtype)

    def estimator_quant(self) -> tuple[str, dict[str, Any]]:
        """``(kind, settings)`` as :class:`harness.analytic.estimate.EstimateInput` takes it: ``("none", {})``
        for dense weights, else this kind and the settings that change its storage."""
        if not self.quantized:
            return "none", {}
        return self.kind, self.model_dump(mode="json", exclude={"kind", "name"})

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        """Why this precision cannot run ``cell`` on ``host`` (a skip reason), or None."""
        if self.requires is not None and not host.has(self.requires[0]):
            return f"{self.requires[0]} is not installed ({self.requires[1]})"
        return None

    def prepare(self, model: "ResolvedModel", cell: "CellView") -> Prepared:
        """Make (or reuse) the checkpoint this precision loads; the default loads the model as it is."""
        return Prepared(path=model.path)

    def storage(self, in_features: int, out_features: int) -> StorageModel:
        """Analytic storage of a weight matrix in this precision (dense: the dtype's bits)."""
        bits = 8 * element_bytes(self.dtype)
        return StorageModel(bits_per_weight=bits, formula=f"{bits} bits per weight ({self.dtype})")

    def layer_bytes(self, in_features: int, out_features: int) -> int:
        """Exact bytes one quantized (or dense) ``in x out`` weight matrix occupies, constants included."""
        model = self.storage(in_features, out_features)
        return math.ceil((model.bits_per_weight * in_features * out_features + model.layer_constant_bits) / 8)

    def load(self, path: str, device: str) -> Any:
        """Load a transformers causal LM from ``path`` in this precision on ``device``."""
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.dtype), device_map=device,
                                                    **self.load_kwargs())

    def load_kwargs(self) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments (e.g. a quantization config)."""
        return {}

    def vllm_args(self, host: "Host") -> dict[str, Any] | str:
        """Keyword arguments for ``vllm.LLM`` in this precision, or the reason vLLM cannot run it here."""
        return {"dtype": self.dtype}
