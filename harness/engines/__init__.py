"""The serving axis: engines that turn a workload's requests into generated tokens.

One module per engine, each registering its config class in :data:`ENGINES`. An engine receives the
same token-id requests as every other engine (so comparisons are like for like), generates exactly
each request's output length (EOS ignored), and returns one timestamped trace per request; the
serving scenario turns traces into metrics.

An engine is started (``start``: load the model, launch vLLM or its server), runs workloads
(``run``) and is stopped (``stop``). Cells whose engine starts are identical (:meth:`Engine.start_config`,
with the same precision, model and device) form a *group*: the planner gives them one ``group`` key,
the runner runs them in one worker process, and :func:`serve` starts the engine once for all of
them (its start time is recorded on each, with who started it). An engine can also expand into
several cells sharing its start (:meth:`Engine.points`, e.g. the server's load levels).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from harness.base.registry import Registry
from harness.base.specbase import Implementation
from harness.base.wire import Request, RequestTrace, ServeRun  # noqa: F401 (the engines' vocabulary)

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host
    from harness.base.resolved import ResolvedModel

ENGINES: Registry = Registry("engine", "harness.engines")


class Engine(Implementation):
    """Base of an engine config."""

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        """Why this engine cannot run ``cell`` on ``host`` (a skip reason), or None."""
        return None

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        """Cells this engine expands into, as (id suffix, cell settings); all share one start."""
        return [("", {})]

    def start_config(self) -> dict[str, Any] | None:
        """What this engine's start depends on (besides precision, model and device): engines with
        equal configs can share one start. None: never shared."""
        return None

    def start(self, cell: "CellView", model: "ResolvedModel") -> Any:
        """Load the model / start the engine; returns the handle ``run`` and ``stop`` take."""
        raise NotImplementedError

    def run(self, handle: Any, cell: "CellView", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
        """Run every request to completion on a started engine and return their traces."""
        raise NotImplementedError

    def stop(self, handle: Any) -> None:
        """Release what ``start`` took (processes, memory). Must not raise."""


class _Live(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    engine: Any
    handle: Any
    startup_s: float
    started_by: str
    cells_served: int = 0


_LIVE: dict[str, _Live] = {}


def serve(cell: "CellView", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
    """Serve ``requests`` on ``cell``'s engine: started here, or reused from an earlier cell of the same
    group in this process. An engine without a group is stopped after its cell; a failed run stops
    its engine (the next cell of the group starts a fresh one)."""
    assert cell.engine is not None
    key = cell.group or f"cell:{cell.id}"
    live = _LIVE.get(key)
    if live is None:
        stop_all()  # one engine at a time: another group's engine would hold memory and cores
        t0 = time.perf_counter()
        handle = cell.engine.start(cell, model)
        live = _LIVE[key] = _Live(engine=cell.engine, handle=handle, startup_s=time.perf_counter() - t0,
                                  started_by=cell.id)
    try:
        result = cell.engine.run(live.handle, cell, model, requests)
    except BaseException:
        stop(key)
        raise
    live.cells_served += 1
    if cell.group is None:
        stop(key)
    result.startup_s = live.startup_s
    result.info["engine_start"] = {"shared": cell.group is not None, "started_by": live.started_by,
                                   "cells_served": live.cells_served}
    return result


def stop(key: str) -> None:
    """Stop the live engine under ``key`` (if any)."""
    live = _LIVE.pop(key, None)
    if live is not None:
        live.engine.stop(live.handle)


def stop_all() -> None:
    """Stop every live engine of this process (the worker calls this before it exits)."""
    for key in list(_LIVE):
        stop(key)
