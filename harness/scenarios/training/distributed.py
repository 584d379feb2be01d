"""A training cell under a parallel engine: its ranks under torchrun (:mod:`harness.scenarios.training.launch`,
each running :mod:`harness.scenarios.training.rank`), and their results as the cell's metrics. Bytes are
per rank: the value is the largest rank's, the samples every rank's, predicted with the engine's ZeRO stage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.metrics import metric
from harness.results.records import CellResult
from harness.scenarios.training.predict import ANATOMY, predicted, side_by_side
from harness.scenarios.training.single import step_metrics

if TYPE_CHECKING:
    from harness.analytic.estimate import Estimate
    from harness.results.records import Metric
    from harness.spec.cell import Cell
    from harness.spec.training import StepSettings

PARTS = ("params_bytes", "grads_bytes", "optimizer_bytes", "activation_saved_bytes")


def run_ranks(cell: "Cell", s: "StepSettings", est: "Estimate") -> CellResult:
    """Run the cell's ranks under torchrun and aggregate what they measured."""
    import tempfile
    from pathlib import Path

    from harness.measure.contention import timed_region
    from harness.measure.trackers import PeakRSS
    from harness.scenarios.training.launch import launch

    assert cell.parallel is not None
    # the ranks time their own steps; the cell's contention is taken over the whole launch (ranks included)
    with PeakRSS() as rss, tempfile.TemporaryDirectory(prefix="harness-ranks-") as tmp, timed_region("ranks"):
        ranks = launch(cell, Path(tmp), timeout_s=max(30.0, 0.9 * cell.timeout_s - 10))  # report before the runner kills
    r0 = ranks[0]
    world = len(ranks)
    tokens_per_step = s.tokens_per_step * world
    metrics = step_metrics(r0["losses"], r0["step_ms"], tokens_per_step) | rank_anatomy(ranks, est)
    metrics["params"] = metric("params", r0["params"])
    metrics["peak_rss_bytes"] = metric("peak_rss_bytes", rss.peak_bytes,
                                       description="all ranks together (the cell's process tree)")
    without = [r.get("params_without_grad") for r in ranks]
    info = {
        "loss_decreased": r0["losses"][-1] < r0["losses"][0],
        "params_without_grad": None if any(v is None for v in without) else max(without),  # type: ignore[type-var]
        "tokens_per_step": tokens_per_step,
        "world_size": world,
        "nodes": cell.parallel.nodes().model_dump(include={"nnodes", "node_rank"}),
        "zero_stage": cell.parallel.zero_stage,
        "steps": {"warmup": s.warmup_steps, "measured": s.steps, "grad_accum": s.grad_accum},
        "optimizer": r0.get("optimizer_info"),
        "grad_check": {"skipped": "not run under a parallel engine (run the cell single-process to check gradients)"},
        "ranks": ranks,
    }
    return CellResult(metrics=metrics, info=info)


def rank_anatomy(ranks: list[dict[str, Any]], est: "Estimate") -> dict[str, "Metric"]:
    """Per-rank anatomy metrics (largest rank; samples every rank) beside one rank's predicted share.
    A quantity some rank could not count (DeepSpeed keeps it in flat buffers) is left out."""
    prediction = predicted(est, per_rank=True)
    out: dict[str, Metric] = {}
    for name in ANATOMY:
        if name == "anatomy_total_bytes":
            values = [sum(r[k] for k in PARTS) for r in ranks if all(r.get(k) is not None for k in PARTS)]
        else:
            values = [r[name] for r in ranks if r.get(name) is not None]
        if len(values) == len(ranks):
            out |= side_by_side(name, max(values), prediction[name], samples=values, stat="max")
    at_rest = [r["params_bytes_at_rest"] for r in ranks if r.get("params_bytes_at_rest") is not None]
    if at_rest:
        out["params_bytes_at_rest"] = metric("params_bytes_at_rest", max(at_rest), samples=at_rest)
    return out
