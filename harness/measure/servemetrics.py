"""Serving metrics from request traces, named and defined as vLLM's benchmark defines them.

Per completed request: TTFT = first token - submission; E2EL = completion - submission;
TPOT = (E2EL - TTFT) / (n - 1) for n > 1 output tokens; ITL = every gap between consecutive tokens,
pooled over requests. Per pass (one run of the workload) over its completed requests: output tok/s
= sum(n) / duration, total tok/s adds the prompts, request throughput = completed / duration;
``failed_requests`` counts the rest. Goodput = requests meeting every given SLO (TTFT, TPOT, E2EL,
each "at most", in ms) / duration. ``peak_concurrency_requests`` is the most requests in flight at
once (submitted, not yet finished). Percentiles use numpy's linear interpolation between order
statistics (vLLM's choice). Pure: needs numpy only.

Several timed passes of the same workload (:func:`summarize_passes`; :func:`summarize` is one pass):

- throughputs and ``duration_s``: one sample per pass; the value is their median;
- latency distributions: the per-request samples of every pass pooled; the value is the pooled
  median, with its ``_p90_``, ``_p99_`` and ``_mean_`` companions over the same pool;
- counts, one sample per pass: ``completed_requests`` and ``output_tokens`` the fewest of any pass,
  ``failed_requests`` and ``peak_concurrency_requests`` the most.

A latency figure and its companions are made over the whole pool, but a record keeps at most
:data:`MAX_SAMPLES` of its samples (:func:`harness.measure.intervals.thin`: evenly spaced order
statistics), its description saying how many the pool held: ``itl_ms`` has one sample per generated
token, and the gate's bootstrap of a median draws its samples 2,000 times over.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from harness.base.specbase import StrictModel
from harness.measure.intervals import thin
from harness.metrics import catalog, metric

if TYPE_CHECKING:
    from harness.base.wire import RequestTrace
    from harness.results.records import Metric

PERCENTILE_METHOD = "linear"
MAX_SAMPLES = 4096  # samples a record keeps per metric: the gate's bootstrap then needs about 130 MB at most


def _dist(name: str, values: list[float]) -> dict[str, Metric]:
    """``name`` (the median, samples kept) and its ``_p90_``, ``_p99_`` and ``_mean_`` companions."""
    if not values:
        return {}
    arr = np.asarray(values, dtype=float)
    kept = thin(arr, MAX_SAMPLES)
    description = None
    if len(kept) < len(arr):
        description = (f"{catalog().require(name).description} (median of {len(arr):,} samples; {len(kept):,} kept: "
                       "evenly spaced order statistics)")
    out = {name: metric(name, float(np.median(arr)), samples=kept, description=description)}
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


def _pass_figures(traces: list["RequestTrace"], duration_s: float, slo: SLO | None) -> dict[str, float]:
    """The aggregates of one pass (throughputs, counts, goodput)."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    done = [t for t in traces if t.error is None]
    out_tokens = sum(t.output_tokens for t in done)
    in_tokens = sum(t.prompt_tokens for t in done)
    out = {"output_tok_s": out_tokens / duration_s, "total_tok_s": (in_tokens + out_tokens) / duration_s,
           "request_throughput_req_s": len(done) / duration_s, "duration_s": duration_s,
           "output_tokens": out_tokens, "completed_requests": len(done), "failed_requests": len(traces) - len(done),
           "peak_concurrency_requests": peak_concurrency(traces)}
    if out_tokens:
        out["output_s_per_tok"] = duration_s / out_tokens
    if slo is not None:
        good = sum(slo.met(*_latency(t)) for t in done)
        out["goodput_req_s"] = good / duration_s
    return out


def _latency(t: "RequestTrace") -> tuple[float | None, float | None, float]:
    """(TTFT, TPOT, E2EL) of a completed request in ms (None where it has no first token or one token)."""
    e2el = (t.finished_s - t.submitted_s) * 1000
    if t.first_token_s is None:
        return None, None, e2el
    ttft = (t.first_token_s - t.submitted_s) * 1000
    tpot = (t.finished_s - t.first_token_s) * 1000 / (t.output_tokens - 1) if t.output_tokens > 1 else None
    return ttft, tpot, e2el


# how a figure of several passes is made from one sample per pass
_OVER_PASSES = {"output_tok_s": np.median, "total_tok_s": np.median, "request_throughput_req_s": np.median,
                "goodput_req_s": np.median, "duration_s": np.median, "output_s_per_tok": np.median, "output_tokens": min, "completed_requests": min,
                "failed_requests": max, "peak_concurrency_requests": max}


def summarize_passes(passes: list[tuple[list["RequestTrace"], float]], slo: SLO | None = None) -> dict[str, Metric]:
    """Metrics of timed passes of one workload, each given as (its traces, its duration in seconds; trace
    times from the pass's own start): see the module docstring for how passes combine. Raises
    ValueError without a pass or for a non-positive duration."""
    if not passes:
        raise ValueError("summarize_passes needs at least one pass")
    per_pass = [_pass_figures(traces, duration, slo) for traces, duration in passes]
    metrics: dict[str, Metric] = {}
    for name, combine in _OVER_PASSES.items():
        samples = [p[name] for p in per_pass if name in p]
        if not samples:
            continue
        metrics[name] = metric(name, float(combine(samples)), samples=samples)
    if slo is not None:
        metrics["goodput_req_s"].description = (f"requests meeting every SLO ({slo.model_dump(exclude_none=True)}) / "
                                                "duration, per pass; median of passes")
    done = [t for traces, _ in passes for t in traces if t.error is None]
    latencies = [_latency(t) for t in done]
    metrics |= _dist("e2el_ms", [e for _, _, e in latencies])
    metrics |= _dist("ttft_ms", [f for f, _, _ in latencies if f is not None])
    metrics |= _dist("tpot_ms", [p for _, p, _ in latencies if p is not None])
    metrics |= _dist("itl_ms", [float(g) * 1000 for t in done for g in np.diff(t.token_times_s)])
    return metrics


def summarize(traces: list["RequestTrace"], duration_s: float, slo: SLO | None = None) -> dict[str, Metric]:
    """Metrics of one serving run (:func:`summarize_passes` of one pass): throughputs, TTFT/TPOT/ITL/E2EL
    distributions in ms, failures, peak concurrency and (with ``slo``) goodput. Raises ValueError for
    a non-positive duration."""
    return summarize_passes([(traces, duration_s)], slo)
