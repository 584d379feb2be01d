"""LoRA (peft): frozen base weights plus trainable rank-r adapters A (r x d_in) and B (d_out x r)
on the target projections, scaled by alpha / r. On a 4-bit base this is QLoRA's training path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from harness.training import TRAINING_MODES, TrainingMode

if TYPE_CHECKING:
    from harness.host import Host
    from harness.planner import Cell


@TRAINING_MODES.register("lora")
class LoRA(TrainingMode):
    """Low-rank adapters via peft."""

    kind: Literal["lora"] = "lora"
    r: int = Field(default=8, ge=1, description="Adapter rank.")
    alpha: float = Field(default=16, gt=0, description="Scale numerator: the update is scaled by alpha / r.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1,
                               description="Names of the modules that get adapters.")

    def supports(self, cell: "Cell", host: "Host") -> str | None:
        if not host.has("peft"):
            return "peft is not installed (pip install peft)"
        if self.kind == "lora" and cell.precision.kind in ("nf4", "fp4"):
            return f"LoRA over a 4-bit base is the qlora mode (kind: qlora); precision {cell.precision.label!r} is {cell.precision.kind}"
        if cell.precision.kind in ("gptq", "awq"):
            return f"training over {cell.precision.kind} checkpoints is not supported by the harness (use nf4 with qlora)"
        return None

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
