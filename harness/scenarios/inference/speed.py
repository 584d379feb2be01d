"""Inference speed: timed prefill (one forward of batch x prompt tokens) and greedy decode with the KV
cache, per batch size, median over ``repeats`` after ``warmup`` untimed repeats (samples kept)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from harness.metrics import metric

if TYPE_CHECKING:
    from harness.results.records import Metric
    from harness.spec.inference import InferenceSettings


def timed_generation(model: Any, ids: list[int], batch: int, s: "InferenceSettings",
                     device: str) -> tuple[list[float], list[float], list[float]]:
    """Prefill and decode throughputs (tok/s) and seconds per decode step of each timed repeat at
    ``batch`` prompts of ``s.prompt_tokens``."""
    import torch

    from harness.measure.trackers import Stopwatch

    n = s.prompt_tokens
    span = max(1, (len(ids) - n) // batch)
    prompts = torch.tensor([ids[i * span: i * span + n] for i in range(batch)], device=device)
    prefill, decode, step_s = [], [], []
    with torch.inference_mode():
        for rep in range(s.warmup + s.repeats):
            with Stopwatch(device) as t_pre:
                out = model(input_ids=prompts, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            with Stopwatch(device) as t_dec:
                for _ in range(s.decode_tokens):
                    out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            if rep >= s.warmup:
                prefill.append(batch * n / t_pre.seconds)
                decode.append(batch * s.decode_tokens / t_dec.seconds)
                step_s.append(t_dec.seconds / s.decode_tokens)
    return prefill, decode, step_s


def speed_metrics(model: Any, ids: list[int], s: "InferenceSettings", device: str) -> dict[str, "Metric"]:
    """``prefill_tok_s_bs{B}`` and ``decode_tok_s_bs{B}`` for every batch size of ``s``, and
    ``decode_step_s`` (seconds per decode step, each timed repeat's mean) at the first batch size."""
    out: dict[str, Metric] = {}
    for b in s.batch_sizes:
        prefill, decode, step_s = timed_generation(model, ids, b, s, device)
        if "decode_step_s" not in out:
            out["decode_step_s"] = metric("decode_step_s", statistics.median(step_s), samples=step_s,
                                          description=f"batch {b}: wall seconds per greedy decode step, each timed "
                                                      f"repeat's {s.decode_tokens} steps / {s.decode_tokens}")
        out[f"prefill_tok_s_bs{b}"] = metric(f"prefill_tok_s_bs{b}", statistics.median(prefill), samples=prefill,
                                             description=f"batch {b} x {s.prompt_tokens} tokens")
        out[f"decode_tok_s_bs{b}"] = metric(f"decode_tok_s_bs{b}", statistics.median(decode), samples=decode,
                                            description=f"batch {b}, {s.decode_tokens} greedy steps")
    return out
