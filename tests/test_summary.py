"""The terminal's summary tables: per suite, a handful of key columns in human units, fitting 120 columns
without folding, invalid records marked, and a pointer to `harness report` for the rest. The cells are
every cell the shipped suites plan (their real ids), with the widest values each column can take."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from harness.metrics import catalog
from harness.results.records import Metric, Record, Validity
from harness.track.summary import print_summary
from harness.track.tables import fmt, human_bytes, human_seconds, sig3

REPO = Path(__file__).resolve().parents[1]
# the widest value of each unit a shipped suite can give (a long run, a big model, a bad perplexity)
WIDEST = {"bytes": 999.9 * 2**30, "s": 999.9, "ms": 99_999.9, "tok/s": 99_999.9, "req/s": 999.9, "ratio": 0.0001234,
          "bits": 32.0, "ppl": 99_999.9, "nats": 12.3456, "count": 9_999_999}


@pytest.fixture(scope="module")
def records() -> list[Record]:
    from harness.base.host import Host
    from harness.pipeline.planner import plan
    from harness.results.environment import capture
    from harness.spec.suite import load_suite

    env, host, out = capture(), Host.detect(), []
    names = {c for t in catalog().tables for c, _ in t.compact} | {f"{n}{s}" for n in (
        "params_bytes", "grads_bytes", "optimizer_bytes", "activation_saved_bytes", "anatomy_total_bytes")
        for s in ("", "_analytic", "_residual")} | {"itl_p99_ms", "quant_bits_per_param_analytic", "ttft_p90_ms"}
    for i, path in enumerate(sorted((REPO / "suites").glob("*.yaml"))):
        p = plan(load_suite(path), host, source=str(path))
        for j, planned in enumerate(p.cells):
            metrics = {}
            for name in names:
                concrete = name.replace("*", "1")
                spec = catalog().spec(concrete)
                if spec is not None:
                    metrics[concrete] = Metric(value=-WIDEST.get(spec.unit, 99_999.9) if name.endswith("_residual")
                                               else WIDEST.get(spec.unit, 99_999.9), unit=spec.unit)
            status = "skipped" if planned.skip else "ok"
            validity = Validity(valid=j % 3 != 1, reasons=[] if j % 3 != 1 else ["foreign CPU: 62%"])
            out.append(Record(record_id=f"r{i:02d}{j:03d}", suite=p.suite, cell_id=planned.cell.id, cell_key="k",
                              code_key="c", cell=planned.cell.model_dump(mode="json"), status=status,
                              reason=planned.skip, metrics={} if planned.skip else metrics,
                              validity=None if planned.skip else validity, environment=env, seed=0,
                              started_at=datetime(2026, 12, 1, tzinfo=timezone.utc), duration_s=1.0,
                              command=f"harness run {path} --only {planned.cell.id}"))
    return out


def test_every_shipped_suite_fits_120_columns_without_folding(records):
    console = Console(width=120, file=StringIO(), record=True, force_terminal=False)
    print_summary(records, console, results="results")
    text = console.export_text()
    widest = max(len(line.rstrip()) for line in text.splitlines())
    tables = [line for line in text.splitlines() if ": " in line and not line.startswith(" ")]
    print(text)
    assert widest <= 120, f"{widest} columns"
    # not folded: every row is one line holding the cell's id (without its suite) and all its values
    for r in records:
        short = r.cell_id.removeprefix(f"{r.suite}-")
        status = "ok, NOT VALID" if r.status == "ok" and not r.trusted else r.status
        assert any(line.startswith(f" {short} ") and f" {status} " in line for line in text.splitlines()), (short, status)
    assert "…" not in text and "e+" not in text  # nothing cut off, no scientific notation
    for suite in {r.suite for r in records}:
        assert f"{suite}: Inference" in text or f"{suite}: Training" in text or f"{suite}: Serving" in text
    assert len(tables) >= 10
    assert "Every metric, figures and reproduce commands: harness report results --out report/" in text
    # the anatomy keeps its prediction beside the measurement
    assert "training: Training memory anatomy, measured" in text and "vs pred" in text


def test_human_units():
    assert [sig3(v) for v in (0, 0.0001234, 0.98765, 1.0, 17.53, 175.2, 1751.4, -2.5)] == [
        "0", "0.000123", "0.988", "1.00", "17.5", "175", "1,751", "-2.50"]
    assert sig3(math.nan) == "nan" and sig3(math.inf) == "inf"
    assert [human_seconds(v) for v in (0.00085, 0.0352, 3.7, 152.0)] == ["850 µs", "35.2 ms", "3.70 s", "152 s"]
    assert [human_bytes(v) for v in (512, 8.5 * 2**20, 513.1 * 2**20, 2.81 * 2**30, -3 * 2**20)] == [
        "512 B", "8.50 MiB", "513 MiB", "2.81 GiB", "-3.00 MiB"]
    assert fmt(161.37, "ms") == "161 ms" and fmt(1151.0, "ms") == "1.15 s" and fmt(11510.0, "tok/s") == "11,510"
    assert fmt(2048, "count") == "2,048" and fmt(None, "s") == "-"


def test_the_report_keeps_every_column(records):
    """The compact terminal drops columns; the report's tables (the full views) keep them."""
    from harness.track.tables import views

    full = {h for v in views(records) for h in v.headers}
    compact = {h for v in views(records, compact=True) for h in v.headers}
    assert {"quant_bits_per_param_analytic", "ttft_p90_ms", "itl_p99_ms", "ttft_p99_ms", "step_time_ms"} <= full
    assert {"TTFT p99", "step"} <= compact and not {"itl_p99_ms", "ttft_p90_ms", "quant_bits_per_param_analytic"} & compact
