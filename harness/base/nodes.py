"""Where this node stands in a cell spread over several nodes (training's torchrun ranks, vLLM's ranks).

A multi-node cell runs on every node at once: the same ``harness run --only CELL`` on each (under Slurm,
``srun`` once per node). Each run finds its node rank and node 0's address (``host:port``) in the
cell's settings, else in the harness' environment (``HARNESS_NODE_RANK``, ``HARNESS_RDZV_ENDPOINT``,
``HARNESS_RDZV_ID``), else in Slurm's (``SLURM_NODEID``, the first host of ``SLURM_JOB_NODELIST`` at
port :data:`DEFAULT_PORT`, ``SLURM_JOB_ID``). :func:`locate` raises ValueError naming whatever is still
missing, so a misconfigured node fails at once instead of waiting for peers that never come.
"""

from __future__ import annotations

from pydantic import BaseModel

DEFAULT_PORT = 29500  # node 0's port under Slurm when nothing says otherwise (torchrun's default)
LOOPBACK = ("127.0.0.1", "localhost")


class Nodes(BaseModel):
    """This node's place in a cell's ranks: ``nnodes`` 1 is a single host (no endpoint, no id)."""

    nnodes: int
    node_rank: int
    endpoint: str | None  # node 0's host:port
    rdzv_id: str | None

    @property
    def host(self) -> str:
        assert self.endpoint is not None
        return self.endpoint.rpartition(":")[0]

    @property
    def port(self) -> int:
        assert self.endpoint is not None
        return int(self.endpoint.rpartition(":")[2])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback(endpoint: str) -> bool:
    """Whether ``host:port`` (or a bare host) is on this machine's loopback interface."""
    host = endpoint.rpartition(":")[0] if ":" in endpoint else endpoint
    return host in LOOPBACK


def locate(nnodes: int, *, node_rank: int | None = None, endpoint: str | None = None, rdzv_id: str | None = None,
           need_id: bool = True, settings: str = "the parallel config", environ: dict[str, str] | None = None) -> Nodes:
    """This node's :class:`Nodes` from the cell's own ``node_rank``/``endpoint``/``rdzv_id``, else the
    environment (see the module docstring). ``need_id``: whether a rendezvous id is required (torchrun's
    c10d needs one, vLLM does not). ``settings`` names where the cell's settings live, for the error.
    Raises ValueError naming what is missing or out of range."""
    import os
    import subprocess

    env = os.environ if environ is None else environ
    if nnodes == 1:
        return Nodes(nnodes=1, node_rank=0, endpoint=None, rdzv_id=None)
    rank = node_rank if node_rank is not None else env.get("HARNESS_NODE_RANK", env.get("SLURM_NODEID"))
    endpoint = endpoint or env.get("HARNESS_RDZV_ENDPOINT")
    if endpoint is None and env.get("SLURM_JOB_NODELIST"):
        hosts = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_JOB_NODELIST"]], capture_output=True,
                               text=True, check=True, timeout=30).stdout.split()
        endpoint = f"{hosts[0]}:{DEFAULT_PORT}"
    rdzv_id = rdzv_id or env.get("HARNESS_RDZV_ID") or env.get("SLURM_JOB_ID")
    wanted = [("node_rank", rank), ("the endpoint of node 0", endpoint)] + ([("rdzv_id", rdzv_id)] if need_id else [])
    missing = [n for n, v in wanted if v is None]
    if missing:
        raise ValueError(f"a cell over {nnodes} nodes needs {', '.join(missing)}: set them in {settings}, run under "
                         "Slurm (srun), or set HARNESS_NODE_RANK, HARNESS_RDZV_ENDPOINT (host:port of node 0)"
                         + (", HARNESS_RDZV_ID" if need_id else ""))
    try:
        rank = int(rank)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"node rank {rank!r} is not a whole number") from None
    if not 0 <= rank < nnodes:
        raise ValueError(f"node rank {rank} is not below nnodes {nnodes}")
    assert endpoint is not None
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} of node 0 is not host:port")
    return Nodes(nnodes=nnodes, node_rank=rank, endpoint=endpoint, rdzv_id=None if rdzv_id is None else str(rdzv_id))
