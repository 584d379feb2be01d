"""The logical machine a record ran on, for the report's sections (records of two machines are never
compared in one figure or table).

Records carry no logical machine yet: :func:`machine_of` returns ``record.environment.machine`` when a
later record version sets it, else a stable name made from the device the cell ran on: ``cpu-<cores>c``
for a CPU cell, ``<gpu>-<GiB>gb-x<count>`` for a CUDA cell (``h100-80gb-x1``).
"""

from __future__ import annotations

import re

from harness.results.records import Record

GiB = 2**30
# words in a GPU's marketing name that do not tell two GPUs apart (vendor, line, memory, form factor)
_NOISE = re.compile(r"^(nvidia|geforce|tesla|quadro|amd|radeon|instinct|\d+gb|hbm\d*e?|gddr\d*x?|pcie|sxm\d*|nvl|oam)$")


def gpu_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100``, ``NVIDIA GeForce RTX 4090`` -> ``rtx-4090``; ``gpu`` when
    nothing is left."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and not _NOISE.match(w)]
    return "-".join(words) or "gpu"


def machine_of(record: Record) -> str:
    """The record's logical machine: ``environment.machine`` when set, else ``cpu-<cores>c`` for a CPU
    cell (a CUDA cell on a host without GPUs counts as CPU: it was skipped there) or
    ``<gpu slug>-<memory GiB, rounded>gb-x<GPU count>`` for a CUDA cell (see the module docstring)."""
    env = record.environment
    named = getattr(env, "machine", None)
    if named:
        return str(named)
    if record.cell.get("device") == "cuda" and env.gpus:
        gpu = env.gpus[0]
        mem = f"-{round(gpu.memory_bytes / GiB)}gb" if gpu.memory_bytes else ""
        return f"{gpu_slug(gpu.name)}{mem}-x{len(env.gpus)}"
    return f"cpu-{env.cpu_count}c"


def hardware(records: list[Record]) -> str:
    """What the machine of ``records`` is, in words: GPUs (for CUDA cells), CPU model, cores and memory,
    each distinct value once (two hosts of one logical machine may differ)."""
    gpus = sorted({f"{len(r.environment.gpus)} x {r.environment.gpus[0].name}"
                   + (f" ({r.environment.gpus[0].memory_bytes / GiB:.0f} GiB)" if r.environment.gpus[0].memory_bytes else "")
                   for r in records if r.cell.get("device") == "cuda" and r.environment.gpus})
    cpus = sorted({f"{r.environment.cpu_model}, {r.environment.cpu_count} cores, {r.environment.memory_bytes / GiB:.0f} GiB"
                   for r in records})
    return "; ".join(gpus + [f"CPU {c}" for c in cpus])
