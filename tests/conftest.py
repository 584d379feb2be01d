"""Shared fixtures: a private model cache per test session and suites on the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY_SUITE = """
name: tiny
model: tiny
timeout_s: 600
precisions:
  - kind: fp32
  - kind: bf16
  - kind: nf4
workloads:
  - name: mixed
    num_requests: 8
    prompt_tokens: 32
    output_tokens: [4, 8, 24]
inference:
  seq_len: 64
  stride: 64
  max_windows: 2
  prompt_tokens: 16
  decode_tokens: 8
  repeats: 3
  text2sql: {items: 8, max_new_tokens: 16}
training:
  precisions: [fp32]
  modes:
    - kind: lora
      r: 8
      targets: [q_proj, k_proj, v_proj, o_proj]
  batch_size: 2
  seq_len: 64
  steps: 3
  lr: 1.0e-3
serving:
  precisions: [bf16, nf4]
  slo: {ttft_ms: 60000, tpot_ms: 60000}
  engines:
    - kind: hf-static
      batch_size: 4
    - kind: vllm-continuous
      max_num_seqs: 4
      max_model_len: 128
"""


@pytest.fixture(scope="session", autouse=True)
def harness_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models built by tests go to a cache private to the session (inherited by cell subprocesses)."""
    path = Path(os.environ.get("HARNESS_TEST_CACHE_DIR") or tmp_path_factory.mktemp("cache"))
    os.environ["HARNESS_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def shipped_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store for the shipped suites the tests run (tests/test_quantization.py, tests/test_suites.py), which
    the report test of tests/test_suites.py reports, compares and publishes."""
    return tmp_path_factory.mktemp("shipped") / "results"


@pytest.fixture(scope="session")
def quantization_on_tiny(shipped_results: Path) -> tuple:
    """suites/quantization.yaml run on the tiny model as a user runs it (`harness run
    suites/quantization.yaml --model tiny --only ...`): every method and its calibration, lm-eval's tasks,
    the vLLM cells of the GPTQ and AWQ checkpoints and the bitsandbytes skips. Returns ``(plan, store, runner, {cell_id: record}, stdout)``; the plan and runner let a test run
    a cell again."""
    import subprocess
    import sys

    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.pipeline.runner import Runner
    from harness.results.store import Store
    from harness.spec.suite import load_suite

    path = REPO / "suites" / "quantization.yaml"
    p = plan(load_suite(path, model="tiny"), Host.detect(), source=str(path), model_override="tiny")
    # every cell but vLLM's bf16 engine (a minute of CI: vLLM serving bf16 is the serving suite's test)
    only = [a for c in p.cells if c.cell.id != "quantization-serve-vllm-continuous-bf16" for a in ("--only", c.cell.id)]
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(path), "--model", "tiny", *only,
                          "--results", str(shipped_results)], capture_output=True, text=True, timeout=3500)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    print(res.stdout)  # the summary tables, in the CI log
    store = Store(shipped_results)
    runner = Runner(log_dir=shipped_results.parent / "logs")
    return p, store, runner, {r.cell_id: r for r in store.records("quantization")}, res.stdout


@pytest.fixture
def tiny_suite_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SUITE)
    return path


def run_suite_text(tmp: Path, text: str) -> tuple:
    """Plan a suite given as YAML text for this host and run it (each cell in its subprocess).

    Returns ``(plan, store, runner, {cell_id: record})``.
    """
    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.pipeline.runner import Runner, run_plan
    from harness.results.store import Store
    from harness.spec.suite import load_suite

    path = tmp / "suite.yaml"
    path.write_text(text)
    p = plan(load_suite(path), Host.detect(), source=str(path))
    store, runner = Store(tmp / "results"), Runner(log_dir=tmp / "logs")
    return p, store, runner, {r.cell_id: r for r in run_plan(p, store, runner)}


def ok(records: dict, cell_id: str):
    """The record of ``cell_id``, asserting it is ``ok`` (the failure shows its reason and log tail)."""
    r = records[cell_id]
    assert r.status == "ok", f"{cell_id}: {r.status}: {r.reason}\n{r.log_tail}"
    return r
