"""Serving metrics on recorded timestamp traces with known answers, the load generator's arrival
statistics, and the workload's length distributions and prompt sources. Pure: no engine runs."""

from __future__ import annotations

import numpy as np
import pytest

from harness.base.wire import RequestTrace
from harness.engines.loadgen import LoadProfile, gamma_arrivals
from harness.measure.servemetrics import SLO, peak_concurrency, summarize, summarize_passes
from harness.spec.workloads import Lengths, Workload

# A: sent at 0, tokens at 100, 150, 250 ms. B: sent at 50 ms, tokens at 200, 300 ms. C: failed.
TRACES = [
    RequestTrace(prompt_tokens=10, output_tokens=3, submitted_s=0.0, first_token_s=0.1, finished_s=0.25,
                 token_times_s=[0.1, 0.15, 0.25]),
    RequestTrace(prompt_tokens=20, output_tokens=2, submitted_s=0.05, first_token_s=0.2, finished_s=0.3,
                 token_times_s=[0.2, 0.3]),
    RequestTrace(prompt_tokens=5, output_tokens=0, submitted_s=0.1, finished_s=0.12, error="HTTP 500"),
]


def test_metric_formulas_on_a_known_trace():
    m = summarize(TRACES, duration_s=0.3)
    assert m["ttft_ms"].samples == pytest.approx([100, 150])
    assert m["e2el_ms"].samples == pytest.approx([250, 250])
    assert m["tpot_ms"].samples == pytest.approx([75, 100])  # (E2EL - TTFT) / (n - 1)
    assert m["itl_ms"].samples == pytest.approx([50, 100, 100])  # every gap, pooled
    assert m["itl_ms"].value == pytest.approx(100) and m["itl_mean_ms"].value == pytest.approx(250 / 3)
    assert m["itl_p90_ms"].value == pytest.approx(100)
    # linear interpolation between order statistics: p90 of [100, 150] is 100 + 0.9 * 50
    assert m["ttft_p90_ms"].value == pytest.approx(145) and m["ttft_p99_ms"].value == pytest.approx(149.5)
    assert m["output_tok_s"].value == pytest.approx(5 / 0.3)  # completed requests only
    assert m["total_tok_s"].value == pytest.approx((5 + 30) / 0.3)
    assert m["request_throughput_req_s"].value == pytest.approx(2 / 0.3)
    assert (m["completed_requests"].value, m["failed_requests"].value) == (2, 1)
    assert m["peak_concurrency_requests"].value == 3
    assert "goodput_req_s" not in m


def test_passes_give_throughput_samples_pooled_latencies_and_worst_pass_counts():
    # three timed passes: TRACES in 0.3 s, then A alone in 0.5 s, then TRACES again in 0.4 s
    passes = [(TRACES, 0.3), (TRACES[:1], 0.5), (TRACES, 0.4)]
    m = summarize_passes(passes, SLO(ttft_ms=120))
    assert m["output_tok_s"].samples == pytest.approx([5 / 0.3, 3 / 0.5, 5 / 0.4])
    assert m["output_tok_s"].value == pytest.approx(5 / 0.4) and m["output_tok_s"].stat == "median"
    assert m["request_throughput_req_s"].samples == pytest.approx([2 / 0.3, 1 / 0.5, 2 / 0.4])
    assert m["total_tok_s"].value == pytest.approx(35 / 0.4)
    assert m["duration_s"].samples == pytest.approx([0.3, 0.5, 0.4]) and m["duration_s"].value == pytest.approx(0.4)
    assert m["goodput_req_s"].samples == pytest.approx([1 / 0.3, 1 / 0.5, 1 / 0.4])  # only A meets TTFT <= 120 ms
    assert m["goodput_req_s"].value == pytest.approx(1 / 0.4) and "median of passes" in m["goodput_req_s"].description
    # latencies: every completed request of every pass, pooled
    assert sorted(m["ttft_ms"].samples) == pytest.approx([100, 100, 100, 150, 150])
    assert m["ttft_ms"].value == pytest.approx(100) and m["ttft_mean_ms"].value == pytest.approx(600 / 5)
    assert m["e2el_ms"].samples == pytest.approx([250] * 5)
    assert sorted(m["itl_ms"].samples) == pytest.approx([50, 50, 50, 100, 100, 100, 100, 100])
    assert m["itl_p90_ms"].value == pytest.approx(float(np.percentile(m["itl_ms"].samples, 90)))
    # counts: one sample per pass, the worst pass as the value
    assert m["completed_requests"].samples == [2, 1, 2] and m["completed_requests"].value == 1
    assert m["completed_requests"].stat == "min"
    assert m["output_tokens"].samples == [5, 3, 5] and m["output_tokens"].value == 3
    assert m["failed_requests"].samples == [1, 0, 1] and m["failed_requests"].value == 1
    assert m["peak_concurrency_requests"].samples == [3, 1, 3] and m["peak_concurrency_requests"].value == 3


def test_one_pass_is_the_single_run_summary_and_passes_are_required():
    one, single = summarize_passes([(TRACES, 0.3)]), summarize(TRACES, 0.3)
    assert {k: (v.value, v.samples) for k, v in one.items()} == {k: (v.value, v.samples) for k, v in single.items()}
    assert one["output_tok_s"].samples == pytest.approx([5 / 0.3])
    with pytest.raises(ValueError, match="at least one pass"):
        summarize_passes([])
    with pytest.raises(ValueError, match="duration_s must be positive"):
        summarize_passes([(TRACES, 0.3), (TRACES, 0.0)])


@pytest.mark.parametrize(("slo", "good"), [
    (SLO(ttft_ms=120), 1), (SLO(ttft_ms=151), 2), (SLO(tpot_ms=80), 1), (SLO(e2el_ms=249), 0),
    (SLO(ttft_ms=200, tpot_ms=100, e2el_ms=250), 2), (SLO(ttft_ms=120, tpot_ms=50), 0),
])
def test_goodput_counts_requests_meeting_every_slo(slo, good):
    assert summarize(TRACES, duration_s=0.5, slo=slo)["goodput_req_s"].value == pytest.approx(good / 0.5)


def test_peak_concurrency_frees_a_slot_before_taking_one_at_the_same_instant():
    back_to_back = [RequestTrace(prompt_tokens=1, output_tokens=1, submitted_s=s, finished_s=s + 1) for s in (0, 1, 2)]
    assert peak_concurrency(back_to_back) == 1
    assert peak_concurrency(TRACES[:2]) == 2
    with pytest.raises(ValueError, match="duration_s must be positive"):
        summarize(TRACES, duration_s=0)


@pytest.mark.parametrize("burstiness", [1.0, 0.5, 4.0])
def test_arrivals_have_the_asked_rate_and_burstiness(burstiness):
    times = np.asarray(gamma_arrivals(20_000, rate=5.0, burstiness=burstiness, seed=1))
    gaps = np.diff(times)
    assert times[0] == 0 and np.all(gaps > 0)
    assert len(times) / times[-1] == pytest.approx(5.0, rel=0.03)  # the rate
    # gamma gaps: coefficient of variation 1/sqrt(shape); 1 for a Poisson process
    assert gaps.std() / gaps.mean() == pytest.approx(1 / np.sqrt(burstiness), rel=0.05)
    if burstiness == 1.0:  # Poisson: counts in 1 s windows have variance equal to their mean
        counts = np.bincount(times.astype(int))[:-1]
        assert counts.var() / counts.mean() == pytest.approx(1.0, rel=0.1)


def test_load_profiles_validate_and_name_themselves():
    assert LoadProfile(kind="concurrency", concurrency=8).arrival_times(3) == [0.0, 0.0, 0.0]
    p = LoadProfile(kind="poisson", rate_req_s=2.5, burstiness=0.5, max_concurrency=4, seed=3)
    assert p.label == "r2.5b0.5-c4" and p.limit() == 4
    assert p.arrival_times(50) == LoadProfile(kind="poisson", rate_req_s=2.5, burstiness=0.5, seed=3).arrival_times(50)
    with pytest.raises(ValueError, match="needs `rate_req_s`"):
        LoadProfile(kind="poisson")
    with pytest.raises(ValueError, match="needs `concurrency`"):
        LoadProfile(kind="concurrency")


def test_length_distributions_are_seeded_and_clipped():
    rng = np.random.default_rng(0)
    uniform = Lengths(dist="uniform", low=8, high=12).draw(5000, rng)
    assert set(uniform) == set(range(8, 13))
    logn = Lengths(dist="lognormal", median=32, sigma=0.8, max=64, min=4).draw(5000, np.random.default_rng(0))
    assert min(logn) >= 4 and max(logn) == 64 and np.median(logn) == pytest.approx(32, rel=0.1)
    assert Lengths(dist="fixed", value=7).draw(3, rng) == [7, 7, 7]
    with pytest.raises(ValueError, match="needs median, sigma, max"):
        Lengths(dist="lognormal")
    w = Workload(name="w", num_requests=20, output_tokens={"dist": "lognormal", "median": 16, "sigma": 1, "max": 128})
    assert w.output_lengths() == w.output_lengths() and max(w.output_lengths()) <= 128


def test_prompt_sources_on_the_tiny_tokenizer():
    from transformers import AutoTokenizer

    from harness.models.tiny import Tiny

    tok = AutoTokenizer.from_pretrained(Tiny().resolve().path)
    shared = Workload(name="s", source="shared-prefix", shared_prefix_tokens=24, num_requests=6,
                      prompt_tokens={"dist": "uniform", "low": 32, "high": 48}, output_tokens=4).requests(tok)
    assert len({tuple(r.prompt_token_ids[:24]) for r in shared}) == 1
    assert len({tuple(r.prompt_token_ids[24:]) for r in shared}) == 6
    assert all(32 <= len(r.prompt_token_ids) <= 48 for r in shared)
    rand = Workload(name="r", source="random", num_requests=4, prompt_tokens=16, output_tokens=[2, 8]).requests(tok)
    assert all(len(r.prompt_token_ids) == 16 for r in rand)
    assert not set(tok.all_special_ids) & {i for r in rand for i in r.prompt_token_ids}
    assert [r.output_tokens for r in rand] == Workload(name="r", source="random", num_requests=4, prompt_tokens=16,
                                                       output_tokens=[2, 8]).output_lengths()
    with pytest.raises(ValueError, match="shared_prefix_tokens"):
        Workload(name="x", source="shared-prefix", shared_prefix_tokens=64, prompt_tokens=32)
