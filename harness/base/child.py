"""Run one expensive step (quantizing a checkpoint, computing reference outputs) in a child process.

``run_child("pkg.module:function", payload)`` starts ``python -m harness.base.child``, which imports the
function, calls it with the JSON payload and writes back its JSON answer plus the child's own peak
resident memory and wall time. Running such steps apart keeps a cell's own ``peak_rss_bytes``
(which includes ``ru_maxrss`` of the cell process) free of models loaded only to prepare it.

The child stays in the cell's process group, so a cell timeout kills it too. Its stdout and stderr
go to the parent's stderr (the cell's log).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.base.errors import HarnessError
from harness.base.protocol import error_text, exit_now, guarded, pythonpath, write_json


class ChildError(HarnessError):
    """The child step failed; the message holds its exception and the tail of its output."""


def run_child(target: str, payload: dict[str, Any], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> dict[str, Any]:
    """Call ``target`` ("module:function") with ``payload`` in a fresh interpreter and return its answer.

    ``cwd`` is where the child runs (tools that drop log folders in the working directory write
    there); the harness stays importable from it.

    The answer is the function's JSON-able mapping plus ``child_peak_rss_bytes`` (the child's
    ``ru_maxrss``) and ``child_wall_s``. Raises :class:`ChildError` if the child fails or dies.
    """
    with tempfile.TemporaryDirectory(prefix="harness-child-") as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps({"target": target, "payload": payload}))
        proc = subprocess.run([sys.executable, "-m", "harness.base.child", str(src), str(dst)],
                              stdout=sys.stderr.fileno(), stderr=sys.stderr.fileno(),
                              cwd=cwd, env={**os.environ, "PYTHONPATH": pythonpath(), **(env or {})})
        if not dst.exists():
            raise ChildError(f"{target} died with exit status {proc.returncode} before answering (see the cell log)")
        answer = json.loads(dst.read_text())
    if "error" in answer:
        raise ChildError(f"{target} failed: {answer['error']}")
    return answer


def _main(argv: list[str]) -> int:
    from harness.base.registry import load_attr

    request = json.loads(Path(argv[0]).read_text())
    start = time.perf_counter()
    result, exc = guarded(lambda: dict(load_attr(request["target"])(request["payload"])))
    answer = {"error": error_text(exc)} if exc is not None else dict(result or {})  # the parent raises ChildError
    answer["child_wall_s"] = time.perf_counter() - start
    answer["child_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    write_json(Path(argv[1]), answer)
    exit_now(0)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
