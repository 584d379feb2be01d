"""Inference cells: what a precision costs in accuracy and buys in memory and speed, beside its reference.

Metrics (each cell, same model, tokens and machine as the suite's reference precision):

- storage: ``weight_bytes`` (parameters, buffers and quantization constants as stored),
  ``quant_bits_per_param`` of the target layers (quantized Linears, or all Linears but the head
  when dense) with ``quant_bits_per_param_analytic`` and ``_residual`` (see :mod:`harness.measure.storage`);
- accuracy: ``perplexity`` (protocol in info), ``kl_ref_nats`` and ``top1_agreement_ref_ratio``
  against the reference (see :mod:`harness.scenarios.inference.reference`), ``text2sql_ex_ratio`` and
  ``text2sql_em_ratio`` (see :mod:`harness.measure.text2sql`), ``output_length_ratio_ref`` (completion
  tokens over the reference's);
- speed: ``load_s`` (and ``quantize_s`` with ``quantize_peak_rss_bytes`` for calibrated methods,
  whether made now or reused), ``prefill_tok_s_bs{B}`` and ``decode_tok_s_bs{B}`` per batch size
  (greedy with the KV cache, median over repeats after warm-up; :mod:`harness.scenarios.inference.speed`);
- memory: ``peak_rss_bytes`` over load, perplexity and speed (``cuda_max_allocated_bytes`` on CUDA).

``info.kernels`` names the Linear classes and the profiled operators that did the matmuls.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from harness.metrics import metric
from harness.results.records import CellResult, Metric
from harness.spec.inference import InferenceSettings

if TYPE_CHECKING:
    from harness.base.resolved import ResolvedModel
    from harness.precisions import Prepared
    from harness.spec.cell import Cell


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Prepare and load the cell's precision, then measure storage, accuracy against the reference, and speed."""
    import torch
    from transformers import AutoTokenizer

    from harness.base.paths import corpus_ids
    from harness.measure.kernels import kernel_report, op_census
    from harness.measure.quality import perplexity
    from harness.measure.storage import storage_report
    from harness.measure.tensors import weight_bytes
    from harness.measure.trackers import PeakRSS
    from harness.scenarios.inference import reference
    from harness.scenarios.inference.speed import speed_metrics

    s = InferenceSettings.model_validate(cell.settings)
    assert cell.reference is not None, "the planner gives inference cells a reference precision"
    torch.manual_seed(cell.seed)
    device = cell.device
    prepared = cell.precision.prepare(model, cell)
    ref_dir, ref_made = reference.ensure(cell, model, s.reference_protocol())
    tok = AutoTokenizer.from_pretrained(model.path)
    ids = corpus_ids(tok, s.corpus)
    with PeakRSS() as rss:
        start = time.perf_counter()
        lm = cell.precision.load(str(prepared.path), device)
        lm.eval()
        load_s = time.perf_counter() - start
        wb = weight_bytes(lm)  # before the first forward (bnb repacks 4-bit weights on CPU then)
        storage = storage_report(lm, cell.precision)
        ppl = perplexity(lm, ids, seq_len=s.seq_len, stride=s.stride, max_windows=s.max_windows, device=device,
                         protocol={"corpus": s.corpus})
        metrics = speed_metrics(lm, ids, s, device)
    probe = torch.tensor([ids[: s.prompt_tokens]], device=device)
    with torch.inference_mode():
        ops = op_census(lambda: lm(input_ids=probe), device)
    dist = reference.distance(reference.load_logprobs(ref_dir),
                              reference.window_logprobs(lm, ids, s.seq_len, s.kl_windows, device))
    metrics |= _core_metrics(cell, ppl, dist, wb, storage, load_s, rss.peak_bytes) | _quantize_metrics(prepared)
    if device.startswith("cuda"):
        metrics["cuda_max_allocated_bytes"] = metric("cuda_max_allocated_bytes", torch.cuda.max_memory_allocated())
    info: dict[str, Any] = {
        "perplexity_protocol": ppl.protocol, "weight_bytes_parts": wb, "storage": storage.model_dump(),
        "kernels": kernel_report(lm, ops),
        "reference": {"precision": cell.reference.label, "folder": str(ref_dir), "made": ref_made,
                      "kl_positions": dist.positions},
        "speed": {"batch_sizes": s.batch_sizes, "prompt_tokens": s.prompt_tokens, "decode_tokens": s.decode_tokens,
                  "repeats": s.repeats, "warmup": s.warmup},
    }
    if prepared.made is not None:
        info["checkpoint"] = {"path": str(prepared.path), "key": prepared.key, "cache": "made" if prepared.made else "reused",
                              **prepared.info}
    if s.text2sql is not None:
        text2sql_metrics, info["text2sql"] = _text2sql(lm, tok, s, device, ref_dir)
        metrics |= text2sql_metrics
    return CellResult(metrics=metrics, info=info)


def _core_metrics(cell: "Cell", ppl: Any, dist: Any, wb: dict[str, int], storage: Any, load_s: float,
                  peak_rss: int) -> dict[str, Metric]:
    """Accuracy against the reference, storage against its formula, load time and peak memory."""
    assert cell.reference is not None
    return {
        "perplexity": metric("perplexity", ppl.value, samples=ppl.window_nll),
        "kl_ref_nats": metric("kl_ref_nats", dist.kl_nats, samples=dist.kl_window_nats, description=(
            f"KL(reference {cell.reference.label} || this) per position, mean over {dist.positions} positions; "
            "samples per window")),
        "top1_agreement_ref_ratio": metric("top1_agreement_ref_ratio", dist.top1_agreement),
        "weight_bytes": metric("weight_bytes", wb["total"]),
        "quant_bits_per_param": metric("quant_bits_per_param", storage.bits_per_param,
                                       description=f"stored bits per weight of the {storage.layers} target layers"),
        "quant_bits_per_param_analytic": metric("quant_bits_per_param_analytic", storage.analytic_bits_per_param,
                                                description=storage.formula),
        "quant_bits_per_param_residual": metric("quant_bits_per_param_residual", storage.residual_bits_per_param,
                                                description="measured - analytic (per-layer constants, padding)"),
        "load_s": metric("load_s", load_s),
        "peak_rss_bytes": metric("peak_rss_bytes", peak_rss, description="load, perplexity and speed phases of this process"),
    }


def _quantize_metrics(prepared: "Prepared") -> dict[str, Metric]:
    """What making a calibrated checkpoint cost (made now or reused); nothing for other methods."""
    if prepared.made is None:
        return {}
    return {"quantize_s": metric("quantize_s", prepared.make_s or 0.0,
                                 description=f"making the checkpoint ({'made now' if prepared.made else 'reused'})"),
            "quantize_peak_rss_bytes": metric("quantize_peak_rss_bytes", prepared.make_peak_rss_bytes or 0)}


def _text2sql(lm: Any, tok: Any, s: InferenceSettings, device: str, ref_dir: Any) -> tuple[dict[str, Metric], dict]:
    """Text2SQL execution accuracy and exact match, and the completions' length against the reference's."""
    from harness.measure import text2sql
    from harness.scenarios.inference import reference

    assert s.text2sql is not None
    questions = text2sql.items(s.text2sql.items)
    gens = text2sql.generate(lm, tok, questions, s.text2sql, device)
    score = text2sql.score(questions, gens)
    ref_gens = reference.load_generations(ref_dir)
    if ref_gens is None or [g.id for g in ref_gens] != [g.id for g in gens]:
        raise ValueError(f"the reference outputs in {ref_dir} hold no Text2SQL completions for the same "
                         f"{len(gens)} questions; delete that folder to have them recomputed")
    ref_tokens = sum(g.tokens for g in ref_gens)
    same = sum(a.sql == b.sql for a, b in zip(gens, ref_gens))
    metrics = {
        "text2sql_ex_ratio": metric("text2sql_ex_ratio", score.execution_accuracy,
                                    description=f"execution accuracy on {len(questions)} questions"),
        "text2sql_em_ratio": metric("text2sql_em_ratio", score.exact_match),
        "output_length_ratio_ref": metric("output_length_ratio_ref",
                                          sum(g.tokens for g in gens) / ref_tokens if ref_tokens else float("nan"),
                                          samples=[float(g.tokens) for g in gens]),
    }
    info = {"protocol": text2sql.protocol(s.text2sql, len(questions)), "correct": score.correct,
            "failed_sql": score.failed_sql, "same_sql_as_reference": same,
            "completions": [g.model_dump() for g in gens]}
    return metrics, info
