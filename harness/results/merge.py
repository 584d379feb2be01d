"""``harness merge OUT IN...``: the union of record stores (the shards of a fleet, the folders of a job array).

Each input is a store folder (its ``*.jsonl`` files, and those of its sub-folders: a folder of
downloaded artifacts ``results-<machine>-<shard>/`` is one input), or one ``.jsonl`` file. Records are
deduplicated by ``record_id`` (a record read twice, from two copies of one shard, is written once; one
already in ``OUT`` is not written again) and appended to ``OUT/<suite>.jsonl`` through the store (locked,
fsynced), oldest first. A line that is not a record (torn by an interrupted write, not JSON, a foreign
object, a newer schema) is reported with ``file:line`` and why, and skipped; two different records under
one id are reported and the first kept. Nothing is dropped without a line in the summary.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from harness.base.errors import HarnessError
from harness.results.machine import machine_of
from harness.results.records import Record
from harness.results.store import Store, read_lines


class Source(BaseModel):
    """What one input file gave."""

    path: str
    records: int = 0
    new: int = Field(default=0, description="records written to OUT")
    duplicates: int = Field(default=0, description="records whose id OUT or an earlier input already held")
    machines: dict[str, int] = Field(default_factory=dict, description="records read, per logical machine")


class Merged(BaseModel):
    """The summary of a merge: per input file, the lines skipped and the id conflicts, the suites written."""

    sources: list[Source] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list, description="file:line: why, of each line that is not a record")
    conflicts: list[str] = Field(default_factory=list, description="ids held by two different records (the first kept)")
    written: dict[str, int] = Field(default_factory=dict, description="suite -> records appended to OUT")


def input_files(path: Path) -> list[Path]:
    """The ``.jsonl`` files of an input: the file itself, or every one under the folder (sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
        if not files:
            raise HarnessError(f"{path}: no *.jsonl record files in this folder or below it")
        return files
    raise HarnessError(f"{path}: no such result file or folder")


def merge(out: Path, inputs: list[Path]) -> Merged:
    """Append to the store ``out`` every record of ``inputs`` it does not hold yet (see the module docstring)."""
    files = [f for p in inputs for f in input_files(p)]
    out_files = {f.resolve() for f in out.glob("*.jsonl")} if out.is_dir() else set()
    summary = Merged()
    held: dict[str, Record] = {}
    if out.is_dir():
        for f in sorted(out.glob("*.jsonl")):
            for _, record, problem in read_lines(f):
                if record is not None:
                    held.setdefault(record.record_id, record)
                elif problem:
                    summary.skipped.append(problem)
    fresh: list[Record] = []
    for f in files:
        if f.resolve() in out_files:
            continue  # OUT given as an input too: its records are already held
        source = Source(path=str(f))
        for _, record, problem in read_lines(f):
            if record is None:
                summary.skipped.append(problem or f"{f}: unreadable line")
                continue
            source.records += 1
            machine = machine_of(record)
            source.machines[machine] = source.machines.get(machine, 0) + 1
            first = held.get(record.record_id)
            if first is None:
                held[record.record_id] = record
                fresh.append(record)
                source.new += 1
            else:
                source.duplicates += 1
                if first.model_dump() != record.model_dump():
                    summary.conflicts.append(f"{f}: record id {record.record_id} ({record.suite}/{record.cell_id}) "
                                             f"differs from the one already held ({first.suite}/{first.cell_id}); "
                                             "the first is kept")
        summary.sources.append(source)
    store = Store(out)
    for record in sorted(fresh, key=lambda r: (r.suite, r.started_at, r.record_id)):
        store.append(record)
        summary.written[record.suite] = summary.written.get(record.suite, 0) + 1
    return summary
