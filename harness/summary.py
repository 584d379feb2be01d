"""Summary tables of records (rich), one per scenario; reads records only."""

from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from harness.records import Record

if TYPE_CHECKING:
    from harness.estimate import Estimate

# (scenario, title, columns): a column is a metric name or an fnmatch pattern of them; "kernel" is info.
TABLES: list[tuple[str, str, list[str]]] = [
    ("infer", "Inference: storage and accuracy", [
        "quant_bits_per_param", "quant_bits_per_param_analytic", "weight_bytes", "perplexity", "kl_ref_nats",
        "top1_agreement_ref_ratio", "text2sql_ex_ratio", "text2sql_em_ratio", "output_length_ratio_ref"]),
    ("infer", "Inference: speed and memory", [
        "prefill_tok_s_bs*", "decode_tok_s_bs*", "load_s", "quantize_s", "peak_rss_bytes", "kernel"]),
    ("train", "Training", [
        "loss", "step_time_ms", "train_tok_s", "mfu_ratio", "trainable_params", "backward_peak_alloc_bytes",
        "step_peak_alloc_bytes", "peak_rss_bytes"]),
    ("serve", "Serving: throughput and latency", [
        "output_tok_s", "request_throughput_req_s", "goodput_req_s", "ttft_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_ms",
        "tpot_p99_ms", "itl_p99_ms", "e2el_ms", "e2el_p99_ms", "failed_requests", "peak_concurrency_requests"]),
    ("serve", "Serving: engine, KV cache and decode bound", [
        "startup_s", "peak_rss_bytes", "kv_cache_capacity_tokens", "kv_cache_capacity_tokens_analytic",
        "prefix_cache_hit_ratio", "spec_acceptance_ratio", "mean_decode_batch_requests", "decode_tok_s", "decode_bound_tok_s_analytic", "decode_efficiency_ratio",
        "optimal_batch_requests_analytic"]),
]
STATUS_STYLE = {"ok": "green", "skipped": "yellow", "error": "red", "oom": "magenta", "timeout": "red"}


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 2**20:,.1f} MiB"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


def columns(wanted: list[str], rows: list[Record]) -> list[str]:
    """The metric names of ``rows`` that ``wanted`` (names, fnmatch patterns, "kernel") selects, in order."""
    cols: list[str] = []
    for c in wanted:
        if c == "kernel":
            cols += [c] if any("kernels" in r.info for r in rows) else []
            continue
        names = sorted({m for r in rows for m in r.metrics if fnmatch.fnmatchcase(m, c)},
                       key=lambda m: (len(m), m))
        cols += [n for n in names if n not in cols]
    return cols


def cell_text(r: Record, c: str) -> str:
    """One table cell: column ``c`` of record ``r``, formatted."""
    if c == "kernel":
        return str(r.info.get("kernels", {}).get("label", "-"))
    return fmt(r.metric(c), r.metrics[c].unit) if c in r.metrics else "-"


def tables(records: list[Record]) -> list[tuple[Table, list[str]]]:
    """One table per scenario present in ``records``, with notes (skip/failure reasons, loss curves)."""
    out = []
    for scenario, title, wanted in TABLES:
        rows = [r for r in records if r.cell.get("scenario") == scenario]
        if not rows:
            continue
        cols = columns(wanted, rows)
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("cell", no_wrap=True)
        table.add_column("status")
        for c in cols:
            table.add_column(c, justify="right", overflow="fold")
        notes = []
        for r in rows:
            values = [cell_text(r, c) for c in cols]
            if r.reason and title == next(t for sc, t, _ in TABLES if sc == scenario):
                notes.append(f"  {r.cell_id}: {r.status}: {r.reason}")
            elif scenario == "train" and "loss" in r.metrics:
                losses = r.metrics["loss"].samples
                notes.append(f"  {r.cell_id}: loss by step {' -> '.join(f'{v:.3f}' for v in losses)}")
            style = STATUS_STYLE.get(r.status, "")
            table.add_row(r.cell_id, f"[{style}]{r.status}[/{style}]", *values)
        out.append((table, notes))
        if scenario == "train" and title == "Training":
            out.append((anatomy_table([r for r in rows if r.metrics]), []))
    return out


ANATOMY_COLUMNS = [("model", "params_bytes"), ("gradients", "grads_bytes"), ("optimizer", "optimizer_bytes"),
                   ("activations", "activation_saved_bytes"), ("total", "anatomy_total_bytes")]


def anatomy_table(rows: list[Record]) -> Table:
    """Training memory by category, measured / predicted (MiB), one row per cell; an oom row shows the
    prediction that did not fit. Distributed cells show one rank's bytes."""
    table = Table(title="Training memory anatomy, measured / predicted (MiB; per rank under a parallel engine)",
                  title_justify="left")
    table.add_column("cell", no_wrap=True)
    table.add_column("status")
    for header, _ in ANATOMY_COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("residual", justify="right")
    for r in rows:
        cells = []
        for _, name in ANATOMY_COLUMNS:
            measured, predicted = r.metric(name), r.metric(f"{name}_analytic")
            m = "-" if measured is None else f"{measured / 2**20:,.2f}"
            p = "-" if predicted is None else f"{predicted / 2**20:,.2f}"
            cells.append(f"{m} / {p}")
        resid = r.metric("anatomy_total_bytes_residual")
        style = STATUS_STYLE.get(r.status, "")
        table.add_row(r.cell_id, f"[{style}]{r.status}[/{style}]", *cells,
                      "-" if resid is None else f"{resid / 2**20:+,.3f}")
    return table


def print_summary(records: list[Record], console: Console | None = None) -> None:
    console = console or Console()
    for table, notes in tables(records):
        console.print(table)
        for line in notes:
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    counts = {s: sum(1 for r in records if r.status == s) for s in STATUS_STYLE}
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no cells")


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
