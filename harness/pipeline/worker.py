"""Runs cells inside their own process: ``python -m harness.pipeline.worker CELLS.json OUT_DIR``.

CELLS.json is a list of cells (one, or a group sharing an engine start), run in order. After each
cell ``i`` it writes ``OUT_DIR/i.json`` (atomically): ``{"status": "ok", "metrics": ..., "info": ...}``
or ``{"status": "error"|"oom", "reason": ...}``, with the cell's ``duration_s`` and its ``validity``
(the contention figures of its timed regions judged by the cell's rules, :mod:`harness.measure.validity`).
Before each cell, torch gets one intra-op thread per core this process may use, never more. A CUDA cell
runs under :class:`harness.measure.gpu.GpuMonitor`: its record gets NVML's and the allocator's memory peaks,
the GPU's energy over its timed regions, and in ``info.gpu`` the device's facts or why a figure is missing. Engines still
running after the last cell are stopped before the process leaves. Tracebacks go to stderr, which the runner keeps as the cell's log.
The ``__main__`` guard matters: vLLM spawns processes that re-import the main module.

The worker dies with its runner (:func:`guard_parent`): the runner names itself in ``HARNESS_WORKER_PARENT``;
the worker asks for SIGTERM on its parent's death (``PR_SET_PDEATHSIG``) and also watches its parent
pid (in case a framework took SIGTERM over). When the runner is gone (even before the request was
made), the worker stops every process it started, removes the cell's temporary folder (the folder
of CELLS.json, named ``harness-cell-*`` by the runner) and leaves. A SIGTERM while the runner lives
(the runner's group kill) ends the worker as SIGTERM always did.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from harness.base.protocol import error_text, exit_now, guarded, is_oom, write_json

PARENT_ENV = "HARNESS_WORKER_PARENT"  # pid of the runner that started this worker
ABANDON_GRACE_S = 3.0  # how long the worker's own children get to leave after SIGTERM, when the runner is gone
_leaving = threading.Lock()

if TYPE_CHECKING:
    from harness.spec.cell import Cell


def execute(cell: "Cell") -> dict[str, Any]:
    """Resolve the cell's model, run its scenario, and return the result as a JSON-able mapping.

    A result holding a metric the catalog does not declare (or in another unit) is an error: nothing
    undeclared is ever recorded."""
    import contextlib

    from harness.measure import gpu
    from harness.metrics import UndeclaredMetricError, check, metric
    from harness.results.records import CellFailure
    from harness.scenarios import runner_for

    def run() -> tuple[Any, Any]:
        model = cell.model.resolve()
        return model, runner_for(cell.scenario)(cell, model)

    monitor = gpu.GpuMonitor() if cell.device == "cuda" else None
    with monitor or contextlib.nullcontext():
        answer, exc = guarded(run)
    if exc is not None or answer is None:  # every failure becomes a record, never a dead suite
        status = "oom" if is_oom(exc) else "error"
        if isinstance(exc, CellFailure):  # keep what the cell had measured or predicted
            if monitor is not None:
                _add_gpu(exc.partial, monitor)
            return {"status": status, "reason": str(exc)[:2000], **exc.partial.model_dump(mode="json")}
        return {"status": status, "reason": error_text(exc)} if exc else {"status": "error", "reason": "no result"}
    model, result = answer
    if monitor is not None:
        _add_gpu(result, monitor)
    result.info["model"] = {"path": str(model.path), "provenance": model.provenance, "made": model.made}
    if model.made:
        result.metrics["model_prepare_s"] = metric("model_prepare_s", model.prepare_s)
    try:
        check(result.metrics)
    except UndeclaredMetricError as undeclared:
        return {"status": "error", "reason": str(undeclared), "info": result.info}
    return {"status": "ok", **result.model_dump(mode="json")}


def _add_gpu(result: Any, monitor: Any) -> None:
    """Put the cell's GPU memory peaks, its energy over the timed regions and the GPU's facts (or why
    each was not measured) into ``result`` (a CellResult)."""
    from harness.measure.gpu import region_energy_j
    from harness.metrics import metric

    result.metrics |= monitor.metrics()
    info = monitor.info()
    joules, regions = region_energy_j()
    if joules is not None:
        result.metrics["energy_j"] = metric("energy_j", joules, description=f"GPU energy over the cell's {regions} timed region(s)")
    result.info["gpu"] = info


def validity(cell: "Cell", result: dict[str, Any], threads: dict[str, Any]) -> dict[str, Any]:
    """The cell's validity (as JSON) from the contention of its timed regions and its metrics."""
    from harness.measure import contention
    from harness.measure.validity import judge
    from harness.results.records import Metric

    import os

    figures = contention.figures(threads.get("threads")) | {"omp_num_threads": threads.get("omp_num_threads")}
    if cell.scenario == "serve" and os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        figures["vllm_cpu_omp_threads_bind"] = os.environ["VLLM_CPU_OMP_THREADS_BIND"]
    metrics = {k: Metric.model_validate(v) for k, v in (result.get("metrics") or {}).items()}
    return judge(figures, metrics, cell.validity).model_dump(mode="json")


def _abandon(cell_tmp: Path | None) -> NoReturn:
    """The runner is gone: stop every process under this one (SIGTERM, then SIGKILL after
    :data:`ABANDON_GRACE_S`), remove the cell's temporary folder, leave with status 1. A kernel alarm
    ends the process if this itself hangs."""
    if not _leaving.acquire(blocking=False):  # the watchdog and the signal handler both got here
        if threading.current_thread() is threading.main_thread():
            while True:  # the watchdog is leaving for both of us (or the alarm ends us)
                signal.pause()
        raise SystemExit(1)  # ends the watchdog thread quietly; the main thread is leaving
    signal.alarm(int(ABANDON_GRACE_S) + 10)  # SIGALRM's default action ends the process
    try:
        import psutil

        kids = psutil.Process().children(recursive=True)
        for sig in ("terminate", "kill"):
            for p in kids:
                try:
                    getattr(p, sig)()
                except psutil.Error:
                    pass
            _, kids = psutil.wait_procs(kids, timeout=ABANDON_GRACE_S)
            if not kids:
                break
    finally:
        if cell_tmp is not None:
            from harness.base.child import remove_tree

            remove_tree(cell_tmp)
        print("=== the runner is gone: worker stopped its processes and left", file=sys.stderr, flush=True)
        os._exit(1)


def guard_parent(cell_tmp: Path | None) -> None:
    """Make this process end with the runner named in ``HARNESS_WORKER_PARENT`` (nothing if unset):
    parent-death signal, a SIGTERM handler that tells the runner's kill (die as by SIGTERM) from the
    runner's death (:func:`_abandon`), and a watchdog thread that checks the parent every half second.
    A runner that died before this call is caught here too. Call it first thing, from the main thread."""
    from harness.base.proctree import die_with_parent

    parent = int(os.environ.pop(PARENT_ENV, "0") or 0)
    if not parent:
        return
    if os.getppid() != parent:  # gone before we could ask
        _abandon(cell_tmp)
    die_with_parent(signal.SIGTERM, parent)  # gone in between: exits; the next run sweeps the folder

    def on_term(signum: int, frame: object) -> None:
        if os.getppid() != parent:
            _abandon(cell_tmp)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the runner stops us: end as SIGTERM ends a process
        os.kill(os.getpid(), signal.SIGTERM)

    def watch() -> None:
        import time

        while os.getppid() == parent:
            time.sleep(0.5)
        _abandon(cell_tmp)

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=watch, name="harness-parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    import time

    faulthandler.enable()
    if len(argv) != 2:
        print("usage: python -m harness.pipeline.worker CELLS.json OUT_DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0]).resolve().parent
    guard_parent(folder if folder.name.startswith("harness-cell-") else None)

    from harness.measure import contention
    from harness.spec.cell import Cell

    cells = [Cell.model_validate(c) for c in json.loads(Path(argv[0]).read_text())]
    try:
        for i, cell in enumerate(cells):
            print(f"=== cell {cell.id} ({i + 1}/{len(cells)})", flush=True)
            t0 = time.monotonic()
            contention.reset()
            threads = contention.pin_threads()
            result = execute(cell)
            duration = time.monotonic() - t0
            write_json(Path(argv[1]) / f"{i}.json", result | {"duration_s": duration,
                                                              "validity": validity(cell, result, threads)})
    finally:
        from harness.engines import stop_all

        stop_all()
    exit_now(0)  # framework atexit hooks (vLLM engine teardown) must not turn a result into a hang


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
