"""Summary tables of records in the terminal (rich): the compact tables of :mod:`harness.track.tables`
(per suite, a handful of key columns in human units, fitting 120 columns; every column is in
``harness report``), and the estimator's answer for ``harness estimate``. Reads records only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from harness.results.records import STATUSES, Record
from harness.track.tables import TableView, views

if TYPE_CHECKING:
    from harness.analytic.estimate import Estimate

STATUS_STYLE = {"ok": "green", "skipped": "yellow", "error": "red", "oom": "magenta", "timeout": "red", "invalid": "red"}


def status_text(r: Record) -> str:
    """The record's status, and ``NOT VALID`` beside an ``ok`` whose numbers are not trusted."""
    return "ok, NOT VALID" if r.status == "ok" and not r.trusted else r.status


def rich_table(view: TableView) -> Table:
    """A :class:`TableView` as a rich table (no cell ever wraps or folds: the compact views are made to fit)."""
    table = Table(title=view.title, title_justify="left", show_lines=False, box=box.SIMPLE_HEAD, padding=(0, 1),
                  pad_edge=False)
    table.add_column("cell", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for header in view.headers:
        table.add_column(header, justify="right", no_wrap=True)
    for r, values in view.rows:
        style = "red" if not r.trusted and r.status == "ok" else STATUS_STYLE.get(r.status, "")
        table.add_row(view.label(r), f"[{style}]{status_text(r)}[/{style}]", *values)
    return table


def tables(records: list[Record]) -> list[tuple[Table, list[str]]]:
    """One rich table per compact summary table present in ``records``, with its notes (skip and failure
    reasons, loss curves)."""
    return [(rich_table(v), [f"  {line}" for line in v.reasons + v.curves]) for v in views(records, compact=True)]


def print_summary(records: list[Record], console: Console | None = None, results: str | None = None) -> None:
    """The compact tables of ``records``, their notes, the count by status, and where the rest is:
    ``harness report`` of ``results`` (the store folder, when known)."""
    console = console or Console()
    for table, notes in tables(records):
        console.print(table)
        for line in notes:  # wrapped at the console's width, like the tables
            console.print(line, highlight=False, markup=False)
    counts = {s: sum(1 for r in records if r.status == s) for s in STATUSES}
    untrusted = sum(1 for r in records if r.status == "ok" and not r.trusted)
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) + (f" ({untrusted} of them NOT VALID)" if untrusted else "")
                  or "no cells")
    if records:
        console.print(f"Every metric, figures and reproduce commands: harness report {results or '<results folder>'} "
                      "--out report/", highlight=False, markup=False, soft_wrap=True)


def print_estimate(est: "Estimate", console: Console) -> None:
    """The estimator's answer as a table in GiB (``--json`` gives the bytes)."""
    gib = lambda v: "-" if v is None else f"{v / 2**30:,.3f} GiB"  # noqa: E731
    inp = est.inputs
    table = Table(title=f"Estimate for {est.model}: train={inp.train}, dtype={inp.dtype}, quant={inp.quant}, "
                        f"optimizer={inp.optimizer}" + (f", ZeRO-{inp.zero_stage} x {inp.world_size}" if inp.world_size > 1 else ""),
                  title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [("parameters", f"{est.params:,}"), ("trainable parameters", f"{est.trainable_params:,}"),
            ("weights", gib(est.params_bytes)), ("gradients", gib(est.grads_bytes)),
            ("optimizer state", gib(est.optimizer_bytes)), ("activations (saved)", gib(est.activation_bytes)),
            ("activations (backward peak)", gib(est.activation_peak_bytes)),
            ("KV cache per token", "-" if est.kv_cache_bytes_per_token is None else f"{est.kv_cache_bytes_per_token:,} bytes"),
            ("KV cache", gib(est.kv_cache_bytes)),
            ("quantized bits per weight", "-" if est.quantized_bits_per_param is None else f"{est.quantized_bits_per_param:.4f}"),
            ("per rank", gib(est.per_rank_bytes)), ("total", gib(est.total_bytes))]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for note in est.notes:
        console.print(f"note: {note}", highlight=False)
