"""The one training step loop, for a single process and for each rank of a parallel engine.

:func:`train` runs ``warmup_steps`` untimed and ``steps`` timed optimizer steps of ``grad_accum``
micro-batches through a :class:`Stepper`, then **one more, untimed step that counts**: the bytes
autograd saves for backward (per micro-batch, parameters excluded), the parameters right after the
first forward (what the model computes with: FSDP zero2 gathered, zero3 resharded), the gradients
after the last backward, the parameters and optimizer state after the optimizer step and, when asked,
the allocator's per-phase peaks (:class:`~harness.measure.anatomy.PhasePeaks`). Counting adds hook
overhead, so no timed step counts.

A parallel rank passes ``barrier`` (ranks meet before and after each timed step, so a step's time is
the slowest rank's once reduced) and ``reduce`` (losses averaged, step times maxed over ranks).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from harness.base.cellview import CellView
    from harness.spec.training import StepSettings

Reduce = Callable[[float, Literal["mean", "max"]], float]
STEP_REGION = "train-step"  # the timed region of one measured (or warm-up) optimizer step


class Stepper(Protocol):
    """How one process runs an optimizer step.

    ``model`` is what the process calls; ``trainable`` its trainable parameters as the optimizer sees
    them. Per optimizer step: ``zero_grad()``, then for each micro-batch ``with micro(last): ...``
    around the forward and ``backward(loss, last)``, then ``step()``. ``backward`` receives the
    micro-batch's unscaled mean loss and scales it for accumulation itself. ``counts_bytes`` is False
    where the tensors do not show the bytes (DeepSpeed keeps ZeRO state in flat buffers).
    """

    model: Any
    trainable: list[Any]
    optimizer: Any
    info: dict[str, Any]
    counts_bytes: bool

    def zero_grad(self) -> None: ...

    def micro(self, last: bool) -> contextlib.AbstractContextManager[Any]: ...

    def backward(self, loss: Any, last: bool) -> None: ...

    def step(self) -> None: ...


class TorchStepper:
    """A model stepped by a harness optimizer over its trainable parameters: as it is (one process), or
    wrapped by a parallel engine (``wrap``; the optimizer is made after wrapping, since FSDP2 replaces
    parameters with DTensors). A wrapper with ``no_sync`` (DDP) skips the gradient all-reduce on all
    but the last micro-batch."""

    counts_bytes = True

    def __init__(self, model: Any, settings: "StepSettings", device: str, wrap: Callable[[Any, str], Any] | None = None) -> None:
        from harness.training.optimizers import build

        self.model = wrap(model, device) if wrap is not None else model
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError("the model has no trainable parameters" + (" after wrapping" if wrap else ""))
        self.optimizer, self.info = build(settings.optimizer, self.trainable, settings.lr, device)
        self.grad_accum = settings.grad_accum

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def micro(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        no_sync = getattr(self.model, "no_sync", None)
        return no_sync() if no_sync is not None and not last else contextlib.nullcontext()

    def backward(self, loss: Any, last: bool) -> None:
        (loss / self.grad_accum).backward()

    def step(self) -> None:
        self.optimizer.step()


def make_stepper(cell: "CellView", model: Any, settings: "StepSettings", device: str) -> Stepper:
    """The cell's stepper: its parallel engine's own (engines that own the optimizer, e.g. DeepSpeed,
    given the harness' optimizer factory), a :class:`TorchStepper` wrapped by the engine, or a plain one."""
    from harness.training.optimizers import build

    engine = cell.parallel
    if engine is None:
        return TorchStepper(model, settings, device)
    own = getattr(engine, "stepper", None)
    if own is not None:
        return own(model, settings, device, build)
    return TorchStepper(model, settings, device, wrap=engine.wrap)


class Trained(BaseModel):
    """What :func:`train` measured (bytes are None where the stepper cannot count them)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    losses: list[float] = Field(description="mean token cross-entropy per timed-loop step, warm-up first (nats)")
    step_ms: list[float] = Field(description="measured steps only")
    params_bytes: int | None = Field(description="after the counting step's first forward")
    params_bytes_at_rest: int | None = Field(description="after the counting step's optimizer step")
    grads_bytes: int | None
    optimizer_bytes: int | None
    activation_saved_bytes: int = Field(description="max over the counting step's micro-batches")
    params_without_grad: int | None = Field(description="trainable tensors with no gradient after backward")
    peaks: Any = Field(default=None, description="the counting step's PhasePeaks, when asked for")


def _timed_step(stepper: Stepper, batches: list[Any], device: str, barrier: Callable[[], None]) -> tuple[float, float]:
    """One optimizer step; returns (mean loss over micro-batches, seconds)."""
    from harness.measure.trackers import Stopwatch

    stepper.zero_grad()
    total = 0.0
    barrier()
    with Stopwatch(device, name=STEP_REGION) as watch:
        for m, batch in enumerate(batches):
            last = m == len(batches) - 1
            with stepper.micro(last):
                loss = stepper.model(input_ids=batch, labels=batch).loss
                stepper.backward(loss, last)
            total += loss.item() / len(batches)
        stepper.step()
        barrier()
    return total, watch.seconds


def _counting_step(stepper: Stepper, batches: list[Any], device: str, peaks: bool) -> dict[str, Any]:
    from harness.measure.anatomy import PhasePeaks, SavedActivations
    from harness.measure.tensors import param_bytes, tensor_bytes
    from harness.training.optimizers import state_tensors

    counted = stepper.counts_bytes
    out: dict[str, Any] = {"activation_saved_bytes": 0, "peaks": None}
    profile = PhasePeaks(device) if peaks else contextlib.nullcontext()
    with profile as pp:
        phase = pp.phase if pp is not None else (lambda name: contextlib.nullcontext())
        stepper.zero_grad()
        for m, batch in enumerate(batches):
            last = m == len(batches) - 1
            counter = SavedActivations(stepper.model)  # a fresh one each: a micro-batch reuses freed storages
            with stepper.micro(last):
                with phase("forward"), counter.hooks():
                    loss = stepper.model(input_ids=batch, labels=batch).loss
                if m == 0:
                    out["params_bytes"] = param_bytes(stepper.model.parameters()) if counted else None
                with phase("backward"):
                    stepper.backward(loss, last)
            out["activation_saved_bytes"] = max(out["activation_saved_bytes"], counter.bytes)
        out["grads_bytes"] = tensor_bytes(p.grad for p in stepper.trainable) if counted else None
        out["params_without_grad"] = sum(1 for p in stepper.trainable if p.grad is None) if counted else None
        with phase("optimizer"):
            stepper.step()
    out["params_bytes_at_rest"] = param_bytes(stepper.model.parameters()) if counted else None
    out["optimizer_bytes"] = tensor_bytes(state_tensors(stepper.optimizer)) if counted else None
    out["peaks"] = pp
    return out


def train(stepper: Stepper, batches: list[Any], s: "StepSettings", device: str, *, peaks: bool = False,
          barrier: Callable[[], None] | None = None, reduce: Reduce | None = None) -> Trained:
    """Run the timed steps and the counting step (see the module docstring)."""
    barrier = barrier or (lambda: None)
    losses: list[float] = []
    step_ms: list[float] = []
    for i in range(s.warmup_steps + s.steps):
        loss, seconds = _timed_step(stepper, batches, device, barrier)
        losses.append(reduce(loss, "mean") if reduce else loss)
        if i >= s.warmup_steps:
            step_ms.append((reduce(seconds, "max") if reduce else seconds) * 1000)
    return Trained(losses=losses, step_ms=step_ms, **_counting_step(stepper, batches, device, peaks))


def load_for_training(cell: "CellView", path: str, s: "StepSettings", dtype: Any = None) -> Any:
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


def step_batches(model_path: str, s: "StepSettings", device: str, offset: int = 0) -> list[Any]:
    """The ``grad_accum`` micro-batches of one step (``batch_size x seq_len`` token ids each, distinct
    slices of the corpus from token ``offset``, or with ``tokens: random`` ids drawn over the model's
    vocabulary from a generator seeded with ``offset``; a rank passes its own offset); the same ones
    every step, so the loss can fall. Raises ValueError with the token counts if the corpus is too short."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from harness.base.paths import corpus_ids

    need = s.tokens_per_step
    if s.tokens == "random":  # seeded by the offset: the same ids every run, distinct per rank
        vocab = AutoConfig.from_pretrained(model_path).get_text_config().vocab_size
        flat = torch.randint(0, vocab, (need,), generator=torch.Generator().manual_seed(offset)).to(device)
        return list(flat.view(s.grad_accum, s.batch_size, s.seq_len).unbind(0))
    ids = corpus_ids(AutoTokenizer.from_pretrained(model_path), s.corpus)
    if len(ids) < offset + need:
        raise ValueError(f"corpus {s.corpus!r} has {len(ids)} tokens; grad_accum={s.grad_accum} x batch_size="
                         f"{s.batch_size} x seq_len={s.seq_len} needs {need} (from token {offset})")
    flat = torch.tensor(ids[offset:offset + need], device=device)
    return list(flat.view(s.grad_accum, s.batch_size, s.seq_len).unbind(0))
