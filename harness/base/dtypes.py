"""Element widths of the dtypes the harness meets, once: suite names, torch names and KV-cache dtypes.

Suites name dense dtypes ``fp32``, ``bf16``, ``fp16``; torch and records name them ``float32``,
``bfloat16``, ``float16``; vLLM names cache dtypes ``auto``, ``fp8``, ``fp8_e4m3``, ``fp8_e5m2``.
"""

from __future__ import annotations

from typing import Literal

DenseName = Literal["fp32", "bf16", "fp16"]
TORCH_NAMES: dict[str, str] = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
ELEMENT_BYTES: dict[str, int] = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8,
                                 "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "int8": 1, "uint8": 1}


def torch_name(name: str) -> str:
    """``float32`` for ``fp32`` (or for ``float32`` / ``torch.float32``): the torch dtype's name."""
    name = name.removeprefix("torch.")
    return TORCH_NAMES.get(name, name)


def short_name(name: str) -> str:
    """``fp32`` for ``float32`` (or ``torch.float32``, or ``fp32``); raises KeyError for other dtypes."""
    name = torch_name(name)
    return next(k for k, v in TORCH_NAMES.items() if v == name)


def element_bytes(name: str) -> int:
    """Bytes per element of a dtype by any of its names; raises KeyError naming the known ones."""
    key = torch_name(name)
    if key not in ELEMENT_BYTES:
        raise KeyError(f"unknown dtype {name!r}; known: {', '.join(sorted(set(TORCH_NAMES) | set(ELEMENT_BYTES)))}")
    return ELEMENT_BYTES[key]
