"""One rank of a data-parallel training cell: ``python -m harness.rank CELL.json OUT_DIR`` under torchrun.

Started by :func:`harness.distributed.launch` (``torchrun --nproc-per-node N -m harness.rank ...``); the
rank, world size and local rank come from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). Each rank joins the process group (``cell.parallel.resolved_backend``), seeds with the
cell's seed (the same on every rank, so freshly initialized weights such as LoRA adapters agree),
loads the model fresh, applies the training mode, wraps it with the cell's parallel engine and trains
``warmup_steps + steps`` optimizer steps of ``grad_accum`` micro-batches. Rank ``r`` trains on its own
fixed slice of the corpus: tokens ``[r * A * B, (r + 1) * A * B)`` with ``A = grad_accum`` and
``B = batch_size * seq_len``, cut into its ``A`` micro-batches (the same ones every step).

Each rank writes ``OUT_DIR/rank{r}.json`` (atomically)::

    rank, world_size, device, backend
    losses                  per step (warm-up first): mean token cross-entropy, averaged over ranks (nats)
    step_ms                 measured steps only; ranks meet at a barrier before and after each step and
                            take the slowest rank's time, so every rank reports the same numbers
    tokens_per_step         over all ranks: world_size * grad_accum * batch_size * seq_len
    params_bytes            this rank's parameter bytes right after the first forward of step 0, i.e.
                            what the model computes with (FSDP zero2: gathered; zero3: resharded shards)
    params_bytes_at_rest    this rank's parameter bytes after step 0's optimizer step
    grads_bytes             this rank's bytes of the trainable parameters' ``.grad`` after step 0's backward
    optimizer_bytes         this rank's optimizer state bytes after step 0's optimizer step
    activation_saved_bytes  max over micro-batches of the bytes autograd saved for backward, parameters
                            (sharded or gathered) excluded
    peak_rss_bytes          this rank's peak resident memory (``ru_maxrss``)
    trainable_params, params  global element counts (a DTensor's ``numel`` is global)
    trainable_tensors       number of trainable parameter tensors
    params_without_grad     trainable tensors whose ``.grad`` is None after step 0's backward
    optimizer_info          :func:`harness.optimizers.build`'s facts (class, paging, warnings)

Bytes and ``params_without_grad`` are None where the engine's stepper says it cannot count them from
the tensors (``counts_bytes = False``: DeepSpeed keeps ZeRO gradients and partitions in flat buffers).
On any failure the rank prints the traceback to stderr, writes ``{"rank": r, "error": "Type: message"}``
and exits with status 1 at once (torchrun then stops the other ranks). On success the process group
is destroyed and the rank exits with status 0.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.anatomy import SavedActivations

if TYPE_CHECKING:
    from harness.cell import Cell
    from harness.parallel import ParallelEngine
    from harness.scenarios.training import StepSettings


class Stepper(Protocol):
    """How a parallel engine runs one rank's optimizer step.

    ``model`` is what the rank calls; ``trainable`` its trainable parameters as the optimizer sees them.
    Per optimizer step: ``zero_grad()``, then for each micro-batch ``with micro(last): ...`` around the
    forward and ``backward(loss, last)``, then ``step()``. ``backward`` receives the micro-batch's
    unscaled mean loss and scales it for accumulation itself.
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
    """Engines that wrap the model (``engine.wrap``) and step a harness optimizer over its trainable
    parameters, created after wrapping (FSDP2 replaces parameters with DTensors). A wrapper with
    ``no_sync`` (DDP) skips the gradient all-reduce on all but the last micro-batch."""

    counts_bytes = True

    def __init__(self, engine: ParallelEngine, model: Any, settings: StepSettings, device: str) -> None:
        from harness.optimizers import build

        self.model = engine.wrap(model, device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError(f"the {engine.kind} model has no trainable parameters after wrapping")
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


def _numel(p: Any) -> int:
    """Global element count: a DTensor's ``numel`` is global; ZeRO-3 keeps it in ``ds_numel``."""
    return int(getattr(p, "ds_numel", None) or p.numel())


def _stepper(engine: ParallelEngine, model: Any, settings: StepSettings, device: str) -> Stepper:
    make = getattr(engine, "stepper", None)  # engines that own the optimizer (DeepSpeed) provide their own
    return make(model, settings, device) if make is not None else TorchStepper(engine, model, settings, device)


def run_rank(cell: Cell, rank: int, world: int, device: str) -> dict[str, Any]:
    """Train this rank's part of ``cell`` and return its result mapping (the keys of the module
    docstring). The process group is already initialized and the cell's model and precision checkpoint
    already prepared (their caches are hit here)."""
    import torch
    import torch.distributed as dist

    from harness.anatomy import param_bytes, tensor_bytes
    from harness.measure import Stopwatch
    from harness.optimizers import state_tensors
    from harness.scenarios.training import StepSettings, load_for_training, step_batches

    s = StepSettings.model_validate(cell.settings)
    if cell.parallel is None or cell.mode is None:
        raise ValueError(f"cell {cell.id!r} is not a parallel training cell (parallel and mode are required)")
    torch.manual_seed(cell.seed)
    resolved = cell.model.resolve()
    prepared = cell.precision.prepare(resolved, cell)
    try:  # each rank its own slice of the corpus
        batches = step_batches(str(resolved.path), s, device, offset=rank * s.grad_accum * s.batch_size * s.seq_len)
    except ValueError as exc:
        raise ValueError(f"rank {rank} of {world}: {exc} (use a smaller batch_size, seq_len or grad_accum, "
                         "or fewer ranks)") from None
    model = load_for_training(cell, str(prepared.path), s)
    stepper = _stepper(cell.parallel, model, s, device)
    net, trainable = stepper.model, stepper.trainable
    out: dict[str, Any] = {
        "rank": rank, "world_size": world, "device": device, "backend": cell.parallel.resolved_backend(cell.device),
        "trainable_params": sum(map(_numel, trainable)), "params": sum(map(_numel, net.parameters())),
        "trainable_tensors": len(trainable), "optimizer_info": stepper.info,
        "tokens_per_step": world * s.grad_accum * s.batch_size * s.seq_len,
    }
    counted = stepper.counts_bytes
    losses: list[float] = []
    step_ms: list[float] = []
    acts = 0
    for step in range(s.warmup_steps + s.steps):
        stepper.zero_grad()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        dist.barrier()
        with Stopwatch(device) as watch:
            for m, batch in enumerate(batches):
                last = m == len(batches) - 1
                # counted in step 0 only (a warm-up step when there is one): the hooks cost time
                counter = SavedActivations(net) if step == 0 else None
                with stepper.micro(last):
                    with counter.hooks() if counter else contextlib.nullcontext():
                        loss = net(input_ids=batch, labels=batch).loss
                    if step == 0 and m == 0:
                        out["params_bytes"] = param_bytes(net.parameters()) if counted else None
                    stepper.backward(loss, last)
                loss_sum += loss.detach().double() / s.grad_accum
                acts = max(acts, counter.bytes if counter else 0)
            if step == 0:
                out["grads_bytes"] = tensor_bytes(p.grad for p in trainable) if counted else None
                out["params_without_grad"] = sum(1 for p in trainable if p.grad is None) if counted else None
            stepper.step()
            dist.barrier()
        if step == 0:
            out["params_bytes_at_rest"] = param_bytes(net.parameters()) if counted else None
            out["optimizer_bytes"] = tensor_bytes(state_tensors(stepper.optimizer)) if counted else None
        dist.all_reduce(loss_sum)
        losses.append(loss_sum.item() / world)
        if step >= s.warmup_steps:
            slowest = torch.tensor(watch.seconds * 1000, dtype=torch.float64, device=device)
            dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
            step_ms.append(slowest.item())
    out.update(losses=losses, step_ms=step_ms, activation_saved_bytes=acts,
               peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return out


def main(argv: list[str]) -> int:
    """Run one rank and end the process: status 0 (result written), 1 (error written), 2 (usage)."""
    import signal

    from harness.proctree import die_with_parent
    from harness.worker import write_json

    if len(argv) != 2:
        print("usage: python -m harness.rank CELL.json OUT_DIR (under torchrun)", file=sys.stderr)
        return 2
    # torchrun starts ranks in their own sessions, out of reach of the cell's process-group kill
    die_with_parent(signal.SIGKILL)
    rank = int(os.environ.get("RANK", "-1"))
    out_dir = Path(argv[1])
    try:
        if rank < 0 or "WORLD_SIZE" not in os.environ:
            raise RuntimeError("harness.rank runs under torchrun: RANK and WORLD_SIZE are not set")
        import torch
        import torch.distributed as dist

        from harness.cell import Cell

        cell = Cell.model_validate_json(Path(argv[0]).read_text())
        if cell.parallel is None:
            raise ValueError(f"cell {cell.id!r} has no parallel engine")
        world, local_rank = int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", rank))
        device = "cpu"
        if cell.device == "cuda":
            torch.cuda.set_device(local_rank)
            device = f"cuda:{local_rank}"
        # Before joining the group: a rank that builds the model or a precision's checkpoint must write it,
        # and transformers' save_pretrained writes nothing on ranks other than 0 once a group exists.
        cell.precision.prepare(cell.model.resolve(), cell)
        dist.init_process_group(backend=cell.parallel.resolved_backend(cell.device))
        result = run_rank(cell, rank, world, device)
        write_json(out_dir / f"rank{rank}.json", result)
        dist.destroy_process_group()
        status = 0
    except BaseException as exc:  # reported to the launcher, which names this rank
        traceback.print_exc()
        if rank >= 0:
            write_json(out_dir / f"rank{rank}.json",
                       {"rank": rank, "error": f"{type(exc).__name__}: {exc}".strip()[:2000]})
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # leave at once: a failed rank must not wait on collectives or atexit hooks


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
