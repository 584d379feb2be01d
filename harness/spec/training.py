"""The suite's ``training:`` block and the settings one training cell steps with.

:class:`StepSettings` holds every scalar setting once (with its bounds and description). The block,
:class:`TrainingSettings`, adds the modes, precisions and parallel engines, and lets each setting of
:data:`CROSSED` be a list: the planner crosses every list-valued setting, and each point is validated
as a :class:`StepSettings`. :func:`point_label` names a point's varied settings in its cell id, and
:func:`step_supports` decides, before anything runs, which points cannot run on a host.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo

from harness.base.paths import CorpusName
from harness.base.specbase import StrictModel, by_shape
from harness.spec.axes import ParallelConfig, TrainingModeConfig
from harness.training.optimizers import OptimizerName

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host


class StepSettings(StrictModel):
    """How one training cell steps: the scalar settings of one point of the ``training:`` block."""

    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus the batch is cut from.")
    tokens: Literal["corpus", "random"] = Field(
        default="corpus", description="corpus: the batch is cut from `corpus`; random: seeded random token ids over "
                                      "the model's whole vocabulary (memory measurements that need no text).")
    batch_size: int = Field(default=4, ge=1, description="Sequences per micro-batch (per rank).")
    seq_len: int = Field(default=128, ge=8, description="Tokens per sequence.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    warmup_steps: int = Field(default=1, ge=0, description="Untimed steps before measuring.")
    steps: int = Field(default=4, ge=1, description="Measured optimizer steps.")
    lr: float = Field(default=3e-4, gt=0, description="Learning rate.")
    optimizer: OptimizerName = Field(default="adamw", description="adamw (torch), adamw8bit, paged_adamw, "
                                                                  "paged_adamw8bit (bitsandbytes), sgd.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in backward (non-reentrant).")
    grad_check: bool = Field(default=True, description="Before training, compare the trainable parameters' gradients "
                                                       "with a float64 dense reference; a mismatch fails the cell.")
    memory_cap_gib: float | None = Field(default=None, gt=0, description="Give the cell this much memory, like a device "
                                                                         "of that size (CPU: data segment above what the "
                                                                         "runtime already uses; CUDA: the allocator's share): "
                                                                         "going over it is recorded as an oom.")

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def tokens_per_step(self) -> int:
        """Tokens one process trains on per optimizer step (all its micro-batches)."""
        return self.batch_size * self.seq_len * self.grad_accum


CROSSED = ("batch_size", "seq_len", "grad_accum", "gradient_checkpointing", "optimizer")


def _crossed(name: str) -> Any:
    """The block's field for a crossed setting: the scalar's default and description, list allowed."""
    base: FieldInfo = StepSettings.model_fields[name]
    return Field(default=base.default, description=f"{base.description} A list is crossed.")


_Ints = by_shape(one=int, many=list[int], scalars=(int, float),
                 expected="an integer or a list of integers (each one a cell)")
_Bools = by_shape(one=bool, many=list[bool], expected="true, false or a list of them (each one a cell)")
_Optimizers = by_shape(one=OptimizerName, many=list[OptimizerName],
                       expected="an optimizer name or a list of them (each one a cell)")


class TrainingSettings(StepSettings):
    """The suite's ``training:`` block: modes x precisions x parallel engines x every list-valued setting.

    The scalar settings are :class:`StepSettings`'; those in :data:`CROSSED` may also be lists."""

    modes: list[TrainingModeConfig] = Field(min_length=1, description="Training modes (kind: full, lora, qlora).")
    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to train in (default: all).")
    parallel: list[ParallelConfig | None] = Field(
        default_factory=lambda: [None], min_length=1,
        description="Data-parallel engines (kind: ddp, fsdp, deepspeed); null = a single process (the default).")
    batch_size: _Ints = _crossed("batch_size")  # type: ignore[assignment]
    seq_len: _Ints = _crossed("seq_len")  # type: ignore[assignment]
    grad_accum: _Ints = _crossed("grad_accum")  # type: ignore[assignment]
    gradient_checkpointing: _Bools = _crossed("gradient_checkpointing")  # type: ignore[assignment]
    optimizer: _Optimizers = _crossed("optimizer")  # type: ignore[assignment]
    combinations: list[dict[str, Any]] | None = Field(
        default=None, description="Instead of crossing lists: the points to run, each a mapping of some of "
                                  f"{', '.join(CROSSED)} to one value (the rest keep the block's scalar values); "
                                  "modes, precisions and parallel engines are still crossed with them.")

    @model_validator(mode="after")
    def _valid_points(self) -> "TrainingSettings":
        if self.combinations is not None:
            listed = [k for k in CROSSED if isinstance(getattr(self, k), list)]
            if listed:
                raise ValueError(f"combinations: give either combinations or lists, not both ({', '.join(listed)} "
                                 "is a list); put each value into a combination")
            if not self.combinations:
                raise ValueError("combinations: an empty list gives no cells; give at least one mapping")
            for i, combo in enumerate(self.combinations):
                unknown = sorted(set(combo) - set(CROSSED))
                if unknown:
                    raise ValueError(f"combinations[{i}]: {', '.join(unknown)} cannot vary per combination; "
                                     f"allowed: {', '.join(CROSSED)}")
            seen = [json.dumps(c, sort_keys=True) for c in self.combinations]
            if len(set(seen)) != len(seen):
                raise ValueError("combinations: a combination is given twice (the same cells twice)")
        for key in CROSSED:
            value = getattr(self, key)
            if isinstance(value, list):
                if not value:
                    raise ValueError(f"{key}: an empty list crosses to no cells; give at least one value")
                repeated = sorted({str(v) for v in value if value.count(v) > 1})
                if repeated:
                    raise ValueError(f"{key}: repeated values {', '.join(repeated)} would give the same cells twice")
        for point in self.points():
            StepSettings.model_validate(point)  # each crossed value obeys the scalar bounds
        return self

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the list-valued settings, as scalar StepSettings mappings."""
        base = self.model_dump(mode="json", include=set(StepSettings.model_fields) - set(CROSSED))
        if self.combinations is not None:
            scalars = self.model_dump(mode="json", include=set(CROSSED))
            return [base | scalars | combo for combo in self.combinations]
        axes = [[(k, v) for v in (getattr(self, k) if isinstance(getattr(self, k), list) else [getattr(self, k)])]
                for k in CROSSED]
        return [base | dict(combo) for combo in itertools.product(*axes)]

    def varied(self) -> list[str]:
        """The crossed settings with more than one value (they name the cells)."""
        if self.combinations is not None:
            points = self.points()
            return [k for k in CROSSED if len({json.dumps(p[k]) for p in points}) > 1]
        return [k for k in CROSSED if isinstance(getattr(self, k), list) and len(getattr(self, k)) > 1]


def point_label(point: dict[str, Any], varied: list[str]) -> str:
    """Cell-id suffix naming a point's varied settings: ``bs8``, ``seq256``, ``ga4``, ``gc``/``nogc``, optimizer."""
    short = {"batch_size": "bs{}", "seq_len": "seq{}", "grad_accum": "ga{}"}
    parts = []
    for k in varied:
        v = point[k]
        if k == "gradient_checkpointing":
            parts.append("gc" if v else "nogc")
        elif k == "optimizer":
            parts.append(str(v).replace("_", ""))
        else:
            parts.append(short[k].format(v))
    return "-".join(parts)


def step_supports(cell: "CellView", host: "Host") -> str | None:
    """Why a training cell's step settings cannot run on ``host`` (a skip reason), or None."""
    from harness.training.optimizers import requires

    s = StepSettings.model_validate(cell.settings)
    if s.memory_cap_gib is not None and cell.parallel is not None:
        return "memory_cap_gib caps one process; it is not applied to the ranks of a parallel engine"
    package = requires(s.optimizer)
    if package is not None and not host.has(package):
        return f"optimizer {s.optimizer} needs {package}, which is not installed (pip install {package})"
    return None
