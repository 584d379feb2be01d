"""Metrics of serving cells (:mod:`harness.scenarios.serving`, :mod:`harness.measure.servemetrics`,
:mod:`harness.analytic.decode`) and their summary tables. Latencies follow vLLM's definitions.

A cell runs its workload ``repeats`` times timed (after ``warmup`` untimed passes) on one engine
start: throughputs and durations carry one sample per timed pass and report their median;
latencies pool every request of every timed pass; counts carry one sample per pass and report the
worst pass; engine counters and the decode bound cover all timed passes together."""

from __future__ import annotations

from harness.metrics.spec import Benchmark, MetricSpec, SummaryTable, m

LATENCIES = {"e2el": "end-to-end latency per request (submission to last token)",
             "ttft": "time to first token per request", "tpot": "time per output token after the first, per request",
             "itl": "inter-token latency, every gap pooled over requests"}


def _latencies() -> list[MetricSpec]:
    out = []
    for base, text in LATENCIES.items():
        out.append(m(f"{base}_ms", "ms", "lower", "speed", f"{text}; median over the requests of every timed pass, "
                                                          "samples kept", stat="median"))
        for stat in ("p90", "p99", "mean"):
            out.append(m(f"{base}_{stat}_ms", "ms", "lower", "speed", f"{text}; {stat} over the requests of every "
                                                                      "timed pass", stat=stat))
    return out


METRICS = [
    m("output_tok_s", "tok/s", "higher", "speed", "generated tokens / duration, per timed pass; median of passes",
      stat="median"),
    m("total_tok_s", "tok/s", "higher", "speed", "(prompt + generated tokens) / duration, per timed pass; median of "
                                                 "passes", stat="median"),
    m("request_throughput_req_s", "req/s", "higher", "speed", "completed requests / duration, per timed pass; median "
                                                              "of passes", stat="median"),
    m("goodput_req_s", "req/s", "higher", "speed", "requests meeting every SLO / duration, per timed pass; median of "
                                                   "passes", stat="median"),
    m("duration_s", "s", "lower", "speed", "first submission to last completion, per timed pass; median of passes",
      stat="median"),
    # pytest-benchmark's samples (BENCHMARK below); the gate judges output_tok_s, of which it is the inverse
    m("output_s_per_tok", "s", "lower", "speed", "wall seconds per generated token: a timed pass's duration / the "
                                                 "tokens it generated, per pass; median of passes",
      stat="median", gate=False),
    m("output_tokens", "count", "neither", "count", "tokens generated in a timed pass; the fewest of any pass",
      stat="min"),
    m("completed_requests", "count", "neither", "count", "requests completed in a timed pass; the fewest of any pass",
      stat="min"),
    m("failed_requests", "count", "lower", "accuracy", "requests that failed in a timed pass; the most of any pass",
      stat="max"),
    m("peak_concurrency_requests", "count", "neither", "count", "most requests in flight at once in any timed pass",
      stat="max"),
    *_latencies(),
    m("startup_s", "s", "lower", "speed", "model load or engine start"),
    m("kv_cache_capacity_tokens", "count", "neither", "memory", "engine-reported: KV blocks x block size"),
    m("kv_cache_bytes_per_token_analytic", "bytes", "neither", "analytic",
      "2 x layers x kv_heads x head_dim x bytes per element", source="analytic"),
    m("kv_cache_capacity_bytes", "bytes", "neither", "memory", "engine-reported tokens x the bytes per token"),
    m("prefix_cached_tokens", "count", "neither", "count", "prompt tokens served from the prefix cache, summed over "
                                                           "the timed passes (samples per pass)", stat="sum"),
    m("prefix_cache_hit_ratio", "ratio", "higher", "speed", "prompt tokens found in the prefix cache / looked up, over "
                                                            "the timed passes"),
    m("spec_draft_tokens", "count", "neither", "count", "tokens proposed by speculative decoding, summed over the timed "
                                                        "passes", stat="sum"),
    m("spec_acceptance_ratio", "ratio", "higher", "speed", "accepted / proposed speculative tokens, over the timed passes"),
    m("decode_tok_s", "tok/s", "higher", "speed", "output tokens after each request's first / duration, over the timed "
                                                  "passes together"),
    m("mean_decode_batch_requests", "count", "neither", "count", "requests decoding at once, time-averaged over the "
                                                                 "timed passes", stat="mean"),
    m("memory_bandwidth_bytes_s", "bytes/s", "higher", "host", "measured read bandwidth of the device", gate=False),
    m("decode_step_read_bytes_analytic", "bytes", "neither", "analytic",
      "weights + mean batch x mean context x KV bytes per token", source="analytic"),
    m("decode_bound_tok_s_analytic", "tok/s", "neither", "analytic", "mean batch x bandwidth / bytes read per step",
      source="analytic"),
    m("decode_efficiency_ratio", "ratio", "higher", "speed", "decode tok/s over the memory-bandwidth bound"),
    m("compute_flops_s", "FLOP/s", "higher", "host", "measured matmul throughput", gate=False),
    m("optimal_batch_requests_analytic", "count", "neither", "analytic",
      "batch where a step's FLOPs take as long as reading its weights", source="analytic"),
]

TABLES = [
    SummaryTable(scenario="serve", title="Serving: throughput and latency", columns=(
        "output_tok_s", "request_throughput_req_s", "goodput_req_s", "ttft_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_ms",
        "tpot_p99_ms", "itl_p99_ms", "e2el_ms", "e2el_p99_ms", "failed_requests", "peak_concurrency_requests"),
        compact=(("output_tok_s", "out tok/s"), ("request_throughput_req_s", "req/s"), ("ttft_ms", "TTFT p50"),
                 ("ttft_p99_ms", "TTFT p99"), ("tpot_ms", "TPOT p50"), ("e2el_p99_ms", "E2EL p99"),
                 ("failed_requests", "failed"))),
    SummaryTable(scenario="serve", title="Serving: engine, KV cache and decode bound", columns=(
        "startup_s", "peak_rss_bytes", "kv_cache_capacity_tokens", "kv_cache_capacity_tokens_analytic",
        "prefix_cache_hit_ratio", "spec_acceptance_ratio", "mean_decode_batch_requests", "decode_tok_s",
        "decode_bound_tok_s_analytic", "decode_efficiency_ratio", "optimal_batch_requests_analytic"),
        compact=(("startup_s", "startup"), ("peak_rss_bytes", "peak RSS"), ("kv_cache_capacity_tokens", "KV tokens"),
                 ("mean_decode_batch_requests", "decode batch"), ("decode_tok_s", "decode tok/s"),
                 ("decode_efficiency_ratio", "efficiency"))),
]
BENCHMARK = Benchmark(scenario="serve", metric="output_s_per_tok",
                      what="one generated token, as wall time of a timed pass over the workload (one sample per pass)")
