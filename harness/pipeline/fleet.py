"""Spreading suites over a fleet: the GitHub Actions matrix (``harness matrix``) and Slurm or local job
arrays through submitit (``harness submit``). Neither schedules anything itself: GitHub runs the matrix,
Slurm (or submitit's local executor) runs the array; both run ``harness run`` of one shard's cells.

- :func:`matrix`: each runner of the runners file plans the suites as its host would (its GPU count,
  CUDA or not: a cell needing two GPUs is a skip on a one-GPU runner, a CUDA-only kernel on a CPU one);
  each cell goes to the first runner, in file order, that can run it (never a cell spanning several nodes:
  those nodes must start together, under Slurm); each runner's cells are split
  into shards of about ``budget_s`` by cost (:mod:`harness.pipeline.shard`), the whole capped at
  ``max_jobs`` (well under GitHub's 256). Every job names its cells, so no job recomputes a split.
- :func:`submit`: one task per shard, each ``harness run SUITES --only ...`` into its own store folder
  ``<folder>/shard-K``, then :func:`harness.results.merge.merge` into the results folder. On the local
  executor the tasks run one after another (one machine's cores are shared: side by side they would
  time each other); on Slurm as one array. The cells of a start spanning several nodes (``nnodes``) are
  a job of their own, one task per node started together (Slurm's ``--nodes``; on the local executor,
  that many tasks on this machine, each a "node" on 127.0.0.1), every task running the same cells. A task that fails is reported with the tail of its log; its
  cells stay unrecorded and a rerun (resume) runs only them.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from harness.base.errors import HarnessError
from harness.pipeline.shard import Unit, assign, units

if TYPE_CHECKING:
    from harness.base.host import Host
    from harness.spec.runners import Runners
    from harness.spec.suite import Suite

GITHUB_MAX_JOBS = 256
MULTINODE = ("spans {n} nodes, which must start together: a matrix job is one runner (run it under Slurm: "
             "srun -N {n} harness run SUITE --only {cell})")


class Job(BaseModel):
    """One entry of the matrix's ``include``."""

    machine: str
    runs_on: list[str]
    shard: str = Field(description="K/N within the machine")
    cells: list[str]
    predicted_min: float


class Matrix(BaseModel):
    include: list[Job]
    unplaced: dict[str, str] = Field(default_factory=dict, description="cell id -> why no runner can run it")


def matrix(suites: list[tuple[str, "Suite"]], runners: "Runners", like: "Host", *, budget_s: float = 3600.0,
           max_jobs: int = 64, durations: dict[str, dict[str, float]] | None = None,
           model_override: str | None = None) -> Matrix:
    """The jobs of a GitHub Actions matrix for ``suites`` over ``runners`` (see the module docstring);
    ``durations``: machine -> cell key -> measured seconds (:func:`harness.pipeline.shard.last_durations`)."""
    from harness.pipeline.planner import plan

    if not 1 <= max_jobs <= GITHUB_MAX_JOBS:
        raise HarnessError(f"--max-jobs {max_jobs}: GitHub Actions runs at most {GITHUB_MAX_JOBS} jobs of a matrix")
    placed: set[str] = set()
    why: dict[str, list[str]] = {}
    per_runner: list[tuple[Any, list[Unit]]] = []
    for runner in runners.runners:
        host = runner.host(like)
        plans = []
        for source, suite in suites:
            if runner.suites is not None and suite.name not in runner.suites:
                continue
            p = plan(suite, host, source=source, model_override=model_override)
            p.cells = [pc if pc.skip is not None or pc.cell.nnodes == 1 else  # its nodes must start together
                       pc.model_copy(update={"skip": MULTINODE.format(n=pc.cell.nnodes, cell=pc.cell.id)})
                       for pc in p.cells]
            for pc in p.cells:
                if pc.skip is not None:
                    why.setdefault(pc.cell.id, []).append(f"{runner.machine}: {pc.skip}")
            p.cells = [pc for pc in p.cells if pc.skip is None and pc.cell.id not in placed]
            placed |= {pc.cell.id for pc in p.cells}
            plans.append(p)
        per_runner.append((runner, units(plans, (durations or {}).get(runner.machine))))
    unplaced = {c: "; ".join(w) for c, w in why.items() if c not in placed}
    wanted = [max(1, math.ceil(sum(u.cost_s for u in us) / budget_s)) if us else 0 for _, us in per_runner]
    while sum(wanted) > max_jobs:  # too many jobs: take one from the runner with the most
        i = max(range(len(wanted)), key=lambda j: (wanted[j], -j))
        wanted[i] -= 1
    jobs: list[Job] = []
    for (runner, us), n in zip(per_runner, wanted):
        if not us:
            continue
        for s in assign(us, n):
            if s.cells:
                jobs.append(Job(machine=runner.machine, runs_on=runner.labels, shard=f"{s.index}/{n}", cells=s.cells,
                                predicted_min=round(s.cost_s / 60, 1)))
    return Matrix(include=jobs, unplaced=unplaced)


class Task(BaseModel):
    """One shard's ``harness run``, as a submitit task runs it; or, with ``nodes`` > 1, the cells of one
    start spanning that many nodes, run by one task per node at once."""

    shard: str
    args: list[str]
    results: str
    nodes: int = 1
    port: int | None = Field(default=None, description="local executor, nodes > 1: node 0's port on 127.0.0.1")


class TaskResult(BaseModel):
    shard: str
    results: str
    state: Literal["done", "cells failed", "failed"]
    detail: str = ""


def run_task(task: Task) -> int:
    """The body of one submitit task: ``harness run`` of the shard (each cell in its own process, as ever);
    its exit code (1: a cell failed, recorded; 2: bad input). A task of a multi-node job finds its node
    in Slurm's environment (:mod:`harness.base.nodes`); under the local executor, where the job's tasks
    are the "nodes" on this machine, its task rank is the node rank and node 0 is at 127.0.0.1:``port``."""
    import os

    env = dict(os.environ)
    if task.nodes > 1 and "SUBMITIT_LOCAL_GLOBALID" in env:
        env |= {"HARNESS_NODE_RANK": env["SUBMITIT_LOCAL_GLOBALID"], "HARNESS_RDZV_ENDPOINT": f"127.0.0.1:{task.port}",
                "HARNESS_RDZV_ID": f"harness-{env.get('SUBMITIT_LOCAL_JOB_ID', 'local')}"}
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", *task.args], check=False, env=env).returncode


def submit(tasks: list[Task], folder: Path, *, executor: Literal["slurm", "local"], timeout_min: int,
           partition: str | None = None, account: str | None = None, gpus_per_task: int = 0,
           cpus_per_task: int | None = None) -> list[TaskResult]:
    """Run ``tasks`` through submitit's ``executor`` (see the module docstring) and wait for all of them."""
    import submitit

    ex = submitit.AutoExecutor(folder=str(folder / "submitit" / "%j"), cluster=executor)
    params: dict[str, Any] = {"timeout_min": timeout_min, "name": "harness"}
    shards = [t for t in tasks if t.nodes == 1]
    spread = [t for t in tasks if t.nodes > 1]
    if executor == "slurm":
        params |= {"slurm_partition": partition, "slurm_account": account, "gpus_per_node": gpus_per_task or None,
                   "cpus_per_task": cpus_per_task, "tasks_per_node": 1, "nodes": 1}
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        jobs = list(zip(shards, ex.map_array(run_task, shards))) if shards else []
        for t in spread:  # its own job: one task on each of its nodes, started together by Slurm
            ex.update_parameters(nodes=t.nodes)
            jobs.append((t, ex.submit(run_task, t)))
        return [_outcome(t, j) for t, j in jobs]
    ex.update_parameters(**params)
    outcomes = [_outcome(t, ex.submit(run_task, t)) for t in shards]  # one at a time: each waits for the last
    for t in spread:  # the job's tasks are its nodes, side by side on this machine
        ex.update_parameters(tasks_per_node=t.nodes)
        outcomes.append(_outcome(t, ex.submit(run_task, t)))
    return outcomes


def _outcome(task: Task, job: Any) -> TaskResult:
    """Wait for ``job``; what became of it, with its log's tail when it failed."""
    try:
        codes = job.results()  # one per task: a multi-node job's nodes
        code = next((c for c in codes if c not in (0, None)), 0)
    except Exception as exc:  # noqa: BLE001 - submitit's FailedJobError / UncompletedJobError: report, go on
        tail = _tail(job)
        return TaskResult(shard=task.shard, results=task.results, state="failed",
                          detail=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n{tail}")
    if code == 0:
        return TaskResult(shard=task.shard, results=task.results, state="done")
    state: Literal["cells failed", "failed"] = "cells failed" if code == 1 else "failed"
    return TaskResult(shard=task.shard, results=task.results, state=state,
                      detail=f"harness run exited {code}\n{_tail(job)}")


def _tail(job: Any, lines: int = 20) -> str:
    """The last lines of the task's stderr and stdout (submitit's log files)."""
    out = []
    for read in (job.stderr, job.stdout):
        try:
            text = read() or ""
        except Exception:  # noqa: BLE001 - a log that was never written
            text = ""
        if text.strip():
            out += text.strip().splitlines()[-lines:]
    return "\n".join(out[-lines:])
