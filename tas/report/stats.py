"""Statistics over seeds: pure functions on lists of top-1 values (no pandas, no files).

Papers in this field report one run per cell, so a 0.3-point "win" is often noise. These functions
decide what the tables may claim: a winner only when it beats every other method of its row by
Welch's t-test, an interval around our mean to say whether the paper's number is consistent with it,
and the gain over scratch computed per seed so that it carries its own spread.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

from scipy import stats as _st

ALPHA = 0.05
LEVEL = 0.95
TEST_NAME = "Welch's t-test (unequal variances, two-sided)"


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof 1); NaN below two values (one seed has no spread)."""
    if len(values) < 2:
        return math.nan
    m = mean(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test; NaN when either side has fewer than two values.

    Identical constant samples give NaN (no evidence of a difference); distinct constant samples
    give 0 (deterministic runs that differ do differ)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():
        # scipy warns about precision loss on near-constant samples; the NaN / 0 it returns is handled.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(_st.ttest_ind(list(a), list(b), equal_var=False).pvalue)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student-t confidence interval of the mean; (NaN, NaN) below two values."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    half = float(_st.t.ppf(0.5 + level / 2, n - 1)) * sample_std(values) / math.sqrt(n)
    m = mean(values)
    return m - half, m + half


def inside(value: float, interval: tuple[float, float]) -> bool | None:
    """Whether `value` lies in the closed interval; None when either is undefined."""
    lo, hi = interval
    if any(math.isnan(x) for x in (value, lo, hi)):
        return None
    return lo <= value <= hi


@dataclass(frozen=True)
class Verdict:
    """The outcome of one row: `winner` (beats all others), or `tied` (best methods not separable),
    or neither with `reason` (why nothing is marked)."""

    winner: str | None = None
    tied: tuple[str, ...] = ()
    reason: str = ""


def best_of(samples: Mapping[str, Sequence[float]], alpha: float = ALPHA) -> Verdict:
    """Mark the best method of a row only where the seeds support it.

    The best method (highest mean) wins when Welch's test separates it from EVERY other measured
    method at p < alpha (in particular from the runner-up). Otherwise the best and every method it
    cannot be separated from are a tie. A row where a measured method has fewer than two seeds is
    not tested: a t-test needs a spread on both sides."""
    measured = {m: list(v) for m, v in samples.items() if len(v) > 0}
    if len(measured) < 2:
        return Verdict(reason="fewer than two methods measured")
    if any(len(v) < 2 for v in measured.values()):
        return Verdict(reason="a method has a single seed")
    order = sorted(measured, key=lambda m: mean(measured[m]), reverse=True)
    best = order[0]
    # NaN p (identical constant samples) is no evidence of a difference: such a method ties.
    tied = [m for m in order[1:] if not welch_p(measured[best], measured[m]) < alpha]
    if not tied:
        return Verdict(winner=best)
    return Verdict(tied=(best, *tied))


def per_seed_gain(method: Mapping[tuple[str, int], float], base: Mapping[tuple[str, int], float],
                  pairs: Sequence[str], seeds: Sequence[int]) -> dict[int, tuple[float, int]]:
    """Per seed: mean over the pairs measured for both the method and the baseline of (method - base).

    `method` and `base` map (pair, seed) -> top-1. Returns {seed: (gain, number of pairs)} for the
    seeds with at least one such pair, so the average gain over pairs gets a spread across seeds."""
    out = {}
    for seed in seeds:
        diffs = [method[(p, seed)] - base[(p, seed)] for p in pairs if (p, seed) in method and (p, seed) in base]
        if diffs:
            out[seed] = (mean(diffs), len(diffs))
    return out
