"""Training FLOPs and model FLOPs utilization (MFU).

A token's forward costs 2 FLOPs per parameter, the input gradients 2 more, and the weight gradients
2 per *trainable* parameter: ``4 x params + 2 x trainable`` per token (6N for full fine-tuning, about
4N for LoRA, whose frozen weights need no weight gradient). MFU is the achieved rate over the device's
peak FLOP/s in the cell's dtype.
"""

from __future__ import annotations


def train_flops_per_token(params: int, trainable: int) -> int:
    """FLOPs of one training token: ``4 x params + 2 x trainable``."""
    return 4 * params + 2 * trainable


def mfu_ratio(params: int, trainable: int, tokens_per_step: int, step_s: float, peak_flops: float) -> float:
    """Model FLOPs utilization of a step of ``tokens_per_step`` tokens taking ``step_s`` seconds on a
    device of ``peak_flops`` FLOP/s. Raises ValueError for a non-positive step time or peak."""
    if step_s <= 0 or peak_flops <= 0:
        raise ValueError(f"step_s and peak_flops must be positive, got {step_s} and {peak_flops}")
    return train_flops_per_token(params, trainable) * tokens_per_step / step_s / peak_flops
