"""The store keeps every finished record through torn writes, odd values, a full disk and two writers.

Real files, a real tmpfs and real processes: a write cut at every byte offset of a record (inside
multi-byte characters too), NaN and +/-inf values, a results folder that runs out of space, and two
processes appending to one file at once.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.base.errors import HarnessError
from harness.results.records import CellResult, Environment, Metric, Record, Validity
from harness.results.store import Store

REPO = Path(__file__).resolve().parents[1]
TQDM_TAIL = "loading weights: 100%|██████████▏| 3/3 [00:01<00:00] é ✓ 😀\n"


def _env() -> Environment:
    return Environment(hostname="h", platform="linux", python="3.11", cpu_model="cpu", cpu_count=2,
                       memory_bytes=1 << 30, git_sha="0123abcd" * 5, git_dirty=False, harness_version="0")


def _record(record_id: str, tail: str = TQDM_TAIL, **update) -> Record:
    fields = dict(record_id=record_id, suite="s", cell_id=f"s-{record_id}", cell_key="k", code_key="c", cell={},
                  status="error", reason="boom", log_tail=tail, metrics={"tok_s": Metric(value=1.5, unit="tok/s")},
                  environment=_env(), seed=0, started_at="2026-01-01T00:00:00Z", duration_s=1.0, command="harness run x")
    return Record(**(fields | update))


def _line(record: Record) -> bytes:
    return (record.model_dump_json() + "\n").encode()


def _read(store: Store) -> tuple[list[str], list[str]]:
    """Record ids read back and the warnings the read gave (it must not raise)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = [r.record_id for r in store.records("s")]
    return ids, [str(w.message) for w in caught]


def test_a_write_torn_at_any_byte_loses_no_other_record(tmp_path):
    """Two good records, then a record cut after each of its bytes (inside the tqdm bar's characters
    too): both good records read back, the fragment is warned about as a torn last line; a record
    appended after it is not glued to it, and the fragment is then an unreadable line 3."""
    a, b, c = _line(_record("a")), _line(_record("b")), _record("c")
    torn = _line(_record("torn"))
    cuts_in_a_character = 0
    for k in range(1, len(torn)):
        fragment = torn[:k]
        try:
            fragment.decode()
        except UnicodeDecodeError:
            cuts_in_a_character += 1
        store = Store(tmp_path / str(k))
        store.root.mkdir()
        path = store.path_for("s")
        path.write_bytes(a + b + fragment)
        complete = k == len(torn) - 1  # every byte but the newline: the record itself is whole
        ids, warned = _read(store)
        assert ids == ["a", "b"] + (["torn"] if complete else []), k
        assert complete or (len(warned) == 1 and f"{path}:3: ignoring a torn last line" in warned[0]), (k, warned)

        store.append(c)
        ids, warned = _read(store)
        assert ids == ["a", "b"] + (["torn"] if complete else []) + ["c"], k
        assert complete or (len(warned) == 1 and f"{path}:3: unreadable record skipped" in warned[0]), (k, warned)
        assert path.read_bytes() == a + b + fragment + b"\n" + _line(c)
    assert cuts_in_a_character >= 10  # the multi-byte characters were cut through, not only ASCII


def test_nan_and_inf_values_round_trip_as_standard_json(tmp_path):
    """NaN, inf and -inf in a metric's value, samples and interval, in info and in validity figures are
    written as JSON strings (no NaN literals) and read back as the same floats."""
    nan, inf = math.nan, math.inf
    record = _record("odd", metrics={
        "output_length_ratio_ref": Metric(value=nan, unit="ratio", samples=[nan, 1.0, inf, -inf], ci_low=-inf,
                                          ci_high=inf),
        "loss_final": Metric(value=inf, unit="nats"), "delta": Metric(value=-inf, unit="nats")},
        info={"ppl": nan, "nested": {"xs": [inf, -inf, 2.0]}, "text": "NaNa"},
        validity=Validity(valid=False, reasons=["x"], figures={"foreign_cpu_share": nan}))
    store = Store(tmp_path)
    store.append(record)
    line = store.path_for("s").read_text()

    def no_literal(name: str) -> None:
        raise AssertionError(f"non-standard JSON literal {name} in the store")

    json.loads(line, parse_constant=no_literal)
    ids, warned = _read(store)
    assert ids == ["odd"] and warned == []
    [back] = store.records("s")
    m = back.metrics["output_length_ratio_ref"]
    assert math.isnan(m.value) and math.isnan(m.samples[0]) and m.samples[1:] == [1.0, inf, -inf]
    assert (m.ci_low, m.ci_high) == (-inf, inf)
    assert back.metric("loss_final") == inf and back.metric("delta") == -inf and back.metric("tok_s") is None
    assert math.isnan(back.info["ppl"]) and back.info["nested"] == {"xs": [inf, -inf, 2.0]} and back.info["text"] == "NaNa"
    assert math.isnan(back.validity.figures["foreign_cpu_share"])
    # a worker's result crosses the process boundary as JSON too
    result = CellResult(metrics=record.metrics, info=record.info)
    again = CellResult.model_validate(json.loads(result.model_dump_json()))
    assert math.isnan(again.metrics["output_length_ratio_ref"].value) and math.isnan(again.info["ppl"])


def test_records_written_with_null_for_nan_still_read(tmp_path):
    """Before NaN was kept, pydantic wrote it as null: such a metric reads as NaN, not as a lost record."""
    data = json.loads(_record("old").model_dump_json())
    data["metrics"]["tok_s"] |= {"value": None, "samples": [1.0, None]}
    store = Store(tmp_path)
    store.path_for("s").write_text(json.dumps(data) + "\n")
    [back] = store.records("s")
    assert math.isnan(back.metric("tok_s")) and back.metrics["tok_s"].samples[0] == 1.0
    assert math.isnan(back.metrics["tok_s"].samples[1])


@pytest.mark.parametrize("field,value,allowed", [
    ("record_id", "../../etc/passwd", "not a safe token"), ("record_id", "..", "not a safe token"),
    ("record_id", "serve.vllm/bf16", "not a safe token"),
    ("record_id", "", "not a safe token"), ("git_sha", "--output=/tmp/x", "not a commit"),
    ("git_sha", "HEAD", "not a commit"), ("git_sha", "unknown", "not a commit")])
def test_ids_that_become_paths_or_git_arguments_are_validated(tmp_path, field, value, allowed):
    """record_id names a file and git_sha is passed to git: a bad one is refused when the record is made,
    when it is appended (model_copy skips validation) and when it is read."""
    with pytest.raises(ValidationError, match=allowed):
        if field == "git_sha":
            _env().model_validate(_env().model_dump() | {field: value})
        else:
            _record(value)
    good = _record("good")
    bad = good.model_copy(update={"record_id": value}) if field == "record_id" else good.model_copy(
        update={"environment": good.environment.model_copy(update={"git_sha": value})})
    store = Store(tmp_path)
    store.append(good)
    before = store.path_for("s").read_bytes()
    with pytest.raises(HarnessError, match=f"refusing to append .*{field}.*{allowed}"):
        store.append(bad)
    assert store.path_for("s").read_bytes() == before
    store.path_for("s").write_bytes(before + bad.model_dump_json().encode() + b"\n" + before)
    ids, warned = _read(store)
    assert ids == ["good", "good"] and len(warned) == 1 and ":2: unreadable record skipped" in warned[0]
    assert field in warned[0]
    assert _record("0123abcd-ef45.x_9").environment.git_sha == "0123abcd" * 5  # what the runner makes passes


def test_a_full_disk_keeps_every_earlier_record_and_says_so(tmp_path):
    """A 64 KiB tmpfs as the results folder, records appended until it is full: the append that does not
    fit raises one HarnessError naming the file and ENOSPC, the file is cut back to its last whole
    record, every earlier record reads back, and once space is freed appends go on."""
    results = tmp_path / "results"
    results.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the results folder needs root")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(results)], capture_output=True,
                           text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip() or mount.returncode}")
    try:
        (results / "ballast").write_bytes(b"x" * 16384)
        store, appended, error = Store(results), [], None
        tail = TQDM_TAIL * 40  # about 2.7 KB a record
        for i in range(200):
            try:
                store.append(_record(f"r{i}", tail=tail))
            except HarnessError as exc:
                error = str(exc)
                break
            appended.append(f"r{i}")
        path = store.path_for("s")
        assert error is not None and len(appended) > 5, "the tmpfs never filled up"
        assert str(path) in error and "ENOSPC" in error and "cell s-r" in error and "left as it was" in error, error
        data = path.read_bytes()
        assert data.endswith(b"\n") and data.count(b"\n") == len(appended)
        ids, warned = _read(store)
        assert ids == appended and warned == []
        (results / "ballast").unlink()
        store.append(_record("after", tail=tail))
        assert _read(store) == (appended + ["after"], [])
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[4])
    from tests.test_store_integrity import _record
    from harness.results.store import Store
    store, name, go = Store(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    records = [_record(f"{name}{i}", tail=name * 3000) for i in range(300)]
    go.with_name(name).touch()  # ready
    while not go.exists():
        time.sleep(0.001)
    for r in records:
        store.append(r)
""")


def test_two_processes_appending_at_once_lose_no_line(tmp_path):
    """Two processes append 300 records of 3 KB each to one file at the same moment: 600 whole lines,
    each process' records all there and in its order."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "results"), name, str(go), str(REPO)],
                              cwd=REPO, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    deadline = time.monotonic() + 60
    while not all((tmp_path / name).exists() for name in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.01)  # both have built their records and wait
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    lines = Store(tmp_path / "results").path_for("s").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 601
    ids = [Record.model_validate_json(line).record_id for line in lines[:-1]]
    for name in ("a", "b"):
        assert [i for i in ids if i.startswith(name)] == [f"{name}{i}" for i in range(300)]
    first_b = ids.index("b0")
    assert any(i.startswith("a") for i in ids[first_b:]), "the writers did not overlap; the test proves nothing"
    assert _read(Store(tmp_path / "results")) == (ids, [])
