"""`harness compare`: per-metric direction and threshold, repeats judged by interval overlap, missing
cells listed, suite overrides, exit codes. Records are built in code (no model runs)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest

from harness.results.records import Metric, Record
from harness.results.store import Store
from harness.track.compare import compare, load_results, rule_for


@pytest.fixture(scope="module")
def env():
    from harness.results.environment import capture

    return capture()


def record(env, cell: str, metrics: dict[str, Metric], suite: str = "s") -> Record:
    return Record(record_id=f"{cell}-{id(metrics)}", suite=suite, cell_id=cell, cell_key="k", code_key="c", cell={},
                  status="ok", metrics=metrics, environment=env, seed=0, started_at=datetime.now(timezone.utc),
                  duration_s=1.0, command=f"harness run s.yaml --only {cell}")


def base_metrics(tok_s: float = 100.0, ex: float = 0.60, ttft: float = 200.0, rss: float = 1e9) -> dict[str, Metric]:
    return {"output_tok_s": Metric(value=tok_s, unit="tok/s"),
            "text2sql_ex_ratio": Metric(value=ex, unit="ratio"),
            "ttft_ms": Metric(value=ttft, unit="ms"),
            "peak_rss_bytes": Metric(value=rss, unit="bytes"),
            "params_bytes_analytic": Metric(value=5.0, unit="bytes", source="analytic"),
            "kv_cache_capacity_tokens": Metric(value=1000, unit="count")}


def write(tmp_path, name: str, records: list[Record]):
    store = Store(tmp_path / name)
    for r in records:
        store.append(r)
    return tmp_path / name


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "compare", *args], capture_output=True, text=True,
                          timeout=120, env={"COLUMNS": "250", **__import__("os").environ})


def test_directions_and_kinds():
    judged = {n: rule_for(n, m) for n, m in base_metrics().items()}
    assert judged["output_tok_s"].direction == "higher" and judged["output_tok_s"].kind == "speed"
    assert judged["text2sql_ex_ratio"].direction == "higher" and judged["text2sql_ex_ratio"].kind == "accuracy"
    assert judged["ttft_ms"].direction == "lower" and judged["peak_rss_bytes"].kind == "memory"
    assert judged["params_bytes_analytic"] is None and judged["kv_cache_capacity_tokens"] is None
    assert rule_for("perplexity", Metric(value=10, unit="ppl")).direction == "lower"


def test_a_throughput_drop_and_an_accuracy_drop_fail_the_gate(tmp_path, env):
    base = write(tmp_path, "base", [record(env, "a", base_metrics()), record(env, "b", base_metrics())])
    new = write(tmp_path, "new", [record(env, "a", base_metrics(tok_s=90.0, ex=0.58)), record(env, "b", base_metrics())])
    result = compare(load_results(base), load_results(new))
    assert {(c.cell_id, c.metric) for c in result.regressions} == {("a", "output_tok_s"), ("a", "text2sql_ex_ratio")}
    res = run_cli(str(base), str(new))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "output_tok_s" in res.stdout and "text2sql_ex_ratio" in res.stdout and "2 regression" in res.stdout


def test_improvements_and_small_changes_pass(tmp_path, env):
    base = write(tmp_path, "base", [record(env, "a", base_metrics())])
    new = write(tmp_path, "new", [record(env, "a", base_metrics(tok_s=110.0, ex=0.65, ttft=150.0, rss=0.98e9))])
    result = compare(load_results(base), load_results(new))
    verdicts = {c.metric: c.verdict for c in result.changes}
    assert verdicts == {"output_tok_s": "improvement", "text2sql_ex_ratio": "improvement", "ttft_ms": "improvement",
                        "peak_rss_bytes": "unchanged"}
    assert run_cli(str(base), str(new)).returncode == 0
    # latency and memory going up are regressions
    worse = write(tmp_path, "worse", [record(env, "a", base_metrics(ttft=260.0, rss=1.2e9))])
    assert {c.metric for c in compare(load_results(base), load_results(worse)).regressions} == {"ttft_ms", "peak_rss_bytes"}


def test_repeats_decide_between_a_regression_and_noise(tmp_path, env):
    def tok(samples):
        return {"decode_tok_s": Metric(value=sorted(samples)[len(samples) // 2], unit="tok/s", samples=samples, stat="median")}

    base = {("s", "a"): record(env, "a", tok([100, 101, 99, 100, 102, 98, 100]))}
    separated = {("s", "a"): record(env, "a", tok([88, 89, 90, 89, 88, 90, 89]))}
    overlapping = {("s", "a"): record(env, "a", tok([60, 120, 89, 140, 70, 89, 130]))}
    assert compare(base, separated).changes[0].verdict == "regression"
    change = compare(base, overlapping).changes[0]
    assert change.verdict == "noise" and "95 % median intervals" in change.test


def test_lost_cells_fail_the_gate_unless_the_suite_lets_them_go_and_suite_thresholds_override(tmp_path, env):
    base = write(tmp_path, "base", [record(env, "a", base_metrics()), record(env, "gone", base_metrics())])
    new = write(tmp_path, "new", [record(env, "a", base_metrics(tok_s=90.0)), record(env, "fresh", base_metrics())])
    res = run_cli(str(base), str(new))
    assert res.returncode == 1
    assert "1 lost" in res.stdout and "s/gone: missing from the new results" in res.stdout and "s/fresh" in res.stdout
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nmodel: tiny\nprecisions: [fp32]\ninference: {}\n"
                     "compare: {'output_*': {relative: 0.2}}\n")
    res = run_cli(str(base), str(new), "--suite", str(suite))
    assert res.returncode == 1 and "gate: FAIL (1: lost: s/gone)" in res.stdout  # the threshold passes a; gone is still lost
    suite.write_text(suite.read_text() + "may_lose: [gone]\n")
    res = run_cli(str(base), str(new), "--suite", str(suite))
    assert res.returncode == 0 and "s/gone: missing from the new results (allowed)" in res.stdout and "threshold" in res.stdout, res.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(suite.read_text().replace("relative: 0.2", "relative: 0.2, absolute: 1"))
    res = run_cli(str(base), str(new), "--suite", str(bad))
    assert res.returncode == 2 and "exactly one of" in res.stdout + res.stderr


def test_a_cell_that_now_fails_or_loses_a_judged_metric_fails_the_gate(env):
    base = [record(env, "a", base_metrics()), record(env, "b", base_metrics())]
    crashed = record(env, "a", {}).model_copy(update={"status": "oom", "reason": "out of memory"})
    fewer = base_metrics()
    del fewer["ttft_ms"]
    result = compare(base, [crashed, record(env, "b", fewer)])
    assert [(u.cell_id, u.metric, u.why) for u in result.lost] == [
        ("a", None, "now oom: out of memory"), ("b", "ttft_ms", "judged metric missing from the new record")]
    assert result.failures == ["lost: s/a", "lost: s/b ttft_ms"]
    allowed = compare(base, [crashed, record(env, "b", fewer)], may_lose={"s": ["a", "b:ttft_*"]})
    assert allowed.failures == [] and all(u.allowed for u in allowed.lost)


def test_only_like_with_like_is_judged(env):
    base = [record(env, "a", base_metrics())]
    other_model = record(env, "a", base_metrics(tok_s=50.0)).model_copy(
        update={"cell_key": "k2", "cell": {"model": {"ref": "hub:x"}}})
    result = compare(base, [other_model])
    assert result.changes == [] and result.failures == []
    assert result.not_comparable[0].why == "cell configuration changed (model): k -> k2"
    forced = compare(base, [other_model], allow_incomparable=True)
    assert forced.regressions and "not like with like" in forced.regressions[0].caveat
    other_cpu = record(env, "a", base_metrics(tok_s=50.0))
    other_cpu.environment = env.model_copy(update={"cpu_model": "Another CPU"})
    assert "device: cpu (" in compare(base, [other_cpu]).not_comparable[0].why


def test_invalid_records_are_never_a_silent_base_or_new_value(env):
    from harness.results.records import Validity

    bad = Validity(valid=False, reasons=["foreign CPU: other processes took 48% of the cell's 2 cores"])
    trusted_base = record(env, "a", base_metrics())
    contended_base = record(env, "a", base_metrics(tok_s=10.0)).model_copy(update={"validity": bad})
    # the base is the latest trusted record: the contended 10 tok/s never becomes the baseline
    result = compare([trusted_base, contended_base], [record(env, "a", base_metrics(tok_s=99.0))])
    assert {c.metric: c.base for c in result.changes}["output_tok_s"] == 100.0 and not result.failures
    contended_new = record(env, "a", base_metrics(tok_s=10.0)).model_copy(update={"validity": bad})
    result = compare([trusted_base], [contended_new])
    assert result.changes == [] and result.failures == ["invalid: s/a"] and "foreign CPU" in result.invalid[0].why
    judged = compare([trusted_base], [contended_new], allow_invalid=True)
    assert judged.regressions and judged.regressions[0].caveat.startswith("new record invalid (foreign CPU")
    strict = contended_new.model_copy(update={"status": "invalid", "reason": bad.reasons[0]})
    assert compare([trusted_base], [strict]).lost[0].why.startswith("now invalid: foreign CPU")


def test_bad_inputs_exit_2_naming_them(tmp_path):
    res = run_cli(str(tmp_path / "nowhere"), str(tmp_path))
    assert res.returncode == 2 and "nowhere" in res.stdout + res.stderr
    (tmp_path / "empty").mkdir()
    res = run_cli(str(tmp_path / "empty"), str(tmp_path / "empty"))
    assert res.returncode == 2 and "no *.jsonl" in res.stdout + res.stderr
