"""Training memory anatomy: stacked bars by category (parameters, gradients, optimizer state,
activations), measured beside predicted (hatched), one pair per training cell of one model."""

from __future__ import annotations

import textwrap
from pathlib import Path

from harness.track.report.figure import NOT_VALID, SHOWN, Drawn, Subject, figure, not_valid, plain, pyplot, save

ANATOMY = [("parameters", "params_bytes"), ("gradients", "grads_bytes"), ("optimizer state", "optimizer_bytes"),
           ("activations", "activation_saved_bytes")]
TITLE = "Training memory anatomy: measured (solid) beside predicted (hatched)"


def short_names(cell_ids: list[str], suite: str) -> list[str]:
    """Each cell id without the words every id of the list shares (the suite, ``train``, a common
    precision...), so the bars are told apart by what differs; wrapped for a tick label."""
    words = [c.removeprefix(f"{suite}-").split("-") for c in cell_ids]
    common = set.intersection(*(set(w) for w in words)) if len(words) > 1 else {"train"}
    out = []
    for w in words:
        kept = [x for x in w if x not in common] or w
        out.append(textwrap.fill(" ".join(kept), 14))
    return out


def memory_anatomy(subject: Subject, path: Path) -> Drawn | None:
    """Stacked bars of the training cells of ``subject`` that measured or predicted an anatomy category
    (a failed cell shows its prediction), in MiB, or GiB from 2 GiB up; None when there is none."""
    rows = [r for r in subject.records if r.cell.get("scenario") == "train"
            and any(r.metric(m) is not None or r.metric(f"{m}_analytic") is not None for _, m in ANATOMY)]
    if not rows:
        return None
    totals = [sum(r.metric(m + s) or 0.0 for _, m in ANATOMY) for r in rows for s in ("", "_analytic")]
    unit, scale = ("GiB", 2**30) if max(totals) >= 2 * 2**30 else ("MiB", 2**20)
    plt = pyplot()
    fig, axes = figure(plt, subject, TITLE, max(7.5, 0.95 * len(rows) + 3.5), 5.2)
    ax = axes[0][0]
    colors = plt.get_cmap("tab10").colors
    width = 0.38
    faded = set(not_valid(rows))
    for i, r in enumerate(rows):
        faint = r.cell_id in faded
        for j, (suffix, hatch) in enumerate((("", None), ("_analytic", "//"))):
            bottom, x = 0.0, i + (j - 0.5) * width
            for k, (name, metric) in enumerate(ANATOMY):
                v = (r.metric(metric + suffix) or 0.0) / scale
                ax.bar(x, v, width, bottom=bottom, color=colors[k], hatch=hatch, alpha=0.5 if faint else 1.0,
                       edgecolor="white" if hatch is None else "black", linewidth=0.4)
                bottom += v
            if j == 0 and r.status not in SHOWN:  # a failed cell: no measurement, its prediction beside
                ax.annotate(r.status, (x, bottom), ha="center", va="bottom", fontsize=8, color="crimson")
    names = short_names([r.cell_id for r in rows], subject.suite)
    ax.set_xticks(range(len(rows)))
    pad = (max(len(rows), 3) - len(rows)) / 2  # a bar keeps its width when there are few cells
    ax.set_xlim(-0.7 - pad, len(rows) - 0.3 + pad)
    ax.set_xticklabels([plain(n) + (f"\n{NOT_VALID}" if r.cell_id in faded else "")
                        for n, r in zip(names, rows)], fontsize=8)
    for tick, r in zip(ax.get_xticklabels(), rows):
        if r.cell_id in faded:
            tick.set_color("#9a5b00")
    ax.set_ylabel(f"{unit} (per rank under a parallel engine)")
    ax.grid(axis="y", alpha=0.3)
    from matplotlib.patches import Patch

    handles = [Patch(color=colors[k], label=name) for k, (name, _) in enumerate(ANATOMY)]
    handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="predicted (hatched)"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    save(plt, fig, path)
    return Drawn(title=TITLE, cells=[r.cell_id for r in rows], not_valid=not_valid(rows),
                 what=f"Training memory by category in {unit} (per rank under a parallel engine), measured by the "
                      "trackers (solid) beside the estimator's prediction (hatched); a failed cell (oom) shows its "
                      "prediction only, a cell that is not valid is drawn faint.")

