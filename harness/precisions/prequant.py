"""Shared base of methods that quantize a checkpoint ahead of loading it, on calibration text (GPTQ, AWQ).

Quantizing is expensive, so :meth:`PreQuantized.prepare` caches the checkpoint under
``$HARNESS_CACHE_DIR/quantized/<kind>-<key>``. The key hashes the model's identity, the method's
settings (the load-time ``kernel`` excluded), the toolchain versions and the source of the method's
classes (so a change to how the harness calls the quantizer remakes it). It is made in a child
process (:mod:`harness.base.child`) running inside the checkpoint folder: the cell's own peak memory is
not the quantizer's, and the logs the quantizer drops in its working directory stay with the
checkpoint. The time and peak RSS of making it are kept with it and reported again on reuse.
Calibration text comes from a shipped corpus the evaluation does not use (``calibration_prose``).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from harness.base.paths import CorpusName, cache_dir, corpus_path
from harness.base.specbase import StrictModel
from harness.precisions import Precision, Prepared

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.resolved import ResolvedModel

META = "harness-quantized.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "chat_template.jinja", "generation_config.json")


class Calibration(StrictModel):
    """Which text a calibrated method sees while quantizing."""

    corpus: CorpusName = Field(default="calibration_prose", description="Shipped corpus the samples come from.")
    samples: int = Field(default=32, ge=1, description="Number of calibration samples (paragraphs of the corpus).")
    seed: int = Field(default=0, description="Seed of the paragraph shuffle that picks the samples.")


def calibration_texts(cal: Calibration) -> list[str]:
    """The ``cal.samples`` paragraphs (lines of at least 20 words) picked by ``cal.seed``.

    Raises ValueError when the corpus has fewer paragraphs than asked for.
    """
    paragraphs = [line.strip() for line in corpus_path(cal.corpus).read_text().splitlines() if len(line.split()) >= 20]
    if cal.samples > len(paragraphs):
        raise ValueError(f"calibration.samples={cal.samples} but corpus {cal.corpus!r} has only {len(paragraphs)} "
                         f"paragraphs of 20+ words")
    random.Random(cal.seed).shuffle(paragraphs)
    return paragraphs[: cal.samples]


def _versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    from harness.base.host import package_versions

    installed = package_versions()
    return {name: installed[name] for name in packages}


class PreQuantized(Precision):
    """A precision whose checkpoint is made by a calibrated quantizer and cached."""

    quantized: ClassVar[bool] = True
    adapter_mode: ClassVar[str | None] = None  # the harness trains nothing over a packed checkpoint
    toolchain: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    load_only: ClassVar[frozenset[str]] = frozenset({"name", "kernel"})  # settings that do not change the checkpoint
    calibration: Calibration = Field(default_factory=Calibration, description="Calibration text for the quantizer.")

    def check_shape(self, config: dict[str, Any]) -> None:
        """Raise ValueError if the model's shape cannot take these settings (e.g. a group size)."""

    def quantize(self, src: Path, out: Path, texts: list[str], device: str) -> dict[str, Any]:
        """Quantize the model at ``src`` into ``out`` on ``device`` (runs in a child process); returns facts
        for the record."""
        raise NotImplementedError

    def child_env(self) -> dict[str, str]:
        """Environment for the quantizing child process."""
        return {}

    def cache_key(self, model: "ResolvedModel") -> str:
        import inspect

        sources = {inspect.getsourcefile(c) for c in type(self).__mro__ if c.__module__.startswith("harness.")}
        code = hashlib.sha256(b"".join(Path(f).read_bytes() for f in sorted(filter(None, sources)))).hexdigest()
        desc = {"model": model.identity(), "method": self.model_dump(mode="json", exclude=set(self.load_only)),
                "toolchain": _versions(self.toolchain), "code": code}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]

    def prepare(self, model: "ResolvedModel", cell: "CellView") -> Prepared:
        from harness.base.cachedir import build_once
        from harness.base.child import run_child

        self.check_shape(json.loads((model.path / "config.json").read_text()))
        key = self.cache_key(model)
        final = cache_dir() / "quantized" / f"{self.kind}-{key}"

        def make(tmp: Path) -> None:
            payload = {"precision": self.model_dump(mode="json"), "src": str(model.path), "out": str(tmp),
                       "texts": calibration_texts(self.calibration), "device": cell.device}
            answer = run_child("harness.precisions.prequant:quantize_in_child", payload, env=self.child_env(), cwd=tmp)
            for name in TOKENIZER_FILES:
                if (model.path / name).exists() and not (tmp / name).exists():
                    shutil.copy2(model.path / name, tmp / name)
            meta = {"key": key, "make_s": answer["child_wall_s"], "make_peak_rss_bytes": answer["child_peak_rss_bytes"],
                    "toolchain": _versions(self.toolchain), "calibration": self.calibration.model_dump(mode="json"),
                    "source": str(model.path), "quantizer": answer.get("info", {})}
            (tmp / META).write_text(json.dumps(meta, indent=1))

        made, _ = build_once(final, make)
        meta = json.loads((final / META).read_text())
        return Prepared(path=final, made=made, key=key, make_s=meta["make_s"],
                        make_peak_rss_bytes=meta["make_peak_rss_bytes"],
                        info={"toolchain": meta["toolchain"], "calibration": meta["calibration"],
                              "quantizer": meta["quantizer"]})


def quantize_in_child(payload: dict[str, Any]) -> dict[str, Any]:
    """Child-process entry (see :mod:`harness.base.child`): rebuild the precision and quantize."""
    from harness.precisions import PRECISIONS

    precision = PRECISIONS.get(payload["precision"]["kind"]).model_validate(payload["precision"])
    info = precision.quantize(Path(payload["src"]), Path(payload["out"]), payload["texts"], payload["device"])
    return {"info": info}
