"""Append-only JSON Lines store of records under ``results/`` (one file per suite).

Each record is appended as one line and flushed to disk as its cell finishes; nothing is rewritten.
Readers skip a torn last line (an interrupted write) and report any other unreadable line.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Iterator

from pydantic import ValidationError

from harness.base.errors import HarnessError
from harness.results.records import SCHEMA_VERSION, Record

# Statuses a resumed run does not redo: ok and skipped are results, and so is running out of memory.
FINAL_STATUSES = ("ok", "skipped", "oom")


class Store:
    """Records of every suite, one ``<suite>.jsonl`` file each, under ``root``."""

    def __init__(self, root: str | Path = "results") -> None:
        self.root = Path(root)

    def path_for(self, suite: str) -> Path:
        return self.root / f"{suite}.jsonl"

    def append(self, record: Record) -> None:
        """Append ``record`` as one line and fsync it."""
        path = self.path_for(record.suite)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = record.model_dump_json() + "\n"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def _read(self, path: Path) -> Iterator[Record]:
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if data.get("schema_version", 0) > SCHEMA_VERSION:
                    warnings.warn(f"{path}:{n}: record schema {data['schema_version']} is newer than {SCHEMA_VERSION}; skipped")
                    continue
                yield Record.model_validate(data)
            except (json.JSONDecodeError, ValidationError) as exc:
                if n == len(lines):
                    warnings.warn(f"{path}:{n}: ignoring a torn last line (an interrupted write)")
                else:
                    warnings.warn(f"{path}:{n}: unreadable record skipped: {str(exc).splitlines()[0]}")

    def records(self, suite: str | None = None) -> list[Record]:
        """All records, of one suite or of every suite, in the order they were appended."""
        paths = [self.path_for(suite)] if suite else sorted(self.root.glob("*.jsonl"))
        return [r for p in paths if p.is_file() for r in self._read(p)]

    def finished(self, suite: str, code_key: str) -> dict[str, Record]:
        """Latest final record per cell key for ``code_key`` (what a resumed run need not redo)."""
        done: dict[str, Record] = {}
        for r in self.records(suite):
            if r.code_key == code_key and r.status in FINAL_STATUSES:
                done[r.cell_key] = r
        return done


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


def latest_per_cell(records: list[Record], statuses: tuple[str, ...] | None = None) -> dict[tuple[str, str], Record]:
    """The latest record (by start time) of each (suite, cell id), among ``statuses`` if given."""
    out: dict[tuple[str, str], Record] = {}
    for r in records:
        if statuses is None or r.status in statuses:
            key = (r.suite, r.cell_id)
            if key not in out or r.started_at >= out[key].started_at:
                out[key] = r
    return out
