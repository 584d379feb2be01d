"""The machine of the report's sections, in words (records of two logical machines are never compared in
one figure or table; the logical machine itself is :func:`harness.results.machine.machine_of`)."""

from __future__ import annotations

from harness.results.machine import gpu_slug, machine_of  # noqa: F401 (the report's names for them)
from harness.results.records import Record

GiB = 2**30


def hardware(records: list[Record]) -> str:
    """What the machine of ``records`` is, in words: GPUs (for CUDA cells), CPU model, cores and memory,
    each distinct value once (two hosts of one logical machine may differ)."""
    gpus = sorted({f"{len(r.environment.gpus)} x {r.environment.gpus[0].name}"
                   + (f" ({r.environment.gpus[0].memory_bytes / GiB:.0f} GiB)" if r.environment.gpus[0].memory_bytes else "")
                   for r in records if r.cell.get("device") == "cuda" and r.environment.gpus})
    cpus = sorted({f"{r.environment.cpu_model}, {r.environment.cpu_count} cores, {r.environment.memory_bytes / GiB:.0f} GiB"
                   for r in records})
    return "; ".join(gpus + [f"CPU {c}" for c in cpus])
