"""The noise floor: per-metric spread over fresh-process runs, the smallest detectable change, and the
gate's thresholds raised (never lowered) by a noise file; `harness noise` on a real tiny cell."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from harness.metrics import Threshold
from harness.results.records import Metric, Record
from harness.track.compare import compare
from harness.track.noise import MetricNoise, NoiseFile, summarize, t975
from tests.conftest import REPO


@pytest.fixture(scope="module")
def env():
    from harness.results.environment import capture

    return capture()


def rec(env, tok_s: float, n: int = 0, cell: str = "a") -> Record:
    return Record(record_id=f"r{n}-{tok_s}", suite="s", cell_id=cell, cell_key="k", code_key="c", cell={}, status="ok",
                  metrics={"decode_tok_s_bs1": Metric(value=tok_s, unit="tok/s"), "load_s": Metric(value=1.0, unit="s")},
                  environment=env, seed=0, started_at=datetime.now(timezone.utc) + timedelta(seconds=n), duration_s=1.0,
                  command="x")


def test_the_detectable_change_is_t_times_sqrt2_times_sd():
    n = MetricNoise.of("tok/s", [100.0, 103.0, 97.0, 101.0, 99.0])
    sd = math.sqrt(sum((v - 100.0) ** 2 for v in [100.0, 103.0, 97.0, 101.0, 99.0]) / 4)
    assert n.mean == pytest.approx(100.0) and n.sd == pytest.approx(sd) and n.cv == pytest.approx(sd / 100)
    assert n.mdc_absolute == pytest.approx(2.776 * math.sqrt(2) * sd) and n.mdc_relative == pytest.approx(n.mdc_absolute / 100)
    assert t975(1) == 12.706 and t975(11) == 2.228 and t975(500) == 1.96


def test_a_noise_file_raises_thresholds_and_says_so_but_never_lowers_them(env):
    runs = [rec(env, v, i) for i, v in enumerate([100.0, 106.0, 94.0])]  # CV 6 %: 3 runs detect ~37 %
    noisy = summarize(runs, 3)
    assert set(noisy.cells["s/a"]) == {"decode_tok_s_bs1"}  # load_s is not judged: no noise needed
    base, new = [rec(env, 100.0, 0)], [rec(env, 88.0, 10)]
    assert compare(base, new).regressions  # -12 % against the default 5 %
    judged = compare(base, new, noise=noisy).changes[0]
    assert judged.verdict == "unchanged" and judged.threshold.relative == pytest.approx(noisy.cells["s/a"]["decode_tok_s_bs1"].mdc_relative)
    assert judged.threshold_source.startswith("noise file: CV 6.0% over 3 runs, detectable 36.")
    steady = summarize([rec(env, v, i) for i, v in enumerate([100.0, 100.2, 99.9])], 3)
    kept = compare(base, new, noise=steady).changes[0]
    assert kept.verdict == "regression" and kept.threshold == Threshold(relative=0.05)
    assert "allows it" in kept.threshold_source


def test_untrusted_runs_stay_out_of_the_noise_floor(env):
    from harness.results.records import Validity

    bad = rec(env, 2.5, 5).model_copy(update={"validity": Validity(valid=False, reasons=["foreign CPU: 70%"])})
    noise = summarize([rec(env, 44.0, 0), rec(env, 43.0, 1), bad], 3)
    assert noise.cells["s/a"]["decode_tok_s_bs1"].values == [44.0, 43.0]
    assert len(noise.invalid) == 1 and "foreign CPU: 70%" in noise.invalid[0]


def test_harness_noise_runs_a_real_cell_in_fresh_processes_and_compare_reads_its_file(tmp_path):
    suite = tmp_path / "q.yaml"
    suite.write_text("name: q\nmodel: tiny\ntimeout_s: 300\nprecisions: [{kind: fp32}]\n"
                     "inference: {seq_len: 64, stride: 64, max_windows: 2, prompt_tokens: 16, decode_tokens: 16, repeats: 3}\n"
                     # a fast runner times this cell in under the default 0.05 s; validity is not what is tested here
                     "validity: {min_timed_s: 0.001, max_foreign_cpu_share: 1.0}\n")
    out = tmp_path / "noise.json"
    res = subprocess.run([sys.executable, "-m", "harness.cli", "noise", str(suite), "--runs", "2", "--results",
                          str(tmp_path / "runs"), "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    data = NoiseFile.read(out)
    assert data.runs == 2 and "q/q-infer-fp32" in data.cells
    decode = data.cells["q/q-infer-fp32"]["decode_tok_s_bs1"]
    assert len(decode.values) + len(data.invalid) == 2 and decode.cv >= 0
    records = [json.loads(line) for line in (tmp_path / "runs" / "q.jsonl").read_text().splitlines()]
    assert len(records) == 2 and len({r["record_id"] for r in records}) == 2  # two fresh processes, two records
    assert "decode_tok_s_bs1: mean" in res.stdout
    gate = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(tmp_path / "runs"), str(tmp_path / "runs"),
                           "--noise", str(out), "--all"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "250", **__import__("os").environ})
    assert gate.returncode == 0 and "noise file: CV" in gate.stdout, gate.stdout + gate.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "something else"}')
    gate = subprocess.run([sys.executable, "-m", "harness.cli", "compare", str(tmp_path / "runs"), str(tmp_path / "runs"),
                           "--noise", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert gate.returncode == 2 and "bad.json: not a noise file" in gate.stdout + gate.stderr
