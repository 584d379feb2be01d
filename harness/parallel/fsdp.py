"""Fully sharded data parallel (torch FSDP2, ``fully_shard``): optimizer state and gradients are
sharded across ranks; ``zero3`` also shards the parameters outside each layer's computation
(reshard after forward), ``zero2`` keeps them gathered from forward through backward."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from harness.parallel import PARALLEL, ParallelEngine


@PARALLEL.register("fsdp")
class FSDP(ParallelEngine):
    """torch FSDP2 with one shard group per decoder layer plus the root."""

    kind: Literal["fsdp"] = "fsdp"
    sharding: Literal["zero2", "zero3"] = Field(
        default="zero3", description="zero3: parameters resharded after forward (FULL_SHARD); "
                                     "zero2: kept gathered until backward ends (SHARD_GRAD_OP).")

    @property
    def zero_stage(self) -> int:
        return 3 if self.sharding == "zero3" else 2

    def supports(self, cell: Any, host: Any) -> str | None:
        if cell.precision.quantized:
            return (f"FSDP shards floating-point parameters; {cell.precision.kind} weights are packed integers "
                    "(FSDP-QLoRA needs bitsandbytes' quant_storage in the compute dtype, which the harness does not set up)")
        return super().supports(cell, host)

    def wrap(self, model: Any, device: str) -> Any:
        from torch.distributed.fsdp import fully_shard

        reshard = self.sharding == "zero3"
        layers = getattr(getattr(model, "model", None), "layers", None)
        if layers is None:  # peft wraps: base_model.model.model.layers
            inner = getattr(getattr(model, "base_model", None), "model", None)
            layers = getattr(getattr(inner, "model", None), "layers", None)
        for layer in layers or []:
            fully_shard(layer, reshard_after_forward=reshard)
        fully_shard(model, reshard_after_forward=reshard)
        return model
