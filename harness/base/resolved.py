"""A model ready to load: its local folder (config.json, tokenizer, safetensors) and where it came from.

What a model source (:mod:`harness.models`) resolves to, and what precisions, engines and scenarios
load; at the bottom floor so that no axis imports another for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


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
