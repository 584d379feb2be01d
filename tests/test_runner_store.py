"""Runner isolation (crash, hang, kill), records, the append-only store and resuming a killed run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from harness.base.host import Host
from harness.pipeline.planner import plan
from harness.pipeline.runner import Runner, run_plan
from harness.results.records import SCHEMA_VERSION, Record
from harness.results.store import Store
from harness.spec.suite import load_suite
from tests.conftest import REPO, TINY_SUITE

# the tiny suite's inference block alone: three quick cells
INFER_ONLY = TINY_SUITE.split("workloads:")[0] + "inference:" + TINY_SUITE.split("inference:")[1].split("training:")[0]


def planned(tmp_path, text=INFER_ONLY, **kw):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return plan(load_suite(path), Host.detect(), source=str(path), **kw)


def test_crash_becomes_error_record_with_log_tail(tmp_path):
    p = planned(tmp_path)
    record = Runner(log_dir=tmp_path / "logs", worker="tests.workers.crash").run(p.cells[0].cell, "cmd")
    assert record.status == "error"
    assert record.reason == "crashed: killed by signal SIGABRT"
    assert "simulated native crash" in record.log_tail and "about to crash" in record.log_tail


def test_hang_becomes_timeout_and_the_process_group_dies(tmp_path):
    p = planned(tmp_path)
    cell = p.cells[0].cell.model_copy(update={"timeout_s": 3.0})
    start = time.monotonic()
    record = Runner(log_dir=tmp_path / "logs", worker="tests.workers.hang", grace_s=1.0).run(cell, "cmd")
    assert record.status == "timeout"
    assert "no result after 3 s" in record.reason
    assert "hanging with grandchild" in record.log_tail
    assert time.monotonic() - start < 30
    pid = int(record.log_tail.split("grandchild ")[1].split()[0])
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_sigkill_without_oom_evidence_is_an_error_record(tmp_path):
    p = planned(tmp_path)
    record = Runner(log_dir=tmp_path / "logs", worker="tests.workers.killed").run(p.cells[0].cell, "cmd")
    assert record.status == "error"  # a kill -9 nobody counted as an OOM kill is not called one
    assert "killed by SIGKILL" in record.reason and "by whom is not known" in record.reason


def test_a_failing_real_cell_is_an_error_record_and_the_suite_goes_on(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama", "hidden_size": "wide"}')
    planned(tmp_path)  # writes the suite file
    path = tmp_path / "s.yaml"
    suite = load_suite(path, model=f"local:{broken}")
    p = plan(suite, Host.detect(), source=str(path), model_override=f"local:{broken}")
    store = Store(tmp_path / "results")
    records = run_plan(p, store, Runner(log_dir=tmp_path / "logs"))
    assert [r.status for r in records] == ["error"] * 3
    assert all(r.log_tail and "Traceback" in r.log_tail for r in records)
    assert records[0].command == shlex.join(["harness", "run", str(path), "--only", "tiny-infer-fp32", "--model", f"local:{broken}",
                                             "--results", str(tmp_path / "results"), "--no-resume"])
    assert len(store.records("tiny")) == 3


def test_record_schema_and_store_round_trip(tmp_path):
    p = planned(tmp_path)
    runner = Runner(log_dir=tmp_path / "logs")
    record = runner.skipped(p.cells[0].model_copy(update={"skip": "because", "skipped_by": "exclude"}), "cmd")
    assert record.schema_version == SCHEMA_VERSION
    assert record.environment.packages["torch"] is not None
    assert record.environment.git_sha is None or len(record.environment.git_sha) == 40
    assert record.cell["id"] == "tiny-infer-fp32" and record.cell_key == p.cells[0].cell.key()
    store = Store(tmp_path / "results")
    store.append(record)
    store.append(record.model_copy(update={"record_id": "second"}))
    path = store.path_for("tiny")
    assert len(path.read_text().splitlines()) == 2
    with open(path, "a") as fh:  # an interrupted write leaves a torn last line
        fh.write('{"schema_version": 1, "record_id": "tor')
    with pytest.warns(UserWarning, match="torn last line"):
        back = store.records("tiny")
    assert [r.record_id for r in back] == [record.record_id, "second"]
    assert Record.model_validate(json.loads(path.read_text().splitlines()[0])) == record


def test_killed_run_resumes_without_redoing_finished_cells(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(INFER_ONLY)
    results = tmp_path / "results"
    store_file = results / "tiny.jsonl"
    cmd = [sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(results)]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (store_file.exists() and store_file.read_text().count("\n") >= 1):
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # kill the run and its current cell midway
    first.wait()
    done_first = [json.loads(line)["cell_id"] for line in store_file.read_text().splitlines()]
    assert 1 <= len(done_first) < 3
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "recorded earlier, not rerun" in second.stdout
    lines = [json.loads(line) for line in store_file.read_text().splitlines()]
    ids = [r["cell_id"] for r in lines]
    assert sorted(ids) == ["tiny-infer-bf16", "tiny-infer-fp32", "tiny-infer-nf4"]  # each cell exactly once
    assert ids[: len(done_first)] == done_first and all(r["status"] == "ok" for r in lines)
    third = subprocess.run(cmd + ["--no-resume", "--only", "tiny-infer-bf16"], cwd=REPO, capture_output=True, text=True,
                           timeout=600)
    assert third.returncode == 0
    assert [json.loads(x)["cell_id"] for x in store_file.read_text().splitlines()].count("tiny-infer-bf16") == 2
