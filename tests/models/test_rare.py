"""Rare outcomes against independent references: pmsampsize's published results, a deterministic replication
of Riley's C-statistic recipe fitted with statsmodels, statsmodels' exact interval, closed-form Firth
estimates and a direct maximisation of Firth's penalised likelihood with scipy."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import skops.io as sio
import statsmodels.api as sm
from scipy import optimize, stats
from scipy.special import expit
from sklearn.base import clone
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator
from statsmodels.stats.proportion import proportion_confint

from models.rare import (
    CrudeRate,
    FlicLogisticRegression,
    assess_sample_size,
    crude_rate,
    max_r2_cs,
    r2_cs_from_c_statistic,
)


# ------------------------------------------------------------------------------------ Riley's criteria
# pmsampsize (Ensor, Martin & Riley; R package >= 1.1.1), tests/testthat/test_bin.R, "Test 4.1" to "Test 4.4":
# the worked example of Riley et al. 2019 (Stat Med 38:1276, section 4.1) and variations of it.
# (criterion 1, criterion 2, criterion 3, final) and the events per parameter of each, rounded to 2 decimals.
# pmsampsize < 1.1.1 rounded max R2_CS to 2 and the criterion-2 shrinkage to 3 decimals (giving 668 for
# Test 4.1); Riley et al. BMJ 2020 and pmsampsize since then do not, and neither does this module.
PMSAMPSIZE_BINARY = [
    # r2_cs, parameters, prevalence, sample sizes, EPP
    (0.288, 24, 0.174, (623, 662, 221, 662), (4.52, 4.8, 1.6, 4.8)),
    (0.55, 24, 0.174, (255, 532, 221, 532), (1.85, 3.86, 1.6, 3.86)),
    (0.288, 36, 0.174, (934, 992, 221, 992), (4.51, 4.79, 1.07, 4.79)),
    (0.288, 24, 0.25, (623, 590, 289, 623), (6.49, 6.15, 3.01, 6.49)),
]


@pytest.mark.parametrize(("r2", "parameters", "prevalence", "sizes", "epp"), PMSAMPSIZE_BINARY)
def test_criteria_reproduce_pmsampsize_published_results(r2, parameters, prevalence, sizes, epp):
    result = assess_sample_size(n_parameters=parameters, n=1000, events=100, anticipated_r2_cs=r2,
                                expected_prevalence=prevalence)
    required = result.required
    assert (required["criterion_1_shrinkage"], required["criterion_2_optimism"],
            required["criterion_3_intercept"], required["minimum"]) == sizes
    per_parameter = [round(required[k] * prevalence / parameters, 2) for k in
                     ("criterion_1_shrinkage", "criterion_2_optimism", "criterion_3_intercept", "minimum")]
    assert per_parameter == pytest.approx(list(epp), abs=1e-12)
    assert round(result.events_per_parameter_required, 2) == epp[-1]
    assert result.r2_cs == r2 and result.r2_cs_source == "as given" and result.shrinkage == 0.9


def test_worked_example_events_as_pmsampsize_prints_them():
    # pmsampsize prints "... = 662, with 116 events (assuming an outcome prevalence = 0.174) and an EPP = 4.8":
    # ceiling(662 * 0.174) = ceiling(115.188)
    result = assess_sample_size(n_parameters=24, n=700, events=122, anticipated_r2_cs=0.288,
                                expected_prevalence=0.174)
    assert result.required["minimum"] == 662
    assert result.events_required == 116
    assert result.events_per_parameter_required == pytest.approx(115.188 / 24)
    assert result.binding_criterion() == "criterion_2_optimism"
    assert result.met  # 700 >= 662 and 122 >= 116


def test_max_r2_cs_equals_one_minus_null_likelihood_ratio_from_statsmodels():
    # Riley 2019 eq. 23: max R2_CS = 1 - exp(2 lnL_null / n); lnL_null from an intercept-only fit
    for events, n in [(174, 1000), (500, 1000), (7, 2000)]:
        y = np.r_[np.ones(events), np.zeros(n - events)]
        ln_null = sm.Logit(y, np.ones(n)).fit(disp=0).llf
        assert max_r2_cs(events / n) == pytest.approx(1 - math.exp(2 * ln_null / n), rel=1e-9)
    assert max_r2_cs(0.5) == pytest.approx(0.75)  # 1 - (1/2)^2
    assert round(max_r2_cs(0.174), 3) == 0.603  # pmsampsize's Max_Rsq column for Test 4.1


def _r2_cs_by_riley_recipe_on_quadrature_nodes(c: float, prevalence: float, nodes: int = 120) -> float:
    """Riley, Van Calster & Collins (2021) / pmsampsize ``cstat2rsq``, made deterministic: instead of
    simulating 1,000,000 linear predictors (N(0, 1) for non-events, N(sqrt(2) Phi^-1(c), 1) for events),
    take Gauss-Hermite nodes of each normal, weighted by their quadrature weights times the class
    proportions; fit the logistic regression of the outcome on the linear predictor with statsmodels;
    R2_CS = 1 - exp(-(null deviance - deviance) / n), as ``cstat2rsq`` computes it."""
    mu = math.sqrt(2) * stats.norm.ppf(c)
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    x = np.r_[z + mu, z]
    y = np.r_[np.ones(nodes), np.zeros(nodes)]
    weight = np.r_[prevalence * w, (1 - prevalence) * w]
    fit = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial(), var_weights=weight).fit(tol=1e-14)
    return 1 - math.exp(-(fit.null_deviance - fit.deviance) / weight.sum())


@pytest.mark.parametrize(("c", "prevalence"), [(0.89, 0.174), (0.75, 0.0035), (0.95, 0.02)])
def test_r2_from_c_statistic_matches_the_riley_recipe(c, prevalence):
    assert r2_cs_from_c_statistic(c, prevalence) == pytest.approx(
        _r2_cs_by_riley_recipe_on_quadrature_nodes(c, prevalence), rel=1e-8)


def test_r2_from_c_statistic_agrees_with_a_simulation_as_pmsampsize_runs_it():
    # cstat2rsq with 200,000 instead of 1,000,000 draws: its Monte Carlo SD is about 1.1e-3 here (8 seeds)
    rng = np.random.default_rng(123456)
    c, prevalence, n = 0.89, 0.174, 200_000
    events = round(prevalence * n)
    x = np.r_[rng.normal(math.sqrt(2) * stats.norm.ppf(c), 1, events), rng.normal(0, 1, n - events)]
    y = np.r_[np.ones(events), np.zeros(n - events)]
    fit = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit()
    simulated = 1 - math.exp(-(fit.null_deviance - fit.deviance) / n)
    assert r2_cs_from_c_statistic(c, prevalence) == pytest.approx(simulated, abs=5e-3)


def test_r2_from_c_statistic_is_deterministic_monotone_and_bounded():
    values = [r2_cs_from_c_statistic(c, 0.0035) for c in (0.55, 0.65, 0.75, 0.85, 0.95)]
    assert values == sorted(values) and 0 < values[0] and values[-1] < max_r2_cs(0.0035)
    assert r2_cs_from_c_statistic(0.75, 0.0035) == r2_cs_from_c_statistic(0.75, 0.0035)
    # the binormal model is symmetric in events and non-events
    assert r2_cs_from_c_statistic(0.8, 0.2) == pytest.approx(r2_cs_from_c_statistic(0.8, 0.8), rel=1e-9)
    # Riley et al.: the C statistic 0.89 of the model behind the worked example's R2_CS of 0.288
    assert r2_cs_from_c_statistic(0.89, 0.174) == pytest.approx(0.288, abs=0.005)


def test_c_statistic_route_of_the_worked_example():
    # pmsampsize(type = "b", cstatistic = 0.89, parameters = 24, prevalence = 0.174) simulates R2_CS
    # (seed 123456) and rounds it to 4 decimals, so its integers can differ from these by a few; with the
    # exact large-sample R2_CS of 0.29095 the criteria are as follows (formulas checked above)
    result = assess_sample_size(n_parameters=24, n=1000, events=174, anticipated_c=0.89)
    assert result.r2_cs == pytest.approx(0.290955, abs=1e-6)
    assert result.required == {"criterion_1_shrinkage": 615, "criterion_2_optimism": 660,
                               "criterion_3_intercept": 221, "minimum": 660}
    assert result.r2_cs_source == "from anticipated C-statistic 0.89 (Riley 2021 approximation)"


def test_conservative_default_is_15_percent_of_max_r2():
    result = assess_sample_size(n_parameters=20, n=20_000, events=70)
    assert result.prevalence == pytest.approx(0.0035)
    assert result.r2_cs == pytest.approx(0.15 * max_r2_cs(0.0035), rel=1e-12)
    assert result.r2_cs_source.startswith("15% of max R2_CS") and "conservative default" in result.r2_cs_source


def test_infection_registry_of_20000_with_70_events_does_not_meet_the_criteria():
    """20,000 procedures, 70 infections (0.35%), 20 candidate parameters, anticipated C 0.75: R2_CS is
    0.00316 (max 0.0455), so criterion 1 needs 56,835 procedures with 199 events (EPP 9.9); not met."""
    result = assess_sample_size(n_parameters=20, n=20_000, events=70, anticipated_c=0.75)
    assert result.r2_cs == pytest.approx(0.0031615, abs=1e-7)
    assert result.required == {"criterion_1_shrinkage": 56_835, "criterion_2_optimism": 8_767,
                               "criterion_3_intercept": 6, "minimum": 56_835}
    assert result.events_required == 199
    assert result.events_per_parameter_required == pytest.approx(56_835 * 0.0035 / 20)
    assert not result.met
    assert result.reason().startswith(
        "Riley et al. minimum sample size not met: needs at least 56,835 procedures (criterion 1, "
        "shrinkage 0.9) with 199 events for 20 candidate parameters; the registry has 20,000 with 70 events")


def test_reason_when_met_and_small_counts_are_not_written():
    met = assess_sample_size(n_parameters=5, n=60_000, events=210, anticipated_c=0.75)
    assert met.met and met.reason().startswith("Riley et al. minimum sample size met: needs at least ")
    small = assess_sample_size(n_parameters=20, n=2_000, events=7, anticipated_c=0.75)
    assert not small.met
    assert "with fewer than 11 events" in small.reason() and "0.35" not in small.reason()


def test_met_needs_the_events_as_well_with_an_expected_prevalence():
    # 30,000 procedures reach the 26,271 needed at 0.35%, but the 60 observed events fall short of 92
    result = assess_sample_size(n_parameters=20, n=30_000, events=60, expected_prevalence=0.0035)
    assert result.required["minimum"] == 26_271 and result.events_required == 92
    assert not result.met


@pytest.mark.parametrize("kwargs", [dict(anticipated_c=0.75), dict(), dict(anticipated_r2_cs=0.003)])
def test_more_parameters_need_more_procedures(kwargs):
    sizes = [assess_sample_size(n_parameters=p, n=20_000, events=70, **kwargs).required["minimum"]
             for p in (5, 10, 20, 40)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


@pytest.mark.parametrize("kwargs", [dict(anticipated_c=0.75), dict()])
def test_rarer_outcome_needs_more_procedures(kwargs):
    sizes = [assess_sample_size(n_parameters=20, n=20_000, events=70, expected_prevalence=phi,
                                **kwargs).required["minimum"] for phi in (0.1, 0.02, 0.0035, 0.001)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_no_events_gives_an_assessment_that_is_not_met():
    result = assess_sample_size(n_parameters=20, n=1_500, events=0, anticipated_c=0.75)
    assert not result.met and result.required == {} and math.isnan(result.r2_cs)
    assert "no events among 1,500 procedures" in result.reason()
    computed = assess_sample_size(n_parameters=20, n=1_500, events=0, anticipated_c=0.75,
                                  expected_prevalence=0.0035)
    assert computed.required["minimum"] == 56_835 and not computed.met


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(anticipated_c=0.75, anticipated_r2_cs=0.003), "at most one of"),
    (dict(anticipated_r2_cs=0.05), "strictly between 0 and its maximum 0.0455"),
    (dict(anticipated_r2_cs=0.0), "strictly between 0 and its maximum"),
    (dict(anticipated_c=0.5), "C statistic must be strictly between 0.5 and 1"),
    (dict(shrinkage=1.0), "shrinkage must be strictly between 0 and 1"),
    (dict(shrinkage=0.002, anticipated_r2_cs=0.003), "shrinkage must exceed"),
    (dict(margin=0.0), "margin must be strictly between 0 and 1"),
    (dict(expected_prevalence=1.2), "expected_prevalence must be strictly between 0 and 1"),
    (dict(n_parameters=0), "n_parameters must be at least 1"),
    (dict(events=20_001), "events must be between 0 and n"),
    (dict(n=0, events=0), "n must be at least 1"),
])
def test_assess_sample_size_rejects_bad_arguments(kwargs, match):
    arguments = dict(n_parameters=20, n=20_000, events=70) | kwargs
    with pytest.raises(ValueError, match=match):
        assess_sample_size(**arguments)


# ------------------------------------------------------------------------------------------- crude rate
@pytest.mark.parametrize(("events", "n"), [(0, 50), (1, 50), (3, 1000), (27, 8000), (70, 20_000), (50, 50)])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_crude_rate_equals_statsmodels_clopper_pearson(events, n, level):
    low, high = proportion_confint(events, n, alpha=1 - level, method="beta")
    rate = crude_rate(events, n, level=level)
    assert rate.rate == events / n
    assert rate.low == pytest.approx(low, abs=1e-12) and rate.high == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize("n", [1, 30, 4000])
def test_crude_rate_with_no_events(n):
    rate = crude_rate(0, n)
    assert rate == CrudeRate(events=0, n=n, rate=0.0, low=0.0, high=rate.high, method="Clopper-Pearson exact 95%")
    assert rate.high == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-10)


def test_crude_rate_rejects_bad_counts():
    with pytest.raises(ValueError, match="events must be between 0 and n"):
        crude_rate(5, 4)
    with pytest.raises(ValueError, match="n must be at least 1"):
        crude_rate(0, 0)
    with pytest.raises(ValueError, match="level must be a probability strictly between 0 and 1; got 95"):
        crude_rate(1, 10, level=95)


# ------------------------------------------------------------------------------------------------- FLIC
def _few_events(n: int = 150, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A binary and two normal predictors, about 9% events."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.integers(0, 2, n), rng.normal(size=n), rng.normal(size=n)])  # noqa: N806
    y = (rng.random(n) < expit(-3.2 + 1.2 * X[:, 0] + 0.8 * X[:, 1] - 0.5 * X[:, 2])).astype(int)
    return X, y


def _separated() -> tuple[np.ndarray, np.ndarray]:
    """Quasi-complete separation: no event where the binary predictor is 0."""
    X, y = _few_events()  # noqa: N806
    return X, np.where(X[:, 0] == 0, 0, y)


def _firth_by_scipy(X: np.ndarray, y: np.ndarray) -> np.ndarray:  # noqa: N803
    """Firth's estimate by maximising l(b) + 0.5 log|X'WX| directly with BFGS (analytic gradient).

    Returns (intercept, coefficients)."""
    design = np.column_stack([np.ones(len(y)), X])

    def penalised(b: np.ndarray) -> float:
        eta = design @ b
        p = expit(eta)
        _, logdet = np.linalg.slogdet(design.T @ ((p * (1 - p))[:, None] * design))
        return -(np.sum(y * eta - np.logaddexp(0, eta)) + 0.5 * logdet)

    def gradient(b: np.ndarray) -> np.ndarray:
        p = expit(design @ b)
        w = p * (1 - p)
        info = design.T @ (w[:, None] * design)
        h = w * np.einsum("ij,ji->i", design, np.linalg.solve(info, design.T))
        return -(design.T @ (y - p + h * (0.5 - p)))

    solution = optimize.minimize(penalised, np.zeros(design.shape[1]), jac=gradient, method="BFGS",
                                 options={"gtol": 1e-10, "maxiter": 2000}).x
    assert np.abs(gradient(solution)).max() < 1e-7  # a maximum (BFGS may stop at float64 precision)
    return solution


@pytest.mark.parametrize("make", [_few_events, _separated])
def test_firth_coefficients_equal_direct_penalised_likelihood_maximisation(make):
    X, y = make()  # noqa: N806
    model = FlicLogisticRegression().fit(X, y)
    reference = _firth_by_scipy(X, y)
    assert model.converged_
    np.testing.assert_allclose(model.coef_, reference[1:], atol=1e-6)
    assert model.firth_intercept_ == pytest.approx(reference[0], abs=1e-6)


@pytest.mark.parametrize(("table", "log_or"), [
    # (events and non-events at x = 0, events and non-events at x = 1); Firth's estimate in a 2 x 2 table is
    # the log odds ratio with 1/2 added to each cell (firthmodels' docstring example: log(49) = 3.89182)
    ((0, 3, 3, 0), math.log(3.5 * 3.5 / (0.5 * 0.5))),
    ((0, 40, 2, 18), math.log((2.5 / 18.5) / (0.5 / 40.5))),
    ((3, 97, 9, 41), math.log((9.5 / 41.5) / (3.5 / 97.5))),
])
def test_firth_in_a_two_by_two_table_adds_one_half_to_each_cell(table, log_or):
    e0, n0, e1, n1 = table
    x = np.r_[np.zeros(e0 + n0), np.ones(e1 + n1)].reshape(-1, 1)
    y = np.r_[np.ones(e0), np.zeros(n0), np.ones(e1), np.zeros(n1)]
    assert FlicLogisticRegression().fit(x, y).coef_[0] == pytest.approx(log_or, abs=1e-7)


def test_firth_is_finite_under_separation_where_maximum_likelihood_diverges():
    X, y = _separated()  # noqa: N806
    design = sm.add_constant(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = sm.Logit(y, design).fit(disp=0, maxiter=200)
    # ML: the likelihood keeps rising as the binary predictor's coefficient grows without bound
    assert ml.params[1] > 15
    loglik = [sm.Logit(y, design).loglike(ml.params + np.r_[-t, t, 0, 0]) for t in (0, 5, 10, 20)]
    assert loglik == sorted(loglik)
    model = FlicLogisticRegression().fit(X, y)
    assert np.all(np.isfinite(model.coef_)) and 0 < model.coef_[0] < 6


@pytest.mark.parametrize("make", [_few_events, _separated])
def test_flic_mean_risk_equals_the_event_rate_and_plain_firth_does_not(make):
    X, y = make()  # noqa: N806
    model = FlicLogisticRegression().fit(X, y)
    assert model.predict_proba(X)[:, 1].mean() == pytest.approx(y.mean(), abs=1e-6)
    firth_risk = expit(model.firth_intercept_ + X @ model.coef_)
    assert firth_risk.mean() - y.mean() > 1e-3  # Firth's penalty pulls the risks towards 1/2


def test_flic_intercept_is_the_ml_intercept_with_the_linear_predictor_as_offset():
    X, y = _few_events()  # noqa: N806
    model = FlicLogisticRegression().fit(X, y)
    glm = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=X @ model.coef_).fit(tol=1e-12)
    assert model.intercept_ == pytest.approx(glm.params[0], abs=1e-8)


def test_constant_predictor_gets_zero_coefficient():
    X, y = _few_events()  # noqa: N806
    with_constant = np.column_stack([X[:, :1], np.full(len(y), 0.0), X[:, 1:]])
    model = FlicLogisticRegression().fit(with_constant, y)
    reference = FlicLogisticRegression().fit(X, y)
    assert model.coef_[1] == 0.0
    np.testing.assert_allclose(np.delete(model.coef_, 1), reference.coef_, atol=1e-10)
    assert model.intercept_ == pytest.approx(reference.intercept_, abs=1e-10)
    only_constant = FlicLogisticRegression().fit(np.ones((len(y), 1)), y)
    assert only_constant.predict_proba(np.ones((3, 1)))[:, 1] == pytest.approx(np.full(3, y.mean()))


def test_flic_is_a_deterministic_sklearn_classifier():
    X, y = _few_events()  # noqa: N806
    model = FlicLogisticRegression(max_iter=50)
    assert model.get_params() == {"max_iter": 50, "tol": 1e-8}
    assert clone(model).set_params(tol=1e-6).get_params() == {"max_iter": 50, "tol": 1e-6}
    with pytest.raises(TypeError):
        FlicLogisticRegression(50)  # options are keyword-only
    pipeline = make_pipeline(StandardScaler(), FlicLogisticRegression()).fit(X, y)
    again = clone(pipeline).fit(X, y)
    np.testing.assert_array_equal(pipeline.predict_proba(X), again.predict_proba(X))
    proba = pipeline.predict_proba(X)
    assert proba.shape == (len(y), 2) and np.allclose(proba.sum(axis=1), 1)
    labels = np.where(y == 1, "infection", "none")
    named = FlicLogisticRegression().fit(X, labels)
    assert list(named.classes_) == ["infection", "none"]  # sorted: the event is the second class here
    assert set(named.predict(X)) <= {"infection", "none"}
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        FlicLogisticRegression().fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="features"):
        named.predict_proba(X[:, :2])


def test_flic_passes_sklearn_check_estimator():
    failed = [r for r in check_estimator(FlicLogisticRegression(), on_fail=None) if r["status"] == "failed"]
    assert failed == []


def test_flic_round_trips_through_skops_as_the_model_store_does():
    X, y = _few_events()  # noqa: N806
    model = FlicLogisticRegression().fit(X, y)
    data = sio.dumps(model)
    assert sio.get_untrusted_types(data=data) == ["models.rare.FlicLogisticRegression"]
    loaded = sio.loads(data, trusted=["models.rare.FlicLogisticRegression"])
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
