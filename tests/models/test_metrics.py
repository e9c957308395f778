"""Validation metrics against independent references (sklearn, statsmodels, patsy, hand counts) and known truth."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy.special import expit, logit
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sklearn_log_loss
from statsmodels.nonparametric.smoothers_lowess import lowess
from statsmodels.stats.proportion import proportion_confint

from models import bootstrap
from models import metrics as m


def _simulate(n: int, *, a: float = 0.0, b: float = 1.0, seed: int,
              decimals: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes drawn from a true risk, and a model's risk ``expit(a + b * logit(true))`` (known miscalibration).

    ``decimals`` rounds the model's risk, giving many ties.
    """
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-1.2, 1.0, n)
    y = (rng.random(n) < expit(true_logit)).astype(int)
    p = expit(a + b * true_logit)
    if decimals is not None:
        p = np.clip(np.round(p, decimals), 10.0 ** -decimals, 1 - 10.0 ** -decimals)
    return y, p, expit(true_logit)


# ------------------------------------------------------------------------------ discrimination and scores
def test_auroc_by_hand_counts_ties_as_one_half():
    # pairs (event, non-event): (0.35, 0.1) 1, (0.35, 0.4) 0, (0.8, 0.1) 1, (0.8, 0.4) 1
    assert m.auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(3 / 4)
    # event 0.2 ties non-event 0.2 (1/2) and is below 0.5 (0); event 0.9 beats both (2)
    assert m.auroc([0, 1, 0, 1], [0.2, 0.2, 0.5, 0.9]) == pytest.approx(2.5 / 4)


@pytest.mark.parametrize("decimals", [None, 2])
def test_auroc_equals_sklearn_with_and_without_ties(decimals):
    y, p, _ = _simulate(20_000, a=0.3, b=1.4, seed=1, decimals=decimals)
    assert m.auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_brier_log_loss_and_scaled_brier_by_hand():
    assert m.brier_score([0, 1], [0.2, 0.6]) == pytest.approx((0.2 ** 2 + 0.4 ** 2) / 2)
    assert m.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # Brier (0.04 + 0.16 + 0.01 + 0.25) / 4 = 0.115; prevalence 1/2, so the reference Brier is 0.25
    assert m.scaled_brier_score([0, 1, 1, 0], [0.2, 0.6, 0.9, 0.5]) == pytest.approx(1 - 0.115 / 0.25)
    assert m.log_loss([1], [0.0]) == pytest.approx(-math.log(1e-15))  # clipped, not infinite


@pytest.mark.parametrize("decimals", [None, 2])
def test_brier_and_log_loss_equal_sklearn(decimals):
    y, p, _ = _simulate(20_000, a=-0.4, b=0.8, seed=2, decimals=decimals)
    assert m.brier_score(y, p) == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert m.log_loss(y, p) == pytest.approx(sklearn_log_loss(y, p), rel=1e-12)
    prevalence = y.mean()
    assert m.scaled_brier_score(y, p) == pytest.approx(1 - brier_score_loss(y, p) / (prevalence * (1 - prevalence)))


def test_bool_outcome_is_accepted():
    y, p, _ = _simulate(500, seed=3)
    assert m.auroc(y.astype(bool), p) == m.auroc(y, p)


# ------------------------------------------------------------------------------------ calibration
@pytest.mark.parametrize(("a", "b", "decimals"), [(0.4, 0.7, None), (-0.5, 1.6, None), (0.2, 1.0, 2)])
def test_calibration_intercept_and_slope_equal_statsmodels_glm(a, b, decimals):
    y, p, _ = _simulate(5_000, a=a, b=b, seed=4, decimals=decimals)
    x = logit(p)
    in_the_large = sm.GLM(y, np.ones((len(y), 1)), family=sm.families.Binomial(), offset=x).fit()
    recalibration = sm.GLM(y, sm.add_constant(x), family=sm.families.Binomial()).fit()
    intercept, slope = m.calibration_intercept_slope(y, p)
    assert intercept == pytest.approx(in_the_large.params[0], abs=1e-6)
    assert slope == pytest.approx(recalibration.params[1], abs=1e-6)


def test_calibration_recovers_known_miscalibration():
    # predictions too extreme (logit doubled): the slope is 1/2 and, at mean logit -1.2, risks are too low
    y, p, _ = _simulate(200_000, a=0.0, b=2.0, seed=5)
    intercept, slope = m.calibration_intercept_slope(y, p)
    assert slope == pytest.approx(0.5, abs=0.01)
    assert intercept > 0.1
    # predictions shifted down by 0.5 on the logit scale: calibration-in-the-large is +0.5, slope 1
    y, p, _ = _simulate(200_000, a=-0.5, b=1.0, seed=6)
    intercept, slope = m.calibration_intercept_slope(y, p)
    assert intercept == pytest.approx(0.5, abs=0.02)
    assert slope == pytest.approx(1.0, abs=0.02)


def test_perfectly_calibrated_predictions():
    y, p, _ = _simulate(200_000, seed=7)
    intercept, slope = m.calibration_intercept_slope(y, p)
    assert intercept == pytest.approx(0.0, abs=0.02)
    assert slope == pytest.approx(1.0, abs=0.02)
    assert m.calibration_errors(y, p)["ici"] < 0.005


def test_calibration_slope_is_nan_under_complete_separation():
    intercept, slope = m.calibration_intercept_slope([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert np.isnan(slope)  # the maximum likelihood estimate does not exist
    assert np.isfinite(intercept)
    # one event below every non-event separates too (a decreasing slope without end), and so does a tie at the
    # boundary (quasi-complete); an event among the non-events does not
    assert np.isnan(m.calibration_intercept_slope([1, 0, 0, 0], [0.1, 0.2, 0.3, 0.4])[1])
    assert np.isnan(m.calibration_intercept_slope([0, 0, 1, 1, 0], [0.1, 0.2, 0.3, 0.4, 0.3])[1])
    assert np.isfinite(m.calibration_intercept_slope([0, 1, 0, 1, 0], [0.1, 0.2, 0.3, 0.4, 0.5])[1])


# ------------------------------------------------------------------------------ flexible calibration
@pytest.mark.parametrize(("seed", "decimals"), [(1, None), (8, 2)])
def test_flexible_calibration_equals_statsmodels_natural_spline_fit(seed, decimals):
    """Same knots, same function space (patsy's natural cubic regression spline ``cr``): same fitted risks."""
    y, p, _ = _simulate(5_000, a=-0.3, b=1.5, seed=seed, decimals=decimals)
    x = logit(p)
    lower, inner_1, inner_2, upper = np.quantile(x, [0.05, 0.35, 0.65, 0.95])  # Harrell's 4 knots
    formula = (f"y ~ cr(x, knots=({inner_1}, {inner_2}), lower_bound={lower}, upper_bound={upper}, "
               "constraints='center')")
    reference = smf.glm(formula, pd.DataFrame({"y": y, "x": x}), family=sm.families.Binomial()).fit()
    curve = m.flexible_calibration(y, p)
    np.testing.assert_allclose(curve.knots, [lower, inner_1, inner_2, upper], atol=1e-12)
    np.testing.assert_allclose(curve.smoothed, reference.fittedvalues, atol=1e-8)


def test_flexible_calibration_curve_is_a_frozen_tabulation_of_the_fit():
    y, p, _ = _simulate(3_000, a=0.2, b=0.8, seed=9)
    curve = m.flexible_calibration(y, p, knots=5)
    assert len(curve.knots) == 5
    assert curve.grid.min() == p.min() and curve.grid.max() == p.max() and len(curve.grid) == 100
    np.testing.assert_allclose(curve.risk_at(curve.grid), curve.observed)
    np.testing.assert_allclose(curve.risk_at(p), curve.smoothed)
    with pytest.raises(ValueError, match="read-only"):
        curve.observed[0] = 0.5
    with pytest.raises(AttributeError):
        curve.grid = curve.observed  # type: ignore[misc]


def test_calibration_errors_summarise_the_per_row_differences():
    y, p, _ = _simulate(4_000, a=0.3, b=1.3, seed=10, decimals=2)  # ties: weighted quantiles on distinct risks
    error = np.abs(p - m.flexible_calibration(y, p).smoothed)
    errors = m.calibration_errors(y, p)
    assert errors["ici"] == pytest.approx(error.mean(), abs=1e-12)
    assert errors["e50"] == pytest.approx(np.median(error), abs=1e-12)
    assert errors["e90"] == pytest.approx(np.quantile(error, 0.9), abs=1e-12)
    assert errors["emax"] == pytest.approx(error.max(), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_errors_close_to_the_lowess_reference(seed):
    """Austin & Steyerberg (2019) smooth with loess; a spline is an accepted alternative.

    Tolerance: the two smoothers differ by less than their sampling error at n = 5,000 (about 0.005
    for ICI here); 0.01 for ICI and 0.02 for E50/E90, whose per-row differences vary more.
    """
    y, p, _ = _simulate(5_000, a=-0.3, b=1.5, seed=seed)
    smoothed = lowess(y, p, frac=0.75, it=0, return_sorted=False)  # no robustness steps for 0/1 data
    error = np.abs(p - smoothed)
    errors = m.calibration_errors(y, p)
    assert errors["ici"] == pytest.approx(error.mean(), abs=0.01)
    assert errors["e50"] == pytest.approx(np.median(error), abs=0.02)
    assert errors["e90"] == pytest.approx(np.quantile(error, 0.9), abs=0.02)


def test_calibration_errors_recover_the_known_truth():
    y, p, truth = _simulate(200_000, a=-0.3, b=1.5, seed=11)
    error = np.abs(p - truth)  # the true calibration curve is known
    errors = m.calibration_errors(y, p)
    assert errors["ici"] == pytest.approx(error.mean(), abs=0.003)
    assert errors["e50"] == pytest.approx(np.median(error), abs=0.005)
    assert errors["e90"] == pytest.approx(np.quantile(error, 0.9), abs=0.005)


def test_flexible_calibration_with_few_distinct_risks_falls_back_to_a_linear_fit():
    y = np.array([0, 1] * 50 + [0, 0, 1] * 30)
    p = np.array([0.2] * 100 + [0.3] * 90)
    curve = m.flexible_calibration(y, p)
    assert len(curve.knots) == 0 and len(curve.coefficients) == 2
    np.testing.assert_allclose(curve.risk_at([0.2, 0.3]), [0.5, 1 / 3], atol=1e-8)  # two groups: saturated


# --------------------------------------------------------------------------------- binned calibration
def test_binned_calibration_by_hand():
    table = m.binned_calibration([0, 1, 0, 1], [0.1, 0.2, 0.6, 0.9], bins=2)
    assert list(table.columns) == ["bin", "n", "mean_predicted", "observed", "observed_low", "observed_high",
                                   "events"]
    assert table["n"].tolist() == [2, 2] and table["events"].tolist() == [1, 1]
    np.testing.assert_allclose(table["mean_predicted"], [0.15, 0.75])
    np.testing.assert_allclose(table["observed"], [0.5, 0.5])


def test_binned_calibration_matches_qcut_and_clopper_pearson():
    y, p, _ = _simulate(10_000, a=0.2, b=1.2, seed=12, decimals=2)
    table = m.binned_calibration(y, p, bins=10)
    groups = pd.qcut(p, 10, labels=False, duplicates="drop")
    reference = pd.DataFrame({"y": y, "p": p, "g": groups}).groupby("g").agg(
        n=("y", "size"), events=("y", "sum"), mean_predicted=("p", "mean"))
    assert table["n"].tolist() == reference["n"].tolist()
    assert table["events"].tolist() == reference["events"].tolist()
    np.testing.assert_allclose(table["mean_predicted"], reference["mean_predicted"])
    low, high = proportion_confint(table["events"], table["n"], alpha=0.05, method="beta")
    np.testing.assert_allclose(table["observed_low"], low, atol=1e-12)
    np.testing.assert_allclose(table["observed_high"], high, atol=1e-12)


def test_binned_interval_is_exact_at_zero_and_all_events():
    table = m.binned_calibration([0, 0, 0, 1, 1, 1], [0.1, 0.1, 0.1, 0.9, 0.9, 0.9], bins=2)
    low, high = proportion_confint([0, 3], [3, 3], alpha=0.05, method="beta")
    np.testing.assert_allclose(table["observed_low"], low, atol=1e-12)
    np.testing.assert_allclose(table["observed_high"], high, atol=1e-12)


# -------------------------------------------------------------------------------------- net benefit
def test_net_benefit_by_hand():
    y, p = [1, 0, 1, 0, 0], [0.9, 0.8, 0.4, 0.3, 0.1]
    curve = m.net_benefit(y, p, [0.35, 0.4, 0.95])
    odds = np.array([0.35 / 0.65, 0.4 / 0.6, 0.95 / 0.05])
    # t = 0.35 and t = 0.4 (p >= t treats the 0.4 row): 2 true and 1 false positive; t = 0.95: nobody treated
    np.testing.assert_allclose(curve["net_benefit_model"], [2 / 5 - 1 / 5 * odds[0], 2 / 5 - 1 / 5 * odds[1], 0.0])
    np.testing.assert_allclose(curve["net_benefit_treat_all"], 0.4 - 0.6 * odds)
    assert (curve["net_benefit_treat_none"] == 0).all()
    assert list(curve.columns) == ["threshold", "net_benefit_model", "net_benefit_treat_all", "net_benefit_treat_none"]


def test_net_benefit_equals_a_threshold_by_threshold_count():
    y, p, _ = _simulate(3_000, seed=13, decimals=2)
    thresholds = np.round(np.arange(0.01, 0.51, 0.01), 2)
    curve = m.net_benefit(y, p, thresholds)
    for t, model in zip(thresholds, curve["net_benefit_model"], strict=True):
        treated = p >= t
        tp, fp = np.sum(treated & (y == 1)), np.sum(treated & (y == 0))
        assert model == pytest.approx(tp / len(y) - fp / len(y) * t / (1 - t), abs=1e-12)


# ----------------------------------------------------------------------------------------- bootstrap
def _clustered(n_clusters: int, *, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cluster's row copied 1 to 3 times: rows of a cluster are perfectly correlated."""
    y, p, _ = _simulate(n_clusters, a=0.2, b=1.2, seed=seed)
    copies = np.random.default_rng(seed + 1).integers(1, 4, n_clusters)
    cluster = np.repeat(np.arange(n_clusters), copies)
    return y[cluster], p[cluster], np.array([f"P{c:05d}" for c in cluster])


def test_bootstrap_is_deterministic_for_a_seed_and_covers_the_estimate():
    y, p, _ = _simulate(2_000, seed=14)
    metrics = {"auroc": m.auroc, "brier": m.brier_score}
    first = m.bootstrap_intervals(y, p, metrics, n_boot=50, seed=3)
    assert first == m.bootstrap_intervals(y, p, metrics, n_boot=50, seed=3)
    assert first != m.bootstrap_intervals(y, p, metrics, n_boot=50, seed=4)
    for estimate, low, high in first.values():
        assert low < estimate < high
    assert first["auroc"][0] == m.auroc(y, p)


def test_cluster_bootstrap_is_wider_than_row_bootstrap_for_duplicated_rows():
    y, p, groups = _clustered(1_500, seed=15)
    metrics = {"auroc": m.auroc, "brier": m.brier_score}
    rows = m.bootstrap_intervals(y, p, metrics, n_boot=200, seed=5)
    clusters = m.bootstrap_intervals(y, p, metrics, n_boot=200, seed=5, groups=groups)
    for name in metrics:
        assert clusters[name][0] == rows[name][0]
        assert clusters[name][2] - clusters[name][1] > 1.15 * (rows[name][2] - rows[name][1])


def test_summarise_performance_has_the_intervals_of_bootstrap_intervals():
    """The weighted fast path gives the same replicates as evaluating the public metrics on each resample."""
    y, p, groups = _clustered(300, seed=16)
    summary = m.summarise_performance(y, p, n_boot=25, seed=7, groups=groups)

    def errors(name: str):
        return lambda yy, pp: m.calibration_errors(yy, pp)[name]

    reference = m.bootstrap_intervals(y, p, {
        "auroc": m.auroc, "brier": m.brier_score, "scaled_brier": m.scaled_brier_score, "log_loss": m.log_loss,
        "calibration_intercept": lambda yy, pp: m.calibration_intercept_slope(yy, pp)[0],
        "calibration_slope": lambda yy, pp: m.calibration_intercept_slope(yy, pp)[1],
        "ici": errors("ici"), "e50": errors("e50"), "e90": errors("e90"), "prevalence": lambda yy, pp: yy.mean(),
    }, n_boot=25, seed=7, groups=groups)
    for name, (estimate, low, high) in reference.items():
        assert summary[name] == pytest.approx({"estimate": estimate, "low": low, "high": high}, abs=1.5e-6), name


def _far_mapper(calls: list[int]):
    """A mapper that is not ``sequential``: every piece and shared input goes through pickle, pieces run in reverse."""
    import pickle

    def mapper(fn, items, shared=()):
        calls.append(len(items))
        shipped = pickle.loads(pickle.dumps((fn, list(items), tuple(shared))))
        done = {i: shipped[0](item, *shipped[2]) for i, item in reversed(list(enumerate(shipped[1])))}
        return [done[i] for i in range(len(items))]
    return mapper


@pytest.mark.parametrize("clustered", [True, False])
def test_summarise_performance_gives_the_same_intervals_with_replicates_in_blocks_elsewhere(clustered):
    y, p, groups = _clustered(300, seed=21)
    groups = groups if clustered else None
    calls: list[int] = []
    here = m.summarise_performance(y, p, n_boot=23, seed=5, groups=groups)
    far = m.summarise_performance(y, p, n_boot=23, seed=5, groups=groups, mapper=_far_mapper(calls))
    assert calls == [8]  # 23 replicates in 8 blocks
    assert json.dumps(far) == json.dumps(here)


def test_replicate_blocks_draw_the_resamples_of_one_pass():
    groups = np.repeat(np.arange(40), 3)
    one_pass = list(bootstrap._replicate_weights(120, groups, n_boot=11, seed=3))
    codes, units, blocks = bootstrap._replicate_blocks(120, groups, n_boot=11, seed=3, pieces=4)
    assert [b.size for b in blocks] == [3, 3, 2, 3] and units == 40
    in_blocks = [w for block in blocks for w in bootstrap._block_weights(block, codes, units)]
    assert len(in_blocks) == 11
    for a, b in zip(one_pass, in_blocks, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.sum() == 120  # a resample of 40 clusters of 3 rows
    # more pieces than replicates: one replicate per block
    assert [b.size for b in bootstrap._replicate_blocks(120, None, n_boot=3, seed=3, pieces=8)[2]] == [1, 1, 1]


def test_summarise_performance_is_json_stable():
    y, p, groups = _clustered(400, seed=17)
    summary = m.summarise_performance(y, p, n_boot=20, seed=1, groups=groups)
    assert json.dumps(summary, allow_nan=False) == json.dumps(
        m.summarise_performance(y, p, n_boot=20, seed=1, groups=groups), allow_nan=False)
    assert summary["n"] == {"rows": len(y), "clusters": 400}
    assert summary["events"]["rows"] == int(y.sum())
    assert summary["bootstrap"] == {"replicates": 20, "level": 0.95, "defined": 20}
    for name in ("auroc", "brier", "scaled_brier", "log_loss", "calibration_intercept", "calibration_slope",
                 "ici", "e50", "e90", "prevalence"):
        for value in summary[name].values():
            assert type(value) is float and round(value, 6) == value


def test_undefined_replicates_are_left_out():
    # two events, at the lowest and the highest risk: many resamples have none, or only one, which the risks then
    # separate from the non-events (no calibration slope exists)
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    p = np.linspace(0.05, 0.5, 10)
    summary = m.summarise_performance(y, p, n_boot=30, seed=2)
    assert 0 < summary["bootstrap"]["defined"] < 30
    interval = m.bootstrap_intervals(y, p, {"auroc": m.auroc}, n_boot=30, seed=2)["auroc"]
    assert interval[1] == pytest.approx(summary["auroc"]["low"], abs=1e-6)


# ------------------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize(("y", "p", "message"), [
    ([0, 1, 2], [0.1, 0.2, 0.3], r"y must be 0 or 1 \(bool accepted\); 1 values are not \(e.g. 2; positions 2\)"),
    ([0, 1, np.nan], [0.1, 0.2, 0.3], r"y must be 0 or 1"),
    (["a", "b"], [0.1, 0.2], r"y must be 0 or 1 \(bool accepted\); got non-numeric values \(dtype <U1\)"),
    (["0", "1"], [0.1, 0.2], r"y must be 0 or 1 \(bool accepted\); got non-numeric values"),  # text is not 0/1
    (pd.array([0, 1, None], dtype="Int64"), [0.1, 0.2, 0.3], r"y must be 0 or 1"),  # missing outcome
    ([0, 1, 1], [-0.2, 0.5, 1.3], r"p must be within \[0, 1\]; 2 values outside \(min -0.2, max 1.3; positions 0, 2\)"),
    ([0, 1], [0.1, np.nan], r"p must be finite; 1 values are NaN or infinite \(positions 1\)"),
    ([0, 1, 1], [0.1, 0.2], r"y and p must have the same length; got 3 and 2"),
    ([], [], r"must not be empty"),
    ([[0, 1]], [[0.1, 0.2]], r"y must be one-dimensional; got shape \(1, 2\)"),
    ([1, 1, 1], [0.1, 0.2, 0.3], r"at least one event \(1\) and one non-event \(0\) for auroc; got 3 events in 3 rows"),
])
def test_bad_inputs_are_refused_with_the_rule(y, p, message):
    with pytest.raises(ValueError, match=message):
        m.auroc(y, p)


def test_bad_options_are_refused_with_the_rule():
    y, p, _ = _simulate(200, seed=18)
    with pytest.raises(ValueError, match=r"knots must be one of 3, 4, 5, 6, 7 .*; got 2"):
        m.flexible_calibration(y, p, knots=2)
    with pytest.raises(ValueError, match=r"thresholds must be a 1-D array within \[0, 1\); 1 values are not"):
        m.net_benefit(y, p, [0.1, 1.0])
    with pytest.raises(ValueError, match=r"bins must be a positive integer; got 0"):
        m.binned_calibration(y, p, bins=0)
    with pytest.raises(ValueError, match=r"groups must have one value per row; got 3 values for 200 rows"):
        m.bootstrap_intervals(y, p, {"brier": m.brier_score}, seed=1, groups=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"groups must not be missing; 1 values are \(positions 0\)"):
        m.summarise_performance(y, p, n_boot=5, seed=1, groups=np.array([None] + ["g"] * 199, dtype=object))
    with pytest.raises(ValueError, match=r"n_boot must be a positive integer; got 0"):
        m.bootstrap_intervals(y, p, {"brier": m.brier_score}, n_boot=0, seed=1)
    with pytest.raises(ValueError, match=r"level must be a probability strictly between 0 and 1; got 95"):
        m.bootstrap_intervals(y, p, {"brier": m.brier_score}, seed=1, level=95)
    with pytest.raises(ValueError, match=r"for calibration_errors; got 0 events in 200 rows"):
        m.calibration_errors(np.zeros(200), p)
