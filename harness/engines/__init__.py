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

:func:`serve` runs a cell's workload ``warmup`` times untimed, then ``repeats`` times timed, on that
one start. Before every pass (so between the cells of a shared start too) it asks the engine to
empty whatever cache a run leaves behind (:meth:`Engine.reset_cache`: vLLM's prefix cache, when the
engine says it is on), so no pass is served from an earlier pass's prompts. The caller says how a
timed pass is measured (``timed``: a context manager around each timed ``run``; this package
imports nothing from ``harness.measure``).

An engine can span nodes (vLLM's ``nnodes``): every node runs the same cells; node 0 starts, serves
and measures, and on every other node (:meth:`Engine.follows`) :func:`follow` lends this node's ranks
to node 0's start instead, until it stops; those nodes' records are not stored.

An engine start can also be scored for accuracy (``score``: e.g. lm-evaluation-harness tasks): after
the first cell's timed passes, :func:`serve` hands ``score`` the engine as it is running
(:meth:`Engine.eval_target`) and keeps the answer on the start, so every cell of a shared start reports
the one scoring, made once, after timed passes only (it never runs inside a timed region).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, Field

from harness.base.registry import Registry
from harness.base.specbase import Implementation
from harness.base.wire import EvalTarget, Request, RequestTrace, ServeRun  # noqa: F401 (the engines' vocabulary)

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

    def reset_cache(self, handle: Any) -> bool | None:
        """Empty every cache a run leaves in the started engine for the next one (vLLM's prefix cache),
        asking the engine whether it has one on. True: it was on and is now empty; False: the engine
        has such a cache, switched off; None: no cache outlives a run, or the engine does not say
        whether one is on (one that may have it empties it anyway). Raises if a reset fails."""
        return None

    def eval_target(self, handle: Any, model: "ResolvedModel") -> EvalTarget | None:
        """The started engine as an accuracy harness scores it (see :class:`EvalTarget`); None when this
        engine cannot be scored."""
        return None

    def stop(self, handle: Any) -> None:
        """Release what ``start`` took (processes, memory). Must not raise."""

    def follows(self, cell: "CellView") -> bool:
        """Whether, on this node, ``cell`` only lends ranks to an engine another node runs and measures
        (a multi-node engine on a node > 0): then :func:`follow` runs it instead of :func:`serve`."""
        return False

    def follow(self, cell: "CellView", model: "ResolvedModel") -> dict[str, Any]:
        """Lend this node's ranks to node 0's engine until it stops; returns what happened."""
        raise NotImplementedError


class _Live(BaseModel):
    model_config = {"arbitrary_types_allowed": True}

    engine: Any
    handle: Any
    startup_s: float
    started_by: str
    cells_served: int = 0
    scored: Any = None  # what ``score`` returned on this start (once per start)
    scored_by: str | None = None


_LIVE: dict[str, _Live] = {}


class Served(BaseModel):
    """What :func:`serve` returns: a cell's timed passes of one workload on one engine start."""

    runs: list[ServeRun] = Field(description="the timed passes, in order (each run's times from its own start)")
    warmup_s: list[float] = Field(default_factory=list, description="durations of the untimed passes before them")
    startup_s: float = Field(description="the engine start this cell used (shared within a group)")
    engine_start: dict[str, Any] = Field(description="shared, started_by, cells_served")
    prefix_cache: dict[str, Any] = Field(description="enabled: the engine's answer (Engine.reset_cache: True, False, "
                                                     "or None); reset_before_each_pass: emptied before every pass")
    scored: Any = Field(default=None, description="what ``score`` returned on this engine start (None: not asked)")
    scored_by: str | None = Field(default=None, description="the cell after whose timed passes the start was scored")


def serve(cell: "CellView", model: "ResolvedModel", requests: list[Request], *, repeats: int = 1, warmup: int = 0,
          timed: Callable[[], AbstractContextManager[Any]] = nullcontext,
          score: Callable[[EvalTarget], Any] | None = None) -> Served:
    """Serve ``requests`` ``warmup`` times untimed, then ``repeats`` times each inside ``timed()``, on
    ``cell``'s engine: started here, or reused from an earlier cell of the same group in this process.
    The engine's cache is reset before every pass (outside ``timed``). With ``score``, the start is
    scored once, after the timed passes of the first cell that asks (``score(engine.eval_target(...))``;
    later cells of the start get the same answer). An engine without a group is stopped after its
    cell; a failed pass or scoring stops its engine (the next cell of the group starts a fresh one) and
    raises. Raises ValueError for ``repeats`` < 1 or ``warmup`` < 0, or for ``score`` on an engine that
    has no :meth:`Engine.eval_target`."""
    assert cell.engine is not None
    if repeats < 1 or warmup < 0:
        raise ValueError(f"serve needs repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    key = cell.group or f"cell:{cell.id}"
    live = _LIVE.get(key)
    if live is None:
        stop_all()  # one engine at a time: another group's engine would hold memory and cores
        t0 = time.perf_counter()
        handle = cell.engine.start(cell, model)
        live = _LIVE[key] = _Live(engine=cell.engine, handle=handle, startup_s=time.perf_counter() - t0,
                                  started_by=cell.id)
    runs: list[ServeRun] = []
    warm_s: list[float] = []
    resets: list[bool | None] = []  # the engine's answer before each pass
    try:
        for i in range(warmup + repeats):
            resets.append(cell.engine.reset_cache(live.handle))
            if i < warmup:
                warm_s.append(cell.engine.run(live.handle, cell, model, requests).duration_s)
                continue
            with timed():
                runs.append(cell.engine.run(live.handle, cell, model, requests))
        if score is not None and live.scored_by is None:
            target = cell.engine.eval_target(live.handle, model)
            if target is None:
                raise ValueError(f"engine {cell.engine.kind!r} cannot be scored for accuracy (it has no eval target)")
            live.scored, live.scored_by = score(target), cell.id
    except BaseException:
        stop(key)
        raise
    live.cells_served += 1
    if cell.group is None:
        stop(key)
    for r in runs:
        r.startup_s = live.startup_s
    on = resets[0]
    return Served(runs=runs, warmup_s=warm_s, startup_s=live.startup_s,
                  engine_start={"shared": cell.group is not None, "started_by": live.started_by,
                                "cells_served": live.cells_served},
                  prefix_cache={"enabled": on, "reset_before_each_pass": on is True and all(resets)},
                  scored=live.scored if score is not None else None,
                  scored_by=live.scored_by if score is not None else None)


_FOLLOWED: dict[str, dict[str, Any]] = {}


def follow(cell: "CellView", model: "ResolvedModel") -> dict[str, Any]:
    """On a node that only lends ranks to another node's engine (:meth:`Engine.follows`): lend them for
    as long as that engine runs, once per group (node 0 serves every cell of a group on one start, so
    this node's later cells of the group find the start over and say which cell lent the ranks)."""
    assert cell.engine is not None
    key = cell.group or f"cell:{cell.id}"
    done = _FOLLOWED.get(key)
    if done is not None:
        return done | {"shared": True}
    stop_all()
    _FOLLOWED[key] = cell.engine.follow(cell, model) | {"lent_in": cell.id, "shared": False}
    return _FOLLOWED[key]


def scored_start(cell: "CellView") -> bool:
    """Whether ``cell``'s engine start is running in this process and was already scored (by an earlier
    cell of its group): this process' lifetime memory peak then includes the scoring."""
    live = _LIVE.get(cell.group or f"cell:{cell.id}")
    return live is not None and live.scored_by is not None


def stop(key: str) -> None:
    """Stop the live engine under ``key`` (if any)."""
    live = _LIVE.pop(key, None)
    if live is not None:
        live.engine.stop(live.handle)


def stop_all() -> None:
    """Stop every live engine of this process (the worker calls this before it exits)."""
    for key in list(_LIVE):
        stop(key)
