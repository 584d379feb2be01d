"""GPTQ: layer-wise error-compensating quantization on calibration data, through gptqmodel.

Weights become ``bits``-bit integer codes in groups of ``group_size`` input columns, each group with
a 16-bit scale and a ``bits``-bit zero point; ``desc_act`` quantizes columns in order of decreasing
activation (act-order) and stores a group index per input column (``g_idx``, kept either way).
Analytic storage: bits + (16 + bits)/group_size per weight, plus 32 x in_features bits of g_idx per
layer. The checkpoint is made once per settings and toolchain, then reused (see prequant).

Runs on CPU with gptqmodel's torch kernels (bf16/fp16 compute only); the CUDA kernels (marlin,
exllama_v2, triton, machete, bitblas) are skipped on hosts without CUDA. vLLM loads the checkpoint
(``quantization="gptq"``) on CPU and CUDA. auto-gptq is not an option: its last release (0.7.1,
2024) cannot be imported with transformers 5.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from harness.precisions import PRECISIONS, StorageModel
from harness.precisions._gptqmodel import GptqModelMethod

if TYPE_CHECKING:
    from harness.base.host import Host

GptqKernel = Literal["auto", "torch", "torch_aten", "torch_fused", "triton", "exllama_v2", "marlin", "machete", "bitblas"]


@PRECISIONS.register("gptq")
class GPTQ(GptqModelMethod):
    """GPTQ weight-only quantization (gptqmodel), every decoder Linear; ``lm_head`` stays dense."""

    kernel_prefix: ClassVar[str] = "gptq_"
    cuda_kernels: ClassVar[frozenset[str]] = frozenset({"triton", "exllama_v2", "marlin", "machete", "bitblas"})
    kind: Literal["gptq"]
    bits: Literal[2, 3, 4, 8] = Field(default=4, description="Bits per weight code.")
    group_size: int = Field(default=64, ge=-1, description="Input columns per scale/zero group (-1: one group per row). "
                                                    "Must divide the model's hidden and MLP widths (SmolLM2: 576 -> 64).")
    desc_act: bool = Field(default=False, description="Act-order: quantize columns by decreasing activation.")
    sym: bool = Field(default=True, description="Symmetric codes (fixed zero point).")
    damp_percent: float = Field(default=0.05, gt=0, lt=1, description="Hessian dampening, fraction of its mean diagonal.")
    compute_dtype: Literal["bf16", "fp16"] = Field(default="bf16", description="dtype of scales and activations.")
    backend: Literal["gptqmodel", "auto-gptq"] = Field(default="gptqmodel", description="Toolchain that makes and "
                                                   "loads the checkpoint (auto-gptq is skipped with its reason).")
    kernel: GptqKernel = Field(default="auto", description="gptqmodel kernel to load with (auto picks per device).")

    @field_validator("group_size")
    @classmethod
    def _group(cls, value: int) -> int:
        if value == 0:
            raise ValueError("group_size must be -1 (one group per row) or a positive number of input columns")
        return value

    def storage(self, in_features: int, out_features: int) -> StorageModel:
        g = self.group_size if self.group_size > 0 else in_features
        return StorageModel(bits_per_weight=self.bits + (16 + self.bits) / g, layer_constant_bits=32 * in_features,
                            formula=f"{self.bits} + (16 + {self.bits})/{g} ({self.bits}-bit codes, fp16 scale and "
                                    f"{self.bits}-bit zero per group); per layer: int32 g_idx per input column")

    def quantize(self, src: Path, out: Path, texts: list[str], device: str) -> dict[str, Any]:
        from gptqmodel import GPTQConfig

        config = GPTQConfig(bits=self.bits, group_size=self.group_size, desc_act=self.desc_act, sym=self.sym,
                            damp_percent=self.damp_percent)
        return self.gptqmodel_quantize(src, out, config, texts, device, dtype="float32")

    def vllm_args(self, host: "Host") -> dict[str, Any] | str:
        return {"dtype": self.dtype, "quantization": "gptq"}
