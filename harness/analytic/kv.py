"""KV-cache bytes: 2 (K and V) x layers x kv_heads x head_dim x bytes per element, per token."""

from __future__ import annotations

from typing import Any

from harness.base.dtypes import element_bytes


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, element_bytes: int) -> int:
    """KV-cache bytes of one token: K and V, for every layer and KV head."""
    return 2 * layers * kv_heads * head_dim * element_bytes


def kv_per_token(config: Any, cache_dtype: str | None, dtype: str) -> tuple[int, str]:
    """KV-cache bytes per token of a model ``config`` in the engine's cache dtype (``auto`` or None: the
    model's ``dtype``), with the formula spelled out."""
    from harness.analytic.shape import config_dims

    dims = config_dims(config)
    cache = str(cache_dtype or "auto").removeprefix("torch.")
    try:
        element = element_bytes(cache)
    except KeyError:  # "auto", or a cache dtype without a known width: the model's dtype
        element = element_bytes(dtype)
    formula = (f"2 x {dims['layers']} layers x {dims['kv_heads']} kv_heads x {dims['head_dim']} head_dim x "
               f"{element} bytes")
    return kv_bytes_per_token(dims["layers"], dims["kv_heads"], dims["head_dim"], element), formula
