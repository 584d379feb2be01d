"""Serving: output throughput and TTFT (p50, with a bar to p99 and a tick at p90) against load, one
series per (suite, engine, precision).

Load has three meanings, never mixed on one axis: a server under fixed concurrency (requests in
flight), a server under Poisson arrivals (requests/s), and an offline engine, which has no load but a
batch limit (``batch_size`` / ``max_num_seqs`` / ``max_requests_per_batch``). Each gets its own row of
panels; series sharing an x are set side by side (a small horizontal offset), a series of one point is
a marker, and every series has its own colour and marker.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.results.records import Record
from harness.track.report.figure import (MARKERS, NOT_VALID, SHOWN, Drawn, Subject, dodge, figure, label, legend_below,
                                         log_ticks, not_valid, plain, pyplot, save)

BATCH_KEYS = ("batch_size", "max_num_seqs", "max_requests_per_batch")
ROWS = {"concurrency": "server, fixed concurrency: requests in flight",
        "rate": "server, Poisson arrivals: requests/s",
        "offline": "offline engine: its batch limit (no load)"}
TITLE = "Serving: throughput and time to first token against load"


def load_of(r: Record) -> float | None:
    """The load a serving cell ran at: the server's concurrency (or cap, or arrival rate), else the
    offline engine's batch limit."""
    load = r.cell.get("settings", {}).get("load")
    if load:
        return load.get("concurrency") or load.get("max_concurrency") or load.get("rate_req_s")
    engine = r.cell.get("engine") or {}
    for key in BATCH_KEYS:
        if engine.get(key):
            return float(engine[key])
    return None


def load_axis(r: Record) -> tuple[str, float] | None:
    """Which kind of load a serving cell ran under (a key of :data:`ROWS`) and its value; None when the
    cell says neither (an engine without a batch limit and no load)."""
    load = r.cell.get("settings", {}).get("load")
    if load:
        if load.get("concurrency"):
            return "concurrency", float(load["concurrency"])
        if load.get("rate_req_s"):
            return "rate", float(load["rate_req_s"])
        return None
    engine = r.cell.get("engine") or {}
    for key in BATCH_KEYS:
        if engine.get(key):
            return "offline", float(engine[key])
    return None


def series_of(records: list[Record]) -> dict[tuple[str, str, str, str], list[tuple[float, Record]]]:
    """Serving records with a throughput, keyed by (suite, engine, precision, load axis), each series'
    points (x, record) sorted by x."""
    out: dict[tuple[str, str, str, str], list[tuple[float, Record]]] = defaultdict(list)
    for r in records:
        if r.cell.get("scenario") == "serve" and r.status in SHOWN and r.metric("output_tok_s") is not None:
            axis = load_axis(r)
            if axis is not None:
                out[(r.suite, label(r.cell.get("engine")), label(r.cell.get("precision")), axis[0])].append((axis[1], r))
    for points in out.values():
        points.sort(key=lambda p: p[0])
    return dict(out)


def serving_load(subject: Subject, path: Path) -> Drawn | None:
    """Throughput and TTFT of the serving cells of ``subject`` (status ok or invalid, with a throughput and
    a load axis), a row of two panels per kind of load; None when there is none."""
    series = series_of(subject.records)
    if not series:
        return None
    rows = [k for k in ROWS if any(key[3] == k for key in series)]
    suites = {key[0] for key in series}
    plt = pyplot()
    fig, axes = figure(plt, subject, TITLE, 11.5, 3.3 * len(rows) + 1.6, ncols=2, nrows=len(rows))
    colors = plt.get_cmap("tab10").colors
    handles, names = [], []
    for i, key in enumerate(sorted(series)):
        style = {"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]}
        name = plain(f"{key[1]} {key[2]}" + (f" [{key[0]}]" if len(suites) > 1 else ""))
        bad = sum(not r.trusted for _, r in series[key])
        name += f" {NOT_VALID}" if bad == len(series[key]) else (f" ({bad} of {len(series[key])} not valid: hollow)" if bad else "")
        handles.append(plt.Line2D([], [], linestyle="-" if len(series[key]) > 1 else "none", markersize=7, markeredgewidth=1.4,
                                  markerfacecolor="white" if bad == len(series[key]) else style["color"], **style))
        names.append(name)
    for row, kind in enumerate(rows):
        keys = [k for k in sorted(series) if k[3] == kind]
        shift = dodge({str(k): [x for x, _ in series[k]] for k in keys})
        ax_t, ax_l = axes[row]
        for key in keys:
            i = sorted(series).index(key)
            style = {"color": colors[i % len(colors)], "marker": MARKERS[i % len(MARKERS)]}
            _draw_series(ax_t, ax_l, [(x * shift[str(key)], r) for x, r in series[key]], style)
        xs = sorted({x for k in keys for x, _ in series[k]})
        for ax in (ax_t, ax_l):
            _load_axis(ax, xs, ROWS[kind])
        ax_t.set_ylabel("output tokens/s")
        ax_t.set_ylim(0, 1.12 * max(r.metric("output_tok_s") or 0.0 for k in keys for _, r in series[k]) or 1.0)
        ax_l.margins(y=0.1)
        ax_l.set_ylabel("TTFT ms (log): marker p50,\nbar to p99, dash p90", fontsize=8)
        ax_l.set_yscale("log")
        log_ticks(ax_l)
        ax_t.set_title(f"{ROWS[kind].split(':')[0]}: output throughput", fontsize=9)
        ax_l.set_title(f"{ROWS[kind].split(':')[0]}: time to first token", fontsize=9)
    legend_below(fig, handles, names, ncol=min(3, len(handles)))
    save(plt, fig, path)
    drawn = [r for pts in series.values() for _, r in pts]
    return Drawn(title=TITLE, cells=[r.cell_id for r in drawn], not_valid=not_valid(drawn),
                 what="Output tokens/s and time to first token (p50 marker, bar to p99, dash at p90; vLLM's "
                      "definitions) of the same request workload, against the server's load or, for an offline "
                      "engine, against its batch limit (its own row); series sharing an x are set side by side; "
                      "hollow markers are cells that are not valid.")


def _draw_series(ax_t: Any, ax_l: Any, points: list[tuple[float, Record]], style: dict) -> None:
    xs = [x for x, _ in points]
    tput = [r.metric("output_tok_s") for _, r in points]
    p50 = [r.metric("ttft_ms") for _, r in points]
    if len(points) > 1:
        ax_t.plot(xs, tput, "-", color=style["color"], linewidth=1.2)
        if all(v is not None for v in p50):
            ax_l.plot(xs, p50, "-", color=style["color"], linewidth=1.2)
    for x, r in points:
        face = style["color"] if r.trusted else "white"
        ax_t.plot([x], [r.metric("output_tok_s")], linestyle="none", markersize=7, markerfacecolor=face,
                  markeredgewidth=1.4, zorder=3, **style)
        if r.metric("ttft_ms") is None:
            continue
        top = r.metric("ttft_p99_ms")
        if top is not None:
            ax_l.vlines(x, r.metric("ttft_ms"), top, color=style["color"], linewidth=1.2, alpha=0.8)
        if r.metric("ttft_p90_ms") is not None:
            ax_l.plot([x], [r.metric("ttft_p90_ms")], marker="_", markersize=11, markeredgewidth=1.6, color=style["color"])
        ax_l.plot([x], [r.metric("ttft_ms")], linestyle="none", markersize=7, markerfacecolor=face,
                  markeredgewidth=1.4, zorder=3, **style)


def _load_axis(ax: Any, xs: list[float], name: str) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xlim(min(xs) / 1.7, max(xs) * 1.7)
    ax.xaxis.set_major_locator(FixedLocator(xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{x:g}" for x in xs])
    ax.set_xlabel(name, fontsize=8)
    ax.grid(alpha=0.3)
