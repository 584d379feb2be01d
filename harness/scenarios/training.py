"""Training cells: a few optimizer steps of a training mode on a fixed, learnable batch.

The gradients are first checked on a model of their own against a float64 dense reference
(:mod:`harness.gradcheck`, :func:`check_gradients`); then the memory cap (if any) applies and the
model to train is loaded fresh (bitsandbytes repacks 4-bit weights for CPU inference at the first
no-grad forward, after which LoRA silently loses gradients). Warm-up steps (untimed) and measured
steps run, and one more untimed step counts the saved activations and the allocator's per-phase peaks.

Metrics: ``loss`` (last step; samples = every step), ``step_time_ms`` (median), ``train_tok_s``,
``mfu_ratio`` where the device's peak FLOP/s is known, and the memory anatomy counted from the tensors:
``params_bytes`` (quantization constants included), ``grads_bytes``, ``optimizer_bytes``,
``activation_saved_bytes`` (storages saved for backward per micro-batch, parameters excluded),
``anatomy_total_bytes``, each beside its ``*_analytic`` prediction (:mod:`harness.estimate`, from the
model's config alone) and ``*_residual`` (measured - predicted); ``{forward,backward,optimizer,step}_peak_alloc_bytes``
(allocated above the step's start), ``peak_rss_bytes``. With a parallel engine the ranks run under
torchrun and the bytes are per rank (``samples`` = every rank), predicted with the engine's ZeRO stage.
An out-of-memory failure is recorded as ``oom`` with the settings that caused it and the prediction.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field, model_validator

from harness.axes import ParallelConfig, TrainingModeConfig
from harness.optimizers import OptimizerName
from harness.paths import CorpusName
from harness.records import CellResult, Metric
from harness.specbase import StrictModel

if TYPE_CHECKING:
    from harness.cell import Cell
    from harness.estimate import Estimate, EstimateInput
    from harness.host import Host
    from harness.models import ResolvedModel


class StepSettings(StrictModel):
    """How one training cell steps: the scalar settings of one point of the ``training:`` block."""

    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus the batch is cut from.")
    batch_size: int = Field(default=4, ge=1, description="Sequences per micro-batch (per rank).")
    seq_len: int = Field(default=128, ge=8, description="Tokens per sequence.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    warmup_steps: int = Field(default=1, ge=0, description="Untimed steps before measuring.")
    steps: int = Field(default=4, ge=1, description="Measured optimizer steps.")
    lr: float = Field(default=3e-4, gt=0, description="Learning rate.")
    optimizer: OptimizerName = Field(default="adamw", description="adamw (torch), adamw8bit, paged_adamw, "
                                                                  "paged_adamw8bit (bitsandbytes), sgd.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in backward (non-reentrant).")
    grad_check: bool = Field(default=True, description="Before training, compare the trainable parameters' gradients "
                                                       "with a float64 dense reference; a mismatch fails the cell.")
    memory_cap_gib: float | None = Field(default=None, gt=0, description="Give the cell this much memory, like a device "
                                                                         "of that size (CPU: data segment above what the "
                                                                         "runtime already uses; CUDA: the allocator's share): "
                                                                         "going over it is recorded as an oom.")


CROSSED = ("batch_size", "seq_len", "grad_accum", "gradient_checkpointing", "optimizer")


class TrainingSettings(StrictModel):
    """The suite's ``training:`` block: modes x precisions x parallel engines x every list-valued setting."""

    modes: list[TrainingModeConfig] = Field(min_length=1, description="Training modes (kind: full, lora, qlora).")
    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to train in (default: all).")
    parallel: list[ParallelConfig | None] = Field(
        default_factory=lambda: [None], min_length=1,
        description="Data-parallel engines (kind: ddp, fsdp, deepspeed); null = a single process (the default).")
    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus the batch is cut from.")
    batch_size: int | list[int] = Field(default=4, description="Sequences per micro-batch; a list is crossed.")
    seq_len: int | list[int] = Field(default=128, description="Tokens per sequence; a list is crossed.")
    grad_accum: int | list[int] = Field(default=1, description="Micro-batches per optimizer step; a list is crossed.")
    gradient_checkpointing: bool | list[bool] = Field(default=False, description="Checkpointing on/off; a list is crossed.")
    optimizer: OptimizerName | list[OptimizerName] = Field(default="adamw", description="Optimizer(s); a list is crossed.")
    warmup_steps: int = Field(default=1, ge=0, description="Untimed steps before measuring.")
    steps: int = Field(default=4, ge=1, description="Measured optimizer steps.")
    lr: float = Field(default=3e-4, gt=0, description="Learning rate.")
    grad_check: bool = Field(default=True, description="Check gradients against a float64 dense reference first.")
    memory_cap_gib: float | None = Field(default=None, gt=0, description="Memory cap of each cell (see StepSettings).")

    @model_validator(mode="after")
    def _valid_points(self) -> "TrainingSettings":
        for key in CROSSED:
            value = getattr(self, key)
            if isinstance(value, list):
                if not value:
                    raise ValueError(f"{key}: an empty list crosses to no cells; give at least one value")
                repeated = sorted({str(v) for v in value if value.count(v) > 1})
                if repeated:
                    raise ValueError(f"{key}: repeated values {', '.join(repeated)} would give the same cells twice")
        for point in self.points():
            StepSettings.model_validate(point)  # each crossed value obeys the scalar bounds
        return self

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the list-valued settings, as scalar StepSettings mappings."""
        base = self.model_dump(mode="json", exclude={"modes", "precisions", "parallel", *CROSSED})
        axes = [[(k, v) for v in (getattr(self, k) if isinstance(getattr(self, k), list) else [getattr(self, k)])]
                for k in CROSSED]
        return [base | dict(combo) for combo in itertools.product(*axes)]

    def varied(self) -> list[str]:
        """The crossed settings with more than one value (they name the cells)."""
        return [k for k in CROSSED if isinstance(getattr(self, k), list) and len(getattr(self, k)) > 1]


def point_label(point: dict[str, Any], varied: list[str]) -> str:
    """Cell-id suffix naming a point's varied settings: ``bs8``, ``seq256``, ``ga4``, ``gc``/``nogc``, optimizer."""
    short = {"batch_size": "bs{}", "seq_len": "seq{}", "grad_accum": "ga{}"}
    parts = []
    for k in varied:
        v = point[k]
        if k == "gradient_checkpointing":
            parts.append("gc" if v else "nogc")
        elif k == "optimizer":
            parts.append(str(v).replace("_", ""))
        else:
            parts.append(short[k].format(v))
    return "-".join(parts)


def supports(cell: "Cell", host: "Host") -> str | None:
    """Why a training cell's step settings cannot run on ``host`` (a skip reason), or None."""
    from harness.optimizers import requires

    s = StepSettings.model_validate(cell.settings)
    if s.memory_cap_gib is not None and cell.parallel is not None:
        return "memory_cap_gib caps one process; it is not applied to the ranks of a parallel engine"
    package = requires(s.optimizer)
    if package is not None and not host.has(package):
        return f"optimizer {s.optimizer} needs {package}, which is not installed (pip install {package})"
    return None


ANATOMY = ("trainable_params", "params_bytes", "grads_bytes", "optimizer_bytes", "activation_saved_bytes",
           "anatomy_total_bytes")


def estimate_input(cell: "Cell", s: StepSettings) -> "EstimateInput":
    """The estimator's view of a training cell (what ``harness estimate`` would be asked)."""
    from harness.estimate import EstimateInput
    from harness.precisions import DTYPES

    p, mode = cell.precision, cell.mode
    dtype = {v: k for k, v in DTYPES.items()}[p.dtype]
    quant = p.kind if p.kind in ("int8", "nf4", "fp4") else "none"
    lora = {"lora_r": mode.r, "lora_targets": list(mode.targets)} if hasattr(mode, "targets") else {}
    par = cell.parallel
    return EstimateInput(dtype=dtype, train=mode.kind, optimizer=s.optimizer, quant=quant,
                         double_quant=bool(getattr(p, "double_quant", False)), batch=s.batch_size, seq=s.seq_len,
                         gradient_checkpointing=s.gradient_checkpointing, zero_stage=par.zero_stage if par else 0,
                         world_size=par.nproc if par else 1, **lora)


def predict(cell: "Cell", model_path: str, s: StepSettings) -> "Estimate":
    """The estimator's prediction for this cell, from the model's config alone."""
    from transformers import AutoConfig

    from harness.estimate import ModelShape, estimate

    shape = ModelShape.from_config(AutoConfig.from_pretrained(model_path), model_path)
    return estimate(shape, estimate_input(cell, s))


def _side_by_side(name: str, measured: float, predicted: float | None, unit: str, **kw: Any) -> dict[str, Metric]:
    out = {name: Metric(value=measured, unit=unit, **kw)}
    if predicted is not None:
        out[f"{name}_analytic"] = Metric(value=predicted, unit=unit, source="analytic")
        out[f"{name}_residual"] = Metric(value=measured - predicted, unit=unit,
                                         description="measured - analytic")
    return out


def _predicted_metrics(est: "Estimate", per_rank: bool) -> dict[str, float | None]:
    from harness.estimate import rank_shares

    stage, world = (est.inputs.zero_stage, est.inputs.world_size) if per_rank else (0, 1)
    shares = rank_shares(est.params_bytes, est.grads_bytes, est.optimizer_bytes, est.optimizer_replicated_bytes,
                         stage, world)
    acts = est.activation_bytes
    return {"trainable_params": est.trainable_params, **shares, "activation_saved_bytes": acts,
            "anatomy_total_bytes": sum(shares.values()) + (acts or 0)}


def _failure_context(s: StepSettings, est: "Estimate | None") -> str:
    where = (f"batch_size={s.batch_size}, seq_len={s.seq_len}, grad_accum={s.grad_accum}, "
             f"gradient_checkpointing={s.gradient_checkpointing}, optimizer={s.optimizer}")
    if s.memory_cap_gib is not None:
        where += f", under a memory cap of {s.memory_cap_gib:g} GiB"
    if est is not None:
        where += f" (predicted {est.per_rank_bytes / 2**30:.2f} GiB of training state)"
    return where


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Check gradients, train a freshly loaded model, and account for its memory (see the module doc)."""
    from harness.measure import cap_memory
    from harness.records import CellFailure

    s = StepSettings.model_validate(cell.settings)
    assert cell.mode is not None, "training cells carry a mode"
    prepared = cell.precision.prepare(model, cell)
    est = predict(cell, str(model.path), s)
    partial = CellResult(metrics={f"{k}_analytic": Metric(value=v, unit="count" if k == "trainable_params" else "bytes",
                                                          source="analytic")
                                  for k, v in _predicted_metrics(est, cell.parallel is not None).items() if v is not None},
                         info={"estimate": est.model_dump(mode="json")})
    cap = None
    if s.memory_cap_gib is not None:
        def cap() -> dict[str, int]:
            partial.info["memory_cap"] = cap_memory(s.memory_cap_gib, cell.device)
            return partial.info["memory_cap"]
    try:
        if cell.parallel is not None:
            result = _run_ranks(cell, s, est)
        else:
            result = _run_single(cell, str(prepared.path), s, est, cap)
    except BaseException as exc:
        from harness.gradcheck import GradientCheckError
        from harness.worker import is_oom

        if isinstance(exc, GradientCheckError):
            raise CellFailure(str(exc), partial=partial) from exc
        if is_oom(exc):
            raise CellFailure(f"out of memory at {_failure_context(s, est)}: {type(exc).__name__}: {exc}",
                              partial=partial, oom=True) from exc
        raise CellFailure(f"{type(exc).__name__}: {exc}", partial=partial) from exc
    result.info["estimate"] = est.model_dump(mode="json")
    return result


def load_for_training(cell: "Cell", path: str, s: StepSettings, dtype: Any = None) -> Any:
    """The cell's model from ``path``, prepared by its mode and in training mode: in the cell's precision,
    or (``dtype``, for the gradient check's reference) dense in that torch dtype without checkpointing."""
    mode = cell.mode
    assert mode is not None
    if dtype is None:
        base = cell.precision.load(path, cell.device)
    else:
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, device_map=cell.device)
    lm = mode.prepare(base, gradient_checkpointing=s.gradient_checkpointing if dtype is None else False)
    lm.train()
    return lm


def step_batches(model_path: str, s: StepSettings, device: str, offset: int = 0) -> list[Any]:
    """The ``grad_accum`` micro-batches of one step (``batch_size x seq_len`` token ids each, distinct
    slices of the corpus from token ``offset``; a rank passes its own offset); the same ones every step,
    so the loss can fall. Raises ValueError with the token counts if the corpus is too short."""
    import torch
    from transformers import AutoTokenizer

    from harness.paths import corpus_ids

    ids = corpus_ids(AutoTokenizer.from_pretrained(model_path), s.corpus)
    need = s.batch_size * s.seq_len * s.grad_accum
    if len(ids) < offset + need:
        raise ValueError(f"corpus {s.corpus!r} has {len(ids)} tokens; grad_accum={s.grad_accum} x batch_size="
                         f"{s.batch_size} x seq_len={s.seq_len} needs {need} (from token {offset})")
    flat = torch.tensor(ids[offset:offset + need], device=device)
    return list(flat.view(s.grad_accum, s.batch_size, s.seq_len).unbind(0))


def wake_lora(model: Any, seed: int) -> Any:
    """Give every LoRA B matrix seeded values of scale 0.02 (peft starts them at zero, where every A
    gradient is exactly zero); for the gradient check only, never for the model that trains."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float32).to(p.dtype) * 0.02)
    return model


def check_gradients(cell: "Cell", path: str, s: StepSettings, batch: Any) -> dict[str, Any]:
    """Load the cell's model to train exactly as the cell does, give LoRA's B matrices seeded non-zero
    values (at peft's zero init every A gradient is exactly zero, which would check nothing), and compare
    its gradients on ``batch`` with the float64 reference (:func:`harness.gradcheck.check`). Everything is
    freed before returning; raises GradientCheckError on a mismatch."""
    import gc

    import torch

    from harness import gradcheck

    lm = wake_lora(load_for_training(cell, path, s), cell.seed)
    twin = gradcheck.reference_model(lm, lambda: load_for_training(cell, path, s, dtype=torch.float64))
    try:
        return gradcheck.check(lm, twin, batch, cell.precision.dtype)
    finally:
        del lm, twin
        gc.collect()


def _run_single(cell: "Cell", path: str, s: StepSettings, est: "Estimate",
                cap: Callable[[], dict[str, int]] | None) -> CellResult:
    import torch

    from harness import optimizers
    from harness.anatomy import PhasePeaks, SavedActivations, logical_numel, param_bytes, tensor_bytes
    from harness.host import peak_flops
    from harness.measure import PeakRSS, Stopwatch

    device = cell.device
    batches = step_batches(path, s, device)
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
        measured_params = param_bytes(lm.parameters())
        trainable = [p for p in lm.parameters() if p.requires_grad]
        optimizer, opt_info = optimizers.build(s.optimizer, trainable, s.lr, device)
        losses: list[float] = []
        step_ms: list[float] = []
        acts = grads_bytes = 0

        def step(count: bool = False, peaks: PhasePeaks | None = None) -> float:
            """One optimizer step over the micro-batches. With ``count``, saved activations are counted per
            micro-batch (a fresh counter each: a later micro-batch reuses the freed storages of the one
            before); counting adds hook overhead, so timed steps do not count."""
            nonlocal grads_bytes, acts
            phase = peaks.phase if peaks else (lambda name: contextlib.nullcontext())
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for batch in batches:
                counter = SavedActivations(lm) if count else None
                with phase("forward"), (counter.hooks() if counter else contextlib.nullcontext()):
                    loss = lm(input_ids=batch, labels=batch).loss
                with phase("backward"):
                    (loss / s.grad_accum).backward()
                total += loss.item() / s.grad_accum
                acts = max(acts, counter.bytes if counter else 0)
            grads_bytes = tensor_bytes(p.grad for p in trainable)
            with phase("optimizer"):
                optimizer.step()
            return total

        for i in range(s.warmup_steps + s.steps):
            with Stopwatch(device) as t:
                losses.append(step())
            if i >= s.warmup_steps:
                step_ms.append(t.seconds * 1000)
        with PhasePeaks(device) as peaks:  # one more step, untimed: allocator peaks and saved activations
            step(count=True, peaks=peaks)
        opt_bytes = tensor_bytes(optimizers.state_tensors(optimizer))
        opt_info["paged_in_effect"] = optimizers.paged_state(optimizer)
        no_grad = sum(1 for p in trainable if p.grad is None)
    tokens_per_step = s.batch_size * s.seq_len * s.grad_accum
    step_median = statistics.median(step_ms)
    predicted = _predicted_metrics(est, per_rank=False)
    n_trainable = sum(p.numel() for p in trainable)
    measured = {"trainable_params": n_trainable, "params_bytes": measured_params,
                "grads_bytes": grads_bytes, "optimizer_bytes": opt_bytes, "activation_saved_bytes": acts}
    measured["anatomy_total_bytes"] = sum(v for k, v in measured.items() if k != "trainable_params")
    metrics = _step_metrics(losses, step_ms, tokens_per_step, load_s)
    for name in ANATOMY:
        unit = "count" if name == "trainable_params" else "bytes"
        metrics |= _side_by_side(name, measured[name], predicted[name], unit)
    metrics["activation_saved_bytes"].stat = "max"
    n_params = sum(logical_numel(p) for p in lm.parameters())
    metrics |= _side_by_side("params", n_params, est.params, "count",
                             description="parameters as the model defines them (4-bit weights unpacked)")
    for phase in ("forward", "backward", "optimizer", "step"):
        if phase in peaks.bytes:
            metrics[f"{phase}_peak_alloc_bytes"] = Metric(
                value=peaks.bytes[phase], unit="bytes", stat="max",
                description=f"peak bytes allocated above the step's start during {phase} (profiler allocation events)")
    for phase, value in peaks.cuda_max_allocated.items():
        metrics[f"cuda_{phase}_max_allocated_bytes"] = Metric(
            value=value, unit="bytes", stat="max", description=f"torch.cuda.max_memory_allocated over {phase} (reset at its start)")
    for phase, value in peaks.cuda_max_reserved.items():
        metrics[f"cuda_{phase}_max_reserved_bytes"] = Metric(value=value, unit="bytes", stat="max")
    metrics["peak_rss_bytes"] = Metric(value=rss.peak_bytes, unit="bytes", stat="max",
                                       description="sampled resident set of the training (the gradient check excluded)")
    flops = peak_flops(device, cell.precision.dtype)
    if flops is not None:
        # forward 2N, input gradients 2N, weight gradients 2 x trainable: 6N for full fine-tuning
        achieved = (4 * n_params + 2 * n_trainable) * tokens_per_step / (step_median / 1000)
        metrics["mfu_ratio"] = Metric(value=achieved / flops, unit="ratio", stat="median",
                                      description="(4 x params + 2 x trainable) x tokens/s over the device's peak FLOP/s")
    info = {
        "loss_decreased": losses[-1] < losses[0],
        "params_without_grad": no_grad,
        "tokens_per_step": tokens_per_step,
        "steps": {"warmup": s.warmup_steps, "measured": s.steps, "grad_accum": s.grad_accum},
        "optimizer": opt_info,
        "grad_check": grad_info,
        "mfu": "device peak FLOP/s unknown" if flops is None else {"peak_flops": flops},
    }
    if cap_info is not None:
        info["memory_cap"] = cap_info
    return CellResult(metrics=metrics, info=info)


def _step_metrics(losses: list[float], step_ms: list[float], tokens_per_step: int, load_s: float | None) -> dict[str, Metric]:
    step_median = statistics.median(step_ms)
    out = {
        "loss": Metric(value=losses[-1], unit="nats", samples=losses, stat="value",
                       description="mean token cross-entropy of the last step; samples: every step, warm-up first"),
        "step_time_ms": Metric(value=step_median, unit="ms", samples=step_ms, stat="median"),
        "train_tok_s": Metric(value=tokens_per_step / (step_median / 1000), unit="tok/s", stat="median"),
    }
    if load_s is not None:
        out["load_s"] = Metric(value=load_s, unit="s")
    return out


def _run_ranks(cell: "Cell", s: StepSettings, est: "Estimate") -> CellResult:
    """Run the cell's ranks under torchrun; bytes per rank (value: the largest, samples: every rank)."""
    import tempfile
    from pathlib import Path

    from harness.distributed import launch
    from harness.measure import PeakRSS

    assert cell.parallel is not None
    with PeakRSS() as rss, tempfile.TemporaryDirectory(prefix="harness-ranks-") as tmp:
        ranks = launch(cell, Path(tmp), timeout_s=max(30.0, 0.9 * cell.timeout_s - 10))  # report before the runner kills
    r0 = ranks[0]
    world = len(ranks)
    tokens_per_step = s.batch_size * s.seq_len * s.grad_accum * world
    metrics = _step_metrics(r0["losses"], r0["step_ms"], tokens_per_step, None)
    predicted = _predicted_metrics(est, per_rank=True)
    parts = ("params_bytes", "grads_bytes", "optimizer_bytes", "activation_saved_bytes")
    for name in ANATOMY:
        if name == "anatomy_total_bytes":
            values = [sum(r[k] for k in parts) for r in ranks if all(r.get(k) is not None for k in parts)]
        else:
            values = [r[name] for r in ranks if r.get(name) is not None]
        if len(values) < len(ranks):  # an engine that keeps these in its own buffers (DeepSpeed) reports None
            continue
        unit = "count" if name == "trainable_params" else "bytes"
        metrics |= _side_by_side(name, max(values), predicted[name], unit, samples=values, stat="max")
    at_rest = [r["params_bytes_at_rest"] for r in ranks if r.get("params_bytes_at_rest") is not None]
    if at_rest:
        metrics["params_bytes_at_rest"] = Metric(value=max(at_rest), unit="bytes", samples=at_rest, stat="max",
                                                 description="parameter bytes per rank between steps (sharded by FSDP)")
    metrics["params"] = Metric(value=r0["params"], unit="count")
    metrics["peak_rss_bytes"] = Metric(value=rss.peak_bytes, unit="bytes", stat="max",
                                       description="all ranks together (the cell's process tree)")
    info = {
        "loss_decreased": r0["losses"][-1] < r0["losses"][0],
        "params_without_grad": None if any(r.get("params_without_grad") is None for r in ranks)
        else max(r["params_without_grad"] for r in ranks),
        "tokens_per_step": tokens_per_step,
        "world_size": world,
        "zero_stage": cell.parallel.zero_stage,
        "steps": {"warmup": s.warmup_steps, "measured": s.steps, "grad_accum": s.grad_accum},
        "optimizer": r0.get("optimizer_info"),
        "grad_check": {"skipped": "not run under a parallel engine (run the cell single-process to check gradients)"},
        "ranks": ranks,
    }
    return CellResult(metrics=metrics, info=info)
