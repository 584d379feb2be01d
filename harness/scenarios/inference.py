"""Inference cells: what a precision costs in accuracy and buys in memory and speed, beside its reference.

Metrics (each cell, same model, tokens and machine as the suite's reference precision):

- storage: ``weight_bytes`` (parameters, buffers and quantization constants as stored),
  ``quant_bits_per_param`` of the target layers (quantized Linears, or all Linears but the head
  when dense) with ``quant_bits_per_param_analytic`` and ``_residual`` (see :mod:`harness.storage`);
- accuracy: ``perplexity`` (protocol in info), ``kl_ref_nats`` and ``top1_agreement_ref_ratio``
  against the reference (see :mod:`harness.reference`), ``text2sql_ex_ratio`` and ``text2sql_em_ratio``
  (see :mod:`harness.text2sql`), ``output_length_ratio_ref`` (completion tokens over the reference's);
- speed: ``load_s`` (and ``quantize_s`` with ``quantize_peak_rss_bytes`` for calibrated methods,
  whether made now or reused), ``prefill_tok_s_bs{B}`` and ``decode_tok_s_bs{B}`` per batch size
  (greedy with the KV cache, median over repeats after warm-up);
- memory: ``peak_rss_bytes`` over load, perplexity and speed (``cuda_max_allocated_bytes`` on CUDA).

``info.kernels`` names the Linear classes and the profiled operators that did the matmuls.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from harness.paths import CorpusName
from harness.records import CellResult, Metric
from harness.specbase import StrictModel
from harness.text2sql import Text2SQLSettings

if TYPE_CHECKING:
    from harness.cell import Cell
    from harness.models import ResolvedModel


class InferenceSettings(StrictModel):
    """The suite's ``inference:`` block: precisions to evaluate and how."""

    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to run (default: all).")
    reference: str | None = Field(default=None, description="Precision the others are compared with "
                                                            "(default: the first precision of this block).")
    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus for perplexity, KL and prompts.")
    seq_len: int = Field(default=256, ge=8, description="Perplexity and KL window length in tokens.")
    stride: int = Field(default=256, ge=1, description="Perplexity window start spacing in tokens.")
    max_windows: int = Field(default=4, ge=1, description="Perplexity windows evaluated at most.")
    kl_windows: int = Field(default=2, ge=1, description="Non-overlapping windows on which KL and top-1 agreement "
                                                         "with the reference are computed.")
    text2sql: Text2SQLSettings | None = Field(default_factory=Text2SQLSettings,
                                              description="Text2SQL execution accuracy (null to leave it out).")
    batch_sizes: list[int] = Field(default=[1], min_length=1, description="Batch sizes of the speed measurements.")
    prompt_tokens: int = Field(default=64, ge=1, description="Prompt length for prefill speed.")
    decode_tokens: int = Field(default=32, ge=2, description="Greedy tokens generated for decode speed.")
    repeats: int = Field(default=3, ge=1, description="Timed repeats (the median is reported, samples kept).")
    warmup: int = Field(default=1, ge=0, description="Untimed repeats before timing.")

    @model_validator(mode="after")
    def _consistent(self) -> "InferenceSettings":
        if self.stride > self.seq_len:
            raise ValueError(f"stride ({self.stride}) must not exceed seq_len ({self.seq_len})")
        if any(b < 1 for b in self.batch_sizes) or len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"batch_sizes must be distinct positive integers, got {self.batch_sizes}")
        return self

    def reference_protocol(self) -> dict[str, Any]:
        """What the reference outputs depend on (see :func:`harness.reference.ensure`)."""
        return {"corpus": self.corpus, "seq_len": self.seq_len, "kl_windows": self.kl_windows,
                "text2sql": self.text2sql.model_dump(mode="json") if self.text2sql else None}


def _speed(model: Any, ids: list[int], batch: int, s: InferenceSettings, device: str) -> tuple[list[float], list[float]]:
    """Timed prefill (one forward of batch x prompt) and decode (greedy steps with the KV cache), tok/s."""
    import torch

    from harness.measure import Stopwatch

    n = s.prompt_tokens
    span = max(1, (len(ids) - n) // batch)
    prompts = torch.tensor([ids[i * span: i * span + n] for i in range(batch)], device=device)
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
                prefill.append(batch * n / t_pre.seconds)
                decode.append(batch * s.decode_tokens / t_dec.seconds)
    return prefill, decode


def _kernel_label(modules: dict[str, int], ops: list[dict[str, Any]]) -> str:
    quantized = {k: v for k, v in modules.items() if not k.endswith("torch.nn.modules.linear.Linear")}
    cls = max(quantized or modules, key=lambda k: (quantized or modules)[k]).rsplit(".", 1)[-1]
    return f"{cls} / {ops[0]['name']}" if ops else cls


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Prepare and load the cell's precision, then measure storage, accuracy against the reference, and speed."""
    import torch
    from transformers import AutoTokenizer

    from harness import reference, text2sql
    from harness.measure import PeakRSS, linear_kernels, op_census, weight_bytes
    from harness.paths import corpus_ids
    from harness.quality import perplexity
    from harness.storage import storage_report

    s = InferenceSettings.model_validate(cell.settings)
    assert cell.reference is not None, "the planner gives inference cells a reference precision"
    torch.manual_seed(cell.seed)
    device = cell.device
    prepared = cell.precision.prepare(model, cell)
    ref_dir, ref_made = reference.ensure(cell, model, s.reference_protocol())
    tok = AutoTokenizer.from_pretrained(model.path)
    ids = corpus_ids(tok, s.corpus)
    metrics: dict[str, Metric] = {}
    with PeakRSS() as rss:
        start = time.perf_counter()
        lm = cell.precision.load(str(prepared.path), device)
        lm.eval()
        load_s = time.perf_counter() - start
        wb = weight_bytes(lm)  # before the first forward (bnb repacks 4-bit weights on CPU then)
        storage = storage_report(lm, cell.precision)
        modules = linear_kernels(lm)
        ppl = perplexity(lm, ids, seq_len=s.seq_len, stride=s.stride, max_windows=s.max_windows, device=device,
                         protocol={"corpus": s.corpus})
        for b in s.batch_sizes:
            prefill, decode = _speed(lm, ids, b, s, device)
            metrics[f"prefill_tok_s_bs{b}"] = Metric(value=statistics.median(prefill), unit="tok/s", samples=prefill,
                                                     stat="median", description=f"batch {b} x {s.prompt_tokens} tokens")
            metrics[f"decode_tok_s_bs{b}"] = Metric(value=statistics.median(decode), unit="tok/s", samples=decode,
                                                    stat="median", description=f"batch {b}, {s.decode_tokens} greedy steps")
    probe = torch.tensor([ids[: s.prompt_tokens]], device=device)
    with torch.inference_mode():
        ops = op_census(lambda: lm(input_ids=probe), device)
    dist = reference.distance(reference.load_logprobs(ref_dir),
                              reference.window_logprobs(lm, ids, s.seq_len, s.kl_windows, device))
    metrics.update({
        "perplexity": Metric(value=ppl.value, unit="ppl", samples=[float(v) for v in ppl.window_nll], stat="value",
                             description="exp(mean NLL) over scored tokens; samples are per-window mean NLL (nats)"),
        "kl_ref_nats": Metric(value=dist.kl_nats, unit="nats", samples=dist.kl_window_nats, stat="mean",
                              description=f"KL(reference {cell.reference.label} || this) per position, mean over "
                                          f"{dist.positions} positions; samples per window"),
        "top1_agreement_ref_ratio": Metric(value=dist.top1_agreement, unit="ratio",
                                           description="fraction of positions with the reference's argmax token"),
        "weight_bytes": Metric(value=wb["total"], unit="bytes", description="parameters + buffers + quantization "
                                                                            "constants, as stored"),
        "quant_bits_per_param": Metric(value=storage.bits_per_param, unit="bits",
                                       description=f"stored bits per weight of the {storage.layers} target layers"),
        "quant_bits_per_param_analytic": Metric(value=storage.analytic_bits_per_param, unit="bits",
                                                description=storage.formula),
        "quant_bits_per_param_residual": Metric(value=storage.residual_bits_per_param, unit="bits",
                                                description="measured - analytic (per-layer constants, padding)"),
        "load_s": Metric(value=load_s, unit="s"),
        "peak_rss_bytes": Metric(value=rss.peak_bytes, unit="bytes", stat="max",
                                 description="load, perplexity and speed phases of this process"),
    })
    if prepared.made is not None:
        metrics["quantize_s"] = Metric(value=prepared.make_s or 0.0, unit="s",
                                       description=f"making the checkpoint ({'made now' if prepared.made else 'reused'})")
        metrics["quantize_peak_rss_bytes"] = Metric(value=prepared.make_peak_rss_bytes or 0, unit="bytes", stat="max",
                                                    description="peak RSS of the quantizing process")
    if device.startswith("cuda"):
        metrics["cuda_max_allocated_bytes"] = Metric(value=torch.cuda.max_memory_allocated(), unit="bytes", stat="max")
    info: dict[str, Any] = {
        "perplexity_protocol": ppl.protocol, "weight_bytes_parts": wb, "storage": storage.model_dump(),
        "kernels": {"label": _kernel_label(modules, ops), "modules": modules, "ops": ops},
        "reference": {"precision": cell.reference.label, "folder": str(ref_dir), "made": ref_made,
                      "kl_positions": dist.positions},
        "speed": {"batch_sizes": s.batch_sizes, "prompt_tokens": s.prompt_tokens, "decode_tokens": s.decode_tokens,
                  "repeats": s.repeats, "warmup": s.warmup},
    }
    if prepared.made is not None:
        info["checkpoint"] = {"path": str(prepared.path), "key": prepared.key, "cache": "made" if prepared.made else "reused",
                              **prepared.info}
    if s.text2sql is not None:
        questions = text2sql.items(s.text2sql.items)
        gens = text2sql.generate(lm, tok, questions, s.text2sql, device)
        score = text2sql.score(questions, gens)
        ref_gens = reference.load_generations(ref_dir)
        if ref_gens is None or [g.id for g in ref_gens] != [g.id for g in gens]:
            raise ValueError(f"the reference outputs in {ref_dir} hold no Text2SQL completions for the same "
                             f"{len(gens)} questions; delete that folder to have them recomputed")
        ref_tokens = sum(g.tokens for g in ref_gens)
        same = sum(a.sql == b.sql for a, b in zip(gens, ref_gens))
        metrics["text2sql_ex_ratio"] = Metric(value=score.execution_accuracy, unit="ratio",
                                              description=f"execution accuracy on {len(questions)} questions")
        metrics["text2sql_em_ratio"] = Metric(value=score.exact_match, unit="ratio", description="exact match")
        metrics["output_length_ratio_ref"] = Metric(
            value=sum(g.tokens for g in gens) / ref_tokens if ref_tokens else float("nan"), unit="ratio",
            samples=[float(g.tokens) for g in gens],
            description="completion tokens over the reference's on the Text2SQL prompts; samples are per item")
        info["text2sql"] = {"protocol": text2sql.protocol(s.text2sql, len(questions)), "correct": score.correct,
                            "failed_sql": score.failed_sql, "same_sql_as_reference": same,
                            "completions": [g.model_dump() for g in gens]}
    return CellResult(metrics=metrics, info=info)
