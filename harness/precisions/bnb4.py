"""bitsandbytes 4-bit weights (QLoRA's NF4, or FP4), with optional double quantization.

NF4: normal-quantile 4-bit codes in blocks of 64 with an fp32 absmax per block; double quantization
re-quantizes those absmax constants to 8 bits in blocks of 256. Runs on CPU with bitsandbytes>=0.48.
vLLM's CPU build has no bitsandbytes method, so vLLM cells in this precision are skipped on CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from harness.precisions import DTYPES, PRECISIONS, Precision

if TYPE_CHECKING:
    from harness.host import Host
    from harness.planner import Cell


@PRECISIONS.register("nf4")
@PRECISIONS.register("fp4")
class BnB4bit(Precision):
    """bitsandbytes ``load_in_4bit`` quantization of every Linear layer except ``lm_head``."""

    quantized: ClassVar[bool] = True
    kind: Literal["nf4", "fp4"]
    double_quant: bool = Field(default=True, description="Re-quantize the per-block absmax constants to 8 bits.")
    compute_dtype: Literal["fp32", "bf16", "fp16"] = Field(default="bf16", description="dtype of the matmuls.")

    @property
    def dtype(self) -> str:
        return DTYPES[self.compute_dtype]

    def supports(self, cell: "Cell", host: "Host") -> str | None:
        if not host.has("bitsandbytes"):
            return "bitsandbytes is not installed (pip install bitsandbytes)"
        return None

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
