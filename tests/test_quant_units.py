"""Fast checks of the quantization axis' pure parts: Text2SQL scoring, analytic storage, planner skips,
settings validation and calibration text. No model is loaded."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from harness.measure import text2sql
from harness.pipeline.planner import plan
from harness.precisions.prequant import Calibration, calibration_texts
from harness.spec.axes import PrecisionConfig
from harness.spec.suite import SuiteError
from tests.test_planner import host, suite

PRECISION = TypeAdapter(PrecisionConfig)

QUANT_SUITE = """
name: q
model: tiny
precisions: [fp32, nf4, int8, gptq, awq, {kind: awq, name: awq-gemm, kernel: gemm}]
inference: {reference: fp32}
"""


def test_shipped_text2sql_set_is_complete_and_gold_scores_perfectly():
    items = text2sql.items()
    assert len(items) == 50 and len({i.id for i in items}) == 50
    gold = [text2sql.Generation(id=i.id, sql=i.sql, tokens=1) for i in items]
    s = text2sql.score(items, gold)
    assert s.execution_accuracy == 1.0 and s.exact_match == 1.0 and s.failed_sql == 0


def test_text2sql_execution_match_rules():
    items = {i.id: i for i in text2sql.items()}
    q = items["q02"]  # unordered multi-row answer
    reordered = q.sql + " ORDER BY name DESC"  # same rows in another order: right for an unordered question
    wrong = q.sql.replace("'Canada'", "'Nowhere'")
    broken = "SELECT nme FROM authors"
    preds = [text2sql.Generation(id=q.id, sql=sql, tokens=1) for sql in (reordered, wrong, broken)]
    scores = [text2sql.score([q], [p]) for p in preds]
    assert scores[0].execution_accuracy == 1.0 and scores[0].exact_match == 0.0  # same rows, other text
    assert scores[1].execution_accuracy == 0.0 and scores[1].failed_sql == 0
    assert scores[2].execution_accuracy == 0.0 and scores[2].failed_sql == 1
    # exact match ignores case, spacing and a trailing semicolon
    loose = text2sql.Generation(id=q.id, sql="  " + q.sql.replace("SELECT", "select").replace(" FROM ", "  from\n") + ";",
                                tokens=1)
    assert text2sql.score([q], [loose]).exact_match == 1.0
    # ...but not the case of a string literal, which changes the answer
    literal = text2sql.Generation(id=q.id, sql=q.sql.replace("'Canada'", "'canada'"), tokens=1)
    assert text2sql.score([q], [literal]).exact_match == 0.0
    # a gold query with ORDER BY is compared as a list: the reversed order is wrong
    ordered = next(i for i in items.values() if "ORDER BY" in i.sql and "LIMIT" not in i.sql)
    flipped = ordered.sql + " DESC" if not ordered.sql.endswith("DESC") else ordered.sql[:-5]
    assert text2sql.score([ordered], [text2sql.Generation(id=ordered.id, sql=flipped, tokens=1)]).execution_accuracy == 0


def test_text2sql_item_limit_is_checked():
    assert len(text2sql.items(7)) == 7
    with pytest.raises(ValueError, match="text2sql.items=60 but the shipped set has 50 questions"):
        text2sql.items(60)


def test_kl_direction_and_top1_against_hand_computed_values():
    torch = pytest.importorskip("torch")
    from harness.scenarios.inference.reference import distance

    p = torch.tensor([0.7, 0.2, 0.1])  # reference
    q = torch.tensor([0.1, 0.3, 0.6])  # cell
    ref, cell = p.log().view(1, 1, 3), q.log().view(1, 1, 3)
    kl = float((p * (p / q).log()).sum())  # KL(reference || cell) = 1.1019 nats; the reverse is 1.0021
    d = distance(ref, cell)
    assert d.kl_nats == pytest.approx(kl, rel=1e-6) and d.kl_nats == pytest.approx(1.1019, abs=1e-4)
    assert d.top1_agreement == 0.0 and d.positions == 1
    assert distance(ref, ref).kl_nats == 0.0 and distance(ref, ref).top1_agreement == 1.0
    with pytest.raises(ValueError, match=r"cell's next-token log-probs are not finite in window\(s\) \[0\]"):
        distance(ref, torch.full_like(cell, float("nan")))


def test_text2sql_runaway_query_is_cut_off():
    conn = text2sql.database()
    runaway = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    assert text2sql.execute(conn, runaway) is None


def test_text2sql_prompt_holds_schema_examples_and_question():
    item = text2sql.items()[0]
    prompt = text2sql.prompt(item, fewshot=2)
    assert prompt.endswith(f"-- Question: {item.question}\nSELECT")
    assert prompt.count("-- Question:") == 3 and "CREATE TABLE books" in prompt


def test_analytic_storage_formulas():
    nf4 = PRECISION.validate_python({"kind": "nf4"}).storage(576, 576)
    assert nf4.bits_per_weight == pytest.approx(4.127, abs=5e-4)
    assert PRECISION.validate_python({"kind": "nf4", "double_quant": False}).storage(576, 576).bits_per_weight == 4.5
    assert PRECISION.validate_python({"kind": "int8"}).storage(576, 1536).bits_per_weight == pytest.approx(8 + 32 / 576)
    gptq = PRECISION.validate_python({"kind": "gptq", "bits": 4, "group_size": 64}).storage(576, 576)
    assert gptq.bits_per_weight == pytest.approx(4 + 20 / 64) and gptq.layer_constant_bits == 32 * 576
    assert PRECISION.validate_python({"kind": "bf16"}).storage(8, 8).bits_per_weight == 16


def test_group_size_zero_is_refused_with_the_allowed_values():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="group_size must be -1 .* or a positive number"):
        PRECISION.validate_python({"kind": "gptq", "group_size": 0})


def test_group_size_must_divide_the_model_widths():
    gptq = PRECISION.validate_python({"kind": "gptq", "group_size": 128})
    with pytest.raises(ValueError, match="group_size=128 does not divide the model's hidden_size=576"):
        gptq.check_shape({"hidden_size": 576, "intermediate_size": 1536})
    PRECISION.validate_python({"kind": "gptq", "group_size": 64}).check_shape({"hidden_size": 576,
                                                                              "intermediate_size": 1536})


def test_planner_skips_absent_toolchains_and_cuda_kernels(tmp_path):
    s = suite(tmp_path, QUANT_SUITE)
    with_all = {c.cell.id: c.skip for c in plan(s, host(gptqmodel="7.6.0")).cells}
    assert with_all["q-infer-gptq"] is None and with_all["q-infer-awq"] is None
    assert with_all["q-infer-awq-gemm"] == "AWQ kernel 'gemm' needs CUDA; this cell runs on cpu"
    without = {c.cell.id: c.skip for c in plan(s, host()).cells}
    assert without["q-infer-gptq"].startswith("gptqmodel is not installed (pip install gptqmodel")
    no_bnb = {c.cell.id: c.skip for c in plan(s, host(gptqmodel="7.6.0", bitsandbytes=None)).cells}
    assert no_bnb["q-infer-int8"].startswith("bitsandbytes is not installed")
    # every inference cell carries the reference precision's full config
    cells = plan(s, host(gptqmodel="7.6.0")).cells
    assert all(c.cell.reference is not None and c.cell.reference.kind == "fp32" for c in cells)


def test_reference_must_name_a_suite_precision(tmp_path):
    with pytest.raises(SuiteError, match=r"inference\.reference: unknown name 'fp23'.*did you mean 'fp32'"):
        suite(tmp_path, QUANT_SUITE.replace("reference: fp32", "reference: fp23"))


def test_calibration_text_is_seeded_and_bounded():
    a = calibration_texts(Calibration(samples=5, seed=1))
    assert a == calibration_texts(Calibration(samples=5, seed=1)) and len(a) == 5
    assert a != calibration_texts(Calibration(samples=5, seed=2))
    with pytest.raises(ValueError, match="calibration.samples=500 but corpus 'calibration_prose' has only"):
        calibration_texts(Calibration(samples=500))


def test_toolchains_the_cards_name_are_skipped_with_their_reason(tmp_path):
    s = suite(tmp_path, """
name: q
model: tiny
precisions: [fp32, {kind: gptq, name: autogptq, backend: auto-gptq}, {kind: awq, name: autoawq, backend: autoawq}]
inference: {}
""")
    absent = {c.cell.id: c.skip for c in plan(s, host(gptqmodel="7.6.0")).cells}
    assert absent["q-infer-autogptq"].startswith("auto-gptq is not installed; it is abandoned")
    assert absent["q-infer-autoawq"].startswith("autoawq is not installed; it is archived upstream")
    present = {c.cell.id: c.skip for c in plan(s, host(gptqmodel="7.6.0", **{"auto-gptq": "0.7.1",
                                                                             "autoawq": "0.2.9"})).cells}
    assert "cannot be imported with transformers 5" in present["q-infer-autogptq"]
    assert "needs intel-extension-for-pytorch" in present["q-infer-autoawq"]
