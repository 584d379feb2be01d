"""The parallelism axis of training: how a training cell spreads over processes (DDP, FSDP, DeepSpeed).

One module per engine, each registering its config class in :data:`PARALLEL`. A cell with a parallel
engine runs its ranks under ``torchrun`` (``harness.scenarios.training.launch``), each rank wrapping its freshly
prepared model with :meth:`ParallelEngine.wrap`. ``zero_stage`` is the ZeRO stage the engine's
sharding corresponds to, which the estimator uses to predict per-rank bytes: 0 replicates everything
(DDP), 1 shards optimizer state, 2 also gradients, 3 also parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from harness.base.registry import Registry
from harness.base.specbase import Implementation

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host

PARALLEL: Registry = Registry("parallel engine", "harness.parallel")


class ParallelEngine(Implementation):
    """Base of a parallel engine config."""

    requires: ClassVar[tuple[str, str] | None] = None  # (tracked package, install hint)
    nproc: int = Field(default=2, ge=2, description="Processes (ranks) on this host, one data-parallel replica each.")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        default="auto", description="torch.distributed backend (auto: nccl on CUDA, gloo on CPU).")

    @property
    def zero_stage(self) -> int:
        """The ZeRO stage this engine's sharding corresponds to."""
        raise NotImplementedError

    def resolved_backend(self, device: str) -> str:
        return self.backend if self.backend != "auto" else ("nccl" if device == "cuda" else "gloo")

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        """Why this engine cannot run ``cell`` on ``host`` (a skip reason), or None."""
        if self.requires is not None and not host.has(self.requires[0]):
            return f"{self.requires[0]} is not installed ({self.requires[1]})"
        if self.resolved_backend(cell.device) == "nccl" and cell.device != "cuda":
            return "the nccl backend needs CUDA devices; use backend: gloo on CPU"
        if cell.device == "cuda" and len(host.gpus) < self.nproc:
            return f"{self.nproc} ranks need {self.nproc} GPUs; this host has {len(host.gpus)}"
        return None

    def wrap(self, model: Any, device: str) -> Any:
        """Wrap a prepared model (trainable parameters already chosen) for data-parallel training."""
        raise NotImplementedError
