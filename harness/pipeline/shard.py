"""Deterministic sharding of planned cells by their cost: how one night of suites is split over N runners
or N array tasks (``harness plan --shards N``, ``harness run --shard K/N``, pytest ``--harness-shard K/N``).

- **Units.** A unit never splits: the cells of one engine start (a ``group``: a server's load levels,
  vLLM static and continuous on one start) go together; any other cell (a distributed cell included:
  its ranks are one process tree) is a unit alone. A planned skip costs nothing, but still lands in
  exactly one shard (its record is written there).
- **Cost.** The last measured ``duration_s`` of the same cell key on the same logical machine in a store
  (``--results``), else the scenario's default (:data:`DEFAULT_S`); a unit costs the sum of its cells.
- **Assignment.** Longest first (ties by the unit's first cell id), each unit to the least-loaded shard
  (ties to the lowest index): greedy LPT, as PyTorch's test sharding does. The same plans, costs and N
  give the same shards on every machine and every run; every cell lands in exactly one shard for every N.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from harness.base.errors import HarnessError

if TYPE_CHECKING:
    from harness.pipeline.planner import Plan
    from harness.results.records import Record

DEFAULT_S = {"infer": 180.0, "train": 120.0, "serve": 120.0}  # seconds, a cell never measured on this machine
SHARD = re.compile(r"(\d+)/(\d+)")


class Unit(BaseModel):
    """Cells that run together, with their predicted seconds and where each figure came from."""

    suite: str
    cells: list[str]
    cost_s: float
    measured: int = Field(default=0, description="how many of the cells' costs were measured (the rest: defaults)")


class Shard(BaseModel):
    index: int = Field(description="1-based")
    units: list[Unit] = Field(default_factory=list)

    @property
    def cost_s(self) -> float:
        return sum(u.cost_s for u in self.units)

    @property
    def cells(self) -> list[str]:
        return [c for u in self.units for c in u.cells]


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with 1 <= K <= N; HarnessError saying what is allowed otherwise."""
    m = SHARD.fullmatch(text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise HarnessError(f"--shard {text!r}: give K/N with 1 <= K <= N (e.g. 2/4: the second of four shards)")
    return int(m.group(1)), int(m.group(2))


def last_durations(records: list["Record"], machine: str) -> dict[str, float]:
    """Cell key -> the latest measured ``duration_s`` on ``machine`` (skipped records measure nothing)."""
    from harness.results.machine import machine_of

    out: dict[str, tuple] = {}
    for r in records:
        if r.status == "skipped" or machine_of(r) != machine:
            continue
        if r.cell_key not in out or r.started_at >= out[r.cell_key][0]:
            out[r.cell_key] = (r.started_at, r.duration_s)
    return {k: v[1] for k, v in out.items()}


def units(plans: list["Plan"], durations: dict[str, float] | None = None) -> list[Unit]:
    """The plans' cells as units (see the module docstring), with their costs."""
    durations = durations or {}
    out: list[Unit] = []
    groups: dict[tuple[str, str], Unit] = {}
    for p in plans:
        for pc in p.cells:
            cell = pc.cell
            measured = cell.key() in durations
            cost = 0.0 if pc.skip else durations.get(cell.key(), DEFAULT_S.get(cell.scenario, 120.0))
            if cell.group is not None and pc.skip is None:
                unit = groups.get((p.suite, cell.group))
                if unit is None:
                    unit = groups[(p.suite, cell.group)] = Unit(suite=p.suite, cells=[], cost_s=0.0)
                    out.append(unit)
                unit.cells.append(cell.id)
                unit.cost_s += cost
                unit.measured += measured
            else:
                out.append(Unit(suite=p.suite, cells=[cell.id], cost_s=cost, measured=int(measured and not pc.skip)))
    return out


def assign(all_units: list[Unit], n: int) -> list[Shard]:
    """Greedy longest-first assignment of ``all_units`` to ``n`` shards (see the module docstring)."""
    if n < 1:
        raise HarnessError(f"shards: need at least one, got {n}")
    shards = [Shard(index=i + 1) for i in range(n)]
    for unit in sorted(all_units, key=lambda u: (-u.cost_s, u.cells[0])):
        min(shards, key=lambda s: (s.cost_s, s.index)).units.append(unit)
    return shards


def shard_cells(plans: list["Plan"], k: int, n: int, durations: dict[str, float] | None = None) -> set[str]:
    """The cell ids of shard ``k`` of ``n``."""
    return set(assign(units(plans, durations), n)[k - 1].cells)
