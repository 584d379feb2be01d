"""lm-evaluation-harness tasks in inference and serving cells: the shipped tasks' data, validation of task
names, planning without lm-eval, a failed scoring, the catalog's declarations. (The cells scoring their own loaded model, fp32 and NF4 against a direct
``simple_evaluate``, are in tests/test_quantization.py, on the shipped quantization suite's run; every serving
engine scored, vLLM beside HF, in tests/test_suites.py, on the shipped serving suite's run.)
"""

from __future__ import annotations

import json

import pytest

from harness.measure import lmeval

SUITE = """
name: le
model: tiny
timeout_s: 900
precisions:
  - kind: fp32
  - kind: nf4
inference:
  reference: fp32
  seq_len: 64
  stride: 64
  max_windows: 2
  prompt_tokens: 16
  decode_tokens: 8
  repeats: 1
  text2sql: null
  eval:
    tasks: [harness_general_mc, harness_documents]
    limit: 40
    batch_size: 8
"""

SERVING_SUITE = """
name: les
model: tiny
timeout_s: 600
precisions:
  - kind: fp32
workloads:
  - name: w
    num_requests: 4
    prompt_tokens: 16
    output_tokens: [4, 8]
serving:
  repeats: 1
  warmup: 0
  eval:
    tasks: [harness_general_mc]
  engines:
    - kind: hf-static
      batch_size: 4
"""


def test_shipped_task_data_is_well_formed():
    """The shipped tasks' files: 120 four-choice items with every answer position used 30 times, 60 short
    answers of one lower-case word or number, 8 documents."""
    mc = [json.loads(line) for line in (lmeval.DATA / "general_mc.jsonl").read_text().splitlines()]
    assert len(mc) >= 100 and all(len(set(x["choices"])) == 4 and x["answer"] in range(4) for x in mc)
    assert sorted({x["answer"]: sum(y["answer"] == x["answer"] for y in mc) for x in mc}.values()) == [30] * 4
    qa = [json.loads(line) for line in (lmeval.DATA / "short_answer.jsonl").read_text().splitlines()]
    assert len(qa) == 60 and all(x["answer"].isdigit() or (x["answer"].isalpha() and x["answer"].islower()) for x in qa)
    docs = [json.loads(line) for line in (lmeval.DATA / "documents.jsonl").read_text().splitlines()]
    assert len(docs) == 8 and all(200 < len(d["text"].split()) < 400 for d in docs)
    assert set(lmeval.SHIPPED) == {"harness_general_mc", "harness_short_answer", "harness_documents"}


def test_unknown_task_names_are_refused_with_the_allowed_ones(tmp_path):
    from harness.spec.source import SuiteError
    from harness.spec.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text(SUITE.replace("[harness_general_mc, harness_documents]", "[harness_general_mc, harness_genral_mc]"))
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    text = str(e.value)
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if "tasks:" in x)
    assert f"{path}:{line}: inference.eval.tasks" in text, text  # the file, the line of `tasks:`, the field
    assert "unknown shipped task 'harness_genral_mc'" in text and "did you mean 'harness_general_mc'" in text, text
    assert "harness_short_answer" in text  # the allowed names
    # a name of lm-eval's own registry is checked against the installed lm-eval's task files
    path.write_text(SUITE.replace("[harness_general_mc, harness_documents]", "[hellaswag, arc_easyy]"))
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    text = str(e.value)
    assert "unknown lm-eval task 'arc_easyy'" in text and "'arc_easy'" in text and "hellaswag" not in text.split("unknown")[0], text
    assert {"hellaswag", "arc_easy", "wikitext", "gsm8k", "mmlu"} <= lmeval.registry_names()
    # serving.eval is checked the same way, and named as such
    path.write_text(SERVING_SUITE.replace("[harness_general_mc]", "[harness_general_mc, hellaswagg]"))
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    line = next(i for i, x in enumerate(path.read_text().splitlines(), 1) if "tasks:" in x)
    assert f"{path}:{line}: serving.eval.tasks.1: unknown lm-eval task 'hellaswagg'" in str(e.value), str(e.value)
    assert "did you mean 'hellaswag'" in str(e.value)


def test_cells_with_an_eval_block_are_skipped_with_the_reason_where_lm_eval_is_missing(tmp_path, monkeypatch):
    """Planning needs no lm-eval: where it is not installed, inference and serving cells that ask for tasks are
    planned as skipped, saying which block and how to install it (simulated: this environment has it)."""
    from harness.base.host import Host
    from harness.pipeline import planner
    from harness.spec.suite import load_suite

    monkeypatch.setattr(planner.lmeval, "missing", lambda: "lm-eval is not installed (pip install '.[eval]')")
    for text, block in ((SUITE, "inference"), (SERVING_SUITE, "serving")):
        path = tmp_path / f"{block}.yaml"
        path.write_text(text)
        cells = planner.plan(load_suite(path), Host.detect()).cells
        assert cells and all(c.skip == f"its {block}.eval block cannot be scored: lm-eval is not installed "
                                        "(pip install '.[eval]')" for c in cells), [c.skip for c in cells]


@pytest.mark.slow
def test_a_serving_cell_whose_scoring_fails_keeps_its_measured_passes(tmp_path):
    """A registry task cannot load its Hub dataset offline: the cell fails saying so, and its record keeps the
    serving metrics measured before the scoring (nothing measured is lost)."""
    import os
    import subprocess
    import sys

    from harness.results.store import Store

    path = tmp_path / "s.yaml"
    path.write_text(SERVING_SUITE.replace("[harness_general_mc]", "[arc_easy]"))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(tmp_path / "res")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode != 0, res.stdout[-3000:]
    (record,) = Store(tmp_path / "res").records("les")
    assert record.status == "error" and "lm-eval could not score the engine" in record.reason, record.reason
    assert record.metric("output_tok_s") > 0 and record.metric("completed_requests") == 4
    assert "Couldn't reach 'allenai/ai2_arc'" in record.info["lmeval"]["error"]  # arc_easy's dataset, named


def test_lmeval_metrics_are_declared_with_their_direction():
    from harness.metrics import spec_for

    acc, ppl = spec_for("lmeval_hellaswag_acc_norm"), spec_for("lmeval_wikitext_word_perplexity")
    assert (acc.direction, acc.kind, acc.unit, acc.judged) == ("higher", "accuracy", "ratio", True)
    assert (ppl.direction, ppl.kind, ppl.judged) == ("lower", "quality", True)
    assert spec_for("lmeval_gsm8k_strict_match_exact_match").direction == "higher"
    assert spec_for("lmeval_hellaswag_acc_delta_ref").judged is False  # its base is judged
    assert spec_for("lmeval_x_f1") is None  # kept in info only


def test_short_answer_scoring_ignores_case_space_and_punctuation_only():
    """The shipped generation task's exact match, as lm-eval scores it: ' Paris.' matches 'paris', 'Lyon' does not."""
    from lm_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict([lmeval.task_config("harness_short_answer")], TaskManager(include_defaults=False))["harness_short_answer"]
    docs = list(task.test_docs())
    assert len(docs) == 60
    doc = docs[0]
    assert task.process_results(doc, [f" {doc['answer'].upper()}."]) == {"exact_match": 1.0}
    assert task.process_results(doc, [f" {doc['answer']}x"]) == {"exact_match": 0.0}
    assert task.doc_to_text(doc) == f"Question: {doc['question']}\nAnswer:"


@pytest.mark.slow
def test_every_shipped_task_runs_on_the_tiny_model(tmp_path):
    """Each shipped task through lm-eval on the tiny model in this process: generation, choices and rolling
    log-likelihoods all produce their metrics and per-document values."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.tiny import Tiny

    path = str(Tiny().resolve().path)
    lm, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    out = lmeval.evaluate(lm, tok, lmeval.EvalSettings(tasks=list(lmeval.SHIPPED), limit=12, batch_size=4))
    assert set(out["harness_short_answer"]["values"]) == {"exact_match"}
    assert set(out["harness_general_mc"]["values"]) == {"acc", "acc_norm"}
    assert set(out["harness_documents"]["values"]) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    for task, r in out.items():
        assert r["protocol"]["documents"] == (8 if task == "harness_documents" else 12), task
        assert all(len(v) == r["protocol"]["documents"] for v in r["docs"].values()), task
    metrics, info = lmeval.metrics(out, out, "fp32")  # against itself: every paired difference is 0
    assert all(m.value == 0 for name, m in metrics.items() if name.endswith("_delta_ref"))
    assert "lmeval_harness_short_answer_exact_match" in metrics and "not_recorded_as_metrics" not in info
