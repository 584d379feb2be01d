"""The logical machine a record ran on: the runner name every store lookup, gate, report and asv series
keys on, so records of an H100 runner and an L4 runner in one store never stand in for each other.

A run names its machine with ``--machine NAME`` or ``$HARNESS_MACHINE`` (a runner label you choose, never
the hostname: letters, digits, ``.``, ``_``, ``-``), written into ``environment.machine`` of every record.
Unnamed, the machine is derived from the host's devices (:func:`default_machine`): ``cpu-<cores>c`` on a
host without GPUs, ``<gpu>-<GiB>gb-x<count>`` with them (``h100-80gb-x1``). Records written before the
field existed read as that default for the host they record (:func:`machine_of`).
"""

from __future__ import annotations

import os
import re

from harness.base.errors import HarnessError
from harness.base.host import Host
from harness.results.records import MACHINE, Record

MACHINE_ENV = "HARNESS_MACHINE"
GiB = 2**30
# words in a GPU's marketing name that do not tell two GPUs apart (vendor, line, memory, form factor)
_NOISE = re.compile(r"^(nvidia|geforce|tesla|quadro|amd|radeon|instinct|\d+gb|hbm\d*e?|gddr\d*x?|pcie|sxm\d*|nvl|oam)$")


def gpu_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``h100``, ``NVIDIA GeForce RTX 4090`` -> ``rtx-4090``; ``gpu`` when
    nothing is left."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and not _NOISE.match(w)]
    return "-".join(words) or "gpu"


def default_machine(host: Host) -> str:
    """A stable name for ``host`` from its devices: ``<gpu slug>-<memory GiB, rounded>gb-x<GPU count>``, or
    ``cpu-<cores>c`` without GPUs."""
    if host.gpus:
        gpu = host.gpus[0]
        mem = f"-{round(gpu.memory_bytes / GiB)}gb" if gpu.memory_bytes else ""
        return f"{gpu_slug(gpu.name)}{mem}-x{len(host.gpus)}"
    return f"cpu-{host.cpu_count}c"


def check_machine(name: str, where: str = "--machine") -> str:
    """``name`` when it is a valid machine name; else HarnessError saying what is allowed."""
    if not MACHINE.fullmatch(name):
        raise HarnessError(f"{where} {name!r}: a machine name is 1 to 64 letters, digits, '.', '_' or '-', starting "
                           "with a letter or digit (a runner label: it names folders, files and a graph axis)")
    return name


def run_machine(host: Host, name: str | None = None) -> str:
    """The machine of this run: ``name`` (``--machine``), else ``$HARNESS_MACHINE``, else :func:`default_machine`."""
    given = name or os.environ.get(MACHINE_ENV) or None
    return check_machine(given, "--machine" if name else f"${MACHINE_ENV}") if given else default_machine(host)


def machine_of(record: Record) -> str:
    """The record's logical machine: ``environment.machine``, or (older records) the default for its host."""
    return record.environment.machine or default_machine(record.environment)
