"""The public view of records: what may leave the runner for a public site (the nightly's Pages).

``python -m harness.track.publish SRC... --out DIR`` reads the records of each store folder or
``.jsonl`` file ``SRC`` and writes their redacted view (:func:`redact`) as a new store under ``DIR``,
which ``harness asv`` and ``harness report`` then publish. Exit 0 when written, 2 on bad input (an
unreadable source, or ``DIR`` already holding records).

The view is allow-listed, field by field: a record keeps only :data:`PUBLIC_FIELDS` (a field added
to records later stays private until listed here) and its environment only
:data:`PUBLIC_ENVIRONMENT`. Dropped: the log tail, and the hostname (replaced by ``redacted``). A
failure's ``reason`` keeps its message, not the log tail some failures append (from a line starting
with ``--- ``), and at most :data:`REASON_CHARS` characters. Every remaining string, in the free-form
``cell`` and ``info`` too, is scrubbed (:func:`scrub`): a home folder (``/home/<user>``,
``/Users/<user>``, ``/root``) becomes ``~``, ``pytest-of-<user>`` becomes ``pytest-of-<user>``
literally, and the record's hostname (and its first label) becomes ``<host>``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterable

from harness.base.errors import HarnessError
from harness.results.records import Record

PUBLIC_FIELDS = ("schema_version", "record_id", "suite", "cell_id", "cell_key", "code_key", "cell", "status",
                 "reason", "metrics", "info", "validity", "environment", "seed", "started_at", "duration_s", "command")
PUBLIC_ENVIRONMENT = ("platform", "python", "cpu_model", "cpu_count", "memory_bytes", "gpus", "packages", "git_sha",
                      "git_dirty", "harness_version", "machine")
REDACTED = "redacted"
REASON_CHARS = 1000
_HOMES = re.compile(r"(?<![\w.-])(?:/home/[^/\s'\"`:;,)\]}]+|/Users/[^/\s'\"`:;,)\]}]+|/root)(?=$|[/\s'\"`:;,)\]}])")
_PYTEST_USER = re.compile(r"pytest-of-[^/\s'\"`:;,)\]}]+")
_LOG_TAIL = re.compile(r"\n--- ")


def _host_pattern(hostnames: Iterable[str]) -> re.Pattern[str] | None:
    names = sorted({n for h in hostnames if h for n in (h, h.split(".")[0]) if len(n) >= 2}, key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"(?<![A-Za-z0-9-])(?:" + "|".join(map(re.escape, names)) + r")(?![A-Za-z0-9-])")


def scrub(text: str, hostnames: Iterable[str] = ()) -> str:
    """``text`` with home folders as ``~``, pytest's per-user folder without the user, and each of
    ``hostnames`` (and its first label, when two characters or more) as ``<host>`` where it stands as
    a whole name."""
    text = _PYTEST_USER.sub("pytest-of-<user>", _HOMES.sub("~", text))
    host = _host_pattern(hostnames)
    return host.sub("<host>", text) if host else text


def _scrub_all(value: Any, hostnames: list[str]) -> Any:
    if isinstance(value, str):
        return scrub(value, hostnames)
    if isinstance(value, list):
        return [_scrub_all(v, hostnames) for v in value]
    if isinstance(value, dict):
        return {scrub(str(k), hostnames): _scrub_all(v, hostnames) for k, v in value.items()}
    return value


def public_reason(reason: str | None, hostnames: list[str]) -> str | None:
    """A failure's message without the log tail appended to it, cut to :data:`REASON_CHARS`, scrubbed."""
    if reason is None:
        return None
    cut = _LOG_TAIL.search(reason)
    text = reason[: cut.start()] if cut else reason
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS] + " [...]"
    return scrub(text, hostnames)


def redact(record: Record) -> Record:
    """The public view of ``record`` (see the module docstring). Raises HarnessError if the record type
    gained a required field that :data:`PUBLIC_FIELDS` does not list (decide whether it is public)."""
    data = json.loads(record.model_dump_json())  # NaN and inf as the record's own JSON strings
    hostnames = [record.environment.hostname]
    out = {k: _scrub_all(data[k], hostnames) for k in PUBLIC_FIELDS if k in data and k not in ("environment", "reason")}
    out["reason"] = public_reason(record.reason, hostnames)
    env = data["environment"]
    out["environment"] = {k: _scrub_all(env[k], hostnames) for k in PUBLIC_ENVIRONMENT if k in env} | {"hostname": REDACTED}
    try:
        return Record.model_validate(out)
    except ValueError as exc:
        raise HarnessError(f"record {record.record_id}: its public view does not validate ({exc}); a new record "
                           "field must be added to harness/track/publish.py PUBLIC_FIELDS or given a default") from exc


def publish(sources: list[Path], out: Path) -> int:
    """Write the public view of every record of ``sources`` (store folders or ``.jsonl`` files) as a store
    under ``out``; returns the number of records. Raises HarnessError if a source cannot be read or
    ``out`` already holds records (a second run would duplicate them)."""
    from harness.results.store import Store, read_records

    if out.is_dir() and any(out.glob("*.jsonl")):
        raise HarnessError(f"{out}: already holds records; give an empty or new folder")
    records = [r for s in sources for r in read_records(s)]
    store = Store(out)
    for r in records:
        store.append(redact(r))
    return len(records)


def main(argv: list[str]) -> int:
    """``SRC... --out DIR``: see the module docstring."""
    if "--out" not in argv or argv.index("--out") + 2 != len(argv) or argv.index("--out") == 0:
        print("usage: python -m harness.track.publish SRC [SRC...] --out DIR", file=sys.stderr)
        return 2
    i = argv.index("--out")
    try:
        n = publish([Path(a) for a in argv[:i]], Path(argv[i + 1]))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{n} records -> public view under {argv[i + 1]} (no log tails, hostnames or home folders)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
