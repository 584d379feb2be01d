"""``harness cache`` (the cache's entries and its size limit) and ``harness publish`` (the redacted
public view of records)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from harness.cli import app, err, out


@app.command()
def cache(prune: bool = typer.Option(False, "--prune", help="Remove the least recently used entries no process uses "
                                                           "(and what crashed builds left) down to the limit."),
          max_bytes: Optional[str] = typer.Option(None, "--max-bytes", help="The limit for --prune (e.g. 20G); default "
                                                                           "HARNESS_CACHE_MAX_BYTES or 50G."),
          ) -> None:
    """List the cache's entries (built models, references, quantized checkpoints): size, last use,
    state, and the size limit; with --prune, remove entries down to the limit. Exit 0, 2 on a bad size."""
    from datetime import datetime, timezone

    from harness.base import cachedir
    from harness.base.errors import HarnessError
    from harness.base.paths import cache_dir

    try:
        limit = cachedir.parse_size(max_bytes, "--max-bytes") if max_bytes is not None else cachedir.max_bytes()
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    root = cache_dir()
    if prune:
        for e in cachedir.evict(root, limit):
            out.print(f"removed {e.name} ({cachedir.human(e.size_bytes)}, last used "
                      f"{e.last_used:%Y-%m-%d %H:%M:%S} UTC{', a crashed build' if e.state == 'stale' else ''})",
                      highlight=False, soft_wrap=True)
    listed = cachedir.entries(root)
    now = datetime.now(timezone.utc)
    table = Table(title=f"cache {root}", title_justify="left")
    for col, justify in (("entry", "left"), ("size", "right"), ("last used (UTC)", "left"), ("ago", "right"), ("state", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for e in reversed(listed):  # most recently used first
        ago = (now - e.last_used).total_seconds()
        table.add_row(e.name, cachedir.human(e.size_bytes), f"{e.last_used:%Y-%m-%d %H:%M:%S}",
                      f"{ago / 86400:.1f} d" if ago >= 86400 else f"{ago / 3600:.1f} h", e.state)
    out.print(table)
    total = sum(e.size_bytes for e in listed)
    source = "--max-bytes" if max_bytes is not None else (
        cachedir.MAX_BYTES_ENV if os.environ.get(cachedir.MAX_BYTES_ENV, "").strip() else "default")
    out.print(f"{len(listed)} entries, {cachedir.human(total)} ({total} bytes) of a limit of {cachedir.human(limit)} "
              f"({limit} bytes, {source}); least recently used entries beyond it go after each build",
              highlight=False, soft_wrap=True)


@app.command()
def publish(results: list[Path] = typer.Argument(..., help="Stores (folders or .jsonl files) to publish."),
            out_dir: Path = typer.Option(..., "--out", help="Folder of the public view (must not hold records yet).")) -> None:
    """Write the public view of records: allow-listed fields, no hostname, home folders or log tails.
    Exit 0, 2 on bad input."""
    from harness.base.errors import HarnessError
    from harness.track.publish import publish as public_view

    try:
        n = public_view(results, out_dir)
    except HarnessError as exc:
        err.print(f"[red]error[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    out.print(f"{n} records -> {out_dir}", highlight=False)
