"""The report as Markdown, and its HTML rendering.

Every text that comes from a record (cell ids, reasons, commands, suite and model names, host facts)
is escaped here: :func:`_md` for Markdown text, :func:`_code` for code spans, and the HTML is rendered by
markdown-it with raw HTML off, so what a record holds is shown as text, never run. Badges (``**not
valid**``, ``*skipped*``, ``**oom**``...) are Markdown emphasis written by this module only (a record's
``*`` is escaped), given a class in the HTML; tables scroll inside their own box, never the page.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone
from typing import Any

from harness.results.records import Record
from harness.track.report.figure import SHOWN, Figure
from harness.track.report.machine import hardware
from harness.track.report.sections import Section, by_model, slug, when
from harness.track.tables import TableView, views

FAILED = ("error", "oom", "timeout")
BADGES = {"not valid": "invalid", "invalid": "invalid", "error": "failed", "oom": "failed", "timeout": "failed",
          "skipped": "skipped"}
CSS = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;max-width:1280px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.45}
h2{border-top:2px solid #ddd;padding-top:.6em;margin-top:2.2em}h4{margin-bottom:.3em}
p,li{overflow-wrap:anywhere}
.table-box{overflow-x:auto;max-width:100%;margin:.6em 0 1.2em}
table{border-collapse:collapse;font-size:12.5px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}td{white-space:nowrap}
th{background:#f6f6f6;min-width:4.5em}
th:first-child,th:nth-child(2),th:last-child,td:first-child,td:nth-child(2),td:last-child{text-align:left}
td:first-child{white-space:normal;overflow-wrap:anywhere;min-width:12em}td:last-child{white-space:normal;min-width:18em}
code{font-size:12px;background:#f4f4f4;overflow-wrap:anywhere}
img{max-width:100%;height:auto;border:1px solid #eee;display:block}
.badge{display:inline-block;padding:0 .45em;border-radius:.6em;font-size:11.5px;font-weight:600;font-style:normal;white-space:nowrap}
.badge.invalid{background:#ffe2a8;color:#6b4200}.badge.failed{background:#fcd4d4;color:#9b0000}
.badge.skipped{background:#e6e6e6;color:#555}
tr:has(.badge.invalid) td{background:#fff9ec}tr:has(.badge.skipped) td{color:#888}"""

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#!~&])")


def _md(text: str) -> str:
    """Record text as Markdown text: every character Markdown could read as markup (emphasis, links,
    raw HTML, entities, table pipes) backslash-escaped, newlines folded; it renders as itself."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _code(text: str) -> str:
    """Record text as a Markdown code span: fenced by one more backtick than its longest run of them."""
    text = str(text).replace("\n", " ").replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""  # CommonMark strips one such space
    return f"{fence}{pad}{text}{pad}{fence}"


def status_badge(r: Record) -> str:
    """A cell's status for a table: ``ok``, ``ok, **not valid**``, ``**invalid**``, ``*skipped*`` or the
    failure in bold."""
    if r.status == "ok":
        return "ok" if r.trusted else "ok, **not valid**"
    return "*skipped*" if r.status == "skipped" else f"**{r.status}**"


def counts(records: list[Record]) -> str:
    """``12 cells: 8 ok, 1 ok but **not valid**, 2 *skipped*, 1 **oom**``."""
    parts = [f"{sum(r.trusted for r in records)} ok"]
    if n := sum(r.status == "ok" and not r.trusted for r in records):
        parts.append(f"{n} ok but **not valid**")
    for s in ("invalid", "skipped", *FAILED):
        if n := sum(r.status == s for r in records):
            parts.append(f"{n} " + ("*skipped*" if s == "skipped" else f"**{s}**"))
    return f"{len(records)} cells: " + ", ".join(parts)


def _row_link(r: Record) -> str:
    return f"[{_md(r.cell_id)}](records/{r.record_id}.json)"  # record_id: a safe token, checked by the record


def _table(view: TableView) -> list[str]:
    # a zero-width space after each underscore: a long metric name wraps at its words, not mid-word
    headers = ["cell", "status", *(_md(h).replace("\\_", "\\_\u200b") for h in view.headers), "reproduce"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r, values in view.rows:
        lines.append("| " + " | ".join([_row_link(r), status_badge(r), *(_md(v) for v in values), _code(r.command)]) + " |")
    return lines


def _heading(suite: str, machine: str) -> str:
    return f"{_md(suite)} on {_md(machine)}"


def _lists(records: list[Record]) -> list[str]:
    """Cells that are not valid, skipped and failed, each list apart, with their reasons."""
    bad = [r for r in records if r.status in SHOWN and not r.trusted]
    out = []
    for title, rows, why in (
            ("Not valid (measured, not trusted)", bad,
             lambda r: "; ".join(r.validity.reasons) if r.validity and r.validity.reasons else (r.reason or "no reason recorded")),
            ("Skipped (not run)", [r for r in records if r.status == "skipped"], lambda r: r.reason or "no reason recorded"),
            ("Failed", [r for r in records if r.status in FAILED], lambda r: f"{r.status}: {r.reason or 'no reason recorded'}")):
        if rows:
            out += [f"### {title}", ""] + [f"- {_md(r.cell_id)}: {_md(why(r))}" for r in rows] + [""]
    return out


def section(sec: Section, figures: list[Figure], number: dict[str, int]) -> list[str]:
    """The Markdown of one (suite, machine) section: where and when, its figures, its tables, then the
    cells that are not valid, skipped and failed."""
    models = ", ".join(_code(m) for m, _ in by_model(sec.records))
    lines = [f"## {_heading(sec.suite, sec.machine)}", "",
             f"Suite {_code(sec.suite)} on machine {_code(sec.machine)} ({_md(sec.hardware)}); model {models}; "
             f"records started {_md(when(sec.records))}; {counts(sec.records)}.", ""]
    if figures:
        lines += ["### Figures", ""]
    for f in figures:
        number["n"] += 1
        lines += [f"#### Figure {number['n']}. {_md(f.title)}: {_md(f.model)}", "",
                  f"![{_md(f.title)}, {_md(f.model)}](plots/{f.path.name})", "",
                  f"*Figure {number['n']}.* {_md(f.caption)}"
                  + (f" Not valid (hollow or faint): {_md(', '.join(f.not_valid))}." if f.not_valid else ""), ""]
    shown: set[str] = set()
    for view in views(sec.records):
        if not view.headers and view.scenario in shown:  # nothing measured: the rows are in a table above
            continue
        shown.add(view.scenario)
        lines += [f"### {_md(view.title)}", ""] + _table(view) + [""]
        if view.curves:
            lines += ["Loss by step:", ""] + [f"- {_md(c)}" for c in view.curves] + [""]
    return lines + _lists(sec.records)


def markdown(rows: list[Record], secs: list[Section], figures: list[Figure], missing: dict[str, str], source: str) -> str:
    """The whole report (see :mod:`harness.track.report`)."""
    lines = ["# LLM efficiency report", "",
             f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from {_code(source)}: {counts(rows)}. "
             "One section per suite and machine, one figure per model: numbers of two suites, machines or models "
             "are never drawn in one figure nor listed in one table. Each cell links to its full record; the last "
             "column reproduces it. Badges: ok, **not valid** (measured on a contended or too short run: not "
             "trusted), *skipped* (not run, with its reason), **error** / **oom** / **timeout** (failed).", "",
             "## Contents", ""]
    for sec in secs:
        lines.append(f"- [{_heading(sec.suite, sec.machine)}](#{slug(_heading(sec.suite, sec.machine), 200)}): "
                     f"{counts(sec.records)}")
    if missing:
        lines += ["", "Figures not drawn: " + "; ".join(f"*{k}*: {v}" for k, v in missing.items()) + "."]
    lines += ["", "## Machines", ""]
    for machine in sorted({s.machine for s in secs}):
        recs = [r for s in secs if s.machine == machine for r in s.records]
        env = max(recs, key=lambda r: r.started_at).environment
        pkgs = ", ".join(f"{k} {v}" for k, v in sorted(env.packages.items()) if v)
        shas = sorted({r.environment.git_sha[:12] + ("+dirty" if r.environment.git_dirty else "") for r in recs if r.environment.git_sha})
        lines += [f"- {_code(machine)}: {_md(hardware(recs))}; commits {', '.join(shas) or '-'}; "
                  f"records started {_md(when(recs))}; packages (latest record): {_md(pkgs)}"]
    lines.append("")
    number = {"n": 0}
    for sec in secs:
        lines += section(sec, [f for f in figures if (f.suite, f.machine) == (sec.suite, sec.machine)], number)
    return "\n".join(lines) + "\n"


def _badge_rule(tag: str) -> Any:
    def render(renderer: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
        inner = tokens[idx + 1].content if idx + 1 < len(tokens) else ""
        kind = BADGES.get(inner)
        if kind is None or (tag == "em") != (kind == "skipped"):
            return f"<{tag}>"
        return f'<{tag} class="badge {kind}">'
    return render


def _heading_rule(renderer: Any, tokens: list, idx: int, options: Any, env: Any) -> str:
    tag = tokens[idx].tag
    if tag == "h2":
        return f'<h2 id="{slug(tokens[idx + 1].content, 200)}">'
    return f"<{tag}>"


def to_html(md: str) -> str:
    """The report's HTML: ``md`` rendered by markdown-it with raw HTML off (whatever a record holds is
    shown as text, never run; the Markdown escapes it too), tables in a scrolling box of their own,
    badges classed, sections given ids for the contents."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    parser.add_render_rule("table_open", lambda *a: '<div class="table-box"><table>\n')
    parser.add_render_rule("table_close", lambda *a: "</table></div>\n")
    parser.add_render_rule("strong_open", _badge_rule("strong"))
    parser.add_render_rule("em_open", _badge_rule("em"))
    parser.add_render_rule("heading_open", _heading_rule)
    body = parser.render(md)
    return (f"<!doctype html>\n<html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape('LLM efficiency report')}</title><style>{CSS}</style></head><body>\n{body}</body></html>\n")
