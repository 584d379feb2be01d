"""``harness report``: a Markdown and an HTML report of a store, with tables per axis and figures.

Input: records (a store folder or .jsonl files); the latest record of each (suite, cell) is reported,
whatever its status, so skips and failures show with their reasons. Output, under ``out``:

- ``report.md`` and ``report.html`` (the same document; HTML rendered from the Markdown by
  markdown-it, which rich already depends on);
- ``plots/*.png``, the figures of :mod:`harness.track.report.plots`;
- ``records/<record id>.json``, every reported record in full: each table row links to its record and
  prints the command that reproduces it.

The tables are the summary's (:func:`harness.track.tables.views`: the same walk and columns as the
terminal), the training memory anatomy (measured / predicted) among them. Reads records only; matplotlib is needed for the
figures (the ``track`` extra), nothing else beyond the core.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, Field

from harness.results.records import Record
from harness.results.store import latest_per_cell
from harness.track.report.plots import FIGURES, Figure
from harness.track.tables import TableView, views

CSS = """body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}
th:first-child,td:first-child,td:nth-child(2){text-align:left}code{font-size:12px;background:#f4f4f4}
img{max-width:100%;border:1px solid #eee}"""


class Report(BaseModel):
    """The files a report consists of."""

    markdown: Path
    html: Path
    figures: list[Figure] = Field(default_factory=list)
    missing_figures: dict[str, str] = Field(default_factory=dict, description="figure -> why it was not drawn")
    records: int = 0


def latest(records: list[Record]) -> list[Record]:
    """The latest record of each (suite, cell), whatever its status, ordered by suite, scenario and time."""
    return sorted(latest_per_cell(records).values(), key=lambda r: (r.suite, r.cell.get("scenario", ""), r.started_at))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~&])")


def _md(text: str) -> str:
    """Record text as Markdown text: every character Markdown could read as markup (emphasis, links,
    raw HTML, entities, table pipes) backslash-escaped, newlines folded; it renders as itself."""
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def _code(text: str) -> str:
    """Record text as a Markdown code span: fenced by one more backtick than its longest run of them."""
    text = text.replace("\n", " ").replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""  # CommonMark strips one such space
    return f"{fence}{pad}{text}{pad}{fence}"


def _row_link(r: Record) -> str:
    return f"[{_md(r.cell_id)}](records/{r.record_id}.json)"  # record_id: a safe token, checked by the record


def _table(view: TableView) -> list[str]:
    lines = ["| cell | status | " + " | ".join(view.headers) + " | reproduce |", "|" + "---|" * (len(view.headers) + 3)]
    for r, values in view.rows:
        status = r.status if r.trusted or r.status != "ok" else "ok, **not valid**"
        lines.append(f"| {_row_link(r)} | {status} | " + " | ".join(_md(v) for v in values) + f" | {_code(r.command)} |")
    return lines


def markdown(records: list[Record], figures: list[Figure], missing: dict[str, str], source: str) -> str:
    counts = {s: sum(r.status == s for r in records) for s in ("ok", "skipped", "error", "oom", "timeout", "invalid")}
    counts["ok but not valid"] = sum(r.status == "ok" and not r.trusted for r in records)
    envs = {(r.environment.hostname, r.environment.git_sha or "-") for r in records}
    lines = ["# LLM efficiency report", "",
             f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from `{source}`: {len(records)} cells "
             f"({', '.join(f'{n} {s}' for s, n in counts.items() if n)}). Each cell links to its full record; "
             "the last column reproduces it.", ""]
    if records:
        env = records[-1].environment
        gpus = ", ".join(g.name for g in env.gpus) or "none"
        pkgs = ", ".join(f"{k} {v}" for k, v in sorted(env.packages.items()) if v)
        lines += ["## Environment", "", f"- host: {env.cpu_model} ({env.cpu_count} cores, {env.memory_bytes / 2**30:.0f} GiB), GPUs: {gpus}",
                  f"- commits: {', '.join(sorted({sha[:12] for _, sha in envs}))}", f"- packages: {pkgs}", ""]
    lines += ["## Figures", ""]
    for f in figures:
        lines += [f"### {f.title}", "", f"![{f.title}](plots/{f.path.name})", "",
                  f"Cells: {', '.join(f.cells)}.", ""]
    for name, why in missing.items():
        lines += [f"- *{name}*: not drawn: {why}."]
    lines.append("")
    for view in views(records):
        lines += [f"## {view.title}", ""] + _table(view) + [""]
        if view.reasons:
            lines += ["Not measured, or not valid:", ""] + [f"- {_md(line)}" for line in view.reasons] + [""]
    return "\n".join(lines) + "\n"


def to_html(md: str) -> str:
    from markdown_it import MarkdownIt

    # raw HTML off: whatever a record holds is shown as text, never run (the Markdown escapes it too)
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape('LLM efficiency report')}</title>"
            f"<style>{CSS}</style></head><body>\n{body}</body></html>\n")


def build(records: list[Record], out: str | Path, source: str = "results") -> Report:
    """Write the report of ``records`` under ``out`` (see the module docstring)."""
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "records").mkdir(parents=True, exist_ok=True)
    rows = latest(records)
    for r in rows:
        (out / "records" / f"{r.record_id}.json").write_text(r.model_dump_json(indent=1) + "\n")
    figures, missing = [], {}
    for name, draw in FIGURES.items():
        fig = draw(rows, out / "plots" / f"{name}.png")
        if fig is None:
            missing[name] = "no record measured what it needs"
        else:
            figures.append(fig)
    md = markdown(rows, figures, missing, source)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(to_html(md))
    return Report(markdown=out / "report.md", html=out / "report.html", figures=figures, missing_figures=missing,
                  records=len(rows))
