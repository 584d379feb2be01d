"""GPTQModel, the maintained toolchain behind the ``gptq`` and ``awq`` precisions: their shared base.

gptqmodel quantizes and runs GPTQ and AWQ on CPU and CUDA. On a host with three cores or fewer it
needs ``GPTQMODEL_CPU_WORKERS=2`` (its default worker pool asks for more cores than exist), and its
first quantization JIT-builds a C++ packing extension (about 35 s, cached by gptqmodel). On CPU its
kernels compute in bf16/fp16 only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.precisions.prequant import PreQuantized

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host


# Why the toolchains the model cards name are not driven (backend -> (absent, present) skip reasons).
OTHER_BACKENDS = {
    "auto-gptq": ("auto-gptq is not installed; it is abandoned (last release 0.7.1, 2024) and needs transformers 4: "
                  "use backend: gptqmodel",
                  "auto-gptq 0.7.1 cannot be imported with transformers 5 (no_init_weights was removed): "
                  "use backend: gptqmodel"),
    "autoawq": ("autoawq is not installed; it is archived upstream: use backend: gptqmodel (same GEMM format)",
                "autoawq is archived upstream and its CPU inference needs intel-extension-for-pytorch, which has "
                "no build for torch 2.13; the harness drives AWQ through gptqmodel: use backend: gptqmodel"),
}


def backend(name: str) -> Any:
    """gptqmodel's BACKEND member whose value is ``name`` (``auto``, ``gptq_torch_aten``, ``awq_torch``...)."""
    from gptqmodel import BACKEND

    return BACKEND(name)


class GptqModelMethod(PreQuantized):
    """Base of a method made and loaded by gptqmodel; subclasses declare ``backend``, ``kernel``,
    ``group_size`` and ``compute_dtype`` fields and set ``kernel_prefix`` and ``cuda_kernels``.
    ``backend`` may name the toolchain a model card names (auto-gptq, autoawq): such cells are
    skipped with the reason it cannot run (:data:`OTHER_BACKENDS`)."""

    requires: ClassVar[tuple[str, str] | None] = ("gptqmodel", "pip install gptqmodel==7.6.0 (7.7+ needs torch>=2.14.1)")
    toolchain: ClassVar[tuple[str, ...]] = ("gptqmodel", "torch", "transformers")
    kernel_prefix: ClassVar[str]
    cuda_kernels: ClassVar[frozenset[str]]

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        other = getattr(self, "backend")
        if other != "gptqmodel":
            absent, present = OTHER_BACKENDS[other]
            return present if host.has(other) else absent
        if (reason := super().supports(cell, host)) is not None:
            return reason
        kernel = getattr(self, "kernel")
        if kernel in self.cuda_kernels and cell.device != "cuda":
            return f"{self.kind.upper()} kernel {kernel!r} needs CUDA; this cell runs on {cell.device}"
        return None

    def check_shape(self, config: dict[str, Any]) -> None:
        group = getattr(self, "group_size")
        if group <= 0:
            return
        for key in ("hidden_size", "intermediate_size"):
            width = config.get(key)
            if width and width % group:
                raise ValueError(f"{self.kind} group_size={group} does not divide the model's {key}={width}; "
                                 f"use a divisor such as 64 or 32")

    def child_env(self) -> dict[str, str]:
        if "GPTQMODEL_CPU_WORKERS" in os.environ or (os.cpu_count() or 1) > 3:
            return {}
        return {"GPTQMODEL_CPU_WORKERS": "2"}

    def gptqmodel_quantize(self, src: Path, out: Path, config: Any, texts: list[str], device: str, dtype: str,
                           kernel: str = "auto") -> dict[str, Any]:
        """Quantize ``src`` with the gptqmodel ``config`` on ``texts`` and save to ``out``."""
        import torch
        from gptqmodel import GPTQModel

        model = GPTQModel.load(str(src), config, device=device, dtype=getattr(torch, dtype))
        model.quantize(texts, batch_size=4, backend=backend(kernel))
        model.save(str(out))
        log = out / "quant_log.csv"
        return {"tool": "gptqmodel", "quant_log": log.read_text()[-4000:] if log.exists() else None}

    def load(self, path: str, device: str) -> Any:
        """Load the checkpoint with the chosen kernel; returns the transformers model inside."""
        import torch
        from gptqmodel import GPTQModel

        kernel = getattr(self, "kernel")
        name = "auto" if kernel == "auto" else f"{self.kernel_prefix}{kernel}"
        model = GPTQModel.load(path, device=device, backend=backend(name), dtype=getattr(torch, self.dtype)).model
        model.eval()
        return model
