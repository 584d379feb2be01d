"""pytest plugin: turns suite YAML files into test items, one per cell, measured by pytest-benchmark.

Loaded from the repository's ``conftest.py``. ``pytest suites/ --benchmark-only`` collects
``test_cell[<cell id>]`` for every cell of every ``*.yaml`` beside the test module; each cell runs in
its own subprocess as one pedantic round (no calibration loop; cells sharing an engine start run
together in one subprocess when the group's first item runs, and the others' rounds only look up
their records, with the cell's own time in ``extra_info["cell_duration_s"]``), its metrics go to ``extra_info`` (so
``--benchmark-json`` carries them) and its record to the store. Skipped cells are pytest skips with
the planner's reason; a cell that errors, runs out of memory or times out fails its item.

While cells run, SIGTERM and SIGHUP (a cancelled CI job, a closed terminal) stop the session as
Ctrl-C does: the running cell's whole process group is killed by the runner, its temporary folder
removed, and pytest exits (status 2, interrupted). Signals after the first are ignored, so nothing
cuts the runner's kill short.
"""

from __future__ import annotations

import contextlib
import io
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

_RECORDS_KEY = pytest.StashKey[list]()
_GROUP_KEY = pytest.StashKey[dict]()  # cell id -> record of a cell already run with its group


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "LLM efficiency harness")
    group.addoption("--harness-model", default=None, metavar="REF",
                    help="Override every suite's model (embedded, tiny, local:PATH, hub:ORG/NAME).")
    group.addoption("--harness-suite", action="append", default=None, metavar="PATH",
                    help="Suite file(s) to run (default: every *.yaml beside the test module).")
    group.addoption("--harness-results", default="results", metavar="DIR", help="Folder of the JSON Lines store.")
    group.addoption("--harness-strict", action="store_true", default=False,
                    help="Record cells that are not valid (contended, too short, too few samples) as `invalid` (a failure).")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RECORDS_KEY] = []
    config.stash[_GROUP_KEY] = {}


def _suite_files(metafunc: pytest.Metafunc) -> list[Path]:
    chosen = metafunc.config.getoption("--harness-suite")
    if chosen:
        return [Path(p) for p in chosen]
    return sorted(Path(metafunc.module.__file__).parent.glob("*.yaml"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_cell" not in metafunc.fixturenames:
        return
    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.spec.suite import SuiteError, load_suite

    model = metafunc.config.getoption("--harness-model")
    host = Host.detect()
    params, ids, problems = [], [], []
    for path in _suite_files(metafunc):
        try:
            suite = load_suite(path, model=model)
        except SuiteError as exc:
            problems += exc.problems
            continue
        p = plan(suite, host, source=str(path), model_override=model)
        for planned in p.cells:
            params.append((p, planned))
            ids.append(planned.cell.id)
    if problems:
        raise pytest.UsageError("invalid suite(s), nothing was run:\n  " + "\n  ".join(problems))
    metafunc.parametrize("harness_cell", params, ids=ids)


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
                    strict=pytestconfig.getoption("--harness-strict"))
    with interrupt_on(*[s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]):
        yield runner


@pytest.fixture(scope="session")
def harness_store(pytestconfig: pytest.Config) -> Any:
    from harness.results.store import Store

    return Store(pytestconfig.getoption("--harness-results"))


def run_cell_benchmark(request: pytest.FixtureRequest, harness_cell: Any, benchmark: Any, runner: Any, store: Any) -> Any:
    """Run one planned cell as a single pedantic benchmark round; record it; skip or fail as it says."""
    plan, planned = harness_cell
    command = plan.command(planned.cell, results=store.root)
    records = request.config.stash[_RECORDS_KEY]
    if planned.skip is not None:
        record = runner.skipped(planned, command)
        store.append(record)
        records.append(record)
        pytest.skip(planned.skip)
    done = request.config.stash[_GROUP_KEY]
    if planned.cell.id in done:  # run earlier with its group (one engine start); its round is only a lookup
        record = benchmark.pedantic(done.pop, args=(planned.cell.id,), rounds=1, iterations=1, warmup_rounds=0)
    elif planned.cell.group is not None:
        members = _group_members(request, harness_cell)
        cells = [p.cell for _, p in members]
        results = benchmark.pedantic(runner.run_group, args=(cells, [pl.command(c, results=store.root) for (pl, _), c in zip(members, cells)]),
                                     rounds=1, iterations=1, warmup_rounds=0)
        for r in results:
            store.append(r)
            done[r.cell_id] = r
        record = done.pop(planned.cell.id)
    else:
        record = benchmark.pedantic(runner.run, args=(planned.cell, command), rounds=1, iterations=1, warmup_rounds=0)
        store.append(record)
    records.append(record)
    benchmark.group = f"{planned.cell.suite}/{planned.cell.scenario}"
    benchmark.extra_info.update({
        "cell_id": record.cell_id, "status": record.status, "record_id": record.record_id,
        "metrics": {k: m.value for k, m in record.metrics.items()},
        "units": {k: m.unit for k, m in record.metrics.items()},
        "coords": planned.cell.coords(), "command": command, "cell_duration_s": record.duration_s,
        "group": planned.cell.group,
        "validity": record.validity.model_dump(mode="json") if record.validity else None,
    })
    if record.status == "ok" and not record.trusted:
        import warnings

        assert record.validity is not None
        warnings.warn(f"cell {record.cell_id} is not valid (its numbers are not trusted): "
                      + "; ".join(record.validity.reasons), pytest.PytestWarning, stacklevel=1)
    if record.status != "ok":
        pytest.fail(f"cell {record.cell_id}: {record.status}: {record.reason}\n--- log tail ---\n{record.log_tail or ''}",
                    pytrace=False)
    return record


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
    print_summary(records, Console(file=buf, width=max(terminalreporter._tw.fullwidth, 160), force_terminal=False))
    terminalreporter.write_sep("=", "harness summary")
    terminalreporter.write(buf.getvalue())
