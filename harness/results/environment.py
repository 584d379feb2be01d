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


def capture(host: Host | None = None) -> Environment:
    """Hardware, driver, framework versions and git state of this run."""
    host = host or Host.detect()
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if sha else None
    return Environment(**host.model_dump(), git_sha=sha,
                       git_dirty=bool(status) if status is not None else None, harness_version=harness.__version__)


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """Hash of the harness' source files and the tracked framework versions: a record made under the
    same key measured the same code."""
    host = Host.detect()
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode())
        h.update(path.read_bytes())
    h.update(json.dumps(host.packages, sort_keys=True).encode())
    return h.hexdigest()[:16]
