"""The gradient check a training cell runs first, on a model of its own (see :mod:`harness.measure.gradcheck`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.scenarios.training.loop import load_for_training

if TYPE_CHECKING:
    from harness.spec.cell import Cell
    from harness.spec.training import StepSettings


def wake_lora(model: Any, seed: int) -> Any:
    """Give every LoRA B matrix seeded values of scale 0.02 (peft starts them at zero, where every A
    gradient is exactly zero); for the gradient check only, never for the model that trains."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.dtype) * 0.02)
    return model


def check_gradients(cell: "Cell", path: str, s: "StepSettings", batch: Any) -> dict[str, Any]:
    """Load the cell's model to train exactly as the cell does, give LoRA's B matrices seeded non-zero
    values (at peft's zero init every A gradient is exactly zero, which would check nothing), and compare
    its gradients on ``batch`` with the float64 reference (:func:`harness.measure.gradcheck.check`).
    Everything is freed before returning; raises GradientCheckError on a mismatch."""
    import gc

    import torch

    from harness.measure import gradcheck

    lm = wake_lora(load_for_training(cell, path, s), cell.seed)
    twin = gradcheck.reference_model(lm, lambda: load_for_training(cell, path, s, dtype=torch.float64))
    try:
        return gradcheck.check(lm, twin, batch, cell.precision.dtype)
    finally:
        del lm, twin
        gc.collect()
