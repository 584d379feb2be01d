"""The report in a real browser (headless Chromium, tests/browser.py): a report of every figure kind
(training anatomy, serving with offline and server cells, accuracy against bits, decode against its
bound) with a cell that is not valid, a skipped one and a failure whose reason holds HTML, served on
127.0.0.1 and opened at 1400 px: every image loads, nothing scrolls the page sideways (wide tables
scroll in their own box), and nothing from a record runs or becomes an element."""

from __future__ import annotations

import pytest

from harness.results.records import Metric
from harness.track.report import build
from tests.browser import browser, screenshot, serve
from tests.test_report import CONTENDED, env, rec, records  # noqa: F401 (env: the fixture)

WIDE = ["request_throughput_req_s", "goodput_req_s", "tpot_ms", "tpot_p99_ms", "itl_p99_ms", "e2el_ms", "e2el_p99_ms",
        "failed_requests", "peak_concurrency_requests", "startup_s", "peak_rss_bytes", "kv_cache_capacity_tokens",
        "kv_cache_capacity_tokens_analytic", "prefix_cache_hit_ratio", "spec_acceptance_ratio", "mean_decode_batch_requests",
        "optimal_batch_requests_analytic"]
SCRIPT = "<script>window.PWNED=1</script>"
IMG = '<img src=x onerror="window.PWNED=2">'


@pytest.mark.timeout(120)
def test_report_renders_in_a_browser_without_page_scroll_or_record_markup(tmp_path, env):  # noqa: F811
    rs = records(env)
    # every column of the serving tables: wider than the page, so the table scrolls in its own box
    wide = {name: Metric(value=1234.5678, unit="ms") for name in WIDE}
    rs = [r.model_copy(update={"metrics": wide | r.metrics}) if r.cell["scenario"] == "serve" else r for r in rs]
    rs[5] = rs[5].model_copy(update={"validity": CONTENDED})  # the vLLM offline cell: ok, not valid
    rs.append(rec(env, "s-train-qlora-fp32", {"scenario": "train", "mode": {"kind": "qlora"}, "precision": {"kind": "fp32"}},
                  status="error", reason=f"RuntimeError: {SCRIPT} {IMG} in the model's files", n=40))
    rep = build(rs, tmp_path / "report")
    assert sorted(f.kind for f in rep.figures) == ["accuracy-bits", "decode-bound", "memory-anatomy", "serving-load"]
    with serve(tmp_path / "report") as url, browser(1400, 1600) as session:
        session.get(url + "report.html")
        images = session.execute_script(
            "return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(images) == 4 and all(done and width > 0 for _, done, width in images), images
        assert all(src.startswith("plots/") for src, _, _ in images)
        page = session.execute_script(
            "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth, pwned: typeof window.PWNED,"
            " scripts: document.querySelectorAll('script').length, onerror: document.querySelectorAll('[onerror]').length,"
            " text: document.body.innerText,"
            " boxes: [...document.querySelectorAll('.table-box')].map(b => [b.clientWidth, b.scrollWidth]),"
            " badges: [...document.querySelectorAll('.badge')].map(b => b.className + ':' + b.textContent)}")
        assert page["scroll"] <= page["inner"], page["scroll"]
        assert page["pwned"] == "undefined" and page["scripts"] == 0 and page["onerror"] == 0
        assert SCRIPT in page["text"] and IMG in page["text"]  # shown as text
        assert page["boxes"] and max(w for w, _ in page["boxes"]) <= page["inner"]
        assert any(s > w for w, s in page["boxes"]), "no table is wider than the page: nothing shows that it scrolls in its box"
        for badge in ("badge invalid:not valid", "badge skipped:skipped", "badge failed:oom", "badge failed:error"):
            assert badge in page["badges"], badge
        path = screenshot(session, "report", tmp_path)
    assert path.stat().st_size > 20_000
