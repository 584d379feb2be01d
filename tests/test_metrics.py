"""The metric catalog: every metric declared once; what the gate, asv and the tables read from it."""

from __future__ import annotations

import fnmatch

import pytest

from harness.metrics import UndeclaredMetricError, catalog, check, metric, spec_for
from harness.results.records import Metric
from harness.track.compare import rule_for


def test_every_table_column_is_declared():
    """A column is an ``info:`` field, a declared metric, or a pattern that selects declared metrics
    (``lmeval_*`` selects the ``lmeval_*_acc``... declarations, never an undeclared name)."""
    cat = catalog()
    for table in cat.tables:
        for column in table.columns:
            if column.startswith("info:"):
                continue
            if any(c in column for c in "*?["):
                selected = [s.name for s in cat.specs if fnmatch.fnmatchcase(s.name, column)]
                assert selected, (table.title, column)
                assert all(cat.spec(n) is not None for n in selected)
            else:
                assert cat.spec(column) is not None, (table.title, column)


def test_a_pattern_column_selects_only_declared_lm_eval_metrics():
    cat = catalog()
    table = next(t for t in cat.tables if "lmeval_*" in t.columns)
    names = {"quant_bits_per_param", "lmeval_harness_general_mc_acc", "perplexity"}
    assert cat.columns(table, names) == ["quant_bits_per_param", "lmeval_harness_general_mc_acc"]


@pytest.mark.parametrize("name, unit, direction, kind", [
    ("decode_tok_s_bs4", "tok/s", "higher", "speed"),
    ("ttft_p99_ms", "ms", "lower", "speed"),
    ("output_tok_s", "tok/s", "higher", "speed"),
    ("step_time_ms", "ms", "lower", "speed"),
    ("backward_peak_alloc_bytes", "bytes", "lower", "memory"),
    ("cuda_forward_max_allocated_bytes", "bytes", "lower", "memory"),
    ("text2sql_ex_ratio", "ratio", "higher", "accuracy"),
    ("failed_requests", "count", "lower", "accuracy"),
    ("perplexity", "ppl", "lower", "quality"),
    ("decode_efficiency_ratio", "ratio", "higher", "speed"),
])
def test_judged_metrics_take_direction_and_kind_from_the_catalog(name, unit, direction, kind):
    rule = rule_for(name, metric(name, 1.0))
    assert metric(name, 1.0).unit == unit
    assert rule is not None and (rule.direction, rule.kind) == (direction, kind)


@pytest.mark.parametrize("name", [
    "params_bytes_analytic", "params_bytes_residual", "quant_bits_per_param", "trainable_params", "load_s",
    "quantize_s", "memory_bandwidth_bytes_s", "kv_cache_capacity_bytes", "mean_decode_batch_requests",
    "output_length_ratio_ref",
])
def test_predictions_counts_host_facts_and_one_off_costs_are_not_judged(name):
    assert rule_for(name, metric(name, 1.0)) is None


def test_predictions_and_residuals_derive_from_their_metric():
    analytic, residual = spec_for("grads_bytes_analytic"), spec_for("grads_bytes_residual")
    assert (analytic.unit, analytic.source, analytic.direction) == ("bytes", "analytic", "neither")
    assert (residual.unit, residual.source, residual.kind) == ("bytes", "measured", "analytic")
    assert spec_for("nosuch_analytic") is None


def test_recording_an_undeclared_metric_fails():
    with pytest.raises(UndeclaredMetricError, match="'tok_per_watt' is not declared in the metric catalog"):
        metric("tok_per_watt", 3.0)
    check({"output_tok_s": Metric(value=1.0, unit="tok/s")})
    with pytest.raises(UndeclaredMetricError, match="'output_tok_s' recorded in 'tok/min'; the catalog declares 'tok/s'"):
        check({"output_tok_s": {"value": 1.0, "unit": "tok/min"}})
    with pytest.raises(UndeclaredMetricError, match="mystery"):
        check({"mystery": {"value": 1.0, "unit": "s"}})


def test_metric_takes_unit_statistic_and_source_from_the_declaration():
    m = metric("decode_tok_s_bs1", 42.0, samples=[41, 42, 43])
    assert (m.unit, m.stat, m.source, m.samples) == ("tok/s", "median", "measured", [41.0, 42.0, 43.0])
    assert metric("peak_rss_bytes", 1.0, description="the tree").description == "the tree"
    assert metric("decode_bound_tok_s_analytic", 1.0).source == "analytic"
    assert metric("ttft_p90_ms", 1.0).stat == "p90"


def test_a_name_is_declared_once():
    from harness.metrics.catalog import Catalog
    from harness.metrics.spec import m

    with pytest.raises(ValueError, match="'x_ms' is declared twice"):
        Catalog([m("x_ms", "ms", "lower", "speed", "a"), m("x_ms", "ms", "lower", "speed", "b")], [])
