"""The serving axis: engines that turn a workload's requests into generated tokens.

One module per engine, each registering its config class in :data:`ENGINES`. An engine receives the
same token-id requests as every other engine (so comparisons are like for like), generates exactly
each request's output length (EOS ignored), and returns one timestamped trace per request; the
serving scenario turns traces into metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from harness.registry import Registry
from harness.specbase import Implementation

if TYPE_CHECKING:
    from harness.host import Host
    from harness.models import ResolvedModel
    from harness.planner import Cell

ENGINES: Registry = Registry("engine", "harness.engines")


class Request(BaseModel):
    """One request of a workload: prompt token ids and the exact number of tokens to generate."""

    prompt_token_ids: list[int]
    output_tokens: int = Field(ge=1)


class RequestTrace(BaseModel):
    """What happened to one request. Times are seconds since the run's start (monotonic clock)."""

    prompt_tokens: int
    output_tokens: int = Field(description="tokens actually generated")
    submitted_s: float
    first_token_s: float | None = Field(default=None, description="arrival of the first output token, if observed")
    finished_s: float
    token_times_s: list[float] = Field(default_factory=list, description="arrival of each output token, if observed")
    error: str | None = Field(default=None, description="why the request failed (then it counts as failed, not completed)")


class ServeRun(BaseModel):
    """An engine's answer to a whole workload."""

    traces: list[RequestTrace]
    duration_s: float = Field(description="from the first submission to the last completion")
    startup_s: float = Field(description="seconds to load the model / start the engine")
    info: dict[str, Any] = Field(default_factory=dict)


class Engine(Implementation):
    """Base of an engine config."""

    def supports(self, cell: "Cell", host: "Host") -> str | None:
        """Why this engine cannot run ``cell`` on ``host`` (a skip reason), or None."""
        return None

    def serve(self, cell: "Cell", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
        """Run every request to completion and return their traces."""
        raise NotImplementedError
