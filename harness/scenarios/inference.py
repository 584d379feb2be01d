"""Inference cells: what a precision costs in accuracy and buys in memory and speed.

Metrics: ``perplexity`` (protocol in info), ``prefill_tok_s`` and ``decode_tok_s`` (greedy, KV cache,
median over repeats after warm-up), ``load_s``, ``weight_bytes`` (as stored, quantization constants
included), ``peak_rss_bytes`` (and ``cuda_max_allocated_bytes`` on CUDA). ``info.kernels`` names the
Linear classes that ran.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from harness.paths import CorpusName
from harness.records import CellResult, Metric
from harness.specbase import StrictModel

if TYPE_CHECKING:
    from harness.cell import Cell
    from harness.models import ResolvedModel


class InferenceSettings(StrictModel):
    """The suite's ``inference:`` block: precisions to evaluate and how."""

    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to run (default: all).")
    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus for perplexity and prompts.")
    seq_len: int = Field(default=256, ge=8, description="Perplexity window length in tokens.")
    stride: int = Field(default=256, ge=1, description="Perplexity window start spacing in tokens.")
    max_windows: int = Field(default=4, ge=1, description="Perplexity windows evaluated at most.")
    batch_size: int = Field(default=1, ge=1, description="Sequences per forward pass for the speed measurements.")
    prompt_tokens: int = Field(default=64, ge=1, description="Prompt length for prefill speed.")
    decode_tokens: int = Field(default=32, ge=2, description="Greedy tokens generated for decode speed.")
    repeats: int = Field(default=3, ge=1, description="Timed repeats (the median is reported, samples kept).")
    warmup: int = Field(default=1, ge=0, description="Untimed repeats before timing.")

    @model_validator(mode="after")
    def _stride_fits(self) -> "InferenceSettings":
        if self.stride > self.seq_len:
            raise ValueError(f"stride ({self.stride}) must not exceed seq_len ({self.seq_len})")
        return self


def _speed(model, ids: list[int], s: InferenceSettings, device: str) -> tuple[list[float], list[float]]:
    """Timed prefill (one forward of batch x prompt) and decode (greedy steps with the KV cache)."""
    import torch

    from harness.measure import Stopwatch

    n = s.prompt_tokens
    span = max(1, (len(ids) - n) // s.batch_size)
    prompts = torch.tensor([ids[i * span: i * span + n] for i in range(s.batch_size)], device=device)
    prefill, decode = [], []
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
                prefill.append(s.batch_size * n / t_pre.seconds)
                decode.append(s.batch_size * s.decode_tokens / t_dec.seconds)
    return prefill, decode


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Load the model in the cell's precision and measure quality, memory and speed."""
    import torch
    from transformers import AutoTokenizer

    from harness.measure import PeakRSS, linear_kernels, weight_bytes
    from harness.paths import corpus_path
    from harness.quality import perplexity

    s = InferenceSettings.model_validate(cell.settings)
    torch.manual_seed(cell.seed)
    device = cell.device
    with PeakRSS() as rss:
        start = time.perf_counter()
        lm = cell.precision.load(str(model.path), device)
        lm.eval()
        load_s = time.perf_counter() - start
        wb = weight_bytes(lm)  # before the first forward (bnb repacks 4-bit weights on CPU then)
        kernels = linear_kernels(lm)
        tok = AutoTokenizer.from_pretrained(model.path)
        text = corpus_path(s.corpus).read_text()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ppl = perplexity(lm, ids, seq_len=s.seq_len, stride=s.stride, max_windows=s.max_windows, device=device,
                         protocol={"corpus": s.corpus})
        prefill, decode = _speed(lm, ids, s, device)
    metrics = {
        "perplexity": Metric(value=ppl.value, unit="ppl", samples=[float(v) for v in ppl.window_nll], stat="value",
                             description="exp(mean NLL) over scored tokens; samples are per-window mean NLL (nats)"),
        "prefill_tok_s": Metric(value=statistics.median(prefill), unit="tok/s", samples=prefill, stat="median"),
        "decode_tok_s": Metric(value=statistics.median(decode), unit="tok/s", samples=decode, stat="median"),
        "load_s": Metric(value=load_s, unit="s"),
        "weight_bytes": Metric(value=wb["total"], unit="bytes",
                               description="parameters + buffers + quantization constants, as stored"),
        "peak_rss_bytes": Metric(value=rss.peak_bytes, unit="bytes", stat="max"),
    }
    if device.startswith("cuda"):
        metrics["cuda_max_allocated_bytes"] = Metric(value=torch.cuda.max_memory_allocated(), unit="bytes", stat="max")
    info = {"perplexity_protocol": ppl.protocol, "kernels": kernels, "weight_bytes_parts": wb,
            "speed": {"batch_size": s.batch_size, "prompt_tokens": s.prompt_tokens,
                      "decode_tokens": s.decode_tokens, "repeats": s.repeats, "warmup": s.warmup}}
    return CellResult(metrics=metrics, info=info)
