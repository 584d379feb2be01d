"""Serving metrics from request traces, named and defined as vLLM's benchmark defines them.

Per request: TTFT = first token - submission; E2EL = completion - submission;
TPOT = (E2EL - TTFT) / (n - 1) for n > 1 output tokens; ITL = every gap between consecutive tokens,
pooled over requests. Aggregates: output tok/s = sum(n) / duration, request throughput =
completed / duration. Percentiles use numpy's linear interpolation. Pure: needs numpy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from harness.records import Metric

if TYPE_CHECKING:
    from harness.engines import RequestTrace

PERCENTILE_METHOD = "linear"


def _dist(name: str, values: list[float], unit: str, description: str) -> dict[str, Metric]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    out = {name: Metric(value=float(np.median(arr)), unit=unit, samples=[float(v) for v in arr], stat="median",
                        description=description)}
    base, _, suffix = name.rpartition("_")
    for q in (90, 99):
        out[f"{base}_p{q}_{suffix}"] = Metric(value=float(np.percentile(arr, q, method=PERCENTILE_METHOD)),
                                              unit=unit, stat=f"p{q}")  # type: ignore[arg-type]
    out[f"{base}_mean_{suffix}"] = Metric(value=float(arr.mean()), unit=unit, stat="mean")
    return out


def summarize(traces: list["RequestTrace"], duration_s: float) -> dict[str, Metric]:
    """Metrics of one serving run: throughputs, and TTFT/TPOT/ITL/E2EL distributions in ms."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    out_tokens = sum(t.output_tokens for t in traces)
    in_tokens = sum(t.prompt_tokens for t in traces)
    e2el = [(t.finished_s - t.submitted_s) * 1000 for t in traces]
    ttft = [(t.first_token_s - t.submitted_s) * 1000 for t in traces if t.first_token_s is not None]
    tpot = [((t.finished_s - t.first_token_s) * 1000) / (t.output_tokens - 1)
            for t in traces if t.first_token_s is not None and t.output_tokens > 1]
    itl = [float(g) * 1000 for t in traces if len(t.token_times_s) > 1 for g in np.diff(t.token_times_s)]
    metrics = {
        "output_tok_s": Metric(value=out_tokens / duration_s, unit="tok/s", description="generated tokens / duration"),
        "total_tok_s": Metric(value=(in_tokens + out_tokens) / duration_s, unit="tok/s",
                              description="(prompt + generated tokens) / duration"),
        "request_throughput_req_s": Metric(value=len(traces) / duration_s, unit="req/s"),
        "duration_s": Metric(value=duration_s, unit="s"),
        "output_tokens": Metric(value=out_tokens, unit="count", stat="sum"),
    }
    metrics |= _dist("e2el_ms", e2el, "ms", "end-to-end latency per request (submission to last token)")
    metrics |= _dist("ttft_ms", ttft, "ms", "time to first token per request")
    metrics |= _dist("tpot_ms", tpot, "ms", "time per output token after the first, per request")
    metrics |= _dist("itl_ms", itl, "ms", "inter-token latency, every gap pooled over requests")
    return metrics
