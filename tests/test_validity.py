"""Validity as data: contention measured around timed regions (real busy processes beside a real tiny
cell), the rules on figures, strict runs recording `invalid` and retrying, thread pinning."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from harness.base.host import Host
from harness.measure import contention
from harness.measure.validity import ValidityRules, judge
from harness.pipeline.planner import plan
from harness.base.cpus import cpu_list
from harness.pipeline.runner import Runner, run_plan, thread_env
from harness.results.records import Metric
from harness.results.store import Store
from harness.spec.suite import load_suite

# one tiny fp32 inference cell, no Text2SQL: the cheapest real cell with timed regions
ONE_CELL = """
name: quiet
model: tiny
timeout_s: 300
precisions: [{kind: fp32}]
inference: {seq_len: 64, stride: 64, max_windows: 2, prompt_tokens: 16, decode_tokens: 32, repeats: 5, warmup: 1}
validity: {strict: STRICT, retries: 1, retry_pause_s: 0, min_timed_s: 0.01, max_foreign_cpu_share: 0.25}
"""

QUIET = {"timed_regions": 10, "timed_s": 2.0, "shortest_region_s": 0.05, "foreign_cpu_share": 0.02,
         "foreign_cpu_s": 0.08, "cores": 2, "threads": 2}


def test_quiet_figures_are_valid_and_each_rule_names_its_figure():
    rules = ValidityRules()
    assert judge(QUIET, {}, rules).valid
    busy = judge(QUIET | {"foreign_cpu_share": 0.48, "foreign_cpu_s": 1.92}, {}, rules)
    assert not busy.valid and busy.reasons[0].startswith("foreign CPU: other processes took 48% of the cell's 2 cores")
    # a cell using one of two cores leaves the other to its neighbours: half the share is allowed on top
    assert judge(QUIET | {"foreign_cpu_share": 0.48, "threads": 1}, {}, rules).valid
    short = judge(QUIET | {"timed_s": 0.01, "shortest_region_s": 1e-6}, {}, rules)
    assert [r.split(":")[0] for r in short.reasons] == ["too short", "too short"] and "0.01 s in all" in short.reasons[0]
    assert judge({"timed_regions": 0}, {}, rules).reasons == ["no timed region was measured: contention unknown"]
    few = {"decode_tok_s_bs1": Metric(value=40, unit="tok/s", samples=[40, 41], stat="median"),
           "weight_bytes": Metric(value=1, unit="bytes")}  # one-value metrics need no samples
    assert judge(QUIET, few, rules).reasons == ["too few samples: decode_tok_s_bs1 has 2 (an interval needs 3)"]
    gpu = {"foreign_processes": [{"pid": 4242, "memory_bytes": 2**30}], "before": {"throttle_reasons": ["HwSlowdown"]}}
    reasons = judge(QUIET | {"gpu": gpu}, {}, rules).reasons
    assert reasons == ["foreign GPU processes on the cell's device: pid 4242 (1024 MiB)",
                       "throttling: GPU clocks cut by HwSlowdown"]
    assert judge(QUIET | {"gpu": gpu}, {}, ValidityRules(allow_foreign_gpu_processes=True, allow_throttling=True)).valid


def test_a_timed_region_counts_the_trees_own_time_apart_from_foreign_time():
    contention.reset()
    with contention.timed_region("spin"):
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:
            pass
    fig = contention.figures(threads=1)
    assert fig["timed_regions"] == 1 and fig["timed_s"] >= 0.3
    assert 0.2 <= fig["tree_cpu_s"] <= fig["timed_s"] + 0.05  # this process spun for the whole region
    assert 0 <= fig["foreign_cpu_share"] <= 1 and fig["cores"] == len(os.sched_getaffinity(0))
    contention.reset()
    assert contention.figures()["timed_regions"] == 0


def test_threads_are_held_to_the_cores_the_worker_may_use():
    cpus = sorted(os.sched_getaffinity(0))
    assert cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and cpu_list([3]) == "3"
    env = thread_env({"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == str(len(cpus)) and env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_list(cpus)
    assert thread_env({"OMP_NUM_THREADS": "1"})["OMP_NUM_THREADS"] == "1"  # the user's choice stands
    import torch

    torch.set_num_threads(len(cpus) + 3)
    assert contention.pin_threads()["threads"] == len(cpus) == torch.get_num_threads()


def _plan(tmp_path, strict: bool):
    path = tmp_path / "quiet.yaml"
    path.write_text(ONE_CELL.replace("STRICT", str(strict).lower()))
    return plan(load_suite(path), Host.detect(), source=str(path))


def test_busy_neighbours_make_a_real_cell_invalid_and_a_strict_run_retries_it(tmp_path):
    """A spinning process on the one core a tiny cell may use: the cell says so, with the figure, and a
    strict run records it `invalid`, keeping what it measured. The neighbour stops when that record
    lands; the retry, on a quiet core, is valid. (One core, one thread: the cores' affinity and the
    thread pinning are what is tested too. With the cell's threads on every core of this 2-core
    machine, one spinner makes OpenMP's threads wait on each other 20-100x longer: minutes.)"""
    core = min(os.sched_getaffinity(0))
    saved = os.sched_getaffinity(0)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.sched_setaffinity(0, {core}))]

    def stop_neighbours(record, reused) -> None:
        for p in busy:
            p.kill()
            p.wait()

    try:
        os.sched_setaffinity(0, {core})  # the runner's worker inherits it
        time.sleep(0.5)
        store = Store(tmp_path / "results")
        records = run_plan(_plan(tmp_path, strict=True), store, Runner(log_dir=tmp_path / "logs"), on_record=stop_neighbours)
    finally:
        stop_neighbours(None, False)
        os.sched_setaffinity(0, saved)
    assert [r.status for r in records] == ["invalid", "ok"], [r.reason for r in records]
    contended, quiet = records
    assert contended.validity is not None and not contended.validity.valid and contended.metrics  # nothing measured is lost
    fig = contended.validity.figures
    assert fig["cores"] == 1 and fig["threads"] == 1 and fig["omp_num_threads"] == "1"
    assert "foreign CPU: other processes took" in contended.reason and fig["foreign_cpu_share"] > 0.3
    assert quiet.trusted and quiet.validity is not None, quiet.validity
    assert quiet.validity.figures["foreign_cpu_share"] < 0.25 and quiet.validity.figures["threads"] == 1
    assert [r.status for r in store.records("quiet")] == ["invalid", "ok"]


@pytest.mark.gpu
def test_cuda_figures_name_foreign_processes_and_clocks():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    pytest.importorskip("pynvml")
    contention.reset()
    x = torch.randn(4096, 4096, device="cuda")
    with contention.timed_region("matmul"):
        (x @ x).sum().item()
    gpu = contention.figures()["gpu"]
    assert "error" not in gpu, gpu
    assert isinstance(gpu["foreign_processes"], list) and gpu["before"]["sm_mhz"] > 0 and gpu["after"]["sm_mhz"] > 0
