"""How the report splits records: a section per (suite, machine), and within it one figure per model.

Numbers of two suites, two machines or two models are never drawn in one figure nor listed in one
table: each answers its own question on its own hardware, and their scales differ by orders of
magnitude (a tiny model's 8 MiB beside a 135M-parameter model's 2.8 GB).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict

from harness.results.records import Record
from harness.results.store import latest_per_cell
from harness.track.report.machine import hardware, machine_of


class Section(BaseModel):
    """The records of one suite on one machine (the latest of each cell), in report order."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    suite: str
    machine: str
    records: list[Record]

    @property
    def hardware(self) -> str:
        return hardware(self.records)

    @property
    def anchor(self) -> str:
        return slug(f"{self.suite}-on-{self.machine}")


def latest(records: list[Record]) -> list[Record]:
    """The latest record of each (suite, machine, cell), whatever its status, ordered by suite, machine,
    scenario and time."""
    by_machine: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_machine[machine_of(r)].append(r)
    out = [r for rs in by_machine.values() for r in latest_per_cell(rs).values()]
    return sorted(out, key=lambda r: (r.suite, machine_of(r), r.cell.get("scenario", ""), r.started_at))


def sections(rows: list[Record]) -> list[Section]:
    """``rows`` (see :func:`latest`) split by (suite, machine), in order."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in rows:
        groups[(r.suite, machine_of(r))].append(r)
    return [Section(suite=s, machine=m, records=rs) for (s, m), rs in sorted(groups.items())]


def model_ref(cell: dict) -> str:
    """A cell's model in the shorthand of ``--model`` (``embedded:smollm2-135m-instruct``, ``tiny:llama``,
    ``hub:ORG/NAME@REV``, ``local:PATH``); ``model not recorded`` when the cell has none."""
    model = cell.get("model")
    if not isinstance(model, dict) or not model.get("kind"):
        return "model not recorded"
    kind = str(model["kind"])
    detail = model.get("id") or model.get("arch") or model.get("path") or ""
    rev = f"@{model['revision']}" if model.get("revision") else ""
    return f"{kind}:{detail}{rev}" if detail else kind


def by_model(records: list[Record]) -> list[tuple[str, list[Record]]]:
    """``records`` split by model (the whole stored model config, so two tiny models of different sizes
    are two models), each with a label: its :func:`model_ref`, plus a short hash of the config when two
    models of the list share a reference."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[json.dumps(r.cell.get("model"), sort_keys=True, default=str)].append(r)
    refs = {key: model_ref(rs[0].cell) for key, rs in groups.items()}
    out = []
    for key, rs in groups.items():
        clash = sum(ref == refs[key] for ref in refs.values()) > 1
        out.append((refs[key] + (f" #{hashlib.sha256(key.encode()).hexdigest()[:6]}" if clash else ""), rs))
    return sorted(out, key=lambda p: p[0])


def when(records: list[Record]) -> str:
    """The span of the records' start times, in UTC: ``2026-11-01 09:00 to 09:40 UTC`` (the date once
    when it is one day)."""
    times = sorted(_utc(r.started_at) for r in records)
    if not times:
        return "no records"
    lo, hi = times[0], times[-1]
    if lo.date() == hi.date():
        return f"{lo:%Y-%m-%d %H:%M}" + (f" to {hi:%H:%M}" if hi != lo else "") + " UTC"
    return f"{lo:%Y-%m-%d %H:%M} to {hi:%Y-%m-%d %H:%M} UTC"


def _utc(t: datetime) -> datetime:
    return t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)


def slug(text: str, limit: int = 48) -> str:
    """``text`` as a file or anchor name: lower-case letters, digits and single dashes (``x`` if empty)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"
