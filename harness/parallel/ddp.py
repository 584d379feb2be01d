"""DistributedDataParallel: every rank keeps the whole model, its gradients and optimizer state
(ZeRO stage 0); gradients are all-reduced during backward."""

from __future__ import annotations

from typing import Any, Literal

from harness.parallel import PARALLEL, ParallelEngine


@PARALLEL.register("ddp")
class DDP(ParallelEngine):
    """torch DistributedDataParallel."""

    kind: Literal["ddp"] = "ddp"

    @property
    def zero_stage(self) -> int:
        return 0

    def wrap(self, model: Any, device: str) -> Any:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=None if device == "cpu" else [model.device])
