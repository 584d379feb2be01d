"""DeepSpeed ZeRO: stage 1 shards optimizer state, 2 also gradients, 3 also parameters.

DeepSpeed owns the optimizer step (``deepspeed.initialize`` wraps model and optimizer together), so
instead of :meth:`~harness.parallel.ParallelEngine.wrap` this engine gives the step loop (:mod:`harness.scenarios.training.loop`) a stepper
(:meth:`DeepSpeed.stepper`): the harness optimizer as DeepSpeed's client optimizer, ``engine.backward``
per micro-batch (DeepSpeed divides by ``grad_accum`` itself) and ``engine.step`` after each micro-batch
(it updates only at the accumulation boundary). ZeRO keeps gradients and partitions in its own flat
buffers, where ``p.grad`` and parameter storages do not show them, so the rank records no byte counts
for this engine (``counts_bytes = False``) rather than wrong ones.

Runs on CUDA runners only. Untested in the harness' CI (no GPU, DeepSpeed not installed there).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from pydantic import Field

from harness.parallel import PARALLEL, ParallelEngine

if TYPE_CHECKING:
    from harness.base.cellview import CellView, StepView
    from harness.base.host import Host

CPU_REASON = ("DeepSpeed ZeRO runs on CUDA runners only: without CUDA DeepSpeed switches to its CPU accelerator "
              "(validated on Intel Xeon only, oneCCL communication, kernels JIT-built with gcc), which the harness "
              "does not set up; use ddp or fsdp on CPU")


@PARALLEL.register("deepspeed")
class DeepSpeed(ParallelEngine):
    """DeepSpeed ZeRO stage 1, 2 or 3 with the harness optimizer as client optimizer."""

    kind: Literal["deepspeed"] = "deepspeed"
    requires: ClassVar[tuple[str, str] | None] = ("deepspeed", "pip install deepspeed")
    stage: Literal[1, 2, 3] = Field(default=2, description="ZeRO stage: 1 shards optimizer state, 2 also "
                                                           "gradients, 3 also parameters.")

    @property
    def zero_stage(self) -> int:
        return self.stage

    def supports(self, cell: CellView, host: Host) -> str | None:
        if cell.device != "cuda":
            return CPU_REASON
        return super().supports(cell, host)

    def wrap(self, model: Any, device: str) -> Any:
        raise NotImplementedError("DeepSpeed wraps the model together with its optimizer; "
                                  "the step loop uses DeepSpeed.stepper instead of wrap")

    def config(self, settings: StepView, dtype: Any) -> dict[str, Any]:
        """The DeepSpeed config of a rank: micro-batch, accumulation, ZeRO stage and 16-bit mode."""
        import torch

        config: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": settings.batch_size,
            "gradient_accumulation_steps": settings.grad_accum,
            "zero_optimization": {"stage": self.stage},
            "zero_allow_untested_optimizer": True,  # the harness' optimizers are client optimizers
            "steps_per_print": 10**9,
        }
        if dtype == torch.bfloat16:
            config["bf16"] = {"enabled": True}
        elif dtype == torch.float16:
            config["fp16"] = {"enabled": True}
        return config

    def stepper(self, model: Any, settings: StepView, device: str, build: Callable[..., Any]) -> DeepSpeedStepper:
        """A :class:`harness.scenarios.training.loop.Stepper` running ``model`` under ``deepspeed.initialize``,
        with the optimizer ``build(name, params, lr, device)`` makes as DeepSpeed's client optimizer."""
        return DeepSpeedStepper(self, model, settings, device, build)


class DeepSpeedStepper:
    """One rank's DeepSpeed engine in the shape the step loop steps (see :class:`harness.scenarios.training.loop.Stepper`)."""

    counts_bytes = False

    def __init__(self, engine: DeepSpeed, model: Any, settings: StepView, device: str, build: Callable[..., Any]) -> None:
        try:
            import deepspeed
        except ImportError as exc:
            raise ImportError("the deepspeed parallel engine needs DeepSpeed (pip install deepspeed)") from exc

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer, self.info = build(settings.optimizer, params, settings.lr, device)
        dtype = next(model.parameters()).dtype
        self.model, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=engine.config(settings, dtype))
        self.trainable = [p for p in self.model.module.parameters() if p.requires_grad]
        self.info = self.info | {"deepspeed": deepspeed.__version__, "zero_stage": engine.stage,
                                 "bytes": "not counted: ZeRO keeps gradients and partitions in flat buffers"}

    def zero_grad(self) -> None:
        pass  # DeepSpeed clears gradients in engine.step at the accumulation boundary

    def micro(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # DeepSpeed defers its reduction to the accumulation boundary

    def backward(self, loss: Any, last: bool) -> None:
        self.model.backward(loss)
        if not last:
            self.model.step()  # counts the micro-step; updates nothing before the boundary

    def step(self) -> None:
        self.model.step()
