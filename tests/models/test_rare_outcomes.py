"""Riley's sample size, the exact crude rate and FLIC, against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import optimize
from scipy.special import expit
from sklearn.base import clone
from statsmodels.stats.proportion import proportion_confint

from models.rare import (
    FlicLogisticRegression,
    assess_sample_size,
    crude_rate,
    max_r2_cs,
    r2_cs_from_c_statistic,
)


def test_riley_worked_example_matches_pmsampsize():
    """pmsampsize's binary example (Riley et al., BMJ 2020;368:m441): R2_CS 0.288, 24 parameters,
    prevalence 0.174 -> criteria 623, 662, 221; minimum 662, events per parameter 4.8."""
    result = assess_sample_size(n_parameters=24, n=700, events=122, anticipated_r2_cs=0.288,
                                expected_prevalence=0.174)
    assert result.required == {"criterion_1_shrinkage": 623, "criterion_2_optimism": 662,
                               "criterion_3_intercept": 221, "minimum": 662}
    assert result.events_per_parameter_required == pytest.approx(4.8, abs=0.01)
    assert result.met


def test_max_r2_by_hand():
    prevalence = 0.174
    ln_null = prevalence * math.log(prevalence) + (1 - prevalence) * math.log(1 - prevalence)
    assert max_r2_cs(prevalence) == pytest.approx(1 - math.exp(2 * ln_null))
    assert max_r2_cs(0.5) == pytest.approx(0.75)


def test_r2_from_c_statistic_agrees_with_a_simulated_fit():
    """Independent reference: simulate the binormal linear predictor, fit a logistic model (statsmodels)
    and compute Cox-Snell R2 from its likelihood ratio."""
    c, prevalence, n = 0.78, 0.2, 400_000
    rng = np.random.default_rng(1)
    y = (rng.random(n) < prevalence).astype(int)
    mu = math.sqrt(2) * __import__("scipy").stats.norm.ppf(c)
    x = rng.normal(np.where(y == 1, mu, 0.0), 1.0)
    fit = sm.Logit(y, sm.add_constant(x)).fit(disp=0)
    simulated = 1 - math.exp(-2 * (fit.llf - fit.llnull) / n)
    assert r2_cs_from_c_statistic(c, prevalence) == pytest.approx(simulated, abs=0.004)


def test_criteria_grow_with_parameters_and_rarity():
    base = assess_sample_size(n_parameters=10, n=10_000, events=50, anticipated_c=0.75)
    more = assess_sample_size(n_parameters=20, n=10_000, events=50, anticipated_c=0.75)
    rarer = assess_sample_size(n_parameters=10, n=10_000, events=20, anticipated_c=0.75)
    assert more.required["minimum"] > base.required["minimum"]
    assert rarer.required["minimum"] > base.required["minimum"]


def test_not_met_path_explains_itself():
    result = assess_sample_size(n_parameters=20, n=20_000, events=70, anticipated_c=0.75)
    assert not result.met and result.required["minimum"] > 20_000
    assert "not met" in result.reason() and "20 candidate parameters" in result.reason()
    assert f"{result.required['minimum']:,}" in result.reason()
    default = assess_sample_size(n_parameters=20, n=20_000, events=70)
    assert default.r2_cs == pytest.approx(0.15 * max_r2_cs(70 / 20_000))
    assert "fewer than 11" in assess_sample_size(n_parameters=5, n=2_000, events=4).reason()
    none = assess_sample_size(n_parameters=5, n=3, events=0)
    assert not none.met and "no events among 3" in none.reason()


@pytest.mark.parametrize(("events", "n"), [(0, 50), (1, 1000), (7, 5749), (18, 5749), (50, 50)])
def test_crude_rate_is_clopper_pearson(events, n):
    rate = crude_rate(events, n)
    low, high = proportion_confint(events, n, alpha=0.05, method="beta")
    assert rate.low == pytest.approx(low, abs=1e-12) and rate.high == pytest.approx(high, abs=1e-12)
    if events == 0:
        assert rate.low == 0 and rate.high == pytest.approx(1 - 0.025 ** (1 / n))


def _firth_reference(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Maximise the Firth-penalised log-likelihood l(b) + 0.5 log|I(b)| directly (scipy)."""
    design = np.column_stack([np.ones(len(y)), x])

    def negative(beta: np.ndarray) -> float:
        eta = design @ beta
        p = expit(eta)
        loglik = np.sum(y * eta - np.logaddexp(0, eta))
        information = design.T @ (design * (p * (1 - p))[:, None])
        return -(loglik + 0.5 * np.linalg.slogdet(information)[1])

    return optimize.minimize(negative, np.zeros(design.shape[1]), method="BFGS", options={"gtol": 1e-9}).x


def test_flic_coefficients_match_the_firth_likelihood_and_intercept_is_corrected():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3_000, 3))
    y = (rng.random(3_000) < expit(-4.5 + x @ np.array([0.8, -0.5, 0.0]))).astype(int)
    model = FlicLogisticRegression().fit(x, y)
    reference = _firth_reference(x, y)
    np.testing.assert_allclose(model.coef_, reference[1:], atol=1e-4)
    assert model.firth_intercept_ == pytest.approx(reference[0], abs=1e-4)
    assert model.predict_proba(x)[:, 1].mean() == pytest.approx(y.mean(), abs=1e-9)
    firth_mean = expit(model.firth_intercept_ + x @ model.coef_).mean()
    assert abs(firth_mean - y.mean()) > 1e-5  # plain Firth is biased towards 0.5 in the average risk


def test_flic_stays_finite_under_separation():
    x = np.array([[0.0], [0.1], [0.2], [0.3], [1.0], [1.1]])
    y = np.array([0, 0, 0, 0, 1, 1])
    with pytest.warns(Warning):  # ML diverges under perfect separation: the slope runs away
        ml = sm.Logit(y, sm.add_constant(x)).fit(disp=0, maxiter=100)
    model = FlicLogisticRegression().fit(x, y)
    assert np.all(np.isfinite(model.coef_)) and np.isfinite(model.intercept_)
    assert abs(ml.params[1]) > 20 > abs(model.coef_[0])
    assert model.predict_proba(x)[:, 1].mean() == pytest.approx(y.mean(), abs=1e-9)


def test_flic_is_a_scikit_learn_estimator():
    model = FlicLogisticRegression(max_iter=50)
    assert clone(model).get_params() == {"max_iter": 50, "tol": 1e-8}
    with pytest.raises(ValueError, match="exactly two classes"):
        FlicLogisticRegression().fit(np.zeros((4, 1)), np.zeros(4))
