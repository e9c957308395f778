"""Drift checks against hand computations, np.histogram, statsmodels Logit, Poisson root-finding and known truth."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.optimize import brentq
from scipy.special import expit, logit

from features.dictionary import FeatureSpec
from models import drift as d
from models.logistic import recalibration_intervals
from models.metrics import calibration_intercept_slope
from models.risk_table import risk_table


def _spec(name: str, kind: str) -> FeatureSpec:
    return FeatureSpec(name, kind, "", (name,), name)  # type: ignore[arg-type]


def _batch(n: int, *, seed: int, odds_ratio: float = 1.0, slope: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Risks ``p`` of a champion and outcomes drawn from ``expit(log(odds_ratio) + logit(p) / slope)``."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(-1.5, 1.0, n)
    y = (rng.random(n) < expit(np.log(odds_ratio) + true_logit)).astype(int)
    return y, expit(slope * true_logit)


# ------------------------------------------------------------------------------------------------- PSI
def test_psi_two_bins_by_hand():
    # reference 60% / 40%, current 30% / 70%, no missing:
    # (0.3 - 0.6) ln(0.3 / 0.6) + (0.7 - 0.4) ln(0.7 / 0.4) = 0.3 ln 2 + 0.3 ln 1.75 = 0.375829
    result = d.population_stability([0] * 60 + [1] * 40, [False] * 30 + [True] * 70, kind="binary")
    assert result.psi == pytest.approx(0.3 * math.log(2) + 0.3 * math.log(1.75))
    assert result.psi == pytest.approx(0.375829, abs=1e-6)
    assert result.band == "major"
    assert [b["label"] for b in result.bins] == ["0", "1", "missing"]
    assert [b["contribution"] for b in result.bins] == pytest.approx([0.3 * math.log(2), 0.3 * math.log(1.75), 0])


def test_psi_three_bins_by_hand():
    # a/b/c 50/30/20 -> 40/30/30: (-0.1) ln(0.8) + 0 + 0.1 ln(1.5) = 0.022314 + 0.040547 = 0.062861
    reference = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    current = ["c"] * 30 + ["a"] * 40 + ["b"] * 30
    result = d.population_stability(reference, current, kind="categorical")
    assert result.psi == pytest.approx(0.062861, abs=1e-6)
    assert result.band == "stable"
    shares = {b["label"]: (b["reference_share"], b["current_share"]) for b in result.bins}
    assert shares == {"a": (0.5, 0.4), "b": (0.3, 0.3), "c": (0.2, 0.3), "missing": (0.0, 0.0)}


@pytest.mark.parametrize("kind, sample", [
    ("numeric", np.random.default_rng(1).gamma(2.0, 3.0, 5000)),
    ("numeric", np.r_[np.random.default_rng(2).normal(size=900), [np.nan] * 100]),
    ("numeric", np.random.default_rng(3).integers(0, 4, 1000).astype(float)),  # ties: coinciding deciles
    ("binary", np.random.default_rng(4).random(1000) < 0.2),
    ("categorical", np.random.default_rng(5).choice(np.array(["xray", "ct", None], dtype=object), 1000)),
])
def test_psi_of_a_sample_against_itself_is_zero(kind, sample):
    result = d.population_stability(sample, sample, kind=kind)
    assert result.psi == 0.0
    assert result.band == "stable"
    assert sum(b["reference_share"] for b in result.bins) == pytest.approx(1.0)


def test_psi_of_a_shifted_normal():
    rng = np.random.default_rng(7)
    reference = rng.normal(0, 1, 200_000)
    # PSI of a continuous normal shifted by delta SD is delta**2 (J-divergence); decile bins give a bit less
    major = d.population_stability(reference, rng.normal(1.0, 1, 50_000), kind="numeric")
    stable = d.population_stability(reference, rng.normal(0.1, 1, 50_000), kind="numeric")
    assert major.band == "major" and 0.6 < major.psi < 1.0
    assert stable.band == "stable" and stable.psi < 0.02


def test_psi_counts_a_new_category_with_the_floor():
    reference = ["xray"] * 600 + ["ct"] * 400
    current = ["xray"] * 570 + ["ct"] * 380 + ["mri"] * 50  # a category never seen in training
    result = d.population_stability(reference, current, kind="categorical", floor=1e-4)
    new = next(b for b in result.bins if b["label"] == "mri")
    assert new["reference_share"] == 0.0 and new["current_share"] == 0.05
    assert new["contribution"] == pytest.approx((0.05 - 1e-4) * math.log(0.05 / 1e-4))
    expected = new["contribution"] + (0.57 - 0.6) * math.log(0.57 / 0.6) + (0.38 - 0.4) * math.log(0.38 / 0.4)
    assert result.psi == pytest.approx(expected)
    assert result.band == "major"


def test_psi_counts_missing_shares():
    rng = np.random.default_rng(8)
    values = rng.normal(size=1000)
    reference = np.where(np.arange(1000) < 100, np.nan, values)  # 10% missing
    current = pd.Series(np.where(np.arange(1000) < 300, np.nan, values)).astype("Float64")  # 30%, as pd.NA
    result = d.population_stability(reference, current, kind="numeric")
    missing = result.bins[-1]
    assert missing["label"] == "missing"
    assert (missing["reference_share"], missing["current_share"]) == (0.1, 0.3)
    assert missing["contribution"] == pytest.approx(0.2 * math.log(3))
    cat = d.population_stability(["a", None, "b", "a"], ["a", pd.NA, np.nan, "b"], kind="categorical")
    assert (cat.bins[-1]["reference_share"], cat.bins[-1]["current_share"]) == (0.25, 0.5)
    binary = d.population_stability(pd.Series([True, None, False, True], dtype="boolean"), [1.0, np.nan],
                                    kind="binary")
    assert [(b["label"], b["reference_share"], b["current_share"]) for b in binary.bins] == [
        ("0", 0.25, 0.0), ("1", 0.5, 0.5), ("missing", 0.25, 0.5)]


def test_psi_of_a_pandas_categorical_ignores_unobserved_categories():
    reference = pd.Series(["lumbar", "thoracolumbar"] * 50, dtype=pd.CategoricalDtype(["lumbar", "thoracolumbar",
                                                                                       "upper_thoracic"]))
    result = d.population_stability(reference, reference.astype(object), kind="categorical")
    assert [b["label"] for b in result.bins] == ["lumbar", "thoracolumbar", "missing"]
    assert result.psi == 0.0


def test_psi_equals_a_direct_computation_with_np_histogram():
    rng = np.random.default_rng(9)
    reference, current = rng.normal(0, 1, 5002), rng.normal(0.3, 1.2, 3001)  # 5001 k / 10 is never whole
    edges = np.r_[-np.inf, np.quantile(reference, np.arange(1, 10) / 10), np.inf]
    assert not np.isin(np.r_[reference, current], edges).any()  # no value on an edge: closure does not matter
    e = np.histogram(reference, bins=edges)[0] / len(reference)
    a = np.histogram(current, bins=edges)[0] / len(current)
    result = d.population_stability(reference, current, kind="numeric")
    assert result.psi == pytest.approx(float(np.sum((a - e) * np.log(a / e))), rel=1e-12)
    assert [b["current_share"] for b in result.bins[:-1]] == pytest.approx(a)
    assert result.bins[0]["label"].startswith("(-inf, ") and result.bins[-2]["label"].endswith(", inf)")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from("abc"), min_size=1, max_size=40),
       st.lists(st.sampled_from("abcd"), min_size=1, max_size=40))
def test_psi_is_non_negative_and_symmetric(reference, current):
    forward = d.population_stability(reference, current, kind="categorical").psi
    assert forward >= 0
    assert forward == pytest.approx(d.population_stability(current, reference, kind="categorical").psi)


@pytest.mark.parametrize("kwargs, current, match", [
    ({"kind": "numeric"}, [], "current must be a non-empty one-dimensional sample"),
    ({"kind": "numeric"}, np.zeros((2, 2)), r"current must be a non-empty one-dimensional sample; got shape \(2, 2\)"),
    ({"kind": "ordinal"}, [1.0], "kind must be one of numeric, binary, categorical; got 'ordinal'"),
    ({"kind": "numeric", "bins": 1}, [1.0], "bins must be an integer of at least 2"),
    ({"kind": "numeric", "floor": 0}, [1.0], r"floor must be within \(0, 1\)"),
    ({"kind": "numeric"}, ["a"], "current of a numeric feature must hold numbers"),
    ({"kind": "binary"}, [0, 2, 1], "current of a binary feature must hold 0/1 or bool values; 1 values are not"),
])
def test_psi_rejects_bad_input(kwargs, current, match):
    with pytest.raises(ValueError, match=match):
        d.population_stability([0.0, 1.0, 1.0], current, **kwargs)


def test_feature_drift_sorts_features_by_psi_and_is_json_ready():
    rng = np.random.default_rng(10)
    n = 20_000
    reference = pd.DataFrame({"age_years": rng.normal(75, 8, n), "diabetes": (rng.random(n) < 0.25).astype(float),
                              "sex": rng.choice(np.array(["f", "m"], dtype=object), n, p=[0.7, 0.3]),
                              "unused": 1})
    current = pd.DataFrame({"age_years": rng.normal(83, 8, 5000), "diabetes": (rng.random(5000) < 0.25).astype(float),
                            "sex": rng.choice(np.array(["f", "m"], dtype=object), 5000, p=[0.55, 0.45])})
    specs = [_spec("sex", "categorical"), _spec("diabetes", "binary"), _spec("age_years", "numeric")]
    rows = d.feature_drift(reference, current, features=specs)
    assert [r["feature"] for r in rows] == ["age_years", "sex", "diabetes"]
    assert [r["band"] for r in rows] == ["major", "moderate", "stable"]
    assert rows[0] == {"feature": "age_years", "kind": "numeric", "psi": rows[0]["psi"], "band": "major",
                       "direction": "higher"}
    assert rows[1]["direction"] == "fewer f"  # f and m change alike: the first bin in order names it
    assert rows[0]["psi"] == round(d.population_stability(reference["age_years"], current["age_years"],
                                                          kind="numeric").psi, 6)
    assert json.loads(json.dumps(rows)) == rows
    with pytest.raises(ValueError, match="current must hold a column per feature; 1 missing: unused"):
        d.feature_drift(reference, current, features=[*specs, _spec("unused", "numeric")])


@pytest.mark.parametrize("kind, reference, current, expected", [
    ("categorical", ["yes"] * 20 + ["no"] * 30 + ["unknown"] * 50, ["yes"] * 35 + ["no"] * 65, "fewer unknown"),
    ("binary", [0] * 70 + [1] * 30, [0] * 40 + [1] * 60, "more 1"),
    ("numeric", list(range(100)), list(range(30, 130)), "higher"),
    ("numeric", list(range(100)), list(range(-40, 60)), "lower"),
    ("numeric", list(range(100)), list(range(50)) + [None] * 50, "more missing"),
    ("categorical", ["a", "b"] * 10, ["b", "a"] * 10, "none"),
])
def test_shift_direction_names_the_largest_change_of_share(kind, reference, current, expected):
    result = d.population_stability(reference, current, kind=kind)
    assert d.shift_direction(result, kind=kind) == expected


def test_a_numeric_direction_does_not_depend_on_the_reference_deciles():
    rng = np.random.default_rng(16)
    current = rng.normal(8, 2, 2000)
    directions = {d.shift_direction(d.population_stability(rng.normal(5, 2, n), current, kind="numeric"),
                                    kind="numeric") for n in (500, 5000, 50_000)}
    assert directions == {"higher"}
    with pytest.raises(ValueError, match="kind must be one of"):
        d.shift_direction(d.population_stability([1, 2], [1, 2], kind="numeric"), kind="ordinal")


def test_feature_drift_is_fast_on_a_registry_sized_reference():
    rng = np.random.default_rng(11)
    names = [f"x{i}" for i in range(5)]
    reference = pd.DataFrame(rng.normal(size=(1_600_000, 5)), columns=names)
    current = pd.DataFrame(rng.normal(0.05, 1, size=(40_000, 5)), columns=names)
    start = time.perf_counter()
    rows = d.feature_drift(reference, current, features=[_spec(name, "numeric") for name in names])
    assert time.perf_counter() - start < 20  # about 0.5 s unloaded; loose for a busy machine
    assert len(rows) == 5 and all(r["band"] == "stable" for r in rows)


# ------------------------------------------------------------------------------------------ calibration
def test_intercept_and_slope_match_statsmodels_logit():
    y, p = _batch(4000, seed=12, odds_ratio=1.3, slope=1.25)
    result = d.batch_calibration(y, p)
    lp = logit(p)
    in_the_large = sm.Logit(y, np.ones((len(y), 1)), offset=lp).fit(disp=0)
    recalibration = sm.Logit(y, sm.add_constant(lp)).fit(disp=0)
    ci_large, ci_slope = in_the_large.conf_int(0.05), recalibration.conf_int(0.05)
    assert result["intercept"]["estimate"] == pytest.approx(in_the_large.params[0], abs=2e-6)
    assert [result["intercept"]["low"], result["intercept"]["high"]] == pytest.approx(ci_large[0], abs=2e-6)
    assert result["slope"]["estimate"] == pytest.approx(recalibration.params[1], abs=2e-6)
    assert [result["slope"]["low"], result["slope"]["high"]] == pytest.approx(ci_slope[1], abs=2e-6)
    intercept, slope = calibration_intercept_slope(y, p)  # the project's own estimates agree
    assert (result["intercept"]["estimate"], result["slope"]["estimate"]) == pytest.approx((intercept, slope), abs=2e-6)


@pytest.mark.parametrize(("n", "seed", "limits"), [(4000, 12, 1e-7), (300, 3, 1e-5)])
def test_the_published_irls_intervals_agree_with_the_newton_wald_intervals(n, seed, limits):
    y, p = _batch(n, seed=seed, odds_ratio=1.3, slope=1.25)
    table, _ = risk_table(y, p)
    irls, newton = (recalibration_intervals(table, level=0.95, method=method) for method in ("irls", "newton"))
    for published, exact in zip(irls, newton, strict=True):
        assert published[0] == pytest.approx(exact[0], abs=1e-9)  # the estimates: one maximum
        assert published[1:] == pytest.approx(exact[1:], abs=limits)  # IRLS's information lags one iteration
    result = d.batch_calibration(y, p)
    assert [result["intercept"][k] for k in ("estimate", "low", "high")] == [round(v, 6) for v in irls[0]]
    assert [result["slope"][k] for k in ("estimate", "low", "high")] == [round(v, 6) for v in irls[1]]


@pytest.mark.parametrize("level", [0.95, 0.9])
def test_oe_interval_is_the_garwood_interval_found_by_root_finding(level):
    y, p = np.r_[np.ones(37), np.zeros(363)], np.full(400, 0.075)  # observed 37, expected 30
    result = d.batch_calibration(y, p, level=level)
    tail = (1 - level) / 2
    low = brentq(lambda mu: stats.poisson.sf(36, mu) - tail, 1e-9, 37)  # P(X >= 37 | mu) = tail
    high = brentq(lambda mu: stats.poisson.cdf(37, mu) - tail, 37, 200)  # P(X <= 37 | mu) = tail
    assert result["expected"] == pytest.approx(30.0)
    assert result["oe_ratio"]["estimate"] == pytest.approx(37 / 30, abs=1e-6)
    assert result["oe_ratio"]["low"] == pytest.approx(low / 30, abs=1e-6)
    assert result["oe_ratio"]["high"] == pytest.approx(high / 30, abs=1e-6)


def test_a_calibrated_batch_has_not_drifted():
    result = d.batch_calibration(*_batch(2000, seed=2024))
    assert result["drifted"] is False and result["judged"] is True and result["directions"] == []
    assert "includes 1" in result["reason"]
    assert json.loads(json.dumps(result)) == result
    alarms = sum(d.batch_calibration(*_batch(2000, seed=seed))["drifted"] for seed in range(50))
    assert alarms <= 10  # two 95% tests: about 5-10% false alarms expected (2.5 to 5 of 50; 5 with these seeds)


def test_a_batch_with_doubled_odds_has_drifted():
    result = d.batch_calibration(*_batch(2000, seed=13, odds_ratio=2.0))
    assert result["drifted"] is True
    assert "observed/expected ratio" in result["reason"] and "more events than predicted" in result["reason"]
    assert result["oe_ratio"]["low"] > 1
    assert result["intercept"]["estimate"] == pytest.approx(math.log(2), abs=0.15)  # the true shift, log 2
    assert result["judged"] is True
    assert result["directions"] == ["observed/expected ratio: more events than predicted"]


def test_too_extreme_risks_drift_by_the_slope():
    result = d.batch_calibration(*_batch(3000, seed=14, slope=1.6))
    assert result["drifted"] is True
    assert "calibration slope" in result["reason"] and "risks too extreme" in result["reason"]
    assert result["slope"]["high"] < 1
    assert "calibration slope: risks too extreme" in result["directions"]


@pytest.mark.parametrize("events, n", [(5, 500), (1, 40), (10, 1000), (497, 500), (3, 8)])
def test_small_counts_are_not_published(events, n):
    y, p = np.r_[np.ones(events), np.zeros(n - events)], np.full(n, 0.02)
    result = d.batch_calibration(y, p)
    assert result["events"] == "<11"
    assert result["n"] == ("<11" if n < 11 else n)
    for key in ("oe_ratio", "intercept", "slope"):
        assert result[key] == {"estimate": None, "low": None, "high": None}
    assert result["drifted"] is False and result["judged"] is False and result["directions"] == []
    assert result["reason"] == "too few events to judge calibration"


def test_eleven_events_are_published_and_no_events_is_judged_by_oe():
    eleven = d.batch_calibration(np.r_[np.ones(11), np.zeros(189)], np.full(200, 0.055))
    assert eleven["events"] == 11 and eleven["oe_ratio"]["estimate"] == 1.0 and eleven["drifted"] is False
    none = d.batch_calibration(np.zeros(300), np.full(300, 0.05))  # expected 15, observed 0
    assert none["events"] == 0 and none["oe_ratio"]["estimate"] == 0.0
    assert none["oe_ratio"]["high"] == pytest.approx(stats.chi2.ppf(0.975, 2) / 2 / 15, abs=1e-6)
    assert none["intercept"]["estimate"] is None and none["slope"]["estimate"] is None
    assert none["drifted"] is True and "fewer events than predicted" in none["reason"]


def test_batch_calibration_rejects_bad_input():
    with pytest.raises(ValueError, match=r"p must be within \[0, 1\]"):
        d.batch_calibration([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match=r"level must be a probability strictly between 0 and 1; got 95"):
        d.batch_calibration([0, 1], [0.5, 0.5], level=95)


# ---------------------------------------------------------------------------------------------- summary
_FEATURES = [{"feature": "age_years", "kind": "numeric", "psi": 0.31, "band": "major", "direction": "higher"},
             {"feature": "sex", "kind": "categorical", "psi": 0.12, "band": "moderate"},
             {"feature": "diabetes", "kind": "binary", "psi": 0.01, "band": "stable"}]


def test_drift_summary_drifts_by_calibration_and_lists_a_covariate_shift_apart():
    stable = {"drifted": False, "judged": True, "reason": "consistent", "directions": []}
    summary = d.drift_summary(_FEATURES, stable)
    assert summary["drifted"] is False and summary["reasons"] == []  # a covariate shift alone is no drift
    assert summary["covariate_shift"] == [{"feature": "age_years", "psi": 0.31, "band": "major", "direction": "higher"}]
    assert summary["calibration_judged"] is True and summary["calibration_reason"] == "consistent"
    assert (summary["features_major"], summary["features_moderate"]) == (["age_years"], ["sex"])
    assert d.drift_summary(_FEATURES[1:], None) == {
        "drifted": False, "reasons": [], "calibration_judged": False, "calibration_directions": [],
        "calibration_reason": d.NOT_MEASURED, "covariate_shift": [], "features_major": [],
        "features_moderate": ["sex"]}
    assert [r["feature"] for r in d.drift_summary(_FEATURES[1:], stable, psi_threshold=0.1)["covariate_shift"]] == [
        "sex"]
    drifted = d.drift_summary(_FEATURES[2:], {"drifted": True, "reason": "observed/expected ratio excludes 1",
                                              "directions": ["observed/expected ratio: more events than predicted"]})
    assert drifted["drifted"] is True and drifted["covariate_shift"] == []
    assert drifted["reasons"] == ["calibration drifted: observed/expected ratio excludes 1"]
    assert drifted["calibration_directions"] == ["observed/expected ratio: more events than predicted"]
    too_few = d.drift_summary(_FEATURES, {"drifted": False, "reason": d.TOO_FEW_EVENTS})
    assert too_few["calibration_judged"] is False
    assert d.shift_signature(summary["covariate_shift"][0]) == "age_years: higher"


def test_drift_summary_rejects_bad_input():
    with pytest.raises(ValueError, match="psi_threshold must be positive"):
        d.drift_summary(_FEATURES, None, psi_threshold=0)
    with pytest.raises(ValueError, match="each feature must have keys band, feature, psi; got feature, psi"):
        d.drift_summary([{"feature": "x", "psi": 0.3}], None)
    with pytest.raises(ValueError, match="calibration must have keys drifted, reason"):
        d.drift_summary(_FEATURES, {"oe_ratio": 1.0})


def test_a_significant_but_small_miscalibration_is_not_drift():
    # 60,000 rows detect odds 1.05 times too high (CI excludes 1), but 5% more events changes no decision
    result = d.batch_calibration(*_batch(60_000, seed=15, odds_ratio=1.05))
    assert result["oe_ratio"]["low"] > 1 and result["oe_ratio"]["estimate"] < 1 + d.OE_MARGIN
    assert result["drifted"] is False and "not material" in result["reason"]
