"""The gate's face: a :class:`~harness.track.compare.Comparison` printed with rich, every verdict with
its threshold and where the threshold came from, then what could not be judged and why."""

from __future__ import annotations

from typing import Any

from harness.track.compare import Comparison, Unjudged

STYLE = {"regression": "red", "improvement": "green", "noise": "yellow", "unchanged": "dim"}


def _where(result: Comparison, u: Unjudged) -> str:
    return result.where(u) + (f" {u.metric}" if u.metric else "")


def print_comparison(result: Comparison, console: Any, *, title: str, show_all: bool = False) -> None:
    """Print the judged changes (all, or those not unchanged), the unjudged pairs, and the verdict counts."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title))
    for col in ("cell", "metric", "base", "new", "change", "threshold", "verdict"):
        table.add_column(col, overflow="fold")
    for c in result.changes:
        if c.verdict == "unchanged" and not show_all and not c.caveat:
            continue
        change = f"{c.relative:+.1%}" if c.relative is not None and c.threshold.relative is not None else f"{c.delta:+.4g}"
        limit = f"{c.threshold.relative:.1%} rel" if c.threshold.relative is not None else f"{c.threshold.absolute:g} abs"
        verdict = f"[{STYLE[c.verdict]}]{c.verdict}[/{STYLE[c.verdict]}]" + (f" ({escape(c.caveat)})" if c.caveat else "")
        table.add_row(escape(result.where(c)), c.metric, f"{c.base:.4g}", f"{c.new:.4g}", change,
                      f"{limit} ({escape(c.threshold_source)}), {c.direction} is better", verdict)
    console.print(table)
    groups = (("lost (trusted in the base, gone or failed in the new results)", result.lost),
              ("invalid new records (not trusted)", result.invalid),
              ("not comparable (not like with like)", result.not_comparable))
    for label, items in groups:
        if items:
            console.print(f"{len(items)} {label}:", highlight=False)
            for u in items:
                note = " (allowed)" if u.allowed else ""
                console.print(f"  {escape(_where(result, u))}: {escape(u.why)}{note}", highlight=False, soft_wrap=True)
    for label, cells in (("only in the base (never trusted there, missing from the new results)", result.only_base),
                         ("only in the new results", result.only_new)):
        if cells:
            console.print(f"{len(cells)} cell(s) {label}: {escape(', '.join(cells))}", highlight=False, soft_wrap=True)
    counts = {v: sum(c.verdict == v for c in result.changes) for v in STYLE}
    console.print(", ".join(f"{n} {v}" for v, n in counts.items()), highlight=False)
    failures = result.failures
    console.print(f"gate: {'FAIL' if failures else 'pass'}" + (f" ({len(failures)}: {escape('; '.join(failures[:10]))}"
                  + (" ..." if len(failures) > 10 else "") + ")" if failures else ""), highlight=False, soft_wrap=True)
