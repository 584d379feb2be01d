"""The estimator's side of a training cell: what ``harness estimate`` predicts for it, beside what it measures.

:func:`predict` asks :mod:`harness.analytic.estimate` from the model's config alone (the cell's
precision, mode, optimizer, batch and parallel engine, each answering for itself);
:func:`predicted` gives the anatomy metrics' predictions (per rank under ZeRO), and :func:`side_by_side`
records a measurement with its ``_analytic`` prediction and ``_residual`` (measured - predicted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.metrics import metric

if TYPE_CHECKING:
    from harness.analytic.estimate import Estimate, EstimateInput
    from harness.results.records import Metric
    from harness.spec.cell import Cell
    from harness.spec.training import StepSettings

ANATOMY = ("trainable_params", "params_bytes", "grads_bytes", "optimizer_bytes", "activation_saved_bytes",
           "anatomy_total_bytes")


def estimate_input(cell: "Cell", s: "StepSettings") -> "EstimateInput":
    """The estimator's view of a training cell (what ``harness estimate`` would be asked)."""
    from harness.analytic.estimate import EstimateInput

    p, mode, par = cell.precision, cell.mode, cell.parallel
    assert mode is not None
    quant, quant_config = p.estimator_quant()
    return EstimateInput(dtype=p.dense_dtype, train=mode.kind, optimizer=s.optimizer, quant=quant,
                         quant_config=quant_config, double_quant=bool(quant_config.get("double_quant", False)),
                         batch=s.batch_size, seq=s.seq_len,
                         gradient_checkpointing=s.gradient_checkpointing, zero_stage=par.zero_stage if par else 0,
                         world_size=par.world_size if par else 1, **mode.estimator_fields())


def predict(cell: "Cell", model_path: str, s: "StepSettings") -> "Estimate":
    """The estimator's prediction for this cell, from the model's config alone."""
    from transformers import AutoConfig

    from harness.analytic.estimate import estimate
    from harness.analytic.shape import ModelShape

    shape = ModelShape.from_config(AutoConfig.from_pretrained(model_path), model_path)
    return estimate(shape, estimate_input(cell, s))


def predicted(est: "Estimate", per_rank: bool) -> dict[str, float | None]:
    """The anatomy's predictions by metric name: one rank's ZeRO share when ``per_rank``, else the whole."""
    from harness.analytic.estimate import rank_shares

    stage, world = (est.inputs.zero_stage, est.inputs.world_size) if per_rank else (0, 1)
    shares = rank_shares(est.params_bytes, est.grads_bytes, est.optimizer_bytes, est.optimizer_replicated_bytes,
                         stage, world)
    acts = est.activation_bytes
    return {"trainable_params": est.trainable_params, **shares, "activation_saved_bytes": acts,
            "anatomy_total_bytes": sum(shares.values()) + (acts or 0)}


def predicted_metrics(est: "Estimate", per_rank: bool) -> dict[str, "Metric"]:
    """The ``*_analytic`` anatomy metrics alone (what a failed cell keeps)."""
    return {f"{k}_analytic": metric(f"{k}_analytic", v) for k, v in predicted(est, per_rank).items() if v is not None}


def side_by_side(name: str, measured: float, prediction: float | None, **kw: Any) -> dict[str, "Metric"]:
    """``name`` measured, with its ``_analytic`` prediction and ``_residual`` when there is one."""
    out = {name: metric(name, measured, **kw)}
    if prediction is not None:
        out[f"{name}_analytic"] = metric(f"{name}_analytic", prediction)
        out[f"{name}_residual"] = metric(f"{name}_residual", measured - prediction)
    return out
