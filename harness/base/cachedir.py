"""Build-once cache folders: a folder is made under a lock into a temporary name, then renamed.

A folder that exists under its final name is complete; a crash mid-build leaves only a temporary
folder, which the next build removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(final: Path, build: Callable[[Path], None]) -> tuple[bool, float]:
    """Ensure ``final`` exists, calling ``build(tmp_dir)`` if it does not.

    Returns ``(made, seconds)``: whether this call built it, and how long building took.
    """
    if final.is_dir():
        return False, 0.0
    with _locked(final.with_name(final.name + ".lock")):
        if final.is_dir():
            return False, 0.0
        tmp = final.with_name(final.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        seconds = time.perf_counter() - start
        tmp.rename(final)
        return True, seconds
