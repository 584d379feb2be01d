"""Model sources: where a suite's weights come from (embedded package, tiny built model, folder, Hub).

Each source is one module registering a config class in :data:`SOURCES`. A source resolves to a
local folder that both transformers and vLLM can load (config.json, tokenizer, safetensors).
Resolution may need torch and runs inside a cell's subprocess; the config classes do not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic_core import PydanticCustomError

from harness.base.registry import Registry, suggest
from harness.base.resolved import ResolvedModel  # noqa: F401 (what a source resolves to)
from harness.base.specbase import StrictModel

SOURCES: Registry = Registry("model source", "harness.models")


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

    def config_dir(self) -> Path:
        """A folder with the model's config.json, made as cheaply as the source allows (default: the
        resolved model; the Hub fetches the config alone)."""
        return self.resolve().path


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
