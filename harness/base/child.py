"""Run one expensive step (quantizing a checkpoint, computing reference outputs, probing the host's
rates) in a child process; the temporary folders such processes use; and how to tell that a killed
process ran out of memory.

``run_child("pkg.module:function", payload)`` starts ``python -m harness.base.child``, which imports the
function, calls it with the JSON payload and writes back its JSON answer plus the child's own peak
resident memory and wall time. Running such steps apart keeps a cell's own ``peak_rss_bytes``
(which includes ``ru_maxrss`` of the cell process) free of models loaded only to prepare it, and
keeps torch out of the orchestrator.

The child stays in the caller's process group, so a cell timeout kills it too, and it dies with its
parent (``PR_SET_PDEATHSIG``, SIGKILL: it holds nothing that needs a graceful end; start it from the
thread that lives as long as it should, the main thread). Its stdout and stderr go to the parent's
stderr (the cell's log).

Temporary folders (:func:`owned_tmp`) carry their owner in their name, ``harness-<kind>-<pid>-<start>-*``
(the owner's pid and start time, so a reused pid is not mistaken for the owner), and :func:`sweep_tmp`
removes those whose owner is gone: whatever a SIGKILL left behind goes at the next run. :func:`tmp_env`
points a process tree's ``TMPDIR`` into such a folder, so that its temporary files go with it.

Out of memory (:class:`OomCounter`): a process killed by SIGKILL was killed by the kernel's OOM
killer only if its memory cgroup's ``oom_kill`` counter (cgroup v2 ``memory.events``, v1
``memory.oom_control``) rose while it ran; without a readable cgroup counter, the machine's
``/proc/vmstat`` ``oom_kill``. Anything else (an operator's ``kill -9``, a CI cleanup) is no OOM.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.base.errors import HarnessError
from harness.base.protocol import error_text, exit_now, guarded, is_oom, pythonpath, write_json

PARENT_ENV = "HARNESS_CHILD_PARENT"  # the pid the child must have as its parent (the race of PDEATHSIG)
_TMP_NAME = re.compile(r"^harness-([a-z]+)-(\d+)-(\d+)-")


class ChildError(HarnessError):
    """The child step failed; the message holds its exception and the tail of its output. ``oom`` is
    True when the child reported an allocator OOM or was OOM-killed (:func:`is_oom` reads it)."""

    def __init__(self, message: str, oom: bool | None = None) -> None:
        super().__init__(message)
        self.oom = oom


def run_child(target: str, payload: dict[str, Any], *, env: dict[str, str] | None = None,
              cwd: Path | None = None, timeout_s: float | None = None) -> dict[str, Any]:
    """Call ``target`` ("module:function") with ``payload`` in a fresh interpreter and return its answer.

    ``cwd`` is where the child runs (tools that drop log folders in the working directory write
    there); the harness stays importable from it. ``timeout_s`` bounds the child's wall time: past
    it the child and its descendants are stopped and :class:`ChildError` says so.

    The answer is the function's JSON-able mapping plus ``child_peak_rss_bytes`` (the child's
    ``ru_maxrss``) and ``child_wall_s``. Raises :class:`ChildError` if the child fails, dies or runs
    past ``timeout_s``; whatever stops the caller meanwhile (Ctrl-C) stops the child first.
    """
    from harness.base.proctree import stop_tree

    counters = oom_counters()
    before = [c.read() for c in counters]
    with owned_tmp("child") as tmp:
        src, dst = tmp / "in.json", tmp / "out.json"
        src.write_text(json.dumps({"target": target, "payload": payload}))
        log = _stderr_fd()
        proc = subprocess.Popen([sys.executable, "-m", "harness.base.child", str(src), str(dst)],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                cwd=cwd, env={**os.environ, "PYTHONPATH": pythonpath(), **(env or {}),
                                              PARENT_ENV: str(os.getpid())})
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_tree(proc, grace_s=2.0)
            raise ChildError(f"{target} gave no answer within {timeout_s:g} s; it was stopped") from None
        except BaseException:
            stop_tree(proc, grace_s=2.0)
            raise
        if not dst.exists():
            why = oom_evidence(counters, before) if rc == -signal.SIGKILL else None
            raise ChildError(f"{target} died with exit status {rc} before answering"
                             + (f" ({why})" if why else "") + " (see the cell log)", oom=bool(why))
        answer = json.loads(dst.read_text())
    if "error" in answer:
        raise ChildError(f"{target} failed: {answer['error']}", oom=bool(answer.get("oom")))
    return answer


def _stderr_fd() -> int | None:
    """This process' stderr as a file descriptor for a child (None: the child inherits fd 2, e.g.
    when a test framework replaced ``sys.stderr`` by an in-memory stream)."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None


# --- temporary folders that name their owner --------------------------------------------------------

def _start_time(pid: int) -> int | None:
    """Whole seconds since the epoch at which process ``pid`` started; None if there is none."""
    import psutil

    try:
        return int(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1  # someone else's process: alive, never ours to judge


@contextlib.contextmanager
def owned_tmp(kind: str) -> Iterator[Path]:
    """A fresh temporary folder ``harness-<kind>-<pid>-<start>-*`` owned by this process, removed when
    the block ends however it ends (an exception, Ctrl-C, a SIGTERM turned into one). A folder left
    by a SIGKILL is removed by the next :func:`sweep_tmp`."""
    path = Path(tempfile.mkdtemp(prefix=f"harness-{kind}-{os.getpid()}-{_start_time(os.getpid())}-"))
    try:
        yield path
    finally:
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """Remove the folder ``path``; a process still writing into it gets a second try, then it is left."""
    for _ in range(2):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.2)


def tmp_env(folder: Path) -> dict[str, str]:
    """Environment that puts the temporary files of a process tree under ``folder`` (``TMPDIR``),
    keeping torch's compile cache, which torch keeps under the temporary folder, where it was."""
    import getpass

    env = {"TMPDIR": str(folder)}
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        try:
            user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())  # as torch names it
        except (KeyError, OSError):
            return env
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    return env


def sweep_tmp(root: Path | None = None) -> list[Path]:
    """Remove this user's ``harness-<kind>-<pid>-<start>-*`` folders in ``root`` (default: the temporary
    folder) whose owner process is gone (no such pid, or a pid started at another time). Returns them."""
    root = Path(root or tempfile.gettempdir())
    gone = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for entry in entries:
        m = _TMP_NAME.match(entry.name)
        try:
            mine = m is not None and entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_uid == os.getuid()
        except OSError:
            continue
        if not mine:
            continue
        started = _start_time(int(m.group(2)))
        if started is None or (started >= 0 and abs(started - int(m.group(3))) > 1):
            remove_tree(Path(entry.path))
            gone.append(Path(entry.path))
    return gone


# --- out-of-memory evidence -----------------------------------------------------------------------

@dataclass(frozen=True)
class OomCounter:
    """One kernel counter of OOM kills: ``key`` on a ``key value`` line of ``path``; ``scope`` says
    whose kills it counts (in a reason)."""

    path: Path
    scope: str
    key: str = "oom_kill"

    def read(self) -> int | None:
        """The counter now, or None if the file cannot be read or has no such line."""
        try:
            for line in self.path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == self.key:
                    return int(value)
        except (OSError, ValueError):
            return None
        return None


def oom_counters() -> list[OomCounter]:
    """The OOM-kill counters that speak for this process' children: its memory cgroup's (v2
    ``memory.events``, else v1 ``memory.oom_control``) when readable, else the machine's ``/proc/vmstat``
    (which also counts other users' processes). Empty where none is readable (not Linux)."""
    found: list[OomCounter] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":  # v2 unified hierarchy
            candidates = [Path("/sys/fs/cgroup") / rel.lstrip("/") / "memory.events", Path("/sys/fs/cgroup/memory.events")]
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory")
            candidates = [base / rel.lstrip("/") / "memory.oom_control", base / "memory.oom_control"]
        else:
            continue
        for path in candidates:
            counter = OomCounter(path, f"memory cgroup {rel}")
            if counter.read() is not None:
                found.append(counter)
                break
    if found:
        return found[:1]
    vmstat = OomCounter(Path("/proc/vmstat"), "this machine (any user)")
    return [vmstat] if vmstat.read() is not None else []


def oom_evidence(counters: list[OomCounter], before: list[int | None]) -> str | None:
    """Why a process killed by SIGKILL was OOM-killed (a counter of ``counters`` rose since ``before``,
    read when it started), or None when nothing says so."""
    for counter, old in zip(counters, before):
        new = counter.read()
        if old is not None and new is not None and new > old:
            return f"the OOM killer of {counter.scope} killed {new - old} process(es) meanwhile ({counter.path} {counter.key} {old} -> {new})"
    return None


def _main(argv: list[str]) -> int:
    from harness.base.proctree import die_with_parent
    from harness.base.registry import load_attr

    parent = os.environ.pop(PARENT_ENV, "")  # not for this child's own children
    if parent:
        die_with_parent(signal.SIGKILL, int(parent))
    request = json.loads(Path(argv[0]).read_text())
    start = time.perf_counter()
    result, exc = guarded(lambda: dict(load_attr(request["target"])(request["payload"])))
    answer = {"error": error_text(exc), "oom": is_oom(exc)} if exc is not None else dict(result or {})
    answer["child_wall_s"] = time.perf_counter() - start
    answer["child_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    write_json(Path(argv[1]), answer)
    exit_now(0)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
