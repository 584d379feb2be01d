"""The planner: cross-product, ids, and skip reasons decided before running, without torch."""

from __future__ import annotations

import subprocess
import sys

from harness.base.host import GPU, Host
from harness.pipeline.planner import plan
from harness.spec.suite import load_suite
from tests.conftest import TINY_SUITE

ALL = {"torch": "2.13.0", "transformers": "5.19.0", "vllm": "0.32.0", "bitsandbytes": "0.50.2", "peft": "0.21.2"}


def host(gpus=(), **packages) -> Host:
    return Host(hostname="h", platform="linux", python="3.11", cpu_model="cpu", cpu_count=2, memory_bytes=2**34,
                gpus=list(gpus), packages={**ALL, **packages})


def suite(tmp_path, text=TINY_SUITE):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return load_suite(p)


def skips(p) -> dict[str, str]:
    return {c.cell.id: c.skip for c in p.cells if c.skip}


def test_cells_and_ids(tmp_path):
    p = plan(suite(tmp_path), host())
    assert [c.cell.id for c in p.cells] == [
        "tiny-infer-fp32", "tiny-infer-bf16", "tiny-infer-nf4", "tiny-train-lora-fp32",
        "tiny-serve-hf-static-bf16", "tiny-serve-hf-static-nf4",
        "tiny-serve-vllm-continuous-bf16", "tiny-serve-vllm-continuous-nf4"]
    assert all(c.cell.device == "cpu" for c in p.cells)
    assert len({c.cell.key() for c in p.cells}) == len(p.cells)


def test_cpu_host_skips_bitsandbytes_in_vllm_with_reason(tmp_path):
    p = plan(suite(tmp_path), host())
    assert skips(p) == {"tiny-serve-vllm-continuous-nf4": "vLLM's CPU build has no bitsandbytes quantization method"}
    assert p.cells[-1].skipped_by == "engine"


def test_gpu_host_runs_bitsandbytes_in_vllm(tmp_path):
    p = plan(suite(tmp_path), host(gpus=[GPU(name="H100")]))
    assert skips(p) == {}
    assert all(c.cell.device == "cuda" for c in p.cells)


def test_missing_packages_become_skip_reasons(tmp_path):
    p = plan(suite(tmp_path), host(vllm=None, bitsandbytes=None))
    s = skips(p)
    assert s["tiny-infer-nf4"] == "bitsandbytes is not installed (pip install 'bitsandbytes>=0.48')"
    assert s["tiny-serve-vllm-continuous-bf16"].startswith("vLLM is not installed")
    assert "tiny-infer-bf16" not in s


def test_exclusions_and_cuda_request(tmp_path):
    text = TINY_SUITE + "exclude:\n  - scenario: serve\n    precision: nf4\n    reason: too slow on CPU\n"
    p = plan(suite(tmp_path, text), host())
    s = skips(p)
    assert s["tiny-serve-hf-static-nf4"] == "excluded by the suite: too slow on CPU"
    assert s["tiny-serve-vllm-continuous-nf4"] == "excluded by the suite: too slow on CPU"
    p = plan(suite(tmp_path, TINY_SUITE.replace("model: tiny", "model: tiny\ndevice: cuda")), host())
    assert set(skips(p).values()) == {"the suite asks for CUDA and this host has no CUDA device"}


def test_full_finetuning_of_quantized_weights_is_skipped(tmp_path):
    text = TINY_SUITE.replace("  precisions: [fp32]\n  modes:\n", "  modes:\n    - kind: full\n")
    s = skips(plan(suite(tmp_path, text), host()))
    assert s["tiny-train-full-nf4"] == "full fine-tuning cannot update nf4 quantized weights (use lora)"
    assert "is the qlora mode" in s["tiny-train-lora-nf4"]  # LoRA over 4-bit weights is QLoRA, one way to ask for it
    assert "tiny-train-lora-bf16" not in s and "tiny-train-full-bf16" not in s


def test_workload_longer_than_vllm_context_is_skipped(tmp_path):
    text = TINY_SUITE.replace("max_model_len: 128", "max_model_len: 40")
    s = skips(plan(suite(tmp_path, text), host()))
    assert s["tiny-serve-vllm-continuous-bf16"] == "workload 'mixed' needs 56 tokens > max_model_len 40"


def test_missing_local_model_skips_every_cell(tmp_path):
    p = plan(load_suite(_write(tmp_path, TINY_SUITE), model=f"local:{tmp_path}/nope"), host())
    assert all(c.skipped_by == "model" and "has no config.json" in c.skip for c in p.cells)


def _write(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_planning_imports_no_framework(tmp_path):
    path = _write(tmp_path, TINY_SUITE)
    code = ("import sys; from harness.spec.suite import load_suite; from harness.pipeline.planner import plan; "
            "from harness.base.host import Host; from harness.cli import app; "
            f"p = plan(load_suite({str(path)!r}), Host.detect()); "
            "bad = [m for m in ('torch', 'transformers', 'vllm', 'bitsandbytes', 'peft') if m in sys.modules]; "
            "print(len(p.cells), bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "8 []"
