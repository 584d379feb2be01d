"""A tiny Llama built in code: random weights from a seed, a byte-level BPE tokenizer trained offline
on the shipped corpus. For unit tests and quick suites; nothing is downloaded.

The default shape (hidden 256, 4 heads of 64, 2 KV heads) keeps head_dim 64, which vLLM's CPU
attention supports, and divides by the quantizers' group sizes (32, 64, 128).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.base.cachedir import build_once
from harness.base.paths import CorpusName, cache_dir, corpus_path
from harness.models import SOURCES, ModelSource, ResolvedModel

BUILD_VERSION = 1


@SOURCES.register("tiny")
class Tiny(ModelSource):
    """A tiny Llama-architecture model built from a config in code (seeded random weights)."""

    kind: Literal["tiny"] = "tiny"
    arch: Literal["llama"] = Field(default="llama", description="Architecture of the built model.")
    hidden_size: int = Field(default=256, ge=32, description="Model width.")
    intermediate_size: int = Field(default=512, ge=32, description="MLP width.")
    num_hidden_layers: int = Field(default=2, ge=1, description="Decoder layers.")
    num_attention_heads: int = Field(default=4, ge=1, description="Query heads.")
    num_key_value_heads: int = Field(default=2, ge=1, description="Key/value heads (GQA when fewer than query heads).")
    vocab_size: int = Field(default=2048, ge=300, description="Tokenizer vocabulary (byte-level BPE) and embedding rows.")
    max_position_embeddings: int = Field(default=1024, ge=64, description="Longest sequence.")
    seed: int = Field(default=0, description="Seed of the random weights.")
    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus the tokenizer is trained on.")

    @classmethod
    def from_ref(cls, rest: str) -> dict[str, Any]:
        return {"kind": "tiny", "arch": rest} if rest else {"kind": "tiny"}

    def ref(self) -> str:
        return f"tiny:{self.arch}"

    def resolve(self) -> ResolvedModel:
        text = corpus_path(self.corpus).read_bytes()
        desc = self.model_dump(mode="json") | {"corpus_sha256": hashlib.sha256(text).hexdigest(), "v": BUILD_VERSION}
        key = hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]
        final = cache_dir() / "models" / f"tiny-{self.arch}-{key}"
        made, seconds = build_once(final, lambda tmp: self._build(tmp, desc))
        provenance = json.loads((final / "provenance.json").read_text())
        return ResolvedModel(path=final, provenance=provenance, made=made, prepare_s=seconds)

    def _build(self, out: Path, desc: dict[str, Any]) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = build_tokenizer(corpus_path(self.corpus), self.vocab_size)
        tokenizer.save_pretrained(out)
        config = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            max_position_embeddings=self.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
            torch_dtype="float32",
        )
        torch.manual_seed(self.seed)
        model = LlamaForCausalLM(config)
        model.save_pretrained(out)
        provenance = {"source": "tiny model built in code (random weights)", "build": desc,
                      "params": sum(p.numel() for p in model.parameters())}
        (out / "provenance.json").write_text(json.dumps(provenance, indent=2))


def build_tokenizer(corpus: Path, vocab_size: int):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``corpus`` (offline, deterministic)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([str(corpus)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=1024)
