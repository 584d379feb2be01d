"""What every figure of the report shares: the records it is drawn from (one suite, one machine, one
model), what it returns, and the drawing conventions.

Conventions: a figure's legend sits outside its axes (below or to the right), never over the data;
a point whose record is not trusted (status ``invalid``, or ``ok`` with ``validity.valid`` false) is
drawn hollow and its label says ``(not valid)``; every text taken from a record is drawn as plain
text (matplotlib would read ``$...$`` as math).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.results.records import Record

SHOWN = ("ok", "invalid")  # statuses whose metrics a figure draws (``invalid``: hollow)
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p"]
NOT_VALID = "(not valid)"


class Subject(BaseModel):
    """The records one figure may draw from, and where and when they were measured."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    suite: str
    machine: str
    model: str
    hardware: str = Field(description="the machine in words: GPUs, CPU model, cores, memory")
    when: str = Field(description="the span of the records' start times")
    records: list[Record]

    @property
    def subtitle(self) -> str:
        return plain(f"suite {self.suite} · model {self.model} · machine {self.machine}")


class Drawn(BaseModel):
    """What a figure function drew: its title, one sentence on what was measured, the cells drawn and
    those among them that are not valid (drawn hollow)."""

    title: str
    what: str
    cells: list[str]
    not_valid: list[str] = Field(default_factory=list)


class Figure(BaseModel):
    """A figure of the report: its file, kind (memory-anatomy, serving-load, accuracy-bits,
    decode-bound), title, caption (what, where, when, which model and suite) and the cells drawn."""

    kind: str
    path: Path
    title: str
    caption: str
    cells: list[str]
    not_valid: list[str] = Field(default_factory=list)
    suite: str
    machine: str
    model: str


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain(text: str) -> str:
    """``text`` as matplotlib draws it literally (a ``$`` would start math)."""
    return str(text).replace("$", r"\$")


def label(part: dict | None) -> str:
    """A cell's precision / mode / engine label from its stored config."""
    if not part:
        return "-"
    return str(part.get("name") or part.get("kind"))


def not_valid(rows: list[Record]) -> list[str]:
    """The cells of ``rows`` whose numbers are drawn but not trusted (drawn hollow or faint)."""
    return [r.cell_id for r in rows if r.status in SHOWN and not r.trusted]


def figure(plt: Any, subject: Subject, title: str, width: float, height: float, ncols: int = 1, nrows: int = 1) -> tuple[Any, Any]:
    """A figure with constrained layout (the outside legend gets its room), its title and subtitle."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), layout="constrained", squeeze=False)
    fig.suptitle(f"{plain(title)}\n{subject.subtitle}", fontsize=10)
    return fig, axes


def legend_below(fig: Any, handles: list, labels: list[str], ncol: int | None = None) -> None:
    """One legend for the whole figure, under its axes."""
    if handles:
        fig.legend(handles, labels, loc="outside lower center", fontsize=8, frameon=False,
                   ncol=ncol or min(4, len(handles)))


def save(plt: Any, fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def log_ticks(ax: Any, axis: str = "y") -> None:
    """Plain numbers on a log axis (``600``, not ``6 x 10^2``); the 2s and 5s between powers of ten are
    labelled too when the axis spans under three decades."""
    from matplotlib.ticker import FuncFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    few = lo > 0 and hi / lo < 1000
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if few and f"{v:.0e}"[0] in "25" else ""))


def dodge(xs: dict[str, list[float]], step: float = 0.16) -> dict[str, float]:
    """Multiplicative offsets (log-scale x) that set side by side the series sharing an x: series name ->
    factor, ``2 ** (k * step)`` around 1 for the k-th of the series at a shared x."""
    sharing: dict[float, list[str]] = {}
    for name, values in xs.items():
        for x in values:
            sharing.setdefault(x, []).append(name)
    width = max((len(v) for v in sharing.values()), default=1)
    names = sorted(xs)
    return {n: 2 ** ((i - (len(names) - 1) / 2) * step) if width > 1 else 1.0 for i, n in enumerate(names)}
