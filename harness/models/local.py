"""A model in a local folder (a transformers checkpoint: config.json, tokenizer, weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.models import SOURCES, ModelSource, ResolvedModel


@SOURCES.register("local")
class Local(ModelSource):
    """A checkpoint folder on this machine."""

    kind: Literal["local"] = "local"
    path: str = Field(description="Folder holding config.json, the tokenizer and the weights.")

    @classmethod
    def from_ref(cls, rest: str) -> dict[str, Any]:
        return {"kind": "local", "path": rest}

    def ref(self) -> str:
        return f"local:{self.path}"

    def check(self) -> str | None:
        folder = Path(self.path).expanduser()
        if not (folder / "config.json").is_file():
            return f"model folder {str(folder)!r} has no config.json"
        return None

    def resolve(self) -> ResolvedModel:
        reason = self.check()
        if reason:
            raise FileNotFoundError(reason)
        folder = Path(self.path).expanduser().resolve()
        return ResolvedModel(path=folder, provenance={"source": "local folder", "path": str(folder)})
