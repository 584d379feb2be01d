"""The runner: each cell in its own subprocess (its own process group) with a time limit.

A crash, an out-of-memory kill or a hang becomes a record with status ``error``, ``oom`` or
``timeout`` carrying the tail of the cell's log, and the suite goes on. Whatever happens, the
cell's whole process group (engine workers, servers) is killed before the next cell starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness.cell import Cell
from harness.environment import capture, code_key
from harness.planner import Plan, PlannedCell
from harness.records import CellResult, Environment, Record
from harness.store import Store

LOG_TAIL_CHARS = 4000


def _kill_group(pgid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _tail(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-LOG_TAIL_CHARS:].decode("utf-8", errors="replace")


class Runner:
    """Runs cells in subprocesses. ``worker`` is the module run as ``python -m <worker>``."""

    def __init__(self, *, log_dir: str | Path = "results/logs", worker: str = "harness.worker",
                 environment: Environment | None = None, grace_s: float = 5.0) -> None:
        self.log_dir = Path(log_dir)
        self.worker = worker
        self.environment = environment or capture()
        self.code_key = code_key()
        self.grace_s = grace_s

    def _record(self, cell: Cell, command: str, started: datetime, duration: float, **fields) -> Record:
        return Record(record_id=uuid.uuid4().hex, suite=cell.suite, cell_id=cell.id, cell_key=cell.key(),
                      code_key=self.code_key, cell=cell.model_dump(mode="json"), environment=self.environment,
                      seed=cell.seed, started_at=started, duration_s=duration, command=command, **fields)

    def skipped(self, planned: PlannedCell, command: str) -> Record:
        """The record of a cell the planner skipped."""
        return self._record(planned.cell, command, datetime.now(timezone.utc), 0.0, status="skipped",
                            reason=planned.skip, info={"skipped_by": planned.skipped_by})

    def run(self, cell: Cell, command: str) -> Record:
        """Run ``cell`` in a fresh process and return its record (never raises for the cell's failures)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{cell.id}.log"
        started = datetime.now(timezone.utc)
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="harness-cell-") as tmp:
            cell_path, result_path = Path(tmp) / "cell.json", Path(tmp) / "result.json"
            cell_path.write_text(cell.model_dump_json())
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            with open(log_path, "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", self.worker, str(cell_path), str(result_path)],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=env)
                status, reason = None, None
                try:
                    rc = proc.wait(timeout=cell.timeout_s)
                except subprocess.TimeoutExpired:
                    _kill_group(proc.pid, self.grace_s)
                    proc.wait()
                    rc, status = None, "timeout"
                    reason = f"no result after {cell.timeout_s:g} s; process group killed"
                except BaseException:  # Ctrl-C or the test runner stopping: leave nothing behind
                    _kill_group(proc.pid, self.grace_s)
                    proc.wait()
                    raise
                finally:
                    _kill_group(proc.pid, self.grace_s)  # engine workers the cell left running
            duration = time.monotonic() - t0
            if status is None and result_path.is_file():
                import json

                data = json.loads(result_path.read_text())
                status, reason = data.pop("status"), data.pop("reason", None)
                result = CellResult.model_validate(data)  # a failure may carry what it measured before failing
                tail = None if status == "ok" else _tail(log_path)
                return self._record(cell, command, started, duration, status=status, reason=reason, log_tail=tail,
                                    metrics=result.metrics, info=result.info | {"log": str(log_path)})
            if status is None:
                if rc is not None and rc == -signal.SIGKILL:
                    status, reason = "oom", "killed by SIGKILL without a result (most likely the out-of-memory killer)"
                elif rc is not None and rc < 0:
                    status, reason = "error", f"crashed: killed by signal {signal.Signals(-rc).name}"
                else:
                    status, reason = "error", f"exited with code {rc} without a result"
            return self._record(cell, command, started, duration, status=status, reason=reason,
                                log_tail=_tail(log_path), info={"log": str(log_path)})


def run_plan(plan: Plan, store: Store, runner: Runner, *, resume: bool = True, only: set[str] | None = None,
             on_start: Callable[[PlannedCell], None] | None = None,
             on_record: Callable[[Record, bool], None] | None = None) -> list[Record]:
    """Run every cell of ``plan`` (skips recorded as such), appending each record as it finishes.

    With ``resume``, a cell already recorded as final for the same configuration and code is not run
    again; its stored record is returned instead (``on_record(record, reused=True)``).
    """
    done = store.finished(plan.suite, runner.code_key) if resume else {}
    records = []
    for planned in plan.cells:
        cell = planned.cell
        if only is not None and cell.id not in only:
            continue
        previous = done.get(cell.key())
        if previous is not None and (planned.skip is None) == (previous.status != "skipped"):
            records.append(previous)
            if on_record:
                on_record(previous, True)
            continue
        if on_start:
            on_start(planned)
        command = plan.command(cell)
        record = runner.skipped(planned, command) if planned.skip else runner.run(cell, command)
        store.append(record)
        records.append(record)
        if on_record:
            on_record(record, False)
    return records
