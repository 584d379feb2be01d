"""The report's figures (matplotlib, Agg), drawn per (suite, machine, model): never two models, suites
or machines in one figure.

Each figure function takes a :class:`~harness.track.report.figure.Subject` (the records of one suite
on one machine for one model), draws only what they measured, writes a PNG and returns what it drew,
or None when no record has what it needs (the report then names the figure as not drawn):

- :func:`~harness.track.report.anatomy.memory_anatomy`: training memory by category, measured beside
  predicted, one pair of stacked bars per training cell;
- :func:`~harness.track.report.serving.serving_load`: output throughput and TTFT against load, one
  series per (suite, engine, precision), offline engines against their batch limit in a row of their own;
- :func:`~harness.track.report.accuracy.accuracy_bits`: accuracy and perplexity against storage bits
  per parameter;
- :func:`~harness.track.report.decode.decode_bound`: measured decode tokens/s against the
  memory-bandwidth bound.

:func:`draw` makes every figure of a section and gives each its caption: what was measured, on which
model and suite, where (the machine and its hardware) and when (the span of the records' start times).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.track.report.accuracy import ACCURACY, bits_of, accuracy_bits  # noqa: F401 (re-exported)
from harness.track.report.anatomy import ANATOMY, memory_anatomy  # noqa: F401 (re-exported)
from harness.track.report.decode import decode_bound
from harness.track.report.figure import Drawn, Figure, Subject, label  # noqa: F401 (re-exported)
from harness.track.report.sections import Section, by_model, slug, when
from harness.track.report.serving import load_axis, load_of, serving_load  # noqa: F401 (re-exported)

FIGURES: dict[str, Callable[[Subject, Path], Drawn | None]] = {
    "memory-anatomy": memory_anatomy, "serving-load": serving_load, "accuracy-bits": accuracy_bits,
    "decode-bound": decode_bound}


def draw(section: Section, folder: Path, taken: set[str]) -> list[Figure]:
    """Every figure of ``section``, one per (kind, model) that has data, written under ``folder`` as
    ``<kind>--<suite>--<machine>--<model>.png`` (slugged; a number added when two slugs meet, ``taken``
    holds the names used so far and is updated)."""
    out = []
    for model, rows in by_model(section.records):
        subject = Subject(suite=section.suite, machine=section.machine, model=model, hardware=section.hardware,
                          when=when(rows), records=rows)
        for kind, fn in FIGURES.items():
            name = base = f"{kind}--{slug(section.suite)}--{slug(section.machine)}--{slug(model)}"
            n = 2
            while name in taken:
                name, n = f"{base}-{n}", n + 1
            path = folder / f"{name}.png"
            drawn = fn(subject, path)
            if drawn is None:
                continue
            taken.add(name)
            dates = when([r for r in rows if r.cell_id in set(drawn.cells)])
            caption = (f"{drawn.what} Suite {section.suite}, model {model}, machine {section.machine} "
                       f"({section.hardware}); records started {dates}.")
            out.append(Figure(kind=kind, path=path, title=drawn.title, caption=caption, cells=drawn.cells,
                              not_valid=drawn.not_valid, suite=section.suite, machine=section.machine, model=model))
    return out
