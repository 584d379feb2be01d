"""The suite's ``inference:`` block: which precisions to evaluate, against which reference, and how."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from harness.base.paths import CorpusName
from harness.base.specbase import StrictModel
from harness.measure.lmeval import EvalSettings
from harness.measure.text2sql import Text2SQLSettings


class InferenceSettings(StrictModel):
    """The suite's ``inference:`` block: precisions to evaluate and how."""

    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to run (default: all).")
    reference: str | None = Field(default=None, description="Precision the others are compared with "
                                                            "(default: the first precision of this block).")
    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus for perplexity, KL and prompts.")
    seq_len: int = Field(default=256, ge=8, description="Perplexity and KL window length in tokens.")
    stride: int = Field(default=256, ge=1, description="Perplexity window start spacing in tokens.")
    max_windows: int = Field(default=4, ge=1, description="Perplexity windows evaluated at most.")
    kl_windows: int = Field(default=2, ge=1, description="Non-overlapping windows on which KL and top-1 agreement "
                                                         "with the reference are computed.")
    text2sql: Text2SQLSettings | None = Field(default_factory=Text2SQLSettings,
                                              description="Text2SQL execution accuracy (null to leave it out).")
    eval: EvalSettings | None = Field(default=None, description="lm-evaluation-harness tasks scored on the cell's "
                                                                 "loaded model (needs the `eval` extra).")
    batch_sizes: list[int] = Field(default=[1], min_length=1, description="Batch sizes of the speed measurements.")
    prompt_tokens: int = Field(default=64, ge=1, description="Prompt length for prefill speed.")
    decode_tokens: int = Field(default=32, ge=2, description="Greedy tokens generated for decode speed.")
    repeats: int = Field(default=3, ge=1, description="Timed repeats (the median is reported, samples kept).")
    warmup: int = Field(default=1, ge=0, description="Untimed repeats before timing.")

    @model_validator(mode="after")
    def _consistent(self) -> "InferenceSettings":
        if self.stride > self.seq_len:
            raise ValueError(f"stride ({self.stride}) must not exceed seq_len ({self.seq_len})")
        if any(b < 1 for b in self.batch_sizes) or len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"batch_sizes must be distinct positive integers, got {self.batch_sizes}")
        return self

    def reference_protocol(self) -> dict[str, Any]:
        """What the reference outputs depend on (see :func:`harness.scenarios.inference.reference.ensure`)."""
        return {"corpus": self.corpus, "seq_len": self.seq_len, "kl_windows": self.kl_windows,
                "text2sql": self.text2sql.model_dump(mode="json") if self.text2sql else None,
                **({"eval": self.eval.protocol()} if self.eval else {})}
