"""Training cells: a few optimizer steps of a training mode on a fixed, learnable batch.

Warm-up steps run first and are not timed. Metrics: ``loss`` (last step; samples = every step),
``step_time_ms`` (median of measured steps), ``train_tok_s``, and the memory anatomy counted from the
tensors themselves: ``params_bytes``, ``grads_bytes``, ``optimizer_bytes``, ``activation_saved_bytes``
(storages saved for backward, parameters excluded), plus ``trainable_params`` and ``peak_rss_bytes``.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from harness.axes import TrainingModeConfig
from harness.paths import CorpusName
from harness.records import CellResult, Metric
from harness.specbase import StrictModel

if TYPE_CHECKING:
    from harness.cell import Cell
    from harness.models import ResolvedModel


class StepSettings(StrictModel):
    """How a training cell steps (the settings every cell of the ``training:`` block shares)."""

    corpus: CorpusName = Field(default="plain_english", description="Shipped corpus the batch is cut from.")
    batch_size: int = Field(default=4, ge=1, description="Sequences per micro-batch.")
    seq_len: int = Field(default=128, ge=8, description="Tokens per sequence.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    warmup_steps: int = Field(default=1, ge=0, description="Untimed steps before measuring.")
    steps: int = Field(default=4, ge=1, description="Measured optimizer steps.")
    lr: float = Field(default=3e-4, gt=0, description="Learning rate.")
    optimizer: Literal["adamw"] = Field(default="adamw", description="Optimizer.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in backward.")


class TrainingSettings(StepSettings):
    """The suite's ``training:`` block: modes to cross with precisions, and the step settings."""

    modes: list[TrainingModeConfig] = Field(min_length=1, description="Training modes (kind: full, lora, ...).")
    precisions: list[str] | None = Field(default=None, description="Names of suite precisions to train in (default: all).")


def _storage_bytes(tensors: Any) -> int:
    seen, total = set(), 0
    for t in tensors:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
    return total


class SavedActivations:
    """Counts storages autograd saves for backward, excluding parameters (each storage once)."""

    def __init__(self, model: Any) -> None:
        self._params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self._seen: set[int] = set()
        self.bytes = 0

    def pack(self, t: Any) -> Any:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in self._params and ptr not in self._seen and t.device.type != "meta":
            self._seen.add(ptr)
            self.bytes += t.untyped_storage().nbytes()
        return t


def run(cell: "Cell", model: "ResolvedModel") -> CellResult:
    """Train a freshly loaded model for warm-up + measured steps and account for its memory."""
    import torch
    from transformers import AutoTokenizer

    from harness.measure import PeakRSS, Stopwatch
    from harness.paths import corpus_ids

    s = StepSettings.model_validate(cell.settings)
    mode = cell.mode
    assert mode is not None, "training cells carry a mode"
    torch.manual_seed(cell.seed)
    device = cell.device
    prepared = cell.precision.prepare(model, cell)
    with PeakRSS() as rss:
        start = time.perf_counter()
        # Always a fresh load: bitsandbytes repacks 4-bit weights for CPU inference at the first no-grad
        # forward and LoRA then silently loses gradients; a fresh model never ran inference.
        lm = mode.prepare(cell.precision.load(str(prepared.path), device), gradient_checkpointing=s.gradient_checkpointing)
        lm.train()
        load_s = time.perf_counter() - start
        tok = AutoTokenizer.from_pretrained(model.path)
        ids = corpus_ids(tok, s.corpus)
        need = s.batch_size * s.seq_len
        if len(ids) < need:
            raise ValueError(f"corpus {s.corpus!r} has {len(ids)} tokens; the batch needs {need}")
        batch = torch.tensor(ids[:need], device=device).view(s.batch_size, s.seq_len)
        trainable = [p for p in lm.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=s.lr)
        losses, step_ms, acts = [], [], 0
        for step in range(s.warmup_steps + s.steps):
            optimizer.zero_grad(set_to_none=True)
            counter = SavedActivations(lm)
            with Stopwatch(device) as t:
                total = 0.0
                for _ in range(s.grad_accum):
                    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda x: x):
                        loss = lm(input_ids=batch, labels=batch).loss
                    (loss / s.grad_accum).backward()
                    total += loss.item() / s.grad_accum
                optimizer.step()
            losses.append(total)
            acts = max(acts, counter.bytes // s.grad_accum)
            if step >= s.warmup_steps:
                step_ms.append(t.seconds * 1000)
        grads = [p.grad for p in trainable if p.grad is not None]
        opt_tensors = [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
        params_bytes = _storage_bytes(list(lm.parameters()))
    tokens_per_step = s.batch_size * s.seq_len * s.grad_accum
    step_median = statistics.median(step_ms)
    metrics = {
        "loss": Metric(value=losses[-1], unit="nats", samples=losses, stat="value",
                       description="mean token cross-entropy of the last step; samples: every step, warm-up first"),
        "step_time_ms": Metric(value=step_median, unit="ms", samples=step_ms, stat="median"),
        "train_tok_s": Metric(value=tokens_per_step / (step_median / 1000), unit="tok/s", stat="median"),
        "load_s": Metric(value=load_s, unit="s"),
        "trainable_params": Metric(value=sum(p.numel() for p in trainable), unit="count"),
        "params": Metric(value=sum(p.numel() for p in lm.parameters()), unit="count"),
        "params_bytes": Metric(value=params_bytes, unit="bytes", description="all parameter storages, once each"),
        "grads_bytes": Metric(value=_storage_bytes(grads), unit="bytes"),
        "optimizer_bytes": Metric(value=_storage_bytes(opt_tensors), unit="bytes"),
        "activation_saved_bytes": Metric(value=acts, unit="bytes", stat="max",
                                         description="storages saved for backward per micro-batch, parameters excluded"),
        "peak_rss_bytes": Metric(value=rss.peak_bytes, unit="bytes", stat="max"),
    }
    info = {
        "loss_decreased": losses[-1] < losses[0],
        "params_without_grad": sum(1 for p in trainable if p.grad is None),
        "tokens_per_step": tokens_per_step,
        "steps": {"warmup": s.warmup_steps, "measured": s.steps, "grad_accum": s.grad_accum},
    }
    return CellResult(metrics=metrics, info=info)
