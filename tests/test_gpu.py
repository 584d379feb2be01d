"""Every CUDA branch of the harness, on a real GPU: inference in fp32/bf16/fp16 and bitsandbytes
int8/NF4, training full/LoRA/QLoRA with the anatomy and per-phase allocator peaks, the memory cap's
oom record, ``mfu_ratio``, the NVML trackers (process-tree and device memory, energy) and the CUDA
events of the stopwatch. Marked ``gpu``: on a host without a CUDA device each test is skipped with
the reason (``pytest -m gpu`` lists them); `.ci/gpu-check` runs them on a GPU machine.

The CPU half (at the end, unmarked) proves what a CPU can: NVML's answers turned into figures on
recorded values, the trackers saying why they measured nothing, the book-table suite planned and
skipped with its reason, its prediction from the config alone, and the check's dry run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, ok, run_suite_text


def _no_cuda_reason() -> str | None:
    from harness.base.host import Host

    if not Host.detect().has_cuda:
        return "no CUDA device on this host (nvidia-smi finds none): run on a GPU runner or with .ci/gpu-check"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} cannot use the CUDA device (a CPU build?)"
    return None


NO_CUDA = _no_cuda_reason()

INFER_SUITE = """
name: gi
model: tiny
device: cuda
timeout_s: 600
precisions:
  - kind: fp32
  - kind: bf16
  - kind: fp16
  - kind: int8
  - kind: nf4
    double_quant: true
    compute_dtype: bf16
inference:
  seq_len: 64
  stride: 64
  max_windows: 2
  prompt_tokens: 16
  decode_tokens: 16
  repeats: 3
  batch_sizes: [1, 4]
  text2sql: {items: 4, max_new_tokens: 16}
"""

TRAIN_SUITE = """
name: gt
model: tiny
device: cuda
timeout_s: 600
precisions:
  - kind: fp32
  - kind: nf4
    double_quant: true
    compute_dtype: bf16
training:
  modes:
    - kind: full
    - kind: lora
      r: 8
      targets: [q_proj, k_proj, v_proj, o_proj]
    - kind: qlora
      r: 8
      targets: [q_proj, k_proj, v_proj, o_proj]
  batch_size: 4
  seq_len: 128
  warmup_steps: 2
  steps: 5
  lr: 1.0e-3
"""

CAP_SUITE = """
name: gcap
model: tiny
device: cuda
timeout_s: 600
precisions:
  - kind: fp32
training:
  modes:
    - kind: full
  batch_size: 4
  seq_len: 128
  steps: 2
  memory_cap_gib: 0.001
"""


@pytest.fixture(scope="module")
def cuda_inference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_suite_text(tmp_path_factory.mktemp("gi"), INFER_SUITE)[3]


@pytest.fixture(scope="module")
def cuda_training(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_suite_text(tmp_path_factory.mktemp("gt"), TRAIN_SUITE)[3]


def _gpu_figures(r) -> None:
    """The NVML and allocator figures every CUDA cell carries, consistent with each other."""
    m, info = r.metrics, r.info["gpu"]
    assert "nvml" not in info, info
    allocated, reserved = m["cuda_max_allocated_bytes"].value, m["cuda_max_reserved_bytes"].value
    assert 0 < allocated <= reserved
    assert m["gpu_device_used_peak_bytes"].value >= reserved  # the device holds at least what this allocator reserved
    assert "gpu_process_peak_bytes" in m, info.get("gpu_process_peak_bytes")
    assert m["gpu_process_peak_bytes"].value >= reserved  # NVML's view of the process includes the CUDA context
    assert m["energy_j"].value > 0, info.get("energy")
    assert info["power_limit_w"] > 0 and info["sm_mhz"] > 0
    assert r.validity.figures["gpu"]["after"]["sm_mhz"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
@pytest.mark.parametrize("label", ["fp32", "bf16", "fp16", "int8", "nf4"])
def test_inference_on_cuda(cuda_inference: dict, label: str) -> None:
    """Each precision runs on CUDA: its weight bytes against fp32's, its kernels named, the speed
    timed with CUDA events beside the synchronized wall clock, the GPU figures present."""
    r = ok(cuda_inference, f"gi-infer-{label}")
    fp32 = ok(cuda_inference, "gi-infer-fp32").metrics["weight_bytes"].value
    ratio = r.metrics["weight_bytes"].value / fp32
    expected = {"fp32": (1.0, 1.0), "bf16": (0.45, 0.55), "fp16": (0.45, 0.55), "int8": (0.2, 0.45), "nf4": (0.1, 0.4)}
    low, high = expected[label]
    assert low <= ratio <= high, (label, ratio)
    kernels = r.info["kernels"]
    assert kernels["label"]
    wanted = {"int8": "bitsandbytes.nn.modules.Linear8bitLt", "nf4": "bitsandbytes.nn.modules.Linear4bit"}
    if label in wanted:  # every decoder projection quantized, the head kept dense
        assert kernels["modules"] == {wanted[label]: 14, "torch.nn.modules.linear.Linear": 1}, kernels["modules"]
    assert r.metrics["decode_step_s"].value > 0
    figures = r.validity.figures
    assert figures["cuda_event_s"] > 0
    # the events time the same regions as the synchronized wall clock: they agree (host gaps are in both)
    assert figures["cuda_event_s"] == pytest.approx(figures["cuda_event_wall_s"], rel=0.2, abs=0.005)
    _gpu_figures(r)


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
@pytest.mark.parametrize("cell", ["gt-train-full-fp32", "gt-train-lora-fp32", "gt-train-qlora-nf4"])
def test_training_on_cuda(cuda_training: dict, cell: str) -> None:
    """Full, LoRA and QLoRA train on CUDA: the anatomy counted from the tensors equals the prediction
    for parameters, gradients and optimizer state; CUDA's per-phase peaks, MFU against the device's
    known peak and the energy per step are recorded."""
    r = ok(cuda_training, cell)
    m = r.metrics
    assert r.info["loss_decreased"], [x for x in m["loss"].samples]
    assert r.info["grad_check"].get("ok", True) is not False, r.info["grad_check"]
    for name in ("grads_bytes", "optimizer_bytes"):
        assert m[f"{name}_residual"].value == 0, (name, m[name].value, m[f"{name}_analytic"].value)
    if "qlora" not in cell:
        assert m["params_bytes_residual"].value == 0
    for phase in ("forward", "backward", "optimizer"):
        assert m[f"cuda_{phase}_max_allocated_bytes"].value > 0
    # the cell's peak covers every phase's (the per-phase resets do not lose it)
    assert m["cuda_max_allocated_bytes"].value >= max(m[f"cuda_{p}_max_allocated_bytes"].value
                                                      for p in ("forward", "backward", "optimizer"))
    assert 0 < m["mfu_ratio"].value < 1, r.info["mfu"]
    assert len(m["mfu_ratio"].samples) == 5  # one per measured step: the validity rule can judge it
    assert m["energy_j_per_step"].value > 0 and len(m["energy_j_per_step"].samples) == 5
    _gpu_figures(r)


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_memory_cap_below_prediction_is_an_oom_record(tmp_path: Path) -> None:
    """A CUDA memory cap under the training's predicted bytes becomes an ``oom`` record that keeps
    the prediction and names the settings."""
    records = run_suite_text(tmp_path, CAP_SUITE)[3]
    r = records["gcap-train-full-fp32"]
    assert r.status == "oom", (r.status, r.reason, r.log_tail)
    assert "memory cap of 0.001 GiB" in r.reason
    assert r.metrics["anatomy_total_bytes_analytic"].value > 0.001 * 2**30
    assert r.info["memory_cap"]["cap_bytes"] == int(0.001 * 2**30)


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_nvml_trackers_and_cuda_events_in_process() -> None:
    """In this process: NVML sees a 1 GiB allocation in the process and on the device, the allocator
    peaks survive a phase reset, the stopwatch's CUDA events agree with its wall clock, and the
    energy counter moves over a region of matrix products."""
    import torch

    from harness.measure import contention, gpu
    from harness.measure.trackers import Stopwatch

    contention.reset()
    with gpu.GpuMonitor(interval_s=0.01) as mon:
        x = torch.empty(2**28, dtype=torch.float32, device="cuda")  # 1 GiB
        x.fill_(1.0)
        time.sleep(0.3)  # a few samples while it is held
        gpu.reset_peaks()
        del x
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        with Stopwatch("cuda", name="matmul") as watch:
            for _ in range(200):
                a = (a @ a).clamp_(-1, 1)
    assert mon.process_peak is not None and mon.process_peak >= 2**30, mon.info()
    assert mon.device_used_peak is not None and mon.device_used_peak >= mon.process_peak
    peaks = gpu.allocator_peaks()
    assert peaks is not None and peaks["allocated"] >= 2**30
    assert watch.event_seconds is not None
    assert watch.event_seconds == pytest.approx(watch.seconds, rel=0.05, abs=0.002)
    joules, n = gpu.region_energy_j("matmul")
    assert n == 1 and joules is not None and joules > 0
    # 200 bf16 products of 8192^3 (2.2e14 FLOP) at a few hundred watts: joules per TFLOP is plausible
    assert 0.01 < joules / 220 < 20, joules
    facts = gpu.device_facts()
    assert "H" in facts["name"] or facts["name"]  # named
    assert facts["power_limit_w"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_hf_serving_on_cuda_records_energy_per_output_token(tmp_path: Path) -> None:
    """HF's static and continuous batching serve on CUDA: the timed passes' energy over the tokens they
    generated, and the GPU figures of every CUDA cell."""
    suite = """
name: gs
model: tiny
device: cuda
timeout_s: 600
precisions: [{kind: bf16}]
workloads:
  - {name: w, num_requests: 8, prompt_tokens: 32, output_tokens: [8, 24]}
serving:
  repeats: 3
  engines:
    - {kind: hf-static, batch_size: 4}
    - {kind: hf-continuous, max_requests_per_batch: 4}
"""
    records = run_suite_text(tmp_path, suite)[3]
    for cell in ("gs-serve-hf-static-bf16", "gs-serve-hf-continuous-bf16"):
        r = ok(records, cell)
        assert r.metrics["energy_j_per_output_token"].value > 0
        assert r.metrics["energy_j"].value >= r.metrics["energy_j_per_output_token"].value
        _gpu_figures(r)


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_vllm_engine_memory_is_counted_in_the_process_tree(tmp_path: Path) -> None:
    """vLLM on CUDA: the engine core is a child process; NVML's process-tree peak includes it, and
    ``gpu_memory_utilization`` bounds what the engine takes of the device."""
    pytest.importorskip("vllm", reason="vLLM is not installed here (too large to carry to a lent GPU; GPU runners have it)")
    suite = """
name: gv
model: tiny
device: cuda
timeout_s: 600
precisions: [{kind: bf16}]
workloads:
  - {name: w, num_requests: 8, prompt_tokens: 32, output_tokens: 16}
serving:
  engines:
    - {kind: vllm-continuous, max_num_seqs: 4, max_model_len: 128, gpu_memory_utilization: 0.2}
"""
    records = run_suite_text(tmp_path, suite)[3]
    r = ok(records, "gv-serve-vllm-continuous-bf16")
    device = r.environment.gpus[0].memory_bytes
    # vLLM's engine core (a child process) takes its share of the device up front: the tree's peak shows it
    assert 0.15 * device <= r.metrics["gpu_process_peak_bytes"].value <= 0.35 * device, r.info["gpu"]
    assert r.metrics["energy_j_per_output_token"].value > 0


# ---- the CPU half: what a host without a GPU can prove ------------------------------------------

def test_nvml_arithmetic_on_recorded_values() -> None:
    """Recorded NVML answers (an H100 runner's process list and energy counter) become the figures."""
    from harness.measure.gpu import energy_delta_j, tree_bytes

    processes = [(4101, 1_234_567_168), (4188, 8_590_000_128), (9999, 40_000_000_000)]  # two ours, one foreign
    assert tree_bytes(processes, {4101, 4188}) == 1_234_567_168 + 8_590_000_128
    assert tree_bytes(processes, {17}) is None  # another pid namespace: not zero, unknown
    assert tree_bytes([(4101, None)], {4101}) is None  # memory withheld (no right to read it)
    assert energy_delta_j(123_456_789, 123_459_289) == 2.5
    assert energy_delta_j(123_456_789, 1_000) is None  # the counter went back: a driver reload
    assert energy_delta_j(None, 5) is None


@pytest.mark.skipif(NO_CUDA is None, reason="this host has a GPU: the gpu tests measure it")
def test_trackers_say_why_they_measured_nothing_without_a_gpu() -> None:
    from harness.measure import contention, gpu
    from harness.measure.trackers import Stopwatch

    contention.reset()
    with gpu.GpuMonitor() as mon, Stopwatch("cpu") as watch:
        sum(range(10000))
    assert mon.metrics() == {}
    assert mon.info()["nvml"].startswith("NVML unavailable")
    assert watch.event_seconds is None and gpu.energy_mj() is None
    assert gpu.region_energy_j() == (None, 1)
    assert "cuda_event_s" not in contention.figures() and gpu.region_energies() == [None]


def test_book_table_suite_is_planned_and_skipped_with_its_reason_on_cpu() -> None:
    """suites/gpu-memory-table.yaml: five step settings x full and LoRA, on CUDA only; on a CPU host every
    cell is skipped with the reason, before anything runs."""
    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.spec.suite import load_suite

    path = REPO / "suites" / "gpu-memory-table.yaml"
    p = plan(load_suite(path), Host.detect(), source=str(path))
    ids = sorted(c.cell.id for c in p.cells)
    assert len(ids) == 10
    assert "gpu-memory-table-train-full-fp16-bs4-ga4-nogc" in ids
    assert "gpu-memory-table-train-lora-fp16-bs16-ga1-gc" in ids
    if NO_CUDA is not None:
        assert all(c.skip and "CUDA" in c.skip for c in p.cells)


def test_book_table_prediction_from_the_config_alone() -> None:
    """The estimator reproduces the book's bytes for polyglot-ko-1.3b in fp16 with AdamW from the
    shipped config: parameters and gradients 2.481 GiB, optimizer state 4.961 GiB, and LoRA r=8 on
    query_key_value trains 1,572,864 parameters."""
    from harness.analytic.estimate import EstimateInput, estimate
    from harness.analytic.shape import ModelShape

    shape = ModelShape.load(str(REPO / "harness" / "data" / "models" / "polyglot-ko-1.3b" / "config.json"))
    full = estimate(shape, EstimateInput(dtype="fp16", train="full", optimizer="adamw", batch=4, seq=256))
    gib = 2**30
    assert round(full.params_bytes / gib, 3) == 2.481
    assert round(full.grads_bytes / gib, 3) == 2.481
    assert round(full.optimizer_bytes / gib, 3) == 4.961
    lora = estimate(shape, EstimateInput(dtype="fp16", train="lora", lora_r=8, lora_targets=["query_key_value"],
                                         optimizer="adamw", batch=4, seq=256))
    assert lora.trainable_params == 1_572_864


def test_a_model_from_a_config_trains_on_random_tokens(tmp_path: Path) -> None:
    """The config source builds a model of a config's shape with random weights (a small GPT-NeoX
    here; the book's 1.3B on a GPU), and ``tokens: random`` with ``combinations`` trains it: the
    cells the combinations name, with the anatomy counted."""
    config = json.loads((REPO / "harness" / "data" / "models" / "polyglot-ko-1.3b" / "config.json").read_text())
    config |= {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
               "vocab_size": 512, "torch_dtype": "float32"}
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps(config))
    suite = f"""
name: gc
model: {{kind: config, config: {tmp_path / 'cfg' / 'config.json'}}}
device: cpu
timeout_s: 300
precisions: [{{kind: fp32}}]
training:
  modes: [{{kind: full}}]
  tokens: random
  seq_len: 32
  steps: 1
  combinations:
    - {{batch_size: 2}}
    - {{batch_size: 1, grad_accum: 2}}
"""
    records = run_suite_text(tmp_path, suite)[3]
    assert sorted(records) == ["gc-train-full-fp32-bs1-ga2", "gc-train-full-fp32-bs2-ga1"]
    for r in records.values():
        ok(records, r.cell_id)
        assert r.metrics["grads_bytes_residual"].value == 0
        assert r.info["model"]["provenance"]["source"] == "built from a config (random weights)"


def test_gpu_check_dry_run_lists_what_would_run_and_what_is_skipped(tmp_path: Path) -> None:
    """`.ci/gpu-check --dry-run` on this host: the gpu tests it would run (each with its skip reason
    here), the suites and their cells, and the wheels it would install."""
    out = tmp_path / "out"
    res = subprocess.run(["bash", str(REPO / ".ci" / "gpu-check"), "--dry-run", str(out)], capture_output=True,
                         text=True, timeout=600, cwd=REPO, env=os.environ | {"PYTHON": sys.executable})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    text = res.stdout
    assert "test_gpu.py::test_nvml_trackers_and_cuda_events_in_process" in text
    assert "gpu-memory-table-train-full-fp16-bs16-ga1-gc" in text
    assert "tiny" in text and "wheels" in text
    if NO_CUDA is not None:
        assert "no CUDA device" in text
    assert (out / "dry-run.txt").read_text() == text
