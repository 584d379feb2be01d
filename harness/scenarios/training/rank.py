"""One rank of a data-parallel training cell: ``python -m harness.scenarios.training.rank CELL.json OUT_DIR``.

Started by :func:`harness.scenarios.training.launch.launch` under torchrun; the rank, world size and
local rank come from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). Each rank joins
the process group (``cell.parallel.resolved_backend``) on the launcher's loopback-only store named by
``HARNESS_RANK_STORE`` (``127.0.0.1:PORT``; without it, torchrun's ``MASTER_ADDR``/``MASTER_PORT``),
seeds with the cell's seed (the same on every rank, so freshly initialized weights such as LoRA
adapters agree), loads the model fresh, applies the training mode, and runs the one step loop
(:func:`harness.scenarios.training.loop.train`) through its parallel engine's stepper. Rank ``r``
trains on its own fixed slice of the corpus: tokens ``[r * A * B, (r + 1) * A * B)`` with
``A = grad_accum`` and ``B = batch_size * seq_len``, cut into its ``A`` micro-batches (the same ones
every step).

Each rank writes ``OUT_DIR/rank{r}.json`` (atomically, :mod:`harness.base.protocol`); across nodes, each
node's local rank 0 also writes every other rank's (gathered with ``all_gather_object``: torchrun's c10d
rendezvous gives nodes their ranks in the order they join), so every node holds them all::

    rank, world_size, device, backend, node_rank (torchrun's GROUP_RANK), host
    losses                  per step (warm-up first): mean token cross-entropy, averaged over ranks (nats)
    step_ms                 measured steps only; ranks meet at a barrier before and after each step and
                            take the slowest rank's time, so every rank reports the same numbers
    tokens_per_step         over all ranks: world_size * grad_accum * batch_size * seq_len
    params_bytes            this rank's parameter bytes right after the counting step's first forward,
                            i.e. what the model computes with (FSDP zero2: gathered; zero3: resharded shards)
    params_bytes_at_rest    this rank's parameter bytes after the counting step's optimizer step
    grads_bytes             this rank's bytes of the trainable parameters' ``.grad`` after backward
    optimizer_bytes         this rank's optimizer state bytes after the optimizer step
    activation_saved_bytes  max over micro-batches of the bytes autograd saved for backward, parameters
                            (sharded or gathered) excluded
    peak_rss_bytes          this rank's peak resident memory (``ru_maxrss``)
    trainable_params, params  global element counts (a DTensor's ``numel`` is global)
    trainable_tensors       number of trainable parameter tensors
    params_without_grad     trainable tensors whose ``.grad`` is None after backward
    optimizer_info          :func:`harness.training.optimizers.build`'s facts (class, paging, warnings)

Bytes and ``params_without_grad`` are None where the engine's stepper says it cannot count them from
the tensors (``counts_bytes = False``: DeepSpeed keeps ZeRO gradients and partitions in flat buffers).
On any failure the rank prints the traceback to stderr, writes ``{"rank": r, "error": "Type: message"}``
and exits with status 1 at once (torchrun then stops the other ranks). On success the process group
is destroyed and the rank exits with status 0.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.base.protocol import error_text, exit_now, guarded, write_json

if TYPE_CHECKING:
    from harness.spec.cell import Cell

STORE_ENV = "HARNESS_RANK_STORE"  # host:port of the store the launcher hosts on loopback


def _numel(p: Any) -> int:
    """Global element count: a DTensor's ``numel`` is global; ZeRO-3 keeps it in ``ds_numel``."""
    return int(getattr(p, "ds_numel", None) or p.numel())


def _reduce(device: str) -> Any:
    """Losses averaged and step times maxed over the ranks (float64 all-reduces)."""
    import torch
    import torch.distributed as dist

    def reduce(value: float, op: Literal["mean", "max"]) -> float:
        t = torch.tensor(value, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return t.item() if op == "max" else t.item() / dist.get_world_size()

    return reduce


def run_rank(cell: "Cell", rank: int, world: int, device: str) -> dict[str, Any]:
    """Train this rank's part of ``cell`` and return its result mapping (the keys of the module
    docstring). The process group is already initialized and the cell's model and precision checkpoint
    already prepared (their caches are hit here)."""
    import torch
    import torch.distributed as dist

    from harness.scenarios.training.loop import (
        load_for_training,
        make_stepper,
        step_batches,
        train,
    )
    from harness.spec.training import StepSettings

    s = StepSettings.model_validate(cell.settings)
    if cell.parallel is None or cell.mode is None:
        raise ValueError(f"cell {cell.id!r} is not a parallel training cell (parallel and mode are required)")
    torch.manual_seed(cell.seed)
    resolved = cell.model.resolve()
    prepared = cell.precision.prepare(resolved, cell)
    try:  # each rank its own slice of the corpus
        batches = step_batches(str(resolved.path), s, device, offset=rank * s.tokens_per_step)
    except ValueError as exc:
        raise ValueError(f"rank {rank} of {world}: {exc} (use a smaller batch_size, seq_len or grad_accum, "
                         "or fewer ranks)") from None
    stepper = make_stepper(cell, load_for_training(cell, str(prepared.path), s), s, device)
    net, trainable = stepper.model, stepper.trainable
    out: dict[str, Any] = {
        "rank": rank, "world_size": world, "device": device, "backend": cell.parallel.resolved_backend(cell.device),
        "trainable_params": sum(map(_numel, trainable)), "params": sum(map(_numel, net.parameters())),
        "trainable_tensors": len(trainable), "optimizer_info": stepper.info,
        "tokens_per_step": world * s.tokens_per_step,
    }
    trained = train(stepper, batches, s, device, barrier=dist.barrier, reduce=_reduce(device))
    out.update(trained.model_dump(exclude={"peaks"}),
               peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return out


def _group_store() -> Any:
    """A client of the launcher's store (``HARNESS_RANK_STORE``), under a prefix of this torchrun run and
    restart; None without it (then ``env://``: rank 0 would host a store on every interface)."""
    address = os.environ.get(STORE_ENV)
    if not address:
        return None
    from datetime import timedelta

    from torch.distributed import PrefixStore, TCPStore

    host, _, port = address.rpartition(":")
    prefix = f"harness/pg/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return PrefixStore(prefix, TCPStore(host, int(port), is_master=False, timeout=timedelta(seconds=300)))


def _rank_main(cell_json: Path, out_dir: Path, rank: int) -> None:
    import torch
    import torch.distributed as dist

    from harness.spec.cell import Cell

    if rank < 0 or "WORLD_SIZE" not in os.environ:
        raise RuntimeError("harness.scenarios.training.rank runs under torchrun: RANK and WORLD_SIZE are not set")
    cell = Cell.model_validate_json(cell_json.read_text())
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
    backend = cell.parallel.resolved_backend(cell.device)
    store = _group_store()
    if store is None:
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)
    result = run_rank(cell, rank, world, device)
    result |= {"node_rank": int(os.environ.get("GROUP_RANK", "0")), "host": socket.gethostname()}
    if cell.parallel.nnodes > 1:  # every node gets every rank's result (c10d assigns ranks to nodes as they join)
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, result)
        for r in (gathered if local_rank == 0 else [result]):
            write_json(out_dir / f"rank{r['rank']}.json", r)
    else:
        write_json(out_dir / f"rank{rank}.json", result)
    dist.destroy_process_group()


def main(argv: list[str]) -> int:
    """Run one rank and end the process: status 0 (result written), 1 (error written), 2 (usage)."""
    import signal

    from harness.base.proctree import die_with_parent

    if len(argv) != 2:
        print("usage: python -m harness.scenarios.training.rank CELL.json OUT_DIR (under torchrun)", file=sys.stderr)
        return 2
    # torchrun starts ranks in their own sessions, out of reach of the cell's process-group kill
    die_with_parent(signal.SIGKILL)
    rank = int(os.environ.get("RANK", "-1"))
    out_dir = Path(argv[1])
    _, exc = guarded(lambda: _rank_main(Path(argv[0]), out_dir, rank))
    if exc is not None and rank >= 0:  # reported to the launcher, which names this rank
        write_json(out_dir / f"rank{rank}.json", {"rank": rank, "error": error_text(exc)})
    exit_now(0 if exc is None else 1)  # a failed rank must not wait on collectives or atexit hooks


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
