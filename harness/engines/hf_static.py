"""HF transformers ``generate`` with static batching: padded batches of ``batch_size`` requests; the
next batch starts only when the whole batch is done, so a short request waits for the longest.

Every request is submitted at t=0 (offline). A streamer timestamps each decoding step, so TTFT and
inter-token gaps exist for HF too; a request completes when its batch's ``generate`` returns. A
batch generates its longest request's length (EOS suppressed); each request counts its own length.
Each ``generate`` call makes its own KV cache, so nothing carries over from one pass to the next.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from harness.engines import ENGINES, Engine, EvalTarget, Request, RequestTrace, ServeRun

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.base.resolved import ResolvedModel


class _StepClock:
    """A generate() streamer recording when each decoding step's tokens arrive."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@ENGINES.register("hf-static")
class HFStatic(Engine):
    """transformers ``generate`` on fixed, left-padded batches."""

    kind: Literal["hf-static"] = "hf-static"
    batch_size: int = Field(default=8, ge=1, description="Requests per batch.")

    def start(self, cell: "CellView", model: "ResolvedModel") -> Any:
        from transformers import AutoTokenizer

        lm = cell.precision.load(str(model.path), cell.device)
        lm.eval()
        return lm, AutoTokenizer.from_pretrained(model.path)

    def eval_target(self, handle: Any, model: "ResolvedModel") -> EvalTarget:
        lm, tok = handle
        return EvalTarget(kind="hf", model=lm, tokenizer=tok)

    def stop(self, handle: Any) -> None:
        import gc

        del handle
        gc.collect()

    def run(self, handle: Any, cell: "CellView", model: "ResolvedModel", requests: list[Request]) -> ServeRun:
        import torch

        lm, tok = handle
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        traces: list[RequestTrace] = []
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in range(0, len(requests), self.batch_size):
                batch = requests[b:b + self.batch_size]
                width = max(len(r.prompt_token_ids) for r in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, r in enumerate(batch):  # left padding
                    ids[i, width - len(r.prompt_token_ids):] = torch.tensor(r.prompt_token_ids)
                    mask[i, width - len(r.prompt_token_ids):] = 1
                longest = max(r.output_tokens for r in batch)
                clock = _StepClock(cell.device)
                out = lm.generate(input_ids=ids.to(cell.device), attention_mask=mask.to(cell.device),
                                  max_new_tokens=longest, min_new_tokens=longest, do_sample=False,
                                  pad_token_id=pad, streamer=clock)
                done = time.perf_counter()
                generated = out.shape[1] - width
                for r in batch:
                    n = min(r.output_tokens, generated)
                    times = [t - t0 for t in clock.times[:n]]
                    traces.append(RequestTrace(prompt_tokens=len(r.prompt_token_ids), output_tokens=n, submitted_s=0.0,
                                               first_token_s=times[0] if times else None, finished_s=done - t0,
                                               token_times_s=times))
        duration = time.perf_counter() - t0
        return ServeRun(traces=traces, duration_s=duration,
                        info={"batch_size": self.batch_size, "batches": -(-len(requests) // self.batch_size)})
