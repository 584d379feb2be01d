"""Append-only JSON Lines store of records under ``results/`` (one file per suite).

Each record is appended as one line and flushed to disk as its cell finishes; nothing is rewritten.
An append holds an exclusive ``flock`` on the file (two runs on one folder never interleave), first
ends a torn line left by an interrupted write (its fragment stays a line of its own, the new record
is not glued to it), writes the whole line in one ``write`` and fsyncs it; if that fails (a full
disk), the file is cut back to its size before the append and one :class:`HarnessError` says so.
Readers decode line by line from bytes and skip, with a warning naming file and line, a torn last
line (an interrupted write, even one cut inside a multi-byte character) or any other unreadable line.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

from pydantic import ValidationError

from harness.base.errors import HarnessError
from harness.results.machine import machine_of
from harness.results.records import SCHEMA_VERSION, Record

# Statuses a resumed run does not redo: ok and skipped are results, and so is running out of memory.
FINAL_STATUSES = ("ok", "skipped", "oom")
# flock refused by the filesystem (some network filesystems): the store still works, unlocked.
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


class Store:
    """Records of every suite, one ``<suite>.jsonl`` file each, under ``root``."""

    def __init__(self, root: str | Path = "results") -> None:
        self.root = Path(root)

    def path_for(self, suite: str) -> Path:
        return self.root / f"{suite}.jsonl"

    def append(self, record: Record) -> None:
        """Append ``record`` as one line, under an exclusive lock, and fsync it.

        Raises :class:`HarnessError` naming the file and the reason when the record would not read back
        (a field set past validation) or the file cannot be written (ENOSPC, EACCES, EIO...); the file is
        then as it was before the call (a partly written line is cut off again)."""
        path = self.path_for(record.suite)
        line = _line(record, path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise HarnessError(f"{path}: cannot open the store to append the record of cell {record.cell_id}: "
                               f"{_why(exc)}") from exc
        try:
            _lock(fd, fcntl.LOCK_EX, path)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a torn write before this one: its fragment stays its own (unreadable) line
            try:
                _write_all(fd, line)
                os.fsync(fd)
            except OSError as exc:
                raise HarnessError(f"{path}: could not append the record of cell {record.cell_id} "
                                   f"({record.status}): {_why(exc)}; {_restore(fd, size)}") from exc
        finally:
            os.close(fd)  # releases the lock

    def _read(self, path: Path) -> Iterator[Record]:
        """The records of one file in order; unreadable lines are skipped with a warning (``file:line``)."""
        for _, record, problem in read_lines(path):
            if record is not None:
                yield record
            else:
                warnings.warn(problem or f"{path}: unreadable line")

    def records(self, suite: str | None = None) -> list[Record]:
        """All records, of one suite or of every suite, in the order they were appended."""
        paths = [self.path_for(suite)] if suite else sorted(self.root.glob("*.jsonl"))
        return [r for p in paths if p.is_file() for r in self._read(p)]

    def finished(self, suite: str, code_key: str, machine: str | None = None) -> dict[str, Record]:
        """Latest final record per cell key for ``code_key`` on ``machine`` (any machine when None): what a
        resumed run on that machine need not redo (another runner's record is not this one's result)."""
        done: dict[str, Record] = {}
        for r in self.records(suite):
            if r.code_key == code_key and r.status in FINAL_STATUSES and (machine is None or machine_of(r) == machine):
                done[r.cell_key] = r
        return done


def _line(record: Record, path: Path) -> bytes:
    """The record's line (UTF-8, newline-terminated), checked to read back as a record."""
    text = record.model_dump_json()
    try:
        Record.model_validate(json.loads(text))
    except ValidationError as exc:  # model_copy(update=...) skips validation
        raise HarnessError(f"{path}: refusing to append a record of cell {record.cell_id} that would not read "
                           f"back: {_first_error(exc)}") from exc
    return (text + "\n").encode("utf-8")


def read_lines(path: Path) -> Iterator[tuple[int, Record | None, str | None]]:
    """Each non-blank line of one store file as ``(line number, record, None)``, or ``(line number, None,
    why)`` for a line that is not a record this code reads (``file:line: ...``): a torn last line, a line
    that is not JSON, not a record (a foreign line), or of a newer schema."""
    pieces = _read_bytes(path).split(b"\n")
    for n, raw in enumerate(pieces, 1):
        if not raw.strip():
            continue
        data, why = _parse(raw)
        if why is None:
            version = data.get("schema_version", 0)
            if isinstance(version, int) and version > SCHEMA_VERSION:
                yield n, None, f"{path}:{n}: record schema {version} is newer than {SCHEMA_VERSION}; skipped"
                continue
            try:
                yield n, Record.model_validate(_legacy_nulls(data)), None
                continue
            except ValidationError as exc:
                why = _first_error(exc)
        if n == len(pieces):  # no newline after it: the write was cut short
            yield n, None, f"{path}:{n}: ignoring a torn last line (an interrupted write): {why}"
        else:
            yield n, None, f"{path}:{n}: unreadable record skipped: {why}"


def _lock(fd: int, kind: int, path: Path) -> None:
    try:
        fcntl.flock(fd, kind)
    except OSError as exc:
        if exc.errno not in _NO_LOCKS:
            raise
        warnings.warn(f"{path}: this filesystem refuses file locks ({_why(exc)}); two runs appending at once "
                      "may interleave")


def _write_all(fd: int, data: bytes) -> None:
    """One ``write`` of the whole line; a short write (the disk filling up) goes on where it stopped."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[n:]


def _restore(fd: int, size: int) -> str:
    """Cut the file back to ``size`` bytes; says what became of the file."""
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        return f"its partly written line could not be cut off ({_why(exc)}): readers will skip it as torn"
    return f"the file is left as it was before ({size} bytes, every earlier record kept)"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, under a shared lock when the filesystem has locks (no half-appended last line)."""
    with open(path, "rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                raise
        return fh.read()


def _parse(raw: bytes) -> tuple[Any, str | None]:
    """A line's JSON object, or why it is not one."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 at byte {exc.start} (cut inside a character?)"
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at column {exc.colno}"
    if not isinstance(data, dict):
        return None, f"not a JSON object but {type(data).__name__}"
    return data, None


def _legacy_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """Records written before NaN and inf were kept have ``null`` for such a metric value or sample: NaN."""
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        for m in metrics.values():
            if isinstance(m, dict):
                if "value" in m and m["value"] is None:
                    m["value"] = math.nan
                if isinstance(m.get("samples"), list):
                    m["samples"] = [math.nan if x is None else x for x in m["samples"]]
    return data


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    e = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}{more}"


def _why(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc} ({name})" if name else str(exc)


def read_records(path: str | Path) -> list[Record]:
    """Every record under ``path``: a store folder (each ``*.jsonl``) or one ``.jsonl`` file."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(p.glob("*.jsonl"))
        if not files:
            raise HarnessError(f"{path}: no *.jsonl record files in this folder")
    else:
        raise HarnessError(f"{path}: no such result file or folder")
    store = Store(p.parent if p.is_file() else p)
    return [r for f in files for r in store._read(f)]


def latest_per_cell(records: list[Record], statuses: tuple[str, ...] | None = None) -> dict[tuple[str, str, str], Record]:
    """The latest record (by start time) of each (suite, cell id, machine), among ``statuses`` if given:
    records of two runners never stand in for each other (:func:`harness.results.machine.machine_of`)."""
    out: dict[tuple[str, str, str], Record] = {}
    for r in records:
        if statuses is None or r.status in statuses:
            key = (r.suite, r.cell_id, machine_of(r))
            if key not in out or r.started_at >= out[key].started_at:
                out[key] = r
    return out
