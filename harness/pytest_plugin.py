"""pytest plugin: turns suite YAML files into test items, one per cell, measured by pytest-benchmark.

Loaded from the repository's ``conftest.py``. ``pytest suites/ --benchmark-only`` collects
``test_cell[<cell id>]`` for every cell of every ``*.yaml`` beside the test module (``--harness-suite``
picks some: a path, a suite name such as ``default``, ``all``, or a comma-separated list); each cell
runs in its own subprocess (cells sharing an engine start run together in one subprocess when the
group's first item runs; the others then only look up their records). Its metrics go to
``extra_info`` (so ``--benchmark-json`` carries them) and its record to the store. Skipped cells are
pytest skips with the planner's reason; a cell that errors, runs out of memory or times out fails its item.

**What pytest-benchmark times.** Not the subprocess: its statistics (min, median, stddev, rounds) are
the durations the cell measured inside its process for its scenario's declared timed quantity
(:class:`harness.metrics.Benchmark`: seconds per decode step at the first batch size, per training
step, per generated token of a serving pass), one round per sample, so ``--benchmark-compare``,
``--benchmark-compare-fail=median:5%``, histograms and ``pytest-benchmark compare`` judge them. Each
grouped cell gets its own samples. They are handed to the fixture's stats through
:func:`feed_measured`, a seam past pytest-benchmark's documented surface: the version is pinned
(``pytest-benchmark==5.3.1``) and tests/test_pytest_plugin.py holds the seam. Under
``--benchmark-disable`` nothing is fed; under pytest-xdist suite cells are refused (cells are timed one
at a time on the machine's cores).

**Progress.** A line as each cell starts and ends (id, status, duration, the timed quantity's
median), written through pytest's terminal reporter outside output capture, with ``-q`` and ``-v``.

While cells run, SIGTERM and SIGHUP (a cancelled CI job, a closed terminal) stop the session as
Ctrl-C does: the running cell's whole process group is killed by the runner, its temporary folder
removed, and pytest exits (status 2, interrupted). Signals after the first are ignored, so nothing
cuts the runner's kill short.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

_RECORDS_KEY = pytest.StashKey[list]()
_GROUP_KEY = pytest.StashKey[dict]()  # cell id -> record of a cell already run with its group
_PENDING_KEY = pytest.StashKey[list]()  # under -v: end lines waiting for the item's status
_CONFIG: dict[str, pytest.Config] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "LLM efficiency harness")
    group.addoption("--harness-model", default=None, metavar="REF",
                    help="Override every suite's model (embedded, tiny, local:PATH, hub:ORG/NAME).")
    group.addoption("--harness-suite", action="append", default=None, metavar="SUITE",
                    help="Suite(s) to run: a file, a suite name beside the test module (default), 'all', or a "
                         "comma-separated list (default: every *.yaml beside the test module).")
    group.addoption("--harness-results", default="results", metavar="DIR", help="Folder of the JSON Lines store.")
    group.addoption("--harness-machine", default=None, metavar="NAME",
                    help="Logical runner name written into every record (default: $HARNESS_MACHINE, else derived "
                         "from the devices, e.g. cpu-2c, h100-80gb-x1).")
    group.addoption("--harness-only", action="append", default=None, metavar="CELL",
                    help="Run only this cell id (repeatable): the cells a matrix job was given (harness matrix).")
    group.addoption("--harness-shard", default=None, metavar="K/N",
                    help="Only shard K of N: the cells split by cost over N runners, engine starts never split "
                         "(harness plan --shards N shows the split).")
    group.addoption("--harness-durations-from", default=None, metavar="DIR",
                    help="Store whose latest durations on this machine cost the cells for --harness-shard (every "
                         "shard must use the same; default: per-scenario defaults).")
    group.addoption("--harness-strict", action="store_true", default=False,
                    help="Record cells that are not valid (contended, too short, too few samples) as `invalid` (a failure).")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDS_KEY] = []
    _CONFIG["config"] = config
    config.stash[_GROUP_KEY] = {}


def suite_files(chosen: list[str] | None, here: Path) -> list[Path]:
    """The suite files ``--harness-suite`` names (see its help), in order, each once; every ``*.yaml`` in
    ``here`` when none is named. Raises ``pytest.UsageError`` naming an unknown suite and the known ones."""
    known = sorted(here.glob("*.yaml"))
    if not chosen:
        return known
    out: list[Path] = []
    for part in (p.strip() for entry in chosen for p in entry.split(",") if p.strip()):
        if part == "all":
            found = known
        elif Path(part).is_file():
            found = [Path(part)]
        elif (here / f"{part}.yaml").is_file():
            found = [here / f"{part}.yaml"]
        else:
            raise pytest.UsageError(f"--harness-suite {part}: no such suite file or name; known: "
                                    f"{', '.join(p.stem for p in known)}, or all")
        out += [f for f in found if f not in out]
    return out


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_cell" not in metafunc.fixturenames:
        return
    if os.environ.get("PYTEST_XDIST_WORKER"):
        raise pytest.UsageError("suite cells run one at a time: under pytest-xdist they would be timed side by side "
                                "on the same cores; run them without -n")
    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.spec.suite import SuiteError, load_suite

    model = metafunc.config.getoption("--harness-model")
    host = Host.detect()
    params, ids, problems, plans = [], [], [], []
    for path in suite_files(metafunc.config.getoption("--harness-suite"), Path(metafunc.module.__file__).parent):
        try:
            suite = load_suite(path, model=model)
        except SuiteError as exc:
            problems += exc.problems
            continue
        plans.append(plan(suite, host, source=str(path), model_override=model))
    if problems:
        raise pytest.UsageError("invalid suite(s), nothing was run:\n  " + "\n  ".join(problems))
    mine = _shard(metafunc.config, plans, host)
    only = metafunc.config.getoption("--harness-only")
    if only:
        known = {pc.cell.id for p in plans for pc in p.cells}
        if unknown := sorted(set(only) - known):
            from harness.base.registry import suggest

            raise pytest.UsageError("; ".join(f"--harness-only {u}: no such cell{suggest(u, known)}" for u in unknown))
        mine = set(only) if mine is None else mine & set(only)
    for p in plans:
        for planned in p.cells:
            if mine is None or planned.cell.id in mine:
                params.append((p, planned))
                ids.append(planned.cell.id)
    metafunc.parametrize("harness_cell", params, ids=ids)


def _shard(config: pytest.Config, plans: list, host: Any) -> set[str] | None:
    """The cell ids of ``--harness-shard K/N`` (None: every cell); see :mod:`harness.pipeline.shard`."""
    text = config.getoption("--harness-shard")
    if not text:
        return None
    from harness.base.errors import HarnessError
    from harness.pipeline.shard import last_durations, parse_shard, shard_cells
    from harness.results.machine import run_machine
    from harness.results.store import read_records

    try:
        k, n = parse_shard(text)
        store = config.getoption("--harness-durations-from")
        durations = last_durations(read_records(store), run_machine(host, config.getoption("--harness-machine"))) if store else {}
    except HarnessError as exc:
        raise pytest.UsageError(str(exc).replace("--shard", "--harness-shard")) from None
    return shard_cells(plans, k, n, durations)


@contextlib.contextmanager
def interrupt_on(*signums: int) -> Iterator[None]:
    """While the block runs (in the main thread), the first of ``signums`` raises ``KeyboardInterrupt``
    (naming the signal) wherever the main thread is, so the runner's clean-up runs and pytest stops;
    later ones are ignored. The previous handlers come back when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if fired:
            return
        fired.append(signum)
        raise KeyboardInterrupt(f"{signal.Signals(signum).name}: stopping the running cell and the session")

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@pytest.fixture(scope="session")
def harness_runner(pytestconfig: pytest.Config) -> Iterator[Any]:
    """The session's runner; while it lives, SIGTERM and SIGHUP stop the running cell and the session."""
    from harness.pipeline.runner import Runner

    runner = Runner(log_dir=Path(pytestconfig.getoption("--harness-results")) / "logs",
                    strict=pytestconfig.getoption("--harness-strict"), machine=pytestconfig.getoption("--harness-machine"))
    with interrupt_on(*[s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]):
        yield runner


@pytest.fixture(scope="session")
def harness_store(pytestconfig: pytest.Config) -> Any:
    from harness.results.store import Store

    return Store(pytestconfig.getoption("--harness-results"))


def run_cell_benchmark(request: pytest.FixtureRequest, harness_cell: Any, benchmark: Any, runner: Any, store: Any) -> Any:
    """Run one planned cell (or look up its record, run earlier with its group), record it, hand its
    measured durations to ``benchmark``, and skip or fail as it says."""
    plan, planned = harness_cell
    command = plan.command(planned.cell, results=store.root)
    records = request.config.stash[_RECORDS_KEY]
    say = _Progress(request.config)
    if planned.skip is not None:
        record = runner.skipped(planned, command)
        store.append(record)
        records.append(record)
        say.ended(record)
        pytest.skip(planned.skip)
    done = request.config.stash[_GROUP_KEY]
    if planned.cell.id in done:  # run earlier with its group (one engine start)
        record = done.pop(planned.cell.id)
    elif planned.cell.group is not None:
        members = _group_members(request, harness_cell)
        cells = [p.cell for _, p in members]
        say.started(planned.cell.id, [c.id for c in cells[1:]])
        for r in runner.run_group(cells, [pl.command(c, results=store.root) for (pl, _), c in zip(members, cells)]):
            store.append(r)
            done[r.cell_id] = r
        record = done.pop(planned.cell.id)
    else:
        say.started(planned.cell.id)
        record = runner.run(planned.cell, command)
        store.append(record)
    records.append(record)
    say.ended(record)
    benchmark.group = f"{planned.cell.suite}/{planned.cell.scenario}"
    benchmark.extra_info.update({
        "cell_id": record.cell_id, "status": record.status, "record_id": record.record_id,
        "metrics": {k: m.value for k, m in record.metrics.items()},
        "units": {k: m.unit for k, m in record.metrics.items()},
        "coords": planned.cell.coords(), "command": command, "cell_duration_s": record.duration_s,
        "group": planned.cell.group,
        "validity": record.validity.model_dump(mode="json") if record.validity else None,
    })
    feed_measured(benchmark, record)
    if record.status == "ok" and not record.trusted:
        import warnings

        assert record.validity is not None
        warnings.warn(f"cell {record.cell_id} is not valid (its numbers are not trusted): "
                      + "; ".join(record.validity.reasons), pytest.PytestWarning, stacklevel=1)
    if record.status != "ok":
        pytest.fail(f"cell {record.cell_id}: {record.status}: {record.reason}\n--- log tail ---\n{record.log_tail or ''}",
                    pytrace=False)
    return record


def feed_measured(benchmark: Any, record: Any) -> None:
    """Give pytest-benchmark's fixture the durations ``record`` measured for its scenario's timed quantity
    (:func:`harness.track.timed.timed_samples`, seconds), one round each, as its statistics.

    The seam (pytest-benchmark 5.3.1, pinned): ``_mode`` marks the fixture used (no "not used" warning,
    no second use), ``_make_stats(iterations)`` registers a ``Metadata`` with the session (copying
    ``group`` and sharing ``extra_info``, so both are set before), ``Metadata.update(seconds)`` adds a
    round. Nothing is fed under ``--benchmark-disable`` or when the record measured nothing (a failure);
    such an item is then absent from pytest-benchmark's table and JSON, as pytest-benchmark does with
    a test that raised."""
    from harness.track.timed import timed_samples

    benchmark._mode = "harness: durations the cell measured in its process"
    timed = timed_samples(record)
    if benchmark.disabled or timed is None:
        return
    bench, samples = timed
    benchmark.extra_info["timed"] = {"metric": bench.metric, "what": bench.what, "unit": "s", "samples": samples}
    stats = benchmark._make_stats(1)
    for seconds in samples:
        stats.update(seconds)


class _Progress:
    """Lines for the terminal as cells start and end, outside pytest's output capture. Under ``-v`` pytest
    already names each item as it starts, and a line written while an item runs makes it name the item
    again before its status: there the start line is left out and the end line waits for the item's
    status and progress (:func:`pytest_runtest_logfinish`), as does the line announcing a shared engine start."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.reporter = config.pluginmanager.get_plugin("terminalreporter")
        self.capture = config.pluginmanager.get_plugin("capturemanager")
        self.verbose = config.getoption("verbose", 0) > 0

    def _line(self, text: str) -> None:
        if self.reporter is None:
            return
        with self.capture.global_and_fixture_disabled() if self.capture is not None else contextlib.nullcontext():
            self.reporter.ensure_newline()
            self.reporter.write_line(f"[harness] {text}")

    def _say(self, text: str) -> None:
        if self.verbose:
            self.config.stash.setdefault(_PENDING_KEY, []).append(text)
        else:
            self._line(text)

    def started(self, cell_id: str, with_it: list[str] | None = None) -> None:
        if self.verbose and not with_it:
            return  # pytest named the item
        also = f" (one engine start with {', '.join(with_it)})" if with_it else ""
        self._say(f"{cell_id}: started{also}")

    def ended(self, record: Any) -> None:
        from harness.track.timed import progress_line

        self._say(progress_line(record))


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    """Under ``-v``: the end lines of the cells this item ran, after pytest wrote the item's status."""
    config = _CONFIG.get("config")
    if config is None:
        return
    pending = config.stash.get(_PENDING_KEY, [])
    if pending:
        progress = _Progress(config)
        for line in pending:
            progress._line(line)
        pending.clear()


def _group_members(request: pytest.FixtureRequest, harness_cell: tuple[Any, Any]) -> list[tuple[Any, Any]]:
    """This cell and the other runnable cells of its group selected in this session, in order."""
    planned = harness_cell[1]
    out = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        pair = params.get("harness_cell")
        if pair is not None and pair[1].skip is None and pair[1].cell.group == planned.cell.group:
            out.append(pair)
    return out or [harness_cell]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    records = config.stash.get(_RECORDS_KEY, [])
    if not records:
        return
    from rich.console import Console

    from harness.track.summary import print_summary

    buf = io.StringIO()
    print_summary(records, Console(file=buf, width=max(terminalreporter._tw.fullwidth, 120), force_terminal=False),
                  results=str(config.getoption("--harness-results")))
    terminalreporter.write_sep("=", "harness summary")
    terminalreporter.write(buf.getvalue())
