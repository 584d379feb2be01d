"""Runs cells inside their own process: ``python -m harness.worker CELLS.json OUT_DIR``.

CELLS.json is a list of cells (one, or a group sharing an engine start), run in order. After each
cell ``i`` it writes ``OUT_DIR/i.json`` (atomically): ``{"status": "ok", "metrics": ..., "info": ...}``
or ``{"status": "error"|"oom", "reason": ...}``, with the cell's ``duration_s``. Engines still
running after the last cell are stopped before the process leaves. Tracebacks go to stderr, which the runner keeps as the cell's log.
The ``__main__`` guard matters: vLLM spawns processes that re-import the main module.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.cell import Cell


OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is an out-of-memory failure (CPU or CUDA allocator)."""
    while exc is not None:
        flag = getattr(exc, "oom", None)
        if flag is not None:  # the raiser knew (e.g. a distributed error carrying other processes' logs)
            return bool(flag)
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(m in text for m in OOM_MESSAGES):
            return True
        exc = exc.__cause__  # type: ignore[assignment]
    return False


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def execute(cell: "Cell") -> dict[str, Any]:
    """Resolve the cell's model, run its scenario, and return the result as a JSON-able mapping."""
    from harness.records import CellFailure, Metric
    from harness.scenarios import runner_for

    try:
        model = cell.model.resolve()
        result = runner_for(cell.scenario)(cell, model)
    except BaseException as exc:  # every failure becomes a record, never a dead suite
        traceback.print_exc()
        status = "oom" if is_oom(exc) else "error"
        if isinstance(exc, CellFailure):  # keep what the cell had measured or predicted
            return {"status": status, "reason": str(exc)[:2000], **exc.partial.model_dump(mode="json")}
        return {"status": status, "reason": f"{type(exc).__name__}: {exc}".strip()[:2000]}
    result.info["model"] = {"path": str(model.path), "provenance": model.provenance, "made": model.made}
    if model.made:
        result.metrics["model_prepare_s"] = Metric(value=model.prepare_s, unit="s",
                                                   description="building/converting the model (cache miss)")
    return {"status": "ok", **result.model_dump(mode="json")}


def main(argv: list[str]) -> int:
    import time

    from harness.cell import Cell

    faulthandler.enable()
    if len(argv) != 2:
        print("usage: python -m harness.worker CELLS.json OUT_DIR", file=sys.stderr)
        return 2
    cells = [Cell.model_validate(c) for c in json.loads(Path(argv[0]).read_text())]
    try:
        for i, cell in enumerate(cells):
            print(f"=== cell {cell.id} ({i + 1}/{len(cells)})", flush=True)
            t0 = time.monotonic()
            result = execute(cell)
            write_json(Path(argv[1]) / f"{i}.json", result | {"duration_s": time.monotonic() - t0})
    finally:
        from harness.engines import stop_all

        stop_all()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: framework atexit hooks (vLLM engine teardown) must not turn a result into a hang.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
