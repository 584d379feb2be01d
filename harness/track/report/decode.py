"""Measured decode tokens/s against the memory-bandwidth bound (every decode step reads the weights and
the KV cache), with the bound's line, one point per cell of one model, each named in the legend."""

from __future__ import annotations

from pathlib import Path

from harness.results.records import Record
from harness.track.report.figure import (MARKERS, NOT_VALID, SHOWN, Drawn, Subject, figure, label, legend_below,
                                         log_ticks, not_valid, plain, pyplot, save)

TITLE = "Decode throughput against the memory-bandwidth bound"


def what(r: Record) -> str:
    """A decode point's name: the serving engine (and its load) or the inference scenario, and the precision."""
    precision = label(r.cell.get("precision"))
    if not r.cell.get("engine"):
        return f"{'inference' if r.cell.get('scenario') == 'infer' else r.cell.get('scenario', '?')} {precision}"
    load = r.cell.get("settings", {}).get("load") or {}
    at = (f" at concurrency {load['concurrency']}" if load.get("concurrency")
          else f" at {load['rate_req_s']:g} req/s" if load.get("rate_req_s") else "")
    return f"{label(r.cell.get('engine'))} {precision}{at}"


def decode_bound(subject: Subject, path: Path) -> Drawn | None:
    """Measured decode tokens/s against its analytic bound for every cell of ``subject`` with both (log
    axes, equal aspect, the y = x line); None when there is none."""
    rows = [r for r in subject.records if r.status in SHOWN and r.metric("decode_tok_s") is not None
            and r.metric("decode_bound_tok_s_analytic") is not None]
    if not rows:
        return None
    plt = pyplot()
    fig, axes = figure(plt, subject, TITLE, 7.5, 6.2 + 0.18 * len(rows))
    ax = axes[0][0]
    colors = plt.get_cmap("tab10").colors
    xs = [r.metric("decode_bound_tok_s_analytic") for r in rows]
    ys = [r.metric("decode_tok_s") for r in rows]
    handles, names = [], []
    lo, hi = min(xs + ys) / 1.6, max(xs + ys) * 1.6
    handles += ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8)
    names.append("bound (efficiency 100 %)")
    for i, (x, y, r) in enumerate(zip(xs, ys, rows)):
        c = colors[i % len(colors)]
        handles += ax.plot([x], [y], linestyle="none", marker=MARKERS[i % len(MARKERS)], markersize=8, color=c,
                           markerfacecolor=(*c[:3], 0.6) if r.trusted else "white", markeredgewidth=1.4,
                           zorder=3)  # see-through: two cells at one point both show
        eff = r.metric("decode_efficiency_ratio")
        names.append(plain(f"{what(r)}" + (f": {eff:.0%}" if eff is not None else "")
                           + ("" if r.trusted else f" {NOT_VALID}")))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    log_ticks(ax, "x")
    log_ticks(ax, "y")
    ax.set_aspect("equal")
    ax.set_xlabel("bound: decode tokens/s at the measured memory bandwidth", fontsize=9)
    ax.set_ylabel("measured decode tokens/s", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    legend_below(fig, handles, names, ncol=2)
    save(plt, fig, path)
    return Drawn(title=TITLE, cells=[r.cell_id for r in rows], not_valid=not_valid(rows),
                 what="Measured decode tokens/s against the bound at the measured memory bandwidth (every step "
                      "reads the weights and the KV cache); the legend gives each cell's efficiency (measured / "
                      "bound); hollow markers are cells that are not valid.")
