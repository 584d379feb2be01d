"""A model on the Hugging Face Hub, for GPU runners with network access (downloaded to the HF cache).

A branch or tag (``revision``, the default branch when unset) moves when the upstream weights do, so
what identifies a Hub model is the **commit** it names. :meth:`Hub.pinned` resolves it, offline-safe
and cheap: a revision that is already a commit is itself; otherwise, unless ``HF_HUB_OFFLINE`` is set,
the Hub is asked (one metadata request, :data:`RESOLVE_TIMEOUT_S` at most); offline, or when the Hub
does not answer, the local cache's ``refs/<revision>`` (written by every download) gives the commit
last fetched. When neither knows it, the source stays unpinned (``commit: None``).

Decision: the commit is resolved when a cell's key is made (:meth:`harness.spec.cell.Cell.key` pins
the model first), not in validation (which does no I/O), so a changed upstream changes the key and
a resumed run measures the new weights instead of skipping the cell; a pinned source (``commit``
set) downloads exactly that commit, and :meth:`Hub.resolve` records in its provenance the commit of
the snapshot it loaded (the folder ``snapshots/<commit>`` that ``snapshot_download`` returns).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness.models import SOURCES, ModelSource, ResolvedModel

COMMIT = re.compile(r"^[0-9a-f]{40}$")
RESOLVE_TIMEOUT_S = 10.0


def resolve_commit(repo: str, revision: str | None) -> str | None:
    """The commit ``revision`` (None: the default branch) of Hub model ``repo`` names now: the Hub's
    answer unless offline, else the local cache's; None when neither knows it. Remembered per process
    (for the same repository, revision, cache folder and offline setting)."""
    from huggingface_hub import constants

    if revision is not None and COMMIT.match(revision):
        return revision
    return _resolve(repo, revision, str(constants.HF_HUB_CACHE), bool(constants.HF_HUB_OFFLINE))


@functools.lru_cache(maxsize=64)
def _resolve(repo: str, revision: str | None, cache: str, offline: bool) -> str | None:
    from huggingface_hub import HfApi, try_to_load_from_cache

    if not offline:
        try:
            sha = HfApi().model_info(repo, revision=revision, timeout=RESOLVE_TIMEOUT_S).sha
            if sha and COMMIT.match(sha):
                return sha
        except Exception:  # noqa: BLE001 (no network, no such repo, gated...: the cache may still know it)
            pass
    found = try_to_load_from_cache(repo, "config.json", cache_dir=cache, revision=revision or "main")
    if isinstance(found, str) and COMMIT.match(Path(found).parent.name):
        return Path(found).parent.name
    return None


@SOURCES.register("hub")
class Hub(ModelSource):
    """A Hub repository id, optionally at a revision, and the commit it was pinned to."""

    kind: Literal["hub"] = "hub"
    id: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", description="Hub repository id, ORG/NAME.")
    revision: str | None = Field(default=None, description="Branch, tag or commit; default branch if unset.")
    commit: str | None = Field(default=None, pattern=COMMIT.pattern, description=(
        "The commit `revision` named when the cell was keyed (set by the harness; downloads use it)."))

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

    def pinned(self) -> "Hub":
        """This source with ``commit`` set to what ``revision`` names now (:func:`resolve_commit`); itself
        when already pinned, or when the commit cannot be known (no huggingface_hub, offline and not
        cached)."""
        if self.commit is not None or self.check() is not None:
            return self
        commit = resolve_commit(self.id, self.revision)
        return self.model_copy(update={"commit": commit}) if commit else self

    def _at(self) -> str | None:
        return self.commit or self.revision

    def config_dir(self) -> Path:
        """A folder holding only the repository's config.json (no weights are downloaded)."""
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.id, "config.json", revision=self._at())).parent

    def resolve(self) -> ResolvedModel:
        """Download (or find in the cache) the snapshot at ``commit`` (else ``revision``); its provenance
        names the revision asked for and the commit of the snapshot loaded."""
        import time

        from huggingface_hub import snapshot_download

        start = time.perf_counter()
        path = snapshot_download(self.id, revision=self._at(),
                                 allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
        commit = Path(path).name if COMMIT.match(Path(path).name) else self.commit
        return ResolvedModel(path=path, provenance={"source": "hub", "id": self.id, "revision": self.revision,
                                                    "commit": commit},
                             prepare_s=time.perf_counter() - start)
