"""Benchmark of the validity check: does a cell say it was contended, and only when it was?

Runs one cell of a suite ``--trials`` times with as many spinning processes beside it as the cores it
may use, and ``--trials`` times without, alternating (busy, quiet, busy, ...), each in a fresh
process as `harness run` does; prints each trial's foreign CPU share and verdict and writes every
record to ``--results``. Target: invalid in every busy trial, valid (on the foreign-CPU rule) in every
quiet one. Run it on an otherwise idle machine, nothing else timing::

    python benchmarks/contention.py suites/default.yaml --only default-infer-bf16 --trials 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.pipeline.runner import Runner
    from harness.results.store import Store
    from harness.spec.suite import load_suite

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path)
    ap.add_argument("--only", required=True, help="the cell id")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--busy", type=int, default=len(os.sched_getaffinity(0)), help="spinning processes (default: one per core)")
    ap.add_argument("--results", type=Path, default=Path("results/contention"))
    args = ap.parse_args(argv)

    p = plan(load_suite(args.suite), Host.detect(), source=str(args.suite))
    cell = next(pc.cell for pc in p.runnable if pc.cell.id == args.only)
    runner, store = Runner(log_dir=args.results / "logs"), Store(args.results)
    rows = []
    for trial in range(2 * args.trials):
        busy = trial % 2 == 0
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy if busy else 0)]
        try:
            time.sleep(0.5 if busy else 0)
            record = runner.run(cell, p.command(cell))
        finally:
            for s in spinners:
                s.kill()
                s.wait()
        store.append(record)
        fig = record.validity.figures if record.validity else {}
        foreign = [r for r in (record.validity.reasons if record.validity else []) if r.startswith("foreign CPU")]
        rows.append({"trial": trial // 2 + 1, "busy": busy, "status": record.status,
                     "foreign_cpu_share": fig.get("foreign_cpu_share"), "timed_s": fig.get("timed_s"),
                     "flagged": bool(foreign), "valid": record.trusted, "reasons": record.validity.reasons if record.validity else None})
        print(json.dumps(rows[-1]), flush=True)
    hits = sum(r["flagged"] for r in rows if r["busy"])
    false = sum(r["flagged"] for r in rows if not r["busy"])
    print(f"busy trials flagged: {hits}/{args.trials}; quiet trials flagged: {false}/{args.trials}")
    return 0 if hits == args.trials and false == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
