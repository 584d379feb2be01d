"""Strict, typed suite specs. YAML is only their serialized form.

A suite names a model, the precisions, the scenario blocks to cross them with (inference, training,
serving), workloads, exclusions and per-cell settings. Every model forbids unknown keys; errors name
the key's path (and the YAML line), what is wrong and what is allowed (:mod:`harness.spec.source`);
resource bounds are part of validation (:mod:`harness.spec.bounds`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from harness.base.specbase import Slug, StrictModel
from harness.measure.validity import ValidityRules
from harness.metrics import Threshold
from harness.spec.axes import ModelRef, PrecisionConfig
from harness.spec.bounds import load_problems, timed_token_problems
from harness.spec.inference import InferenceSettings
from harness.spec.serving import ServingSettings
from harness.spec.source import SuiteError, compose, duplicate_keys, format_errors, read_text, validated
from harness.spec.training import TrainingSettings
from harness.spec.workloads import Workload

__all__ = ["Exclusion", "Suite", "SuiteError", "dump_schema", "format_errors", "load_suite", "suite_json_schema"]

AXES = ("scenario", "precision", "mode", "parallel", "engine", "workload")


class Exclusion(StrictModel):
    """Cells matching every given coordinate are skipped, with ``reason``."""

    scenario: Literal["infer", "train", "serve"] | None = Field(default=None, description="Scenario to match.")
    precision: str | None = Field(default=None, description="Precision name to match.")
    mode: str | None = Field(default=None, description="Training mode name to match.")
    parallel: str | None = Field(default=None, description="Parallel engine name to match (training).")
    engine: str | None = Field(default=None, description="Engine name to match.")
    workload: str | None = Field(default=None, description="Workload name to match.")
    reason: str = Field(min_length=1, description="Why these cells are excluded (kept in their skip record).")

    def matches(self, coords: dict[str, str]) -> bool:
        wanted = {a: getattr(self, a) for a in AXES if getattr(self, a) is not None}
        return bool(wanted) and all(coords.get(a) == v for a, v in wanted.items())


class Suite(StrictModel):
    """A declarative benchmark suite."""

    name: Slug = Field(description="Suite name, the prefix of its cell ids.")
    description: str = Field(default="", description="What the suite answers.")
    model: ModelRef = Field(description="Model reference: embedded, tiny, local:PATH, hub:ORG/NAME, or a mapping.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where cells run; auto = cuda if present.")
    seed: int = Field(default=0, description="Seed of every cell.")
    timeout_s: float = Field(default=1800, gt=0, description="Per-cell time limit in seconds.")
    precisions: list[PrecisionConfig] = Field(min_length=1, description="Precisions (kind: fp32, bf16, fp16, nf4, fp4, ...).")
    workloads: list[Workload] = Field(default_factory=list, description="Generation workloads for serving.")
    inference: InferenceSettings | None = Field(default=None, description="Inference cells: precision quality and speed.")
    training: TrainingSettings | None = Field(default=None, description="Training cells: modes x precisions.")
    serving: ServingSettings | None = Field(default=None, description="Serving cells: engines x precisions x workloads.")
    exclude: list[Exclusion] = Field(default_factory=list, description="Cells to skip, with reasons.")
    compare: dict[str, Threshold] = Field(default_factory=dict, description=(
        "Regression thresholds of `harness compare` by metric name or fnmatch pattern, e.g. "
        "{output_tok_s: {relative: 0.1}, text2sql_ex_ratio: {absolute: 0.02}}."))
    may_lose: list[str] = Field(default_factory=list, description=(
        "What `harness compare` lets disappear without failing the gate: fnmatch patterns of cell ids "
        "(a cell that is missing or no longer ok) or of `<cell id>:<metric>` (a judged metric gone)."))
    validity: ValidityRules = Field(default_factory=ValidityRules, description=(
        "When a cell's numbers are not trusted (foreign CPU share, timed-region length, samples) and "
        "whether a strict run records such a cell as `invalid`."))

    @model_validator(mode="after")
    def _cross_references(self) -> "Suite":
        problems: list[tuple[tuple[Any, ...], str]] = []
        precisions = [p.label for p in self.precisions]
        workloads = [w.name for w in self.workloads]
        modes = [m.label for m in self.training.modes] if self.training else []
        parallel = [p.label for p in self.training.parallel if p is not None] if self.training else []
        engines = [e.label for e in self.serving.engines] if self.serving else []
        _unique(problems, ("precisions",), precisions)
        _unique(problems, ("workloads",), workloads)
        _unique(problems, ("training", "modes"), modes)
        _unique(problems, ("training", "parallel"), parallel)
        _unique(problems, ("serving", "engines"), engines)
        if not (self.inference or self.training or self.serving):
            problems.append(((), "a suite needs at least one of: inference, training, serving"))
        for block in ("inference", "training", "serving"):
            settings = getattr(self, block)
            if settings is not None and settings.precisions is not None:
                _known(problems, (block, "precisions"), settings.precisions, precisions)
        if self.inference and self.inference.reference is not None:
            _known(problems, ("inference", "reference"), [self.inference.reference], precisions)
        if self.serving:
            if not self.workloads:
                problems.append((("workloads",), "serving needs at least one workload"))
            if self.serving.workloads is not None:
                _known(problems, ("serving", "workloads"), self.serving.workloads, workloads)
            problems += load_problems(self.serving.engines)
            problems += timed_token_problems(self.workloads, self.serving.workloads, self.serving.repeats)
        names = {"precision": precisions, "workload": workloads, "mode": modes, "parallel": parallel, "engine": engines}
        for i, ex in enumerate(self.exclude):
            for axis, allowed in names.items():
                if getattr(ex, axis) is not None:
                    _known(problems, ("exclude", i, axis), [getattr(ex, axis)], allowed)
        if problems:
            raise ValidationError.from_exception_data("Suite", [
                InitErrorDetails(type=PydanticCustomError("cross_reference", msg.replace("{", "{{").replace("}", "}}")),
                                 loc=loc, input=None) for loc, msg in problems])
        return self


def _unique(problems: list, loc: tuple[Any, ...], names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append((loc, f"names must be unique, repeated: {', '.join(dupes)} (set `name:` to tell them apart)"))


def _known(problems: list, loc: tuple[Any, ...], values: list[str], allowed: list[str]) -> None:
    from harness.base.registry import suggest

    for v in values:
        if v not in allowed:
            problems.append((loc, f"unknown name {v!r}{suggest(v, allowed)}; defined: {', '.join(allowed) or 'none'}"))


def load_suite(path: str | Path, *, model: str | None = None) -> Suite:
    """Read and validate a suite file; ``model`` overrides its model reference.

    Raises :class:`SuiteError` listing every problem (a file that is not UTF-8, YAML syntax, a key
    written twice, unknown keys, wrong types, values beyond the bounds of :mod:`harness.spec.bounds`).
    """
    path = Path(path)
    source = str(path)
    text = read_text(path)
    root, data = compose(text, source)
    duplicates = duplicate_keys(root, source)
    if not isinstance(data, dict):
        raise SuiteError(source, [*duplicates,
                                  f"{source}: a suite is a mapping of keys (name, model, precisions, ...)"])
    if model is not None:
        data["model"] = model
    suite = validated(Suite, data, root, source, duplicates)
    if problems := _eval_task_problems(suite, root, source):
        raise SuiteError(source, problems)
    return suite


def _eval_task_problems(suite: Suite, root: Any, source: str) -> list[str]:
    """lm-eval task names of ``inference.eval`` and ``serving.eval`` that the installed lm-eval's registry
    lacks, one line each (shipped names are checked by the block itself; without lm-eval the planner skips
    the cells)."""
    from harness.base.registry import suggest
    from harness.measure import lmeval
    from harness.spec.source import line_of

    blocks = [(name, block.eval) for name, block in (("inference", suite.inference), ("serving", suite.serving))
              if block is not None and block.eval is not None]
    if lmeval.missing() is not None or all(t in lmeval.SHIPPED for _, ev in blocks for t in ev.tasks):
        return []
    known = lmeval.registry_names() | set(lmeval.SHIPPED)
    out = []
    for block, ev in blocks:
        for i, name in enumerate(ev.tasks):
            if name not in known:
                line = line_of(root, (block, "eval", "tasks", i))
                out.append(f"{source}:{line}: {block}.eval.tasks.{i}: unknown lm-eval task {name!r}"
                           f"{suggest(name, known)}; shipped tasks: {', '.join(lmeval.SHIPPED)}, or a task, "
                           "group or tag of lm-eval's registry (`lm-eval ls tasks`)")
    return out


def suite_json_schema() -> dict[str, Any]:
    """The JSON schema of a suite file."""
    return Suite.model_json_schema()


def dump_schema() -> str:
    return json.dumps(suite_json_schema(), indent=2)
