"""Statistics over seeds (tas.report.stats): the marks, the interval and the per-seed gain, checked by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats as st

from tas.report.stats import Verdict, best_of, inside, per_seed_gain, sample_std, t_interval, welch_p


def test_welch_matches_scipy_and_handles_degenerate_samples():
    a, b = [80.0, 81.0, 82.0], [75.0, 76.0, 77.0]
    assert welch_p(a, b) == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p(a, b) < 0.01  # t = 5 / sqrt(2/3) = 6.12 on 4 df
    assert math.isnan(welch_p([80.0], b))  # one seed: nothing to test
    assert math.isnan(welch_p([80.0, 80.0], [80.0, 80.0]))  # identical constants: no evidence
    assert welch_p([80.0, 80.0], [70.0, 70.0]) == 0.0  # distinct constants: different


def test_clear_win():
    v = best_of({"kd": [75.0, 76.0, 77.0], "tas": [80.0, 81.0, 82.0], "scratch": [70.0, 71.0, 72.0]})
    assert v == Verdict(winner="tas")


def test_tie_is_shown_as_a_tie():
    # 62 +- 1 against 61 +- 1 on three seeds: p = 0.29, the best cannot be told from the runner-up
    v = best_of({"scratch": [60.0, 61.0, 62.0], "tas": [61.0, 63.0, 62.0], "kd": [50.0, 50.5, 51.0]})
    assert v.winner is None and v.tied == ("tas", "scratch") and not v.reason


def test_best_must_beat_every_other_method():
    # ahead of the runner-up beyond noise, but a noisy third method cannot be separated: a tie, not a win
    v = best_of({"a": [80.0, 80.1, 79.9], "b": [75.0, 75.1, 74.9], "c": [60.0, 90.0, 70.0]})
    assert v.winner is None and v.tied == ("a", "c")


def test_one_seed_marks_nothing_and_says_why():
    v = best_of({"kd": [75.0], "tas": [90.0]})
    assert v.winner is None and v.tied == () and "single seed" in v.reason
    # a missing method does not block the test of the others
    assert best_of({"kd": [], "tas": [80.0, 81.0], "scratch": [70.0, 71.0]}).winner == "tas"
    assert best_of({"tas": [80.0, 81.0]}).reason  # nothing to compare with


def test_t_interval_by_hand():
    lo, hi = t_interval([80.0, 81.0, 82.0])
    half = st.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # 4.303 * 0.577 = 2.484
    assert (lo, hi) == pytest.approx((81 - half, 81 + half))
    assert inside(81.61, (lo, hi)) is True
    assert inside(78.74, t_interval([75.0, 76.0, 77.0])) is False  # 78.74 > 76 + 2.484
    assert inside(80.0, t_interval([80.0])) is None  # one seed: no interval
    assert sample_std([70.0, 72.0]) == pytest.approx(math.sqrt(2))


def test_gain_over_scratch_per_seed():
    method = {("p1", 0): 80.0, ("p1", 1): 81.0, ("p2", 0): 61.0, ("p2", 1): 63.0}
    base = {("p1", 0): 70.0, ("p1", 1): 71.0, ("p2", 0): 60.0}  # p2 seed 1 has no scratch run
    gains = per_seed_gain(method, base, ["p1", "p2"], [0, 1, 2])
    assert gains == {0: (pytest.approx(5.5), 2), 1: (pytest.approx(10.0), 1)}  # seed 2: nothing measured
