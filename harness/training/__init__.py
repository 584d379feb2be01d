"""The training axis: which parameters train and how (full fine-tuning, LoRA, ...).

One module per mode, each registering its config class in :data:`TRAINING_MODES`. A mode turns a
freshly loaded model into the model to train (``prepare``); the training scenario runs the steps
(:mod:`harness.scenarios.training.loop`) with an optimizer of :mod:`harness.training.optimizers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.base.registry import Registry
from harness.base.specbase import Implementation

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host

TRAINING_MODES: Registry = Registry("training mode", "harness.training")


class TrainingMode(Implementation):
    """Base of a training mode config."""

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        """Why this mode cannot run ``cell`` on ``host`` (a skip reason), or None."""
        return None

    def prepare(self, model: Any, *, gradient_checkpointing: bool) -> Any:
        """Return the model to train, with exactly the trainable parameters of this mode."""
        raise NotImplementedError

    def estimator_fields(self) -> dict[str, Any]:
        """What :class:`harness.analytic.estimate.EstimateInput` needs of this mode beyond its kind."""
        return {}
