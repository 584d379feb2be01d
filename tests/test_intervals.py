"""The 95 % intervals of accuracy figures: Wilson against known values, the bootstrap on fixed samples,
the token-weighted perplexity bootstrap, and paired differences."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from harness.measure import intervals
from harness.measure.intervals import (
    bootstrap,
    bootstrap_method,
    paired_bootstrap,
    perplexity_bootstrap,
    perplexity_delta_bootstrap,
    wilson,
    wilson_method,
)


def test_wilson_matches_the_formula_and_textbook_values():
    z = NormalDist().inv_cdf(0.975)
    k, n = 37, 50
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = wilson(k, n)
    assert (low, high) == (pytest.approx(centre - half, abs=1e-12), pytest.approx(centre + half, abs=1e-12))
    assert (round(low, 4), round(high, 4)) == (0.6045, 0.8413)  # by hand: 0.7229 -+ 0.1184
    # no successes still leaves room: the rule of three's cousin, 0/10 -> (0, 0.2775); and its mirror image
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson(10, 10) == (pytest.approx(0.7225, abs=1e-4), 1.0)
    assert wilson_method(37, 50) == "Wilson score, 37/50"
    for k, n in ((-1, 10), (11, 10), (0, 0)):
        with pytest.raises(ValueError, match="0 <= k <= n and n >= 1"):
            wilson(k, n)


def test_bootstrap_contains_the_statistic_is_seeded_and_narrows_with_more_data():
    rng = np.random.default_rng(7)
    small, large = rng.normal(10.0, 2.0, 20), rng.normal(10.0, 2.0, 2000)
    low, high = bootstrap(small)
    assert low < small.mean() < high
    assert bootstrap(small, seed=0) == (low, high)  # the seed makes it reproducible
    assert bootstrap(small, seed=1) != (low, high)
    big_low, big_high = bootstrap(large)
    assert big_high - big_low < (high - low) / 5  # ~ 1/sqrt(n): sqrt(100) = 10 times narrower, give or take
    # for a mean of many units it agrees with the normal interval, mean +- 1.96 s / sqrt(n)
    half = 1.96 * large.std(ddof=1) / math.sqrt(len(large))
    assert (big_high - big_low) / 2 == pytest.approx(half, rel=0.1)
    assert bootstrap(small, np.median) != (low, high)  # any statistic
    assert bootstrap([3.0]) == (3.0, 3.0)  # one unit: zero width, as documented
    assert bootstrap_method(4, "windows") == "bootstrap over 4 windows, 2000 resamples, seed 0"
    with pytest.raises(ValueError, match="at least one unit"):
        bootstrap([])
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap([1.0, float("nan")])


def test_perplexity_bootstrap_resamples_windows_weighted_by_their_tokens():
    # nine long windows at NLL 1 and one short one at NLL 5: perplexity is exp(905 / 901), and a resample
    # holding the short window several times moves it little; a bootstrap of mean NLL would reach exp(2)
    nll, tokens = [1.0] * 9 + [5.0], [100] * 9 + [1]
    low, high = perplexity_bootstrap(nll, tokens)
    assert low <= math.exp(905 / 901) <= high
    assert math.exp(1.0) == pytest.approx(low, rel=1e-12) and high < math.exp(1.03)
    unweighted = bootstrap(nll)
    assert math.exp(unweighted[1]) > math.exp(1.5)  # what the ratio is not
    # windows of one NLL give that perplexity whatever their lengths
    assert perplexity_bootstrap([2.0, 2.0, 2.0], [10, 50, 3]) == (pytest.approx(math.exp(2.0)),) * 2
    # two windows: the resamples are (a, a), (a, b) and (b, b), so the interval spans both windows' perplexities
    assert perplexity_bootstrap([2.0, 4.0], [1, 3]) == (pytest.approx(math.exp(2.0)), pytest.approx(math.exp(4.0)))
    with pytest.raises(ValueError, match="one mean NLL and one token count per window"):
        perplexity_bootstrap([1.0, 2.0], [10])
    with pytest.raises(ValueError, match="at least one token"):
        perplexity_bootstrap([1.0, 2.0], [10, 0])


def test_paired_differences():
    rng = np.random.default_rng(3)
    b = rng.normal(0.5, 0.3, 64)
    assert paired_bootstrap(b, b) == (0.0, 0.0)  # identical sides: zero width at 0
    low, high = paired_bootstrap(b + 0.25, b)  # a constant shift: exactly at the shift
    assert low == pytest.approx(0.25, abs=1e-12) and high == pytest.approx(0.25, abs=1e-12)
    # what the sides share cancels: a small per-unit change under a large shared spread is resolved
    a = b + rng.normal(0.02, 0.01, 64)
    low, high = paired_bootstrap(a, b)
    assert 0 < low < a.mean() - b.mean() < high
    unpaired = bootstrap(a)[1] - bootstrap(b)[0]
    assert high - low < unpaired / 10
    with pytest.raises(ValueError, match="the same units"):
        paired_bootstrap([1.0, 2.0], [1.0])
    # EX-style 0/1 units: one question of 10 lost
    ref = [1.0] * 6 + [0.0] * 4
    mine = [0.0] + [1.0] * 5 + [0.0] * 4
    low, high = paired_bootstrap(mine, ref)
    assert low <= -0.1 <= high <= 0.0


def test_perplexity_delta_is_paired_over_the_same_windows():
    nll, tokens = [3.0, 3.5, 2.5, 3.2], [63, 63, 63, 63]
    assert perplexity_delta_bootstrap(nll, nll, tokens) == (0.0, 0.0)
    worse = [x + 0.01 for x in nll]
    low, high = perplexity_delta_bootstrap(worse, nll, tokens)
    assert 0 < low <= math.exp(np.mean(worse)) - math.exp(np.mean(nll)) <= high
    with pytest.raises(ValueError, match="one mean NLL and one token count"):
        perplexity_delta_bootstrap(nll, nll[:3], tokens)


def test_distance_keeps_positions_for_its_intervals():
    torch = pytest.importorskip("torch")
    from harness.scenarios.inference.reference import distance

    g = torch.Generator().manual_seed(0)
    ref = torch.log_softmax(torch.randn(2, 8, 5, generator=g), dim=-1)
    cell = torch.log_softmax(ref + 0.5 * torch.randn(2, 8, 5, generator=g), dim=-1)
    d = distance(ref, cell)
    assert d.kl_per_position.shape == (2, 8) and d.top1_per_position.shape == (2, 8)
    assert d.kl_per_position.mean() == pytest.approx(d.kl_nats, rel=1e-6)
    assert d.top1_per_position.mean() == pytest.approx(d.top1_agreement)
    low, high = d.kl_interval()
    assert low <= d.kl_nats <= high and low < high
    low, high = d.top1_interval()
    assert low <= d.top1_agreement <= high
    same = distance(ref, ref)
    assert same.kl_interval() == (0.0, 0.0) and same.top1_interval() == (1.0, 1.0)


def test_defaults_are_what_the_method_words_say():
    assert (intervals.RESAMPLES, intervals.SEED, intervals.CONFIDENCE) == (2000, 0, 0.95)


@pytest.mark.parametrize("name, unit, direction, kind", [
    ("perplexity_delta_ref", "ppl", "lower", "quality"),
    ("text2sql_ex_delta_ref", "ratio", "higher", "accuracy"),
])
def test_deltas_to_the_reference_are_declared_and_left_to_their_bases(name, unit, direction, kind):
    from harness.metrics import metric, spec_for
    from harness.track.compare import rule_for

    spec = spec_for(name)
    assert spec is not None and (spec.unit, spec.direction, spec.kind) == (unit, direction, kind)
    assert not spec.judged and rule_for(name, metric(name, 0.0)) is None
    m = metric(name, 0.0, ci=(0.0, 0.0, "paired bootstrap over 4 windows, 2000 resamples, seed 0"))
    assert (m.ci_low, m.ci_high) == (0.0, 0.0) and m.ci_method.startswith("paired bootstrap")
