"""A model built from a config alone: random weights from a seed, nothing downloaded.

For measurements that depend on a model's shape, not its weights: memory (the GPU memory table of a
1.3B model), speed. ``config`` is a shipped config's name (``harness/data/models/<name>/config.json``,
e.g. ``polyglot-ko-1.3b``) or a path to a config.json. The weights are saved in ``dtype`` (the
model's own ``torch_dtype`` by default), built on a CUDA device when one is present (a 1.3B model
in seconds), else on the CPU. The tokenizer is a byte-level BPE trained on a shipped corpus (as the
tiny model's), at most ``vocab_size`` entries: cells that need the model's whole vocabulary use
random token ids (training's ``tokens: random``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from harness.base.cachedir import build_once
from harness.base.paths import DATA_DIR, cache_dir, corpus_path
from harness.models import SOURCES, ModelSource, ResolvedModel

BUILD_VERSION = 1
SHIPPED = DATA_DIR / "models"


def shipped_configs() -> list[str]:
    """Names of the configs shipped with the harness."""
    return sorted(p.parent.name for p in SHIPPED.glob("*/config.json"))


def _is_path(config: str) -> bool:
    """Whether ``config`` names a file rather than a shipped config."""
    return "/" in config or config.endswith(".json")


@SOURCES.register("config")
class FromConfig(ModelSource):
    """A model of a config's shape with seeded random weights (no download)."""

    kind: Literal["config"] = "config"
    config: str = Field(description="A shipped config's name (harness/data/models/NAME) or a path to a config.json.")
    dtype: Literal["float32", "float16", "bfloat16"] | None = Field(
        default=None, description="dtype of the saved weights (default: the config's torch_dtype, else float32).")
    seed: int = Field(default=0, description="Seed of the random weights.")
    tokenizer_vocab: int = Field(default=2048, ge=300, description="Entries of the byte-level BPE tokenizer (at most the model's vocabulary).")

    @field_validator("config")
    @classmethod
    def _known(cls, value: str) -> str:
        if _is_path(value):
            return value  # a path: checked by check(), where it is used
        if value not in shipped_configs():
            from harness.base.registry import suggest

            raise ValueError(f"no shipped config {value!r}{suggest(value, shipped_configs())}; shipped: "
                             f"{', '.join(shipped_configs())} (or give a path to a config.json)")
        return value

    @classmethod
    def from_ref(cls, rest: str) -> dict[str, Any]:
        return {"kind": "config", "config": rest}

    def ref(self) -> str:
        return f"config:{self.config}"

    def config_path(self) -> Path:
        if _is_path(self.config):
            return Path(self.config).expanduser()
        return SHIPPED / self.config / "config.json"

    def check(self) -> str | None:
        path = self.config_path()
        if not path.is_file():
            return f"config {str(path)!r} does not exist"
        return None

    def config_dir(self) -> Path:
        return self.config_path().parent

    def resolve(self) -> ResolvedModel:
        reason = self.check()
        if reason:
            raise FileNotFoundError(reason)
        text = self.config_path().read_bytes()
        desc = self.model_dump(mode="json") | {"config_sha256": hashlib.sha256(text).hexdigest(), "v": BUILD_VERSION}
        key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]
        name = self.config_path().stem if _is_path(self.config) else self.config
        final = cache_dir() / "models" / f"config-{name}-{key}"
        made, seconds = build_once(final, lambda tmp: self._build(tmp, json.loads(text), desc))
        provenance = json.loads((final / "provenance.json").read_text())
        return ResolvedModel(path=final, provenance=provenance, made=made, prepare_s=seconds)

    def _build(self, out: Path, data: dict[str, Any], desc: dict[str, Any]) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        from harness.models.tiny import build_tokenizer

        model_type = data.pop("model_type")
        config = AutoConfig.for_model(model_type, **data)
        dtype = getattr(torch, self.dtype or str(data.get("torch_dtype") or "float32"))
        vocab = min(self.tokenizer_vocab, int(getattr(config, "vocab_size", self.tokenizer_vocab)))
        tokenizer = build_tokenizer(corpus_path("plain_english"), vocab)
        tokenizer.save_pretrained(out)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(self.seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        model.save_pretrained(out)
        provenance = {"source": "built from a config (random weights)", "build": desc, "built_on": device,
                      "params": sum(p.numel() for p in model.parameters())}
        del model
        (out / "provenance.json").write_text(json.dumps(provenance, indent=2))
