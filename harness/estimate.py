"""The analytic memory model: what a model costs to hold, train and serve, without running it.

:class:`ModelShape` describes a model from its config (built on the meta device: no weights, no
download) or from a bare parameter count. :func:`estimate` predicts, in bytes and counts:

- parameters: every tensor in its stored form. Quantized Linear layers (all but ``lm_head``) cost
  what the precision's :meth:`~harness.precisions.Precision.layer_bytes` says (codes and constants).
  LoRA adds ``r*(d_in+d_out)`` per adapted matrix, in fp32 (peft upcasts 16-bit adapters); over a
  k-bit base, ``prepare_model_for_kbit_training`` upcasts the remaining 16-bit tensors to fp32.
- gradients: one per trainable element, in the trainable tensor's dtype.
- optimizer state: :func:`harness.optimizers.state_bytes` (exact per tensor). Mixed precision holds
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

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from harness.errors import HarnessError
from harness.optimizers import OptimizerName, replicated_bytes, state_bytes
from harness.specbase import StrictModel

ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Weight(BaseModel):
    """One parameter tensor of a model: its name, element count, and shape if it is a Linear weight."""

    name: str
    numel: int
    linear: tuple[int, int] | None = Field(default=None, description="(in_features, out_features) of a Linear weight")


class ModelShape(BaseModel):
    """The parameters and dimensions of a model, as the estimator needs them."""

    source: str
    weights: list[Weight]
    layers: int | None = None
    hidden: int | None = None
    intermediate: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    vocab: int | None = None

    @property
    def params(self) -> int:
        return sum(w.numel for w in self.weights)

    @classmethod
    def from_params(cls, n: int) -> "ModelShape":
        """A model known only by its parameter count (no layers: no LoRA, activations or KV cache)."""
        if n <= 0:
            raise HarnessError(f"--params must be a positive count, got {n}")
        return cls(source=f"{n} parameters", weights=[Weight(name="params", numel=n)])

    @classmethod
    def from_config(cls, config: Any, source: str) -> "ModelShape":
        """Build the model on the meta device from a transformers config (no weights are allocated)."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        linears = {f"{name}.weight": (m.in_features, m.out_features) for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear)}
        weights = [Weight(name=n, numel=p.numel(), linear=linears.get(n)) for n, p in model.named_parameters()]
        return cls(source=source, weights=weights, **config_dims(config))

    @classmethod
    def load(cls, ref: str) -> "ModelShape":
        """From a config.json file, a folder holding one, or a model reference: ``hub:ORG/NAME`` fetches
        only its config.json; ``embedded``, ``tiny`` and ``local:PATH`` are resolved as the harness
        resolves models (built or converted once, then cached). Raises HarnessError naming the input."""
        from transformers import AutoConfig

        path = Path(ref)
        try:
            if path.is_file():
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError) as exc:
                    raise HarnessError(f"{ref}: not a readable JSON config: {exc}") from None
                model_type = data.pop("model_type", None) if isinstance(data, dict) else None
                if model_type is None:
                    raise HarnessError(f"{ref}: a config.json is a JSON object with a 'model_type' (e.g. 'llama')")
                return cls.from_config(AutoConfig.for_model(model_type, **data), str(path))
            if path.is_dir():
                if not (path / "config.json").is_file():
                    raise HarnessError(f"{ref}: folder without a config.json")
                return cls.from_config(AutoConfig.from_pretrained(path), str(path))
            if ":" not in ref and ref not in ("embedded", "tiny"):
                raise HarnessError(f"{ref!r}: no such file or folder, and not a model reference "
                                   "(embedded, tiny, local:PATH, hub:ORG/NAME)")
            model = _model_ref(ref)
            reason = model.check()
            if reason:
                raise HarnessError(f"model {ref!r}: {reason}")
            if model.kind == "hub":
                from huggingface_hub import hf_hub_download

                config = hf_hub_download(model.id, "config.json", revision=model.revision)
                return cls.from_config(AutoConfig.from_pretrained(Path(config).parent), ref)
            return cls.from_config(AutoConfig.from_pretrained(model.resolve().path), ref)
        except HarnessError:
            raise
        except Exception as exc:  # transformers' and the Hub's errors, named with the input they concern
            text = str(exc).split("\n")[0].split(". Should contain")[0][:300]  # not the list of every model type
            raise HarnessError(f"{ref}: cannot read its model config: {type(exc).__name__}: {text}") from None


def config_dims(config: Any) -> dict[str, int | None]:
    """A transformers config's dimensions as :class:`ModelShape` names them (None where it has none);
    ``head_dim`` defaults to hidden / heads and ``kv_heads`` to heads (no GQA)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None)
    hidden = getattr(text, "hidden_size", None)
    return {"layers": getattr(text, "num_hidden_layers", None), "hidden": hidden,
            "intermediate": getattr(text, "intermediate_size", None), "heads": heads,
            "kv_heads": getattr(text, "num_key_value_heads", None) or heads,
            "head_dim": getattr(text, "head_dim", None) or (hidden // heads if hidden and heads else None),
            "vocab": getattr(text, "vocab_size", None)}


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, element_bytes: int) -> int:
    """KV-cache bytes of one token: K and V, for every layer and KV head."""
    return 2 * layers * kv_heads * head_dim * element_bytes


def _model_ref(ref: str) -> Any:
    from pydantic import TypeAdapter, ValidationError

    from harness.axes import ModelRef

    try:
        return TypeAdapter(ModelRef).validate_python(ref)
    except ValidationError as exc:
        msgs = "; ".join(e["msg"] for e in exc.errors())
        raise HarnessError(f"{ref!r} is not a valid model reference: {msgs}") from None


class EstimateInput(StrictModel):
    """What to estimate: the flags of ``harness estimate``."""

    dtype: Literal["fp32", "fp16", "bf16"] = Field(default="fp32", description="dtype of unquantized weights and of compute.")
    train: Literal["none", "full", "lora", "qlora"] = Field(default="none", description="What trains.")
    lora_r: int = Field(default=8, ge=1, description="LoRA rank.")
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1,
                                    description="Names of the Linear modules that get adapters.")
    optimizer: OptimizerName = Field(default="adamw", description="Optimizer whose state is counted.")
    mixed_precision: bool = Field(default=False, description="16-bit params and grads with fp32 master weights and moments.")
    zero_stage: int = Field(default=0, ge=0, le=3, description="ZeRO stage: 1 shards optimizer state, 2 + grads, 3 + params.")
    world_size: int = Field(default=1, ge=1, description="Data-parallel ranks.")
    quant: Literal["none", "int8", "nf4", "fp4"] = Field(default="none", description="Quantization of the Linear weights.")
    double_quant: bool = Field(default=False, description="NF4/FP4: re-quantize the absmax constants to 8 bits.")
    batch: int | None = Field(default=None, ge=1, description="Sequences per micro-batch (per rank).")
    seq: int | None = Field(default=None, ge=1, description="Tokens per sequence.")
    gradient_checkpointing: bool = Field(default=False, description="Save only each layer's input for backward.")

    @model_validator(mode="after")
    def _consistent(self) -> "EstimateInput":
        if self.train == "qlora" and self.quant not in ("nf4", "fp4"):
            raise ValueError(f"--train qlora trains over 4-bit weights: give --quant nf4 or fp4 (got {self.quant})")
        if self.train == "full" and self.quant != "none":
            raise ValueError(f"--train full cannot update {self.quant} quantized weights: use --train lora or qlora")
        if self.double_quant and self.quant not in ("nf4", "fp4"):
            raise ValueError(f"--double-quant applies to --quant nf4 or fp4, not {self.quant}")
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


def _precision(inp: EstimateInput) -> Any:
    from harness.precisions.bnb4 import BnB4bit
    from harness.precisions.bnb8 import BnBInt8

    if inp.quant == "int8":
        return BnBInt8(kind="int8")
    if inp.quant in ("nf4", "fp4"):
        return BnB4bit(kind=inp.quant, double_quant=inp.double_quant)
    return None


def _targeted(name: str, targets: list[str]) -> bool:
    module = name.removesuffix(".weight")
    return any(module == t or module.endswith("." + t) for t in targets)


def estimate(shape: ModelShape, inp: EstimateInput) -> Estimate:
    """Predict the memory of ``shape`` under ``inp`` (see the module docstring for every rule)."""
    notes: list[str] = []
    e = ELEMENT_BYTES[inp.dtype]
    quant = _precision(inp)
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
        adapted = [w for w in shape.weights if w.linear is not None and _targeted(w.name, inp.lora_targets)]
        if not adapted:
            if shape.layers is None:
                raise HarnessError("LoRA needs the model's layers to count adapters: give a model or config.json, not --params")
            names = sorted({w.name.rsplit(".", 2)[-2] for w in shape.weights if w.linear is not None})
            if not names:
                raise HarnessError(f"{shape.source} has no nn.Linear modules for LoRA (Conv1D models such as GPT-2 are "
                                   "not supported by the estimator)")
            raise HarnessError(f"--lora-targets {','.join(inp.lora_targets)} match no Linear module; modules: {', '.join(names)}")
        for w in adapted:
            in_f, out_f = w.linear  # type: ignore[misc]
            for numel in (inp.lora_r * in_f, out_f * inp.lora_r):  # A (r x in) and B (out x r)
                params += numel
                params_bytes += numel * adapter_bytes
                trainable.append((numel, adapter_bytes))
    trainable_params = sum(n for n, _ in trainable)
    grads_bytes = sum(n * b for n, b in trainable)
    optimizer_bytes = state_bytes(inp.optimizer, [n for n, _ in trainable], [b for _, b in trainable],
                                  mixed_precision=inp.mixed_precision) if trainable else 0
    if inp.train == "none":
        grads_bytes = optimizer_bytes = 0
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


def rank_shares(params: int, grads: int, optimizer: int, replicated: int, stage: int, world: int) -> dict[str, int]:
    """One rank's bytes under ZeRO ``stage`` over ``world`` ranks: stage 1 shards the optimizer state (but
    ``replicated``), 2 also the gradients, 3 also the parameters; shards round up."""
    return {"params_bytes": math.ceil(params / world) if stage >= 3 else params,
            "grads_bytes": math.ceil(grads / world) if stage >= 2 else grads,
            "optimizer_bytes": math.ceil((optimizer - replicated) / world) + replicated if stage >= 1 else optimizer}


def activation_bytes(shape: ModelShape, inp: EstimateInput) -> tuple[int, int]:
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
    e = 4 if kbit else ELEMENT_BYTES[inp.dtype]
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
