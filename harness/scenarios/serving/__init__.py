"""Serving cells (:mod:`.run`): an engine serves a workload; traces become vLLM-defined metrics, the KV
cache beside its formula and the decode efficiency against the bandwidth bound."""
