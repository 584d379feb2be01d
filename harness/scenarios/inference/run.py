"""Inference cells: what a precision costs in accuracy and buys in memory and speed, beside its reference.

Metrics (each cell, same model, tokens and machine as the suite's reference precision):

- storage: ``weight_bytes`` (parameters, buffers and quantization constants as stored),
  ``quant_bits_per_param`` of the target layers (quantized Linears, or all Linears but the head
  when dense) with ``quant_bits_per_param_analytic`` and ``_residual`` (see :mod:`harness.measure.storage`);
- accuracy: ``perplexity`` (protocol in info), ``kl_ref_nats`` and ``top1_agreement_ref_ratio``
  against the reference (see :mod:`harness.scenarios.inference.reference`), ``text2sql_ex_ratio`` and
  ``text2sql_em_ratio`` (see :mod:`harness.measure.text2sql`), ``output_length_ratio_ref`` (completion
  tokens over the reference's); each with its 95 % interval (``ci_low``, ``ci_high``, ``ci_method``;
  :mod:`harness.measure.intervals`): perplexity by a bootstrap over windows, KL and top-1 over
  positions, EX and EM by Wilson, the length ratio over questions. The paired differences to the
  reference, ``perplexity_delta_ref`` (same windows) and ``text2sql_ex_delta_ref`` (same questions),
  carry a paired-bootstrap interval; the reference cell records them too, as it does its zero KL:
  0 with a zero-width interval, so a nonzero value there says the reference is not reproducible;
  with an ``eval`` block, lm-evaluation-harness tasks scored on the very model object loaded here,
  ``lmeval_<task>_<metric>`` with lm-eval's stderr and ``..._delta_ref`` on the same documents
  (:mod:`harness.measure.lmeval`);
- speed: ``load_s`` (and ``quantize_s`` with ``quantize_peak_rss_bytes`` for calibrated methods,
  whether made now or reused), ``prefill_tok_s_bs{B}`` and ``decode_tok_s_bs{B}`` per batch size
  (greedy with the KV cache, median over repeats after warm-up; :mod:`harness.scenarios.inference.speed`);
- memory: ``peak_rss_bytes`` over load, perplexity and speed (on CUDA the worker adds the allocator's and NVML's peaks and the energy: :mod:`harness.measure.gpu`).

``info.kernels`` names the Linear classes and the profiled operators that did the matmuls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.measure import intervals
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
    ref_dir, ref_made = reference.ensure(cell, model, _reference_protocol(s))
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
    metrics |= _accuracy_metrics(cell, ppl, reference.load_perplexity(ref_dir), dist)
    metrics |= _core_metrics(wb, storage, load_s, rss.peak_bytes) | _quantize_metrics(prepared)
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
    if s.eval is not None:
        from harness.measure import lmeval

        scored = lmeval.evaluate(lm, tok, s.eval)
        eval_metrics, info["lmeval"] = lmeval.metrics(scored, reference.load_lmeval(ref_dir), cell.reference.label)
        metrics |= eval_metrics
    return CellResult(metrics=metrics, info=info)


def _reference_protocol(s: InferenceSettings) -> dict[str, Any]:
    """What the reference outputs depend on: the settings' protocol and the perplexity windows."""
    return s.reference_protocol() | {"stride": s.stride, "max_windows": s.max_windows}


def _ci(units: int, what: str, interval: Callable[[], tuple[float, float]],
        paired: bool = False) -> tuple[float, float, str] | None:
    """``(low, high, method)`` of a bootstrap over ``units`` (None below :data:`intervals.MIN_UNITS`)."""
    if units < intervals.MIN_UNITS:
        return None
    return (*interval(), intervals.bootstrap_method(units, what, paired=paired))


def _wilson(k: int, n: int) -> tuple[float, float, str]:
    return (*intervals.wilson(k, n), intervals.wilson_method(k, n))


def _accuracy_metrics(cell: Cell, ppl: Any, ref_ppl: Any, dist: Any) -> dict[str, Metric]:
    """Perplexity and its paired difference to the reference's, KL and top-1 against the reference,
    each with its 95 % interval. Raises ValueError when the reference scored other windows."""
    assert cell.reference is not None
    label, windows = cell.reference.label, len(ppl.window_nll)
    if ref_ppl.window_tokens != ppl.window_tokens:
        raise ValueError(f"the reference's perplexity windows score {ref_ppl.window_tokens} tokens, this cell's "
                         f"{ppl.window_tokens}: not the same windows, no paired difference")
    delta_ci = _ci(windows, "windows", lambda: intervals.perplexity_delta_bootstrap(
        ppl.window_nll, ref_ppl.window_nll, ppl.window_tokens), paired=True)
    of = f"of {len(dist.kl_window_nats)} windows"
    return {
        "perplexity": metric("perplexity", ppl.value, samples=ppl.window_nll, ci=_ci(windows, "windows", ppl.interval)),
        "perplexity_delta_ref": metric("perplexity_delta_ref", ppl.value - ref_ppl.value, ci=delta_ci, description=(
            f"perplexity minus the reference {label}'s ({ref_ppl.value:.6g}) on the same {windows} windows")),
        "kl_ref_nats": metric("kl_ref_nats", dist.kl_nats, samples=dist.kl_window_nats, description=(
            f"KL(reference {label} || this) per position, mean over {dist.positions} positions; "
            "samples per window"), ci=_ci(dist.positions, f"positions {of}", dist.kl_interval)),
        "top1_agreement_ref_ratio": metric("top1_agreement_ref_ratio", dist.top1_agreement,
                                           ci=_ci(dist.positions, f"positions {of}", dist.top1_interval)),
    }


def _core_metrics(wb: dict[str, int], storage: Any, load_s: float, peak_rss: int) -> dict[str, Metric]:
    """Storage against its formula, load time and peak memory."""
    return {
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
    ref_gens, ref_score = reference.load_generations(ref_dir), reference.load_score(ref_dir)
    if ref_gens is None or ref_score is None or [g.id for g in ref_gens] != [g.id for g in gens]:
        raise ValueError(f"the reference outputs in {ref_dir} hold no Text2SQL completions for the same "
                         f"{len(gens)} questions; delete that folder to have them recomputed")
    n = len(questions)
    ref_tokens = sum(g.tokens for g in ref_gens)
    same = sum(a.sql == b.sql for a, b in zip(gens, ref_gens))
    metrics = {
        "text2sql_ex_ratio": metric("text2sql_ex_ratio", score.execution_accuracy, ci=_wilson(len(score.correct), n),
                                    description=f"execution accuracy on {n} questions"),
        "text2sql_em_ratio": metric("text2sql_em_ratio", score.exact_match, ci=_wilson(len(score.exact), n)),
        "text2sql_ex_delta_ref": _ex_delta(questions, score, ref_score),
        "output_length_ratio_ref": metric(
            "output_length_ratio_ref", sum(g.tokens for g in gens) / ref_tokens if ref_tokens else float("nan"),
            samples=[float(g.tokens) for g in gens], ci=_length_ci(gens, ref_gens)),
    }
    info = {"protocol": text2sql.protocol(s.text2sql, len(questions)), "correct": score.correct,
            "failed_sql": score.failed_sql, "same_sql_as_reference": same,
            "completions": [g.model_dump() for g in gens]}
    return metrics, info


def _ex_delta(questions: list[Any], score: Any, ref_score: Any) -> Metric:
    """EX minus the reference's on the same questions, with a paired bootstrap over the questions."""
    from harness.measure import text2sql

    mine, ref = text2sql.correctness(questions, score.correct), text2sql.correctness(questions, ref_score.correct)
    discordant = sum(a != b for a, b in zip(mine, ref))
    ci = _ci(len(questions), "questions", lambda: intervals.paired_bootstrap(mine, ref), paired=True)
    return metric("text2sql_ex_delta_ref", score.execution_accuracy - ref_score.execution_accuracy,
                  ci=None if ci is None else (ci[0], ci[1], f"{ci[2]}; {discordant} questions differ"),
                  description=f"EX minus the reference's ({ref_score.execution_accuracy:.4g}) on the same "
                              f"{len(questions)} questions")


def _length_ci(gens: list[Any], ref_gens: list[Any]) -> tuple[float, float, str] | None:
    """Interval of Σ tokens / Σ reference tokens by a bootstrap over the questions (None when a
    reference completion is empty, where a resample could divide by zero)."""
    rows = [(g.tokens, r.tokens) for g, r in zip(gens, ref_gens)]
    if min(r for _, r in rows) <= 0:
        return None
    return _ci(len(rows), "questions", lambda: intervals.bootstrap(rows, lambda x: x[:, 0].sum() / x[:, 1].sum()))
