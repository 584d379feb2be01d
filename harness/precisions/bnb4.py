"""bitsandbytes 4-bit weights (QLoRA's NF4, or FP4), with optional double quantization.

NF4: normal-quantile 4-bit codes in blocks of 64 with an fp32 absmax per block; double quantization
re-quantizes those absmax constants to 8 bits in blocks of 256. Runs on CPU with bitsandbytes>=0.48.
vLLM's CPU build has no bitsandbytes method, so vLLM cells in this precision are skipped on CPU.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from harness.precisions import PRECISIONS, Precision, StorageModel

BLOCK = 64  # bitsandbytes' 4-bit block size (weights per absmax)
BLOCK2 = 256  # double quantization: absmax constants per second-level block

if TYPE_CHECKING:
    from harness.base.host import Host


@PRECISIONS.register("nf4")
@PRECISIONS.register("fp4")
class BnB4bit(Precision):
    """bitsandbytes ``load_in_4bit`` quantization of every Linear layer except ``lm_head``."""

    quantized: ClassVar[bool] = True
    adapter_mode: ClassVar[str | None] = "qlora"  # LoRA over a frozen 4-bit base, prepared for k-bit training
    requires: ClassVar[tuple[str, str] | None] = ("bitsandbytes", "pip install 'bitsandbytes>=0.48'")
    kind: Literal["nf4", "fp4"]
    double_quant: bool = Field(default=True, description="Re-quantize the per-block absmax constants to 8 bits.")
    compute_dtype: Literal["fp32", "bf16", "fp16"] = Field(default="bf16", description="dtype of the matmuls.")

    def storage(self, in_features: int, out_features: int) -> StorageModel:
        code = 16 * 32 + 32  # the 16-entry fp32 code book and the fp32 offset
        if self.double_quant:
            return StorageModel(bits_per_weight=4 + 8 / BLOCK + 32 / (BLOCK * BLOCK2), layer_constant_bits=code + 256 * 32,
                                formula=f"4 + 8/{BLOCK} + 32/({BLOCK}*{BLOCK2}) (4-bit codes, 8-bit absmax per {BLOCK}, "
                                        f"fp32 absmax per {BLOCK2} blocks); per layer: code books")
        return StorageModel(bits_per_weight=4 + 32 / BLOCK, layer_constant_bits=16 * 32,
                            formula=f"4 + 32/{BLOCK} (4-bit codes, fp32 absmax per {BLOCK}); per layer: code book")

    def layer_bytes(self, in_features: int, out_features: int) -> int:
        """Exact bytes, partial blocks rounded up as bitsandbytes allocates them."""
        n = in_features * out_features
        blocks = math.ceil(n / BLOCK)
        codes = math.ceil(n / 2)
        if self.double_quant:
            return codes + blocks + 4 * math.ceil(blocks / BLOCK2) + 4 + 16 * 4 + 256 * 4
        return codes + 4 * blocks + 16 * 4

    def load_kwargs(self) -> dict[str, Any]:
        import torch
        from transformers import BitsAndBytesConfig

        return {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=self.kind, bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, self.dtype))}

    def vllm_args(self, host: "Host") -> dict[str, Any] | str:
        if not host.has_cuda:
            return "vLLM's CPU build has no bitsandbytes quantization method"
        return {"dtype": self.dtype, "quantization": "bitsandbytes"}
