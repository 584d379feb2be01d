"""The planner: expands a suite into cells and decides, before anything runs, which are skipped and why.

Pure: it reads the suite and a :class:`~harness.base.host.Host` snapshot; it touches no device and imports
no framework. Skip reasons come from the suite's exclusions, the model source, and each
implementation's ``supports(cell, host)``; skipped cells stay in the plan as data.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from harness.base.errors import HarnessError
from harness.base.host import Host
from harness.measure import lmeval
from harness.spec.cell import Cell
from harness.spec.suite import Suite
from harness.spec.training import point_label, step_supports


class PlannedCell(BaseModel):
    cell: Cell
    skip: str | None = None
    skipped_by: Literal["exclude", "model", "device", "precision", "mode", "parallel", "settings", "engine"] | None = None


class Plan(BaseModel):
    suite: str
    source: str | None = None
    model_override: str | None = None
    cells: list[PlannedCell]

    @property
    def runnable(self) -> list[PlannedCell]:
        return [p for p in self.cells if p.skip is None]

    @property
    def skipped(self) -> list[PlannedCell]:
        return [p for p in self.cells if p.skip is not None]

    def command(self, cell: Cell, results: str | Path = "results") -> str:
        """Shell command that reruns one cell alone into the store folder ``results``, rerunning it even
        when that store holds its record (``--no-resume``); every argument shell-quoted (``shlex.join``:
        a ``local:`` path or a folder with spaces stays one argument)."""
        args = ["harness", "run", self.source or "<suite.yaml>", "--only", cell.id]
        if self.model_override:
            args += ["--model", self.model_override]
        return shlex.join([*args, "--results", str(results), "--no-resume"])


def _pick(names: list[str] | None, items: list[Any], label: Any) -> list[Any]:
    return items if names is None else [i for i in items if label(i) in names]


def expand(suite: Suite, device: Literal["cpu", "cuda"]) -> list[Cell]:
    """Every cell of the suite's cross-product, in a stable order (inference, training, serving)."""
    common: dict[str, Any] = dict(suite=suite.name, model=suite.model, device=device, seed=suite.seed,
                                  timeout_s=suite.timeout_s, validity=suite.validity)
    label = lambda x: x.label  # noqa: E731
    cells: list[Cell] = []
    if suite.inference:
        settings = suite.inference.model_dump(mode="json", exclude={"precisions", "reference"})
        picked = _pick(suite.inference.precisions, suite.precisions, label)
        ref_name = suite.inference.reference or (picked[0].label if picked else None)
        reference = next((p for p in suite.precisions if p.label == ref_name), None)
        for p in picked:
            cells.append(Cell(id=f"{suite.name}-infer-{p.label}", scenario="infer", precision=p, reference=reference,
                              settings=settings, **common))
    if suite.training:
        varied = suite.training.varied()
        for m in suite.training.modes:
            for p in _pick(suite.training.precisions, suite.precisions, label):
                for par in suite.training.parallel:
                    for point in suite.training.points():
                        parts = [suite.name, "train", m.label, p.label, par.label if par else "", point_label(point, varied)]
                        cells.append(Cell(id="-".join(x for x in parts if x), scenario="train", precision=p, mode=m,
                                          parallel=par, settings=point, **common))
    if suite.serving:
        workloads = _pick(suite.serving.workloads, suite.workloads, lambda w: w.name)
        serve_settings: dict[str, Any] = {"repeats": suite.serving.repeats, "warmup": suite.serving.warmup}
        if suite.serving.slo:
            serve_settings["slo"] = suite.serving.slo.model_dump(mode="json")
        if suite.serving.eval:
            serve_settings["eval"] = suite.serving.eval.model_dump(mode="json")
        for e in suite.serving.engines:
            for p in _pick(suite.serving.precisions, suite.precisions, label):
                for w in workloads:
                    for point, extra in e.points():
                        suffix = (f"-{w.name}" if len(workloads) > 1 else "") + (f"-{point}" if point else "")
                        cells.append(Cell(id=f"{suite.name}-serve-{e.label}-{p.label}{suffix}", scenario="serve",
                                          precision=p, engine=e, workload=w, settings=serve_settings | extra, **common))
        _group_engine_starts(cells)
    ids = [c.id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise HarnessError(f"suite {suite.name!r} yields duplicate cell ids {dupes}: give the clashing items a `name:`")
    return cells


def _group_engine_starts(cells: list[Cell]) -> None:
    """Give serving cells whose engine starts are identical (engine start config, precision, model,
    device) one ``group`` key, so they share one engine start; a start used once gets no group."""
    import hashlib
    import json

    keys: dict[str, list[Cell]] = {}
    for cell in cells:
        config = cell.engine.start_config() if cell.engine is not None else None
        if config is None:
            continue
        blob = json.dumps([config, cell.precision.model_dump(mode="json"), cell.model.model_dump(mode="json"),
                           cell.device], sort_keys=True)
        keys.setdefault(hashlib.sha256(blob.encode()).hexdigest()[:12], []).append(cell)
    for key, members in keys.items():
        if len(members) > 1:
            for cell in members:
                cell.group = f"{members[0].engine.kind}-{key}"  # type: ignore[union-attr]


def plan(suite: Suite, host: Host, *, source: str | None = None, model_override: str | None = None) -> Plan:
    """Expand ``suite`` for ``host`` and attach a skip reason to every cell that cannot run there."""
    device: Literal["cpu", "cuda"] = "cuda" if suite.device == "cuda" or (suite.device == "auto" and host.has_cuda) else "cpu"
    model_reason = suite.model.check()
    planned = []
    for cell in expand(suite, device):
        coords = cell.coords()
        skip, by = None, None
        excluded = next((ex for ex in suite.exclude if ex.matches(coords)), None)
        if excluded is not None:
            skip, by = f"excluded by the suite: {excluded.reason}", "exclude"
        elif model_reason:
            skip, by = model_reason, "model"
        elif device == "cuda" and not host.has_cuda:
            skip, by = "the suite asks for CUDA and this host has no CUDA device", "device"
        elif (reason := cell.precision.supports(cell, host)) is not None:
            skip, by = reason, "precision"
        elif cell.reference is not None and (reason := cell.reference.supports(cell, host)) is not None:
            skip, by = f"its reference precision {cell.reference.label!r} cannot run: {reason}", "precision"
        elif cell.mode is not None and (reason := cell.mode.supports(cell, host)) is not None:
            skip, by = reason, "mode"
        elif cell.parallel is not None and (reason := cell.parallel.supports(cell, host)) is not None:
            skip, by = reason, "parallel"
        elif cell.scenario == "train" and (reason := step_supports(cell, host)) is not None:
            skip, by = reason, "settings"
        elif cell.engine is not None and (reason := cell.engine.supports(cell, host)) is not None:
            skip, by = reason, "engine"
        elif cell.settings.get("eval") and (reason := lmeval.missing()) is not None:
            block = "inference" if cell.scenario == "infer" else "serving"
            skip, by = f"its {block}.eval block cannot be scored: {reason}", "settings"
        planned.append(PlannedCell(cell=cell, skip=skip, skipped_by=by))
    return Plan(suite=suite.name, source=source, model_override=model_override, cells=planned)
