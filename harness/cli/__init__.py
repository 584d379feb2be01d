"""The ``harness`` command: validate, run, compare, noise, report and schema here; ``plan`` in
:mod:`harness.cli.plancmd`; ``asv``, ``asv-assets`` and ``asv-publish`` in :mod:`harness.cli.asvsite`;
``estimate`` in :mod:`harness.cli.estimate`; ``cache`` and ``publish`` in :mod:`harness.cli.housekeeping`;
``merge``, ``matrix`` and ``submit`` (past one machine) in :mod:`harness.cli.fleet`.

Exit codes: 0 success; 1 a cell failed (error, oom or timeout); 2 invalid input (suite, option).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help="LLM efficiency benchmark harness.")
err = Console(stderr=True)
out = Console() if Console().is_terminal else Console(width=200)  # logs and pipes get the full table

ModelOpt = typer.Option(None, "--model", "-m", help="Override the suites' model: embedded, tiny, local:PATH, hub:ORG/NAME.")


def _load(paths: list[Path], model: str | None):
    from harness.spec.suite import SuiteError, load_suite

    suites, failed = [], False
    for path in paths:
        try:
            suites.append((path, load_suite(path, model=model)))
        except SuiteError as exc:
            failed = True
            for line in exc.problems:
                err.print(f"[red]error[/red] {line}", highlight=False, soft_wrap=True)
    return suites, failed


@app.command()
def validate(paths: list[Path] = typer.Argument(..., help="Suite YAML files."),
             model: Optional[str] = ModelOpt) -> None:
    """Check suite files; exit 0 if all are valid, 2 otherwise, printing the path of every problem."""
    suites, failed = _load(paths, model)
    for path, suite in suites:
        out.print(f"[green]ok[/green] {path} (suite {suite.name!r})", highlight=False)
    raise typer.Exit(2 if failed else 0)


ShardOpt = typer.Option(None, "--shard", help="Only shard K of N (K/N): cells split by cost, engine starts never split.")
DurationsOpt = typer.Option(None, "--durations-from", help="Store whose latest durations on this machine cost the cells "
                                                           "for sharding (every shard must use the same; default: per-scenario defaults).")
MachineOpt = typer.Option(None, "--machine", help="Logical runner name (default: $HARNESS_MACHINE, else derived from the "
                                                  "devices, e.g. cpu-2c, h100-80gb-x1).")


def _shards(plans: list, n: int, durations_from: Path | None, machine: str | None, host) -> list:
    """The plans' cells split into ``n`` shards by cost (:mod:`harness.pipeline.shard`)."""
    from harness.pipeline.shard import assign, last_durations, units
    from harness.results.machine import run_machine
    from harness.results.store import read_records

    durations = last_durations(read_records(durations_from), run_machine(host, machine)) if durations_from else {}
    return assign(units(plans, durations), n)


@app.command()
def run(paths: list[Path] = typer.Argument(..., help="Suite YAML files."), model: Optional[str] = ModelOpt,
        only: Optional[list[str]] = typer.Option(None, "--only", help="Run only this cell id (repeatable)."),
        results: Path = typer.Option(Path("results"), "--results", help="Folder of the JSON Lines store."),
        machine: Optional[str] = MachineOpt, shard: Optional[str] = ShardOpt,
        durations_from: Optional[Path] = DurationsOpt,
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip cells already recorded for the same code and config."),
        strict: bool = typer.Option(False, "--strict", help="Record cells that are not valid (contended, too short, too few samples) as `invalid` and retry them."),
        ) -> None:
    """Run suites cell by cell (each in its own process) and print a summary table. Exit 1 when a cell
    failed (error, oom, timeout, invalid), 0 otherwise, 2 on bad input."""
    import signal

    def _stop(signum: int, frame: object) -> None:  # SIGTERM as Ctrl-C: the runner kills the cell's process group
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)  # a closed terminal or a cancelled job: the same clean stop
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from harness.base.errors import HarnessError
    from harness.base.host import Host
    from harness.pipeline.planner import plan as make_plan
    from harness.pipeline.runner import Runner, run_plan
    from harness.results.store import Store
    from harness.track.summary import print_summary
    from harness.track.timed import progress_line

    suites, failed = _load(paths, model)
    if failed:
        raise typer.Exit(2)
    host = Host.detect()
    try:
        store, runner = Store(results), Runner(log_dir=results / "logs", strict=strict, machine=machine)
    except HarnessError as exc:  # a machine name that cannot name folders and files
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    plans = [make_plan(suite, host, source=str(path), model_override=model) for path, suite in suites]
    if shard:
        from harness.pipeline.shard import parse_shard

        try:
            k, n = parse_shard(shard)
            mine = set(_shards(plans, n, durations_from, machine, host)[k - 1].cells)
        except HarnessError as exc:
            err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        only = [c.cell.id for p in plans for c in p.cells if c.cell.id in mine and (not only or c.cell.id in only)]
        out.print(f"shard {k}/{n}: {len(only)} cells", highlight=False)
        if not only:  # more shards than units: nothing here (an empty --only would mean every cell)
            raise typer.Exit(0)
    if only:
        known = {c.cell.id for p in plans for c in p.cells}
        unknown = sorted(set(only) - known)
        if unknown:
            from harness.base.registry import suggest

            for u in unknown:
                err.print(f"[red]error[/red] --only {u}: no such cell{suggest(u, known)}", highlight=False)
            raise typer.Exit(2)
    all_records = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=out, transient=False) as progress:
        for p in plans:
            total = sum(1 for c in p.cells if not only or c.cell.id in only)
            task = progress.add_task(p.suite, total=total)

            def started(pc, task=task) -> None:
                progress.update(task, description=f"{p.suite}: {pc.cell.id}")

            def finished(record, reused, task=task) -> None:
                progress.advance(task)
                progress.console.print(progress_line(record, reused=reused), highlight=False, markup=False,
                                       soft_wrap=True)

            try:
                all_records += run_plan(p, store, runner, resume=resume, only=set(only) if only else None,
                                        on_start=started, on_record=finished)
            except HarnessError as exc:  # the store refused a record (a full disk): stop, every earlier record is kept
                err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
                raise typer.Exit(1)
            progress.update(task, description=p.suite)
    print_summary(all_records, out, results=str(results))
    out.print(f"records: {', '.join(str(store.path_for(p.suite)) for p in plans)}", highlight=False)
    final = {r.cell_id: r for r in all_records}  # a retried cell counts by its last attempt
    raise typer.Exit(1 if any(r.status in ("error", "oom", "timeout", "invalid") for r in final.values()) else 0)


@app.command()
def compare(base: Path = typer.Argument(..., help="Base results: a store folder or a .jsonl file."),
            new: Path = typer.Argument(..., help="New results: a store folder or a .jsonl file."),
            suite: Optional[list[Path]] = typer.Option(None, "--suite", help="Suite YAML whose `compare:` thresholds and `may_lose` apply (repeatable)."),
            noise: Optional[Path] = typer.Option(None, "--noise", help="Noise file of `harness noise`: thresholds no tighter than this runner can detect."),
            allow_invalid: bool = typer.Option(False, "--allow-invalid", help="Judge new records that are not valid (labelled) instead of failing."),
            allow_incomparable: bool = typer.Option(False, "--allow-incomparable", help="Judge pairs with another cell key or device (labelled)."),
            show_all: bool = typer.Option(False, "--all", help="Also list unchanged metrics."),
            machine: Optional[str] = typer.Option(None, "--machine", help="Judge only this logical machine's records (a per-runner gate)."),
            across_machines: bool = typer.Option(False, "--across-machines", help="Pair each cell's latest records whatever their machines (labelled); default: within each machine."),
            ) -> None:
    """Compare two result sets cell by cell, like with like, within each logical machine; exit 1 on a
    regression, a lost cell or metric, or an invalid new record; 0 otherwise (2: bad input)."""
    from harness.base.errors import HarnessError
    from harness.track.compare import compare as run_compare
    from harness.track.compare import load_results
    from harness.track.compareview import print_comparison
    from harness.track.noise import NoiseFile

    suites, failed = _load(suite or [], None)
    if failed:
        raise typer.Exit(2)
    try:
        noise_file = NoiseFile.read(noise) if noise else None
        result = run_compare(load_results(base), load_results(new), {s.name: s.compare for _, s in suites},
                             noise=noise_file, may_lose={s.name: s.may_lose for _, s in suites},
                             allow_invalid=allow_invalid, allow_incomparable=allow_incomparable,
                             across_machines=across_machines, machine=machine)
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    print_comparison(result, out, title=f"{base} -> {new}", show_all=show_all)
    raise typer.Exit(1 if result.failures else 0)


@app.command()
def noise(paths: list[Path] = typer.Argument(..., help="Suite YAML files."), model: Optional[str] = ModelOpt,
          only: Optional[list[str]] = typer.Option(None, "--only", help="Measure only this cell id (repeatable)."),
          runs: int = typer.Option(3, "--runs", min=2, help="Fresh-process runs of every cell."),
          results: Path = typer.Option(Path("results/noise"), "--results", help="Store of the runs' records."),
          out_path: Path = typer.Option(Path("noise.json"), "--out", help="The noise file to write."),
          ) -> None:
    """Run cells K times, each in a fresh process, interleaved; write per metric the coefficient of
    variation and the smallest change the gate can detect at 95 % (`harness compare --noise`)."""
    from harness.base.host import Host
    from harness.pipeline.planner import plan as make_plan
    from harness.pipeline.runner import Runner
    from harness.results.store import Store
    from harness.track.noise import measure_noise

    suites, failed = _load(paths, model)
    if failed:
        raise typer.Exit(2)
    host = Host.detect()
    plans = [make_plan(s, host, source=str(p), model_override=model) for p, s in suites]
    runner = Runner(log_dir=results / "logs")
    noise_file = measure_noise(plans, Store(results), runner, runs=runs, only=set(only) if only else None,
                               progress=lambda text: out.print(text, highlight=False, soft_wrap=True))
    noise_file.write(out_path)
    for line in noise_file.lines():
        out.print(line, highlight=False, soft_wrap=True)
    out.print(f"noise file: {out_path}", highlight=False)


@app.command()
def report(results: list[Path] = typer.Argument(..., help="Store folders or .jsonl files of records."),
           out_dir: Path = typer.Option(Path("report"), "--out", help="Folder of the report (report.md, report.html, plots/, records/)."),
           ) -> None:
    """Write a Markdown and an HTML report: tables per axis, figures, each row linked to its record.
    Exit 0 when written, 2 on bad input."""
    from harness.base.errors import HarnessError
    from harness.results.store import read_records

    try:
        records = [r for p in results for r in read_records(p)]
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    try:
        from harness.track.report import build
    except ModuleNotFoundError as exc:
        err.print(f"[red]error[/red] the report needs {exc.name} (pip install -e '.[track]')", highlight=False)
        raise typer.Exit(2)
    rep = build(records, out_dir, source=", ".join(map(str, results)))
    for f in rep.figures:
        out.print(f"figure {f.path} ({len(f.cells)} cells)", highlight=False)
    for name, why in rep.missing_figures.items():
        out.print(f"figure {name}: not drawn: {why}", highlight=False)
    out.print(f"report of {rep.records} cells: {rep.markdown}, {rep.html}", highlight=False)


@app.command()
def schema() -> None:
    """Print the JSON schema of a suite file."""
    from harness.spec.suite import dump_schema

    typer.echo(dump_schema())


# the other commands, registered on `app` where they live
from harness.cli import (  # noqa: E402,F401
    asvsite as _asvsite,
    estimate as _estimate,
    fleet as _fleet,
    housekeeping as _housekeeping,
    plancmd as _plancmd,
)
