"""The parallelism axis of training: how a training cell spreads over processes (DDP, FSDP, DeepSpeed).

One module per engine, each registering its config class in :data:`PARALLEL`. A cell with a parallel
engine runs its ranks under ``torchrun`` (``harness.scenarios.training.launch``), each rank wrapping its freshly
prepared model with :meth:`ParallelEngine.wrap`. ``zero_stage`` is the ZeRO stage the engine's
sharding corresponds to, which the estimator uses to predict per-rank bytes: 0 replicates everything
(DDP), 1 shards optimizer state, 2 also gradients, 3 also parameters.

Across nodes (``nnodes`` > 1): every node runs the same cell (``harness run --only CELL``, under Slurm
``srun`` once per node); torchrun's c10d rendezvous at ``rdzv_endpoint`` joins their ranks, ``nproc`` per
node. ``node_rank``, ``rdzv_endpoint`` and ``rdzv_id`` default to Slurm's environment (``SLURM_NODEID``,
the first host of ``SLURM_JOB_NODELIST`` at port 29500, ``SLURM_JOB_ID``) or ``HARNESS_NODE_RANK``,
``HARNESS_RDZV_ENDPOINT``, ``HARNESS_RDZV_ID`` (:mod:`harness.base.nodes`). Node 0 writes the record,
with every rank's figures; the other nodes' runs write none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from harness.base.nodes import Nodes, locate
from harness.base.registry import Registry
from harness.base.specbase import Implementation

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host

PARALLEL: Registry = Registry("parallel engine", "harness.parallel")


class ParallelEngine(Implementation):
    """Base of a parallel engine config."""

    requires: ClassVar[tuple[str, str] | None] = None  # (tracked package, install hint)
    nproc: int = Field(default=2, ge=1, description="Processes (ranks) per node, one data-parallel replica each.")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        default="auto", description="torch.distributed backend (auto: nccl on CUDA, gloo on CPU).")
    nnodes: int = Field(default=1, ge=1, description="Nodes the ranks span (torchrun's c10d rendezvous joins them).")
    node_rank: int | None = Field(default=None, ge=0, description="This node's rank (default: SLURM_NODEID or HARNESS_NODE_RANK).")
    rdzv_endpoint: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+:\d{1,5}$",
                                      description="host:port of the rendezvous, on node 0 (default: Slurm's first node "
                                                  ":29500, or HARNESS_RDZV_ENDPOINT).")
    rdzv_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$",
                                description="The rendezvous' id, the same on every node (default: SLURM_JOB_ID or HARNESS_RDZV_ID).")

    @model_validator(mode="after")
    def _world(self) -> "ParallelEngine":
        if self.nproc * self.nnodes < 2:
            raise ValueError(f"a parallel cell needs at least 2 ranks: nproc {self.nproc} x nnodes {self.nnodes}")
        if self.node_rank is not None and self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        return self

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    def nodes(self, environ: dict[str, str] | None = None) -> "Nodes":
        """Where this node stands in a multi-node cell: the settings, else Slurm's or the harness'
        environment (:func:`harness.base.nodes.locate`). Raises ValueError naming what is missing."""
        return locate(self.nnodes, node_rank=self.node_rank, endpoint=self.rdzv_endpoint, rdzv_id=self.rdzv_id,
                      environ=environ)

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
            return f"{self.nproc} ranks per node need {self.nproc} GPUs; this host has {len(host.gpus)}"
        return None

    def wrap(self, model: Any, device: str) -> Any:
        """Wrap a prepared model (trainable parameters already chosen) for data-parallel training."""
        raise NotImplementedError
