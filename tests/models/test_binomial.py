"""The exact binomial interval against statsmodels (same formula: identical) and scipy's root-finding (to 1e-12)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from models.binomial import exact_binomial_interval

GRID = [(k, n) for n in (1, 2, 3, 10, 37, 200, 1001, 20_000) for k in sorted({0, 1, n // 2, n - 1, n})]
"""(events, n), with no events and all events at every n."""


@pytest.mark.parametrize("level", [0.95, 0.9, 0.998])
def test_equals_statsmodels_beta_and_scipy_exact_on_a_grid_with_zero_and_all_events(level):
    events, n = np.array(GRID).T
    low, high = exact_binomial_interval(events, n, level=level)
    reference_low, reference_high = proportion_confint(events, n, alpha=1 - level, method="beta")
    np.testing.assert_array_equal(low, reference_low)  # the same beta quantiles: the same bits
    np.testing.assert_array_equal(high, reference_high)
    for k, size, lo, hi in zip(events, n, low, high, strict=True):
        exact = stats.binomtest(int(k), int(size)).proportion_ci(confidence_level=level, method="exact")
        assert (lo, hi) == pytest.approx((exact.low, exact.high), abs=1e-12)


@pytest.mark.parametrize("n", [1, 7, 4000])
def test_no_events_and_all_events_have_closed_forms(n):
    low, high = exact_binomial_interval([0, n], [n, n])
    assert low[0] == 0.0 and high[1] == 1.0
    assert high[0] == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-10)  # P(no event | p) = 0.025
    assert low[1] == pytest.approx(0.025 ** (1 / n), rel=1e-10)


def test_scalars_give_zero_dimensional_arrays_and_arrays_broadcast():
    low, high = exact_binomial_interval(3, 10)
    assert low.shape == high.shape == () and 0 < float(low) < 0.3 < float(high) < 1
    low, high = exact_binomial_interval(np.array([[0, 1], [2, 3]]), 10)
    assert low.shape == (2, 2)
    np.testing.assert_array_equal(low[1], exact_binomial_interval([2, 3], [10, 10])[0])


@pytest.mark.parametrize(("events", "n", "level", "message"), [
    (1, 10, 95, r"level must be a probability strictly between 0 and 1; got 95"),
    ([1, 2], [0, 10], 0.95, r"n must be whole numbers of at least 1; 1 values are not \(positions 0\)"),
    ([1, 2], [10, 2.5], 0.95, r"n must be whole numbers of at least 1; 1 values are not \(positions 1\)"),
    ([11, -1, 2], [10, 10, 10], 0.95, r"events must be whole numbers between 0 and n; 2 values are not "
                                      r"\(positions 0, 1\)"),
    ([np.nan], [10], 0.95, r"events must be whole numbers between 0 and n"),
])
def test_bad_counts_and_levels_are_refused_with_the_rule(events, n, level, message):
    with pytest.raises(ValueError, match=message):
        exact_binomial_interval(events, n, level=level)
