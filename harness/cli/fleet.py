"""``harness merge`` (the union of stores), ``harness matrix`` (a GitHub Actions matrix over a fleet) and
``harness submit`` (a job array through submitit, Slurm or local): running suites past one machine."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harness.cli import DurationsOpt, MachineOpt, ModelOpt, _load, _shards, app, err, out


@app.command()
def merge(out_dir: Path = typer.Argument(..., metavar="OUT", help="Store folder to merge into (made if absent)."),
          inputs: list[Path] = typer.Argument(..., metavar="IN...", help="Store folders (searched below too) or .jsonl files."),
          ) -> None:
    """Merge record stores: every record once (by record id), one file per suite under OUT; lines that are
    not records are reported (file:line, why) and skipped. Exit 0, 2 on a missing input."""
    from harness.base.errors import HarnessError
    from harness.results.merge import merge as do_merge

    try:
        summary = do_merge(out_dir, inputs)
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    table = Table(title=f"merged into {out_dir}", title_justify="left")
    for col in ("from", "records", "new", "duplicates", "machines"):
        table.add_column(col, overflow="fold")
    for s in summary.sources:
        table.add_row(s.path, str(s.records), str(s.new), str(s.duplicates),
                      ", ".join(f"{m} ({n})" for m, n in sorted(s.machines.items())))
    out.print(table)
    for line in summary.skipped:
        err.print(f"[yellow]skipped[/yellow] {line}", highlight=False, markup=False, soft_wrap=True)
    for line in summary.conflicts:
        err.print(f"[yellow]conflict[/yellow] {line}", highlight=False, markup=False, soft_wrap=True)
    written = ", ".join(f"{suite} +{n}" for suite, n in sorted(summary.written.items())) or "nothing new"
    out.print(f"written: {written}; {len(summary.skipped)} line(s) skipped, {len(summary.conflicts)} id conflict(s)",
              highlight=False)


@app.command()
def matrix(paths: list[Path] = typer.Argument(..., help="Suite YAML files."),
           runners: Path = typer.Option(..., "--runners", help="The fleet's runners file (machine, labels, gpus, ...)."),
           model: Optional[str] = ModelOpt,
           budget_min: float = typer.Option(60.0, "--budget-min", min=1, help="Predicted minutes per job (shards are sized to it)."),
           max_jobs: int = typer.Option(64, "--max-jobs", min=1, help="Most jobs in all (GitHub allows 256 per matrix)."),
           durations_from: Optional[Path] = DurationsOpt,
           ) -> None:
    """Print the JSON of a GitHub Actions `strategy.matrix` (use it with fromJson): each cell on a runner
    that can run it, each runner's cells in shards of about --budget-min. Cells no runner can run are
    listed on stderr. Exit 0, 2 on bad input."""
    from harness.base.errors import HarnessError
    from harness.base.host import Host
    from harness.pipeline.fleet import matrix as make_matrix
    from harness.pipeline.shard import last_durations
    from harness.results.store import read_records
    from harness.spec.runners import load_runners
    from harness.spec.source import SuiteError

    suites, failed = _load(paths, model)
    if failed:
        raise typer.Exit(2)
    try:
        fleet = load_runners(runners)
        records = read_records(durations_from) if durations_from else []
        durations = {r.machine: last_durations(records, r.machine) for r in fleet.runners}
        result = make_matrix([(str(p), s) for p, s in suites], fleet, Host.detect(), budget_s=budget_min * 60,
                             max_jobs=max_jobs, durations=durations, model_override=model)
    except SuiteError as exc:
        for line in exc.problems:
            err.print(f"[red]error[/red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    for cell, why in sorted(result.unplaced.items()):
        err.print(f"[yellow]no runner[/yellow] {cell}: {why}", highlight=False, markup=False, soft_wrap=True)
    typer.echo(json.dumps({"include": [j.model_dump() for j in result.include]}, separators=(",", ":")))


def _spread(plans: list) -> dict[str, tuple[int, list[str]]]:
    """Runnable cells spanning several nodes -> (nodes, the cells of their start): every node runs them all."""
    out: dict[str, tuple[int, list[str]]] = {}
    for p in plans:
        for pc in p.cells:
            if pc.skip is None and pc.cell.nnodes > 1:
                start = [q.cell.id for q in p.cells if q.skip is None and (
                    q.cell.id == pc.cell.id or (pc.cell.group is not None and q.cell.group == pc.cell.group))]
                out[pc.cell.id] = (pc.cell.nnodes, start)
    return out


@app.command()
def submit(paths: list[Path] = typer.Argument(..., help="Suite YAML files."), model: Optional[str] = ModelOpt,
           executor: str = typer.Option("slurm", "--executor", help="slurm (an sbatch job array) or local (this machine, one task after another)."),
           shards: int = typer.Option(2, "--shards", min=1, help="Tasks: the cells split by cost, engine starts never split."),
           results: Path = typer.Option(Path("results"), "--results", help="Store the shards are merged into."),
           folder: Optional[Path] = typer.Option(None, "--folder", help="Shard stores and submitit's logs (default: RESULTS/submit)."),
           machine: Optional[str] = MachineOpt, durations_from: Optional[Path] = DurationsOpt,
           partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition."),
           account: Optional[str] = typer.Option(None, "--account", help="Slurm account."),
           time_min: Optional[int] = typer.Option(None, "--time-min", min=1, help="Time limit per task in minutes (default: "
                                                                                 "twice its predicted time, at least 30)."),
           gpus_per_task: int = typer.Option(0, "--gpus-per-task", min=0, help="GPUs per task (Slurm; a job spanning several nodes: per node)."),
           cpus_per_task: Optional[int] = typer.Option(None, "--cpus-per-task", min=1, help="CPUs per task (Slurm)."),
           ) -> None:
    """Run the suites as a job array through submitit: one task per shard (`harness run` of its cells
    into RESULTS/submit/shard-K), and one job per engine start or cell spanning several nodes (a task on each
    node, into RESULTS/submit/nodes-K), wait, then merge every store into RESULTS. A failed task is reported with
    its log's tail; rerunning the same command runs only what was not recorded. Exit 0 when every task and
    cell finished, 1 when a cell or task failed, 2 on bad input."""
    from harness.base.errors import HarnessError
    from harness.base.host import Host
    from harness.base.nodes import free_port
    from harness.pipeline.fleet import Task, submit as run_tasks
    from harness.pipeline.planner import plan as make_plan
    from harness.results.merge import merge as do_merge

    if executor not in ("slurm", "local"):
        err.print(f"[red]error[/red] --executor {executor!r}: slurm or local", highlight=False)
        raise typer.Exit(2)
    suites, failed = _load(paths, model)
    if failed:
        raise typer.Exit(2)
    host = Host.detect()
    folder = folder or results / "submit"
    try:
        plans = [make_plan(suite, host, source=str(path), model_override=model) for path, suite in suites]
        spread = _spread(plans)  # cells spanning several nodes: a job of their own each, not a shard
        split = _shards([p.model_copy(update={"cells": [c for c in p.cells if c.cell.id not in spread]}) for p in plans],
                        shards, durations_from, machine, host)
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    common = [*map(str, paths), *(["--model", model] if model else []), *(["--machine", machine] if machine else [])]
    tasks = []
    for s in split:
        if not s.cells:
            continue
        store = folder / f"shard-{s.index}"
        tasks.append(Task(shard=f"{s.index}/{shards}", results=str(store),
                          args=[*common, "--results", str(store), *[a for c in s.cells for a in ("--only", c)]]))
    for i, (n, cells) in enumerate(sorted({(n, tuple(c)) for n, c in spread.values()}), 1):
        store = folder / f"nodes-{i}"
        tasks.append(Task(shard=f"{cells[0]} on {n} nodes", results=str(store), nodes=n, port=free_port(),
                          args=[*common, "--results", str(store), *[a for c in cells for a in ("--only", c)]]))
    limit = time_min or max(30, math.ceil(2 * max([s.cost_s for s in split] + [0.0]) / 60))
    out.print(f"{len(tasks)} task(s) through submitit's {executor} executor, {limit} min each at most", highlight=False)
    outcomes = run_tasks(tasks, folder, executor=executor, timeout_min=limit, partition=partition,  # type: ignore[arg-type]
                         account=account, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task)
    for o in outcomes:
        colour = {"done": "green", "cells failed": "yellow", "failed": "red"}[o.state]
        out.print(f"[{colour}]{o.shard}: {o.state}[/{colour}] ({o.results})", highlight=False)
        if o.detail:
            out.print(o.detail, highlight=False, markup=False, soft_wrap=True)
    stores = [Path(o.results) for o in outcomes if Path(o.results).is_dir() and any(Path(o.results).rglob("*.jsonl"))]
    if stores:
        summary = do_merge(results, stores)
        for line in summary.skipped + summary.conflicts:
            err.print(f"[yellow]merge[/yellow] {line}", highlight=False, markup=False, soft_wrap=True)
        out.print(f"merged {len(stores)} shard store(s) into {results}: "
                  + (", ".join(f"{k} +{n}" for k, n in sorted(summary.written.items())) or "nothing new"), highlight=False)
    raise typer.Exit(0 if all(o.state == "done" for o in outcomes) else 1)
