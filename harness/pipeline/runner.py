"""The runner: each cell in its own subprocess (its own process group) with a time limit.

A crash, an out-of-memory kill or a hang becomes a record with status ``error``, ``oom`` or
``timeout`` carrying the tail of the cell's log, and the suite goes on. Whatever happens, the
cell's whole process group (engine workers, servers) is killed before the next cell starts.

Each record carries the validity the worker judged (:mod:`harness.measure.validity`); a strict runner
(or a suite whose ``validity.strict`` is set) records an invalid cell as status ``invalid``, and
:func:`run_plan` runs it again after a pause (``validity.retries`` times), keeping every record.
The worker gets no more threads than the cores it may use: ``OMP_NUM_THREADS`` and vLLM's CPU
thread binding (``VLLM_CPU_OMP_THREADS_BIND``) are set to this process' affinity unless already set.

Nothing is left behind. The worker dies with the runner (it is told the runner's pid and asks for
``PR_SET_PDEATHSIG``, :func:`harness.pipeline.worker.guard_parent`). Each cell gets one temporary
folder, ``harness-cell-<pid>-<start>-*`` (:func:`harness.base.child.owned_tmp`), which is also the
worker's ``TMPDIR``, so every temporary file of the cell's processes lies in it; it is removed when
the cell ends (result, crash, timeout, an exception or SIGTERM in the runner). If the runner itself
is SIGKILLed, the dying worker removes it, and whatever still remains (the runner killed before the
worker started) is swept by the next runner (:func:`harness.base.child.sweep_tmp`: owner pid gone).
A second interrupt while a cell's group is being killed only skips the rest of the grace period.

Logs: each spawn writes a log of its own, ``<log_dir>/<first cell id>.<UTC time>-<random>.log``
(created exclusively: two runs on one results folder never truncate each other's logs, and the
``info["log"]`` of older records stays right). A failure's ``log_tail`` is the last
:data:`harness.base.logtail.LOG_TAIL_CHARS` characters, read from the end of the file.

A worker killed by SIGKILL without a result is ``oom`` only when an OOM-kill counter
(:func:`harness.base.child.oom_counters`) rose while it ran; otherwise it is an ``error`` saying
that it was killed by SIGKILL and that who killed it is not known (an ``oom`` is final and never
retried; an ``error`` is). A worker that reported an allocator OOM itself keeps its ``oom``.

The host's rates for serving cells are probed in a child process under :data:`RATES_TIMEOUT_S`
(:func:`harness.measure.rates.probe`), never with torch in this process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness.base.child import ChildError, oom_counters, oom_evidence, owned_tmp, run_child, sweep_tmp, tmp_env
from harness.base.cpus import cpu_list
from harness.base.errors import HarnessError
from harness.base.logtail import tail as log_tail
from harness.pipeline.planner import Plan, PlannedCell
from harness.results.environment import capture, code_key
from harness.results.records import CellResult, Environment, Record, Validity
from harness.results.store import Store
from harness.spec.cell import Cell

RATES_TIMEOUT_S = 300.0  # the host-rate probe (a 256 MiB read, a 2048^3 matmul per dtype) in its child


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


def _stop_group(pgid: int, grace_s: float) -> None:
    """:func:`_kill_group` that an interrupt cannot cut short: a ``KeyboardInterrupt`` (a second
    Ctrl-C, CI's second SIGTERM) during it skips the rest of the grace period (SIGKILL at once) and
    is raised again once the group is gone."""
    interrupted: KeyboardInterrupt | None = None
    while True:
        try:
            _kill_group(pgid, 0.0 if interrupted else grace_s)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


def _stop_worker(proc: subprocess.Popen, grace_s: float) -> None:
    """Kill the worker's process group (:func:`_stop_group`), and the worker's descendants that left
    the group (found while the worker still lives, so none is mistaken for another process)."""
    import psutil

    strays = []
    if proc.poll() is None:
        try:
            strays = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            pass
    _stop_group(proc.pid, grace_s)
    for p in strays:
        try:
            p.kill()  # psutil checks that the pid is still the same process
        except psutil.Error:
            pass


def thread_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the worker's threads held to this process' cores (values already set are kept)."""
    cpus = sorted(os.sched_getaffinity(0))
    return {"OMP_NUM_THREADS": str(len(cpus)), "VLLM_CPU_OMP_THREADS_BIND": cpu_list(cpus)} | env


def _log_path(log_dir: Path, cell_id: str) -> Path:
    """A new, unique log file for a spawn whose first cell is ``cell_id`` (created empty, exclusively)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    while True:
        path = log_dir / f"{cell_id}.{stamp}-{uuid.uuid4().hex[:8]}.log"
        try:
            with open(path, "xb"):
                return path
        except FileExistsError:
            continue


class Runner:
    """Runs cells in subprocesses. ``worker`` is the module run as ``python -m <worker>``.

    Creating one sweeps the temporary folders of dead runs (:func:`harness.base.child.sweep_tmp`).
    ``oom_counters`` are the OOM-kill counters read around each spawn (default: this process' memory
    cgroup's, else the machine's, :func:`harness.base.child.oom_counters`)."""

    def __init__(self, *, log_dir: str | Path = "results/logs", worker: str = "harness.pipeline.worker",
                 environment: Environment | None = None, grace_s: float = 5.0, strict: bool = False,
                 machine: str | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.worker = worker
        self.environment = environment or capture(machine=machine)  # machine: --machine, else $HARNESS_MACHINE
        self.code_key = code_key()
        self.grace_s = grace_s
        self.strict = strict
        self.oom_counters = oom_counters()
        self._rates: dict = {}
        sweep_tmp()

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
        return self.run_group([cell], [command])[0]

    def run_group(self, cells: list[Cell], commands: list[str]) -> list[Record]:
        """Run ``cells`` one after another in one fresh process (a group sharing an engine start) and
        return one record per cell, in order. The time limit is the sum of the cells' limits. A
        cell's result is kept as soon as it is written, so a crash or timeout later in the group
        loses nothing measured: the cell running then gets the failure, those after it an error
        saying they never ran."""
        import json

        log_path = _log_path(self.log_dir, cells[0].id)
        started = datetime.now(timezone.utc)
        t0 = time.monotonic()
        with owned_tmp("cell") as tmp:
            cells_path, out_dir = tmp / "cells.json", tmp / "results"
            out_dir.mkdir()
            (tmp / "tmp").mkdir()
            cells_path.write_text(json.dumps([c.model_dump(mode="json") for c in cells]))
            status, reason = self._spawn(cells, cells_path, out_dir, log_path)
            return self._collect(cells, commands, out_dir, log_path, started, time.monotonic() - t0, status, reason)

    def _spawn(self, cells: list[Cell], cells_path: Path, out_dir: Path, log_path: Path) -> tuple[str, str]:
        """Run the worker on ``cells`` in its own process group under the group's time limit; returns the
        (status, reason) a cell left without a result gets. The whole group is killed afterwards."""
        import json

        from harness.pipeline.worker import PARENT_ENV

        limit = sum(c.timeout_s for c in cells)
        env = thread_env(dict(os.environ, PYTHONUNBUFFERED="1"))
        serving = {c.precision.dtype for c in cells if c.scenario == "serve" and c.device == "cpu"}
        if serving:
            from harness.measure.rates import RATES_ENV

            env[RATES_ENV] = json.dumps(self.host_rates(serving))
        env |= tmp_env(cells_path.parent / "tmp") | {PARENT_ENV: str(os.getpid())}
        before = [c.read() for c in self.oom_counters]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", self.worker, str(cells_path), str(out_dir)],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                _stop_worker(proc, self.grace_s)
                proc.wait()
                return "timeout", f"no result after {limit:g} s; process group killed"
            except BaseException:  # Ctrl-C, SIGTERM or the test runner stopping: leave nothing behind
                _stop_worker(proc, self.grace_s)
                proc.wait()
                raise
            finally:
                _stop_group(proc.pid, self.grace_s)  # engine workers and servers the cells left running
        if rc == -signal.SIGKILL:
            why = oom_evidence(self.oom_counters, before)
            if why:
                return "oom", f"killed by SIGKILL without a result: {why}"
            where = ", ".join(c.scope for c in self.oom_counters) or "none readable on this host"
            return "error", ("killed by SIGKILL without a result, by whom is not known: no OOM kill was counted "
                             f"while it ran (OOM-kill counters: {where})")
        if rc < 0:
            return "error", f"crashed: killed by signal {signal.Signals(-rc).name}"
        return "error", f"exited with code {rc} without a result"

    def _collect(self, cells: list[Cell], commands: list[str], out_dir: Path, log_path: Path, started: datetime,
                 duration: float, status: str, reason: str) -> list[Record]:
        """One record per cell: its result file if it wrote one, else the group's failure for the cell
        that was running and "not run" for those after it."""
        import json

        records: list[Record] = []
        failed_at: str | None = None
        group_info = {"group": [c.id for c in cells]} if len(cells) > 1 else {}
        for i, (cell, command) in enumerate(zip(cells, commands)):
            result_path = out_dir / f"{i}.json"
            info = group_info | {"log": str(log_path)}
            if result_path.is_file():
                data = json.loads(result_path.read_text())
                cell_status, cell_reason = data.pop("status"), data.pop("reason", None)
                cell_s = data.pop("duration_s", duration)
                validity = Validity.model_validate(data.pop("validity")) if data.get("validity") else None
                result = CellResult.model_validate(data)  # a failure may carry what it measured before failing
                if cell_status == "ok" and validity is not None and not validity.valid and (self.strict or cell.validity.strict):
                    cell_status, cell_reason = "invalid", "; ".join(validity.reasons)
                tail = None if cell_status in ("ok", "invalid") else log_tail(log_path)
                records.append(self._record(cell, command, started, cell_s, status=cell_status, reason=cell_reason,
                                            log_tail=tail, metrics=result.metrics, info=result.info | info,
                                            validity=validity))
            elif failed_at is None:
                failed_at = cell.id
                records.append(self._record(cell, command, started, duration, status=status, reason=reason,
                                            log_tail=log_tail(log_path), info=info))
            else:
                records.append(self._record(cell, command, started, 0.0, status="error",
                                            reason=f"not run: its group's process ended during {failed_at} ({status})",
                                            info=info))
        return records

    def host_rates(self, dtypes: set[str]) -> dict:
        """This CPU's read bandwidth and matmul FLOP/s per dtype (for serving cells' decode bound),
        each measured once per runner, in a child process (:func:`harness.measure.rates.probe`) with the
        cells' thread count, under :data:`RATES_TIMEOUT_S`. A probe that fails or runs out of time is
        a warning; the serving cell then measures what is missing in its own process."""
        missing = sorted(dtypes - set(self._rates.get("flops", {})))
        if "bandwidth" in self._rates and not missing:
            return self._rates
        try:
            answer = run_child("harness.measure.rates:probe",
                               {"bandwidth": "bandwidth" not in self._rates, "dtypes": missing},
                               env=thread_env(dict(os.environ)), timeout_s=RATES_TIMEOUT_S)
        except ChildError as exc:
            warnings.warn(f"the host-rate probe failed ({exc}); serving cells measure their rates themselves",
                          stacklevel=2)
            return self._rates
        if "bandwidth" in answer:
            self._rates["bandwidth"] = answer["bandwidth"]
        self._rates.setdefault("flops", {}).update(answer.get("flops", {}))
        return self._rates


def run_plan(plan: Plan, store: Store, runner: Runner, *, resume: bool = True, only: set[str] | None = None,
             on_start: Callable[[PlannedCell], None] | None = None,
             on_record: Callable[[Record, bool], None] | None = None) -> list[Record]:
    """Run every cell of ``plan`` (skips recorded as such), appending each record as it finishes.

    With ``resume``, a cell already recorded as final for the same configuration and code is not run
    again; its stored record is returned instead (``on_record(record, reused=True)``). A cell recorded
    ``invalid`` runs again after its suite's ``validity.retry_pause_s``, up to ``validity.retries``
    times (not a multi-node cell: its other nodes would not run it again); every attempt's record is
    kept (the latest counts). A multi-node cell's record made on a node > 0 is returned, not stored.
    """
    done = store.finished(plan.suite, runner.code_key, runner.environment.machine) if resume else {}
    records = []
    ran: set[str] = set()
    for planned in plan.cells:
        cell = planned.cell
        if (only is not None and cell.id not in only) or cell.id in ran:
            continue
        previous = done.get(cell.key())
        if previous is not None and (planned.skip is None) == (previous.status != "skipped"):
            records.append(previous)
            if on_record:
                on_record(previous, True)
            continue
        if planned.skip:
            group = [planned]
        else:  # this cell and the rest of its group still to run, in one process
            group = [p for p in plan.runnable if p.cell.id == cell.id or (
                cell.group is not None and p.cell.group == cell.group and p.cell.id not in ran
                and (only is None or p.cell.id in only) and done.get(p.cell.key()) is None)]
        for member in group:
            if on_start:
                on_start(member)
        cells = [p.cell for p in group]
        commands = [plan.command(c, results=store.root) for c in cells]
        results = [runner.skipped(planned, commands[0])] if planned.skip else runner.run_group(cells, commands)
        for attempt in range(1 + max((c.validity.retries for c in cells), default=0)):
            for record in results:
                ran.add(record.cell_id)
                if not _elsewhere(record):
                    _store(store, record)
                records.append(record)
                if on_record:
                    on_record(record, False)
            again = [(c, cmd) for c, cmd, r in zip(cells, commands, results)  # every node would have to agree
                     if r.status == "invalid" and attempt < c.validity.retries and not _multinode(r)]
            if not again:
                break
            time.sleep(max(c.validity.retry_pause_s for c, _ in again))  # let whatever contended pass
            for c, _ in again:
                if on_start:
                    on_start(next(p for p in group if p.cell.id == c.id))
            cells, commands = [c for c, _ in again], [cmd for _, cmd in again]
            results = runner.run_group(cells, commands)
    return records


def _elsewhere(record: Record) -> bool:
    """A multi-node cell's record made on a node other than 0: node 0's record holds the measurements
    (every rank's figures), so this one is shown but not stored."""
    return record.nodes[0] > 0


def _multinode(record: Record) -> bool:
    """A record of a cell spread over several nodes: never retried alone (its nodes run it together)."""
    return record.nodes[1] > 1


def _store(store: Store, record: Record) -> None:
    """Append ``record``; if the store refuses it (a full disk), append the cell's failure without its
    measurements, which may still fit, and raise the store's HarnessError either way: the run stops
    (every later append would fail too) and every earlier record is kept."""
    try:
        store.append(record)
    except HarnessError as exc:
        small = record.model_copy(update={"status": "error", "reason": f"record not stored: {exc}", "metrics": {},
                                          "info": {}, "log_tail": None, "validity": None})
        store.append(small)  # raises HarnessError if even this does not fit
        raise
