"""The quantization axis: how weights are stored and computed (fp32/bf16/fp16, bitsandbytes, ...).

One module per method, each registering its config class in :data:`PRECISIONS`. A precision knows
whether it can run on a host (``supports``), how to load a transformers model in it (``load``), and
how to ask vLLM for it (``vllm_args``, or the reason vLLM cannot). Config classes import no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from harness.registry import Registry
from harness.specbase import Implementation

if TYPE_CHECKING:
    from harness.host import Host
    from harness.planner import Cell

PRECISIONS: Registry = Registry("precision", "harness.precisions")

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class Precision(Implementation):
    """Base of a precision config."""

    quantized: ClassVar[bool] = False

    @property
    def dtype(self) -> str:
        """torch dtype name of the unquantized weights and of activations."""
        raise NotImplementedError

    def supports(self, cell: "Cell", host: "Host") -> str | None:
        """Why this precision cannot run ``cell`` on ``host`` (a skip reason), or None."""
        return None

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
