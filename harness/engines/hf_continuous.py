"""HF transformers continuous batching (``ContinuousBatchingManager``): a paged KV cache and a scheduler
that admits a waiting request as soon as a running one finishes.

Every request is submitted at t=0 (offline, like ``vllm-continuous``) and generates exactly its
``output_tokens`` greedily (EOS disabled per request). Up to ``max_requests_per_batch`` requests share
one forward pass of at most ``max_batch_tokens`` tokens (prefills, split if needed, and decodes mixed).

KV sizing is always explicit: ``num_blocks`` blocks of ``block_size`` tokens (HF's ``page_size``). Left
to its default, HF sizes the cache as a share of free memory, which on CPU is a share of all RAM
(20 GB RSS seen on a tiny model). The cache actually allocated (HF may round it up to its alignment)
is reported as ``kv_cache_blocks`` x ``kv_block_size`` = ``kv_cache_tokens`` and its bytes as
``kv_cache_space_bytes``. A workload whose longest prompt plus longest output exceeds the cache is
skipped at plan time; requests that do not fit together wait (or are re-prefilled) rather than fail.

Timed: from the first submission to the last completion. A fresh manager (cache, scheduler,
background thread) is made before the clock starts and torn down after it stops, so no pass or cell
reuses another's cache (prefix sharing, ``prefix_sharing`` in the info, acts within a pass only);
the model load is the engine start, shared by cells of the same precision. Outputs
are streamed: each token is stamped when it reaches the calling thread (``token_times_s``,
``first_token_s``), ``finished_s`` when the request's final output does (HF's own ``record_timestamps``
loses the stamps of tokens made before a re-prefill). A request HF fails comes back as a trace with
its ``error``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from harness.engines import ENGINES, Engine, EvalTarget, Request, RequestTrace, ServeRun

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.host import Host
    from harness.base.resolved import ResolvedModel

MIN_TRANSFORMERS = (5, 17)  # ContinuousBatchingConfig.page_size (it replaced block_size in 5.17)


def transformers_reason() -> str | None:
    """Why the installed transformers has no usable continuous batching, or None (imports neither it nor torch)."""
    try:
        version = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return "transformers is not installed (pip install 'transformers>=5.17')"
    spec = importlib.util.find_spec("transformers")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    if not any((Path(r) / "generation" / "continuous_batching" / "continuous_api.py").is_file() for r in roots):
        return f"transformers {version} has no continuous batching (transformers.generation.continuous_batching)"
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if parts < MIN_TRANSFORMERS:
        return (f"transformers {version} is older than {'.'.join(map(str, MIN_TRANSFORMERS))}, whose "
                "continuous batching API (ContinuousBatchingConfig.page_size) this engine drives")
    return None


@ENGINES.register("hf-continuous")
class HFContinuous(Engine):
    """transformers continuous batching on an explicitly sized paged KV cache."""

    kind: Literal["hf-continuous"] = "hf-continuous"
    max_requests_per_batch: int = Field(default=8, ge=1, description="Most requests scheduled together.")
    num_blocks: int = Field(default=64, ge=1, description="KV-cache blocks (explicit, so the cache never takes a "
                                                          "share of all RAM).")
    block_size: int = Field(default=32, ge=4, description="Tokens per KV-cache block (HF's page_size).")
    max_batch_tokens: int = Field(default=512, ge=1, description="Most tokens (prefills and decodes) per forward pass.")

    def supports(self, cell: "CellView", host: "Host") -> str | None:
        reason = transformers_reason()
        if reason is not None:
            return reason
        if cell.workload is not None:
            longest = max(cell.workload.prompt_lengths()) + max(cell.workload.output_lengths())
            capacity = self.num_blocks * self.block_size
            if longest > capacity:
                return (f"workload {cell.workload.name!r} needs {longest} tokens > the KV cache's {capacity} "
                        f"(num_blocks {self.num_blocks} x block_size {self.block_size})")
        return None

    def start_config(self) -> dict[str, Any] | None:
        return {"family": "hf-continuous"}  # the start only loads the model; each run makes its own cache

    def start(self, cell: "CellView", model: "ResolvedModel") -> Any:
        lm = cell.precision.load(str(model.path), cell.device)
        lm.eval()
        return lm

    def reset_cache(self, handle: Any) -> bool | None:
        # Nothing outlives a run: each run makes its own manager and paged cache and destroys them
        # (``persistent_manager`` stays False, so none is cached on the model for the next run).
        return None

    def eval_target(self, handle: Any, model: "ResolvedModel") -> EvalTarget:
        from transformers import AutoTokenizer

        return EvalTarget(kind="hf", model=handle, tokenizer=AutoTokenizer.from_pretrained(model.path))

    def stop(self, handle: Any) -> None:
        import gc

        del handle
        gc.collect()

    def cb_config(self, seed: int) -> Any:
        """The ``ContinuousBatchingConfig`` of a run: every size explicit."""
        from transformers import ContinuousBatchingConfig

        return ContinuousBatchingConfig(num_blocks=self.num_blocks, page_size=self.block_size,
                                        max_batch_tokens=self.max_batch_tokens,
                                        max_requests_per_batch=self.max_requests_per_batch, seed=seed)

    def run(self, handle: Any, cell: "CellView", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
        import copy

        from transformers.generation.continuous_batching.utils import WorkloadHints

        lm = handle
        gen = copy.deepcopy(lm.generation_config)
        gen.do_sample, gen.num_beams, gen.eos_token_id = False, 1, -1
        gen.max_new_tokens = max(r.output_tokens for r in requests)
        hints = WorkloadHints(max_prompt_length=max(len(r.prompt_token_ids) for r in requests),
                              max_generated_length=gen.max_new_tokens, num_requests=len(requests))
        times: list[list[float]] = [[] for _ in requests]
        results: dict[int, tuple[Any, float]] = {}
        config = self.cb_config(cell.seed)
        with lm.continuous_batching_context_manager(generation_config=gen, continuous_batching_config=config,
                                                    workload_hints=hints, block=True, timeout=60) as mgr:
            info = self._kv_info(mgr) | {"attn_implementation": lm.config._attn_implementation}
            t0 = time.perf_counter()
            for i, r in enumerate(requests):
                mgr.add_request(r.prompt_token_ids, request_id=str(i), max_new_tokens=r.output_tokens,
                                streaming=True, eos_token_id=-1)
            while len(results) < len(requests):
                out = mgr.get_result(timeout=1.0)
                now = time.perf_counter() - t0
                if out is None:  # nothing yet; stop waiting only once the loop is gone and its queue drained
                    if not mgr.is_running() or mgr.background_thread_status.fatal_error is not None:
                        break
                    continue
                i = int(out.request_id)
                times[i].extend([now] * (len(out.generated_tokens) - len(times[i])))
                if out.is_finished():
                    results[i] = (out, now)
            duration = time.perf_counter() - t0
        missing = [i for i in range(len(requests)) if i not in results]
        if missing:
            raise RuntimeError(f"HF continuous batching stopped without completing requests {missing}")
        traces = []
        for i, r in enumerate(requests):
            out, done = results[i]
            tt = times[i][:len(out.generated_tokens)]
            traces.append(RequestTrace(prompt_tokens=len(r.prompt_token_ids), output_tokens=len(out.generated_tokens),
                                       submitted_s=0.0, first_token_s=tt[0] if tt else None, finished_s=done,
                                       token_times_s=tt, error=out.error))
        return ServeRun(traces=traces, duration_s=duration, info=info)

    def _kv_info(self, mgr: Any) -> dict[str, Any]:
        """The cache the manager actually allocated, and the sizes it runs with."""
        cache = mgr.batch_processor.cache
        return {"max_requests_per_batch": mgr.continuous_batching_config.max_requests_per_batch,
                "max_batch_tokens": cache.max_batch_tokens, "kv_cache_blocks": cache.num_blocks,
                "kv_block_size": self.block_size, "kv_cache_tokens": cache.num_blocks * self.block_size,
                "kv_cache_dtype": str(cache.dtype), "kv_cache_space_bytes": cache.num_sectors * cache.bytes_per_sector,
                "kv_requested": {"num_blocks": self.num_blocks, "block_size": self.block_size},
                "prefix_sharing": cache.use_prefix_sharing}
