"""Model sources: where a suite's weights come from (embedded package, tiny built model, folder, Hub).

Each source is one module registering a config class in :data:`SOURCES`. A source resolves to a
local folder that both transformers and vLLM can load (config.json, tokenizer, safetensors).
Resolution may need torch and runs inside a cell's subprocess; the config classes do not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_core import PydanticCustomError

from harness.registry import Registry, suggest
from harness.specbase import StrictModel

SOURCES: Registry = Registry("model source", "harness.models")


class ResolvedModel(BaseModel):
    """A model ready to load: its folder and where it came from."""

    path: Path
    provenance: dict[str, Any] = Field(default_factory=dict)
    made: bool = Field(default=False, description="True if this call built/converted it (not a cache hit)")
    prepare_s: float = Field(default=0.0, description="seconds spent building or converting it")

    def identity(self) -> dict[str, Any]:
        """What identifies these weights in cache keys: folder, provenance, weight file sizes and mtimes."""
        files = sorted(self.path.glob("*.safetensors")) + sorted(self.path.glob("*.bin"))
        return {"path": str(self.path.resolve()), "provenance": self.provenance,
                "weights": [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files]}


class ModelSource(StrictModel):
    """Base of a model source config; ``kind`` picks the source."""

    kind: str

    def ref(self) -> str:
        """The shorthand reference string for this source (round-trips through :func:`parse_ref`)."""
        raise NotImplementedError

    def check(self) -> str | None:
        """Why this source cannot be used on this host (a skip reason), or None. Imports no torch."""
        return None

    def resolve(self) -> ResolvedModel:
        """Make the model available as a local folder (may build, convert or download it)."""
        raise NotImplementedError


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_ref(text: str) -> dict[str, Any]:
    """Parse a model reference string into a source config mapping.

    Forms: ``embedded[:ID]``, ``tiny[:ARCH]``, ``local:PATH``, ``hub:ORG/NAME[@REVISION]``; a bare
    existing folder means ``local``, a bare ``ORG/NAME`` means ``hub``. Unknown prefixes raise.
    """
    text = text.strip()
    kind, sep, rest = text.partition(":")
    kinds = SOURCES.names()
    if sep and kind in kinds:
        return SOURCES.get(kind).from_ref(rest)  # type: ignore[attr-defined]
    if not sep and kind in kinds:
        return {"kind": kind}
    if Path(text).expanduser().is_dir():
        return {"kind": "local", "path": text}
    if not sep and _HUB_ID.match(text):
        return SOURCES.get("hub").from_ref(text)  # type: ignore[attr-defined]
    head = kind if sep else text
    msg = (f"unknown model reference {text!r}{suggest(head, kinds)}: use embedded[:ID], tiny[:ARCH], local:PATH, "
           "hub:ORG/NAME[@REV], an existing folder, or ORG/NAME")
    raise PydanticCustomError("unknown_model_ref", msg.replace("{", "{{").replace("}", "}}"))
