"""The one walk from records to tables, shared by the terminal summary and the report.

For each summary table the catalog declares (:mod:`harness.metrics`), in order: the records of its
scenario, the columns they measured (a pattern column expands to the names present), each cell's text,
and, under the first table of a scenario, the reasons of skipped and failed cells (and training's loss
curves). The training memory anatomy (measured / predicted) follows the training table. The faces only
render a :class:`TableView`: rich in :mod:`harness.track.summary`, Markdown in :mod:`harness.track.report`.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from harness.metrics import catalog, spec_for
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


def fmt(value: float | None, unit: str) -> str:
    """A value in its unit, for a table: bytes in MiB, counts with separators, otherwise 4 significant digits."""
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / MiB:,.1f} MiB"
    if unit == "count":
        return f"{value:,.0f}"
    return f"{value:,.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


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
    return fmt(r.metric(column), spec.unit if spec is not None else r.metrics[column].unit)


def _anatomy_cell(r: Record, name: str) -> str:
    m, p = r.metric(name), r.metric(f"{name}_analytic")
    return f"{'-' if m is None else f'{m / MiB:,.2f}'} / {'-' if p is None else f'{p / MiB:,.2f}'}"


def anatomy_view(rows: list[Record]) -> TableView:
    """Training memory by category, measured / predicted (MiB), one row per cell; an oom row shows the
    prediction that did not fit. Distributed cells show one rank's bytes."""
    out = []
    for r in rows:
        resid = r.metric("anatomy_total_bytes_residual")
        out.append((r, [_anatomy_cell(r, name) for _, name in ANATOMY_COLUMNS]
                    + ["-" if resid is None else f"{resid / MiB:+,.3f}"]))
    return TableView(title=ANATOMY_TITLE, scenario="train", headers=[h for h, _ in ANATOMY_COLUMNS] + ["residual"],
                     rows=out)


def views(records: list[Record]) -> list[TableView]:
    """Every table of ``records``, in the catalog's order (see the module docstring)."""
    out: list[TableView] = []
    seen: set[str] = set()
    cat = catalog()
    last = {t.scenario: t for t in cat.tables}
    for table in cat.tables:
        rows = [r for r in records if r.cell.get("scenario") == table.scenario]
        if not rows:
            continue
        cols = [c for c in cat.columns(table, {m for r in rows for m in r.metrics} | set(INFO_COLUMNS))
                if c not in INFO_COLUMNS or any(cell_text(r, c) != "-" for r in rows)]
        view = TableView(title=table.title, scenario=table.scenario,
                         headers=[INFO_COLUMNS[c][0] if c in INFO_COLUMNS else c for c in cols],
                         rows=[(r, [cell_text(r, c) for c in cols]) for r in rows])
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
                out.append(anatomy_view(anat))
    return out
