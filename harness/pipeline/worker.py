"""Runs cells inside their own process: ``python -m harness.pipeline.worker CELLS.json OUT_DIR``.

CELLS.json is a list of cells (one, or a group sharing an engine start), run in order. After each
cell ``i`` it writes ``OUT_DIR/i.json`` (atomically): ``{"status": "ok", "metrics": ..., "info": ...}``
or ``{"status": "error"|"oom", "reason": ...}``, with the cell's ``duration_s`` and its ``validity``
(the contention figures of its timed regions judged by the cell's rules, :mod:`harness.measure.validity`).
Before each cell, torch gets one intra-op thread per core this process may use, never more. Engines still
running after the last cell are stopped before the process leaves. Tracebacks go to stderr, which the runner keeps as the cell's log.
The ``__main__`` guard matters: vLLM spawns processes that re-import the main module.
"""

from __future__ import annotations

import faulthandler
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.base.protocol import error_text, exit_now, guarded, is_oom, write_json

if TYPE_CHECKING:
    from harness.spec.cell import Cell


def execute(cell: "Cell") -> dict[str, Any]:
    """Resolve the cell's model, run its scenario, and return the result as a JSON-able mapping.

    A result holding a metric the catalog does not declare (or in another unit) is an error: nothing
    undeclared is ever recorded."""
    from harness.metrics import UndeclaredMetricError, check, metric
    from harness.results.records import CellFailure
    from harness.scenarios import runner_for

    def run() -> tuple[Any, Any]:
        model = cell.model.resolve()
        return model, runner_for(cell.scenario)(cell, model)

    answer, exc = guarded(run)
    if exc is not None or answer is None:  # every failure becomes a record, never a dead suite
        status = "oom" if is_oom(exc) else "error"
        if isinstance(exc, CellFailure):  # keep what the cell had measured or predicted
            return {"status": status, "reason": str(exc)[:2000], **exc.partial.model_dump(mode="json")}
        return {"status": status, "reason": error_text(exc)} if exc else {"status": "error", "reason": "no result"}
    model, result = answer
    result.info["model"] = {"path": str(model.path), "provenance": model.provenance, "made": model.made}
    if model.made:
        result.metrics["model_prepare_s"] = metric("model_prepare_s", model.prepare_s)
    try:
        check(result.metrics)
    except UndeclaredMetricError as undeclared:
        return {"status": "error", "reason": str(undeclared), "info": result.info}
    return {"status": "ok", **result.model_dump(mode="json")}


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


def main(argv: list[str]) -> int:
    import time

    from harness.measure import contention
    from harness.spec.cell import Cell

    faulthandler.enable()
    if len(argv) != 2:
        print("usage: python -m harness.pipeline.worker CELLS.json OUT_DIR", file=sys.stderr)
        return 2
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
