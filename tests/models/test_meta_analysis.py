"""Random-effects meta-analysis against metafor (fixtures/metafor), the restricted likelihood, and edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import expit

from models import meta_analysis as ma

FIXTURES = Path(__file__).parent / "fixtures" / "metafor"
KEYS = ("tau2", "estimate", "se", "low", "high", "prediction_low", "prediction_high", "q", "q_p", "i2")


def _reference() -> list[tuple[dict, pd.DataFrame]]:
    data = pd.read_csv(FIXTURES / "input.csv")
    results = json.loads((FIXTURES / "reference.json").read_text())["results"]
    return [(r, data[data["dataset"] == r["dataset"]]) for r in results]


@pytest.mark.parametrize("reference, data", _reference(),
                         ids=[f"{r['dataset']}-{r['method']}-{r['prediction']}" for r, _ in _reference()])
def test_matches_metafor_to_1e6(reference, data):
    fit = ma.random_effects(data["yi"], data["sei"], method=reference["method"], prediction=reference["prediction"])
    assert fit.k == reference["k"]
    for key in KEYS:
        assert getattr(fit, key) == pytest.approx(reference[key], abs=1e-6), key


def test_fixture_covers_boundary_small_and_large_heterogeneity():
    tau2 = {r["dataset"]: r["tau2"] for r, _ in _reference()}
    assert min(tau2.values()) < 1e-10  # tau^2 on the boundary
    assert 0 < tau2["intercept_k5"] < 1e-3  # just inside
    assert tau2["log_oe_heterogeneous"] > 0.05
    assert {r["k"] for r, _ in _reference()} >= {2, 3, 5, 8, 24}


def _restricted_loglik(tau2: float, y: np.ndarray, v: np.ndarray) -> float:
    """REML log-likelihood of the intercept-only model, written out from its definition (Viechtbauer 2005)."""
    w = 1 / (v + tau2)
    mu = np.sum(w * y) / np.sum(w)
    return -0.5 * (np.sum(np.log(v + tau2)) + np.log(np.sum(w)) + np.sum(w * (y - mu) ** 2))


def test_reml_maximises_the_restricted_likelihood():
    rng = np.random.default_rng(3)
    for _ in range(20):
        k = int(rng.integers(3, 15))
        se = rng.uniform(0.05, 0.3, k)
        y = rng.normal(0, rng.uniform(0, 0.4), k) + rng.normal(0, se)
        fit = ma.random_effects(y, se)
        best = minimize_scalar(lambda t: -_restricted_loglik(t, y, se ** 2), bounds=(0, 5), method="bounded",
                               options={"xatol": 1e-12})
        optimum = max(-best.fun, _restricted_loglik(0.0, y, se ** 2))
        assert _restricted_loglik(fit.tau2, y, se ** 2) >= optimum - 1e-9
        assert fit.tau2 >= 0


def test_homogeneous_units_give_tau2_exactly_zero_and_hksj_interval():
    y, se = np.array([0.01, -0.01, 0.0, 0.005]), np.array([0.1, 0.12, 0.09, 0.11])
    fit = ma.random_effects(y, se)
    assert fit.tau2 == 0.0
    assert fit.i2 == 0.0
    w = 1 / se ** 2
    assert fit.estimate == pytest.approx(w @ y / w.sum())
    # HKSJ is not truncated: with little spread its SE is below the Wald SE sqrt(1 / sum w)
    assert fit.se < np.sqrt(1 / w.sum())
    z = ma.random_effects(y, se, method="z")
    assert z.se == pytest.approx(np.sqrt(1 / w.sum()))


def test_two_units_have_no_riley_prediction_interval():
    fit = ma.random_effects([0.1, -0.2], [0.05, 0.08])
    assert np.isnan(fit.prediction_low) and np.isnan(fit.prediction_high)
    assert np.isfinite(ma.random_effects([0.1, -0.2], [0.05, 0.08], prediction="t_k-1").prediction_low)
    pooled = ma.pool_measure(["A", "B"], [0.1, -0.2], [0.05, 0.08], measure="oe_ratio")
    assert pooled["pooled"] is True and pooled["prediction_low"] is None
    assert "k - 2 = 0" in pooled["note"]


def test_pool_measure_back_transforms_each_scale():
    y, se = [1.0, 1.2, 0.9, 1.4], [0.1, 0.1, 0.12, 0.2]
    fit = ma.random_effects(y, se)
    for measure, back in (("auroc", expit), ("oe_ratio", np.exp), ("calibration_slope", lambda v: v)):
        pooled = ma.pool_measure(list("ABCD"), y, se, measure=measure)
        assert pooled["scale"] == ma.SCALES[measure]
        assert pooled["theta"] == pytest.approx(fit.estimate, abs=1e-6)
        for key in ("estimate", "low", "high", "prediction_low", "prediction_high"):
            assert pooled[key] == pytest.approx(float(back(getattr(fit, key))), abs=1e-6), (measure, key)
        assert pooled["tau"] == pytest.approx(np.sqrt(fit.tau2), abs=1e-6)
    json.dumps(pooled, allow_nan=False)


def test_pool_measure_leaves_out_units_without_estimates_and_names_them():
    pooled = ma.pool_measure(["A", "B", "C", "D"], [0.1, None, 0.2, float("nan")], [0.1, None, 0.1, 0.1],
                             measure="oe_ratio")
    assert pooled["k"] == 2 and pooled["units"] == ["A", "C"] and pooled["left_out"] == ["B", "D"]


def test_one_unit_is_not_pooled_and_says_so():
    pooled = ma.pool_measure(["S01", "S02"], [np.log(1.2), None], [0.1, None], measure="oe_ratio")
    assert pooled["pooled"] is False and pooled["k"] == 1
    assert "nothing to pool" in pooled["note"] and "S01" in pooled["note"]
    assert pooled["estimate"] == pytest.approx(1.2, abs=1e-6)
    assert pooled["low"] == pytest.approx(1.2 * np.exp(-1.959964 * 0.1), abs=1e-5)
    assert pooled["tau2"] is None and pooled["prediction_low"] is None


def test_no_unit_gives_an_empty_meta_analysis():
    pooled = ma.pool_measure([], [], [], measure="auroc")
    assert pooled["k"] == 0 and pooled["estimate"] is None and "nothing to pool" in pooled["note"]


@pytest.mark.parametrize("call, message", [
    (lambda: ma.random_effects([0.1], [0.1]), "at least 2 units; got 1"),
    (lambda: ma.random_effects([0.1, 0.2], [0.1, 0.0]), "standard_errors must be positive"),
    (lambda: ma.random_effects([0.1, np.nan], [0.1, 0.1]), "estimates must be finite"),
    (lambda: ma.random_effects([0.1, 0.2], [0.1]), "same length"),
    (lambda: ma.random_effects([0.1, 0.2], [0.1, 0.1], method="dl"), "method must be one of hksj, z"),
    (lambda: ma.random_effects([0.1, 0.2], [0.1, 0.1], prediction="t"), "prediction must be one of"),
    (lambda: ma.random_effects([0.1, 0.2], [0.1, 0.1], level=95), "level must be a probability"),
    (lambda: ma.pool_measure(["A"], [0.1], [0.1], measure="brier"), "measure must be one of"),
    (lambda: ma.pool_measure(["A"], ["0.1"], [0.1], measure="auroc"), "estimates must hold numbers or None"),
    (lambda: ma.pool_measure(["A", "B"], [0.1, 0.2], [0.1], measure="auroc"), "same length"),
])
def test_errors_state_the_rule(call, message):
    with pytest.raises(ValueError, match=message):
        call()
