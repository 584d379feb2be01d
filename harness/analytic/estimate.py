"""The analytic memory model: what a model costs to hold, train and serve, without running it.

:class:`ModelShape` describes a model from its config (built on the meta device: no weights, no
download) or from a bare parameter count. :func:`estimate` predicts, in bytes and counts:

- parameters: every tensor in its stored form. Quantized Linear layers (all but ``lm_head``) cost
  what the precision's :meth:`~harness.precisions.Precision.layer_bytes` says (codes and constants).
  LoRA adds ``r*(d_in+d_out)`` per adapted matrix, in fp32 (peft upcasts 16-bit adapters); over a
  k-bit base, ``prepare_model_for_kbit_training`` upcasts the remaining 16-bit tensors to fp32.
- gradients: one per trainable element, in the trainable tensor's dtype.
- optimizer state: :func:`harness.training.optimizers.state_bytes` (exact per tensor). Mixed precision holds
  16-bit parameters and gradients with an fp32 master copy and fp32 moments (2N + 2N + 12N for AdamW).
- activations: bytes autograd saves for backward in one micro-batch of a Llama-style decoder under
  transformers with SDPA attention (derived from its autograd graph; see :func:`activation_bytes`), and
  with checkpointing the layer inputs only, plus one layer recomputed at the backward peak.
- KV cache: 2 (K and V) x layers x kv_heads x head_dim x bytes per element, per token.
- ZeRO with ``world_size`` ranks: stage 1 shards optimizer state, 2 also gradients, 3 also parameters.

The exact quantities (parameters, trainable counts, gradient and optimizer bytes) equal what a
training cell counts from its tensors; activations are a model, and cells record the residual.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from harness.analytic.activations import activation_bytes
from harness.analytic.kv import kv_bytes_per_token
from harness.analytic.shape import ModelShape
from harness.base.dtypes import DenseName, element_bytes
from harness.base.errors import HarnessError
from harness.base.specbase import StrictModel
from harness.training.optimizers import OptimizerName, replicated_bytes, state_bytes


class EstimateInput(StrictModel):
    """What to estimate: the flags of ``harness estimate``."""

    dtype: DenseName = Field(default="fp32", description="fp32, fp16 or bf16: dtype of unquantized weights and of compute.")
    train: Literal["none", "full", "lora", "qlora"] = Field(default="none", description="What trains: none, full, lora or qlora.")
    lora_r: int = Field(default=8, ge=1, description="LoRA rank.")
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1,
                                    description="Names of the Linear modules that get adapters.")
    optimizer: OptimizerName = Field(default="adamw", description="Optimizer whose state is counted: adamw, adamw8bit, "
                                                                      "paged_adamw, paged_adamw8bit or sgd.")
    mixed_precision: bool = Field(default=False, description="16-bit params and grads with fp32 master weights and moments.")
    zero_stage: int = Field(default=0, ge=0, le=3, description="ZeRO stage: 1 shards optimizer state, 2 + grads, 3 + params.")
    world_size: int = Field(default=1, ge=1, description="Data-parallel ranks.")
    quant: str = Field(default="none", description="Quantization of the Linear weights: none, or a quantized precision's "
                                                  "kind (int8, nf4, fp4, gptq, awq).")
    quant_config: dict[str, Any] = Field(default_factory=dict, description="That precision's settings, as in a suite "
                                                                           "(e.g. {bits: 4, group_size: 64} for gptq).")
    double_quant: bool = Field(default=False, description="Sets the precision's double_quant (NF4/FP4: re-quantize the "
                                                          "absmax constants to 8 bits) unless quant_config does.")
    batch: int | None = Field(default=None, ge=1, description="Sequences per micro-batch (per rank).")
    seq: int | None = Field(default=None, ge=1, description="Tokens per sequence.")
    gradient_checkpointing: bool = Field(default=False, description="Save only each layer's input for backward.")

    def precision(self) -> Any:
        """The quantized precision the weights are in (a registered precision config), or None."""
        if self.quant == "none":
            return None
        from harness.precisions import PRECISIONS

        cls = PRECISIONS.get(self.quant)
        config = {"kind": self.quant, **self.quant_config}
        if "double_quant" in cls.model_fields and "double_quant" not in self.quant_config:
            config["double_quant"] = self.double_quant
        return cls.model_validate(config)

    @model_validator(mode="after")
    def _consistent(self) -> "EstimateInput":
        from pydantic import ValidationError

        from harness.precisions import PRECISIONS

        classes = PRECISIONS.items()
        quantized = sorted(k for k, c in classes.items() if c.quantized)
        if self.quant != "none" and self.quant not in quantized:
            raise ValueError(f"--quant {self.quant}: allowed: none, {', '.join(quantized)}")
        dq = sorted(k for k in quantized if "double_quant" in classes[k].model_fields)
        if self.double_quant and self.quant not in dq:
            raise ValueError(f"--double-quant applies to --quant {' or '.join(dq)}, not {self.quant}")
        try:
            precision = self.precision()
        except ValidationError as exc:
            raise ValueError(f"--quant {self.quant}: " + "; ".join(e["msg"] for e in exc.errors())) from None
        base = precision.adapter_mode if precision is not None else "lora"
        if self.train == "qlora" and base != "qlora":
            kbit = sorted(k for k in quantized if classes[k].adapter_mode == "qlora")
            raise ValueError(f"--train qlora trains over 4-bit weights: give --quant {' or '.join(kbit)} (got {self.quant})")
        if self.train == "full" and precision is not None:
            raise ValueError(f"--train full cannot update {self.quant} quantized weights: use --train lora or qlora")
        if self.train in ("lora", "qlora") and base is None:
            raise ValueError(f"--train {self.train}: the harness trains nothing over {self.quant} checkpoints")
        if self.gradient_checkpointing and (self.train == "none" or self.batch is None):
            raise ValueError("--gradient-checkpointing changes training activations: give --train and --batch/--seq")
        if self.mixed_precision and self.dtype == "fp32":
            raise ValueError("--mixed-precision needs a 16-bit --dtype (fp16 or bf16) for parameters and gradients")
        if (self.batch is None) != (self.seq is None):
            raise ValueError("give --batch and --seq together")
        return self


class Estimate(BaseModel):
    """The prediction. Bytes and counts; ``per_rank_bytes`` is one rank's share, ``total_bytes`` all ranks'."""

    model: str
    inputs: EstimateInput
    params: int = Field(description="all parameters, adapters included")
    trainable_params: int
    trainable_tensors: int
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int = Field(description="optimizer state; fp32 master weights count here under mixed precision")
    optimizer_replicated_bytes: int = Field(default=0, description="part of it every rank keeps whole under ZeRO (step scalars)")
    activation_bytes: int | None = Field(description="saved for backward in one micro-batch (training, with --batch/--seq)")
    activation_peak_bytes: int | None = Field(description="activations at the backward peak (checkpointing: + one layer recomputed)")
    kv_cache_bytes_per_token: int | None
    kv_cache_bytes: int | None = Field(description="K and V for batch x seq tokens (inference)")
    quantized_bits_per_param: float | None = Field(description="bits per weight of the quantized layers, constants included")
    per_rank_bytes: int = Field(description="params + grads + optimizer (+ activations or KV cache) held by one rank")
    total_bytes: int = Field(description="the same summed over all ranks (equal to per_rank_bytes for one rank)")
    notes: list[str] = Field(default_factory=list)


def _targeted(name: str, targets: list[str]) -> bool:
    module = name.removesuffix(".weight")
    return any(module == t or module.endswith("." + t) for t in targets)


def estimate(shape: ModelShape, inp: EstimateInput) -> Estimate:
    """Predict the memory of ``shape`` under ``inp`` (see the module docstring for every rule)."""
    notes: list[str] = []
    e = element_bytes(inp.dtype)
    quant = inp.precision()
    lora = inp.train in ("lora", "qlora")
    kbit = quant is not None and lora  # prepare_model_for_kbit_training upcasts 16-bit tensors to fp32
    other_bytes = 4 if kbit else e
    adapter_bytes = e if inp.mixed_precision else 4
    params = params_bytes = q_bits = q_weights = 0
    trainable: list[tuple[int, int]] = []  # (numel, element bytes)
    for w in shape.weights:
        params += w.numel
        lm_head = w.name.startswith("lm_head") or w.name.endswith(".lm_head.weight")
        if quant is not None and (w.linear is not None or w.linear is None and shape.layers is None) and not lm_head:
            in_f, out_f = w.linear or (4096, max(1, w.numel // 4096))
            if w.linear is None:
                notes.append("a bare parameter count is taken as 4096-wide Linear weights for the quantized bytes")
            nbytes = quant.layer_bytes(in_f, out_f) if w.linear else math.ceil(quant.storage(in_f, out_f).bits_per_weight * w.numel / 8)
            params_bytes += nbytes
            q_bits += 8 * nbytes
            q_weights += w.numel
            continue
        params_bytes += w.numel * other_bytes
        if inp.train == "full":
            trainable.append((w.numel, e))
    if lora:
        for numel in _adapters(shape, inp):
            params += numel
            params_bytes += numel * adapter_bytes
            trainable.append((numel, adapter_bytes))
    trainable_params = sum(n for n, _ in trainable)
    grads_bytes = sum(n * b for n, b in trainable)
    optimizer_bytes = state_bytes(inp.optimizer, [n for n, _ in trainable], [b for _, b in trainable],
                                  mixed_precision=inp.mixed_precision) if trainable else 0
    if inp.train == "none":
        grads_bytes = optimizer_bytes = 0
    acts, peak, kv_token, kv = _activations_and_kv(shape, inp, e, notes)
    replicated = replicated_bytes(inp.optimizer, len(trainable)) if optimizer_bytes else 0
    shares = rank_shares(params_bytes, grads_bytes, optimizer_bytes, replicated, inp.zero_stage, inp.world_size)
    params_r, grads_r, opt_r = shares["params_bytes"], shares["grads_bytes"], shares["optimizer_bytes"]
    w = inp.world_size
    if inp.zero_stage and w == 1:
        notes.append("ZeRO with one rank shards nothing: give --world-size")
    per_rank = params_r + grads_r + opt_r + (acts or 0) + (kv or 0)
    return Estimate(model=shape.source, inputs=inp, params=params, trainable_params=trainable_params,
                    trainable_tensors=len(trainable), params_bytes=params_bytes, grads_bytes=grads_bytes,
                    optimizer_bytes=optimizer_bytes, optimizer_replicated_bytes=replicated, activation_bytes=acts, activation_peak_bytes=peak,
                    kv_cache_bytes_per_token=kv_token, kv_cache_bytes=kv,
                    quantized_bits_per_param=q_bits / q_weights if q_weights else None,
                    per_rank_bytes=per_rank, total_bytes=per_rank * w, notes=sorted(set(notes)))


def _adapters(shape: ModelShape, inp: EstimateInput) -> list[int]:
    """Element counts of every LoRA matrix: A (r x in) and B (out x r) of each targeted Linear.
    Raises HarnessError naming the model's Linear modules when the targets match none."""
    adapted = [w for w in shape.weights if w.linear is not None and _targeted(w.name, inp.lora_targets)]
    if not adapted:
        if shape.layers is None:
            raise HarnessError("LoRA needs the model's layers to count adapters: give a model or config.json, not --params")
        names = sorted({w.name.rsplit(".", 2)[-2] for w in shape.weights if w.linear is not None})
        if not names:
            raise HarnessError(f"{shape.source} has no nn.Linear modules for LoRA (Conv1D models such as GPT-2 are "
                               "not supported by the estimator)")
        raise HarnessError(f"--lora-targets {','.join(inp.lora_targets)} match no Linear module; modules: {', '.join(names)}")
    out = []
    for w in adapted:
        in_f, out_f = w.linear  # type: ignore[misc]
        out += [inp.lora_r * in_f, out_f * inp.lora_r]
    return out


def _activations_and_kv(shape: ModelShape, inp: EstimateInput, e: int,
                        notes: list[str]) -> tuple[int | None, int | None, int | None, int | None]:
    """(saved activations, backward peak, KV bytes per token, KV cache bytes); None where not asked or
    not known. Appends to ``notes`` what the user should know about them."""
    acts = peak = kv_token = kv = None
    if shape.layers and shape.kv_heads and shape.head_dim:
        kv_token = kv_bytes_per_token(shape.layers, shape.kv_heads, shape.head_dim, e)
    if inp.batch is not None and inp.seq is not None:
        if inp.train != "none":
            if shape.layers is None:
                notes.append("activations need the model's dimensions: give a model or config.json")
            else:
                acts, peak = activation_bytes(shape, inp)
                if not any(w.name.endswith("q_proj.weight") for w in shape.weights):
                    notes.append("the activation model is derived for Llama-style decoders (q/k/v/o, gate/up/down); "
                                 "this model's layers differ, so take activation_bytes as a rough guide")
        elif kv_token is not None:
            kv = kv_token * inp.batch * inp.seq
    return acts, peak, kv_token, kv


def rank_shares(params: int, grads: int, optimizer: int, replicated: int, stage: int, world: int) -> dict[str, int]:
    """One rank's bytes under ZeRO ``stage`` over ``world`` ranks: stage 1 shards the optimizer state (but
    ``replicated``), 2 also the gradients, 3 also the parameters; shards round up."""
    return {"params_bytes": math.ceil(params / world) if stage >= 3 else params,
            "grads_bytes": math.ceil(grads / world) if stage >= 2 else grads,
            "optimizer_bytes": math.ceil((optimizer - replicated) / world) + replicated if stage >= 1 else optimizer}


