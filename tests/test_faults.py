"""Nothing left behind: faults injected into real runs (real processes, the tiny model).

- ``kill -9`` of ``harness run`` at 20 seeded random moments (starting up, mid-cell, just after a
  record was appended), then a rerun: every finished record is in the store exactly once, no process
  of those runs is left, none listens on a port, no temporary folder or half-built cache folder stays.
- SIGTERM to the pytest entry mid-cell: the cell's whole process tree is gone within the runner's
  grace period and pytest exits as interrupted.
- A worker killed by SIGKILL is ``oom`` only when an OOM-kill counter rose; otherwise ``error``.
- Each spawn has a log of its own (two runs never truncate each other's); the tail is read by seeking.
- The host-rate probe runs in a child with a time limit; one-step children die with their parent.
- The cache keeps to its size limit, least recently used first, never removing an entry in use;
  ``harness cache`` reports and prunes real folders.

Every process the tests start carries a marker in its environment (``HARNESS_FAULT_MARK``), so
leftovers are found by that marker, not by name.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from harness.base.child import ChildError, OomCounter, oom_counters, owned_tmp, run_child, sweep_tmp
from harness.base.host import Host
from harness.pipeline.planner import plan
from harness.base.logtail import tail as _tail
from harness.pipeline.runner import Runner
from harness.spec.suite import load_suite
from tests.conftest import REPO

MARK = "HARNESS_FAULT_MARK"
SUITE = """
name: faults
model: tiny
timeout_s: 120
precisions:
  - kind: fp32
  - kind: bf16
inference:
  seq_len: 32
  stride: 32
  max_windows: 1
  kl_windows: 1
  prompt_tokens: 8
  decode_tokens: 4
  repeats: 1
  warmup: 0
  text2sql: null
"""
CELLS = ["faults-infer-fp32", "faults-infer-bf16"]
GRACE_S = inspect.signature(Runner).parameters["grace_s"].default  # the pytest entry's runner's


def marked(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``mark`` (this user's; zombies count as gone)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get(MARK) == mark:
                found.append(p)
        except psutil.Error:
            continue
    return found


def wait_gone(mark: str, timeout_s: float) -> tuple[float, list[psutil.Process]]:
    """Seconds until no process carries ``mark`` (and those left after ``timeout_s``)."""
    start = time.monotonic()
    while True:
        left = marked(mark)
        if not left or time.monotonic() - start > timeout_s:
            return time.monotonic() - start, left
        time.sleep(0.05)


def wait_for(predicate, timeout_s: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``predicate`` until true (True), ``timeout_s`` passes or ``proc`` exits (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _env(tmp_path: Path, mark: str) -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return dict(os.environ, **{MARK: mark, "TMPDIR": str(tmp_path / "tmp")})


def _worker_running(mark: str) -> bool:
    for p in marked(mark):
        try:
            if "harness.pipeline.worker" in p.cmdline():
                return True
        except psutil.Error:
            continue
    return False


def test_kill_9_of_harness_run_at_20_random_moments_loses_nothing_and_leaves_nothing(tmp_path):
    suite, results, mark = tmp_path / "faults.yaml", tmp_path / "results", uuid.uuid4().hex
    suite.write_text(SUITE)
    env = _env(tmp_path, mark)
    cmd = [sys.executable, "-m", "harness.cli", "run", str(suite), "--results", str(results)]
    store = results / "faults.jsonl"
    rng = random.Random(15)
    # spread over the suite: 8 kills before the first record, one just after it, 8 while the second
    # cell is still to run, one just after the last record, 2 of runs with nothing left to do
    before, during = ["start"] * 4 + ["cell"] * 4, ["start"] * 4 + ["cell"] * 4
    rng.shuffle(before)
    rng.shuffle(during)
    moments = before + ["record"] + during + ["record"] + ["start"] * 2
    seen: set[int] = set()  # every pid that carried the mark (to look for their sockets afterwards)
    lines_before_kill = []
    for moment in moments:
        lines = store.read_bytes().count(b"\n") if store.exists() else 0
        run = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if moment == "start":  # starting up, planning, the worker starting
            wait_for(lambda: False, rng.uniform(0.05, 1.2), run)
        elif moment == "cell":  # while a worker runs a cell (importing, building, measuring)
            if wait_for(lambda: _worker_running(mark), 30, run):
                wait_for(lambda: False, rng.uniform(0.0, 1.2), run)
        else:  # just after a record was appended: between cells, or as the next one starts
            assert wait_for(lambda: store.exists() and store.read_bytes().count(b"\n") > lines, 180, run) or lines == 2
            wait_for(lambda: False, rng.uniform(0.0, 0.3), run)
        seen.update(p.pid for p in marked(mark))
        run.kill()
        run.wait()
        lines_before_kill.append(lines)
        took, left = wait_gone(mark, 15)
        assert not left, f"after kill -9 ({moment}): left running {[(p.pid, p.cmdline()) for p in left]}"
        assert took < 10, f"the worker took {took:.1f} s to follow its runner ({moment})"
    final = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    records = [json.loads(line) for line in store.read_text().splitlines()]
    # each finished cell exactly once (per code key: code edited meanwhile is rightly run again)
    pairs = [(r["code_key"], r["cell_id"]) for r in records]
    assert len(pairs) == len(set(pairs))
    assert sorted(cell for key, cell in pairs if key == records[-1]["code_key"]) == sorted(CELLS)
    assert all(r["status"] == "ok" for r in records)
    assert lines_before_kill == [0] * 9 + [1] * 9 + [2] * 2  # the kills fell where they were meant to
    assert not marked(mark)
    listening = [c for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in seen]
    assert not listening
    # torch's compile cache (an empty torchinductor_<user> made at import) is kept where torch puts it
    left = [p for p in (tmp_path / "tmp").iterdir() if not p.name.startswith("torchinductor_")]
    assert not left, f"temporary folders left behind: {left}"
    cache = Path(os.environ["HARNESS_CACHE_DIR"])
    assert not [p for p in cache.glob("*/*.tmp")], "half-built cache folders left behind"
    logs = sorted(p.name for p in (results / "logs").iterdir())
    assert len(logs) == len(set(logs)) and all(any(n.startswith(c + ".") for c in CELLS) for n in logs)
    for r in records:  # each record points at its own log, which holds that cell's run
        assert f"=== cell {r['cell_id']}" in Path(r["info"]["log"]).read_text(errors="replace")


def test_sigterm_to_the_pytest_entry_mid_cell_ends_the_cell_tree_within_the_grace_period(tmp_path):
    shutil.copy(REPO / "suites" / "test_suites.py", tmp_path / "test_suites.py")
    (tmp_path / "faults.yaml").write_text(SUITE.replace("  - kind: bf16\n", ""))
    mark = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "pytest", str(tmp_path), "-p", "harness.pytest_plugin", "--benchmark-only",
           f"--harness-results={tmp_path / 'results'}", "-p", "no:cacheprovider"]
    entry = subprocess.Popen(cmd, cwd=tmp_path, env=_env(tmp_path, mark), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: _worker_running(mark), 120, entry), entry.communicate()[0][-3000:]
        time.sleep(0.5)  # mid-cell: the worker imports, builds and measures
        tree = [p for p in marked(mark) if p.pid != entry.pid]
        assert tree
        entry.send_signal(signal.SIGTERM)
        start = time.monotonic()
        psutil.wait_procs(tree, timeout=GRACE_S + 1)
        took = time.monotonic() - start
        output = entry.communicate(timeout=60)[0]
    finally:
        if entry.poll() is None:
            entry.kill()
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert took <= GRACE_S + 1
    assert entry.returncode == 2, output[-3000:]  # pytest's "interrupted"
    assert "KeyboardInterrupt" in output and "SIGTERM" in output
    assert not [p for p in (tmp_path / "tmp").iterdir() if p.name.startswith("harness-")]
    assert not marked(mark)


def test_the_pytest_entry_turns_sigterm_and_sighup_into_one_interrupt():
    from harness.pytest_plugin import interrupt_on

    before = signal.getsignal(signal.SIGHUP)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with pytest.raises(KeyboardInterrupt, match=signal.Signals(sig).name):
            with interrupt_on(signal.SIGTERM, signal.SIGHUP):
                os.kill(os.getpid(), sig)
                time.sleep(5)  # interrupted at once
    with interrupt_on(signal.SIGTERM, signal.SIGHUP):
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal does not cut the clean-up short
        time.sleep(0.1)
    assert signal.getsignal(signal.SIGHUP) is before


def _planned_cell(tmp_path: Path):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE)
    return plan(load_suite(path), Host.detect(), source=str(path)).cells[0].cell


def test_sigkill_without_oom_evidence_is_an_error_and_with_it_oom(tmp_path, monkeypatch):
    cell = _planned_cell(tmp_path)
    assert oom_counters() and all(isinstance(c.read(), int) for c in oom_counters())  # this Linux host's counters
    record = Runner(log_dir=tmp_path / "logs", worker="tests.workers.killed").run(cell, "cmd")
    assert record.status == "error"
    assert "killed by SIGKILL" in record.reason and "by whom is not known" in record.reason
    # a counter that a worker raises before it is killed, as the kernel's OOM killer does
    counter = tmp_path / "memory.events"
    counter.write_text("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n")
    (tmp_path / "oomkilled.py").write_text(textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        if __name__ == "__main__":
            p = Path({str(counter)!r})
            p.write_text(p.read_text().replace("oom_kill 1", "oom_kill 2"))
            os.kill(os.getpid(), signal.SIGKILL)
    """))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    runner = Runner(log_dir=tmp_path / "logs", worker="oomkilled")
    runner.oom_counters = [OomCounter(counter, "a test cgroup")]
    record = runner.run(cell, "cmd")
    assert record.status == "oom"
    assert "the OOM killer of a test cgroup killed 1 process(es)" in record.reason and "oom_kill 1 -> 2" in record.reason
    runner.worker = "tests.workers.killed"  # the counter stays at 2: no evidence
    assert runner.run(cell, "cmd").status == "error"


def test_each_spawn_has_its_own_log_and_the_tail_is_read_from_the_end(tmp_path):
    cell = _planned_cell(tmp_path)
    runner = Runner(log_dir=tmp_path / "logs", worker="tests.workers.crash")
    first = runner.run(cell, "cmd")
    first_log = Path(first.info["log"])
    before = first_log.read_bytes()
    second = Runner(log_dir=tmp_path / "logs", worker="tests.workers.crash").run(cell, "cmd")
    assert Path(second.info["log"]) != first_log and first_log.read_bytes() == before  # not truncated
    assert first_log.name.startswith(cell.id + ".") and first_log.suffix == ".log"
    assert "about to crash" in before.decode() and "about to crash" in first.log_tail
    # a 4 GiB log (sparse: reading it whole would take gigabytes) ending in multi-byte characters
    big = tmp_path / "big.log"
    with open(big, "wb") as fh:
        fh.truncate(4 * 2**30)
        fh.seek(0, os.SEEK_END)
        fh.write(("█é" * 3000 + "\nthe end\n").encode())
    start = time.monotonic()
    tail = _tail(big)
    assert time.monotonic() - start < 1.0
    assert len(tail) == 4000 and tail.endswith("█é\nthe end\n") and "\ufffd" not in tail
    big.unlink()
    cut = tmp_path / "cut.log"  # 3-byte characters: the window of 4 bytes a character starts inside one
    cut.write_bytes("█".encode() * 8000)
    assert _tail(cut, 10) == "█" * 10 and _tail(cut) == "█" * 4000


def test_a_worker_whose_runner_is_already_gone_leaves_at_once_and_removes_its_folder(tmp_path):
    with owned_tmp("cell") as folder:
        (folder / "cells.json").write_text("[]")
        (folder / "results").mkdir()
        env = dict(os.environ, HARNESS_WORKER_PARENT="1")  # not our pid: the runner died before the worker started
        res = subprocess.run([sys.executable, "-m", "harness.pipeline.worker", str(folder / "cells.json"),
                              str(folder / "results")], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 1 and "the runner is gone" in res.stderr
        assert not folder.exists()


def test_stale_temporary_folders_of_dead_owners_are_swept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    started = int(psutil.Process().create_time())
    stale = tmp_path / f"harness-cell-{dead.pid}-{started}-abc"
    reused = tmp_path / f"harness-cell-{os.getpid()}-{started - 100}-abc"  # our pid, another start: a reused pid
    alive = tmp_path / f"harness-cell-{os.getpid()}-{started}-abc"
    other = tmp_path / "harness-something-else"
    for d in (stale, reused, alive, other):
        (d / "tmp").mkdir(parents=True)
    assert sorted(sweep_tmp(tmp_path)) == sorted([stale, reused])
    assert alive.exists() and other.exists() and not stale.exists() and not reused.exists()


def raise_memory_error(payload: dict) -> dict:
    raise MemoryError("simulated allocation failure")


def sleep_long(payload: dict) -> dict:
    time.sleep(60)
    return {}


def test_one_step_children_report_oom_and_keep_to_their_time_limit(tmp_path):
    from harness.base.protocol import is_oom

    with pytest.raises(ChildError) as failed:
        run_child("tests.test_faults:raise_memory_error", {})
    assert failed.value.oom is True and is_oom(failed.value)
    start = time.monotonic()
    with pytest.raises(ChildError, match="gave no answer within 2 s"):
        run_child("tests.test_faults:sleep_long", {}, timeout_s=2)
    assert time.monotonic() - start < 10


def test_the_host_rate_probe_runs_in_a_child_not_in_the_orchestrator(tmp_path):
    code = ("import sys; from harness.pipeline.runner import Runner; r = Runner(log_dir=sys.argv[1]);"
            "rates = r.host_rates({'float32'}); import json;"
            "print(json.dumps({'rates': rates, 'torch': 'torch' in sys.modules}))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "logs")], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["torch"] is False
    assert out["rates"]["bandwidth"] > 1e8 and out["rates"]["flops"]["float32"] > 1e8


# --- the cache: least recently used first, under a size limit -------------------------------------------

BUILD = """
import sys, time
from pathlib import Path
from harness.base.cachedir import build_once
from harness.base.paths import cache_dir
final = cache_dir() / "reference" / sys.argv[1]
build_once(final, lambda tmp: (tmp / "data.bin").write_bytes(b"x" * 1000))
if len(sys.argv) > 2:  # keep using it
    print("holding", flush=True)
    time.sleep(60)
"""


def test_cache_evicts_least_recently_used_entries_not_in_use_and_harness_cache_reports(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(root))
    monkeypatch.setenv("HARNESS_CACHE_MAX_BYTES", "3000")

    def build(name: str, *hold: str) -> None:
        subprocess.run([sys.executable, "-c", BUILD, name, *hold], check=True, timeout=60)

    for name in ("a", "b", "c"):
        build(name)
    base = time.time() - 3600
    for i, name in enumerate("abc"):  # a, b, c used an hour ago, in this order
        os.utime(root / "reference" / name, (base + i, base + i))
    build("a")  # used again: now the most recent
    (root / "reference" / "crashed.tmp").mkdir()  # what a crashed build leaves
    (root / "reference" / "crashed.tmp" / "part").write_bytes(b"y" * 500)
    holder = subprocess.Popen([sys.executable, "-c", BUILD, "b", "hold"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"  # b is in use (and touched: newest)
        os.utime(root / "reference" / "b", (base, base))  # ... though the least recently used
        build("d")  # 4000 bytes > 3000: c goes (b, older, is in use); the crashed build goes too
        names = sorted(p.name for p in (root / "reference").iterdir() if p.is_dir())
        assert names == ["a", "b", "d"]
        res = subprocess.run([sys.executable, "-m", "harness.cli", "cache"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        rows = {line.split("│")[1].strip(): line for line in res.stdout.splitlines() if line.count("│") > 4}
        assert set(rows) == {"reference/a", "reference/b", "reference/d"}
        assert "1000 B" in rows["reference/a"] and "in use" in rows["reference/b"] and "ready" in rows["reference/d"]
        assert "3 entries, 2.9 KiB (3000 bytes) of a limit of 2.9 KiB (3000 bytes, HARNESS_CACHE_MAX_BYTES)" in res.stdout
        res = subprocess.run([sys.executable, "-m", "harness.cli", "cache", "--prune", "--max-bytes", "1k"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        removed = [line.split()[1] for line in res.stdout.splitlines() if line.startswith("removed ")]
        assert removed == ["reference/a", "reference/d"]  # oldest first, down to the limit; b is in use
        assert "1 entries, 1000 B (1000 bytes) of a limit of 1.0 KiB (1024 bytes, --max-bytes)" in res.stdout
        bad = subprocess.run([sys.executable, "-m", "harness.cli", "cache", "--max-bytes", "lots"],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "--max-bytes: 'lots' is not a size" in bad.stderr
    finally:
        holder.kill()
        holder.wait()
    build("e")  # b and e: 2000 bytes, within 3000
    monkeypatch.setenv("HARNESS_CACHE_MAX_BYTES", "1000")
    build("f")  # b's holder is gone: b goes now, then e
    assert sorted(p.name for p in (root / "reference").iterdir() if p.is_dir()) == ["f"]
