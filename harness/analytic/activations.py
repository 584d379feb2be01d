"""Activations autograd saves for backward in one micro-batch of a Llama-style decoder (transformers, SDPA).

Derived from the autograd graph of transformers' Llama layers; a training cell records the residual
against what it counts from the tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.base.dtypes import element_bytes
from harness.base.errors import HarnessError

if TYPE_CHECKING:
    from harness.analytic.estimate import EstimateInput
    from harness.analytic.shape import ModelShape

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def activation_bytes(shape: "ModelShape", inp: "EstimateInput") -> tuple[int, int]:
    """(saved, peak) bytes of activations for one micro-batch of ``batch x seq`` tokens.

    Per token and decoder layer, with ``e`` the activation element bytes (fp32 throughout over a k-bit
    base, whose other tensors peft upcast) and h, i, a, kv, d the model's dimensions:
    each RMSNorm saves its fp32 input (4h) and rsqrt (4), plus its normalized output (e*h) when its
    weight trains; attention saves q, k, v and the output (e*(2ad + 2kv*d)) and the log-sum-exp (4a);
    the MLP saves gate, SiLU and up outputs (3ei); a trainable Linear saves its input (e*h for q/k/v
    and for gate/up, once each; e*i for down; o's input is the saved attention output); a LoRA adapter
    saves its rank-r output (4r) and, when the activations are 16-bit, its fp32 copy of the input.
    Outside the layers: the final norm, lm_head's input when it trains, fp32 log-probs (4V), the
    labels (8) and, when embeddings train, the token ids (8); rotary cos/sin once (2*seq*d*e).
    With checkpointing, each layer saves only its input (e*h); the backward peak adds one layer.
    The first layer's input needs no gradient when the embeddings are frozen.
    """
    h, i, a, kv, d, v = (shape.hidden, shape.intermediate, shape.heads, shape.kv_heads, shape.head_dim, shape.vocab)
    if None in (h, i, a, kv, d, v):
        raise HarnessError(f"{shape.source}: activations need hidden, intermediate, heads, kv_heads, head_dim, vocab")
    kbit = inp.quant != "none" and inp.train in ("lora", "qlora")
    e = 4 if kbit else element_bytes(inp.dtype)
    full = inp.train == "full"
    targets = set(LLAMA_LINEARS) if full else {t for t in LLAMA_LINEARS if t in inp.lora_targets}
    lora = 0 if full else len(targets)
    tokens = inp.batch * inp.seq  # type: ignore[operator]

    def norm(x_grad: bool) -> int:
        return (4 * h + 4 if x_grad else 0) + (e * h if full else 0)

    def layer(first: bool) -> int:
        x_grad = full or not first
        out = norm(x_grad) + norm(True)
        out += e * (2 * a * d + 2 * kv * d) + 4 * a + 3 * e * i
        if full:
            out += e * h * 2 + e * i  # q/k/v input, gate/up input, down input
        else:
            share = e == 4
            if share and targets & {"q_proj", "k_proj", "v_proj"}:
                out += e * h
            if share and targets & {"gate_proj", "up_proj"}:
                out += e * h
            if share and "down_proj" in targets:
                out += e * i
            if not share:
                widths = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": a * d, "gate_proj": h, "up_proj": h, "down_proj": i}
                out += sum(4 * widths[t] for t in targets)
            out += 4 * inp.lora_r * lora
        return out

    final = norm(True) + (e * h if full else 0) + 4 * v + 8 + (8 if full else 0)
    loss_scalar = 4  # the fp32 normalizer the summed loss is divided by
    rope = 2 * inp.seq * d * e  # type: ignore[operator]
    layers = shape.layers or 0
    if inp.gradient_checkpointing:
        saved = tokens * (layers * e * h + final) + loss_scalar
        peak = saved + tokens * layer(False) + rope
        return saved, peak
    saved = tokens * (layer(True) + (layers - 1) * layer(False) + final) + rope + loss_scalar
    return saved, saved
