"""Suite validation: strict keys with their paths and lines, kinds, cross-references, model refs, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.spec.suite import Suite, SuiteError, load_suite
from tests.conftest import TINY_SUITE


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(SuiteError) as info:
        load_suite(write(tmp_path, text))
    return info.value.problems


def test_valid_suite_resolves_defaults(tmp_path):
    suite = load_suite(write(tmp_path, TINY_SUITE))
    assert suite.name == "tiny"
    assert [p.label for p in suite.precisions] == ["fp32", "bf16", "nf4"]
    nf4 = suite.precisions[2]
    assert nf4.double_quant is True and nf4.compute_dtype == "bf16"
    assert suite.model.kind == "tiny"
    assert suite.training.modes[0].alpha == 16
    w = suite.workloads[0]
    # seeded: numpy's default_rng(seed).choice over the listed lengths, the same on every run and machine
    assert w.output_lengths() == [24, 8, 8, 4, 4, 4, 4, 4]
    assert w.model_copy(update={"seed": 1}).output_lengths() == [8, 8, 24, 24, 4, 4, 24, 24]


def test_default_suite_is_valid():
    suite = load_suite(Path(__file__).resolve().parents[1] / "suites" / "default.yaml")
    assert suite.model.kind == "embedded"


def test_typo_at_top_level_names_key_line_and_suggestion(tmp_path):
    text = TINY_SUITE.replace("precisions:\n  - kind: fp32", "precison:\n  - kind: fp32\nprecisions:\n  - kind: fp32")
    out = problems(tmp_path, text)
    assert len(out) == 1
    assert "precison" in out[0] and "did you mean 'precisions'" in out[0] and "allowed keys:" in out[0]
    line = text.splitlines().index("precison:") + 1
    assert out[0].startswith(f"{tmp_path / 's.yaml'}:{line}: precison:")


def test_every_problem_is_reported_with_its_path(tmp_path):
    text = """
name: bad
model: embeded
precisions:
  - kind: nf5
  - kind: nf4
    double_quant: maybe
    blocksize: 64
inference:
  seq_len: 8
  stride: 16
"""
    out = problems(tmp_path, text)
    joined = "\n".join(out)
    assert len(out) == 5, joined
    assert ":3: model: unknown model reference 'embeded' (did you mean 'embedded'?)" in joined
    assert ":5: precisions.0: unknown precision kind 'nf5' (did you mean 'nf4'?)" in joined
    assert ":7: precisions.1.double_quant: Input should be a valid boolean" in joined
    assert ":8: precisions.1.blocksize: unknown key 'blocksize'" in joined
    assert "inference: stride (16) must not exceed seq_len (8)" in joined


def test_cross_references_are_checked(tmp_path):
    text = TINY_SUITE.replace("precisions: [fp32]", "precisions: [fp23]") + \
        "exclude:\n  - engine: vllm-continous\n    reason: none\n"
    joined = "\n".join(problems(tmp_path, text))
    assert ": training.precisions: unknown name 'fp23' (did you mean 'fp32'?)" in joined
    assert "exclude.0.engine: unknown name 'vllm-continous' (did you mean 'vllm-continuous'?)" in joined


def test_duplicate_labels_need_names(tmp_path):
    text = TINY_SUITE.replace("  - kind: nf4\n", "  - kind: nf4\n  - kind: nf4\n    double_quant: false\n", 1)
    assert any("repeated: nf4" in p for p in problems(tmp_path, text))
    fixed = TINY_SUITE.replace("  - kind: nf4\n", "  - kind: nf4\n  - kind: nf4\n    name: nf4-nodq\n    double_quant: false\n", 1)
    assert [p.label for p in load_suite(write(tmp_path, fixed)).precisions][-1] == "nf4-nodq"


@pytest.mark.parametrize(("ref", "expected"), [
    ("embedded", {"kind": "embedded", "id": "smollm2-135m-instruct"}),
    ("tiny", {"kind": "tiny"}),
    ("hub:HuggingFaceTB/SmolLM2-135M-Instruct@main", {"kind": "hub", "id": "HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "main"}),
    ("meta-llama/Llama-3.2-1B", {"kind": "hub", "id": "meta-llama/Llama-3.2-1B"}),
    ("local:/models/x", {"kind": "local", "path": "/models/x"}),
])
def test_model_references(tmp_path, ref, expected):
    suite = load_suite(write(tmp_path, TINY_SUITE), model=ref)
    dumped = suite.model.model_dump()
    assert {k: dumped[k] for k in expected} == expected


@pytest.mark.parametrize("ref", ["tinny", "s3:bucket/model", "not a model"])
def test_unknown_model_references_fail_clearly(tmp_path, ref):
    out = problems(tmp_path, TINY_SUITE.replace("model: tiny", f"model: {ref!r}"))
    assert out and "unknown model reference" in out[0] and "use embedded[:ID]" in out[0]


def test_yaml_syntax_error_has_a_line(tmp_path):
    out = problems(tmp_path, "name: x\nprecisions: [fp32\n")
    assert "invalid YAML" in out[0] and ":3:" in out[0]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_validate_exit_codes_and_no_traceback(tmp_path):
    good = write(tmp_path, TINY_SUITE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY_SUITE.replace("precisions:\n  - kind: fp32", "precison:\n  - kind: fp32\nprecisions:\n  - kind: fp32"))
    ok = cli("validate", str(good))
    assert ok.returncode == 0, ok.stderr
    res = cli("validate", str(good), str(bad))
    assert res.returncode == 2
    assert "precison" in res.stderr and "Traceback" not in res.stderr + res.stdout


def test_cli_schema_is_the_suite_schema():
    res = cli("schema")
    assert res.returncode == 0
    schema = json.loads(res.stdout)
    assert schema == json.loads(json.dumps(Suite.model_json_schema()))
    assert "precisions" in schema["properties"] and schema["additionalProperties"] is False


def test_unknown_corpus_fails_validation_not_the_run(tmp_path):
    text = TINY_SUITE.replace("inference:\n", "inference:\n  corpus: plain_englsh\n", 1)
    joined = "\n".join(problems(tmp_path, text))
    assert "inference.corpus: unknown corpus 'plain_englsh' (did you mean 'plain_english'?)" in joined
