"""Accuracy (Text2SQL execution match, top-1 agreement with the reference, and the lm-eval task
accuracies the records hold) and perplexity against storage bits per parameter, one point per precision
of one model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.results.records import Record
from harness.track.report.figure import (MARKERS, NOT_VALID, SHOWN, Drawn, Subject, figure, label, legend_below,
                                         log_ticks, not_valid, plain, pyplot, save)

ACCURACY = [("text2sql_ex_ratio", "text-to-SQL execution match"), ("top1_agreement_ref_ratio", "top-1 agreement with the reference")]
TITLE = "Accuracy and perplexity against storage bits per parameter"
DENSE_BITS = {"fp32": 32.0, "bf16": 16.0, "fp16": 16.0}
PPL_MARKER = "^"
ACC_MARKERS = [m for m in MARKERS if m != PPL_MARKER]  # an accuracy never shares the perplexity's shape


def bits_of(r: Record) -> float | None:
    """Storage bits per parameter: measured, else predicted, else the dense dtype's width."""
    for m in ("quant_bits_per_param", "quant_bits_per_param_analytic"):
        if r.metric(m) is not None:
            return r.metric(m)
    return DENSE_BITS.get(str((r.cell.get("precision") or {}).get("kind")))


def accuracy_bits(subject: Subject, path: Path) -> Drawn | None:
    """Accuracy (ratios, 0 to 1) and perplexity panels of the inference cells of ``subject`` with a bit
    width and one of those metrics; a panel only for what was measured; None when there is none. A
    colour per precision (named in the legend, so close bit widths do not pile labels up), a marker
    shape per metric, a grey line through each metric's points."""
    rows = [r for r in subject.records if r.cell.get("scenario") == "infer" and r.status in SHOWN and bits_of(r) is not None
            and (any(r.metric(m) is not None for m, _ in ACCURACY + lmeval_accuracy([r])) or r.metric("perplexity") is not None)]
    if not rows:
        return None
    rows.sort(key=lambda r: (-(bits_of(r) or 0), r.cell_id))
    accuracy = ACCURACY + lmeval_accuracy(rows)
    panels = [p for p, ms in (("accuracy", [m for m, _ in accuracy]), ("perplexity", ["perplexity"]))
              if any(r.metric(m) is not None for r in rows for m in ms)]
    plt = pyplot()
    fig, axes = figure(plt, subject, TITLE, 5.6 * len(panels) + 0.8, 5.6, ncols=len(panels))
    palette = plt.get_cmap("tab10").colors
    color = {r.cell_id: palette[i % len(palette)] for i, r in enumerate(rows)}
    at = _side_by_side(rows)
    handles, names = [], []
    for ax, panel in zip(axes[0], panels):
        metrics = accuracy if panel == "accuracy" else [("perplexity", "perplexity (lower is better)")]
        for k, (metric, name) in enumerate(metrics):
            pts = sorted(((at[r.cell_id], r.metric(metric), r) for r in rows if r.metric(metric) is not None), key=lambda p: p[0])
            if not pts:
                continue
            marker = ACC_MARKERS[k % len(ACC_MARKERS)] if panel == "accuracy" else PPL_MARKER
            _points(ax, pts, color, marker)
            handles.append(plt.Line2D([], [], linestyle="-", color="gray", marker=marker, markersize=7))
            names.append(name)
        ax.set_ylabel("accuracy (ratio)" if panel == "accuracy" else "perplexity (lower is better)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("storage bits per parameter (log scale)")
        ax.grid(alpha=0.3)
        ax.margins(x=0.15, y=0.15)
        if panel == "accuracy":
            ax.set_ylim(0, 1.1)  # a ratio: its whole range, so two precisions' gap is seen at its size
        log_ticks(ax, "x")
    for r in rows:
        c = color[r.cell_id]
        handles.append(plt.Line2D([], [], linestyle="none", marker="s", markersize=8, color=c,
                                  markerfacecolor=c if r.trusted else "white", markeredgewidth=1.4))
        names.append(plain(f"{label(r.cell.get('precision'))}: {bits_of(r):.3g} bits" + ("" if r.trusted else f" {NOT_VALID}")))
    legend_below(fig, handles, names, ncol=4)
    save(plt, fig, path)
    return Drawn(title=TITLE, cells=[r.cell_id for r in rows], not_valid=not_valid(rows),
                 what="Accuracy (Text2SQL execution match, top-1 agreement with the reference precision, lm-eval "
                      "task accuracies where scored) and "
                      "perplexity against storage bits per parameter (measured, else predicted, else the dtype's "
                      "width), one colour per precision, one marker shape per metric; hollow points are cells "
                      "that are not valid.")


def lmeval_accuracy(rows: list[Record]) -> list[tuple[str, str]]:
    """The lm-eval task accuracies (ratios: ``acc``, ``acc_norm``, ``exact_match``) the records hold, named."""
    from harness.metrics import spec_for

    names = sorted({n for r in rows for n in r.metrics if n.startswith("lmeval_") and not n.endswith("_delta_ref")
                    and (spec := spec_for(n)) is not None and spec.kind == "accuracy" and spec.unit == "ratio"})
    return [(n, "lm-eval " + n.removeprefix("lmeval_").replace("_", " ")) for n in names]


def _points(ax: Any, pts: list[tuple[float, float, Record]], color: dict[str, Any], marker: str) -> None:
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color="gray", linewidth=0.8, alpha=0.6, zorder=1)
    for x, y, r in pts:
        c = color[r.cell_id]
        ax.plot([x], [y], linestyle="none", marker=marker, markersize=8, color=c,
                markerfacecolor=(*c[:3], 0.75) if r.trusted else "white", markeredgewidth=1.4, zorder=3)


def _side_by_side(rows: list[Record]) -> dict[str, float]:
    """Each cell's x: its bits per parameter, precisions of the same width (bf16 and fp16) set a little
    apart (a multiplicative offset on the log axis) so that neither hides the other."""
    same: dict[float, list[Record]] = {}
    for r in rows:
        same.setdefault(round(bits_of(r) or 0.0, 2), []).append(r)
    return {r.cell_id: (bits_of(r) or 0.0) * 2 ** ((i - (len(rs) - 1) / 2) * 0.08)
            for rs in same.values() for i, r in enumerate(rs)}
