"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from harness.training import TRAINING_MODES, TrainingMode

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host


@TRAINING_MODES.register("full")
class Full(TrainingMode):
    """All weights trainable."""

    kind: Literal["full"] = "full"

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        if cell.precision.quantized:
            return f"full fine-tuning cannot update {cell.precision.kind} quantized weights (use lora)"
        return None

    def prepare(self, model: Any, *, gradient_checkpointing: bool) -> Any:
        for p in model.parameters():
            p.requires_grad_(True)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model
