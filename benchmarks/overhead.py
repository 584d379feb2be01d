"""Benchmark of the harness's own overhead: the output throughput the harness measures against the bare
framework call, on the same engine start, in one process, interleaved.

For each engine (vLLM continuous batching: ``LLM.generate``; HF static batching: ``generate`` on the
same padded batches), the serving cell of the suite is started once; then ``--pairs`` pairs run, the
order alternating (bare first, then harness first, ...), the prefix cache emptied before each pass,
after one warm-up pass of each. Harness throughput is what a record says (``output_tok_s`` of
:func:`harness.measure.servemetrics.summarize_passes` over the engine's traced pass); bare throughput
is generated tokens over the call's wall time. The figure is the ratio of medians with its 95 %
bootstrap interval over the pairs. Target: at least 0.97. Run on an idle machine::

    python benchmarks/overhead.py suites/default.yaml --precision bf16 --pairs 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable


def _bare_vllm(llm: Any, requests: list[Any]) -> float:
    from vllm import SamplingParams

    params = [SamplingParams(max_tokens=r.output_tokens, min_tokens=r.output_tokens, ignore_eos=True, temperature=0.0)
              for r in requests]
    t0 = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": r.prompt_token_ids} for r in requests], params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    return sum(len(o.outputs[0].token_ids) for o in outs) / seconds


def _bare_hf(handle: Any, requests: list[Any], batch_size: int, device: str) -> float:
    import torch

    lm, tok = handle
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tokens = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(requests), batch_size):
            batch = requests[b:b + batch_size]
            width = max(len(r.prompt_token_ids) for r in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, r in enumerate(batch):
                ids[i, width - len(r.prompt_token_ids):] = torch.tensor(r.prompt_token_ids)
                mask[i, width - len(r.prompt_token_ids):] = 1
            longest = max(r.output_tokens for r in batch)
            out = lm.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=longest,
                              min_new_tokens=longest, do_sample=False, pad_token_id=pad)
            generated = out.shape[1] - width
            tokens += sum(min(r.output_tokens, generated) for r in batch)
    return tokens / (time.perf_counter() - t0)


def measure(cell: Any, pairs: int) -> dict[str, Any]:
    """Interleaved bare and harness passes on one start of ``cell``'s engine (see the module docstring)."""
    import numpy as np
    from transformers import AutoTokenizer

    from harness.measure.intervals import bootstrap
    from harness.measure.servemetrics import summarize_passes

    model = cell.model.resolve()
    tok = AutoTokenizer.from_pretrained(model.path)
    requests = cell.workload.requests(tok)
    model = cell.precision.prepare(model, cell).on(model)
    engine = cell.engine
    handle = engine.start(cell, model)
    try:
        if engine.kind.startswith("vllm"):
            bare: Callable[[], float] = lambda: _bare_vllm(handle, requests)  # noqa: E731
        else:
            bare = lambda: _bare_hf(handle, requests, engine.batch_size, cell.device)  # noqa: E731

        def harness() -> float:
            run = engine.run(handle, cell, model, requests)
            return summarize_passes([(run.traces, run.duration_s)], None)["output_tok_s"].value

        for fn in (bare, harness):  # warm-up
            engine.reset_cache(handle)
            fn()
        b, h = [], []
        for i in range(pairs):
            for name in (("bare", "harness") if i % 2 == 0 else ("harness", "bare")):
                engine.reset_cache(handle)
                (b if name == "bare" else h).append(bare() if name == "bare" else harness())
    finally:
        engine.stop(handle)
    units = np.column_stack([h, b])
    low, high = bootstrap(units, lambda u: float(np.median(u[:, 0]) / np.median(u[:, 1])))
    return {"cell": cell.id, "pairs": pairs, "harness_tok_s": [round(x, 2) for x in h], "bare_tok_s": [round(x, 2) for x in b],
            "ratio": statistics.median(h) / statistics.median(b), "ratio_ci95": [low, high],
            "bare_spread": (max(b) - min(b)) / statistics.median(b)}


def main(argv: list[str] | None = None) -> int:
    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.pipeline.runner import thread_env
    from harness.spec.suite import load_suite

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--engines", default="vllm-continuous,hf-static")
    ap.add_argument("--pairs", type=int, default=7)
    args = ap.parse_args(argv)
    os.environ.update(thread_env(dict(os.environ)))  # the worker's thread settings
    from harness.measure.contention import pin_threads

    pin_threads()
    p = plan(load_suite(args.suite), Host.detect(), source=str(args.suite))
    out = []
    for kind in args.engines.split(","):
        cell = next(pc.cell for pc in p.runnable if pc.cell.engine is not None and pc.cell.engine.label == kind
                    and pc.cell.precision.label == args.precision)
        out.append(measure(cell, args.pairs))
        print(json.dumps(out[-1]), flush=True)
    return 0 if all(r["ratio_ci95"][0] >= 0.97 for r in out) else 1


if __name__ == "__main__":
    sys.exit(main())
