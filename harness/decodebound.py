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

Bandwidth (a large tensor's read, best of 5) and FLOP/s (a 2048^3 matmul in the cell's dtype, best
of 3) are measured: on CPU the runner measures them once per run, while no engine is running, and
hands them to serving cells in ``HARNESS_HOST_RATES``; a CUDA device is measured in the cell's process.
"""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING, Any

from harness.records import Metric

if TYPE_CHECKING:
    from harness.engines import RequestTrace

RATES_ENV = "HARNESS_HOST_RATES"  # JSON {"bandwidth": bytes/s, "flops": {dtype: FLOP/s}}


def measure_memory_bandwidth(device: str = "cpu", mib: int = 256) -> float:
    """Read bandwidth of ``device`` in bytes/s: summing a ``mib`` MiB fp32 tensor, best of 5."""
    import torch

    x = torch.ones(mib * 2**20 // 4, device=device)
    best = float("inf")
    for i in range(6):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x.sum().item()
        if i:  # the first pass warms up
            best = min(best, time.perf_counter() - t0)
    return x.nbytes / best


@functools.cache
def measure_flops(device: str, dtype: str, n: int = 2048) -> float:
    """Matmul throughput of ``device`` in ``dtype`` (torch name) in FLOP/s: an n^3 product, best of 3."""
    import torch

    a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    best = float("inf")
    for i in range(4):
        t0 = time.perf_counter()
        (a @ a).sum().item()
        if i:
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def host_rates(device: str, dtype: str) -> tuple[float, float]:
    """(bandwidth bytes/s, FLOP/s in ``dtype``) of ``device``: as the runner measured them for this run
    (CPU, before any engine was running), else measured now in this process."""
    import json

    given = json.loads(os.environ.get(RATES_ENV, "{}"))
    if device == "cpu" and "bandwidth" in given and dtype in given.get("flops", {}):
        return float(given["bandwidth"]), float(given["flops"][dtype])
    return _bandwidth(device), measure_flops(device, dtype)


@functools.cache
def _bandwidth(device: str) -> float:
    return measure_memory_bandwidth(device)


def weight_read_bytes(config: Any, precision: Any) -> tuple[int, int]:
    """(bytes of weights a decoding step reads, parameter count) of a model ``config`` in ``precision``."""
    from harness.estimate import ModelShape

    shape = ModelShape.from_config(config, "serving")
    element = {"float32": 4, "bfloat16": 2, "float16": 2}.get(precision.dtype, 2)
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
                   kv_bytes_per_token: int, bandwidth: float, flops: float | None) -> tuple[dict[str, Metric], dict[str, Any]]:
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
        "decode_tok_s": Metric(value=achieved, unit="tok/s", description="output tokens after each request's first / duration"),
        "mean_decode_batch_requests": Metric(value=batch, unit="count", stat="mean",
                                             description="requests decoding at once, time-averaged over the run"),
        "memory_bandwidth_bytes_s": Metric(value=bandwidth, unit="bytes/s", description="measured read bandwidth of the device"),
        "decode_step_read_bytes_analytic": Metric(value=step_bytes, unit="bytes", source="analytic",
                                                  description=f"weights {weight_bytes} + mean batch x mean context "
                                                              f"{context:.0f} x {kv_bytes_per_token} KV bytes per token"),
        "decode_bound_tok_s_analytic": Metric(value=bound, unit="tok/s", source="analytic",
                                              description="mean batch x bandwidth / bytes read per step"),
    }
    info: dict[str, Any] = {}
    if bound > 0:
        metrics["decode_efficiency_ratio"] = Metric(value=achieved / bound, unit="ratio",
                                                    description="decode tok/s over the memory-bandwidth bound")
    if flops:
        optimal = flops * weight_bytes / (2 * params * bandwidth)
        metrics["compute_flops_s"] = Metric(value=flops, unit="FLOP/s", description="measured matmul throughput")
        metrics["optimal_batch_requests_analytic"] = Metric(value=optimal, unit="count", source="analytic",
                                                        description="batch where a step's FLOPs take as long as reading its weights")
        info["decode_regime"] = "memory-bound" if batch < optimal else "compute-bound"
    return metrics, info
