"""The formulas on numbers worked by hand: the decode bound on a known trace, MFU, KV bytes, dtype widths."""

from __future__ import annotations

import pytest

from harness.analytic.decode import decode_metrics
from harness.analytic.flops import mfu_ratio, train_flops_per_token
from harness.analytic.kv import kv_bytes_per_token
from harness.base.dtypes import element_bytes, short_name, torch_name
from harness.base.wire import RequestTrace


def _trace(prompt: int, out: int, first: float | None, done: float, error: str | None = None) -> RequestTrace:
    return RequestTrace(prompt_tokens=prompt, output_tokens=out, submitted_s=0.0, first_token_s=first, finished_s=done,
                        error=error)


def test_decode_metrics_on_a_known_trace():
    traces = [_trace(10, 5, 1.0, 3.0), _trace(20, 3, 2.0, 4.0), _trace(30, 9, None, 4.0, error="HTTP 500")]
    metrics, info = decode_metrics(traces, duration_s=4.0, weight_bytes=1000, params=100, kv_bytes_per_token=10,
                                   bandwidth=1e4, flops=1e6)
    # decode tokens after each first: (5 - 1) + (3 - 1) = 6 over 4 s; the failed request counts for nothing
    assert metrics["decode_tok_s"].value == 1.5
    # decoding time (3 - 1) + (4 - 2) = 4 s over the 4 s run: one request decoding at a time on average
    assert metrics["mean_decode_batch_requests"].value == 1.0
    # mean context (10 + 5/2 + 20 + 3/2) / 2 = 17 tokens: a step reads 1000 + 1 x 17 x 10 = 1170 bytes
    assert metrics["decode_step_read_bytes_analytic"].value == 1170
    assert metrics["decode_bound_tok_s_analytic"].value == pytest.approx(1e4 / 1170)
    assert metrics["decode_efficiency_ratio"].value == pytest.approx(1.5 * 1170 / 1e4)
    # FLOP/s x weights / (2 x params x bandwidth) = 1e6 x 1000 / (2 x 100 x 1e4) = 500 requests
    assert metrics["optimal_batch_requests_analytic"].value == pytest.approx(500)
    assert info == {"decode_regime": "memory-bound"}
    assert metrics["decode_bound_tok_s_analytic"].source == "analytic" and metrics["decode_tok_s"].unit == "tok/s"


def test_decode_metrics_above_the_optimal_batch_is_compute_bound():
    traces = [_trace(10, 11, 0.0, 1.0) for _ in range(4)]  # four requests decoding the whole second
    metrics, info = decode_metrics(traces, 1.0, weight_bytes=1000, params=1000, kv_bytes_per_token=0, bandwidth=1e3,
                                   flops=1e3)
    assert metrics["mean_decode_batch_requests"].value == 4.0
    assert metrics["optimal_batch_requests_analytic"].value == 0.5
    assert info == {"decode_regime": "compute-bound"}
    assert decode_metrics([], 1.0, 1, 1, 1, 1.0, None) == ({}, {})  # nothing decoded: nothing claimed


def test_mfu_counts_weight_gradients_only_for_trainable_parameters():
    assert train_flops_per_token(100, 100) == 600  # full fine-tuning: 6N
    assert train_flops_per_token(100, 10) == 420  # LoRA: 4N + 2 x adapters
    # 420 FLOPs x 1000 tokens in 2 s on a 1 MFLOP/s device
    assert mfu_ratio(100, 10, 1000, 2.0, 1e6) == pytest.approx(0.21)
    with pytest.raises(ValueError, match="positive"):
        mfu_ratio(100, 10, 1000, 0.0, 1e6)


def test_kv_bytes_and_dtype_widths():
    # SmolLM2-135M: 30 layers, 3 KV heads of 64, bf16: 2 x 30 x 3 x 64 x 2 bytes per token
    assert kv_bytes_per_token(30, 3, 64, element_bytes("bf16")) == 23040
    assert [element_bytes(n) for n in ("fp32", "torch.float16", "bfloat16", "fp8_e4m3")] == [4, 2, 2, 1]
    assert torch_name("bf16") == "bfloat16" and short_name("torch.float32") == "fp32"
    with pytest.raises(KeyError, match="unknown dtype 'fp7'"):
        element_bytes("fp7")
