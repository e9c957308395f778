"""The calibration band: its curve is the flexible calibration curve, its standard errors are those of the
inverse Fisher information (checked by hand in numpy), it narrows with more data and covers a calibrated
model's diagonal; band_at interpolates on the logit scale and clips to the validated range."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logit

from models.metrics import flexible_calibration
from models.uncertainty import band_at, calibration_band, outside_band


def simulate(n: int, *, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from true risks; predictions are the true risks shifted by ``shift`` on the logit scale."""
    rng = np.random.default_rng(seed)
    true = expit(rng.normal(-1.5, 1.0, n))
    y = (rng.random(n) < true).astype(int)
    return y, expit(logit(true) + shift)


def arrays(band: dict) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(band[key]) for key in ("predicted", "observed", "low", "high"))


def test_the_curve_is_the_flexible_calibration_curve_and_json_ready():
    y, p = simulate(3_000, seed=1)
    band = calibration_band(y, p)
    reference = flexible_calibration(y, p)
    predicted, observed, _, _ = arrays(band)
    np.testing.assert_allclose(predicted, reference.grid, atol=1e-6)
    np.testing.assert_allclose(observed, reference.observed, atol=1e-6)
    assert json.loads(json.dumps(band)) == band
    assert band["level"] == 0.95 and "Wald" in band["method"] and "n=3000" in band["method"]
    assert all(v == round(v, 6) for key in ("predicted", "observed", "low", "high") for v in band[key])


def test_the_band_contains_the_curve():
    y, p = simulate(1_500, seed=2)
    _, observed, low, high = arrays(calibration_band(y, p))
    assert np.all(low <= observed) and np.all(observed <= high) and np.all(low < high)


def test_the_band_narrows_with_more_data():
    y_small, p_small = simulate(1_000, seed=3)
    y_large, p_large = simulate(20_000, seed=3)
    risks = np.quantile(p_small, np.linspace(0.1, 0.9, 9))
    _, low_s, high_s = band_at(calibration_band(y_small, p_small), risks)
    _, low_l, high_l = band_at(calibration_band(y_large, p_large), risks)
    assert np.all(high_l - low_l < high_s - low_s)
    assert np.mean(high_l - low_l) < 0.5 * np.mean(high_s - low_s)


def test_a_calibrated_model_has_its_diagonal_covered_at_most_grid_points():
    covered = []
    for seed in range(20):
        y, p = simulate(2_000, seed=100 + seed)
        predicted, _, low, high = arrays(calibration_band(y, p))
        covered.append(np.mean((low <= predicted) & (predicted <= high)))
    assert np.mean(covered) > 0.85  # pointwise 95%: about 0.95 on average over seeds


def test_a_miscalibrated_model_has_its_diagonal_outside_the_band():
    y, p = simulate(5_000, seed=4, shift=1.0)  # risks over-estimated
    predicted, _, low, high = arrays(calibration_band(y, p))
    assert np.mean((low <= predicted) & (predicted <= high)) < 0.2


def _rcs_by_hand(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Harrell's restricted cubic spline design (intercept, x, k-2 terms), written out independently."""
    k, scale = knots, (knots[-1] - knots[0]) ** 2
    cube = lambda u: np.clip(u, 0, None) ** 3  # noqa: E731
    columns = [np.ones_like(x), x]
    for j in range(len(k) - 2):
        columns.append((cube(x - k[j]) - cube(x - k[-2]) * (k[-1] - k[j]) / (k[-1] - k[-2])
                        + cube(x - k[-1]) * (k[-2] - k[j]) / (k[-1] - k[-2])) / scale)
    return np.column_stack(columns)


def test_one_pointwise_standard_error_equals_the_inverse_information_computed_by_hand():
    y, p = simulate(2_500, seed=5)
    band = calibration_band(y, p)
    x = logit(p)
    knots = np.quantile(x, [0.05, 0.35, 0.65, 0.95])  # Harrell's 4 knots, R quantile type 7
    design = _rcs_by_hand(x, knots)
    beta = np.zeros(design.shape[1])
    for _ in range(50):  # iteratively reweighted least squares
        mu = expit(design @ beta)
        weights = mu * (1 - mu)
        beta = beta + np.linalg.solve(design.T @ (design * weights[:, None]), design.T @ (y - mu))
    weights = expit(design @ beta) * (1 - expit(design @ beta))
    covariance = np.linalg.inv(design.T @ (design * weights[:, None]))
    i = 60
    at = _rcs_by_hand(logit(np.array([band["predicted"][i]])), knots)[0]
    se_by_hand = float(np.sqrt(at @ covariance @ at))
    z = stats.norm.ppf(0.975)
    se_of_band = (logit(band["high"][i]) - logit(band["low"][i])) / (2 * z)
    assert se_of_band == pytest.approx(se_by_hand, rel=1e-3)
    assert band["observed"][i] == pytest.approx(float(expit(at @ beta)), abs=1e-6)


def test_band_at_interpolates_on_the_logit_scale_and_clips_to_the_grid():
    band = {"predicted": [0.1, 0.5], "observed": [0.2, 0.6], "low": [0.1, 0.4], "high": [0.3, 0.8], "method": "m"}
    observed, low, high = band_at(band, np.array([0.1, 0.5]))
    np.testing.assert_allclose(observed, [0.2, 0.6])
    middle = expit((logit(0.1) + logit(0.5)) / 2)
    observed, _, _ = band_at(band, middle)
    assert float(observed) == pytest.approx(float(expit((logit(0.2) + logit(0.6)) / 2)))
    observed, low, high = band_at(band, np.array([[0.0, 0.9]]))
    assert observed.shape == (1, 2)
    np.testing.assert_allclose(observed[0], [0.2, 0.6])
    np.testing.assert_array_equal(outside_band(band, np.array([0.0, 0.3, 0.9])), [True, False, True])


def test_band_at_refuses_a_malformed_band_or_risk():
    band = {"predicted": [0.1, 0.5], "observed": [0.2, 0.6], "low": [0.1, 0.4], "high": [0.3, 0.8]}
    with pytest.raises(ValueError, match="missing: high"):
        band_at({k: v for k, v in band.items() if k != "high"}, [0.2])
    with pytest.raises(ValueError, match="equal length"):
        band_at(band | {"low": [0.1]}, [0.2])
    with pytest.raises(ValueError, match="finite numbers"):
        band_at(band | {"low": [None, 0.4]}, [0.2])
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        band_at(band, [1.5])


def test_calibration_band_checks_its_inputs():
    y, p = simulate(200, seed=6)
    with pytest.raises(ValueError, match="level must be a probability strictly between 0 and 1; got 1.0"):
        calibration_band(y, p, level=1.0)
    with pytest.raises(ValueError, match="knots must be one of"):
        calibration_band(y, p, knots=2)
    with pytest.raises(ValueError, match="at least one event"):
        calibration_band(np.zeros(10), np.full(10, 0.2))


def test_separated_events_have_no_band():
    p = np.linspace(0.01, 0.99, 400)
    with pytest.raises(ValueError, match="separated"):
        calibration_band((p > 0.5).astype(int), p)
