"""QLoRA: LoRA adapters over a bitsandbytes 4-bit (NF4/FP4) base that stays frozen and quantized.

The base is prepared with peft's ``prepare_model_for_kbit_training`` (its other 16-bit tensors are
upcast to fp32, gradient checkpointing non-reentrant when asked); adapters train in fp32. The
paper's recipe adds double quantization (a precision setting) and a paged optimizer
(``optimizer: paged_adamw`` or ``paged_adamw8bit``; on CPU bitsandbytes falls back to ordinary memory).
Which precisions are such a base is theirs to say (``adapter_mode = "qlora"``).
"""

from __future__ import annotations

from typing import Any, Literal

from harness.training import TRAINING_MODES
from harness.training.lora import LoRA


@TRAINING_MODES.register("qlora")
class QLoRA(LoRA):
    """LoRA over a 4-bit bitsandbytes base."""

    kind: Literal["qlora"] = "qlora"  # type: ignore[assignment]

    def wrong_base(self, precision: Any) -> str:
        return f"qlora trains over a 4-bit bitsandbytes base (nf4 or fp4); precision {precision.label!r} is {precision.kind}"
