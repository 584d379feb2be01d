"""`harness report`: tables per axis, four figures, rows linked to their records with the command that
reproduces them, skips and failures shown with their reasons. Records are built in code (the numbers
are the test's inputs); tests/test_embedded.py reports the suites' real records."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from harness.results.records import Metric, Record
from harness.results.store import Store
from harness.track.report import build
from harness.track.report.plots import load_of

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def env():
    from harness.results.environment import capture

    return capture()


def rec(env, cell_id: str, cell: dict, metrics: dict[str, tuple[float, str]] | None = None, status: str = "ok",
        reason: str | None = None, n: int = 0, analytic: tuple[str, ...] = ()) -> Record:
    ms = {k: Metric(value=v, unit=u, source="analytic" if k.endswith("_analytic") or k in analytic else "measured")
          for k, (v, u) in (metrics or {}).items()}
    return Record(record_id=f"{n:04d}{abs(hash(cell_id)) % 10**8:08d}", suite="s", cell_id=cell_id, cell_key="k", code_key="c",
                  cell=cell, status=status, reason=reason, metrics=ms, environment=env, seed=0,
                  started_at=T0 + timedelta(minutes=n), duration_s=2.0, command=f"harness run suites/s.yaml --only {cell_id}")


def records(env) -> list[Record]:
    MiB = 2**20
    out = []
    for i, (mode, prec, scale) in enumerate([("full", "fp32", 4.0), ("lora", "fp32", 1.2), ("qlora", "nf4", 0.5)]):
        out.append(rec(env, f"s-train-{mode}-{prec}", {"scenario": "train", "mode": {"kind": mode}, "precision": {"kind": prec},
                                                       "settings": {"gradient_checkpointing": False}},
                       {"params_bytes": (500 * MiB * scale, "bytes"), "params_bytes_analytic": (500 * MiB * scale, "bytes"),
                        "grads_bytes": (100 * MiB * scale, "bytes"), "grads_bytes_analytic": (100 * MiB * scale, "bytes"),
                        "optimizer_bytes": (200 * MiB * scale, "bytes"), "optimizer_bytes_analytic": (200 * MiB * scale, "bytes"),
                        "activation_saved_bytes": (300 * MiB, "bytes"), "activation_saved_bytes_analytic": (280 * MiB, "bytes"),
                        "loss": (2.0, "nats"), "train_tok_s": (900.0, "tok/s")}, n=i))
    out.append(rec(env, "s-train-full-bf16-big", {"scenario": "train", "mode": {"kind": "full"}, "precision": {"kind": "bf16"}},
                   {"params_bytes_analytic": (900 * MiB, "bytes")}, status="oom", reason="out of memory at batch_size=16", n=3))
    for i, (engine, load, tput, ttft) in enumerate([("hf-static", None, 60.0, 3000.0), ("vllm-continuous", None, 180.0, 400.0),
                                                    ("vllm-server", 2, 90.0, 150.0), ("vllm-server", 8, 170.0, 600.0)]):
        cell = {"scenario": "serve", "engine": {"kind": engine, "batch_size": 8} if engine == "hf-static"
                else {"kind": engine, "max_num_seqs": 8}, "precision": {"kind": "bf16"},
                "settings": {"load": {"kind": "concurrency", "concurrency": load}} if load else {}}
        out.append(rec(env, f"s-serve-{engine}-bf16" + (f"-c{load}" if load else ""), cell,
                       {"output_tok_s": (tput, "tok/s"), "ttft_ms": (ttft, "ms"), "ttft_p90_ms": (ttft * 1.5, "ms"),
                        "ttft_p99_ms": (ttft * 2, "ms"), "decode_tok_s": (tput * 1.2, "tok/s"),
                        "decode_bound_tok_s_analytic": (tput * 5, "tok/s"), "decode_efficiency_ratio": (0.24, "ratio")}, n=10 + i))
    for i, (prec, bits, ex, ppl) in enumerate([("fp32", 32.0, 0.30, 27.0), ("bf16", 16.0, 0.30, 27.1), ("nf4", 4.14, 0.20, 32.7)]):
        out.append(rec(env, f"s-infer-{prec}", {"scenario": "infer", "precision": {"kind": prec}},
                       {"quant_bits_per_param": (bits, "bits"), "text2sql_ex_ratio": (ex, "ratio"), "perplexity": (ppl, "ppl"),
                        "top1_agreement_ref_ratio": (1.0 - (32 - bits) / 100, "ratio")}, n=20 + i))
    out.append(rec(env, "s-infer-gptq", {"scenario": "infer", "precision": {"kind": "gptq"}}, status="skipped",
                   reason="gptqmodel is not installed", n=30))
    return out


def test_report_has_tables_figures_links_and_reasons(tmp_path, env):
    rs = records(env)
    # an older record of a cell is superseded by its latest
    rs.append(rec(env, "s-infer-fp32", {"scenario": "infer", "precision": {"kind": "fp32"}}, status="error", reason="old", n=-5))
    rep = build(rs, tmp_path / "r")
    assert sorted(f.path.name for f in rep.figures) == ["accuracy-bits.png", "decode-bound.png", "memory-anatomy.png", "serving-load.png"]
    assert rep.missing_figures == {} and rep.records == len(rs) - 1
    for f in rep.figures:
        assert f.path.stat().st_size > 10_000 and f.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    anatomy = next(f for f in rep.figures if f.path.stem == "memory-anatomy")
    assert anatomy.cells == ["s-train-full-fp32", "s-train-lora-fp32", "s-train-qlora-nf4", "s-train-full-bf16-big"]
    md = rep.markdown.read_text()
    for title in ("## Inference: storage and accuracy", "## Training", "## Training memory anatomy",
                  "## Serving: throughput and latency", "## Serving: engine, KV cache and decode bound"):
        assert title in md, title
    # every row links to its record, which exists, and prints its command
    rows = [line for line in md.splitlines() if line.startswith("| [")]
    assert rows and all(re.search(r"\| `harness run suites/s.yaml --only [\w-]+` \|$", line) for line in rows)
    links = re.findall(r"\]\((records/(\w+)\.json)\)", md)
    assert links
    for link, record_id in links:
        assert Record.model_validate_json((tmp_path / "r" / link).read_text()).record_id == record_id
    assert "s-infer-gptq: skipped: gptqmodel is not installed" in md
    assert "s-train-full-bf16-big: oom: out of memory at batch\\_size=16" in md  # record text, Markdown-escaped
    assert "s-train-full-bf16-big: oom: out of memory at batch_size=16" in rep.html.read_text()
    assert "| old" not in md and ": old" not in md  # the superseded record
    # measured / predicted anatomy in MiB
    assert "| 2,000.00 / 2,000.00 |" in md
    html = rep.html.read_text()
    assert '<img src="plots/memory-anatomy.png"' in html and "<table>" in html and 'href="records/' in html


def test_a_figure_without_data_is_named_not_drawn(tmp_path, env):
    rep = build([r for r in records(env) if r.cell["scenario"] == "infer"], tmp_path / "r")
    assert [f.path.stem for f in rep.figures] == ["accuracy-bits"]
    assert set(rep.missing_figures) == {"memory-anatomy", "serving-load", "decode-bound"}
    assert not (tmp_path / "r" / "plots" / "serving-load.png").exists()
    assert "*serving-load*: not drawn" in rep.markdown.read_text()


def test_load_of_a_serving_cell():
    assert load_of(Record.model_construct(cell={"settings": {"load": {"kind": "concurrency", "concurrency": 4}}})) == 4
    assert load_of(Record.model_construct(cell={"settings": {"load": {"kind": "poisson", "rate_req_s": 2.5}}})) == 2.5
    assert load_of(Record.model_construct(cell={"settings": {}, "engine": {"kind": "vllm-continuous", "max_num_seqs": 16}})) == 16


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


def test_records_that_are_not_valid_say_so_in_the_report_and_the_summary(tmp_path, env):
    from io import StringIO

    from rich.console import Console

    from harness.results.records import Validity
    from harness.track.summary import print_summary

    bad = Validity(valid=False, reasons=["foreign CPU: other processes took 62% of the cell's 2 cores"])
    contended = rec(env, "s-serve-hf-static-bf16", {"scenario": "serve", "engine": {"kind": "hf-static"}, "precision": {"kind": "bf16"}},
                    {"output_tok_s": (7.7, "tok/s")}).model_copy(update={"validity": bad})
    md = build([contended], tmp_path / "r").markdown.read_text()
    assert "| ok, **not valid** |" in md and "s-serve-hf-static-bf16: not valid: foreign CPU: other processes took 62%" in md
    assert "1 ok but not valid" in md
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
