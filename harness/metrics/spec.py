"""What a metric is, declared once: :class:`MetricSpec` (unit, direction, kind, description, summary
statistic, whether the gate judges it) and :class:`Threshold`, how far it may move the wrong way."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.base.specbase import StrictModel

Direction = Literal["higher", "lower", "neither"]
# speed, memory, energy, accuracy and quality are judged by the gate; the rest describe what was measured
Kind = Literal["speed", "memory", "energy", "accuracy", "quality", "analytic", "count", "host"]
Stat = Literal["value", "mean", "median", "sum", "max", "min", "p90", "p99"]
SECONDS_PER = {"s": 1.0, "ms": 1e-3}  # the time units a benchmark metric may be declared in
JUDGED_KINDS: tuple[str, ...] = ("speed", "memory", "energy", "accuracy", "quality")


class Threshold(StrictModel):
    """How far a metric may move the wrong way before it is a regression: one of the two."""

    relative: float | None = Field(default=None, gt=0, description="Fraction of the base value (0.05 = 5 %).")
    absolute: float | None = Field(default=None, gt=0, description="In the metric's unit (0.01 = 1 point of a ratio).")

    @model_validator(mode="after")
    def _one(self) -> "Threshold":
        if (self.relative is None) == (self.absolute is None):
            raise ValueError("give exactly one of `relative` or `absolute`")
        return self


# The gate's default by kind: speed and memory relative 5 %, accuracy 1 point, quality (perplexity, KL, loss) 2 %.
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "speed": Threshold(relative=0.05), "memory": Threshold(relative=0.05), "energy": Threshold(relative=0.05),
    "accuracy": Threshold(absolute=0.01), "quality": Threshold(relative=0.02),
}


class MetricSpec(BaseModel):
    """One metric name (or fnmatch pattern of names, e.g. ``decode_tok_s_bs*``) as the harness defines it.

    ``gate`` False keeps a metric with a direction out of the regression gate (and off asv's
    regression detection): one-off costs such as model loading, and facts of the host.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    unit: str
    direction: Direction
    kind: Kind
    description: str
    stat: Stat = "value"
    source: Literal["measured", "analytic"] = "measured"
    gate: bool = True
    threshold: Threshold | None = Field(default=None, description="the gate's threshold (default: by kind)")

    @property
    def judged(self) -> bool:
        """Whether ``harness compare`` judges it (and asv runs regression detection on it or its companion)."""
        return self.gate and self.direction != "neither" and self.kind in JUDGED_KINDS and self.source == "measured"

    @property
    def default_threshold(self) -> Threshold:
        return self.threshold or DEFAULT_THRESHOLDS[self.kind]


def m(name: str, unit: str, direction: Direction, kind: Kind, description: str, **kw: object) -> MetricSpec:
    """Shorthand the declaration modules use: ``m("ttft_ms", "ms", "lower", "speed", "time to first token")``."""
    return MetricSpec(name=name, unit=unit, direction=direction, kind=kind, description=description, **kw)  # type: ignore[arg-type]


class SummaryTable(BaseModel):
    """A table of the terminal summary and the report: its title and its columns in order (declared
    metric names or patterns; ``info:<key>`` shows a field of the record's ``info``, e.g. the kernel).

    ``compact`` is the handful the terminal shows, as ``(column, header)`` pairs (a pattern column takes
    its first match; ``*`` in the header stands for what the pattern matched); the report shows every
    column. ``requires`` (a pattern) leaves the table out where no record holds a matching metric."""

    model_config = ConfigDict(frozen=True)

    scenario: str
    title: str
    columns: tuple[str, ...]
    compact: tuple[tuple[str, str], ...] = ()
    requires: str | None = None  # a metric pattern: the table is shown only where a record holds a match


class Benchmark(BaseModel):
    """The timed quantity pytest-benchmark shows for every cell of a scenario: a declared metric whose
    samples are durations the cell measured in its process (in its declared unit, ``s`` or ``ms``), one
    sample per timed repeat, step or pass. ``what`` says what one sample is."""

    model_config = ConfigDict(frozen=True)

    scenario: str
    metric: str
    what: str
