"""``harness report``: a Markdown and an HTML report of a store, a section per suite and machine.

Input: records (a store folder or .jsonl files); the latest record of each (suite, machine, cell) is
reported, whatever its status, so skips and failures show with their reasons. The machine is the
record's logical machine (:func:`harness.track.report.machine.machine_of`). Output, under ``out``:

- ``report.md`` and ``report.html`` (the same document; HTML rendered from the Markdown by markdown-it,
  which rich already depends on, raw HTML off: :mod:`harness.track.report.page`);
- ``plots/<kind>--<suite>--<machine>--<model>.png``, the figures of :mod:`harness.track.report.plots`,
  one per (suite, machine, model) and kind that has data, each with a caption saying what was
  measured, on which model and suite, where and when;
- ``records/<record id>.json``, every reported record in full: each table row links to its record and
  prints the command that reproduces it.

A section holds its figures, then its tables (the summary's, :func:`harness.track.tables.views` of the
section's records: the same walk and columns as the terminal, the training memory anatomy among them),
then the cells that are not valid, skipped and failed, each list apart. A cell that is not valid
(status ``invalid``, or ``ok`` with ``validity.valid`` false) carries a badge in the tables and is
drawn hollow (or faint) in the figures. Reads records only; matplotlib is needed for the figures (the
``track`` extra), nothing else beyond the core.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from harness.results.records import Record
from harness.track.report.figure import Figure
from harness.track.report.machine import machine_of
from harness.track.report.page import _code, _md, markdown, to_html
from harness.track.report.plots import FIGURES, draw
from harness.track.report.sections import Section, latest, sections

__all__ = ["Figure", "Report", "Section", "_code", "_md", "build", "latest", "machine_of", "sections"]


class Report(BaseModel):
    """The files a report consists of."""

    markdown: Path
    html: Path
    figures: list[Figure] = Field(default_factory=list)
    missing_figures: dict[str, str] = Field(default_factory=dict, description="figure kind -> why none was drawn")
    sections: list[tuple[str, str]] = Field(default_factory=list, description="(suite, machine) of each section, in order")
    records: int = 0


def build(records: list[Record], out: str | Path, source: str = "results") -> Report:
    """Write the report of ``records`` under ``out`` (see the module docstring)."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "records").mkdir(parents=True, exist_ok=True)
    rows = latest(records)
    for r in rows:
        (out / "records" / f"{r.record_id}.json").write_text(r.model_dump_json(indent=1) + "\n")
    secs = sections(rows)
    taken: set[str] = set()
    figures = [f for sec in secs for f in draw(sec, out / "plots", taken)]
    missing = {kind: "no record measured what it needs" for kind in FIGURES if not any(f.kind == kind for f in figures)}
    md = markdown(rows, secs, figures, missing, source)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(to_html(md))
    return Report(markdown=out / "report.md", html=out / "report.html", figures=figures, missing_figures=missing,
                  sections=[(s.suite, s.machine) for s in secs], records=len(rows))
