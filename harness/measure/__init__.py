"""Measurement inside a cell's worker (torch is imported lazily by each function).

Trackers around a region (:mod:`.trackers`: peak RSS, stopwatch, memory cap; :mod:`.anatomy`: saved
activations, per-phase allocator peaks), tensor accounting in one place (:mod:`.tensors`), the
kernels that ran (:mod:`.kernels`), storage bits per parameter (:mod:`.storage`), accuracy and
quality (:mod:`.quality` perplexity, :mod:`.text2sql`, :mod:`.gradcheck`), serving metrics from
request traces (:mod:`.servemetrics`) and the device's bandwidth and FLOP/s (:mod:`.rates`).
"""
