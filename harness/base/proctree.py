"""Stopping a process and every process under it, whatever sessions or groups they moved to; asking
Linux to end a process when its parent dies; and the loopback interface children bind their sockets to.

Two ways to get the parent-death signal, both safe in a threaded parent:

- :func:`die_with_parent`, called by a process on itself (a rank at its start);
- :func:`with_parent_death`, which wraps a command line so that the child asks for it before it
  becomes the real program: ``python -m harness.base.proctree --signal SIG --parent PID -- CMD...``
  sets ``PR_SET_PDEATHSIG``, checks that ``PID`` is still its parent, then ``execvp``'s ``CMD``. The
  signal request survives ``exec``, and the child stays in the caller's process group (a group kill
  still reaches it). This replaces ``subprocess.Popen(preexec_fn=...)``, which Python documents as
  unsafe in a process with threads (the child may deadlock before ``exec``).

Linux delivers the signal when the *thread* that started the child ends, so start such children
from a thread that lives as long as they should (the main thread). Elsewhere than Linux the wrapper
only ``exec``'s the command.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int, parent: int | None = None) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (PR_SET_PDEATHSIG; nothing
    elsewhere). Call it in the process itself. If the parent is already gone (``os.getppid()`` is no
    longer ``parent``, or is 1 when ``parent`` is not given), exit at once with status 1."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
        ppid = os.getppid()
        gone = ppid != parent if parent is not None else ppid == 1
        if gone:  # the parent died before the request
            os._exit(1)


def with_parent_death(cmd: list[str], sig: int = signal.SIGTERM) -> list[str]:
    """``cmd`` wrapped so that it receives ``sig`` when this process (its parent) dies: pass the result
    to ``subprocess.Popen`` started from this process (no ``preexec_fn``). The wrapper replaces itself
    with ``cmd`` (same pid), so ``Popen.pid``, signals and :func:`stop_tree` reach the real program."""
    return [sys.executable, "-m", "harness.base.proctree", "--signal", str(int(sig)), "--parent", str(os.getpid()),
            "--", *cmd]


def loopback_interface() -> str:
    """Name of the network interface holding 127.0.0.1 (``lo`` on Linux), for ``GLOO_SOCKET_IFNAME``:
    gloo otherwise binds to the address the hostname resolves to, reachable from the network."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == "127.0.0.1" for a in addrs):
            return name
    return "lo"


def stop_tree(proc: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM ``proc`` and all its descendants (found first, while ``proc`` still links them), wait up
    to ``grace_s`` for them to leave, then SIGKILL the rest and reap ``proc``. Never raises for
    processes that are already gone."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(tree, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def main(argv: list[str]) -> int:
    """The wrapper of :func:`with_parent_death`: ``--signal N --parent PID -- CMD...``. Returns 2 on a
    malformed command line; otherwise never returns (``execvp``; status 127 if ``CMD`` cannot run)."""
    try:
        sep = argv.index("--")
        opts, cmd = dict(zip(argv[:sep:2], argv[1:sep:2])), argv[sep + 1:]
        sig, parent = int(opts["--signal"]), int(opts["--parent"])
    except (ValueError, KeyError):
        print("usage: python -m harness.base.proctree --signal N --parent PID -- CMD [ARGS...]", file=sys.stderr)
        return 2
    if not cmd or set(opts) != {"--signal", "--parent"}:
        print("usage: python -m harness.base.proctree --signal N --parent PID -- CMD [ARGS...]", file=sys.stderr)
        return 2
    die_with_parent(sig, parent)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(cmd[0], cmd)
    except OSError as exc:
        print(f"harness.base.proctree: cannot run {cmd[0]!r}: {exc}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
