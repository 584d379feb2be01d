"""Metrics every scenario may record (the worker and each scenario's memory tracking)."""

from __future__ import annotations

from harness.metrics.spec import m

METRICS = [
    m("peak_rss_bytes", "bytes", "lower", "memory", "peak resident memory of the cell's process (tree)", stat="max"),
    m("load_s", "s", "lower", "speed", "loading the model in the cell's precision", gate=False),
    m("model_prepare_s", "s", "lower", "speed", "building/converting the model (cache miss)", gate=False),
]
