"""Serving cells: one engine runs one workload in one precision; the same requests for every engine.

The engine serves the workload ``warmup`` times untimed, then ``repeats`` times timed (the cell's
settings, from the suite's ``serving:`` block), on one start, its prefix cache emptied before every
pass where the engine has it on (:func:`harness.engines.serve`). Each timed pass is a timed region
whose contention is recorded (:func:`harness.measure.contention.timed_region`).

Metrics (see :mod:`harness.measure.servemetrics`, also for how passes combine): ``output_tok_s``,
``request_throughput_req_s``, ``e2el_ms``/``ttft_ms``/``tpot_ms``/``itl_ms`` distributions, failed and
peak-concurrent requests, ``goodput_req_s`` under the suite's SLOs, ``startup_s`` (model load or
engine start, shared within a group of cells) and ``peak_rss_bytes`` of the whole process tree
(vLLM runs its engine in child processes). Where the engine reports its KV cache (vLLM, HF
continuous), ``kv_cache_capacity_tokens`` (blocks x block size) sits beside the formula 2 x layers x
kv_heads x head_dim x bytes per token (``kv_cache_bytes_per_token_analytic``,
:mod:`harness.analytic.kv`) and, where the KV space is configured, the tokens it holds by that
formula (``kv_cache_capacity_tokens_analytic``). vLLM's
counters over the timed passes give ``prefix_cache_hit_ratio`` and ``spec_acceptance_ratio``;
:mod:`harness.analytic.decode` gives the decode efficiency against the measured bandwidth bound, over
the timed passes together (their traces pooled, their durations summed). ``info`` keeps each pass's
duration and whether the prefix cache was on and emptied before each pass.

An engine over several nodes (vLLM's ``nnodes``) is measured on node 0; on every other node the cell
lends that node's ranks to node 0's start (:func:`lend`) and its record is not stored.

With a ``serving.eval`` block, each engine start is scored on lm-eval tasks after the timed passes of
its first cell (:func:`harness.measure.lmeval.evaluate_target`: HF engines through ``HFLM`` on the
loaded model, vLLM's offline engine through lm-eval's ``vllm`` model on the running engine, the server
through ``local-completions`` at its own endpoint with its key): ``lmeval_<task>_<metric>`` as in
inference cells, the same on every cell of the start, outside the timed passes and the memory peak. A
scoring that fails leaves the measured passes in a failure record that says why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.measure.servemetrics import SLO
from harness.metrics import metric
from harness.results.records import CellFailure, CellResult, Metric

if TYPE_CHECKING:
    from harness.base.resolved import ResolvedModel
    from harness.base.wire import RequestTrace
    from harness.spec.cell import Cell


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Build the workload's requests, let the engine serve them ``warmup`` + ``repeats`` times, and
    summarize the timed passes."""
    from transformers import AutoConfig, AutoTokenizer

    from harness.engines import scored_start, serve
    from harness.measure import lmeval
    from harness.measure.contention import timed_region
    from harness.measure.servemetrics import summarize_passes
    from harness.measure.trackers import PeakRSS
    from harness.spec.serving import ServingSettings

    assert cell.engine is not None and cell.workload is not None, "serving cells carry an engine and a workload"
    defaults = ServingSettings.model_fields
    repeats = int(cell.settings.get("repeats", defaults["repeats"].default))
    warmup = int(cell.settings.get("warmup", defaults["warmup"].default))
    tok = AutoTokenizer.from_pretrained(model.path)
    requests = cell.workload.requests(tok)
    prepared = cell.precision.prepare(model, cell)  # GPTQ/AWQ: the quantized checkpoint the engine loads
    model = prepared.on(model)
    if cell.engine.follows(cell):
        return lend(cell, model)
    rss = PeakRSS(lifetime_peak=not scored_start(cell))  # an earlier scoring in this process raised the lifetime peak
    evaluating = cell.settings.get("eval")

    def score(target: Any) -> Any:
        rss.stop()  # the cell's memory is that of its passes; the scoring comes after them
        try:
            return lmeval.evaluate_target(target, lmeval.EvalSettings.model_validate(evaluating))
        except Exception as exc:  # noqa: BLE001 - the passes are measured: recorded, then the cell fails with why
            return _Unscored(f"{type(exc).__name__}: {exc}")

    with rss:
        served = serve(cell, model, requests, repeats=repeats, warmup=warmup, timed=lambda: timed_region("serve"),
                       score=score if evaluating else None)
    runs = served.runs
    slo = cell.settings.get("slo")
    metrics = summarize_passes([(r.traces, r.duration_s) for r in runs], SLO.model_validate(slo) if slo else None)
    config = AutoConfig.from_pretrained(model.path)
    engine = pass_info([r.info for r in runs])
    metrics |= kv_cache_metrics(config, engine, cell.precision.dtype)
    cached = engine.get("prefix_cached_tokens")
    if cached and None not in cached:
        metrics["prefix_cached_tokens"] = metric("prefix_cached_tokens", sum(cached), samples=cached)
    metrics |= counter_metrics(engine.get("engine_counters") or {})
    pooled = [t for r in runs for t in r.traces]
    decode, decode_info = decode_efficiency(cell, config, pooled, sum(r.duration_s for r in runs),
                                            engine.get("kv_cache_dtype"))
    metrics |= decode
    start = served.engine_start
    shared = f" (one start shared by a group of cells, made by {start['started_by']})" if start.get("shared") else ""
    metrics["startup_s"] = metric("startup_s", served.startup_s, description="model load or engine start" + shared)
    metrics["peak_rss_bytes"] = metric("peak_rss_bytes", rss.peak_bytes, description="process tree, engine workers included")
    metrics |= pass_energy(runs)
    short = sorted({i for r in runs for i, (q, t) in enumerate(zip(requests, r.traces))
                    if t.output_tokens != q.output_tokens})  # short in any timed pass
    engine |= {"engine_start": served.engine_start, "prefix_cache": served.prefix_cache}
    info = {"engine": engine, "requests": len(requests), **decode_info,
            **({"nodes": engine.pop("nodes")} if "nodes" in engine else {}),  # an engine over several nodes
            "passes": {"warmup": warmup, "repeats": repeats, "warmup_s": served.warmup_s,
                       "timed_s": [r.duration_s for r in runs]},
            "output_lengths": [r.output_tokens for r in requests], "length_mismatches": short}
    if evaluating:
        if isinstance(served.scored, _Unscored):
            info["lmeval"] = {"error": served.scored.reason, "scored_by": served.scored_by}
            raise CellFailure(f"lm-eval could not score the engine: {served.scored.reason}",
                              partial=CellResult(metrics=metrics, info=info))
        eval_metrics, info["lmeval"] = lmeval.metrics(served.scored, None, "")
        info["lmeval"]["engine_start_scored_by"] = served.scored_by  # one scoring per engine start
        metrics |= eval_metrics
    return CellResult(metrics=metrics, info=info)


def lend(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """A node > 0 of a multi-node engine: its ranks serve node 0's start (:func:`harness.engines.follow`),
    timed as one region so this node's contention while it lent them is on its record. Node 0's record
    holds the measurements; this one (``info.nodes.node_rank`` > 0) is shown, not stored."""
    from harness.engines import follow
    from harness.measure.contention import timed_region

    with timed_region("lent"):
        lent = follow(cell, model)
    return CellResult(info={"nodes": {"nnodes": lent["nnodes"], "node_rank": lent["node_rank"]}, "lent": lent})


class _Unscored:
    """Why scoring the engine failed (kept on the start, so every cell of the group says so)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def pass_energy(runs: list[Any]) -> dict[str, Metric]:
    """``energy_j_per_output_token``: the GPU's energy over the timed passes (NVML's counter, read
    around each ``serve`` region once CUDA is in use) over the output tokens they generated; nothing
    where the counter was not read. The serve regions are the timed passes: warm-up passes run outside
    them."""
    from harness.measure.gpu import region_energy_j

    joules, regions = region_energy_j("serve")
    tokens = sum(t.output_tokens for r in runs for t in r.traces)
    if joules is None or not tokens or regions != len(runs):
        return {}
    return {"energy_j_per_output_token": metric("energy_j_per_output_token", joules / tokens,
                                                description=f"{joules:.1f} J over {tokens} output tokens in {regions} timed passes")}


def pass_info(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The engine's info over the timed passes: the last pass's (the facts of the start: KV cache,
    options), with its counters summed over every pass and ``prefix_cached_tokens`` as a list per pass."""
    out = dict(infos[-1])
    counters: dict[str, float] = {}
    for info in infos:
        for k, v in (info.get("engine_counters") or {}).items():
            counters[k] = counters.get(k, 0.0) + v
    if any("engine_counters" in i for i in infos):
        out["engine_counters"] = counters
    if "prefix_cached_tokens" in out:
        out["prefix_cached_tokens"] = [i.get("prefix_cached_tokens") for i in infos]
    return out


def counter_metrics(counters: dict[str, float]) -> dict[str, Metric]:
    """Prefix-cache hit ratio and speculative acceptance from the engine's counters (over the timed passes)."""
    out = {}
    if counters.get("prefix_cache_queries"):
        out["prefix_cache_hit_ratio"] = metric("prefix_cache_hit_ratio",
                                               counters.get("prefix_cache_hits", 0.0) / counters["prefix_cache_queries"])
    if counters.get("spec_draft_tokens"):
        out["spec_draft_tokens"] = metric("spec_draft_tokens", counters["spec_draft_tokens"])
        out["spec_acceptance_ratio"] = metric("spec_acceptance_ratio",
                                              counters.get("spec_accepted_tokens", 0.0) / counters["spec_draft_tokens"])
    return out


def decode_efficiency(cell: "Cell", config: Any, traces: list["RequestTrace"], duration_s: float,
                      kv_cache_dtype: str | None) -> tuple[dict[str, Metric], dict]:
    """Decode tok/s of ``traces`` over ``duration_s`` against the bandwidth bound of this device (see
    :mod:`harness.analytic.decode`)."""
    from harness.analytic.decode import decode_metrics, weight_read_bytes
    from harness.analytic.kv import kv_per_token
    from harness.measure.rates import host_rates

    weights, params = weight_read_bytes(config, cell.precision)
    per_token, _ = kv_per_token(config, kv_cache_dtype, cell.precision.dtype)
    bandwidth, flops = host_rates(cell.device, cell.precision.dtype)
    return decode_metrics(traces, duration_s, weights, params, per_token, bandwidth, flops)


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
