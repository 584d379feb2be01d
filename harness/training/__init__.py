"""The training axis: which parameters train and how (full fine-tuning, LoRA, ...).

One module per mode, each registering its config class in :data:`TRAINING_MODES`. A mode turns a
freshly loaded model into the model to train (``prepare``); the training scenario runs the steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.registry import Registry
from harness.specbase import Implementation

if TYPE_CHECKING:
    from harness.host import Host
    from harness.planner import Cell

TRAINING_MODES: Registry = Registry("training mode", "harness.training")


class TrainingMode(Implementation):
    """Base of a training mode config."""

    def supports(self, cell: "Cell", host: "Host") -> str | None:
        """Why this mode cannot run ``cell`` on ``host`` (a skip reason), or None."""
        return None

    def prepare(self, model: Any, *, gradient_checkpointing: bool) -> Any:
        """Return the model to train, with exactly the trainable parameters of this mode."""
        raise NotImplementedError
