"""`harness report`: a section per (suite, machine) with its figures (one per model), its tables, then
the cells that are not valid, skipped and failed, each list apart; rows linked to their records with the
command that reproduces them. Records are built in code (the numbers are the test's inputs);
tests/test_suites.py reports the suites' real records, tests/test_report_browser.py looks at the page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from harness.base.host import GPU
from harness.results.records import Metric, Record, Validity
from harness.results.store import Store
from harness.track.report import build, machine_of
from harness.track.report.machine import gpu_slug
from harness.track.report.plots import load_axis, load_of
from harness.track.report.sections import model_ref
from harness.track.report.serving import series_of

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
MiB = 2**20
EMBEDDED = {"kind": "embedded", "id": "smollm2-135m-instruct"}
TINY = {"kind": "tiny", "arch": "llama", "hidden_size": 256, "num_hidden_layers": 2}
CONTENDED = Validity(valid=False, reasons=["foreign CPU: other processes took 62% of the cell's 2 cores"])


@pytest.fixture(scope="module")
def env():
    from harness.results.environment import capture

    return capture()


def rec(env, cell_id: str, cell: dict, metrics: dict[str, tuple[float, str]] | None = None, status: str = "ok",
        reason: str | None = None, n: int = 0, analytic: tuple[str, ...] = (), suite: str = "s",
        validity: Validity | None = None) -> Record:
    """A record of ``cell`` (model: the embedded one, device: cpu, unless given) in ``suite``."""
    ms = {k: Metric(value=v, unit=u, source="analytic" if k.endswith("_analytic") or k in analytic else "measured")
          for k, (v, u) in (metrics or {}).items()}
    cell = {"model": EMBEDDED, "device": "cpu", **cell}
    return Record(record_id=f"{n:04d}{abs(hash((suite, cell_id, str(env.gpus)))) % 10**8:08d}", suite=suite, cell_id=cell_id,
                  cell_key="k", code_key="c", cell=cell, status=status, reason=reason, metrics=ms, validity=validity,
                  environment=env, seed=0, started_at=T0 + timedelta(minutes=n), duration_s=2.0,
                  command=f"harness run suites/{suite}.yaml --only {cell_id}")


def train(env, cell_id: str, mode: str, prec: str, scale: float, n: int, **kw) -> Record:
    metrics = {}
    for name, base in (("params_bytes", 500), ("grads_bytes", 100), ("optimizer_bytes", 200), ("activation_saved_bytes", 300)):
        metrics[name] = (base * MiB * scale, "bytes")
        metrics[f"{name}_analytic"] = (base * MiB * scale * 0.97, "bytes")
    metrics |= {"loss": (2.0, "nats"), "train_tok_s": (900.0, "tok/s")}
    return rec(env, cell_id, {"scenario": "train", "mode": {"kind": mode}, "precision": {"kind": prec},
                              "settings": {"gradient_checkpointing": False}, **kw.pop("cell", {})}, metrics, n=n, **kw)


def serve(env, cell_id: str, engine: dict, load: int | None, tput: float, ttft: float, n: int, **kw) -> Record:
    cell = {"scenario": "serve", "engine": engine, "precision": {"kind": "bf16"},
            "settings": {"load": {"kind": "concurrency", "concurrency": load}} if load else {}}
    return rec(env, cell_id, cell, {"output_tok_s": (tput, "tok/s"), "ttft_ms": (ttft, "ms"), "ttft_p90_ms": (ttft * 1.5, "ms"),
                                    "ttft_p99_ms": (ttft * 2, "ms"), "decode_tok_s": (tput * 1.2, "tok/s"),
                                    "decode_bound_tok_s_analytic": (tput * 5, "tok/s"),
                                    "decode_efficiency_ratio": (0.24, "ratio")}, n=n, **kw)


def records(env, suite: str = "s") -> list[Record]:
    """One suite on one model: training (one oom), serving (two offline engines, a server at two loads),
    inference (one skipped)."""
    out = [train(env, f"{suite}-train-{mode}-{prec}", mode, prec, scale, i, suite=suite)
           for i, (mode, prec, scale) in enumerate([("full", "fp32", 4.0), ("lora", "fp32", 1.2), ("qlora", "nf4", 0.5)])]
    out.append(rec(env, f"{suite}-train-full-bf16-big", {"scenario": "train", "mode": {"kind": "full"}, "precision": {"kind": "bf16"}},
                   {"params_bytes_analytic": (900 * MiB, "bytes")}, status="oom", reason="out of memory at batch_size=16", n=3,
                   suite=suite))
    for i, (engine, load, tput, ttft) in enumerate([({"kind": "hf-static", "batch_size": 8}, None, 60.0, 3000.0),
                                                    ({"kind": "vllm-continuous", "max_num_seqs": 8}, None, 180.0, 400.0),
                                                    ({"kind": "vllm-server", "max_num_seqs": 8}, 2, 90.0, 150.0),
                                                    ({"kind": "vllm-server", "max_num_seqs": 8}, 8, 170.0, 600.0)]):
        out.append(serve(env, f"{suite}-serve-{engine['kind']}-bf16" + (f"-c{load}" if load else ""), engine, load, tput, ttft,
                         10 + i, suite=suite))
    for i, (prec, bits, ex, ppl) in enumerate([("fp32", 32.0, 0.30, 27.0), ("bf16", 16.0, 0.30, 27.1), ("nf4", 4.14, 0.20, 32.7)]):
        out.append(rec(env, f"{suite}-infer-{prec}", {"scenario": "infer", "precision": {"kind": prec}},
                       {"quant_bits_per_param": (bits, "bits"), "text2sql_ex_ratio": (ex, "ratio"), "perplexity": (ppl, "ppl"),
                        "top1_agreement_ref_ratio": (1.0 - (32 - bits) / 100, "ratio")}, n=20 + i, suite=suite))
    out.append(rec(env, f"{suite}-infer-gptq", {"scenario": "infer", "precision": {"kind": "gptq"}}, status="skipped",
                   reason="gptqmodel is not installed", n=30, suite=suite))
    return out


def test_report_has_sections_figures_tables_links_and_reasons(tmp_path, env):
    rs = records(env)
    # an older record of a cell is superseded by its latest
    rs.append(rec(env, "s-infer-fp32", {"scenario": "infer", "precision": {"kind": "fp32"}}, status="error", reason="old", n=-5))
    rep = build(rs, tmp_path / "r")
    machine = f"cpu-{env.cpu_count}c"
    assert rep.sections == [("s", machine)] and rep.records == len(rs) - 1 and rep.missing_figures == {}
    assert sorted(f.kind for f in rep.figures) == ["accuracy-bits", "decode-bound", "memory-anatomy", "serving-load"]
    for f in rep.figures:
        assert f.path.name == f"{f.kind}--s--{machine}--embedded-smollm2-135m-instruct.png"
        assert f.path.stat().st_size > 10_000 and f.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (f.suite, f.machine, f.model) == ("s", machine, "embedded:smollm2-135m-instruct")
    anatomy = next(f for f in rep.figures if f.kind == "memory-anatomy")
    assert anatomy.cells == ["s-train-full-fp32", "s-train-lora-fp32", "s-train-qlora-nf4", "s-train-full-bf16-big"]
    md = rep.markdown.read_text()
    assert md.index("## s on cpu") < md.index("### Figures") < md.index("### Inference: storage and accuracy")
    for title in ("### Inference: storage and accuracy", "### Training", "### Training memory anatomy",
                  "### Serving: throughput and latency", "### Serving: engine, KV cache and decode bound"):
        assert title in md, title
    # every row links to its record, which exists, and prints its command
    rows = [line for line in md.splitlines() if line.startswith("| [")]
    assert rows and all(re.search(r"\| `harness run suites/s.yaml --only [\w-]+` \|$", line) for line in rows)
    links = re.findall(r"\]\((records/(\w+)\.json)\)", md)
    assert links
    for link, record_id in links:
        assert Record.model_validate_json((tmp_path / "r" / link).read_text()).record_id == record_id
    # skips and failures in lists of their own, after the tables
    skipped, failed = md.split("### Skipped (not run)")[1], md.split("### Failed")[1]
    assert md.index("### Skipped (not run)") > md.index("### Serving: engine")
    assert skipped.split("###")[0].strip() == "- s-infer-gptq: gptqmodel is not installed"
    assert failed.strip() == "- s-train-full-bf16-big: oom: out of memory at batch\\_size=16"  # record text, Markdown-escaped
    assert "| [s-infer-gptq](records/" in md and "| *skipped* |" in md and "| **oom** |" in md
    assert "s-train-full-bf16-big: oom: out of memory at batch_size=16" in rep.html.read_text()
    assert "| old" not in md and ": old" not in md  # the superseded record
    assert "| 2,000.00 / 1,940.00 |" in md  # measured / predicted anatomy in MiB
    html = rep.html.read_text()
    assert f'<img src="plots/memory-anatomy--s--{machine}--embedded-smollm2-135m-instruct.png"' in html
    assert '<div class="table-box"><table>' in html and 'href="records/' in html
    assert '<em class="badge skipped">skipped</em>' in html and '<strong class="badge failed">oom</strong>' in html
    assert f'<h2 id="s-on-cpu-{env.cpu_count}c">' in html and f'href="#s-on-cpu-{env.cpu_count}c"' in html


def test_two_suites_models_and_machines_are_never_mixed(tmp_path, env):
    """Records of two suites, two models and two machines: one section per (suite, machine), one figure
    per model; serving series keyed by suite, so two suites' cells are never one line."""
    # machine None: a record written before environment.machine reads as its host's default name
    gpu_env = env.model_copy(update={"gpus": [GPU(name="NVIDIA H100 80GB HBM3", memory_bytes=80 * 2**30)], "machine": None})
    cpu = f"cpu-{env.cpu_count}c"
    rs = [train(env, "t-train-full-fp32", "full", "fp32", 4.0, 0, suite="t"),
          train(env, "t-train-lora-fp32", "lora", "fp32", 1.0, 1, suite="t"),
          train(env, "t-train-full-fp32-tiny", "full", "fp32", 0.01, 2, suite="t", cell={"model": TINY}),
          train(gpu_env, "t-train-full-fp32", "full", "fp32", 4.0, 3, suite="t", cell={"device": "cuda"}),
          serve(env, "a-serve-vllm-server-bf16-c2", {"kind": "vllm-server", "max_num_seqs": 8}, 2, 90.0, 150.0, 4, suite="a"),
          serve(env, "a-serve-vllm-server-bf16-c8", {"kind": "vllm-server", "max_num_seqs": 8}, 8, 170.0, 600.0, 5, suite="a"),
          serve(env, "b-serve-vllm-server-bf16-c4", {"kind": "vllm-server", "max_num_seqs": 8}, 4, 120.0, 300.0, 6, suite="b")]
    rep = build(rs, tmp_path / "r")
    assert rep.sections == [("a", cpu), ("b", cpu), ("t", cpu), ("t", "h100-80gb-x1")]
    by = {(f.kind, f.suite, f.machine, f.model): f for f in rep.figures}
    assert sorted(by) == [("decode-bound", "a", cpu, "embedded:smollm2-135m-instruct"),
                          ("decode-bound", "b", cpu, "embedded:smollm2-135m-instruct"),
                          ("memory-anatomy", "t", cpu, "embedded:smollm2-135m-instruct"),
                          ("memory-anatomy", "t", cpu, "tiny:llama"),
                          ("memory-anatomy", "t", "h100-80gb-x1", "embedded:smollm2-135m-instruct"),
                          ("serving-load", "a", cpu, "embedded:smollm2-135m-instruct"),
                          ("serving-load", "b", cpu, "embedded:smollm2-135m-instruct")]
    cells = {r.cell_id: r for r in rs}
    for f in rep.figures:  # no figure mixes models, suites or machines
        assert len({(model_ref(cells[c].cell), cells[c].suite) for c in f.cells}) == 1, f
    assert by[("memory-anatomy", "t", cpu, "tiny:llama")].cells == ["t-train-full-fp32-tiny"]
    assert by[("memory-anatomy", "t", cpu, "embedded:smollm2-135m-instruct")].cells == ["t-train-full-fp32", "t-train-lora-fp32"]
    assert by[("serving-load", "a", cpu, "embedded:smollm2-135m-instruct")].cells == ["a-serve-vllm-server-bf16-c2",
                                                                                       "a-serve-vllm-server-bf16-c8"]
    assert len({f.path for f in rep.figures}) == len(rep.figures)
    # a cell id found on two machines is two cells, one per section, both kept
    md = rep.markdown.read_text()
    assert md.count("[t-train-full-fp32](records/") == 2 + 2  # the training table and the anatomy table, twice
    assert "## t on h100-80gb-x1" in md and "1 x NVIDIA H100 80GB HBM3 (80 GiB)" in md
    # the serving series of two suites are keyed apart even when handed over together
    keys = sorted(series_of(rs))
    assert keys == [("a", "vllm-server", "bf16", "concurrency"), ("b", "vllm-server", "bf16", "concurrency")]


def test_offline_engines_are_plotted_against_their_batch_limit_apart_from_server_loads(env):
    series = series_of(records(env))
    assert {k: [x for x, _ in v] for k, v in series.items()} == {
        ("s", "hf-static", "bf16", "offline"): [8.0], ("s", "vllm-continuous", "bf16", "offline"): [8.0],
        ("s", "vllm-server", "bf16", "concurrency"): [2.0, 8.0]}


def test_captions_say_what_where_when_and_on_which_model(tmp_path, env):
    rep = build(records(env), tmp_path / "r")
    md = rep.markdown.read_text()
    for f in rep.figures:
        assert f"Suite s, model embedded:smollm2-135m-instruct, machine cpu-{env.cpu_count}c" in f.caption
        assert f"CPU {env.cpu_model}, {env.cpu_count} cores" in f.caption and "records started 2026-11-01 00:" in f.caption
        assert f.caption.split(" Suite s,")[0] in md.replace("\\", "")
    serving = next(f for f in rep.figures if f.kind == "serving-load")
    assert "records started 2026-11-01 00:10 to 00:13 UTC" in serving.caption and "batch limit" in serving.caption


def test_machine_of_a_record(env):
    """The record's own machine when it names one; an older record without it reads as its host's default:
    the runner's devices, whatever device the cell used (the machine is the runner, not the cell)."""
    old = env.model_copy(update={"machine": None})
    assert machine_of(rec(old, "c", {"scenario": "infer"})) == f"cpu-{env.cpu_count}c"
    gpus = [GPU(name="NVIDIA A100-SXM4-80GB", memory_bytes=81920 * MiB)] * 2
    gpu_host = old.model_copy(update={"gpus": gpus})
    assert machine_of(rec(gpu_host, "g", {"scenario": "infer", "device": "cuda"})) == "a100-80gb-x2"
    assert machine_of(rec(gpu_host, "c", {"scenario": "infer", "device": "cpu"})) == "a100-80gb-x2"
    assert machine_of(rec(env.model_copy(update={"machine": "ci-l4"}), "g", {"scenario": "infer"})) == "ci-l4"
    assert [gpu_slug(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090", "Tesla T4", "NVIDIA H200")] == [
        "h100", "rtx-4090", "t4", "h200"]


def test_a_figure_without_data_is_named_not_drawn(tmp_path, env):
    rep = build([r for r in records(env) if r.cell["scenario"] == "infer"], tmp_path / "r")
    assert [f.kind for f in rep.figures] == ["accuracy-bits"]
    assert set(rep.missing_figures) == {"memory-anatomy", "serving-load", "decode-bound"}
    assert [p.name for p in (tmp_path / "r" / "plots").iterdir()] == [rep.figures[0].path.name]
    assert "*serving-load*: no record measured what it needs" in rep.markdown.read_text()


def test_load_of_a_serving_cell():
    assert load_of(Record.model_construct(cell={"settings": {"load": {"kind": "concurrency", "concurrency": 4}}})) == 4
    assert load_of(Record.model_construct(cell={"settings": {"load": {"kind": "poisson", "rate_req_s": 2.5}}})) == 2.5
    assert load_of(Record.model_construct(cell={"settings": {}, "engine": {"kind": "vllm-continuous", "max_num_seqs": 16}})) == 16
    assert load_axis(Record.model_construct(cell={"settings": {"load": {"kind": "poisson", "rate_req_s": 2.5,
                                                                        "max_concurrency": 4}}})) == ("rate", 2.5)
    assert load_axis(Record.model_construct(cell={"settings": {}, "engine": {"kind": "hf-static", "batch_size": 4}})) == ("offline", 4)
    assert load_axis(Record.model_construct(cell={"settings": {}, "engine": {"kind": "x"}})) is None


def test_cli_writes_the_report_and_refuses_a_missing_store(tmp_path, env):
    store = Store(tmp_path / "results")
    for r in records(env):
        store.append(r)
    run = lambda *a: subprocess.run([sys.executable, "-m", "harness.cli", "report", *map(str, a)], capture_output=True,  # noqa: E731
                                    text=True, timeout=300, env={**os.environ, "COLUMNS": "250"})
    res = run(tmp_path / "results", "--out", tmp_path / "out")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "out" / "report.html").is_file() and "report of 12 cells" in res.stdout
    res = run(tmp_path / "nowhere", "--out", tmp_path / "out2")
    assert res.returncode == 2 and "nowhere: no such result file or folder" in res.stderr
    assert not (tmp_path / "out2").exists()


def test_cells_that_are_not_valid_are_marked_and_skips_listed_apart(tmp_path, env):
    """An ok cell whose validity failed and an ``invalid`` one: a badge in the table, drawn hollow (named
    in the figure), listed with their reasons apart from the skipped cell and the failed one."""
    from io import StringIO

    from rich.console import Console

    from harness.track.summary import print_summary

    offline = {"kind": "hf-static", "batch_size": 8}
    contended = serve(env, "s-serve-hf-static-bf16", offline, None, 7.7, 900.0, 0, validity=CONTENDED)
    strict = serve(env, "s-serve-vllm-server-bf16-c2", {"kind": "vllm-server"}, 2, 20.0, 300.0, 1, status="invalid",
                   validity=Validity(valid=False, reasons=["timed region 0.02 s: under the 0.1 s floor"]))
    good = serve(env, "s-serve-vllm-server-bf16-c4", {"kind": "vllm-server"}, 4, 30.0, 400.0, 2)
    skipped = rec(env, "s-serve-vllm-static-nf4", {"scenario": "serve", "engine": {"kind": "vllm-static"}}, status="skipped",
                  reason="vLLM has no NF4 kernel on CPU", n=3)
    failed = rec(env, "s-serve-hf-continuous-bf16", {"scenario": "serve", "engine": {"kind": "hf-continuous"}}, status="error",
                 reason="RuntimeError: boom", n=4)
    rep = build([contended, strict, good, skipped, failed], tmp_path / "r")
    md = rep.markdown.read_text()
    assert "| ok, **not valid** |" in md and "| **invalid** |" in md and "| *skipped* |" in md and "| **error** |" in md
    assert "5 cells: 1 ok, 1 ok but **not valid**, 1 **invalid**, 1 *skipped*, 1 **error**" in md
    lists = md.split("### Not valid (measured, not trusted)")[1]
    not_valid = lists.split("### Skipped (not run)")[0].strip().splitlines()
    skips = lists.split("### Skipped (not run)")[1].split("### Failed")[0].strip().splitlines()
    fails = lists.split("### Failed")[1].strip().splitlines()
    assert not_valid == ["- s-serve-hf-static-bf16: foreign CPU: other processes took 62% of the cell's 2 cores",
                         "- s-serve-vllm-server-bf16-c2: timed region 0.02 s: under the 0.1 s floor"]
    assert skips == ["- s-serve-vllm-static-nf4: vLLM has no NF4 kernel on CPU"]
    assert fails == ["- s-serve-hf-continuous-bf16: error: RuntimeError: boom"]
    serving = next(f for f in rep.figures if f.kind == "serving-load")
    assert serving.cells == ["s-serve-hf-static-bf16", "s-serve-vllm-server-bf16-c2", "s-serve-vllm-server-bf16-c4"]
    assert serving.not_valid == ["s-serve-hf-static-bf16", "s-serve-vllm-server-bf16-c2"]
    assert "Not valid (hollow or faint): s-serve-hf-static-bf16, s-serve-vllm-server-bf16-c2." in md
    html = rep.html.read_text()
    assert html.count('<strong class="badge invalid">not valid</strong>') >= 3  # two tables and the legend
    assert '<strong class="badge invalid">invalid</strong>' in html
    buf = StringIO()
    print_summary([contended], Console(file=buf, width=250))
    out = buf.getvalue()
    assert "ok, NOT VALID" in out and "not valid: foreign CPU" in out and "(1 of them NOT VALID)" in out


def test_record_text_is_shown_as_text_never_run(tmp_path, env):
    """A reason or command carrying HTML or Markdown (an exception message from a model's files, say)
    renders as its own text in report.html: no tag, no link, no emphasis is made from it."""
    evil = "<img src=x onerror=alert(1)> <script>alert(2)</script> [click](javascript:alert(3)) **bold** a|b"
    bad = rec(env, "s-infer-fp32", {"scenario": "infer", "precision": {"kind": "fp32"}}, status="error", reason=evil)
    bad = bad.model_copy(update={"command": "harness run `rm -rf ~` <b>x</b>"})
    page = build([bad], tmp_path / "r").html.read_text()
    body = page.split("<body>", 1)[1]
    assert "<img" not in body and "<script" not in body and "<b>" not in body and "<strong>bold" not in body
    assert 'href="javascript' not in body
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "<code>harness run `rm -rf ~` &lt;b&gt;x&lt;/b&gt;</code>" in body  # the command, whole, as code


def test_suite_and_model_names_from_records_are_escaped_in_headings_files_and_figures(tmp_path, env):
    """A suite or model name is record text too: escaped in the Markdown, slugged in file names, drawn
    as plain text (a ``$`` is not math)."""
    odd = {"kind": "local", "path": "/m/<b>$x$</b>"}
    r = train(env, "x-train-full-fp32", "full", "fp32", 1.0, 0, suite="<i>s|$1$", cell={"model": odd})
    rep = build([r], tmp_path / "r")
    (fig,) = rep.figures
    assert fig.path.name == f"memory-anatomy--i-s-1--cpu-{env.cpu_count}c--local-m-b-x-b.png" and fig.path.is_file()
    body = rep.html.read_text().split("<body>", 1)[1]
    assert "<i>" not in body and "<b>" not in body and "&lt;i&gt;s|$1$" in body
