"""The training-memory table, measured beside predicted: one row per training cell of a store.

For each cell: trainable parameters; parameters, gradients and optimizer state counted from the
tensors beside the estimator's prediction from the config (``*_analytic``); the activations autograd
saved; their total (the anatomy); CUDA's allocator peak over the counting step (the largest of the
forward, backward and optimizer phases' ``torch.cuda.max_memory_allocated``) and the anatomy's share
of it; NVML's peak for the process. What the anatomy does not hold (the loss's logits in fp32, the
backward's temporaries, the CUDA context outside the allocator) is the residual the table shows.

``python -m harness.track.memtable RESULTS [--suite NAME] [--out FILE]`` prints it as Markdown; it
exits 1 when a cell's parameter, gradient or optimizer bytes differ from the prediction (the book's
bar: those three exact), 2 when the store holds no training record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.results.records import Record

GIB = 2**30
EXACT = ("params_bytes", "grads_bytes", "optimizer_bytes")
PHASES = ("forward", "backward", "optimizer")


def _value(r: Record, name: str) -> float | None:
    m = r.metrics.get(name)
    return None if m is None else m.value


def _gib(v: float | None) -> str:
    return "-" if v is None else f"{v / GIB:.3f}"


def row(r: Record) -> dict[str, Any]:
    """One cell's figures (bytes; None where not measured) and whether the exact three match."""
    phase = {p: _value(r, f"cuda_{p}_max_allocated_bytes") for p in PHASES}
    peaks = [v for v in phase.values() if v is not None]
    out: dict[str, Any] = {"cell": r.cell_id, "status": r.status, "trainable": _value(r, "trainable_params"),
                           "cuda_step_peak": max(peaks) if peaks else None, "phase_peaks": phase,
                           "peak_phase": max((p for p in PHASES if phase[p] is not None), key=lambda p: phase[p] or 0)
                           if peaks else None,
                           "nvml_process_peak": _value(r, "gpu_process_peak_bytes")}
    for name in (*EXACT, "activation_saved_bytes", "anatomy_total_bytes"):
        out[name] = _value(r, name)
        out[f"{name}_analytic"] = _value(r, f"{name}_analytic")
    out["exact"] = all(out[n] is not None and out[n] == out[f"{n}_analytic"] for n in EXACT)
    total, peak = out["anatomy_total_bytes"], out["cuda_step_peak"]
    out["share_of_peak"] = total / peak if total is not None and peak else None
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table (GiB, measured / predicted) with a line per cell."""
    head = ("| cell | status | trainable | params GiB | grads GiB | optimizer GiB | saved activations GiB | "
            "anatomy GiB | CUDA peak forward / backward / optimizer GiB | anatomy / peak | NVML process peak GiB | "
            "params, grads, optimizer |")
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for x in rows:
        def pair(name: str) -> str:
            return f"{_gib(x[name])} / {_gib(x[f'{name}_analytic'])}"
        share = "-" if x["share_of_peak"] is None else f"{x['share_of_peak']:.1%}"
        phases = " / ".join(f"**{_gib(v)}**" if p == x["peak_phase"] else _gib(v) for p, v in x["phase_peaks"].items())
        trainable = "-" if x["trainable"] is None else f"{int(x['trainable']):,}"
        lines.append(f"| {x['cell']} | {x['status']} | {trainable} | {pair('params_bytes')} | {pair('grads_bytes')} | "
                     f"{pair('optimizer_bytes')} | {pair('activation_saved_bytes')} | {pair('anatomy_total_bytes')} | "
                     f"{phases} | {share} | {_gib(x['nvml_process_peak'])} | "
                     f"{'exact' if x['exact'] else 'DIFFER'} |")
    return "\n".join(lines) + (
        "\n\nmeasured / predicted (harness estimate, from the config alone). CUDA peaks: torch.cuda.max_memory_allocated "
        "over each phase of the counting step, the largest in bold; anatomy / peak compares the anatomy's sum with it. "
        "The sum is not a simultaneous quantity: in backward the saved activations are freed as the gradients "
        "appear, and the optimizer phase holds parameters, gradients and state plus its own temporaries "
        "(torch's foreach AdamW: about one parameter-sized buffer).\n")


def main(argv: list[str] | None = None) -> int:
    from harness.results.store import latest_per_cell, read_records

    parser = argparse.ArgumentParser(prog="python -m harness.track.memtable", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a store folder or one .jsonl file")
    parser.add_argument("--suite", default=None, help="only this suite's records")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    records = [r for r in latest_per_cell(read_records(args.results)).values()
               if r.cell.get("scenario") == "train" and (args.suite is None or r.suite == args.suite)]
    if not records:
        print(f"{args.results}: no training record" + (f" of suite {args.suite!r}" if args.suite else ""), file=sys.stderr)
        return 2
    rows = [row(r) for r in sorted(records, key=lambda r: r.cell_id)]
    text = markdown(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    ran = [x for x in rows if x["status"] == "ok"]
    return 0 if ran and all(x["exact"] for x in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
