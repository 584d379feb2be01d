"""The suite's ``serving:`` block: engines crossed with precisions and workloads, under optional SLOs,
each cell's workload served ``warmup`` times untimed and then ``repeats`` times timed on one engine start,
and each engine start optionally scored on lm-eval tasks (``eval``) after its timed passes."""

from __future__ import annotations

from pydantic import Field

from harness.base.specbase import StrictModel
from harness.measure.lmeval import EvalSettings
from harness.measure.servemetrics import SLO
from harness.spec.axes import EngineConfig


class ServingSettings(StrictModel):
    """The suite's ``serving:`` block: engines crossed with precisions and workloads."""

    engines: list[EngineConfig] = Field(min_length=1, description="Engines (kind: hf-static, vllm-continuous, ...).")
    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to serve (default: all).")
    workloads: list[str] | None = Field(default=None, description="Names of suite workloads to run (default: all).")
    slo: SLO | None = Field(default=None, description="Objectives for goodput (ttft_ms, tpot_ms, e2el_ms: each at most).")
    repeats: int = Field(default=3, ge=1, description="Timed passes of each cell's workload on one engine start "
                                                       "(throughputs get one sample per pass).")
    warmup: int = Field(default=1, ge=0, description="Untimed passes of the workload before the timed ones.")
    eval: EvalSettings | None = Field(default=None, description="lm-evaluation-harness tasks scored on each engine "
                                                                "start, after its timed passes (needs the `eval` extra).")
