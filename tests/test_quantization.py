"""The quantization axis on the tiny model: real bitsandbytes and gptqmodel, every cell in its subprocess.

Checks the storage accounting against each method's analytic formula (the books must close), the
accuracy metrics (zero distance for the reference against itself, positive for quantized weights),
the kernel that ran, and that a quantized checkpoint is made once and then reused.
"""

from __future__ import annotations

import pytest

from harness.pipeline.runner import run_plan
from tests.conftest import run_suite_text

pytestmark = pytest.mark.slow

SUITE = """
name: tq
model: tiny
timeout_s: 900
precisions:
  - kind: fp32
  - kind: bf16
  - kind: int8
  - kind: nf4
  - {kind: nf4, name: nf4-nodq, double_quant: false}
  - kind: fp4
  - {kind: gptq, calibration: {samples: 8}}
  - {kind: awq, calibration: {samples: 8}}
  - {kind: gptq, name: gptq-marlin, kernel: marlin, calibration: {samples: 8}}
inference:
  reference: fp32
  seq_len: 64
  stride: 64
  max_windows: 2
  kl_windows: 2
  prompt_tokens: 16
  decode_tokens: 8
  repeats: 1
  batch_sizes: [1, 2]
  text2sql: {items: 6, max_new_tokens: 12}
"""

# textbook bits per weight of each method on the tiny model's layers (every group size divides them)
TEXTBOOK = {"fp32": 32, "bf16": 16, "nf4": 4 + 8 / 64 + 32 / (64 * 256), "nf4-nodq": 4.5,
            "fp4": 4 + 8 / 64 + 32 / (64 * 256), "gptq": 4 + 20 / 64, "awq": 4 + 20 / 64}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_suite_text(tmp_path_factory.mktemp("quant"), SUITE)


def ok(records, name):
    r = records[f"tq-infer-{name}"]
    assert r.status == "ok", f"{name}: {r.status}: {r.reason}\n{r.log_tail}"
    return r


def test_storage_accounting_closes_for_every_method(run):
    records = run[3]
    for name in ("fp32", "bf16", "int8", "nf4", "nf4-nodq", "fp4", "gptq", "awq"):
        r = ok(records, name)
        st = r.info["storage"]
        # measured = textbook per-weight formula + the per-layer constants it names, to rounding error
        assert abs(st["unexplained_bits_per_param"]) < 1e-9, (name, st)
        assert r.metric("quant_bits_per_param_residual") == pytest.approx(st["constant_bits_per_param"], abs=1e-9)
        if name in TEXTBOOK:
            assert r.metric("quant_bits_per_param_analytic") == pytest.approx(TEXTBOOK[name]), name
    # LLM.int8: int8 codes plus one fp32 scale per output row, 8 + 32/in_features
    int8 = ok(records, "int8")
    assert 8 + 32 / 512 <= int8.metric("quant_bits_per_param") <= 8 + 32 / 256
    # quantized methods leave the output head dense and say so; dense ones quantize nothing
    for name in ("int8", "nf4", "gptq", "awq"):
        assert ok(records, name).info["storage"]["unquantized"] == ["lm_head"]
        assert ok(records, name).info["storage"]["layers"] == 14
    assert ok(records, "nf4").metric("weight_bytes") < ok(records, "int8").metric("weight_bytes") \
        < ok(records, "bf16").metric("weight_bytes")


def test_accuracy_against_the_reference(run):
    records = run[3]
    ref = ok(records, "fp32")
    assert ref.metric("kl_ref_nats") == pytest.approx(0.0, abs=1e-9)
    assert ref.metric("top1_agreement_ref_ratio") == 1.0
    assert ref.metric("output_length_ratio_ref") == 1.0
    assert ref.info["text2sql"]["same_sql_as_reference"] == 6
    assert len(ref.metrics["kl_ref_nats"].samples) == 2  # one mean per window
    for name in ("perplexity_delta_ref", "text2sql_ex_delta_ref"):  # the reference against itself: 0, zero width
        assert (ref.metric(name), ref.metrics[name].ci_low, ref.metrics[name].ci_high) == (0, 0, 0), name
    for name in ("int8", "nf4", "nf4-nodq", "fp4", "gptq", "awq"):
        r = ok(records, name)
        assert r.metric("kl_ref_nats") > 0, name
        assert 0 <= r.metric("top1_agreement_ref_ratio") < 1, name
        assert 0 <= r.metric("text2sql_ex_ratio") <= 1 and r.metric("output_length_ratio_ref") > 0
        assert r.info["reference"]["precision"] == "fp32"
        for m in (r.metrics[k] for k in ("perplexity", "kl_ref_nats", "top1_agreement_ref_ratio", "text2sql_ex_ratio",
                                         "text2sql_em_ratio", "perplexity_delta_ref", "text2sql_ex_delta_ref")):
            tol = 1e-9 * max(1.0, abs(m.value))  # the resamples sum in another order than the value
            assert m.ci_method and m.ci_low - tol <= m.value <= m.ci_high + tol, (name, m)
    # 4-bit codes are further from fp32 than bf16 rounding is
    assert ok(records, "nf4").metric("kl_ref_nats") > ok(records, "bf16").metric("kl_ref_nats")


def test_kernels_and_speed_are_reported(run):
    records = run[3]
    assert "Linear4bit" in ok(records, "nf4").info["kernels"]["label"]
    assert "Linear8bitLt" in ok(records, "int8").info["kernels"]["label"]
    assert ok(records, "gptq").info["kernels"]["label"].startswith("TorchAten")
    assert ok(records, "awq").info["kernels"]["label"].startswith("TorchAten")
    assert any("bitsandbytes" in op["name"] for op in ok(records, "nf4").info["kernels"]["ops"])
    for name in ("fp32", "gptq"):
        r = ok(records, name)
        assert {"prefill_tok_s_bs1", "prefill_tok_s_bs2", "decode_tok_s_bs1", "decode_tok_s_bs2"} <= set(r.metrics)
    marlin = run[3]["tq-infer-gptq-marlin"]
    assert marlin.status == "skipped" and "needs CUDA" in marlin.reason


def test_quantized_checkpoint_is_made_once_then_reused(run):
    p, store, runner, first = run
    made = ok(first, "gptq")
    assert made.info["checkpoint"]["cache"] == "made"
    assert made.metric("quantize_s") > 0 and made.metric("quantize_peak_rss_bytes") > 0
    assert made.info["checkpoint"]["calibration"]["samples"] == 8
    [again] = run_plan(p, store, runner, resume=False, only={"tq-infer-gptq"})
    assert again.status == "ok", again.reason
    assert again.info["checkpoint"]["cache"] == "reused"
    assert again.info["checkpoint"]["key"] == made.info["checkpoint"]["key"]
    # the record still says what making it cost
    assert again.metric("quantize_s") == made.metric("quantize_s")
    assert again.metric("quant_bits_per_param") == made.metric("quant_bits_per_param")
