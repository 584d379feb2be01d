"""Serving cells: one engine runs one workload in one precision; the same requests for every engine.

Metrics (see :mod:`harness.servemetrics`): ``output_tok_s``, ``request_throughput_req_s``,
``e2el_ms``/``ttft_ms``/``tpot_ms``/``itl_ms`` distributions, failed and peak-concurrent requests,
``goodput_req_s`` under the suite's SLOs, ``startup_s`` (model load or engine start, shared within
a group of cells) and ``peak_rss_bytes`` of the whole process tree (vLLM runs its engine in child
processes). Where the engine reports its KV cache (vLLM, HF continuous), ``kv_cache_capacity_tokens``
(blocks x block size) sits beside the formula 2 x layers x kv_heads x head_dim x bytes per token
(``kv_cache_bytes_per_token_analytic``) and, where the KV space is configured, the tokens it holds by
that formula (``kv_cache_capacity_tokens_analytic``). vLLM's counters over the run give
``prefix_cache_hit_ratio`` and ``spec_acceptance_ratio``; :mod:`harness.decodebound` gives the decode
efficiency against the measured bandwidth bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.axes import EngineConfig
from harness.records import CellResult, Metric
from harness.servemetrics import SLO
from harness.specbase import StrictModel

if TYPE_CHECKING:
    from harness.cell import Cell
    from harness.engines import ServeRun
    from harness.models import ResolvedModel


class ServingSettings(StrictModel):
    """The suite's ``serving:`` block: engines crossed with precisions and workloads."""

    engines: list[EngineConfig] = Field(min_length=1, description="Engines (kind: hf-static, vllm-continuous, ...).")
    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to serve (default: all).")
    workloads: list[str] | None = Field(default=None, description="Names of suite workloads to run (default: all).")
    slo: SLO | None = Field(default=None, description="Objectives for goodput (ttft_ms, tpot_ms, e2el_ms: each at most).")


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Build the workload's requests, let the engine serve them, and summarize the traces."""
    from transformers import AutoConfig, AutoTokenizer

    from harness.engines import serve
    from harness.measure import PeakRSS
    from harness.servemetrics import summarize

    assert cell.engine is not None and cell.workload is not None, "serving cells carry an engine and a workload"
    tok = AutoTokenizer.from_pretrained(model.path)
    requests = cell.workload.requests(tok)
    prepared = cell.precision.prepare(model, cell)  # GPTQ/AWQ: the quantized checkpoint the engine loads
    model = prepared.on(model)
    with PeakRSS() as rss:
        result = serve(cell, model, requests)
    slo = cell.settings.get("slo")
    metrics = summarize(result.traces, result.duration_s, SLO.model_validate(slo) if slo else None)
    config = AutoConfig.from_pretrained(model.path)
    metrics |= kv_cache_metrics(config, result.info, cell.precision.dtype)
    if result.info.get("prefix_cached_tokens") is not None:
        metrics["prefix_cached_tokens"] = Metric(value=result.info["prefix_cached_tokens"], unit="count", stat="sum",
                                                 description="prompt tokens served from the prefix cache")
    metrics |= counter_metrics(result.info.get("engine_counters") or {})
    decode, decode_info = decode_efficiency(cell, config, result)
    metrics |= decode
    start = result.info.get("engine_start", {})
    metrics["startup_s"] = Metric(value=result.startup_s, unit="s", description=(
        "model load or engine start" + (f" (one start shared by a group of cells, made by {start['started_by']})"
                                        if start.get("shared") else "")))
    metrics["peak_rss_bytes"] = Metric(value=rss.peak_bytes, unit="bytes", stat="max",
                                       description="process tree, engine workers included")
    short = [i for i, (r, t) in enumerate(zip(requests, result.traces)) if t.output_tokens != r.output_tokens]
    info = {"engine": result.info, "requests": len(requests), **decode_info,
            "output_lengths": [r.output_tokens for r in requests], "length_mismatches": short}
    return CellResult(metrics=metrics, info=info)


def counter_metrics(counters: dict[str, float]) -> dict[str, Metric]:
    """Prefix-cache hit ratio and speculative acceptance from the engine's counters over the run."""
    out = {}
    if counters.get("prefix_cache_queries"):
        out["prefix_cache_hit_ratio"] = Metric(value=counters.get("prefix_cache_hits", 0.0) / counters["prefix_cache_queries"],
                                               unit="ratio", description="prompt tokens found in the prefix cache / looked up")
    if counters.get("spec_draft_tokens"):
        out["spec_draft_tokens"] = Metric(value=counters["spec_draft_tokens"], unit="count", stat="sum",
                                          description="tokens proposed by speculative decoding")
        out["spec_acceptance_ratio"] = Metric(value=counters.get("spec_accepted_tokens", 0.0) / counters["spec_draft_tokens"],
                                              unit="ratio", description="accepted / proposed speculative tokens")
    return out


def decode_efficiency(cell: "Cell", config: Any, result: "ServeRun") -> tuple[dict[str, Metric], dict]:
    """Decode tok/s against the bandwidth bound of this device (see :mod:`harness.decodebound`)."""
    from harness.decodebound import decode_metrics, host_rates, weight_read_bytes

    weights, params = weight_read_bytes(config, cell.precision)
    per_token, _ = kv_per_token(config, result.info, cell.precision.dtype)
    bandwidth, flops = host_rates(cell.device, cell.precision.dtype)
    return decode_metrics(result.traces, result.duration_s, weights, params, per_token, bandwidth, flops)


KV_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


def kv_per_token(config: Any, info: dict, dtype: str) -> tuple[int, str]:
    """KV-cache bytes per token of a model ``config`` in the engine's cache dtype (``info``), else the
    precision's ``dtype``; with the formula spelled out."""
    from harness.estimate import config_dims, kv_bytes_per_token

    dims = config_dims(config)
    cache_dtype = str(info.get("kv_cache_dtype") or "auto").removeprefix("torch.")
    element = KV_DTYPE_BYTES.get(cache_dtype, KV_DTYPE_BYTES.get(dtype, 2))
    formula = (f"2 x {dims['layers']} layers x {dims['kv_heads']} kv_heads x {dims['head_dim']} head_dim x "
               f"{element} bytes")
    return kv_bytes_per_token(dims["layers"], dims["kv_heads"], dims["head_dim"], element), formula


def kv_cache_metrics(config: Any, info: dict, dtype: str) -> dict[str, Metric]:
    """The engine's KV-cache capacity beside the formula (nothing if the engine reports none)."""
    tokens = info.get("kv_cache_tokens")
    if not tokens:
        return {}
    per_token, formula = kv_per_token(config, info, dtype)
    out = {
        "kv_cache_capacity_tokens": Metric(value=tokens, unit="count",
                                           description="engine-reported: KV blocks x block size"),
        "kv_cache_bytes_per_token_analytic": Metric(
            value=per_token, unit="bytes", source="analytic", description=formula),
        "kv_cache_capacity_bytes": Metric(value=tokens * per_token, unit="bytes",
                                          description="engine-reported tokens x the bytes per token"),
    }
    space = info.get("kv_cache_space_bytes")
    if space:
        predicted = space // per_token
        out["kv_cache_capacity_tokens_analytic"] = Metric(value=predicted, unit="count", source="analytic",
                                                          description="configured KV space / bytes per token")
        out["kv_cache_capacity_tokens_residual"] = Metric(value=tokens - predicted, unit="count",
                                                          description="measured - analytic")
    return out
