"""Decode efficiency: a serving cell's decode throughput against the machine's memory-bandwidth bound.

A decoding step of a batch of B sequences at mean context L reads every weight once (W bytes: the
Linear layers in the precision's exact storage, other tensors in its dtype; the input embedding only
when the output head is a separate matrix, since a lookup reads B rows) and each sequence's KV cache
(L x kv bytes per token). At bandwidth BW no engine can decode faster than

    bound(B) = B x BW / (W + B x L x kv)   tokens/s.

B is the run's mean decode batch: the sum over requests of their decode time (first to last token)
over the run's duration; L the mean of prompt + output/2. ``decode_tok_s`` counts tokens after the
first of each request over the duration, so ``decode_efficiency_ratio`` = decode_tok_s / bound is
at most about 1 (prefill time counts against it). A step is compute-bound above the batch where
its 2 x params x B FLOPs take as long as reading W: B* = FLOP/s x W / (2 x params x BW)
(``optimal_batch_requests_analytic``); the cell says which side its mean batch is on.

Bandwidth and FLOP/s are measured (:mod:`harness.measure.rates`); this module only combines them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.base.dtypes import element_bytes
from harness.metrics import metric

if TYPE_CHECKING:
    from harness.base.wire import RequestTrace
    from harness.results.records import Metric


def weight_read_bytes(config: Any, precision: Any) -> tuple[int, int]:
    """(bytes of weights a decoding step reads, parameter count) of a model ``config`` in ``precision``."""
    from harness.analytic.shape import ModelShape

    shape = ModelShape.from_config(config, "serving")
    element = element_bytes(precision.dtype)
    separate_head = any(w.name.startswith("lm_head") for w in shape.weights)
    total = 0
    for w in shape.weights:
        if "embed_tokens" in w.name and separate_head:
            continue  # a lookup reads B rows, not the table
        if w.linear is not None and not w.name.startswith("lm_head"):
            total += precision.layer_bytes(*w.linear)
        else:
            total += w.numel * element
    return total, shape.params


def decode_metrics(traces: list["RequestTrace"], duration_s: float, weight_bytes: int, params: int,
                   kv_bytes_per_token: int, bandwidth: float, flops: float | None) -> tuple[dict[str, "Metric"], dict[str, Any]]:
    """Decode throughput, its bandwidth bound, the efficiency ratio and the optimal batch (see module)."""
    done = [t for t in traces if t.error is None and t.first_token_s is not None]
    if not done or duration_s <= 0:
        return {}, {}
    decode_tokens = sum(max(0, t.output_tokens - 1) for t in done)
    batch = sum(t.finished_s - t.first_token_s for t in done) / duration_s  # type: ignore[operator]
    context = sum(t.prompt_tokens + t.output_tokens / 2 for t in done) / len(done)
    achieved = decode_tokens / duration_s
    step_bytes = weight_bytes + batch * context * kv_bytes_per_token
    bound = batch * bandwidth / step_bytes if batch > 0 else 0.0
    metrics = {
        "decode_tok_s": metric("decode_tok_s", achieved),
        "mean_decode_batch_requests": metric("mean_decode_batch_requests", batch),
        "memory_bandwidth_bytes_s": metric("memory_bandwidth_bytes_s", bandwidth),
        "decode_step_read_bytes_analytic": metric(
            "decode_step_read_bytes_analytic", step_bytes,
            description=f"weights {weight_bytes} + mean batch x mean context {context:.0f} x {kv_bytes_per_token} "
                        "KV bytes per token"),
        "decode_bound_tok_s_analytic": metric("decode_bound_tok_s_analytic", bound),
    }
    info: dict[str, Any] = {}
    if bound > 0:
        metrics["decode_efficiency_ratio"] = metric("decode_efficiency_ratio", achieved / bound)
    if flops:
        optimal = flops * weight_bytes / (2 * params * bandwidth)
        metrics["compute_flops_s"] = metric("compute_flops_s", flops)
        metrics["optimal_batch_requests_analytic"] = metric("optimal_batch_requests_analytic", optimal)
        info["decode_regime"] = "memory-bound" if batch < optimal else "compute-bound"
    return metrics, info
