"""Versioned, self-describing records: one per cell, whatever became of it.

A record holds the resolved cell, its status (ok / skipped / error / oom / timeout / invalid) with the reason
and the tail of its log, its metrics (value, unit, raw samples), the environment it ran in (hardware,
driver, framework versions, git SHA), its seed and timings, and the command that reproduces it.
A failed record (error / oom / timeout) may carry what the cell measured or predicted before failing
(e.g. a training cell's ``*_analytic`` anatomy); only ``ok`` records are results, and only valid ones
are trusted: ``validity`` says whether the cell's timed regions ran uncontended, long enough and
with enough samples (:mod:`harness.measure.validity`), with the figures behind the verdict. A strict
run records an invalid cell as status ``invalid`` (its metrics kept). Bump :data:`SCHEMA_VERSION`
when the meaning of a field changes (adding ``validity`` and ``invalid`` did not: a record without
``validity`` reads as not checked).

Every float survives the store: NaN and +/-inf (an undefined ratio, a diverging loss) are written as
the JSON strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (the file stays standard JSON) and read
back as floats, in typed fields and in the free-form ``info`` / ``figures`` alike (there, any string
spelled exactly so reads as the float). ``record_id`` and ``environment.git_sha`` name files and git
arguments elsewhere, so they are validated as safe tokens.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.base.host import Host

SCHEMA_VERSION = 1

Status = Literal["ok", "skipped", "error", "oom", "timeout", "invalid"]
STATUSES: tuple[str, ...] = ("ok", "skipped", "error", "oom", "timeout", "invalid")

# NaN and +/-inf as JSON strings, not as ``null`` (which would not read back as a float). On every model a
# record nests: a model's own setting governs its typed fields, the outermost one its ``Any`` values.
FLOATS_KEPT = ConfigDict(ser_json_inf_nan="strings")
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
RECORD_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")  # no "/", no leading "."
GIT_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
MACHINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a runner label: names folders, files, a graph axis


def floats_back(value: Any) -> Any:
    """``value`` with every ``"NaN"`` / ``"Infinity"`` / ``"-Infinity"`` string (how :data:`FLOATS_KEPT`
    writes non-finite floats) inside dicts and lists turned back into the float."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: floats_back(v) for k, v in value.items()}
    if isinstance(value, list):
        return [floats_back(v) for v in value]
    return value


class Metric(BaseModel):
    """One measured (or predicted) quantity. The metric's name carries its unit too (``decode_tok_s``)."""

    model_config = ConfigDict(extra="forbid", **FLOATS_KEPT)

    value: float
    unit: str
    samples: list[float] = Field(default_factory=list, description="raw samples the value summarizes")
    stat: Literal["value", "mean", "median", "sum", "max", "min", "p90", "p99"] = Field(
        default="value", description="how value summarizes samples")
    source: Literal["measured", "analytic"] = "measured"
    description: str = ""
    ci_low: float | None = Field(default=None, description="lower end of the value's 95 % interval")
    ci_high: float | None = Field(default=None, description="upper end of the value's 95 % interval")
    ci_method: str | None = Field(default=None, description="how the interval was made, e.g. 'bootstrap over 4 windows'")


class Validity(BaseModel):
    """Whether a cell's numbers can be trusted: every broken rule in ``reasons`` with its figure, and
    the contention figures of its timed regions (foreign CPU share, cores, threads, load, GPU state)."""

    model_config = FLOATS_KEPT

    valid: bool
    reasons: list[str] = Field(default_factory=list)
    figures: dict[str, Any] = Field(default_factory=dict)

    _figures_back = field_validator("figures")(floats_back)


class CellResult(BaseModel):
    """What a cell's worker returns: its metrics and the facts behind them."""

    model_config = FLOATS_KEPT

    metrics: dict[str, Metric] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)

    _info_back = field_validator("info")(floats_back)


class CellFailure(Exception):
    """A cell that failed after measuring something: ``partial`` keeps what it had (predictions,
    facts) so the failure record loses nothing; ``oom`` marks an out-of-memory failure."""

    def __init__(self, reason: str, *, partial: CellResult | None = None, oom: bool = False) -> None:
        super().__init__(reason)
        self.partial = partial or CellResult()
        self.oom = oom


class Environment(Host):
    """Where a record was produced: the host's facts plus the code's version."""

    git_sha: str | None = Field(default=None, description="the commit (hex), None outside a git checkout")
    git_dirty: bool | None = None
    harness_version: str
    machine: str | None = Field(default=None, description="the logical machine (runner name) of the run, see "
                                                          "harness.results.machine; None in older records")

    @field_validator("git_sha")
    @classmethod
    def _hex_sha(cls, v: str | None) -> str | None:
        if v is not None and not GIT_SHA.fullmatch(v):
            raise ValueError(f"git_sha {v[:80]!r} is not a commit: 7 to 64 hex digits (or null when unknown)")
        return v

    @field_validator("machine")
    @classmethod
    def _safe_machine(cls, v: str | None) -> str | None:
        if v is not None and not MACHINE.fullmatch(v):
            raise ValueError(f"machine {v[:80]!r} is not a runner name: 1 to 64 letters, digits, '.', '_' or '-'")
        return v


class Record(BaseModel):
    """The outcome of one cell."""

    model_config = FLOATS_KEPT

    schema_version: int = SCHEMA_VERSION
    record_id: str = Field(description="unique token (a uuid's hex for the runner's records); names a file")
    suite: str
    cell_id: str
    cell_key: str = Field(description="hash of the resolved cell configuration")
    code_key: str = Field(description="hash of the harness code and framework versions that produced it")
    cell: dict[str, Any] = Field(description="the resolved cell configuration")
    status: Status
    reason: str | None = None
    log_tail: str | None = None
    metrics: dict[str, Metric] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    validity: Validity | None = Field(default=None, description="None: not checked (skipped cells, older records)")
    environment: Environment
    seed: int
    started_at: datetime
    duration_s: float
    command: str = Field(description="shell command that reproduces this cell alone")

    _info_back = field_validator("info")(floats_back)

    @field_validator("record_id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        if not RECORD_ID.fullmatch(v):
            raise ValueError(f"record_id {v[:80]!r} is not a safe token: 1 to 128 letters, digits, '.', '_' or '-', "
                             "not starting with '.' (it names a file)")
        return v

    @property
    def trusted(self) -> bool:
        """An ``ok`` record whose validity was not found wanting (unchecked older records count as trusted)."""
        return self.status == "ok" and (self.validity is None or self.validity.valid)

    @property
    def nodes(self) -> tuple[int, int]:
        """(node rank, nodes) of a cell spread over several nodes (``info.nodes``); (0, 1) otherwise."""
        nodes = self.info.get("nodes") if isinstance(self.info, dict) else None
        if not isinstance(nodes, dict):
            return 0, 1
        return int(nodes.get("node_rank") or 0), int(nodes.get("nnodes") or 1)

    def metric(self, name: str) -> float | None:
        m = self.metrics.get(name)
        return None if m is None else m.value


def device_of(record: Record, *, detail: bool = False) -> str:
    """``cpu``, or the GPU's name for a CUDA cell; with ``detail``, a CPU cell adds the CPU model
    (two records are like with like only on the same device)."""
    if record.cell.get("device") == "cuda" and record.environment.gpus:
        return record.environment.gpus[0].name
    device = str(record.cell.get("device") or "cpu")
    return f"{device} ({record.environment.cpu_model})" if detail else device
