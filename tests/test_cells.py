"""Genuine cells of every axis on the tiny model: real transformers, bitsandbytes and peft (vLLM's cells: the
shipped suites on the tiny model, tests/test_suites.py).

One run of the tiny suite (each cell in its own subprocess, as users run them); the tests check
the values the records carry against what the model and workload imply.
"""

from __future__ import annotations

import math

import pytest

from tests.conftest import TINY_SUITE, ok, run_suite_text

pytestmark = pytest.mark.slow


# vLLM's cells on the tiny model run in tests/test_suites.py (the shipped serving and quantization suites)
VLLM_ENGINE = """    - kind: vllm-continuous
      max_num_seqs: 4
      max_model_len: 128
"""


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    assert VLLM_ENGINE in TINY_SUITE
    return run_suite_text(tmp_path_factory.mktemp("cells"), TINY_SUITE.replace(VLLM_ENGINE, ""))[3]


def test_inference_precisions(records):
    fp32, bf16, nf4 = (ok(records, f"tiny-infer-{p}") for p in ("fp32", "bf16", "nf4"))
    params = fp32.info["model"]["provenance"]["params"]
    # fp32 weights are 4 bytes per parameter (plus the rotary buffer); bf16 about half of that
    assert params * 4 <= fp32.metric("weight_bytes") < params * 4 + 4096
    assert abs(bf16.metric("weight_bytes") - fp32.metric("weight_bytes") / 2) < 4096
    # NF4: 14 of 15 Linear layers are bitsandbytes Linear4bit (lm_head stays dense), with quant constants
    assert nf4.info["kernels"]["modules"].get("bitsandbytes.nn.modules.Linear4bit") == 14
    assert nf4.info["weight_bytes_parts"]["quant_constants"] > 0
    assert nf4.metric("weight_bytes") < bf16.metric("weight_bytes")
    for r in (fp32, bf16, nf4):
        assert math.isfinite(r.metric("perplexity")) and r.metric("perplexity") > 1
        assert len(r.metrics["perplexity"].samples) == 2  # two windows, as the protocol says
        assert r.info["perplexity_protocol"]["seq_len"] == 64
        for name in ("perplexity", "kl_ref_nats", "top1_agreement_ref_ratio", "text2sql_ex_ratio", "text2sql_em_ratio"):
            m = r.metrics[name]
            tol = 1e-9 * max(1.0, abs(m.value))  # the resamples sum in another order than the value
            assert m.ci_method and m.ci_low - tol <= m.value <= m.ci_high + tol, (name, m)
        assert r.metric("prefill_tok_s_bs1") > 0 and r.metric("decode_tok_s_bs1") > 0
        assert len(r.metrics["decode_tok_s_bs1"].samples) == 3 and r.metric("peak_rss_bytes") > 0
    # a random model on a 2048-token vocabulary: perplexity of the order of the vocabulary
    assert 200 < fp32.metric("perplexity") < 20000
    assert abs(bf16.metric("perplexity") / fp32.metric("perplexity") - 1) < 0.02
    # NF4 costs a little on these weights (measured: +0.7 %), far more than bf16 (+0.005 %)
    nf4_gap = nf4.metric("perplexity") / fp32.metric("perplexity") - 1
    assert 0.002 < nf4_gap < 0.03, nf4_gap
    assert nf4_gap > 10 * abs(bf16.metric("perplexity") / fp32.metric("perplexity") - 1)


def test_lora_training(records):
    r = ok(records, "tiny-train-lora-fp32")
    losses = r.metrics["loss"].samples
    assert len(losses) == 4 and losses[-1] < losses[0]  # 1 warm-up + 3 measured steps on one batch
    # LoRA r=8 on q,k,v,o of 2 layers: r*(d_in+d_out) = 8*(256+256) + 2*8*(256+128) + 8*(256+256) per layer
    assert r.metric("trainable_params") == 2 * (4096 + 3072 + 3072 + 4096)
    assert r.metric("grads_bytes") == r.metric("trainable_params") * 4
    # AdamW keeps two fp32 moments per trainable parameter (plus a scalar step per tensor)
    assert 2 * r.metric("grads_bytes") <= r.metric("optimizer_bytes") <= 2 * r.metric("grads_bytes") + 16 * 8
    assert r.info["params_without_grad"] == 0
    assert r.metric("activation_saved_bytes") > 0 and r.metric("step_time_ms") > 0
    assert len(r.metrics["step_time_ms"].samples) == 3


def _check_serving(r, lengths):
    assert r.info["output_lengths"] == lengths and r.info["length_mismatches"] == []
    assert r.metric("output_tokens") == sum(lengths)
    assert r.metric("output_tok_s") == pytest.approx(sum(lengths) / r.metric("duration_s"))
    passes = r.info["passes"]["repeats"]
    assert passes == 3 and len(r.metrics["output_tok_s"].samples) == passes  # one throughput per timed pass
    assert len(r.metrics["e2el_ms"].samples) == passes * len(lengths)  # latencies: every request of every pass
    for ttft, e2el in zip(r.metrics["ttft_ms"].samples, r.metrics["e2el_ms"].samples):
        assert 0 < ttft <= e2el
    assert r.metric("e2el_p90_ms") >= r.metric("e2el_ms")
    # nothing failed, every request met the suite's generous SLOs, and all of them were in flight at t=0
    assert r.metric("failed_requests") == 0 and r.metric("completed_requests") == len(lengths)
    assert r.metric("goodput_req_s") == pytest.approx(r.metric("request_throughput_req_s"))
    assert r.metric("peak_concurrency_requests") == len(lengths)


def test_hf_static_serving(records):
    bf16, nf4 = ok(records, "tiny-serve-hf-static-bf16"), ok(records, "tiny-serve-hf-static-nf4")
    lengths = bf16.info["output_lengths"]
    assert len(lengths) == 8 and set(lengths) <= {4, 8, 24}
    for r in (bf16, nf4):
        _check_serving(r, lengths)
        assert r.info["engine"]["batches"] == 2
    # static batching: every request of a batch completes together, in every pass
    e2el = bf16.metrics["e2el_ms"].samples
    for p in range(0, len(e2el), 8):
        assert len(set(e2el[p:p + 4])) == 1 and len(set(e2el[p + 4:p + 8])) == 1
