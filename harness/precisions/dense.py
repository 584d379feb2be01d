"""Unquantized weights in fp32, bf16 or fp16 (fp16 on CPU is valid but slow: no native fp16 matmul)."""

from __future__ import annotations

from typing import Literal

from harness.precisions import PRECISIONS, Precision


@PRECISIONS.register("fp32")
@PRECISIONS.register("bf16")
@PRECISIONS.register("fp16")
class Dense(Precision):
    """Plain floating-point weights and activations."""

    kind: Literal["fp32", "bf16", "fp16"]
