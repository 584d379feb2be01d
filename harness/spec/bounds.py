"""Resource bounds a suite is held to when it is validated, each with the reason it exists.

A suite that would exhaust the machine before it measures anything is refused with the bound, the
figure it asked for and how to get under it, like any other invalid value:

- :data:`MAX_REQUESTS` requests per workload. A pass keeps every request (its prompt token ids) and
  its trace (every token's arrival time) in memory, and the load generator a task per request;
  vLLM's own benchmark sends 1,000 by default.
- :data:`MAX_TIMED_TOKENS` generated tokens timed per serving cell: requests x the longest output
  length x ``serving.repeats``. Every token's arrival time is kept until the cell's metrics are made
  (8 bytes each: at most 80 MB). What a record keeps of them is bounded separately: at most
  :data:`harness.measure.servemetrics.MAX_SAMPLES` samples per metric, so the gate's bootstrap over
  ``itl_ms`` stays small.
- :data:`MAX_IN_FLIGHT` requests in flight at once (a load's ``concurrency`` or ``max_concurrency``):
  each holds one connection, that is one file descriptor, and Linux's default soft limit is 1,024
  per process in all.
- An open-loop load (``kind: poisson``) must set ``max_concurrency``. Without it the load generator
  sends every request at its arrival time however many are still unanswered, so a server slower than
  the arrival rate makes it open one connection per request until the file-descriptor limit.

Pure: reads only the validated spec objects.
"""

from __future__ import annotations

from typing import Any

MAX_REQUESTS = 100_000
MAX_TIMED_TOKENS = 10_000_000
MAX_IN_FLIGHT = 512

Problem = tuple[tuple[Any, ...], str]


def check_requests(n: int) -> int:
    """``n`` if it is within :data:`MAX_REQUESTS`; raises ValueError naming the bound and why."""
    if n > MAX_REQUESTS:
        raise ValueError(f"at most {MAX_REQUESTS:,} requests per workload, got {n:,} (a pass keeps every request "
                         "and its token times in memory; split a larger load into several workloads or cells)")
    return n


def load_problems(engines: list[Any]) -> list[Problem]:
    """Problems of the load profiles of serving ``engines`` (the suite's ``serving.engines``): an open
    loop without ``max_concurrency``, or more than :data:`MAX_IN_FLIGHT` requests in flight."""
    from harness.engines.loadgen import LoadProfile

    problems: list[Problem] = []
    for i, engine in enumerate(engines):
        for field in type(engine).model_fields:
            value = getattr(engine, field)
            for j, load in enumerate(value if isinstance(value, list) else [value]):
                if not isinstance(load, LoadProfile):
                    continue
                loc = ("serving", "engines", i, field, *((j,) if isinstance(value, list) else ()))
                if load.kind == "poisson" and load.max_concurrency is None:
                    problems.append(((*loc, "max_concurrency"), (
                        f"kind: poisson needs max_concurrency (at most {MAX_IN_FLIGHT}): without a cap the load "
                        "generator opens one connection per unanswered request, up to the file-descriptor limit; "
                        "e.g. max_concurrency: 64")))
                in_flight = load.limit()
                if in_flight is not None and in_flight > MAX_IN_FLIGHT:
                    key = "concurrency" if load.kind == "concurrency" else "max_concurrency"
                    problems.append(((*loc, key), (
                        f"at most {MAX_IN_FLIGHT} requests in flight, got {in_flight} (each holds a connection, a "
                        "file descriptor; Linux's default soft limit is 1,024 per process)")))
    return problems


def timed_token_problems(workloads: list[Any], names: list[str] | None, repeats: int) -> list[Problem]:
    """Problems of serving cells that would time more than :data:`MAX_TIMED_TOKENS` generated tokens:
    for each suite workload served (``names``: the serving block's ``workloads``, None for all),
    ``num_requests`` x its longest output x ``repeats``."""
    problems: list[Problem] = []
    for i, w in enumerate(workloads):
        if names is not None and w.name not in names:
            continue
        longest = w.longest_output()
        total = w.num_requests * longest * repeats
        if total > MAX_TIMED_TOKENS:
            problems.append((("workloads", i, "num_requests"), (
                f"{w.num_requests:,} requests x the longest output ({longest:,} tokens) x serving.repeats ({repeats}) "
                f"= {total:,} generated tokens timed per serving cell, above the bound of {MAX_TIMED_TOKENS:,} (every "
                "token's arrival time is kept in memory until the cell's metrics are made); lower num_requests, "
                "output_tokens or serving.repeats")))
    return problems
