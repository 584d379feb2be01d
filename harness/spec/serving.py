"""The suite's ``serving:`` block: engines crossed with precisions and workloads, under optional SLOs."""

from __future__ import annotations

from pydantic import Field

from harness.base.specbase import StrictModel
from harness.measure.servemetrics import SLO
from harness.spec.axes import EngineConfig


class ServingSettings(StrictModel):
    """The suite's ``serving:`` block: engines crossed with precisions and workloads."""

    engines: list[EngineConfig] = Field(min_length=1, description="Engines (kind: hf-static, vllm-continuous, ...).")
    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to serve (default: all).")
    workloads: list[str] | None = Field(default=None, description="Names of suite workloads to run (default: all).")
    slo: SLO | None = Field(default=None, description="Objectives for goodput (ttft_ms, tpot_ms, e2el_ms: each at most).")
