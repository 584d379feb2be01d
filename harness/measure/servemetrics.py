"""Serving metrics from request traces, named and defined as vLLM's benchmark defines them.

Per completed request: TTFT = first token - submission; E2EL = completion - submission;
TPOT = (E2EL - TTFT) / (n - 1) for n > 1 output tokens; ITL = every gap between consecutive tokens,
pooled over requests. Aggregates over completed requests: output tok/s = sum(n) / duration, total
tok/s adds the prompts, request throughput = completed / duration; ``failed_requests`` counts the
rest. Goodput = requests meeting every given SLO (TTFT, TPOT, E2EL, each "at most", in ms) /
duration. ``peak_concurrency_requests`` is the most requests in flight at once (submitted, not yet
finished). Distributions report the median (value), mean, p90 and p99; percentiles use numpy's
linear interpolation between order statistics (vLLM's choice). Pure: needs numpy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from harness.base.specbase import StrictModel
from harness.metrics import metric

if TYPE_CHECKING:
    from harness.base.wire import RequestTrace
    from harness.results.records import Metric

PERCENTILE_METHOD = "linear"


def _dist(name: str, values: list[float]) -> dict[str, Metric]:
    """``name`` (the median, samples kept) and its ``_p90_``, ``_p99_`` and ``_mean_`` companions."""
    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    out = {name: metric(name, float(np.median(arr)), samples=arr)}
    base, _, suffix = name.rpartition("_")
    for q in (90, 99):
        out[f"{base}_p{q}_{suffix}"] = metric(f"{base}_p{q}_{suffix}", float(np.percentile(arr, q, method=PERCENTILE_METHOD)))
    out[f"{base}_mean_{suffix}"] = metric(f"{base}_mean_{suffix}", float(arr.mean()))
    return out


class SLO(StrictModel):
    """Service-level objectives for goodput: a request is good when it meets every one given."""

    ttft_ms: float | None = Field(default=None, gt=0, description="Time to first token, at most (ms).")
    tpot_ms: float | None = Field(default=None, gt=0, description="Time per output token, at most (ms).")
    e2el_ms: float | None = Field(default=None, gt=0, description="End-to-end latency, at most (ms).")

    def met(self, ttft_ms: float | None, tpot_ms: float | None, e2el_ms: float) -> bool:
        """Whether a request with these latencies meets every given objective (a missing TTFT/TPOT
        fails an objective on it; a single-token request has no TPOT and meets a TPOT objective)."""
        if self.ttft_ms is not None and (ttft_ms is None or ttft_ms > self.ttft_ms):
            return False
        if self.tpot_ms is not None and tpot_ms is not None and tpot_ms > self.tpot_ms:
            return False
        return self.e2el_ms is None or e2el_ms <= self.e2el_ms


def peak_concurrency(traces: list["RequestTrace"]) -> int:
    """The most requests in flight at once: submitted and not yet finished (a finish at the same
    instant as a submission frees its slot first)."""
    events = sorted([(t.submitted_s, 1) for t in traces] + [(t.finished_s, -1) for t in traces],
                    key=lambda e: (e[0], e[1]))
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


def summarize(traces: list["RequestTrace"], duration_s: float, slo: SLO | None = None) -> dict[str, Metric]:
    """Metrics of one serving run: throughputs, TTFT/TPOT/ITL/E2EL distributions in ms, failures,
    peak concurrency and (with ``slo``) goodput. Raises ValueError for a non-positive duration."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    failed = [t for t in traces if t.error is not None]
    traces = [t for t in traces if t.error is None]
    out_tokens = sum(t.output_tokens for t in traces)
    in_tokens = sum(t.prompt_tokens for t in traces)
    e2el = [(t.finished_s - t.submitted_s) * 1000 for t in traces]
    ttft = [(t.first_token_s - t.submitted_s) * 1000 for t in traces if t.first_token_s is not None]
    tpot = [((t.finished_s - t.first_token_s) * 1000) / (t.output_tokens - 1)
            for t in traces if t.first_token_s is not None and t.output_tokens > 1]
    itl = [float(g) * 1000 for t in traces if len(t.token_times_s) > 1 for g in np.diff(t.token_times_s)]
    metrics = {
        "output_tok_s": metric("output_tok_s", out_tokens / duration_s),
        "total_tok_s": metric("total_tok_s", (in_tokens + out_tokens) / duration_s),
        "request_throughput_req_s": metric("request_throughput_req_s", len(traces) / duration_s),
        "duration_s": metric("duration_s", duration_s),
        "output_tokens": metric("output_tokens", out_tokens),
        "completed_requests": metric("completed_requests", len(traces)),
        "failed_requests": metric("failed_requests", len(failed)),
        "peak_concurrency_requests": metric("peak_concurrency_requests", peak_concurrency(traces + failed)),
    }
    if slo is not None:
        good = 0
        for t in traces:
            e2e = (t.finished_s - t.submitted_s) * 1000
            first = None if t.first_token_s is None else (t.first_token_s - t.submitted_s) * 1000
            per_token = ((t.finished_s - t.first_token_s) * 1000 / (t.output_tokens - 1)
                         if t.first_token_s is not None and t.output_tokens > 1 else None)
            good += slo.met(first, per_token, e2e)
        metrics["goodput_req_s"] = metric("goodput_req_s", good / duration_s, description=(
            f"requests meeting every SLO ({slo.model_dump(exclude_none=True)}) / duration"))
    metrics |= _dist("e2el_ms", e2el)
    metrics |= _dist("ttft_ms", ttft)
    metrics |= _dist("tpot_ms", tpot)
    metrics |= _dist("itl_ms", itl)
    return metrics
