"""The wire types of serving: a workload's requests, what happened to each, an engine's whole run, and
what an accuracy harness scores on a started engine.

They sit at the bottom floor because both sides of serving speak them: workloads (spec) make
:class:`Request` s, engines (an axis) answer with :class:`ServeRun` s of :class:`RequestTrace` s, and
the serving metrics and decode bound (measure, analytic) read the traces.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


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
    token_times_s: list[float] = Field(default_factory=list, description="arrival of each output token (or streamed "
                                                                         "chunk), if observed")
    error: str | None = Field(default=None, description="why the request failed (then it counts as failed, not completed)")


class ServeRun(BaseModel):
    """An engine's answer to a whole workload."""

    traces: list[RequestTrace]
    duration_s: float = Field(description="from the first submission to the last completion")
    startup_s: float = Field(default=0.0, description="seconds to load the model / start the engine (set by serve())")
    info: dict[str, Any] = Field(default_factory=dict)


class EvalTarget(BaseModel):
    """A started engine, as lm-evaluation-harness can score it (:meth:`harness.engines.Engine.eval_target`).

    - ``hf``: ``model`` is the loaded transformers model, ``tokenizer`` its tokenizer object;
    - ``vllm``: ``model`` is the running ``vllm.LLM``, ``tokenizer`` the model folder;
    - ``completions``: an OpenAI-compatible ``/v1/completions`` at ``base_url``, serving ``served_name``,
      reached with ``api_key``; ``tokenizer`` is the model folder (requests are sent as token ids).
    ``max_length`` is the engine's context length where it has one."""

    model_config = {"arbitrary_types_allowed": True}

    kind: Literal["hf", "vllm", "completions"]
    model: Any = None
    tokenizer: Any = None
    base_url: str | None = None
    api_key: str | None = Field(default=None, repr=False, description="the start's bearer key (never recorded)")
    served_name: str | None = None
    max_length: int | None = None
