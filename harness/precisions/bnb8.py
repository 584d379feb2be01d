"""bitsandbytes LLM.int8: vector-wise absmax int8 weights, outlier feature columns computed in 16 bit.

Every Linear except ``lm_head`` becomes ``Linear8bitLt``: int8 weights with one fp32 absmax scale per
output row (``SCB``), so 8 + 32/in_features bits per weight. At run time, input columns with any
magnitude above ``threshold`` go through a 16-bit matmul (the outliers); the rest through int8.
Runs on CPU with bitsandbytes>=0.48 (slowly: no fast CPU int8 kernel); vLLM has no bitsandbytes
method on CPU.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from harness.precisions import PRECISIONS, Precision, StorageModel

if TYPE_CHECKING:
    from harness.base.host import Host


@PRECISIONS.register("int8")
class BnBInt8(Precision):
    """bitsandbytes ``load_in_8bit`` (LLM.int8) of every Linear layer except ``lm_head``."""

    quantized: ClassVar[bool] = True
    requires: ClassVar[tuple[str, str] | None] = ("bitsandbytes", "pip install 'bitsandbytes>=0.48'")
    kind: Literal["int8"]
    threshold: float = Field(default=6.0, ge=0.0, description="Outlier threshold: activation magnitudes above it "
                                                             "run in 16 bit (0 disables the decomposition).")
    compute_dtype: Literal["fp32", "bf16", "fp16"] = Field(default="bf16", description="dtype of the non-int8 parts.")

    def storage(self, in_features: int, out_features: int) -> StorageModel:
        return StorageModel(bits_per_weight=8 + 32 / in_features,
                            formula="8 + 32/in_features (int8 weights, one fp32 absmax per output row)")

    def load_kwargs(self) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=self.threshold)}

    def vllm_args(self, host: "Host") -> dict[str, Any] | str:
        if not host.has_cuda:
            return "vLLM's CPU build has no bitsandbytes quantization method"
        return {"dtype": self.dtype, "quantization": "bitsandbytes"}
