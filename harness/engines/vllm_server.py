"""vLLM's OpenAI-compatible server, started by the harness and driven over HTTP under load.

``start`` launches ``vllm serve`` (through :mod:`harness.engines.vllm_cli`) on 127.0.0.1 at a free
port, in the worker's process group and with a parent-death signal, and waits for ``/health``
(failing with the server's exit code if it dies first). ``run`` drives the workload with the cell's
load profile (:mod:`harness.engines.loaddriver`); ``stop`` terminates the server and every process under
it. Whatever happens, nothing outlives the cell: ``stop`` runs after the group's last cell or on a
failure, the runner kills the worker's whole process group afterwards, and the server dies with
its parent. Each entry of ``loads`` is one cell; all of them share one server start, and each cell
runs its warm-up and timed passes under its own load. The KV-cache capacity, and whether prefix
caching is on, are read from the server's Prometheus ``vllm:cache_config_info``; when it is on, the
prefix cache is emptied before every pass (``POST /reset_prefix_cache``, served in vLLM's dev mode).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator

from harness.base.proctree import die_with_parent, stop_tree
from harness.engines import ENGINES, Request, ServeRun
from harness.engines.loadgen import LoadProfile
from harness.engines.vllm_metrics import cache_config, counter_delta, counters_from_text
from harness.engines.vllm_offline import VLLMOptions

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.resolved import ResolvedModel

SERVED_NAME = "harness"
STOP_GRACE_S = 15.0  # vLLM's own shutdown of its engine, before everything left is SIGKILLed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_flags(args: dict[str, Any]) -> list[str]:
    """``vllm serve`` flags for ``vllm.LLM`` keyword arguments (True: ``--x``, False: ``--no-x``, dicts as JSON)."""
    import json

    out: list[str] = []
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False:
            out.append("--no-" + key.replace("_", "-"))
        elif isinstance(value, dict):
            out += [flag, json.dumps(value)]
        elif value is not None:
            out += [flag, str(value)]
    return out


class Server(BaseModel):
    """A running server."""

    model_config = {"arbitrary_types_allowed": True}

    proc: Any
    port: int
    base_url: str
    prefix_caching: bool | None = None  # what the server's cache config says (None: it does not say)


def wait_healthy(proc: subprocess.Popen, base_url: str, timeout_s: float) -> None:
    """Poll ``/health`` until it answers 200; raise if the server exits or ``timeout_s`` passes."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with code {proc.returncode} before it was healthy (see the cell log)")
        try:
            with urllib.request.urlopen(base_url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"vLLM server not healthy after {timeout_s:g} s at {base_url}")


def metrics_text(base_url: str) -> str:
    """The server's Prometheus ``/metrics`` page."""
    import urllib.request

    with urllib.request.urlopen(base_url + "/metrics", timeout=10) as resp:
        return resp.read().decode()


@ENGINES.register("vllm-server")
class VLLMServer(VLLMOptions):
    """``vllm serve`` on a free local port, with streaming requests under each of ``loads``."""

    kind: Literal["vllm-server"] = "vllm-server"
    max_num_seqs: int = Field(default=8, ge=1, description="Most sequences the server schedules together.")
    loads: list[LoadProfile] = Field(min_length=1, description="Load levels, one cell each (one server start for all): "
                                                               "{kind: concurrency, concurrency: N} or "
                                                               "{kind: poisson, rate_req_s: R, burstiness: B}.")
    startup_timeout_s: float = Field(default=600, gt=0, description="Give up if /health is not up by then.")

    def seq_limit(self) -> int:
        return self.max_num_seqs

    @field_validator("loads")
    @classmethod
    def _distinct(cls, loads: list[LoadProfile]) -> list[LoadProfile]:
        labels = [p.label for p in loads]
        if len(set(labels)) != len(labels):
            raise ValueError(f"load levels must differ, got {labels}")
        return loads

    def points(self) -> list[tuple[str, dict[str, Any]]]:
        return [(p.label, {"load": p.model_dump(mode="json")}) for p in self.loads]

    def start_config(self) -> dict[str, Any] | None:
        return {"family": "vllm-server", **self.model_dump(exclude={"kind", "name", "loads"})}

    def start(self, cell: "CellView", model: "ResolvedModel") -> Server:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "harness.engines.vllm_cli", "serve", str(model.path), "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", SERVED_NAME, "--tokenizer", str(model.path),
               *cli_flags(self.engine_args(cell))]
        # dev mode: /reset_prefix_cache, so no pass (of this cell or another) is served from an earlier one's prompts
        env = os.environ | self.cpu_env(cell) | {"VLLM_SERVER_DEV_MODE": "1"}
        print("starting:", " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=lambda: die_with_parent(signal.SIGTERM))  # vLLM then stops its engine
        server = Server(proc=proc, port=port, base_url=base_url)
        try:
            wait_healthy(proc, base_url, self.startup_timeout_s)
            from harness.engines.loaddriver import drive

            warm, _ = drive(base_url, SERVED_NAME, [Request(prompt_token_ids=[1, 2, 3, 4], output_tokens=2)],
                            LoadProfile(kind="concurrency", concurrency=1))
            if warm[0].error:
                raise RuntimeError(f"the server's warm-up request failed: {warm[0].error}")
            said = cache_config(metrics_text(base_url)).get("enable_prefix_caching")
            server.prefix_caching = None if said is None else said == "True"
        except BaseException:
            stop_tree(proc, STOP_GRACE_S)
            raise
        return server

    def reset_cache(self, handle: Server) -> bool | None:
        """Empty the server's prefix cache when its cache config says it is on (or says nothing: then it
        is emptied anyway and None returned)."""
        import json
        import urllib.request

        if handle.prefix_caching is False:
            return False
        req = urllib.request.Request(handle.base_url + "/reset_prefix_cache", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read().decode()
        if body.strip() and not json.loads(body).get("success", True):
            raise RuntimeError(f"the vLLM server refused to reset its prefix cache: {body[:300]}")
        return handle.prefix_caching

    def stop(self, handle: Server) -> None:
        stop_tree(handle.proc, STOP_GRACE_S)

    def run(self, handle: Server, cell: "CellView", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
        from harness.engines.loaddriver import drive

        load = LoadProfile.model_validate(cell.settings["load"])
        before = counters_from_text(metrics_text(handle.base_url))
        traces, duration = drive(handle.base_url, SERVED_NAME, requests, load)
        text = metrics_text(handle.base_url)
        info = self.base_info(cell) | {"load": load.model_dump(exclude_defaults=True), "port": handle.port,
                                       "prefix_caching": handle.prefix_caching,
                                       "engine_counters": counter_delta(before, counters_from_text(text))}
        cache = cache_config(text)
        if cache.get("num_gpu_blocks") and cache.get("block_size"):
            info |= {"kv_cache_blocks": int(cache["num_gpu_blocks"]), "kv_block_size": int(cache["block_size"]),
                     "kv_cache_dtype": cache.get("cache_dtype"),
                     "kv_cache_tokens": int(cache["num_gpu_blocks"]) * int(cache["block_size"])}
        return ServeRun(traces=traces, duration_s=duration, info=info)
