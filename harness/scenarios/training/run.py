"""Training cells: a few optimizer steps of a training mode on a fixed, learnable batch.

The gradients are first checked on a model of their own against a float64 dense reference
(:mod:`harness.measure.gradcheck`, :mod:`harness.scenarios.training.gradients`); then the memory cap
(if any) applies and the model to train is loaded fresh (bitsandbytes repacks 4-bit weights for CPU
inference at the first no-grad forward, after which LoRA silently loses gradients). The one step loop
(:mod:`harness.scenarios.training.loop`) runs warm-up steps (untimed), measured steps, and one more
untimed step that counts the memory anatomy and the allocator's per-phase peaks; single process
(:mod:`~harness.scenarios.training.single`) or as the ranks of a parallel engine under torchrun
(:mod:`~harness.scenarios.training.distributed`).

Metrics: ``loss`` (last step; samples = every step), ``step_time_ms`` (median), ``train_tok_s``,
``mfu_ratio`` where the device's peak FLOP/s is known, and the memory anatomy counted from the tensors:
``params_bytes`` (quantization constants included), ``grads_bytes``, ``optimizer_bytes``,
``activation_saved_bytes`` (storages saved for backward per micro-batch, parameters excluded),
``anatomy_total_bytes``, each beside its ``*_analytic`` prediction (:mod:`harness.analytic.estimate`,
from the model's config alone) and ``*_residual`` (measured - predicted);
``{forward,backward,optimizer,step}_peak_alloc_bytes`` (allocated above the step's start),
``peak_rss_bytes``. With a parallel engine the bytes are per rank (``samples`` = every rank), predicted
with the engine's ZeRO stage. An out-of-memory failure is recorded as ``oom`` with the settings that
caused it and the prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.results.records import CellResult
from harness.spec.training import StepSettings

if TYPE_CHECKING:
    from harness.analytic.estimate import Estimate
    from harness.base.resolved import ResolvedModel
    from harness.spec.cell import Cell


def _failure_context(s: StepSettings, est: "Estimate | None") -> str:
    where = (f"batch_size={s.batch_size}, seq_len={s.seq_len}, grad_accum={s.grad_accum}, "
             f"gradient_checkpointing={s.gradient_checkpointing}, optimizer={s.optimizer}")
    if s.memory_cap_gib is not None:
        where += f", under a memory cap of {s.memory_cap_gib:g} GiB"
    if est is not None:
        where += f" (predicted {est.per_rank_bytes / 2**30:.2f} GiB of training state)"
    return where


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Check gradients, train a freshly loaded model, and account for its memory (see the module doc).

    Raises :class:`~harness.results.records.CellFailure` carrying the predictions on any failure
    (``oom`` set when it ran out of memory, with the settings that caused it)."""
    from harness.base.protocol import is_oom
    from harness.measure.gradcheck import GradientCheckError
    from harness.measure.trackers import cap_memory
    from harness.results.records import CellFailure
    from harness.scenarios.training.distributed import run_ranks
    from harness.scenarios.training.predict import predict, predicted_metrics
    from harness.scenarios.training.single import run_single

    s = StepSettings.model_validate(cell.settings)
    assert cell.mode is not None, "training cells carry a mode"
    prepared = cell.precision.prepare(model, cell)
    est = predict(cell, str(model.path), s)
    partial = CellResult(metrics=predicted_metrics(est, cell.parallel is not None),
                         info={"estimate": est.model_dump(mode="json")})

    def cap() -> dict[str, int]:
        partial.info["memory_cap"] = cap_memory(s.memory_cap_gib, cell.device)  # type: ignore[arg-type]
        return partial.info["memory_cap"]

    try:
        if cell.parallel is not None:
            result = run_ranks(cell, s, est)
        else:
            result = run_single(cell, str(prepared.path), s, est, cap if s.memory_cap_gib is not None else None)
    except BaseException as exc:
        if isinstance(exc, GradientCheckError):
            raise CellFailure(str(exc), partial=partial) from exc
        if is_oom(exc):
            raise CellFailure(f"out of memory at {_failure_context(s, est)}: {type(exc).__name__}: {exc}",
                              partial=partial, oom=True) from exc
        raise CellFailure(f"{type(exc).__name__}: {exc}", partial=partial) from exc
    result.info["estimate"] = est.model_dump(mode="json")
    return result
