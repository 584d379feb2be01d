"""AWQ: activation-aware weight quantization (salient input channels scaled up before rounding), via gptqmodel.

Weights become ``bits``-bit codes in groups of ``group_size`` input columns with a 16-bit scale and a
packed zero point per group (GEMM layout). Analytic storage: bits + (16 + bits)/group_size per
weight. The checkpoint is made once per settings and toolchain, then reused (see prequant).

On CPU gptqmodel quantizes AWQ only from bf16/fp16 weights and with its torch AWQ backend; the
GEMM/GEMV/marlin/exllama kernels need CUDA and are skipped elsewhere. vLLM loads the checkpoint
(``quantization="awq"``). autoawq is not an option: archived upstream, and its CPU inference needs
intel-extension-for-pytorch, which has no build for torch 2.13.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from harness.precisions import PRECISIONS, StorageModel
from harness.precisions._gptqmodel import GptqModelMethod

if TYPE_CHECKING:
    from harness.base.host import Host

AwqKernel = Literal["auto", "torch", "torch_aten", "gemm", "gemv", "gemv_fast", "marlin", "exllama_v2"]


@PRECISIONS.register("awq")
class AWQ(GptqModelMethod):
    """AWQ weight-only quantization (gptqmodel), every decoder Linear; ``lm_head`` stays dense."""

    kernel_prefix: ClassVar[str] = "awq_"
    cuda_kernels: ClassVar[frozenset[str]] = frozenset({"gemm", "gemv", "gemv_fast", "marlin", "exllama_v2"})
    kind: Literal["awq"]
    bits: Literal[4] = Field(default=4, description="Bits per weight code (AWQ kernels are 4-bit).")
    group_size: int = Field(default=64, gt=0, description="Input columns per scale/zero group; must divide the "
                                                          "model's hidden and MLP widths (SmolLM2: 576 -> 64).")
    sym: bool = Field(default=False, description="Symmetric codes; False keeps a zero point per group (AWQ's usual).")
    compute_dtype: Literal["bf16", "fp16"] = Field(default="bf16", description="dtype of scales and activations.")
    backend: Literal["gptqmodel", "autoawq"] = Field(default="gptqmodel", description="Toolchain that makes and "
                                                   "loads the checkpoint (autoawq is skipped with its reason).")
    kernel: AwqKernel = Field(default="auto", description="gptqmodel kernel to load with (auto picks per device).")

    def storage(self, in_features: int, out_features: int) -> StorageModel:
        g = self.group_size
        return StorageModel(bits_per_weight=self.bits + (16 + self.bits) / g,
                            formula=f"{self.bits} + (16 + {self.bits})/{g} ({self.bits}-bit codes, fp16 scale and "
                                    f"{self.bits}-bit zero per group)")

    def quantize(self, src: Path, out: Path, texts: list[str], device: str) -> dict[str, Any]:
        from gptqmodel import AWQConfig

        config = AWQConfig(bits=self.bits, group_size=self.group_size, sym=self.sym)
        kernel = "auto" if device == "cuda" else "awq_torch"
        return self.gptqmodel_quantize(src, out, config, texts, device, dtype=self.dtype, kernel=kernel)

    def vllm_args(self, host: "Host") -> dict[str, Any] | str:
        return {"dtype": self.dtype, "quantization": "awq"}
