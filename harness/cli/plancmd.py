"""``harness plan``: every cell of the suites with the reason of each skip, decided before anything runs;
with ``--shards N``, how the cells split over N runners (:mod:`harness.pipeline.shard`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harness.cli import DurationsOpt, MachineOpt, ModelOpt, ShardOpt, _load, _shards, app, err, out


@app.command()
def plan(paths: list[Path] = typer.Argument(..., help="Suite YAML files."), model: Optional[str] = ModelOpt,
         shards: Optional[int] = typer.Option(None, "--shards", min=1, help="Split the cells into N shards by cost and print each "
                                                                           "shard's cells and predicted time."),
         shard: Optional[str] = ShardOpt, durations_from: Optional[Path] = DurationsOpt, machine: Optional[str] = MachineOpt,
         ) -> None:
    """List every cell of the suites, with the reason of each skip, decided before anything runs; with
    --shards N, how they split over N runners; with --shard K/N, shard K's cells only."""
    from harness.base.errors import HarnessError
    from harness.base.host import Host
    from harness.pipeline.planner import plan as make_plan
    from harness.pipeline.shard import parse_shard

    suites, failed = _load(paths, model)
    host = Host.detect()
    plans = [(path, make_plan(suite, host, source=str(path), model_override=model)) for path, suite in suites]
    selected: set[str] | None = None
    try:
        k, n = parse_shard(shard) if shard else (None, shards)
        split = _shards([p for _, p in plans], n, durations_from, machine, host) if n else None
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if split is not None and k is None:
        _print_shards(split)
        raise typer.Exit(2 if failed else 0)
    if split is not None:
        selected = set(split[k - 1].cells)
        out.print(f"shard {k}/{n}: {len(selected)} cells, predicted {split[k - 1].cost_s / 60:.1f} min", highlight=False)
    for path, p in plans:
        table = Table(title=f"{p.suite} ({path}): {len(p.runnable)} to run, {len(p.skipped)} skipped", title_justify="left")
        for col in ("cell", "scenario", "precision", "mode/engine", "workload", "status"):
            table.add_column(col)
        for pc in p.cells:
            if selected is not None and pc.cell.id not in selected:
                continue
            c = pc.cell
            status = f"[yellow]skip[/yellow]: {pc.skip}" if pc.skip else "[green]run[/green]" + (
                f" (one engine start: {c.group})" if c.group else "")
            table.add_row(c.id, c.scenario, c.precision.label, c.impl or "-", c.workload.name if c.workload else "-", status)
        out.print(table)
    raise typer.Exit(2 if failed else 0)


def _print_shards(split: list) -> None:
    table = Table(title=f"{len(split)} shards (longest first onto the least loaded; engine starts never split)",
                  title_justify="left")
    for col in ("shard", "cells", "predicted", "measured costs", "cells (engine starts joined by +)"):
        table.add_column(col, overflow="fold")
    for s in split:
        cells = sum(len(u.cells) for u in s.units)
        measured = sum(u.measured for u in s.units)
        table.add_row(f"{s.index}/{len(split)}", str(cells), f"{s.cost_s / 60:.1f} min", f"{measured} of {cells}",
                      ", ".join("+".join(u.cells) for u in s.units))
    out.print(table)
    total = sum(s.cost_s for s in split)
    longest = max((u.cost_s for s in split for u in s.units), default=0.0)
    ideal = max(total / len(split), longest)
    out.print(f"longest shard {max(s.cost_s for s in split) / 60:.1f} min; ideal {ideal / 60:.1f} min "
              f"(total {total / 60:.1f} min / {len(split)}, or the longest unit {longest / 60:.1f} min)", highlight=False)
