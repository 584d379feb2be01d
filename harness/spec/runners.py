"""The runners file of ``harness matrix``: the machines a fleet has, as GitHub Actions labels them.

.. code-block:: yaml

    runners:
      - machine: h100-80gb-x1          # the logical machine its records carry (--machine)
        labels: [self-hosted, linux, h100]
        gpus: 1
        gpu_name: NVIDIA H100 80GB HBM3
        gpu_memory_gib: 80
        suites: [quantization, serving] # optional: which suites it runs (default: all given)
      - machine: cpu-4c
        labels: [ubuntu-latest]
        cpus: 4

Validated like a suite: unknown keys, wrong types and duplicate machines are refused with
``file:line: field: message``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from harness.base.host import GPU, Host
from harness.base.specbase import StrictModel
from harness.results.records import MACHINE
from harness.spec.source import compose, duplicate_keys, read_text, validated

GiB = 2**30


class Runner(StrictModel):
    """One kind of runner of the fleet."""

    machine: str = Field(pattern=MACHINE.pattern, description="Logical machine name its records carry.")
    labels: list[str] = Field(min_length=1, description="GitHub Actions `runs-on` labels.")
    gpus: int = Field(default=0, ge=0, le=64, description="CUDA devices (0: a CPU runner).")
    gpu_name: str = Field(default="NVIDIA GPU", description="The GPUs' name, as nvidia-smi says it.")
    gpu_memory_gib: float = Field(default=80, gt=0, description="Memory of one GPU in GiB.")
    cpus: int = Field(default=8, ge=1, description="CPU cores.")
    memory_gib: float = Field(default=64, gt=0, description="Host memory in GiB.")
    suites: list[str] | None = Field(default=None, description="Suite names it runs (default: every suite given).")

    def host(self, like: Host) -> Host:
        """A host with this runner's devices, planned as the runner would plan (packages: ``like``'s)."""
        gpus = [GPU(name=self.gpu_name, memory_bytes=int(self.gpu_memory_gib * GiB)) for _ in range(self.gpus)]
        return Host(hostname=self.machine, platform=like.platform, python=like.python, cpu_model="runner",
                    cpu_count=self.cpus, memory_bytes=int(self.memory_gib * GiB), gpus=gpus, packages=like.packages)


class Runners(StrictModel):
    runners: list[Runner] = Field(min_length=1, description="The fleet's runner kinds.")

    @model_validator(mode="after")
    def _distinct(self) -> "Runners":
        names = [r.machine for r in self.runners]
        if len(set(names)) != len(names):
            raise ValueError(f"machines must differ, got {names}")
        return self


def load_runners(path: str | Path) -> Runners:
    """Read and validate a runners file; SuiteError lists every problem with its file and line."""
    source = str(path)
    root, data = compose(read_text(Path(path)), source)
    return validated(Runners, data, root, source, duplicate_keys(root, source))
