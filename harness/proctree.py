"""Stopping a process and every process under it, whatever sessions or groups they moved to."""

from __future__ import annotations

import subprocess


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
