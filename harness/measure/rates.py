"""What this device can move and compute: read bandwidth and matmul FLOP/s, measured.

Bandwidth (a large tensor's read, best of 5) and FLOP/s (a 2048^3 matmul in the cell's dtype, best of
3). On CPU the runner measures them once per run, while no engine is running, in a child process
under a time limit (:func:`probe`, through :func:`harness.base.child.run_child`: torch never loads in
the orchestrator), and hands them to serving cells in ``HARNESS_HOST_RATES`` (:func:`host_rates`
reads them); a CUDA device, or a CPU the probe could not measure, is measured in the cell's process.
:mod:`harness.analytic.decode` turns them into the decode bound.
"""

from __future__ import annotations

import functools
import os
import time

RATES_ENV = "HARNESS_HOST_RATES"  # JSON {"bandwidth": bytes/s, "flops": {dtype: FLOP/s}}


def measure_memory_bandwidth(device: str = "cpu", mib: int = 256) -> float:
    """Read bandwidth of ``device`` in bytes/s: summing a ``mib`` MiB fp32 tensor, best of 5."""
    import torch

    x = torch.ones(mib * 2**20 // 4, device=device)
    best = float("inf")
    for i in range(6):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x.sum().item()
        if i:  # the first pass warms up
            best = min(best, time.perf_counter() - t0)
    return x.nbytes / best


@functools.cache
def measure_flops(device: str, dtype: str, n: int = 2048) -> float:
    """Matmul throughput of ``device`` in ``dtype`` (torch name) in FLOP/s: an n^3 product, best of 3."""
    import torch

    a = torch.randn(n, n, device=device).to(getattr(torch, dtype))
    best = float("inf")
    for i in range(4):
        t0 = time.perf_counter()
        (a @ a).sum().item()
        if i:
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def probe(payload: dict) -> dict:
    """Child-process entry (:mod:`harness.base.child`): ``{"bandwidth": bool, "dtypes": [torch dtype
    names]}`` -> ``{"bandwidth": bytes/s (if asked), "flops": {dtype: FLOP/s}}``, all on the CPU."""
    out: dict = {}
    if payload.get("bandwidth", True):
        out["bandwidth"] = measure_memory_bandwidth("cpu")
    out["flops"] = {d: measure_flops("cpu", d) for d in payload.get("dtypes", [])}
    return out


def host_rates(device: str, dtype: str) -> tuple[float, float]:
    """(bandwidth bytes/s, FLOP/s in ``dtype``) of ``device``: as the runner measured them for this run
    (CPU, before any engine was running), else measured now in this process."""
    import json

    given = json.loads(os.environ.get(RATES_ENV, "{}"))
    if device == "cpu" and "bandwidth" in given and dtype in given.get("flops", {}):
        return float(given["bandwidth"]), float(given["flops"][dtype])
    return _bandwidth(device), measure_flops(device, dtype)


@functools.cache
def _bandwidth(device: str) -> float:
    return measure_memory_bandwidth(device)
