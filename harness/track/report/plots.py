"""The report's figures (matplotlib, Agg): one function per figure, each ``(records, path) -> Figure | None``.

Each function takes the report's records (one per cell), draws only what they measured, writes a PNG
and returns what it drew (for the caption and the test), or None when no record has what it needs
(the report then says so instead of showing an empty picture).

- :func:`memory_anatomy`: training memory by category (parameters, gradients, optimizer state,
  activations) as stacked bars, measured beside predicted, one pair per training cell (precision x mode).
- :func:`serving_load`: output throughput and TTFT p50/p90/p99 against load, one line per engine.
- :func:`accuracy_bits`: accuracy (and perplexity) against storage bits per parameter, one point per precision.
- :func:`decode_bound`: measured decode tokens/s against the memory-bandwidth bound, with the y = x line.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from harness.results.records import Record

MiB = 2**20
ANATOMY = [("parameters", "params_bytes"), ("gradients", "grads_bytes"), ("optimizer state", "optimizer_bytes"),
           ("activations", "activation_saved_bytes")]
ACCURACY = [("text2sql_ex_ratio", "text-to-SQL execution match"), ("top1_agreement_ref_ratio", "top-1 agreement with the reference")]


class Figure(BaseModel):
    """What a figure shows: its file, title and the cells drawn."""

    path: Path
    title: str
    cells: list[str]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label(part: dict | None) -> str:
    """A cell's precision / mode / engine label from its stored config."""
    if not part:
        return "-"
    return str(part.get("name") or part.get("kind"))


def memory_anatomy(records: list[Record], path: Path) -> Figure | None:
    rows = [r for r in records if r.cell.get("scenario") == "train"
            and any(r.metric(m) is not None or r.metric(f"{m}_analytic") is not None for _, m in ANATOMY)]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(7.5, 1.4 * len(rows) + 3), 4.8))
    colors = plt.get_cmap("tab10").colors
    width = 0.38
    for i, r in enumerate(rows):
        for j, (suffix, hatch) in enumerate((("", None), ("_analytic", "//"))):
            bottom = 0.0
            x = i + (j - 0.5) * width
            for k, (name, metric) in enumerate(ANATOMY):
                v = (r.metric(metric + suffix) or 0.0) / MiB
                ax.bar(x, v, width, bottom=bottom, color=colors[k], hatch=hatch, edgecolor="white" if hatch is None else "black",
                       linewidth=0.4, label=name if i == 0 and j == 0 else None)
                bottom += v
            if r.status != "ok":
                ax.annotate(r.status, (x, bottom), ha="center", va="bottom", fontsize=8, color="crimson")
    ax.bar(0, 0, 0, color="white", edgecolor="black", hatch="//", label="predicted (hatched)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{label(r.cell.get('mode'))}\n{label(r.cell.get('precision'))}"
                        + ("\nGC" if r.cell.get("settings", {}).get("gradient_checkpointing") else "") for r in rows], fontsize=8)
    ax.set_ylabel("MiB (per rank under a parallel engine)")
    title = "Training memory anatomy: measured (left) and predicted (right, hatched)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(path=path, title=title, cells=[r.cell_id for r in rows])


def load_of(r: Record) -> float | None:
    """The load a serving cell ran at: the server's concurrency (or cap, or arrival rate), else the
    offline engine's batch limit."""
    load = r.cell.get("settings", {}).get("load")
    if load:
        return load.get("concurrency") or load.get("max_concurrency") or load.get("rate_req_s")
    engine = r.cell.get("engine") or {}
    for key in ("batch_size", "max_num_seqs", "max_requests_per_batch"):
        if engine.get(key):
            return float(engine[key])
    return None


def serving_load(records: list[Record], path: Path) -> Figure | None:
    lines: dict[str, list[tuple[float, Record]]] = defaultdict(list)
    for r in records:
        if r.cell.get("scenario") == "serve" and r.status == "ok" and r.metric("output_tok_s") is not None:
            x = load_of(r)
            if x is not None:
                lines[f"{label(r.cell.get('engine'))} {label(r.cell.get('precision'))}"].append((x, r))
    if not lines:
        return None
    plt = _plt()
    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4.5))
    colors = plt.get_cmap("tab10").colors
    for i, (name, points) in enumerate(sorted(lines.items())):
        points.sort(key=lambda p: p[0])
        xs = [p[0] for p in points]
        c = colors[i % len(colors)]
        ax_t.plot(xs, [p[1].metric("output_tok_s") for p in points], "o-", color=c, label=name)
        for metric, pct, style in (("ttft_ms", "p50", "o-"), ("ttft_p90_ms", "p90", "s--"), ("ttft_p99_ms", "p99", "^:")):
            ys = [p[1].metric(metric) for p in points]
            if all(y is not None for y in ys):
                ax_l.plot(xs, ys, style, color=c, label=f"{name} {pct}")
    ax_t.set_xlabel("load (requests in flight: server concurrency or batch limit)")
    ax_t.set_ylabel("output tokens/s")
    ax_t.set_title("Throughput against load", fontsize=10)
    ax_l.set_xlabel("load (requests in flight)")
    ax_l.set_ylabel("TTFT (ms), p50 / p90 / p99")
    ax_l.set_yscale("log")
    ax_l.set_title("Time to first token against load", fontsize=10)
    for ax in (ax_t, ax_l):
        ax.grid(alpha=0.3)
    ax_t.legend(fontsize=7)
    ax_l.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(path=path, title="Serving: throughput and latency percentiles against load, per engine",
                  cells=[p[1].cell_id for pts in lines.values() for p in pts])


def bits_of(r: Record) -> float | None:
    """Storage bits per parameter: measured, else predicted, else the dense dtype's width."""
    for m in ("quant_bits_per_param", "quant_bits_per_param_analytic"):
        if r.metric(m) is not None:
            return r.metric(m)
    return {"fp32": 32.0, "bf16": 16.0, "fp16": 16.0}.get(str((r.cell.get("precision") or {}).get("kind")))


def accuracy_bits(records: list[Record], path: Path) -> Figure | None:
    rows = [r for r in records if r.cell.get("scenario") == "infer" and r.status == "ok" and bits_of(r) is not None
            and (any(r.metric(m) is not None for m, _ in ACCURACY) or r.metric("perplexity") is not None)]
    if not rows:
        return None
    plt = _plt()
    fig, (ax_a, ax_p) = plt.subplots(1, 2, figsize=(11, 4.5))
    for metric, name in ACCURACY:
        pts = [(bits_of(r), r.metric(metric), r) for r in rows if r.metric(metric) is not None]
        if pts:
            ax_a.scatter([p[0] for p in pts], [p[1] for p in pts], label=name)
            for x, y, r in pts:
                ax_a.annotate(label(r.cell.get("precision")), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    pts = [(bits_of(r), r.metric("perplexity"), r) for r in rows if r.metric("perplexity") is not None]
    if pts:
        ax_p.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:red")
        for x, y, r in pts:
            ax_p.annotate(label(r.cell.get("precision")), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax_a.set_ylabel("accuracy (ratio)")
    ax_a.set_title("Accuracy against bits per parameter", fontsize=10)
    if ax_a.get_legend_handles_labels()[0]:
        ax_a.legend(fontsize=8)
    else:
        ax_a.text(0.5, 0.5, "no accuracy metric in these records", ha="center", transform=ax_a.transAxes, fontsize=9)
    ax_p.set_ylabel("perplexity (lower is better)")
    ax_p.set_title("Perplexity against bits per parameter", fontsize=10)
    for ax in (ax_a, ax_p):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("storage bits per parameter (log2)")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(path=path, title="Accuracy and perplexity against storage bits per parameter", cells=[r.cell_id for r in rows])


def decode_bound(records: list[Record], path: Path) -> Figure | None:
    rows = [r for r in records if r.status == "ok" and r.metric("decode_tok_s") is not None
            and r.metric("decode_bound_tok_s_analytic") is not None]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    xs = [r.metric("decode_bound_tok_s_analytic") for r in rows]
    ys = [r.metric("decode_tok_s") for r in rows]
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    for x, y, r in zip(xs, ys, rows):
        eff = r.metric("decode_efficiency_ratio")
        ax.annotate(f"{label(r.cell.get('engine'))} {label(r.cell.get('precision'))}" + (f" ({eff:.0%})" if eff is not None else ""), (x, y), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    lo, hi = min(xs + ys) * 0.5, max(xs + ys) * 2
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8, label="memory-bandwidth bound (efficiency 100 %)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bound: decode tokens/s at the measured memory bandwidth\n(every step reads the weights and the KV cache)", fontsize=9)
    ax.set_ylabel("measured decode tokens/s")
    title = "Decode efficiency against the bandwidth bound"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(path=path, title=title, cells=[r.cell_id for r in rows])


FIGURES = {"memory-anatomy": memory_anatomy, "serving-load": serving_load, "accuracy-bits": accuracy_bits,
           "decode-bound": decode_bound}
