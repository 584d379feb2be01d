"""A cell: one fully resolved point of a suite's cross-product, runnable on its own."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field

from harness.base.specbase import StrictModel
from harness.measure.validity import ValidityRules
from harness.spec.axes import (
    EngineConfig,
    ModelRef,
    ParallelConfig,
    PrecisionConfig,
    TrainingModeConfig,
)
from harness.spec.workloads import Workload

Scenario = Literal["infer", "train", "serve"]


class Cell(StrictModel):
    """Everything needed to run one measurement; serialized to JSON for the cell's subprocess."""

    suite: str
    id: str = Field(description="readable unique id, e.g. smoke-serve-vllm-continuous-bf16")
    scenario: Scenario
    model: ModelRef
    precision: PrecisionConfig
    reference: PrecisionConfig | None = Field(default=None, description="inference: the precision compared against")
    mode: TrainingModeConfig | None = None
    parallel: ParallelConfig | None = Field(default=None, description="training: the data-parallel engine, if any")
    engine: EngineConfig | None = None
    workload: Workload | None = None
    settings: dict[str, Any] = Field(default_factory=dict, description="the scenario block's settings")
    device: Literal["cpu", "cuda"]
    seed: int
    timeout_s: float
    group: str | None = Field(default=None, description="cells with the same group run in one worker and share "
                                                        "one engine start (serving)")
    validity: ValidityRules = Field(default_factory=ValidityRules, description="the suite's validity rules")

    @property
    def impl(self) -> str | None:
        """Label of the training mode or engine, if any."""
        obj = self.mode or self.engine
        return obj.label if obj is not None else None

    @property
    def nnodes(self) -> int:
        """Nodes the cell's ranks span (a training parallel engine's or a vLLM engine's ``nnodes``): more than
        one means every node runs the cell at once."""
        return max(int(getattr(self.parallel, "nnodes", 1)), int(getattr(self.engine, "nnodes", 1)))

    def coords(self) -> dict[str, str]:
        """The cell's position on each axis, by label (what exclusions match against)."""
        out = {"scenario": self.scenario, "precision": self.precision.label}
        if self.mode is not None:
            out["mode"] = self.mode.label
        if self.parallel is not None:
            out["parallel"] = self.parallel.label
        if self.engine is not None:
            out["engine"] = self.engine.label
        if self.workload is not None:
            out["workload"] = self.workload.name
        return out

    def key(self) -> str:
        """Hash of the resolved configuration (the id, timeout, group and validity rules excluded: they do
        not change results), with the model pinned first where its source can pin it (a Hub model: the
        commit its revision names now, so the key changes when the upstream weights do; see
        :mod:`harness.models.hub`, which may ask the Hub once per process)."""
        data = self.model_dump(mode="json", exclude={"id", "timeout_s", "group", "validity"})
        pin = getattr(self.model, "pinned", None)  # a source whose identity can move (the Hub)
        if pin is not None:
            data["model"] = pin().model_dump(mode="json")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
