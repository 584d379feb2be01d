"""The analytic estimator and `harness estimate`: textbook values, ZeRO sharding, KV cache, flags and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.analytic.estimate import EstimateInput, ModelShape, estimate
from harness.base.errors import HarnessError

GQA_CONFIG = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
              "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def gqa_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(GQA_CONFIG))
    return path


@pytest.fixture(scope="module")
def gqa(gqa_path):
    return ModelShape.load(str(gqa_path))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "estimate", *args], capture_output=True, text=True, timeout=300)


def test_mixed_precision_adamw_is_sixteen_bytes_per_parameter():
    n = 1_000_000
    est = estimate(ModelShape.from_params(n), EstimateInput(dtype="bf16", train="full", mixed_precision=True))
    assert (est.params_bytes, est.grads_bytes) == (2 * n, 2 * n)
    assert est.optimizer_bytes == 12 * n + 4  # fp32 master + two fp32 moments (+ AdamW's step scalar)
    assert est.total_bytes == est.per_rank_bytes == 16 * n + 4


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_stages_shard_optimizer_then_gradients_then_parameters(stage):
    n, w = 8_000_000, 4
    one = estimate(ModelShape.from_params(n), EstimateInput(dtype="bf16", train="full", mixed_precision=True))
    est = estimate(ModelShape.from_params(n), EstimateInput(dtype="bf16", train="full", mixed_precision=True,
                                                            zero_stage=stage, world_size=w))
    share = lambda v, k: -(-v // w) if stage >= k else v  # noqa: E731
    step_scalar = 4  # AdamW's fp32 step counter: every rank keeps its own whole
    optimizer = share(one.optimizer_bytes - step_scalar, 1) + step_scalar
    assert est.per_rank_bytes == share(one.params_bytes, 3) + share(one.grads_bytes, 2) + optimizer
    assert est.total_bytes == w * est.per_rank_bytes


def test_kv_cache_counts_k_and_v_per_layer_kv_head_and_head_dim(gqa):
    est = estimate(gqa, EstimateInput(dtype="bf16", batch=4, seq=2048))
    per_token = 2 * 16 * 8 * 64 * 2  # K and V x layers x KV heads (GQA: 8, not 32) x head_dim x bf16
    assert est.kv_cache_bytes_per_token == per_token
    assert est.kv_cache_bytes == per_token * 4 * 2048
    assert est.total_bytes == est.params_bytes + est.kv_cache_bytes
    assert est.params == 1_235_814_400 and est.params_bytes == 2 * est.params  # tied embeddings counted once


def test_lora_and_qlora_on_a_config(gqa):
    lora = estimate(gqa, EstimateInput(dtype="bf16", train="lora", lora_r=16, lora_targets=["q_proj", "v_proj"]))
    per_layer = 16 * (2048 + 2048) + 16 * (2048 + 512)  # q: 2048 -> 2048, v: 2048 -> 8 x 64
    assert lora.trainable_params == 16 * per_layer and lora.grads_bytes == 4 * lora.trainable_params  # fp32 adapters
    q = estimate(gqa, EstimateInput(dtype="bf16", train="qlora", quant="nf4", double_quant=True, lora_r=16))
    # NF4 with double quantization: 4 + 8/64 + 32/(64*256) bits, plus per-layer code books
    assert 4.127 < q.quantized_bits_per_param < 4.13
    # the quantized layers shrink to about a quarter of bf16; peft upcasts the embeddings to fp32
    emb = 128256 * 2048
    assert q.params_bytes < 4 * emb + 0.3 * (lora.params_bytes - 2 * emb)
    with pytest.raises(HarnessError, match="match no Linear module"):
        estimate(gqa, EstimateInput(train="lora", lora_targets=["query"]))


def test_checkpointing_predicts_fewer_saved_activations(gqa):
    base = dict(dtype="bf16", train="lora", batch=2, seq=512)
    off = estimate(gqa, EstimateInput(**base))
    on = estimate(gqa, EstimateInput(**base, gradient_checkpointing=True))
    assert on.activation_bytes < off.activation_bytes / 2
    assert on.activation_peak_bytes > on.activation_bytes  # one layer is recomputed during backward
    assert off.activation_bytes > 0 and off.kv_cache_bytes is None  # training: no KV cache


def test_inconsistent_inputs_name_the_flag():
    with pytest.raises(ValueError, match="qlora trains over 4-bit"):
        EstimateInput(train="qlora")
    with pytest.raises(ValueError, match="cannot update nf4"):
        EstimateInput(train="full", quant="nf4")
    with pytest.raises(ValueError, match="--batch and --seq together"):
        EstimateInput(batch=4)


def test_cli_json_has_the_documented_keys(gqa_path):
    res = cli(str(gqa_path), "--dtype", "bf16", "--train", "qlora", "--quant", "nf4", "--double-quant", "--lora-r", "16",
              "--lora-targets", "q_proj,k_proj,v_proj,o_proj", "--optimizer", "adamw8bit", "--zero-stage", "2",
              "--world-size", "2", "--batch", "2", "--seq", "256", "--gradient-checkpointing", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    for key in ("params", "trainable_params", "params_bytes", "grads_bytes", "optimizer_bytes", "activation_bytes",
                "kv_cache_bytes_per_token", "kv_cache_bytes", "quantized_bits_per_param", "per_rank_bytes", "total_bytes"):
        assert key in data, key
    assert data["total_bytes"] == 2 * data["per_rank_bytes"] and data["trainable_params"] > 0


def test_cli_human_output_and_errors(gqa_path):
    res = cli("--params", "7000000000", "--dtype", "bf16", "--train", "full", "--mixed-precision")
    assert res.returncode == 0, res.stderr
    assert "GiB" in res.stdout and "104.308 GiB" in res.stdout  # 16 bytes x 7e9 parameters
    bad = cli(str(gqa_path), "--train", "full", "--quant", "nf4")
    assert bad.returncode == 2 and "--train" in bad.stderr and "cannot update nf4" in bad.stderr
    neither = cli()
    assert neither.returncode == 2 and "--params" in neither.stderr
    missing = cli("no/such/config.json")
    assert missing.returncode == 2 and "no/such/config.json" in missing.stderr
    broken = gqa_path.parent / "broken.json"
    broken.write_text("{not json")
    res = cli(str(broken))
    assert res.returncode == 2 and "not a readable JSON config" in res.stderr
    broken.write_text(json.dumps({"model_type": "nosuchmodel"}))
    res = cli(str(broken))
    assert res.returncode == 2 and "nosuchmodel" in res.stderr and "Traceback" not in res.stderr


def test_planner_crosses_list_settings_into_named_cells(tmp_path):
    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.spec.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text("""
name: x
model: tiny
precisions: [fp32]
training:
  modes: [{kind: lora}]
  batch_size: [4, 8]
  gradient_checkpointing: [false, true]
  optimizer: paged_adamw
""")
    host = Host.detect()
    p = plan(load_suite(path), host)
    assert [c.cell.id for c in p.cells] == ["x-train-lora-fp32-bs4-nogc", "x-train-lora-fp32-bs4-gc",
                                            "x-train-lora-fp32-bs8-nogc", "x-train-lora-fp32-bs8-gc"]
    assert {c.cell.settings["optimizer"] for c in p.cells} == {"paged_adamw"}
    no_bnb = host.model_copy(update={"packages": host.packages | {"bitsandbytes": None}})
    skipped = plan(load_suite(path), no_bnb)
    assert all("needs bitsandbytes" in (c.skip or "") for c in skipped.cells)
    from harness.spec.suite import SuiteError

    for bad, message in (("[4, 0]", "batch_size"), ("[]", "empty list"), ("[4, 4]", "repeated values 4")):
        path.write_text(path.read_text().replace("batch_size: [4, 8]", f"batch_size: {bad}"))
        with pytest.raises(SuiteError, match=message):
            load_suite(path)
        path.write_text(path.read_text().replace(f"batch_size: {bad}", "batch_size: [4, 8]"))
