"""Declared workloads: which prompts, how long, how many tokens to generate, drawn with a seed.

One workload drives every engine, so their numbers compare like for like. Output lengths are
enforced (engines ignore EOS), so every engine generates the same token counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from harness.paths import CorpusName
from harness.specbase import Slug, StrictModel

if TYPE_CHECKING:
    from harness.engines import Request


class Workload(StrictModel):
    """A set of generation requests."""

    name: Slug = Field(description="Workload name, used in cell ids and exclusions.")
    source: Literal["corpus"] = Field(default="corpus", description="Where prompts come from.")
    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus to cut prompts from.")
    num_requests: int = Field(default=16, ge=1, description="Number of requests.")
    prompt_tokens: int = Field(default=64, ge=1, description="Prompt length in tokens (every request).")
    output_tokens: int | list[int] = Field(
        default=32, description="Tokens to generate: one number, or a list drawn from uniformly per request.")
    seed: int = Field(default=0, description="Seed for prompt offsets and output lengths.")

    @field_validator("output_tokens")
    @classmethod
    def _positive(cls, value: int | list[int]) -> int | list[int]:
        values = value if isinstance(value, list) else [value]
        if not values or any(v < 1 for v in values):
            raise ValueError("output_tokens must be a positive number or a non-empty list of them")
        return value

    def output_lengths(self) -> list[int]:
        """The exact output length of each request (deterministic in ``seed``)."""
        import numpy as np

        if isinstance(self.output_tokens, int):
            return [self.output_tokens] * self.num_requests
        rng = np.random.default_rng(self.seed)
        return [int(v) for v in rng.choice(self.output_tokens, size=self.num_requests)]

    def requests(self, tokenizer: Any) -> list["Request"]:
        """Token-id requests cut from the corpus at seeded offsets."""
        import numpy as np

        from harness.engines import Request
        from harness.paths import corpus_ids

        ids = corpus_ids(tokenizer, self.corpus)
        if len(ids) <= self.prompt_tokens:
            raise ValueError(f"corpus {self.corpus!r} has {len(ids)} tokens, fewer than prompt_tokens={self.prompt_tokens}")
        rng = np.random.default_rng(self.seed)
        starts = rng.integers(0, len(ids) - self.prompt_tokens, size=self.num_requests)
        return [Request(prompt_token_ids=ids[s:s + self.prompt_tokens], output_tokens=n)
                for s, n in zip(starts.tolist(), self.output_lengths())]
