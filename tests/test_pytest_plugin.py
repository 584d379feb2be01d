"""The pytest entry: suites become test items measured by pytest-benchmark, with metrics in its JSON."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys

import pytest

from tests.browser import terminal_screenshot
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
  repeats: 3
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
         "--benchmark-columns=min,median,iqr,stddev,rounds",
         "-p", "no:cacheprovider"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "test_cell[plug-infer-fp32] PASSED" in res.stdout
    # progress under -v: pytest names each item once (no line of ours interrupts it), the cell's end line
    # follows its status; a shared engine start is announced
    # (in the run's progress: the warnings summary names an invalid cell's item again, by design)
    progress = res.stdout.split(" warnings summary ")[0]
    assert progress.count("::test_cell[plug-infer-fp32]") == 1, res.stdout
    assert "[harness] plug-infer-fp32: started" not in res.stdout
    end = re.search(r"\[harness\] plug-infer-fp32: ok(, NOT VALID)? in [0-9.]+ s; decode_step_s [0-9.]+ [mµ]?s \(median of 3\)",
                    res.stdout)
    assert end and end.start() > res.stdout.index("::test_cell[plug-infer-fp32] PASSED"), res.stdout
    assert "[harness] plug-serve-hf-continuous-bf16: started (one engine start with plug-serve-hfcb4-bf16)" in res.stdout
    assert "test_cell[plug-serve-hf-static-bf16] PASSED" in res.stdout
    assert "SKIPPED" in res.stdout and "excluded by the suite: keeps this test fast" in res.stdout
    assert "harness summary" in res.stdout and "prefill tok/s b1" in res.stdout
    # what pytest showed: pytest-benchmark's table of measured durations, then the summary
    start = res.stdout.rfind("\n", 0, res.stdout.index("benchmark 'plug/infer'")) + 1
    terminal_screenshot(res.stdout[start:], "pytest-suite", tmp_path, width=120)
    data = json.loads(out_json.read_text())
    bench = {b["extra_info"]["cell_id"]: b for b in data["benchmarks"]}
    assert set(bench) == {"plug-infer-fp32", "plug-serve-hf-static-bf16", "plug-serve-hf-continuous-bf16",
                          "plug-serve-hfcb4-bf16"}
    # a group runs when its first item does; both items carry their own records and the group's key
    cb2, cb4 = bench["plug-serve-hf-continuous-bf16"]["extra_info"], bench["plug-serve-hfcb4-bf16"]["extra_info"]
    assert cb2["group"] is not None and cb2["group"] == cb4["group"] and cb2["record_id"] != cb4["record_id"]
    assert cb2["metrics"]["startup_s"] == cb4["metrics"]["startup_s"] and cb4["metrics"]["output_tokens"] == 16
    # pytest-benchmark's statistics are the durations each cell measured in its process, one round each:
    # seconds per decode step (each timed repeat) and per generated token of a serving pass; a grouped
    # cell has its own
    infer = bench["plug-infer-fp32"]
    timed = infer["extra_info"]["timed"]
    assert timed["metric"] == "decode_step_s" and len(timed["samples"]) == 3
    assert infer["stats"]["rounds"] == 3 and infer["stats"]["iterations"] == 1
    assert infer["stats"]["median"] == pytest.approx(statistics.median(timed["samples"]), rel=1e-12)
    assert infer["stats"]["min"] == min(timed["samples"]) and infer["stats"]["max"] == max(timed["samples"])
    assert infer["stats"]["median"] == pytest.approx(infer["extra_info"]["metrics"]["decode_step_s"], rel=1e-12)
    assert 1e-5 < infer["stats"]["median"] < 5  # a decode step of a tiny model: not the subprocess, not nanoseconds
    for cell in ("plug-serve-hf-static-bf16", "plug-serve-hf-continuous-bf16", "plug-serve-hfcb4-bf16"):
        stats, info = bench[cell]["stats"], bench[cell]["extra_info"]
        assert info["timed"]["metric"] == "output_s_per_tok" and stats["rounds"] == 3
        assert stats["median"] == pytest.approx(statistics.median(info["timed"]["samples"]), rel=1e-12)
        assert stats["median"] == pytest.approx(info["metrics"]["output_s_per_tok"], rel=1e-12)
    assert cb2["timed"]["samples"] != cb4["timed"]["samples"]
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


SLOWER = """
name: slower
model: tiny
precisions: [{kind: fp32}]
inference:
  seq_len: 32
  stride: 32
  max_windows: 1
  kl_windows: 1
  prompt_tokens: 8
  decode_tokens: 16
  repeats: 5
  text2sql: null
"""


def _spin(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import time\nt=time.time()\nwhile time.time()-t<{seconds}: pass"])


def test_benchmark_compare_fail_catches_a_genuinely_slower_run(tmp_path):
    """Two real runs of one cell, the second with every core busy with a spinning process beside it (a
    slower machine, for real): pytest-benchmark's own --benchmark-compare-fail gates on the decode steps
    the cell measured, and `pytest-benchmark compare` shows them (seconds per step, not the subprocess).
    Also -q: the progress lines sit beside the dots."""
    shutil.copy(REPO / "suites" / "test_suites.py", tmp_path / "test_suites.py")
    (tmp_path / "slower.yaml").write_text(SLOWER)
    storage = tmp_path / "bench"
    base = [sys.executable, "-m", "pytest", str(tmp_path), "-p", "harness.pytest_plugin", "--benchmark-only", "-q",
            f"--benchmark-storage=file://{storage}", f"--harness-results={tmp_path / 'results'}", "-p", "no:cacheprovider"]
    quiet = subprocess.run(base + ["--benchmark-save=quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert "[harness] slower-infer-fp32: started" in quiet.stdout and "[harness] slower-infer-fp32: ok" in quiet.stdout
    assert "1 passed" in quiet.stdout
    spinners = [_spin(240) for _ in range(2 * (__import__("os").cpu_count() or 2))]
    try:
        busy = subprocess.run(base + ["--benchmark-save=busy", "--benchmark-compare=0001",
                                      "--benchmark-compare-fail=median:30%"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    assert busy.returncode != 0, busy.stdout + busy.stderr
    assert "Performance has regressed" in busy.stdout + busy.stderr and "median" in busy.stdout + busy.stderr
    saved = sorted(storage.rglob("*.json"))
    assert [p.name.split("_", 1)[1] for p in saved] == ["quiet.json", "busy.json"]
    quiet_b, busy_b = (json.loads(p.read_text())["benchmarks"][0] for p in saved)
    for b in (quiet_b, busy_b):
        assert b["stats"]["rounds"] == 5 and b["stats"]["median"] == pytest.approx(
            b["extra_info"]["metrics"]["decode_step_s"], rel=1e-12)
    assert busy_b["stats"]["median"] > 1.3 * quiet_b["stats"]["median"]
    cli = __import__("pathlib").Path(sys.executable).parent / "pytest-benchmark"
    shown = subprocess.run([str(cli), "compare", "--columns=min,median,rounds",
                            *map(str, saved)], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "test_cell[slower-infer-fp32]" in shown.stdout and re.search(r"time in (us|ms)", shown.stdout), shown.stdout
    terminal_screenshot(shown.stdout.strip("\n"), "pytest-benchmark-compare", tmp_path, width=100)


def test_suite_selection_by_name_and_all(tmp_path):
    from harness.pytest_plugin import suite_files

    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.yaml").write_text("name: x\n")
    assert suite_files(None, tmp_path) == [tmp_path / f"{n}.yaml" for n in "abc"]
    assert suite_files(["b"], tmp_path) == [tmp_path / "b.yaml"]
    assert suite_files(["c,a", "c"], tmp_path) == [tmp_path / "c.yaml", tmp_path / "a.yaml"]
    assert suite_files(["b", "all"], tmp_path) == [tmp_path / f"{n}.yaml" for n in "bac"]
    with pytest.raises(pytest.UsageError, match="--harness-suite nope: no such suite file or name; known: a, b, c, or all"):
        suite_files(["nope"], tmp_path)


def test_suite_cells_are_refused_under_xdist(tmp_path):
    """In an xdist worker the suite cells refuse to be collected (pytest-benchmark, for its part, refuses
    --benchmark-only under xdist and disables its timing)."""
    shutil.copy(REPO / "suites" / "test_suites.py", tmp_path / "test_suites.py")
    (tmp_path / "slower.yaml").write_text(SLOWER)
    res = subprocess.run([sys.executable, "-m", "pytest", str(tmp_path), "-p", "harness.pytest_plugin",
                          "--collect-only", "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**__import__("os").environ, "PYTEST_XDIST_WORKER": "gw0"})
    assert res.returncode != 0
    assert "suite cells run one at a time: under pytest-xdist" in res.stdout + res.stderr


def test_pytest_benchmark_is_the_pinned_version_with_the_seam():
    """feed_measured reaches past pytest-benchmark's documented surface; the version it was written for is pinned."""
    import importlib.metadata

    from pytest_benchmark.fixture import BenchmarkFixture
    from pytest_benchmark.stats import Metadata

    assert importlib.metadata.version("pytest-benchmark") == "5.3.1"
    assert callable(BenchmarkFixture._make_stats) and callable(Metadata.update)
