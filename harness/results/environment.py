"""The environment a record was produced in, and the key of "the same code" for resuming."""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
from pathlib import Path

import harness
from harness.base.host import Host
from harness.results.records import Environment

PACKAGE_DIR = Path(harness.__file__).parent


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=PACKAGE_DIR.parent, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def capture(host: Host | None = None, machine: str | None = None) -> Environment:
    """Hardware, driver, framework versions and git state of this run, and its logical machine
    (``machine``, else ``$HARNESS_MACHINE``, else the host's default: :func:`harness.results.machine.run_machine`)."""
    from harness.results.machine import run_machine

    host = host or Host.detect()
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if sha else None
    return Environment(**host.model_dump(), git_sha=sha, git_dirty=bool(status) if status is not None else None,
                       harness_version=harness.__version__, machine=run_machine(host, machine))


def package_files(root: Path) -> list[Path]:
    """Every file of the package at ``root`` that can change what it measures: its Python sources and its
    packaged data (``data/``: the corpora, the Text2SQL items, few-shot examples and schema), in a stable
    order; bytecode (``__pycache__``, ``*.pyc``) and hidden files left out."""
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                  and not any(part.startswith(".") for part in p.relative_to(root).parts)
                  and p.suffix not in (".pyc", ".pyo"))


def source_key(root: Path) -> str:
    """Hash of the relative path and bytes of every :func:`package_files` file under ``root``."""
    h = hashlib.sha256()
    for path in package_files(root):
        h.update(str(path.relative_to(root).as_posix()).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """Hash of the harness' files (its sources and packaged data, :func:`source_key`) and the tracked
    framework versions: a record made under the same key measured the same code on the same data.
    The reference cache key (:mod:`harness.scenarios.inference.reference`) includes it, so editing
    the corpus or the Text2SQL items remakes the reference outputs too."""
    host = Host.detect()
    h = hashlib.sha256(source_key(PACKAGE_DIR).encode())
    h.update(json.dumps(host.packages, sort_keys=True).encode())
    return h.hexdigest()[:16]
