"""vLLM's OpenAI-compatible server, started by the harness and driven over HTTP under load.

``start`` launches ``vllm serve`` (through :mod:`harness.engines.vllm_cli`) on 127.0.0.1 only, at a
free port, in the worker's process group and with a parent-death signal
(:func:`harness.base.proctree.with_parent_death`), and waits until ``/v1/models`` answers with this
start's model name (failing with the server's exit code if it dies first).

Nobody else is let in. Each start has its own API key (``secrets.token_urlsafe``, given to vLLM through
``VLLM_API_KEY`` in its environment, not on its command line) and its own random served-model name;
every request the harness sends carries the key, and :mod:`harness.engines.vllm_guard` makes the
server refuse (HTTP 401) any request without it, on every path (vLLM's own key check covers only
``/v1`` and a few more). The name tells the health check our server from another process that took
the port between choosing it and vLLM binding it. Dev mode (``VLLM_SERVER_DEV_MODE``: RPC, sleep,
weight-update routes) is on only when a cell needs its ``/reset_prefix_cache`` (whenever prefix caching
is not switched off); the record's ``info.server`` says whether it was on and why. vLLM's own world
group (gloo) binds to the loopback interface.
 ``run`` drives the workload with the cell's
load profile (:mod:`harness.engines.loaddriver`); ``stop`` terminates the server and every process under
it. Whatever happens, nothing outlives the cell: ``stop`` runs after the group's last cell or on a
failure, the runner kills the worker's whole process group afterwards, and the server dies with
its parent. Each entry of ``loads`` is one cell; all of them share one server start, and each cell
runs its warm-up and timed passes under its own load. The KV-cache capacity, and whether prefix
caching is on, are read from the server's Prometheus ``vllm:cache_config_info``; when it is on, the
prefix cache is emptied before every pass (``POST /reset_prefix_cache``, served in vLLM's dev mode).
"""

from __future__ import annotations

import http.client
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, field_validator

from harness.base.nodes import free_port
from harness.base.proctree import stop_tree
from harness.engines import ENGINES, EvalTarget, Request, ServeRun
from harness.engines.loadgen import LoadProfile
from harness.engines.vllm_guard import KEY_ENV
from harness.engines.vllm_metrics import cache_config, counter_delta, counters_from_text
from harness.engines.vllm_offline import VLLMOptions

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.resolved import ResolvedModel

SERVED_PREFIX = "harness-"  # + a random part per start: the name /v1/models must answer with
STOP_GRACE_S = 15.0  # vLLM's own shutdown of its engine, before everything left is SIGKILLed
GUARD = "harness.engines.vllm_guard.RequireKey"


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
    """A running server: where it listens, the key and model name of this start, whether dev mode is on."""

    model_config = {"arbitrary_types_allowed": True}

    proc: Any
    port: int
    base_url: str
    api_key: str = Field(repr=False, description="bearer token of this start (never logged or recorded)")
    served_name: str = Field(description="the model name of this start, as /v1/models answers it")
    dev_mode: bool = Field(description="VLLM_SERVER_DEV_MODE: on only when the prefix cache must be reset")
    dev_mode_why: str | None = None
    prefix_caching: bool | None = None  # what the server's cache config says (None: it does not say)

    def request(self, path: str, *, method: str = "GET", timeout: float = 10) -> tuple[int, str]:
        """``method path`` with the key; returns (HTTP status, body). Raises OSError (urllib's URLError
        included) when the server cannot be reached."""
        return http_call(self.base_url + path, self.api_key, method=method, timeout=timeout)


def http_call(url: str, api_key: str | None, *, method: str = "GET", timeout: float = 10) -> tuple[int, str]:
    """One request to ``url`` (with ``Authorization: Bearer api_key`` when given); returns (status, body),
    an HTTP error status included. Raises OSError when nothing answers."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    req = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", errors="replace")


def _models(body: str) -> list[str]:
    import json

    try:
        return [str(m.get("id")) for m in json.loads(body).get("data", [])]
    except (ValueError, AttributeError):
        return []


def wait_healthy(proc: subprocess.Popen, server: Server, timeout_s: float) -> None:
    """Poll ``/v1/models`` (with the key) until it answers 200 listing ``server.served_name``: that is our
    server, not another process that took the port first. Raises RuntimeError if the server exits
    first and TimeoutError after ``timeout_s``, each saying what else answered on the port, if anything."""
    deadline = time.monotonic() + timeout_s
    other = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM server exited with code {proc.returncode} before it was healthy "
                               f"(see the cell log){other}")
        try:
            status, body = server.request("/v1/models", timeout=2)
        except (OSError, ValueError, http.client.HTTPException):
            status, body = 0, ""
        if status == 200 and server.served_name in _models(body):
            return
        if status:  # something answers on the port, but not as our server
            other = (f"; port {server.port} answered as another server (HTTP {status}, models "
                     f"{_models(body)[:3]}), not as {server.served_name!r}")
        time.sleep(0.5)
    raise TimeoutError(f"vLLM server not healthy after {timeout_s:g} s at {server.base_url}{other}")


def metrics_text(server: Server) -> str:
    """The server's Prometheus ``/metrics`` page."""
    status, body = server.request("/metrics")
    if status != 200:
        raise RuntimeError(f"the vLLM server answered /metrics with HTTP {status}: {body[:300]}")
    return body


@ENGINES.register("vllm-server")
class VLLMServer(VLLMOptions):
    """``vllm serve`` on a free local port, with streaming requests under each of ``loads``."""

    kind: Literal["vllm-server"] = "vllm-server"
    max_num_seqs: int = Field(default=8, ge=1, description="Most sequences the server schedules together.")
    loads: list[LoadProfile] = Field(min_length=1, description="Load levels, one cell each (one server start for all): "
                                                               "{kind: concurrency, concurrency: N} or "
                                                               "{kind: poisson, rate_req_s: R, burstiness: B}.")

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

    def dev_mode(self) -> str | None:
        """Why this start needs vLLM's dev mode, or None: the prefix cache is emptied before every pass
        (``POST /reset_prefix_cache``, a dev-mode route) unless the suite switched prefix caching off."""
        if self.enable_prefix_caching is False:
            return None
        said = "enable_prefix_caching: true" if self.enable_prefix_caching else "vLLM's default"
        return (f"prefix caching may be on ({said}): the prefix cache is emptied before every pass through "
                "POST /reset_prefix_cache, which vLLM serves only in dev mode (guarded by the start's key)")

    def start(self, cell: "CellView", model: "ResolvedModel") -> Server:
        from harness.base.proctree import with_parent_death

        port = free_port()
        why = self.dev_mode()
        server = Server(proc=None, port=port, base_url=f"http://127.0.0.1:{port}", api_key=secrets.token_urlsafe(32),
                        served_name=SERVED_PREFIX + secrets.token_hex(6), dev_mode=why is not None, dev_mode_why=why)
        cmd = [sys.executable, "-m", "harness.engines.vllm_cli", "serve", str(model.path), "--host", "127.0.0.1",
               "--port", str(port), "--served-model-name", server.served_name, "--tokenizer", str(model.path),
               "--middleware", GUARD, *cli_flags(self.engine_args(cell))]
        # The key goes through the environment (only this user can read it), never the command line
        # (any user can); the guard and vLLM's own check read it there. gloo (vLLM's world group) on lo
        # unless the engine spans hosts (net_env).
        env = os.environ | self.cpu_env(cell) | self.net_env(cell) | {KEY_ENV: server.api_key,
                                                                      "VLLM_SERVER_DEV_MODE": "1" if why else "0"}
        print("starting:", shlex.join(cmd), flush=True)
        # SIGTERM when the worker dies: vLLM then stops its engine. Same process group as the worker.
        proc = server.proc = subprocess.Popen(with_parent_death(cmd, signal.SIGTERM), env=env, stdin=subprocess.DEVNULL)
        try:
            wait_healthy(proc, server, self.startup_timeout_s)
            from harness.engines.loaddriver import drive

            warm, _ = drive(server.base_url, server.served_name, [Request(prompt_token_ids=[1, 2, 3, 4], output_tokens=2)],
                            LoadProfile(kind="concurrency", concurrency=1), api_key=server.api_key)
            if warm[0].error:
                raise RuntimeError(f"the server's warm-up request failed: {warm[0].error}")
            said = cache_config(metrics_text(server)).get("enable_prefix_caching")
            server.prefix_caching = None if said is None else said == "True"
        except BaseException:
            stop_tree(proc, STOP_GRACE_S)
            raise
        return server

    def reset_cache(self, handle: Server) -> bool | None:
        """Empty the server's prefix cache when its cache config says it is on (or says nothing: then it
        is emptied anyway and None returned). Without dev mode (prefix caching switched off) there is
        nothing to empty: False, or RuntimeError if the server says it is on all the same."""
        import json

        if not handle.dev_mode:
            if handle.prefix_caching:
                raise RuntimeError("the vLLM server has prefix caching on although the suite switched it off, "
                                   "and without dev mode it cannot be emptied")
            return False
        if handle.prefix_caching is False:
            return False
        status, body = handle.request("/reset_prefix_cache", method="POST", timeout=30)
        if status != 200 or (body.strip() and not json.loads(body).get("success", True)):
            raise RuntimeError(f"the vLLM server refused to reset its prefix cache (HTTP {status}): {body[:300]}")
        return handle.prefix_caching

    def eval_target(self, handle: Server, model: "ResolvedModel") -> EvalTarget:
        """This start's ``/v1/completions``, reached with its key (requests go as token ids, tokenized
        with the model folder's tokenizer, as the workload's are)."""
        return EvalTarget(kind="completions", base_url=handle.base_url, api_key=handle.api_key,
                          served_name=handle.served_name, tokenizer=str(model.path), max_length=self.max_model_len)

    def stop(self, handle: Server) -> None:
        stop_tree(handle.proc, STOP_GRACE_S)

    def run(self, handle: Server, cell: "CellView", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
        from harness.engines.loaddriver import drive

        load = LoadProfile.model_validate(cell.settings["load"])
        before = counters_from_text(metrics_text(handle))
        traces, duration = drive(handle.base_url, handle.served_name, requests, load, api_key=handle.api_key)
        text = metrics_text(handle)
        info = self.base_info(cell) | {"load": load.model_dump(exclude_defaults=True), "port": handle.port,
                                       "prefix_caching": handle.prefix_caching,
                                       "server": {"host": "127.0.0.1", "auth": "a bearer key per start, on every path",
                                                  "served_model_name": handle.served_name,
                                                  "dev_mode": handle.dev_mode, "dev_mode_why": handle.dev_mode_why},
                                       "engine_counters": counter_delta(before, counters_from_text(text))}
        cache = cache_config(text)
        if cache.get("num_gpu_blocks") and cache.get("block_size"):
            info |= {"kv_cache_blocks": int(cache["num_gpu_blocks"]), "kv_block_size": int(cache["block_size"]),
                     "kv_cache_dtype": cache.get("cache_dtype"),
                     "kv_cache_tokens": int(cache["num_gpu_blocks"]) * int(cache["block_size"])}
        return ServeRun(traces=traces, duration_s=duration, info=info)
