"""A model's shape as the analytic formulas need it: every weight with its element count (and, for a
Linear, its in/out features) and the dimensions, from a transformers config built on the meta device
(no weights are allocated, nothing is downloaded but a Hub config) or from a bare parameter count."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from harness.base.errors import HarnessError


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
            from harness.models import SOURCES

            if ":" not in ref and ref not in SOURCES.names():
                raise HarnessError(f"{ref!r}: no such file or folder, and not a model reference "
                                   "(embedded, tiny, local:PATH, hub:ORG/NAME)")
            model = _model_ref(ref)
            reason = model.check()
            if reason:
                raise HarnessError(f"model {ref!r}: {reason}")
            return cls.from_config(AutoConfig.from_pretrained(model.config_dir()), ref)
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


def _model_ref(ref: str) -> Any:
    """The model source config a reference names (``embedded``, ``tiny``, ``local:PATH``, ``hub:ORG/NAME``)."""
    from pydantic import ValidationError
    from pydantic_core import PydanticCustomError

    from harness.models import SOURCES, parse_ref

    try:
        data = parse_ref(ref)
        return SOURCES.get(data["kind"]).model_validate(data)
    except (ValidationError, PydanticCustomError) as exc:
        msgs = "; ".join(e["msg"] for e in exc.errors()) if isinstance(exc, ValidationError) else str(exc)
        raise HarnessError(f"{ref!r} is not a valid model reference: {msgs}") from None
