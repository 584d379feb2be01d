"""The one walk from records to tables, shared by the terminal summary and the report.

For each summary table the catalog declares (:mod:`harness.metrics`), in order: the records of its
scenario, the columns they measured (a pattern column expands to the names present), each cell's text,
and, under the first table of a scenario, the reasons of skipped and failed cells (and training's loss
curves). The training memory anatomy (measured / predicted) follows the training table. The faces only
render a :class:`TableView`: rich in :mod:`harness.track.summary`, Markdown in :mod:`harness.track.report`.

``compact`` views are the terminal's: per suite, each table's declared handful of key columns
(``SummaryTable.compact``) with short headers and cell ids without the suite's prefix, so they fit
120 columns; the report shows every column. Values read in human units (:func:`fmt`): times in
µs/ms/s, bytes in KiB/MiB/GiB, rates and ratios to 3 significant digits.
"""

from __future__ import annotations

import fnmatch
import math

from pydantic import BaseModel, Field

from harness.measure.intervals import Z95
from harness.measure.lmeval import STDERR_CI
from harness.metrics import catalog, spec_for
from harness.metrics.spec import SECONDS_PER, SummaryTable
from harness.results.records import Record

# ``info:`` columns: header -> path in the record's info
INFO_COLUMNS = {"info:kernel": ("kernel", ("kernels", "label"))}
ANATOMY_COLUMNS = [("model", "params_bytes"), ("gradients", "grads_bytes"), ("optimizer", "optimizer_bytes"),
                   ("activations", "activation_saved_bytes"), ("total", "anatomy_total_bytes")]
ANATOMY_TITLE = "Training memory anatomy, measured / predicted (MiB; per rank under a parallel engine)"
MiB = 2**20


class TableView(BaseModel):
    """One table, ready to render: headers, and per row the record and the text of each column."""

    model_config = {"arbitrary_types_allowed": True}

    title: str
    scenario: str
    headers: list[str]
    rows: list[tuple[Record, list[str]]]
    reasons: list[str] = Field(default_factory=list, description="'<cell>: <status>: <reason>' of skips and failures")
    curves: list[str] = Field(default_factory=list, description="'<cell>: loss by step a -> b -> c' (training)")
    prefix: str = Field(default="", description="what to strip from the front of each cell id when shown (compact)")

    def label(self, r: Record) -> str:
        """The cell id as this table shows it."""
        return r.cell_id[len(self.prefix):] if self.prefix and r.cell_id.startswith(self.prefix) else r.cell_id


def sig3(value: float) -> str:
    """``value`` to 3 significant digits, without exponents (thousands and up as whole numbers with separators)."""
    if not math.isfinite(value):
        return str(value)
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a == 0:
        return "0"
    return f"{value:.{max(0, 2 - math.floor(math.log10(a)))}f}"


def human_seconds(seconds: float) -> str:
    """A duration in µs, ms or s, 3 significant digits."""
    a = abs(seconds)
    if not math.isfinite(seconds) or a >= 1:
        return f"{sig3(seconds)} s"
    if a >= 1e-3:
        return f"{sig3(seconds * 1e3)} ms"
    return f"{sig3(seconds * 1e6)} µs"


def human_bytes(n: float) -> str:
    """A size in B, KiB, MiB or GiB, 3 significant digits."""
    a = abs(n)
    for unit, size in (("GiB", 2**30), ("MiB", MiB), ("KiB", 2**10)):
        if a >= size:
            return f"{sig3(n / size)} {unit}"
    return f"{n:,.0f} B"


def fmt(value: float | None, unit: str) -> str:
    """A value in its unit, for a table, in human units: times (``s``, ``ms``) in µs/ms/s and bytes in
    KiB/MiB/GiB (the unit in the text), counts with separators, everything else to 3 significant digits
    (its unit in the column's header)."""
    if value is None:
        return "-"
    if unit == "bytes":
        return human_bytes(value)
    if unit in SECONDS_PER:
        return human_seconds(value * SECONDS_PER[unit])
    if unit == "count":
        return f"{value:,.0f}" if math.isfinite(value) else str(value)
    return sig3(value)


def cell_text(r: Record, column: str) -> str:
    """Column ``column`` of record ``r``, formatted (``-`` where it has none)."""
    if column in INFO_COLUMNS:
        value: object = r.info
        for key in INFO_COLUMNS[column][1]:
            value = value.get(key, {}) if isinstance(value, dict) else {}
        return str(value) if value not in ({}, None) else "-"
    if column not in r.metrics:
        return "-"
    spec = spec_for(column)  # the declared unit; a record of older code may hold an undeclared name
    text = fmt(r.metric(column), spec.unit if spec is not None else r.metrics[column].unit)
    m = r.metrics[column]
    if m.ci_method and m.ci_method.startswith(STDERR_CI) and m.ci_low is not None and m.ci_high is not None:
        return f"{text} ± {sig3((m.ci_high - m.ci_low) / (2 * Z95))}"  # lm-eval's stderr, as its tables show it
    return text


def _anatomy_cell(r: Record, name: str) -> str:
    m, p = r.metric(name), r.metric(f"{name}_analytic")
    return f"{'-' if m is None else f'{m / MiB:,.2f}'} / {'-' if p is None else f'{p / MiB:,.2f}'}"


def anatomy_view(rows: list[Record], compact: bool = False) -> TableView:
    """Training memory by category, measured / predicted (MiB), one row per cell; an oom row shows the
    prediction that did not fit. Distributed cells show one rank's bytes. ``compact``: the measured bytes
    in human units, then the residual of the total against its prediction (``=`` where they agree)."""
    out = []
    for r in rows:
        resid = r.metric("anatomy_total_bytes_residual")
        if compact:
            out.append((r, [fmt(r.metric(name), "bytes") for _, name in ANATOMY_COLUMNS]
                        + ["-" if resid is None else "=" if resid == 0 else ("+" if resid > 0 else "") + human_bytes(resid)]))
        else:
            out.append((r, [_anatomy_cell(r, name) for _, name in ANATOMY_COLUMNS]
                        + ["-" if resid is None else f"{resid / MiB:+,.3f}"]))
    if compact:
        return TableView(title="Training memory anatomy, measured; vs pred: the total's residual against the "
                               "prediction, = where exact (per rank under a parallel engine)", scenario="train",
                         headers=["weights", "grads", "optimizer", "saved act", "total", "vs pred"], rows=out)
    return TableView(title=ANATOMY_TITLE, scenario="train", headers=[h for h, _ in ANATOMY_COLUMNS] + ["residual"],
                     rows=out)


def _compact_columns(table: SummaryTable, names: set[str]) -> list[tuple[str, str]]:
    """``table``'s compact (column, header) pairs present in ``names``: a pattern's first match (shortest
    name first), its header's ``*`` replaced by what the pattern matched."""
    out = []
    for column, header in table.compact:
        if column.startswith("info:") or not any(ch in column for ch in "*?["):
            if column in names or column.startswith("info:"):
                out.append((column, header))
            continue
        matched = sorted((n for n in names if fnmatch.fnmatchcase(n, column)), key=lambda n: (len(n), n))
        if matched:
            stem = column.split("*", 1)[0]
            out.append((matched[0], header.replace("*", matched[0][len(stem):]) if column.endswith("*") else header))
    return out


def _suites(records: list[Record]) -> list[list[Record]]:
    """``records`` split by suite, in order of first appearance."""
    by: dict[str, list[Record]] = {}
    for r in records:
        by.setdefault(r.suite, []).append(r)
    return list(by.values())


def views(records: list[Record], compact: bool = False) -> list[TableView]:
    """Every table of ``records``, in the catalog's order (see the module docstring); ``compact``: the
    terminal's tables, per suite, with each table's key columns only."""
    if compact:
        return [v for group in _suites(records) for v in _views(group, compact=True)]
    return _views(records, compact=False)


def _views(records: list[Record], compact: bool) -> list[TableView]:
    out: list[TableView] = []
    seen: set[str] = set()
    cat = catalog()
    last = {t.scenario: t for t in cat.tables}
    suite = records[0].suite if records else ""
    for table in cat.tables:
        rows = [r for r in records if r.cell.get("scenario") == table.scenario]
        if not rows:
            continue
        names = {m for r in rows for m in r.metrics}
        if table.requires is not None and not any(fnmatch.fnmatchcase(n, table.requires) for n in names):
            continue
        if compact:
            pairs = [(c, h) for c, h in _compact_columns(table, names)
                     if c not in INFO_COLUMNS or any(cell_text(r, c) != "-" for r in rows)]
        else:
            pairs = [(c, INFO_COLUMNS[c][0] if c in INFO_COLUMNS else c)
                     for c in cat.columns(table, names | set(INFO_COLUMNS))
                     if c not in INFO_COLUMNS or any(cell_text(r, c) != "-" for r in rows)]
        view = TableView(title=f"{suite}: {table.title}" if compact else table.title, scenario=table.scenario,
                         headers=[h for _, h in pairs], rows=[(r, [cell_text(r, c) for c, _ in pairs]) for r in rows],
                         prefix=f"{suite}-" if compact else "")
        if table.scenario not in seen:
            view.reasons = [f"{r.cell_id}: {r.status}: {r.reason}" for r in rows if r.reason]
            view.reasons += [f"{r.cell_id}: not valid: {'; '.join(r.validity.reasons)}" for r in rows
                             if r.status == "ok" and r.validity is not None and not r.validity.valid]
            view.curves = [f"{r.cell_id}: loss by step {' -> '.join(f'{v:.3f}' for v in r.metrics['loss'].samples)}"
                           for r in rows if not r.reason and "loss" in r.metrics]
        seen.add(table.scenario)
        out.append(view)
        if table.scenario == "train" and table is last["train"]:
            anat = [r for r in rows if r.metrics]
            if anat:
                a = anatomy_view(anat, compact=compact)
                if compact:
                    a.title, a.prefix = f"{suite}: {a.title}", f"{suite}-"
                out.append(a)
    return out
