"""Load profiles for a server: when each request is sent, and how many may be in flight.

- ``concurrency``: every request is ready at t = 0 and at most ``concurrency`` are in flight (a new
  one is sent when one finishes), like ``vllm bench serve --max-concurrency`` with an infinite rate.
- ``poisson``: requests arrive at ``rate_req_s`` on average. Inter-arrival gaps are drawn from a
  gamma distribution of shape ``burstiness`` and mean 1/rate, as vLLM's benchmark draws them:
  burstiness 1 is a Poisson process, below 1 burstier, above 1 more regular. An optional
  ``max_concurrency`` caps requests in flight on top of the arrival times.

A sweep is a list of profiles (one cell each). Pure: numpy only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from harness.base.specbase import StrictModel


class LoadProfile(StrictModel):
    """How requests are offered to a server."""

    kind: Literal["concurrency", "poisson"] = Field(description="concurrency: a fixed number in flight; "
                                                                "poisson: arrivals at a rate.")
    concurrency: int | None = Field(default=None, ge=1, description="concurrency: requests in flight.")
    rate_req_s: float | None = Field(default=None, gt=0, description="poisson: mean arrival rate (requests/s).")
    burstiness: float = Field(default=1.0, gt=0, description="poisson: gamma shape of the gaps (1 = Poisson).")
    max_concurrency: int | None = Field(default=None, ge=1, description="poisson: cap on requests in flight.")
    seed: int = Field(default=0, description="Seed of the arrival times.")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> "LoadProfile":
        if self.kind == "concurrency" and self.concurrency is None:
            raise ValueError("kind: concurrency needs `concurrency` (requests in flight)")
        if self.kind == "poisson" and self.rate_req_s is None:
            raise ValueError("kind: poisson needs `rate_req_s` (mean arrivals per second)")
        if self.kind == "concurrency" and (self.rate_req_s is not None or self.max_concurrency is not None):
            raise ValueError("kind: concurrency takes `concurrency` only (use kind: poisson for a rate)")
        return self

    @property
    def label(self) -> str:
        """Short name for cell ids: ``c8``, ``r2.5`` (``r2.5b0.5`` with burstiness, ``-c4`` with a cap)."""
        if self.kind == "concurrency":
            return f"c{self.concurrency}"
        out = f"r{self.rate_req_s:g}" + (f"b{self.burstiness:g}" if self.burstiness != 1 else "")
        return out + (f"-c{self.max_concurrency}" if self.max_concurrency else "")

    def limit(self) -> int | None:
        """Requests allowed in flight (None: unlimited)."""
        return self.concurrency if self.kind == "concurrency" else self.max_concurrency

    def arrival_times(self, n: int) -> list[float]:
        """Seconds after the start at which each of ``n`` requests becomes ready to send (the first at 0)."""
        if self.kind == "concurrency":
            return [0.0] * n
        return gamma_arrivals(n, self.rate_req_s or 0.0, self.burstiness, self.seed)


def gamma_arrivals(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Arrival times of ``n`` requests: the first at 0, then gaps ~ Gamma(shape=burstiness,
    scale=1/(rate*burstiness)), whose mean is 1/rate and coefficient of variation 1/sqrt(burstiness)."""
    import numpy as np

    if n <= 0:
        return []
    if rate <= 0 or burstiness <= 0:
        raise ValueError(f"rate and burstiness must be positive, got rate={rate}, burstiness={burstiness}")
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n - 1)
    return [0.0, *np.cumsum(gaps).tolist()]
