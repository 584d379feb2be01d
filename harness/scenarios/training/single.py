"""A training cell in one process: the gradient check, then the step loop under memory tracking, then
the metrics (the anatomy beside its prediction, per-phase allocator peaks, MFU where the peak is known)."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any, Callable

from harness.metrics import metric
from harness.results.records import CellResult
from harness.scenarios.training.predict import ANATOMY, predicted, side_by_side

if TYPE_CHECKING:
    from harness.analytic.estimate import Estimate
    from harness.results.records import Metric
    from harness.scenarios.training.loop import Trained
    from harness.spec.cell import Cell
    from harness.spec.training import StepSettings


def run_single(cell: "Cell", path: str, s: "StepSettings", est: "Estimate",
               cap: Callable[[], dict[str, int]] | None) -> CellResult:
    """Check gradients on a model of their own, then (under the memory cap, if any) load the model to
    train fresh and run the step loop; returns the cell's metrics and facts."""
    import torch

    from harness.base.host import peak_flops
    from harness.measure.tensors import logical_numel
    from harness.measure.trackers import PeakRSS
    from harness.scenarios.training.gradients import check_gradients
    from harness.scenarios.training.loop import (
        load_for_training,
        make_stepper,
        step_batches,
        train,
    )
    from harness.training.optimizers import paged_state

    batches = step_batches(path, s, cell.device)
    grad_info: dict[str, Any] = {"skipped": "grad_check: false"}
    if s.grad_check:  # on a model of its own, before the memory cap and the memory tracking
        grad_info = check_gradients(cell, path, s, batches[0][:1])
    cap_info = cap() if cap is not None else None
    torch.manual_seed(cell.seed)
    # Sampled RSS only: the process' lifetime peak (ru_maxrss) would include the gradient check's model.
    with PeakRSS(lifetime_peak=False) as rss:
        start = time.perf_counter()
        # A fresh load: bitsandbytes repacks 4-bit weights for CPU inference at the first no-grad forward,
        # after which LoRA silently loses gradients; this model never runs inference.
        lm = load_for_training(cell, path, s)
        load_s = time.perf_counter() - start
        stepper = make_stepper(cell, lm, s, cell.device)
        trained = train(stepper, batches, s, cell.device, peaks=True)
        stepper.info["paged_in_effect"] = paged_state(stepper.optimizer)
    n_params = sum(logical_numel(p) for p in lm.parameters())
    n_trainable = sum(p.numel() for p in stepper.trainable)
    metrics = step_metrics(trained.losses, trained.step_ms, s.tokens_per_step) | {"load_s": metric("load_s", load_s)}
    metrics |= anatomy_metrics(trained, n_trainable, est)
    metrics |= side_by_side("params", n_params, est.params)
    metrics |= peak_metrics(trained.peaks)
    metrics["peak_rss_bytes"] = metric("peak_rss_bytes", rss.peak_bytes,
                                       description="sampled resident set of the training (the gradient check excluded)")
    metrics |= step_energy(s.warmup_steps)
    flops = peak_flops(cell.device, cell.precision.dtype)
    if flops is not None:
        from harness.analytic.flops import mfu_ratio

        step_s = statistics.median(trained.step_ms) / 1000
        metrics["mfu_ratio"] = metric("mfu_ratio", mfu_ratio(n_params, n_trainable, s.tokens_per_step, step_s, flops),
                                      samples=[mfu_ratio(n_params, n_trainable, s.tokens_per_step, ms / 1000, flops)
                                               for ms in trained.step_ms])
    info = {
        "loss_decreased": trained.losses[-1] < trained.losses[0],
        "params_without_grad": trained.params_without_grad,
        "tokens_per_step": s.tokens_per_step,
        "steps": {"warmup": s.warmup_steps, "measured": s.steps, "grad_accum": s.grad_accum},
        "optimizer": stepper.info,
        "grad_check": grad_info,
        "mfu": "device peak FLOP/s unknown" if flops is None else {"peak_flops": flops},
    }
    if cap_info is not None:
        info["memory_cap"] = cap_info
    return CellResult(metrics=metrics, info=info)


def step_metrics(losses: list[float], step_ms: list[float], tokens_per_step: int) -> dict[str, "Metric"]:
    """``loss`` (last step; samples: every step), ``step_time_ms`` (median) and ``train_tok_s`` (tokens
    per step over the median step time; samples: every measured step's rate)."""
    step_median = statistics.median(step_ms)
    return {
        "loss": metric("loss", losses[-1], samples=losses),
        "step_time_ms": metric("step_time_ms", step_median, samples=step_ms),
        "train_tok_s": metric("train_tok_s", tokens_per_step / (step_median / 1000),
                              samples=[tokens_per_step / (ms / 1000) for ms in step_ms]),
    }


def step_energy(warmup_steps: int) -> dict[str, "Metric"]:
    """``energy_j_per_step``: the GPU's energy over each measured step (warm-up steps left out), where
    NVML's counter was read (:mod:`harness.measure.gpu`); nothing otherwise."""
    from harness.measure.gpu import region_energies
    from harness.scenarios.training.loop import STEP_REGION

    steps = region_energies(STEP_REGION)[warmup_steps:]
    if not steps or any(e is None for e in steps):
        return {}
    joules = [float(e) for e in steps if e is not None]
    return {"energy_j_per_step": metric("energy_j_per_step", sum(joules) / len(joules), samples=joules)}


def anatomy_metrics(trained: "Trained", trainable: int, est: "Estimate") -> dict[str, "Metric"]:
    """The memory anatomy counted by the step loop, each beside its prediction and residual."""
    measured = {"trainable_params": trainable, "params_bytes": trained.params_bytes, "grads_bytes": trained.grads_bytes,
                "optimizer_bytes": trained.optimizer_bytes, "activation_saved_bytes": trained.activation_saved_bytes}
    measured["anatomy_total_bytes"] = sum(v for k, v in measured.items() if k != "trainable_params")  # type: ignore[misc]
    prediction = predicted(est, per_rank=False)
    out: dict[str, Metric] = {}
    for name in ANATOMY:
        out |= side_by_side(name, measured[name], prediction[name])  # type: ignore[arg-type]
    return out


def peak_metrics(peaks: Any) -> dict[str, "Metric"]:
    """The counting step's allocator peaks: per phase above the step's start, and CUDA's own peaks."""
    out: dict[str, Metric] = {}
    for phase in ("forward", "backward", "optimizer", "step"):
        if phase in peaks.bytes:
            out[f"{phase}_peak_alloc_bytes"] = metric(
                f"{phase}_peak_alloc_bytes", peaks.bytes[phase],
                description=f"peak bytes allocated above the step's start during {phase} (profiler allocation events)")
    for phase, value in peaks.cuda_max_allocated.items():
        out[f"cuda_{phase}_max_allocated_bytes"] = metric(f"cuda_{phase}_max_allocated_bytes", value)
    for phase, value in peaks.cuda_max_reserved.items():
        out[f"cuda_{phase}_max_reserved_bytes"] = metric(f"cuda_{phase}_max_reserved_bytes", value)
    return out
