"""95 % intervals of the accuracy figures (numpy only): bootstrap, Wilson, paired differences.

- :func:`bootstrap`: the seeded percentile bootstrap of a statistic over units (windows, positions,
  questions): draw the units with replacement ``n`` times, recompute the statistic, take the 2.5th
  and 97.5th percentiles of the resampled statistics.
- :func:`paired_bootstrap`: the same for ``stat(a) - stat(b)`` where ``a`` and ``b`` are measured on
  the same units (the same windows, the same questions): each resample draws unit indices once and
  applies them to both sides, so what the two sides share cancels.
- :func:`wilson`: the Wilson score interval for ``k`` successes in ``n`` trials (good at small ``n``
  and at 0 or ``n`` successes, where the normal approximation collapses to a point).
- :func:`perplexity_bootstrap` and :func:`perplexity_delta_bootstrap`: perplexity is
  exp(total NLL / total scored tokens), so a resample of windows recomputes that ratio with each
  window weighted by its scored tokens; the interval is of the perplexity, not of the mean NLL.

:func:`thin` keeps at most a given number of samples (evenly spaced order statistics, in their
original order), so that a bootstrap over a large pool (``itl_ms``: one gap per generated token)
needs bounded memory. Every function is deterministic given ``seed``; the :func:`bootstrap_method`
and :func:`wilson_method` strings say how an interval was made, for a metric's ``ci_method``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile
RESAMPLES = 2000
SEED = 0
MIN_UNITS = 2  # below this a bootstrap interval has zero width by construction and says nothing

Stat = Callable[[np.ndarray], float]


def _units(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0 or len(arr) == 0:
        raise ValueError(f"{what}: a bootstrap needs at least one unit, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: the units hold non-finite values")
    return arr


def _percentiles(stats: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(stats, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def _resample(m: int, n: int, seed: int, one: Callable[[np.ndarray], float]) -> np.ndarray:
    if n < 1:
        raise ValueError(f"a bootstrap needs at least one resample, got n={n}")
    rng = np.random.default_rng(seed)
    return np.array([one(rng.integers(0, m, m)) for _ in range(n)], dtype=np.float64)


def bootstrap(values: Sequence[float] | np.ndarray, stat: Stat = np.mean, *, seed: int = SEED,
              n: int = RESAMPLES) -> tuple[float, float]:
    """The 95 % percentile-bootstrap interval ``(low, high)`` of ``stat`` over the units of ``values``.

    ``values`` holds one unit per row (1-D, or 2-D when a unit carries several numbers, e.g. a
    window's NLL and its token count); ``stat`` maps the resampled rows to a float. The same
    ``seed`` gives the same interval; one unit gives a zero-width interval at ``stat(values)``.
    Raises ValueError for no units, non-finite values or ``n < 1``.
    """
    arr = _units(values, "bootstrap")
    return _percentiles(_resample(len(arr), n, seed, lambda idx: float(stat(arr[idx]))))


def paired_bootstrap(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, stat: Stat = np.mean, *,
                     seed: int = SEED, n: int = RESAMPLES) -> tuple[float, float]:
    """The 95 % interval of ``stat(a) - stat(b)`` where row ``i`` of ``a`` and of ``b`` is the same unit.

    Each resample draws unit indices once and applies them to both sides. Identical sides give a
    zero-width interval at 0; ``a = b + c`` with ``stat`` the mean gives one at ``c``.
    Raises ValueError when the sides hold different numbers of units (or as :func:`bootstrap`).
    """
    x, y = _units(a, "paired bootstrap, first side"), _units(b, "paired bootstrap, second side")
    if x.shape != y.shape:
        raise ValueError(f"paired bootstrap: the sides must hold the same units, got shapes {x.shape} and {y.shape}")
    return _percentiles(_resample(len(x), n, seed, lambda idx: float(stat(x[idx])) - float(stat(y[idx]))))


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of a proportion with ``k`` successes in ``n`` trials.

    (k + z²/2)/(n + z²) ± z/(n + z²)·sqrt(k(n-k)/n + z²/4), z = 1.96 for 95 %; it stays inside
    [0, 1] and has width at k = 0 and k = n (0/10 gives (0, 0.2775)). Raises ValueError unless
    0 <= k <= n and n >= 1.
    """
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"Wilson interval needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z2 = z * z
    centre = (k + z2 / 2) / (n + z2)
    half = z / (n + z2) * math.sqrt(k * (n - k) / n + z2 / 4)
    return max(0.0, centre - half), min(1.0, centre + half)


def _windows(window_nll: Sequence[float], window_tokens: Sequence[int], what: str) -> np.ndarray:
    nll, tokens = _units(window_nll, what), _units(window_tokens, what)
    if nll.shape != tokens.shape or nll.ndim != 1:
        raise ValueError(f"{what}: one mean NLL and one token count per window, got {nll.shape} and {tokens.shape}")
    if (tokens <= 0).any():
        raise ValueError(f"{what}: every window must score at least one token")
    return np.column_stack([nll * tokens, tokens])  # rows: (total NLL, scored tokens)


def _ppl(rows: np.ndarray) -> float:
    return math.exp(rows[:, 0].sum() / rows[:, 1].sum())


def perplexity_bootstrap(window_nll: Sequence[float], window_tokens: Sequence[int], *, seed: int = SEED,
                         n: int = RESAMPLES) -> tuple[float, float]:
    """The 95 % bootstrap interval of perplexity over windows.

    ``window_nll`` are per-window mean NLLs (nats), ``window_tokens`` the tokens each scored; a
    resample of windows gives exp(Σ NLL / Σ tokens) over the drawn windows. Raises ValueError for
    mismatched lengths or a window with no scored tokens.
    """
    return bootstrap(_windows(window_nll, window_tokens, "perplexity bootstrap"), _ppl, seed=seed, n=n)


def perplexity_delta_bootstrap(window_nll: Sequence[float], ref_window_nll: Sequence[float],
                               window_tokens: Sequence[int], *, seed: int = SEED,
                               n: int = RESAMPLES) -> tuple[float, float]:
    """The 95 % paired-bootstrap interval of perplexity minus the reference's on the same windows
    (the same ``window_tokens`` scored on both sides). Raises ValueError as :func:`perplexity_bootstrap`."""
    a = _windows(window_nll, window_tokens, "perplexity delta, this side")
    b = _windows(ref_window_nll, window_tokens, "perplexity delta, reference side")
    return paired_bootstrap(a, b, _ppl, seed=seed, n=n)


def bootstrap_method(units: int, what: str, *, paired: bool = False, n: int = RESAMPLES, seed: int = SEED) -> str:
    """``ci_method`` words for a bootstrap, e.g. 'bootstrap over 4 windows, 2000 resamples, seed 0'."""
    return f"{'paired ' if paired else ''}bootstrap over {units} {what}, {n} resamples, seed {seed}"


def wilson_method(k: int, n: int) -> str:
    """``ci_method`` words for a Wilson interval, e.g. 'Wilson score, 37/50'."""
    return f"Wilson score, {k}/{n}"


def thin(values: Sequence[float] | np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``values``: all of them when there are no more, else the ``limit`` order
    statistics at evenly spaced ranks (the smallest and the largest included), in their original order.

    The kept samples follow the pool's distribution (each stands for about ``len/limit`` of it), so a
    median or percentile of them is within one rank step of the pool's; a bootstrap over them is as
    wide as over ``limit`` draws, that is no narrower than the pool's. Raises ValueError for ``limit < 2``.
    """
    if limit < 2:
        raise ValueError(f"thin needs limit >= 2, got {limit}")
    arr = np.asarray(values, dtype=np.float64)
    if len(arr) <= limit:
        return arr
    order = np.argsort(arr, kind="stable")
    ranks = np.rint(np.linspace(0, len(arr) - 1, limit)).astype(np.int64)
    return arr[np.sort(order[ranks])]
