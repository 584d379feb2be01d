"""The one child-process protocol: how every process the harness starts reports back and leaves.

The cell worker (:mod:`harness.pipeline.worker`), a one-step child (:mod:`harness.base.child`) and a
training rank (:mod:`harness.scenarios.training.rank`) all follow it:

- the answer is a JSON file written atomically (:func:`write_json`): a reader never sees half a file;
- a failure prints its traceback to stderr (the cell's log) and is answered as JSON too, with
  :func:`error_text` (``"Type: message"``, at most 2000 characters) and, where the process can tell,
  whether it ran out of memory (:func:`is_oom`);
- the process leaves with :func:`exit_now`: output flushed, then ``os._exit`` so that frameworks'
  atexit hooks (vLLM's engine teardown, a failed rank's collectives) cannot turn a result into a hang.

:func:`pythonpath` is the one place that makes the harness importable in a process started with a
fresh interpreter from any working directory (children, torchrun and its ranks).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, NoReturn, TypeVar

# Lower-case fragments of allocator messages that mean "out of memory" (CPU and CUDA).
OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory")
ERROR_CHARS = 2000
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the ``harness`` package

T = TypeVar("T")


def is_oom(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it was raised from) is an out-of-memory failure (CPU or CUDA allocator).

    An exception carrying an ``oom`` attribute decides for itself (e.g. a distributed error that read
    other processes' logs)."""
    while exc is not None:
        flag = getattr(exc, "oom", None)
        if flag is not None:
            return bool(flag)
        text = str(exc).lower()
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or any(m in text for m in OOM_MESSAGES):
            return True
        exc = exc.__cause__
    return False


def error_text(exc: BaseException) -> str:
    """``"Type: message"`` of ``exc``, stripped and cut to :data:`ERROR_CHARS` characters."""
    return f"{type(exc).__name__}: {exc}".strip()[:ERROR_CHARS]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def guarded(fn: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """Call ``fn()``; on any failure print its traceback to stderr and return it instead of raising.

    Returns ``(result, None)`` or ``(None, exception)``: every failure becomes an answer, never a dead
    process without one."""
    try:
        return fn(), None
    except BaseException as exc:  # reported to the parent through the answer file
        traceback.print_exc()
        return None, exc


def exit_now(status: int) -> NoReturn:
    """Flush stdout and stderr and leave at once with ``status`` (no atexit hooks, no collectives)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def pythonpath(env: dict[str, str] | None = None) -> str:
    """``PYTHONPATH`` for a fresh interpreter that must import this harness: its root first, then
    whatever ``env`` (default: this process' environment) already had."""
    base = os.environ if env is None else env
    return os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [base.get("PYTHONPATH")])])
