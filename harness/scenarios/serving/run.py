"""Serving cells: one engine runs one workload in one precision; the same requests for every engine.

Metrics (see :mod:`harness.measure.servemetrics`): ``output_tok_s``, ``request_throughput_req_s``,
``e2el_ms``/``ttft_ms``/``tpot_ms``/``itl_ms`` distributions, failed and peak-concurrent requests,
``goodput_req_s`` under the suite's SLOs, ``startup_s`` (model load or engine start, shared within
a group of cells) and ``peak_rss_bytes`` of the whole process tree (vLLM runs its engine in child
processes). Where the engine reports its KV cache (vLLM, HF continuous), ``kv_cache_capacity_tokens``
(blocks x block size) sits beside the formula 2 x layers x kv_heads x head_dim x bytes per token
(``kv_cache_bytes_per_token_analytic``, :mod:`harness.analytic.kv`) and, where the KV space is
configured, the tokens it holds by that formula (``kv_cache_capacity_tokens_analytic``). vLLM's
counters over the run give ``prefix_cache_hit_ratio`` and ``spec_acceptance_ratio``;
:mod:`harness.analytic.decode` gives the decode efficiency against the measured bandwidth bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.measure.servemetrics import SLO
from harness.metrics import metric
from harness.results.records import CellResult, Metric

if TYPE_CHECKING:
    from harness.base.resolved import ResolvedModel
    from harness.base.wire import ServeRun
    from harness.spec.cell import Cell


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Build the workload's requests, let the engine serve them, and summarize the traces."""
    from transformers import AutoConfig, AutoTokenizer

    from harness.engines import serve
    from harness.measure.servemetrics import summarize
    from harness.measure.trackers import PeakRSS

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
        metrics["prefix_cached_tokens"] = metric("prefix_cached_tokens", result.info["prefix_cached_tokens"])
    metrics |= counter_metrics(result.info.get("engine_counters") or {})
    decode, decode_info = decode_efficiency(cell, config, result)
    metrics |= decode
    start = result.info.get("engine_start", {})
    shared = f" (one start shared by a group of cells, made by {start['started_by']})" if start.get("shared") else ""
    metrics["startup_s"] = metric("startup_s", result.startup_s, description="model load or engine start" + shared)
    metrics["peak_rss_bytes"] = metric("peak_rss_bytes", rss.peak_bytes, description="process tree, engine workers included")
    short = [i for i, (r, t) in enumerate(zip(requests, result.traces)) if t.output_tokens != r.output_tokens]
    info = {"engine": result.info, "requests": len(requests), **decode_info,
            "output_lengths": [r.output_tokens for r in requests], "length_mismatches": short}
    return CellResult(metrics=metrics, info=info)


def counter_metrics(counters: dict[str, float]) -> dict[str, Metric]:
    """Prefix-cache hit ratio and speculative acceptance from the engine's counters over the run."""
    out = {}
    if counters.get("prefix_cache_queries"):
        out["prefix_cache_hit_ratio"] = metric("prefix_cache_hit_ratio",
                                               counters.get("prefix_cache_hits", 0.0) / counters["prefix_cache_queries"])
    if counters.get("spec_draft_tokens"):
        out["spec_draft_tokens"] = metric("spec_draft_tokens", counters["spec_draft_tokens"])
        out["spec_acceptance_ratio"] = metric("spec_acceptance_ratio",
                                              counters.get("spec_accepted_tokens", 0.0) / counters["spec_draft_tokens"])
    return out


def decode_efficiency(cell: "Cell", config: Any, result: "ServeRun") -> tuple[dict[str, Metric], dict]:
    """Decode tok/s against the bandwidth bound of this device (see :mod:`harness.analytic.decode`)."""
    from harness.analytic.decode import decode_metrics, weight_read_bytes
    from harness.analytic.kv import kv_per_token
    from harness.measure.rates import host_rates

    weights, params = weight_read_bytes(config, cell.precision)
    per_token, _ = kv_per_token(config, result.info.get("kv_cache_dtype"), cell.precision.dtype)
    bandwidth, flops = host_rates(cell.device, cell.precision.dtype)
    return decode_metrics(result.traces, result.duration_s, weights, params, per_token, bandwidth, flops)


def kv_cache_metrics(config: Any, info: dict, dtype: str) -> dict[str, Metric]:
    """The engine's KV-cache capacity beside the formula (nothing if the engine reports none)."""
    from harness.analytic.kv import kv_per_token

    tokens = info.get("kv_cache_tokens")
    if not tokens:
        return {}
    per_token, formula = kv_per_token(config, info.get("kv_cache_dtype"), dtype)
    out = {
        "kv_cache_capacity_tokens": metric("kv_cache_capacity_tokens", tokens),
        "kv_cache_bytes_per_token_analytic": metric("kv_cache_bytes_per_token_analytic", per_token, description=formula),
        "kv_cache_capacity_bytes": metric("kv_cache_capacity_bytes", tokens * per_token),
    }
    space = info.get("kv_cache_space_bytes")
    if space:
        predicted = space // per_token
        out["kv_cache_capacity_tokens_analytic"] = metric("kv_cache_capacity_tokens_analytic", predicted,
                                                          description="configured KV space / bytes per token")
        out["kv_cache_capacity_tokens_residual"] = metric("kv_cache_capacity_tokens_residual", tokens - predicted)
    return out
