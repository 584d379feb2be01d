"""Serving cells: one engine runs one workload in one precision; the same requests for every engine.

Metrics (see :mod:`harness.servemetrics`): ``output_tok_s``, ``request_throughput_req_s``,
``e2el_ms``/``ttft_ms``/``tpot_ms``/``itl_ms`` distributions, ``startup_s`` (model load or engine start)
and ``peak_rss_bytes`` of the whole process tree (vLLM runs its engine in child processes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from harness.axes import EngineConfig
from harness.records import CellResult, Metric
from harness.specbase import StrictModel

if TYPE_CHECKING:
    from harness.cell import Cell
    from harness.models import ResolvedModel


class ServingSettings(StrictModel):
    """The suite's ``serving:`` block: engines crossed with precisions and workloads."""

    engines: list[EngineConfig] = Field(min_length=1, description="Engines (kind: hf-static, vllm-continuous, ...).")
    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to serve (default: all).")
    workloads: list[str] | None = Field(default=None, description="Names of suite workloads to run (default: all).")


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Build the workload's requests, let the engine serve them, and summarize the traces."""
    from transformers import AutoTokenizer

    from harness.measure import PeakRSS
    from harness.servemetrics import summarize

    assert cell.engine is not None and cell.workload is not None, "serving cells carry an engine and a workload"
    tok = AutoTokenizer.from_pretrained(model.path)
    requests = cell.workload.requests(tok)
    prepared = cell.precision.prepare(model, cell)  # GPTQ/AWQ: the quantized checkpoint the engine loads
    model = prepared.on(model)
    with PeakRSS() as rss:
        result = cell.engine.serve(cell, model, requests)
    metrics = summarize(result.traces, result.duration_s)
    metrics["startup_s"] = Metric(value=result.startup_s, unit="s", description="model load or engine start")
    metrics["peak_rss_bytes"] = Metric(value=rss.peak_bytes, unit="bytes", stat="max",
                                       description="process tree, engine workers included")
    short = [i for i, (r, t) in enumerate(zip(requests, result.traces)) if t.output_tokens != r.output_tokens]
    info = {"engine": result.info, "requests": len(requests),
            "output_lengths": [r.output_tokens for r in requests], "length_mismatches": short}
    return CellResult(metrics=metrics, info=info)
