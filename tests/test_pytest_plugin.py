"""The pytest entry: suites become test items measured by pytest-benchmark, with metrics in its JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

SUITE = """
name: plug
model: tiny
precisions:
  - kind: fp32
  - kind: bf16
workloads:
  - name: short
    num_requests: 4
    prompt_tokens: 16
    output_tokens: 4
inference:
  precisions: [fp32]
  seq_len: 32
  stride: 32
  max_windows: 1
  prompt_tokens: 8
  decode_tokens: 4
  repeats: 1
serving:
  precisions: [bf16]
  engines:
    - kind: hf-static
      batch_size: 2
    - kind: vllm-continuous
    - kind: hf-continuous          # these two share one model load (a group)
      max_requests_per_batch: 2
    - kind: hf-continuous
      name: hfcb4
      max_requests_per_batch: 4
exclude:
  - engine: vllm-continuous
    reason: keeps this test fast
"""

pytestmark = pytest.mark.slow


def test_suite_cells_run_as_benchmarks(tmp_path):
    shutil.copy(REPO / "suites" / "test_suites.py", tmp_path / "test_suites.py")
    (tmp_path / "plug.yaml").write_text(SUITE)
    out_json = tmp_path / "bench.json"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), "-p", "harness.pytest_plugin", "--benchmark-only",
         f"--benchmark-json={out_json}", f"--harness-results={tmp_path / 'results'}", "-rs", "-v",
         "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "test_cell[plug-infer-fp32] PASSED" in res.stdout
    assert "test_cell[plug-serve-hf-static-bf16] PASSED" in res.stdout
    assert "SKIPPED" in res.stdout and "excluded by the suite: keeps this test fast" in res.stdout
    assert "harness summary" in res.stdout and "prefill_tok_s_bs1" in res.stdout
    data = json.loads(out_json.read_text())
    bench = {b["extra_info"]["cell_id"]: b for b in data["benchmarks"]}
    assert set(bench) == {"plug-infer-fp32", "plug-serve-hf-static-bf16", "plug-serve-hf-continuous-bf16",
                          "plug-serve-hfcb4-bf16"}
    # a group runs when its first item does; both items carry their own records and the group's key
    cb2, cb4 = bench["plug-serve-hf-continuous-bf16"]["extra_info"], bench["plug-serve-hfcb4-bf16"]["extra_info"]
    assert cb2["group"] is not None and cb2["group"] == cb4["group"] and cb2["record_id"] != cb4["record_id"]
    assert cb2["metrics"]["startup_s"] == cb4["metrics"]["startup_s"] and cb4["metrics"]["output_tokens"] == 16
    infer = bench["plug-infer-fp32"]
    assert infer["stats"]["rounds"] == 1
    assert infer["extra_info"]["metrics"]["perplexity"] > 1
    assert infer["extra_info"]["units"]["decode_tok_s_bs1"] == "tok/s"
    assert bench["plug-serve-hf-static-bf16"]["extra_info"]["metrics"]["output_tok_s"] > 0
    lines = (tmp_path / "results" / "plug.jsonl").read_text().splitlines()
    stored = [json.loads(x) for x in lines]
    assert sorted(r["status"] for r in stored) == ["ok", "ok", "ok", "ok", "skipped"]
    starts = {r["cell_id"]: r["info"]["engine"]["engine_start"] for r in stored if "engine" in r["info"]}
    assert starts["plug-serve-hfcb4-bf16"] == {"shared": True, "started_by": "plug-serve-hf-continuous-bf16",
                                                "cells_served": 2}


def test_invalid_suite_is_refused_before_anything_runs(tmp_path):
    shutil.copy(REPO / "suites" / "test_suites.py", tmp_path / "test_suites.py")
    (tmp_path / "plug.yaml").write_text(SUITE.replace("precisions:\n  - kind: fp32", "precison:\n  - kind: fp32"))
    res = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-p", "harness.pytest_plugin", "--benchmark-only",
                          f"--harness-results={tmp_path / 'results'}", "-p", "no:cacheprovider"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "precison" in res.stdout + res.stderr and "did you mean 'precisions'" in res.stdout + res.stderr
    assert not (tmp_path / "results").exists()


def test_failing_cell_fails_its_item(tmp_path):
    shutil.copy(REPO / "suites" / "test_suites.py", tmp_path / "test_suites.py")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (tmp_path / "plug.yaml").write_text(SUITE)
    res = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-p", "harness.pytest_plugin", "--benchmark-only",
                          f"--harness-results={tmp_path / 'results'}", f"--harness-model=local:{broken}",
                          "-k", "infer", "-p", "no:cacheprovider"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "cell plug-infer-fp32: error" in res.stdout and "log tail" in res.stdout
