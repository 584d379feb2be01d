"""LoRA (peft): frozen base weights plus trainable rank-r adapters A (r x d_in) and B (d_out x r)
on the target projections, scaled by alpha / r. On a 4-bit base this is QLoRA's training path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from harness.training import TRAINING_MODES, TrainingMode

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host


@TRAINING_MODES.register("lora")
class LoRA(TrainingMode):
    """Low-rank adapters via peft."""

    kind: Literal["lora"] = "lora"
    r: int = Field(default=8, ge=1, description="Adapter rank.")
    alpha: float = Field(default=16, gt=0, description="Scale numerator: the update is scaled by alpha / r.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1,
                               description="Names of the modules that get adapters.")

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        if not host.has("peft"):
            return "peft is not installed (pip install peft)"
        p = cell.precision
        if p.adapter_mode is None:
            return f"training over {p.kind} checkpoints is not supported by the harness (use nf4 with qlora)"
        if p.adapter_mode != self.kind:
            return self.wrong_base(p)
        return None

    def wrong_base(self, precision: Any) -> str:
        """The skip reason when ``precision``'s adapters train under another mode."""
        return (f"LoRA over {precision.kind} weights is the {precision.adapter_mode} mode (kind: {precision.adapter_mode}); "
                f"precision {precision.label!r} is {precision.kind}")

    def estimator_fields(self) -> dict[str, Any]:
        """What :class:`harness.analytic.estimate.EstimateInput` needs of this mode."""
        return {"lora_r": self.r, "lora_targets": list(self.targets)}

    def prepare(self, model: Any, *, gradient_checkpointing: bool) -> Any:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                    gradient_checkpointing_kwargs={"use_reentrant": False})
        elif gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        config = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=list(self.targets), task_type="CAUSAL_LM")
        return get_peft_model(model, config)
