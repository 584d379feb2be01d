"""Launch the ranks of a data-parallel training cell with ``torchrun`` and collect their results.

:func:`launch` runs ``python -m torch.distributed.run --nnodes 1 --nproc-per-node N -m
harness.scenarios.training.rank CELL.json OUT_DIR`` (c10d rendezvous on a store this process hosts on
127.0.0.1) and reads back each rank's ``OUT_DIR/rank{r}.json`` (keys: see :mod:`harness.scenarios.training.rank`).
Across nodes (``parallel.nnodes`` > 1, :meth:`harness.parallel.ParallelEngine.nodes`), every node's
launch runs ``torchrun --nnodes M --node-rank R`` with the c10d rendezvous at the nodes' endpoint (node
0's torchrun hosts it); the ranks gather their results so every node has them all, and node 0 (by the
harness' node rank) makes the record.

Processes: torchrun stays in the caller's process group, so the runner's kill of a cell's group
reaches it; torchrun puts every rank in a session of its own and stops them when it is stopped, and
each rank also asks the kernel to kill it if torchrun dies. On a timeout or an interrupt, ``launch``
stops torchrun and every process under it itself. torchrun's and the ranks' output goes to the
caller's stderr and to ``OUT_DIR/torchrun.log``, whose tail goes into any error.

Threads: each rank gets ``OMP_NUM_THREADS = max(1, usable cores // nproc)`` unless the caller set it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

from harness.base.errors import HarnessError
from harness.base.logtail import tail
from harness.base.protocol import OOM_MESSAGES, pythonpath
from harness.base.nodes import Nodes, is_loopback
from harness.scenarios.training.rank import STORE_ENV

if TYPE_CHECKING:
    from harness.spec.cell import Cell

OOM_MARKERS = (*OOM_MESSAGES, "memoryerror", "outofmemoryerror")  # messages and exception names
GRACE_S = 10.0  # torchrun's own shutdown of its ranks, before everything left is SIGKILLed
STORE_TIMEOUT_S = 300.0  # the store's own operations (the server waits on nobody)


class DistributedError(HarnessError):
    """A rank of a distributed cell failed, wrote no result, or torchrun timed out.

    ``oom`` is True when a rank ran out of memory: its error says so, or torchrun saw a rank die of
    SIGKILL (most likely the kernel's out-of-memory killer).
    """

    def __init__(self, message: str, *, oom: bool = False) -> None:
        super().__init__(message)
        self.oom = oom


def torchrun_command(cell: Cell, cell_json: Path, out_dir: Path, store_port: int | None, nodes: Nodes | None = None) -> list[str]:
    """The torchrun command line running ``cell``'s ranks (``cell.parallel.nproc`` on this node). One node:
    joining the rendezvous store on ``127.0.0.1:store_port`` as a client. Several (``nodes``): torchrun's
    c10d rendezvous at the nodes' endpoint, hosted by node 0's torchrun (see the module docstring)."""
    assert cell.parallel is not None
    rank_cmd = ["-m", "harness.scenarios.training.rank", str(cell_json), str(out_dir)]
    base = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(cell.parallel.nproc)]
    if nodes is None or nodes.nnodes == 1:
        return [*base, "--nnodes", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{store_port}",
                "--rdzv-id", uuid.uuid4().hex, "--rdzv-conf", "is_host=false", "--local-addr", "127.0.0.1", *rank_cmd]
    assert nodes.endpoint is not None and nodes.rdzv_id is not None
    local = ["--local-addr", "127.0.0.1"] if is_loopback(nodes.endpoint) else []
    return [*base, "--nnodes", str(nodes.nnodes), "--node-rank", str(nodes.node_rank), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", nodes.endpoint, "--rdzv-id", nodes.rdzv_id,
            "--rdzv-conf", f"is_host={'true' if nodes.node_rank == 0 else 'false'}", *local, *rank_cmd]


def rank_env(nproc: int, base: dict[str, str] | None = None, store_port: int | None = None,
             loopback: bool = True) -> dict[str, str]:
    """The environment of torchrun and its ranks: ``base`` (default: this process') plus the harness on
    ``PYTHONPATH``, unbuffered output, ``OMP_NUM_THREADS`` split between the ranks (kept if set),
    gloo and NCCL on the loopback interface (kept if set), no store of torchrun's own and, with
    ``store_port``, the ranks' process-group store (``HARNESS_RANK_STORE=127.0.0.1:PORT``)."""
    from harness.base.proctree import loopback_interface

    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = pythonpath(env)
    env["PYTHONUNBUFFERED"] = "1"
    if not env.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    if loopback:  # one host (or nodes on one host): nothing leaves the loopback interface
        lo = loopback_interface()
        for name in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
            env[name] = env.get(name) or lo
        env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"  # else torchrun's agent hosts a store on every interface
    if store_port is not None:
        env[STORE_ENV] = f"127.0.0.1:{store_port}"
    return env


@contextmanager
def loopback_store() -> Iterator[int]:
    """A TCPStore server listening on 127.0.0.1 only, for the time of the ``with`` block; yields its port.
    (``TCPStore(host, ...)`` alone would listen on every interface: the host names only where clients
    connect.)"""
    from datetime import timedelta

    from torch.distributed import TCPStore

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        port = sock.getsockname()[1]
    except BaseException:
        sock.close()
        raise
    fd = sock.detach()  # the store owns the socket from here (and closes it)
    try:
        store = TCPStore("127.0.0.1", port, is_master=True, master_listen_fd=fd, wait_for_workers=False,
                         timeout=timedelta(seconds=STORE_TIMEOUT_S), use_libuv=True)
    except BaseException:
        try:
            os.close(fd)
        except OSError:  # the store had closed it already
            pass
        raise
    try:
        yield port
    finally:
        del store


def launch(cell: Cell, out_dir: str | Path, *, timeout_s: float) -> list[dict[str, Any]]:
    """Run ``cell``'s ranks under torchrun and return their result mappings, sorted by rank.

    The cell's model is resolved and its precision's checkpoint prepared here first (cached builds the
    ranks then reuse; ``timeout_s`` covers only torchrun). ``out_dir`` receives ``cell.json``,
    ``torchrun.log`` and one ``rank{r}.json`` per rank (stale rank files are removed first).

    Raises :class:`DistributedError` (a HarnessError) if a rank failed (its error message), was killed
    or wrote no result, or if the ranks did not finish within ``timeout_s`` seconds (every process
    under torchrun is then killed); the message names the ranks and ends with the tail
    of the log. Interrupts stop torchrun and its ranks before propagating.
    """
    if cell.parallel is None:
        raise DistributedError(f"cell {cell.id!r} has no parallel engine; distributed.launch runs parallel cells")
    nproc = cell.parallel.nproc
    try:
        nodes = cell.parallel.nodes()
    except ValueError as exc:
        raise DistributedError(f"cell {cell.id!r}: {exc}") from None
    # Build (or find) the model and its precision's checkpoint once, here, so the ranks find them cached.
    cell.precision.prepare(cell.model.resolve(), cell)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("rank*.json"):
        stale.unlink()
    cell_json = out / "cell.json"
    cell_json.write_text(cell.model_dump_json())
    log_path = out / "torchrun.log"
    single = nodes.nnodes == 1
    with open(log_path, "wb") as log, (loopback_store() if single else nullcontext(None)) as port:
        # several nodes: the ranks join with torchrun's env:// (MASTER_ADDR on node 0), not a loopback store
        env = rank_env(nproc, store_port=port, loopback=single or is_loopback(nodes.endpoint or ""))
        proc = subprocess.Popen(torchrun_command(cell, cell_json, out, port, nodes), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        tee = threading.Thread(target=_tee, args=(proc.stdout, log), daemon=True, name="torchrun-log")
        tee.start()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            tee.join(timeout=5)
            raise DistributedError(f"cell {cell.id!r}: the {nproc} ranks did not finish within {timeout_s:g} s; "
                                   f"torchrun and its ranks were killed\n{_tail(log_path)}") from None
        except BaseException:
            _stop(proc)
            raise
        tee.join(timeout=5)
    return _read_ranks(cell, out, rc, log_path)


def _read_ranks(cell: Cell, out: Path, rc: int, log_path: Path) -> list[dict[str, Any]]:
    """Every rank's result (across nodes too: each node's local rank 0 writes them all), or
    DistributedError naming the ranks that failed, were killed or wrote none."""
    assert cell.parallel is not None
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    silent: list[int] = []
    for r in range(cell.parallel.world_size):
        path = out / f"rank{r}.json"
        data = json.loads(path.read_text()) if path.is_file() else None
        if data is None:
            silent.append(r)
        elif "error" in data:
            failed.append(f"rank {r} failed: {data['error']}")
        else:
            results.append(data)
    if failed or silent or rc != 0:
        killed = _sigkilled_ranks(log_path.read_text(errors="replace"))
        problems = [f"rank {r} was killed by SIGKILL (most likely the out-of-memory killer)" for r in killed]
        problems += failed + [f"rank {r}: no result (stopped after another rank failed, or killed)"
                              for r in silent if r not in killed]
        oom = bool(killed) or any(m in f.lower() for f in failed for m in OOM_MARKERS)  # the protocol's markers
        raise DistributedError(f"cell {cell.id!r}: torchrun exited with status {rc}: "
                               f"{'; '.join(problems) or 'every rank wrote a result'}\n{_tail(log_path)}", oom=oom)
    return results


def _sigkilled_ranks(log: str) -> list[int]:
    """Ranks torchrun's failure summary reports as ended by SIGKILL (``rank : R (local_rank: L)`` then
    ``exitcode : -9 (pid: P)``)."""
    return sorted({int(r) for r in re.findall(r"rank\s*:\s*(\d+)[^\n]*\n\s*exitcode\s*:\s*-9\b", log)})


def _tee(src: IO[bytes] | None, log: IO[bytes]) -> None:
    """Copy torchrun's output to the log file and to this process' stderr until it closes."""
    if src is None:
        return
    for chunk in iter(lambda: src.read1(65536), b""):  # type: ignore[attr-defined]
        log.write(chunk)
        log.flush()
        try:
            sys.stderr.write(chunk.decode("utf-8", errors="replace"))
            sys.stderr.flush()
        except (OSError, ValueError):  # the caller's stderr is gone: the log file still has it
            pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM torchrun and its ranks (found before torchrun goes: they live in their own sessions, out
    of reach of a process-group kill), then SIGKILL whatever is alive after ``GRACE_S``."""
    from harness.base.proctree import stop_tree

    stop_tree(proc, GRACE_S)


def _tail(path: Path) -> str:
    return "--- torchrun log (tail) ---\n" + tail(path)

