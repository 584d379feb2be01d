"""The training axis on the tiny model, genuinely (torch, peft, bitsandbytes on CPU): the measured
memory anatomy equals the estimator's prediction, checkpointing cuts saved activations, a memory cap
turns into an oom record, and the gradient check catches a broken QLoRA setup."""

from __future__ import annotations

import pytest

from tests.conftest import ok, run_suite_text

ANATOMY_SUITE = """
name: tt
model: tiny
timeout_s: 600
precisions:
  - kind: fp32
  - kind: bf16
  - kind: nf4
training:
  modes:
    - kind: full
    - kind: lora
      r: 8
      targets: [q_proj, k_proj, v_proj, o_proj, gate_proj]
    - kind: qlora
      r: 4
      targets: [q_proj, v_proj, down_proj]
  gradient_checkpointing: [false, true]
  batch_size: 2
  seq_len: 64
  steps: 2
  lr: 1.0e-3
"""

OPTIMIZER_SUITE = """
name: to
model: tiny
timeout_s: 600
precisions:
  - kind: fp32
training:
  modes:
    - kind: lora
      r: 16
      targets: [q_proj, gate_proj]
  optimizer: [adamw8bit, paged_adamw, sgd]
  grad_accum: 2
  batch_size: 2
  seq_len: 64
  steps: 2
  lr: 1.0e-3
"""

OOM_SUITE = """
name: toom
model: tiny
timeout_s: 600
precisions:
  - kind: fp32
training:
  modes:
    - kind: full
  batch_size: [1, 16]
  seq_len: 256
  steps: 1
  warmup_steps: 0
  grad_check: false
  memory_cap_gib: 0.25
"""

EXACT = ("trainable_params", "params_bytes", "grads_bytes", "optimizer_bytes")
TINY = {"h": 256, "i": 512, "kv": 128, "layers": 2}  # the tiny model's widths (2 KV heads of 64)


@pytest.fixture(scope="module")
def anatomy(tmp_path_factory):
    return run_suite_text(tmp_path_factory.mktemp("anatomy"), ANATOMY_SUITE)[3]


@pytest.fixture(scope="module")
def optimizer_records(tmp_path_factory):
    return run_suite_text(tmp_path_factory.mktemp("optim"), OPTIMIZER_SUITE)[3]


RUNNABLE = [f"tt-train-{m}-{p}-{gc}" for m, p in (("full", "fp32"), ("full", "bf16"), ("lora", "fp32"),
                                                   ("lora", "bf16"), ("qlora", "nf4")) for gc in ("nogc", "gc")]


@pytest.mark.parametrize("cell_id", RUNNABLE)
def test_measured_anatomy_equals_the_prediction_exactly(anatomy, cell_id):
    r = ok(anatomy, cell_id)
    for name in EXACT:
        assert r.metric(name) == r.metric(f"{name}_analytic"), (name, r.metric(name), r.metric(f"{name}_analytic"))
        assert r.metric(f"{name}_residual") == 0
        assert r.metrics[f"{name}_analytic"].source == "analytic"
    # the activation model is not exact by construction; on this model it is within 1 %
    acts, predicted = r.metric("activation_saved_bytes"), r.metric("activation_saved_bytes_analytic")
    assert abs(acts - predicted) <= 0.01 * acts, (acts, predicted)
    assert r.info["grad_check"]["missing"] == [] and r.info["grad_check"]["checked"] == r.info["grad_check"]["tensors"]
    assert r.info["grad_check"]["max_rel_error"] <= r.info["grad_check"]["tolerance"]
    assert r.info["loss_decreased"] and r.info["params_without_grad"] == 0
    assert r.info["estimate"]["inputs"]["train"] == cell_id.split("-")[2]


def test_anatomy_matches_the_textbook_counts(anatomy):
    """Independent of the estimator: LoRA trains r*(d_in+d_out) per adapted matrix; full AdamW keeps
    two moments per parameter plus one fp32 step scalar per tensor; fp32 gradients are 4 bytes each."""
    h, i, kv, layers = TINY["h"], TINY["i"], TINY["kv"], TINY["layers"]
    lora = ok(anatomy, "tt-train-lora-fp32-nogc")
    per_layer = 8 * ((h + h) + (h + kv) + (h + kv) + (h + h) + (h + i))  # q, k, v, o, gate
    assert lora.metric("trainable_params") == layers * per_layer
    assert lora.metric("grads_bytes") == 4 * layers * per_layer
    qlora = ok(anatomy, "tt-train-qlora-nf4-nogc")
    assert qlora.metric("trainable_params") == layers * 4 * ((h + h) + (h + kv) + (i + h))  # q, v, down at r=4
    full = ok(anatomy, "tt-train-full-fp32-nogc")
    n = full.metric("params")
    assert full.metric("trainable_params") == n and full.metric("params_bytes") == 4 * n == full.metric("grads_bytes")
    tensors = full.info["estimate"]["trainable_tensors"]
    assert full.metric("optimizer_bytes") == 2 * 4 * n + 4 * tensors
    bf16 = ok(anatomy, "tt-train-full-bf16-nogc")
    assert bf16.metric("params_bytes") == 2 * n and bf16.metric("optimizer_bytes") == 2 * 2 * n + 4 * tensors
    # the 4-bit base: most weights cost about half a byte, so QLoRA's parameters are far below LoRA's
    assert qlora.metric("params_bytes") < 0.6 * lora.metric("params_bytes")


@pytest.mark.parametrize("mode", ["full-fp32", "lora-fp32", "lora-bf16", "qlora-nf4"])
def test_checkpointing_cuts_saved_activations_and_keeps_the_losses(anatomy, mode):
    off, on = ok(anatomy, f"tt-train-{mode}-nogc"), ok(anatomy, f"tt-train-{mode}-gc")
    assert on.metric("activation_saved_bytes") < off.metric("activation_saved_bytes") / 2
    assert on.metric("activation_saved_bytes_analytic") < off.metric("activation_saved_bytes_analytic")
    # recomputation reproduces the forward pass: the loss curve is the same
    assert on.metrics["loss"].samples == pytest.approx(off.metrics["loss"].samples, rel=1e-5)
    for r in (on, off):
        assert r.metric("backward_peak_alloc_bytes") > 0 and r.metric("peak_rss_bytes") > 0


def test_unsupported_combinations_are_skipped_with_their_reason(anatomy):
    assert "cannot update nf4 quantized weights" in anatomy["tt-train-full-nf4-nogc"].reason
    assert "qlora mode" in anatomy["tt-train-lora-nf4-nogc"].reason
    assert "4-bit bitsandbytes base" in anatomy["tt-train-qlora-fp32-gc"].reason


@pytest.mark.parametrize("optimizer", ["adamw8bit", "pagedadamw", "sgd"])
def test_optimizer_state_is_exact_and_paging_is_not_claimed_on_cpu(optimizer_records, optimizer):
    r = ok(optimizer_records, f"to-train-lora-fp32-{optimizer}")
    for name in EXACT:
        assert r.metric(name) == r.metric(f"{name}_analytic"), name
    info = r.info["optimizer"]
    assert info["paged_in_effect"] is False
    assert info["paged"] is (optimizer == "pagedadamw")
    h, i, layers = TINY["h"], TINY["i"], TINY["layers"]
    if optimizer == "sgd":
        assert r.metric("optimizer_bytes") == 0
    elif optimizer == "pagedadamw":  # bitsandbytes' 32-bit state: two fp32 moments, whatever the weights
        assert r.metric("optimizer_bytes") == 8 * r.metric("trainable_params")
    else:
        # q's A (16 x 256 = 4096) and B and gate's A reach the 8-bit threshold: one byte per moment
        # plus an fp32 absmax per 256; gate's B (512 x 16 = 8192) too; the two maps are shared
        sizes = [16 * h, h * 16, 16 * h, i * 16] * layers
        expected = sum(2 * n + 2 * 4 * -(-n // 256) if n >= 4096 else 8 * n for n in sizes) + 2 * 256 * 4
        assert r.metric("optimizer_bytes") == expected
    assert r.info["steps"]["grad_accum"] == 2 and r.info["tokens_per_step"] == 2 * 64 * 2


def test_out_of_memory_is_a_record_with_its_setting(tmp_path):
    _, store, _, records = run_suite_text(tmp_path, OOM_SUITE)
    small, big = records["toom-train-full-fp32-bs1"], records["toom-train-full-fp32-bs16"]
    assert small.status == "ok", f"{small.reason}\n{small.log_tail}"
    assert big.status == "oom", f"{big.status}: {big.reason}"
    assert "batch_size=16" in big.reason and "memory cap of 0.25 GiB" in big.reason
    # the failure keeps the prediction, so the anatomy table can show what did not fit
    assert big.metric("anatomy_total_bytes_analytic") > small.metric("anatomy_total_bytes_analytic")
    assert big.info["memory_cap"]["cap_bytes"] == int(0.25 * 2**30)
    from harness.track.tables import anatomy_view

    view = anatomy_view([small, big])
    assert view.headers == ["model", "gradients", "optimizer", "activations", "total", "residual"]
    assert [r.cell_id for r, _ in view.rows] == [small.cell_id, big.cell_id]
    predicted_total = big.metric("anatomy_total_bytes_analytic") / 2**20
    assert view.rows[1][1][4] == f"- / {predicted_total:,.2f}"  # the oom row: nothing measured, the prediction shown
    assert view.rows[0][1][4].startswith(f"{small.metric('anatomy_total_bytes') / 2**20:,.2f} / ")


def test_the_gradient_check_catches_lora_that_lost_its_gradients(tmp_path):
    """bitsandbytes repacks 4-bit weights for CPU inference at the first no-grad forward in eval mode (on CPUs
    with AVX512-BF16); afterwards most LoRA tensors get wrong or no gradients while the loss still falls. A wrong gradient
    on a single adapter matrix is caught too."""
    import torch

    from harness.measure import gradcheck
    from harness.scenarios.training.gradients import check_gradients, wake_lora
    from harness.scenarios.training.loop import load_for_training, step_batches
    from harness.spec.cell import Cell
    from harness.spec.training import StepSettings

    settings = StepSettings(batch_size=1, seq_len=32)
    cell = Cell(suite="g", id="g", scenario="train", model={"kind": "tiny"}, precision={"kind": "nf4"},
                mode={"kind": "qlora", "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]},
                settings=settings.model_dump(mode="json"), device="cpu", seed=0, timeout_s=600)
    path = str(cell.model.resolve().path)
    batch = step_batches(path, settings, "cpu")[0]

    def fresh():
        return wake_lora(load_for_training(cell, path, settings), seed=0)

    def twin_for(lm):
        return gradcheck.reference_model(lm, lambda: load_for_training(cell, path, settings, dtype=torch.float64))

    result = check_gradients(cell, path, settings, batch)
    assert result["missing"] == [] and result["checked"] == result["tensors"] == 16
    assert 0 < result["max_rel_error"] < result["tolerance"]  # B is non-zero, so A's gradients are checked too

    from bitsandbytes.functional import has_avx512bf16

    broken = fresh()
    broken.eval()
    with torch.no_grad():
        broken(input_ids=batch)  # an evaluation pass first: the bug's trigger
    broken.train()
    repacked = any(getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False)
                   for m in broken.modules() if hasattr(m, "weight"))
    # bitsandbytes repacks only on CPUs with AVX512-BF16 (its CPU kernel's condition); elsewhere the pass leaves
    # the weights alone and the same check must pass: it tells the two apart, on either kind of CPU
    assert repacked == bool(has_avx512bf16())
    if repacked:
        with pytest.raises(gradcheck.GradientCheckError, match="gradient check failed"):
            gradcheck.check(broken, twin_for(broken), batch, "bfloat16")
    else:
        assert gradcheck.check(broken, twin_for(broken), batch, "bfloat16")["missing"] == []

    skewed = fresh()
    name, a = next((n, p) for n, p in skewed.named_parameters() if "lora_A" in n)
    a.register_hook(lambda g: g * 1.5)  # one adapter matrix gets a wrong gradient
    with pytest.raises(gradcheck.GradientCheckError, match="1 of 16"):
        gradcheck.check(skewed, twin_for(skewed), batch, "bfloat16")


def test_the_distributed_suite_records_per_rank_bytes_against_the_zero_prediction(tmp_path):
    """suites/distributed.yaml as shipped: DDP, FSDP sharded like ZeRO-2 and ZeRO-3, two gloo ranks."""
    from tests.conftest import REPO

    records = run_suite_text(tmp_path, (REPO / "suites" / "distributed.yaml").read_text())[3]
    ddp, z2, z3 = (ok(records, f"distributed-train-full-fp32-{e}") for e in ("ddp", "fsdp-zero2", "fsdp-zero3"))
    assert "CUDA runners" in records["distributed-train-full-fp32-deepspeed-zero3"].reason
    whole = ddp.metric("params_bytes")
    for r in (ddp, z2, z3):
        assert len(r.metrics["params_bytes"].samples) == 2 and r.info["world_size"] == 2
        # the tiny model's widths are even: FSDP's shards need no padding, so ZeRO's division is exact
        for name in ("params_bytes", "grads_bytes", "optimizer_bytes", "trainable_params"):
            assert r.metric(f"{name}_residual") == 0, (r.cell_id, name, r.metric(name), r.metric(f"{name}_analytic"))
        assert r.info["loss_decreased"]
    assert z2.metric("params_bytes") == whole and z2.metric("params_bytes_at_rest") == whole // 2
    assert z3.metric("params_bytes") == whole // 2
    assert z2.metric("grads_bytes") == z3.metric("grads_bytes") == ddp.metric("grads_bytes") // 2
    assert z3.metric("optimizer_bytes") < ddp.metric("optimizer_bytes") * 0.51
    # every rank saw the same mean loss curve under every engine
    assert z3.metrics["loss"].samples == pytest.approx(ddp.metrics["loss"].samples, rel=1e-4)
