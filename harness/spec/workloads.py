"""Declared workloads: which prompts, how long, how many tokens to generate, drawn with a seed.

One workload drives every engine, so their numbers compare like for like. Output lengths are
enforced (engines ignore EOS), so every engine generates the same token counts.

Prompt sources: ``corpus`` (slices of a shipped corpus at seeded offsets), ``random`` (seeded
uniform token ids, no special tokens), ``shared-prefix`` (one corpus prefix of
``shared_prefix_tokens`` shared by every request, then a distinct corpus slice: what prefix caching
serves). Lengths: a number, a list drawn from uniformly (outputs), or a distribution
(:class:`Lengths`: fixed, uniform, lognormal), told apart by the value's shape (a number, a list, a
mapping) so that an error names the one form given. ``num_requests`` is bounded
(:data:`harness.spec.bounds.MAX_REQUESTS`, with the reason).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.base.paths import CorpusName
from harness.base.specbase import Slug, StrictModel, by_shape
from harness.spec.bounds import check_requests

if TYPE_CHECKING:
    from harness.base.wire import Request


class Lengths(StrictModel):
    """A distribution of token counts, drawn with the workload's seed and clipped to [min, max]."""

    dist: Literal["fixed", "uniform", "lognormal"] = Field(description="fixed: `value`; uniform: integers in "
                                                                      "[low, high]; lognormal: `median` and `sigma`.")
    value: int | None = Field(default=None, ge=1, description="fixed: the count.")
    low: int | None = Field(default=None, ge=1, description="uniform: smallest count.")
    high: int | None = Field(default=None, ge=1, description="uniform: largest count (inclusive).")
    median: float | None = Field(default=None, gt=0, description="lognormal: median count (exp of the log-mean).")
    sigma: float | None = Field(default=None, gt=0, description="lognormal: standard deviation of the log.")
    min: int = Field(default=1, ge=1, description="Smallest count after clipping.")
    max: int | None = Field(default=None, ge=1, description="Largest count after clipping (lognormal: required).")

    @model_validator(mode="after")
    def _fields_of_dist(self) -> "Lengths":
        need = {"fixed": ("value",), "uniform": ("low", "high"), "lognormal": ("median", "sigma", "max")}[self.dist]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"dist: {self.dist} needs {', '.join(missing)}")
        if self.dist == "uniform" and self.low > self.high:  # type: ignore[operator]
            raise ValueError(f"uniform: low={self.low} is above high={self.high}")
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max={self.max} is below min={self.min}")
        return self

    def draw(self, n: int, rng: Any) -> list[int]:
        """``n`` counts from ``rng`` (a numpy Generator)."""
        import numpy as np

        if self.dist == "fixed":
            values = np.full(n, self.value)
        elif self.dist == "uniform":
            values = rng.integers(self.low, self.high + 1, size=n)  # type: ignore[operator]
        else:
            values = np.rint(rng.lognormal(np.log(self.median), self.sigma, size=n))
        return [int(v) for v in np.clip(values, self.min, self.max if self.max is not None else np.inf)]

    def largest(self) -> int:
        """The largest count a draw can give (lognormal: ``max``, which it requires)."""
        top = int({"fixed": self.value, "uniform": self.high, "lognormal": self.max}[self.dist] or self.min)
        return max(min(top, self.max) if self.max is not None else top, self.min)


_DIST = "a mapping with dist: fixed (value), uniform (low, high) or lognormal (median, sigma, max)"
PromptTokens = by_shape(one=int, mapping=Lengths, scalars=(int, float),
                        expected=f"a token count or a distribution ({_DIST})")
OutputTokens = by_shape(one=int, many=list[int], mapping=Lengths, scalars=(int, float),
                        expected=f"a token count, a list of counts drawn from uniformly, or a distribution ({_DIST})")


class Workload(StrictModel):
    """A set of generation requests."""

    name: Slug = Field(description="Workload name, used in cell ids and exclusions.")
    source: Literal["corpus", "random", "shared-prefix"] = Field(default="corpus", description="Where prompts come from.")
    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus to cut prompts from.")
    num_requests: int = Field(default=16, ge=1, description="Number of requests (at most 100,000).")
    prompt_tokens: PromptTokens = Field(default=64, description="Prompt length in tokens: a number or a distribution "
                                                                 "(shared-prefix: the prefix included).")
    output_tokens: OutputTokens = Field(
        default=32, description="Tokens to generate: a number, a list drawn from uniformly, or a distribution.")
    shared_prefix_tokens: int = Field(default=0, ge=0, description="shared-prefix: tokens every prompt starts with.")
    seed: int = Field(default=0, description="Seed for prompt offsets and output lengths.")

    @field_validator("num_requests")
    @classmethod
    def _bounded(cls, value: int) -> int:
        return check_requests(value)

    @field_validator("output_tokens", "prompt_tokens")
    @classmethod
    def _positive(cls, value: Any) -> Any:
        if isinstance(value, Lengths):
            return value
        values = value if isinstance(value, list) else [value]
        if not values or any(v < 1 for v in values):
            raise ValueError("must be a positive number, a non-empty list of them, or a distribution")
        return value

    @model_validator(mode="after")
    def _prefix(self) -> "Workload":
        if self.source == "shared-prefix":
            shortest = self.prompt_tokens if isinstance(self.prompt_tokens, int) else (
                self.prompt_tokens.value or self.prompt_tokens.low or self.prompt_tokens.min)
            if not 0 < self.shared_prefix_tokens < shortest:  # type: ignore[operator]
                raise ValueError(f"shared-prefix needs 0 < shared_prefix_tokens < the shortest prompt ({shortest}), "
                                 f"got {self.shared_prefix_tokens}")
        elif self.shared_prefix_tokens:
            raise ValueError(f"shared_prefix_tokens applies to source: shared-prefix, not {self.source}")
        return self

    def longest_output(self) -> int:
        """The longest output length any request can get."""
        if isinstance(self.output_tokens, Lengths):
            return self.output_tokens.largest()
        return max(self.output_tokens) if isinstance(self.output_tokens, list) else self.output_tokens

    def output_lengths(self) -> list[int]:
        """The exact output length of each request (deterministic in ``seed``)."""
        import numpy as np

        if isinstance(self.output_tokens, int):
            return [self.output_tokens] * self.num_requests
        rng = np.random.default_rng(self.seed)
        if isinstance(self.output_tokens, Lengths):
            return self.output_tokens.draw(self.num_requests, rng)
        return [int(v) for v in rng.choice(self.output_tokens, size=self.num_requests)]

    def prompt_lengths(self) -> list[int]:
        """The prompt length of each request (deterministic in ``seed``)."""
        import numpy as np

        if isinstance(self.prompt_tokens, int):
            return [self.prompt_tokens] * self.num_requests
        return self.prompt_tokens.draw(self.num_requests, np.random.default_rng([self.seed, 1]))

    def requests(self, tokenizer: Any) -> list["Request"]:
        """Token-id requests from the workload's source, lengths and seed (the same for every engine)."""
        import numpy as np

        from harness.base.paths import corpus_ids
        from harness.base.wire import Request

        lengths, outputs = self.prompt_lengths(), self.output_lengths()
        rng = np.random.default_rng([self.seed, 2])
        if self.source == "random":
            specials = set(getattr(tokenizer, "all_special_ids", []) or [])
            vocab = [i for i in range(len(tokenizer)) if i not in specials]
            return [Request(prompt_token_ids=[vocab[j] for j in rng.integers(0, len(vocab), size=n)], output_tokens=o)
                    for n, o in zip(lengths, outputs)]
        ids = corpus_ids(tokenizer, self.corpus)
        prefix = ids[:self.shared_prefix_tokens]
        body = ids[self.shared_prefix_tokens:]
        longest = max(lengths) - len(prefix)
        if len(body) <= longest:
            raise ValueError(f"corpus {self.corpus!r} has {len(ids)} tokens, too few for prompts of {max(lengths)} tokens"
                             + (f" after a {len(prefix)}-token shared prefix" if prefix else ""))
        out = []
        for n, o in zip(lengths, outputs):
            start = int(rng.integers(0, len(body) - (n - len(prefix))))
            out.append(Request(prompt_token_ids=prefix + body[start:start + n - len(prefix)], output_tokens=o))
        return out
