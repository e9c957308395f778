"""Strongest predictors on data with known truth, against a manual permutation, and on the project pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from sklearn.metrics import log_loss

from features.dictionary import FeatureSpec
from features.matrices import build_level_frame
from models.calibration import RecalibratedClassifier
from models.explain import strongest_predictors
from models.learners import gradient_boosting, spline_logistic
from models.outcomes import OUTCOMES_BY_NAME
from records import schema as s

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
CATEGORIES = ("alpha", "beta", "gamma")
FEATURES = (
    FeatureSpec("x1", "numeric", "", ("x1",), "strong risk factor"),
    FeatureSpec("x2", "numeric", "", ("x2",), "protective, 10% missing"),
    FeatureSpec("x3", "numeric", "", ("x3",), "noise"),
    FeatureSpec("b", "binary", "", ("b",), "risk factor"),
    FeatureSpec("c", "categorical", "", ("c",), "gamma is the high-risk category", categories=CATEGORIES),
)
COMMON_KEYS = {"feature", "kind", "importance", "importance_sd", "direction", "risk_if_missing"}


def _known_truth(n: int, *, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """y from logit = -1 + 1.5 x1 - 0.8 x2 + 0 x3 + 0.7 b + 1.0 [c = gamma]; x2 then 10% missing at random."""
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=(3, n))
    b = (rng.random(n) < 0.4).astype(float)
    c = rng.choice(np.array(CATEGORIES, dtype=object), n)
    y = (rng.random(n) < expit(-1 + 1.5 * x1 - 0.8 * x2 + 0.7 * b + 1.0 * (c == "gamma"))).astype(int)
    x2[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "b": b, "c": c}), y


@pytest.fixture(scope="module")
def known():
    X, y = _known_truth(4_000, seed=1)  # noqa: N806
    return X, y, spline_logistic(FEATURES, 0).fit(X, y)


def test_ranking_and_directions_recover_the_truth(known):
    X, y, model = known  # noqa: N806
    before = X.copy()
    ranked = strongest_predictors(model, X, y, features=FEATURES, seed=3)
    pd.testing.assert_frame_equal(X, before)  # the caller's frame is not modified
    by_name = {row["feature"]: row for row in ranked}
    assert [row["feature"] for row in ranked][0] == "x1" and ranked[-1]["feature"] == "x3"
    assert abs(by_name["x3"]["importance"]) < 0.003 < by_name["b"]["importance"]
    assert by_name["x1"]["direction"].startswith("higher x1 -> higher risk")
    assert by_name["x1"]["risk_at_high"] > by_name["x1"]["risk_at_low"]
    assert by_name["x2"]["direction"].startswith("higher x2 -> lower risk")
    assert by_name["x2"]["risk_at_high"] < by_name["x2"]["risk_at_low"]
    assert by_name["b"]["risk_if_true"] > by_name["b"]["risk_if_false"]
    assert by_name["b"]["direction"].startswith("b -> higher risk")
    assert by_name["c"]["highest_category"] == "gamma"
    assert by_name["c"]["direction"].startswith("c: highest with gamma")
    assert set(by_name["c"]["risk_by_category"]) == set(CATEGORIES)
    # only x2 has missing values: its risk when missing is given (near the average, as x2 is missing at random)
    assert by_name["x2"]["risk_if_missing"] is not None and "when missing" in by_name["x2"]["direction"]
    assert by_name["x2"]["risk_at_high"] < by_name["x2"]["risk_if_missing"] < by_name["x2"]["risk_at_low"]
    assert all(row["risk_if_missing"] is None for row in ranked if row["feature"] != "x2")
    importances = [row["importance"] for row in ranked]
    assert importances == sorted(importances, reverse=True)
    assert all(COMMON_KEYS <= set(row) for row in ranked)
    json.dumps(ranked, allow_nan=False)


def test_importance_equals_a_manual_permutation_of_the_column(known):
    X, y, model = known  # noqa: N806
    seed, repeats = 11, 3
    ranked = strongest_predictors(model, X, y, features=FEATURES, seed=seed, n_repeats=repeats,
                                  max_rows=len(X))  # all rows, in order
    # scikit-learn's protocol: one RandomState draws a column seed; each repeat reshuffles the permuted column
    column_rng = np.random.RandomState(np.random.RandomState(seed).randint(np.iinfo(np.int32).max + 1))
    baseline = log_loss(y, model.predict_proba(X)[:, 1])
    permuted, order, increases = X.copy(), np.arange(len(X)), []
    for _ in range(repeats):
        column_rng.shuffle(order)
        permuted["x1"] = permuted["x1"].to_numpy()[order]
        increases.append(log_loss(y, model.predict_proba(permuted)[:, 1]) - baseline)
    x1 = next(row for row in ranked if row["feature"] == "x1")
    assert x1["importance"] == pytest.approx(np.mean(increases), abs=1e-6)
    assert x1["importance_sd"] == pytest.approx(np.std(increases), abs=1e-6)


def test_same_seed_same_list_and_top_limits_the_list(known):
    X, y, _ = known  # noqa: N806
    boosting = gradient_boosting(FEATURES, 0).fit(X, y)
    first = strongest_predictors(boosting, X, y, features=FEATURES, seed=5, max_rows=1_500, n_repeats=3, top=3)
    again = strongest_predictors(boosting, X, y, features=FEATURES, seed=5, max_rows=1_500, n_repeats=3, top=3)
    other_seed = strongest_predictors(boosting, X, y, features=FEATURES, seed=6, max_rows=1_500, n_repeats=3, top=3)
    assert first == again
    assert first != other_seed
    assert len(first) == 3 and first[0]["feature"] == "x1"
    assert first[0]["direction"].startswith("higher x1 -> higher risk")


@pytest.mark.parametrize(("change", "message"), [
    ({"features": (*FEATURES, FeatureSpec("ghost", "numeric", "", ("ghost",), "absent"))}, "not in X: ghost"),
    ({"y_rows": 3_999}, "one label per row of X; got shape \\(3999,\\) for 4000 rows"),
    ({"y_value": 2}, "0/1 labels"),
    ({"features": (FeatureSpec("x1", "ordinal", "", ("x1",), "unknown kind"),)}, "kind must be one of"),
    ({"max_rows": 1}, "max_rows must be an integer >= 2"),
])
def test_bad_inputs_fail_with_the_rule(known, change, message):
    X, y, model = known  # noqa: N806
    labels = y[: change.get("y_rows", len(y))].copy()
    if "y_value" in change:
        labels[0] = change["y_value"]
    with pytest.raises(ValueError, match=message):
        strongest_predictors(model, X, labels, features=change.get("features", FEATURES), seed=0,
                             max_rows=change.get("max_rows", 5000))


def test_a_frame_and_a_classifier_are_required(known):
    X, y, model = known  # noqa: N806
    with pytest.raises(TypeError, match="X must be a pandas DataFrame"):
        strongest_predictors(model, X.to_numpy(), y, features=FEATURES, seed=0)
    with pytest.raises(TypeError, match="model must be a fitted classifier with predict_proba"):
        strongest_predictors(model[-1].coef_, X, y, features=FEATURES, seed=0)


def test_project_spline_logistic_recalibrated_on_the_sample():
    spec = OUTCOMES_BY_NAME["leakage_any"]
    levels = pd.read_parquet(SAMPLE / "levels.parquet").iloc[:3_000]
    procedures = pd.read_parquet(SAMPLE / "procedures.parquet")
    procedures = procedures[procedures[s.PROCEDURE_ID].isin(levels[s.PROCEDURE_ID])]
    frame = build_level_frame(procedures, levels)
    eligible, y = spec.labels(frame)
    X = frame.loc[eligible, spec.feature_names].reset_index(drop=True)  # noqa: N806
    model = RecalibratedClassifier(spline_logistic(spec.features, 0).fit(X, y), intercept=-0.05, slope=0.9)

    everything = strongest_predictors(model, X, y, features=spec.features, seed=2, n_repeats=3,
                                      top=len(spec.features))
    top = strongest_predictors(model, X, y, features=spec.features, seed=2, n_repeats=3, top=5)

    assert len(top) == 5 and top == everything[:5]
    assert all(np.isfinite(row["importance"]) and np.isfinite(row["importance_sd"]) for row in everything)
    cement = next(row for row in everything if row["feature"] == s.CEMENT_VOLUME_ML)
    assert cement["direction"].startswith(f"higher {s.CEMENT_VOLUME_ML} -> ")
    assert 0 < cement["risk_at_low"] < 1 and 0 < cement["risk_at_high"] < 1
    assert cement["value_low"] < cement["value_high"]
    json.dumps(everything, allow_nan=False)
