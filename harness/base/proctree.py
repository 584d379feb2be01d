"""Stopping a process and every process under it, whatever sessions or groups they moved to; and
asking Linux to end a process when its parent dies."""

from __future__ import annotations

import os
import subprocess
import sys


def die_with_parent(sig: int) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (PR_SET_PDEATHSIG; nothing
    elsewhere). Call it in the child (e.g. as ``preexec_fn``); if the parent is already gone, exit."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() == 1:  # the parent died before the request
            os._exit(1)


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
