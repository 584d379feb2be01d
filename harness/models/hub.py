"""A model on the Hugging Face Hub, for GPU runners with network access (downloaded to the HF cache)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.models import SOURCES, ModelSource, ResolvedModel


@SOURCES.register("hub")
class Hub(ModelSource):
    """A Hub repository id, optionally at a revision."""

    kind: Literal["hub"] = "hub"
    id: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", description="Hub repository id, ORG/NAME.")
    revision: str | None = Field(default=None, description="Branch, tag or commit; default branch if unset.")

    @classmethod
    def from_ref(cls, rest: str) -> dict[str, Any]:
        repo, _, rev = rest.partition("@")
        return {"kind": "hub", "id": repo, **({"revision": rev} if rev else {})}

    def ref(self) -> str:
        return f"hub:{self.id}" + (f"@{self.revision}" if self.revision else "")

    def check(self) -> str | None:
        if importlib.util.find_spec("huggingface_hub") is None:
            return "Hub models need the package huggingface_hub (pip install huggingface_hub)"
        return None

    def config_dir(self) -> Path:
        """A folder holding only the repository's config.json (no weights are downloaded)."""
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.id, "config.json", revision=self.revision)).parent

    def resolve(self) -> ResolvedModel:
        import time

        from huggingface_hub import snapshot_download

        start = time.perf_counter()
        path = snapshot_download(self.id, revision=self.revision,
                                 allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
        return ResolvedModel(path=path, provenance={"source": "hub", "id": self.id, "revision": self.revision},
                             prepare_s=time.perf_counter() - start)
