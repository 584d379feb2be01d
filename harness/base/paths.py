"""Where the harness keeps things on disk: the cache (converted and built models) and results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator

CACHE_ENV = "HARNESS_CACHE_DIR"
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def cache_dir() -> Path:
    """The cache root: ``$HARNESS_CACHE_DIR``, else ``~/.cache/llm-harness``. Created on demand."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llm-harness").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def corpus_path(name: str) -> Path:
    """Path of a shipped corpus by name (``plain_english`` -> data/corpus/plain_english.txt)."""
    from harness.base.errors import UnknownNameError
    from harness.base.registry import suggest

    folder = DATA_DIR / "corpus"
    path = folder / f"{name}.txt"
    if not path.is_file():
        names = sorted(p.stem for p in folder.glob("*.txt"))
        raise UnknownNameError(f"unknown corpus {name!r}{suggest(name, names)}; shipped corpora: {', '.join(names)}")
    return path


def corpus_ids(tokenizer: Any, name: str) -> list[int]:
    """Token ids of a shipped corpus, without special tokens (the form every measurement uses)."""
    return tokenizer(corpus_path(name).read_text(), add_special_tokens=False)["input_ids"]


def corpus_names() -> list[str]:
    return sorted(p.stem for p in (DATA_DIR / "corpus").glob("*.txt"))


def _known_corpus(name: str) -> str:
    from harness.base.errors import UnknownNameError

    try:
        corpus_path(name)
    except UnknownNameError as exc:
        raise ValueError(str(exc)) from None
    return name


# A suite field naming a shipped corpus: unknown names fail validation, not the run.
CorpusName = Annotated[str, AfterValidator(_known_corpus)]
