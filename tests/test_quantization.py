"""The quantization axis on the tiny model: suites/quantization.yaml as shipped, run whole on the tiny model
(real bitsandbytes, gptqmodel, lm-eval and vLLM, every cell in its subprocess; the session fixture
``quantization_on_tiny`` of tests/conftest.py, shared with tests/test_suites.py).

Checks the storage accounting against each method's analytic formula (the books must close), the
accuracy metrics (zero distance for the reference against itself, positive for quantized weights),
lm-eval's tasks scored on each cell's own loaded model (equal to a direct ``simple_evaluate``), the
kernel that ran, and that a quantized checkpoint is made once and then reused.
"""

from __future__ import annotations

import pytest

from harness.pipeline.runner import run_plan

pytestmark = pytest.mark.slow

# textbook bits per weight of each method on the tiny model's layers (every group size divides them)
TEXTBOOK = {"fp32": 32, "bf16": 16, "nf4": 4 + 8 / 64 + 32 / (64 * 256), "nf4-nodq": 4.5,
            "fp4": 4 + 8 / 64 + 32 / (64 * 256), "gptq": 4 + 20 / 64, "awq": 4 + 20 / 64}


@pytest.fixture(scope="module")
def run(quantization_on_tiny):
    return quantization_on_tiny


def ok(records, name):
    r = records[f"quantization-infer-{name}"]
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
    assert ref.info["text2sql"]["same_sql_as_reference"] == len(ref.info["text2sql"]["completions"]) > 0
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
        assert {"prefill_tok_s_bs1", "prefill_tok_s_bs8", "decode_tok_s_bs1", "decode_tok_s_bs8"} <= set(r.metrics)
    marlin = run[3]["quantization-infer-gptq-marlin"]
    assert marlin.status == "skipped" and "needs CUDA" in marlin.reason


def test_quantized_checkpoint_is_made_once_then_reused(run):
    p, store, runner, first, _ = run
    made = ok(first, "gptq")
    assert made.info["checkpoint"]["cache"] == "made"
    assert made.metric("quantize_s") > 0 and made.metric("quantize_peak_rss_bytes") > 0
    assert made.info["checkpoint"]["calibration"]["samples"] == 32
    [again] = run_plan(p, store, runner, resume=False, only={"quantization-infer-gptq"})
    assert again.status == "ok", again.reason
    assert again.info["checkpoint"]["cache"] == "reused"
    assert again.info["checkpoint"]["key"] == made.info["checkpoint"]["key"]
    # the record still says what making it cost
    assert again.metric("quantize_s") == made.metric("quantize_s")
    assert again.metric("quant_bits_per_param") == made.metric("quant_bits_per_param")


def test_cells_score_their_own_loaded_model_as_lm_eval_does_directly(run):
    """The suite's ``inference.eval`` tasks, scored in fp32 and NF4 cells through the model object each loaded:
    a direct ``simple_evaluate`` on the same model, loaded the same way here, gives the same values and stderr;
    the NF4 cell carries the paired difference to fp32 on the same documents."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoTokenizer

    from harness.measure import intervals, lmeval
    from harness.spec.cell import Cell

    fp32, nf4 = ok(run[3], "fp32"), ok(run[3], "nf4")
    for r in (fp32, nf4):  # (value, interval and samples on every precision: tests/test_suites.py)
        assert r.metrics["lmeval_harness_general_mc_acc"].ci_method.startswith(lmeval.STDERR_CI)
        assert r.metrics["lmeval_harness_documents_word_perplexity"].ci_low is None  # lm-eval gives rolling ppl no stderr
        proto = r.info["lmeval"]["harness_general_mc"]["protocol"]
        assert proto["documents"] == 120 and proto["lm_eval"] == "0.4.13" and proto["num_fewshot"] == 0
    # the paired difference to the reference on the same 120 questions (0, zero width, for the reference itself)
    zero = fp32.metrics["lmeval_harness_general_mc_acc_delta_ref"]
    assert (zero.value, zero.ci_low, zero.ci_high) == (0, 0, 0)
    delta = nf4.metrics["lmeval_harness_general_mc_acc_delta_ref"]
    assert delta.value == pytest.approx(nf4.metric("lmeval_harness_general_mc_acc") - fp32.metric("lmeval_harness_general_mc_acc"))
    assert delta.ci_low <= delta.value <= delta.ci_high and "paired" in delta.ci_method
    assert nf4.metric("lmeval_harness_documents_word_perplexity") != fp32.metric("lmeval_harness_documents_word_perplexity")

    tasks = ["harness_general_mc", "harness_documents"]
    for r in (fp32, nf4):
        cell = Cell.model_validate(r.cell)
        model = cell.model.resolve()
        torch.manual_seed(cell.seed)
        lm = cell.precision.load(str(cell.precision.prepare(model, cell).path), "cpu").eval()
        direct = lm_eval.simple_evaluate(
            model=HFLM(pretrained=lm, tokenizer=AutoTokenizer.from_pretrained(str(model.path)), batch_size=8),
            tasks=[lmeval.task_config(t) for t in tasks], bootstrap_iters=lmeval.BOOTSTRAP_ITERS)["results"]
        for task, key in (("harness_general_mc", "acc"), ("harness_general_mc", "acc_norm"),
                          ("harness_documents", "word_perplexity"), ("harness_documents", "bits_per_byte")):
            assert r.metric(f"lmeval_{task}_{key}") == pytest.approx(direct[task][f"{key},none"], rel=1e-6), (r.cell_id, key)
        assert r.metric("lmeval_harness_general_mc_acc") - r.metrics["lmeval_harness_general_mc_acc"].ci_low == pytest.approx(
            intervals.Z95 * direct["harness_general_mc"]["acc_stderr,none"], rel=1e-6)
