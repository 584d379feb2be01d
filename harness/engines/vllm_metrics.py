"""What vLLM reports about a run through its Prometheus metrics, for the offline engines and the server.

- :data:`COUNTERS` (prefix-cache lookups and hits, speculative draft and accepted tokens) are read
  before and after a run and differenced (:func:`counter_delta`), from ``LLM.get_metrics()``
  (:func:`counters_from_snapshot`) or a server's ``/metrics`` page (:func:`counters_from_text`), each
  summed over its labels.
- :func:`cache_config` gives the labels of ``vllm:cache_config_info`` (num_gpu_blocks, block_size,
  cache_dtype): the server's KV-cache capacity.

The ``/metrics`` text is parsed by ``prometheus_client`` (a dependency of vLLM).
"""

from __future__ import annotations

from typing import Any, Iterator

COUNTERS = {"prefix_cache_queries": "vllm:prefix_cache_queries", "prefix_cache_hits": "vllm:prefix_cache_hits",
            "spec_draft_tokens": "vllm:spec_decode_num_draft_tokens",
            "spec_accepted_tokens": "vllm:spec_decode_num_accepted_tokens"}
_BY_NAME = {v: k for k, v in COUNTERS.items()}


def _sum_counters(pairs: Iterator[tuple[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in pairs:
        key = _BY_NAME.get(name.removesuffix("_total"))
        if key is not None and isinstance(value, (int, float)):
            out[key] = out.get(key, 0.0) + float(value)
    return out


def _samples(text: str) -> Iterator[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        yield from family.samples


def counters_from_snapshot(metrics: list[Any]) -> dict[str, float]:
    """:data:`COUNTERS` from ``LLM.get_metrics()``."""
    return _sum_counters((getattr(m, "name", ""), getattr(m, "value", None)) for m in metrics)


def counters_from_text(text: str) -> dict[str, float]:
    """:data:`COUNTERS` from a Prometheus ``/metrics`` page."""
    return _sum_counters((s.name, s.value) for s in _samples(text))


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What a run added to each counter it saw."""
    return {k: after[k] - before.get(k, 0.0) for k in after}


def cache_config(text: str) -> dict[str, str]:
    """Labels of ``vllm:cache_config_info`` in a ``/metrics`` page ({} if absent)."""
    return next((dict(s.labels) for s in _samples(text) if s.name == "vllm:cache_config_info"), {})
