"""Build-once cache folders, kept under a least-recently-used size limit.

A folder is made under a lock into a temporary name, then renamed: a folder that exists under its
final name is complete; a crash mid-build leaves only a temporary folder (``<name>.tmp``), which the
next build of it, or the next eviction, removes.

An *entry* is a folder ``<cache root>/<kind>/<name>`` (``models/``, ``reference/``, ``quantized/``).
Each use (:func:`build_once`, built or found) sets its modification time to now (its *last use*) and
takes a shared lock on ``<name>.use`` that this process keeps until it exits, so an entry in use is
never removed under a cell. After each build, :func:`evict` removes the least recently used entries
not in use until the entries together hold at most :func:`max_bytes` (``HARNESS_CACHE_MAX_BYTES``,
default :data:`DEFAULT_MAX_BYTES`); an eviction holds ``<name>.use`` exclusively while it deletes,
so a concurrent user waits and then finds the entry gone (and builds it again). ``harness cache``
lists the entries (:func:`entries`) and prunes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from harness.base.errors import HarnessError
from harness.base.paths import cache_dir

MAX_BYTES_ENV = "HARNESS_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 50 * 2**30  # a few quantized checkpoints and references of a 7 B model
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_held: dict[str, int] = {}  # use-lock fds of the entries this process used (kept open until exit)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _try_exclusive(lock_path: Path) -> Iterator[bool]:
    """Yields whether ``lock_path`` could be locked exclusively at once (held while the block runs)."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _use_lock(final: Path) -> Path:
    return final.with_name(final.name + ".use")


def _hold(final: Path) -> None:
    """Take (once per process) a shared lock on ``final``'s use-lock, kept until this process exits."""
    key = str(final)
    if key in _held:
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_use_lock(final), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while an eviction deletes this entry
    _held[key] = fd


def touch(final: Path) -> None:
    """Mark the entry ``final`` used now (its modification time)."""
    with contextlib.suppress(OSError):
        os.utime(final)


def build_once(final: Path, build: Callable[[Path], None]) -> tuple[bool, float]:
    """Ensure ``final`` exists, calling ``build(tmp_dir)`` if it does not, and mark it used.

    Returns ``(made, seconds)``: whether this call built it, and how long building took. After a
    build under the cache root, least recently used entries are evicted down to :func:`max_bytes`
    (never ``final``, never an entry some process uses). Raises :class:`HarnessError` when
    ``HARNESS_CACHE_MAX_BYTES`` is malformed, and whatever ``build`` raises.
    """
    limit = max_bytes()  # a malformed limit fails before anything is built
    _hold(final)
    if final.is_dir():
        touch(final)
        return False, 0.0
    with _locked(final.with_name(final.name + ".lock")):
        if final.is_dir():
            touch(final)
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
    touch(final)
    root = cache_dir()
    if final.resolve().parent.parent == root.resolve():
        evict(root, limit, keep=(final,))
    return True, seconds


def max_bytes() -> int:
    """The cache's size limit in bytes: ``HARNESS_CACHE_MAX_BYTES`` (bytes, or a number with a binary
    unit: ``500M``, ``20G``, ``1.5T``, ``KiB``/``MiB``/``GiB``/``TiB`` too), else :data:`DEFAULT_MAX_BYTES`."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    return parse_size(text, MAX_BYTES_ENV) if text else DEFAULT_MAX_BYTES


def parse_size(text: str, where: str) -> int:
    """``text`` as a byte count (see :func:`max_bytes`); :class:`HarnessError` naming ``where`` if it is not one."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text.strip().lower())
    if m is None:
        raise HarnessError(f"{where}: {text!r} is not a size; allowed: a byte count (e.g. 21474836480) or a "
                           "number with K, M, G or T (binary: 20G = 20 GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def human(n: int) -> str:
    """``n`` bytes as ``"1.5 GiB"`` (binary units)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@dataclass(frozen=True)
class Entry:
    """One cache folder: ``state`` is ``ready``, ``in use`` (a process holds it), ``building`` (a
    build in progress) or ``stale`` (what a crashed build left)."""

    path: Path
    size_bytes: int
    last_used: datetime
    state: str

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def _size(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def entries(root: Path | None = None) -> list[Entry]:
    """Every entry under ``root`` (default: the cache root), least recently used first."""
    root = root or cache_dir()
    found = []
    for kind in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()) if root.is_dir() else []:
        for path in sorted(p for p in kind.iterdir() if p.is_dir() and not p.is_symlink()):
            try:
                used = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            except OSError:
                continue
            if path.name.endswith(".tmp"):
                with _try_exclusive(path.with_name(path.name[:-4] + ".lock")) as free:
                    state = "stale" if free else "building"
            else:
                with _try_exclusive(_use_lock(path)) as free:
                    state = "ready" if free else "in use"
            found.append(Entry(path, _size(path), used, state))
    return sorted(found, key=lambda e: e.last_used)


def evict(root: Path, limit: int, keep: tuple[Path, ...] = ()) -> list[Entry]:
    """Remove what crashed builds left, then the least recently used entries that no process uses,
    until the entries under ``root`` hold at most ``limit`` bytes. ``keep`` are never removed. Returns
    the removed entries (oldest first); entries in use may keep the total above ``limit``."""
    removed = []
    listed = entries(root)
    total = sum(e.size_bytes for e in listed)
    kept = {p.resolve() for p in keep}
    for e in listed:
        if e.state == "stale":
            with _try_exclusive(e.path.with_name(e.path.name[:-4] + ".lock")) as free:
                if free:
                    shutil.rmtree(e.path, ignore_errors=True)
                    removed.append(e)
                    total -= e.size_bytes
    for e in listed:
        if total <= limit:
            break
        if e.state != "ready" or e.path.resolve() in kept:
            continue
        with _try_exclusive(_use_lock(e.path)) as free:  # users wait on it while the folder goes
            if free and e.path.is_dir():
                shutil.rmtree(e.path, ignore_errors=True)
                removed.append(e)
                total -= e.size_bytes
    return removed
