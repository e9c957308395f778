"""Prediction intervals from parameter replicates: the point is the calibrated risk and always inside its interval;
the interval is the Wald interval of the replicates' logits (Student t quantile checked against its table value);
replicates resample whole procedures, refit the recalibration on the resampled out-of-fold risks, are reproducible
on any mapper and survive the store's skops round trip; a model stored without replicates says so. On registry
data the 95% intervals cover a correctly specified truth at about 95%, and the registry's observable-only truth at
what is measured below."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import sklearn
import skops.io as sio
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from features import dictionary as d
from models import store
from models.calibration import RecalibratedClassifier, fit_recalibration
from models.learners import spline_logistic
from models.outcomes import OUTCOMES_BY_NAME
from models.prediction_intervals import (
    MIN_REPLICATES,
    NoReplicatesError,
    describe_interval,
    parameter_replicates,
    prediction_interval,
    replicate_count,
)
from models.training import model_frames
from records import schema as s
from synth.generator import generate_registry

T_975_9DF = 2.262157  # Student t, 97.5% quantile, 9 degrees of freedom (any statistical table)
N_FOLDS = 5  # the recalibration is cross-fitted as the published models' is (TrainingConfig.n_folds)


class FixedRisks(ClassifierMixin, BaseEstimator):
    """Predicts the risks it was given, one per row of X, whatever X holds."""

    def __init__(self, risks: np.ndarray | None = None) -> None:
        self.risks = risks

    def predict_proba(self, X):  # noqa: N803
        p = np.asarray(self.risks, dtype=float)
        return np.column_stack([1 - p, p])


class RowRecorder(ClassifierMixin, BaseEstimator):
    """Remembers which rows (the last column: ``row``) it was fitted on; predicts the training event rate."""

    def fit(self, X, y):  # noqa: N803
        self.rows_ = np.asarray(X)[:, -1].astype(int)
        self.rate_ = float(np.mean(y))
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):  # noqa: N803
        return np.column_stack([np.full(len(X), 1 - self.rate_), np.full(len(X), self.rate_)])


class WeightRecorder(RowRecorder):
    """Takes sample weights: remembers the rows and the weights it was fitted with."""

    def fit(self, X, y, sample_weight=None):  # noqa: N803
        self.weights_ = sample_weight
        return super().fit(X, y)


def with_replicates(risk: np.ndarray, replicate_risks: np.ndarray) -> RecalibratedClassifier:
    """A model predicting ``risk`` whose replicates predict the rows of ``replicate_risks``."""
    replicates = tuple(RecalibratedClassifier(FixedRisks(r)) for r in replicate_risks)
    return RecalibratedClassifier(FixedRisks(risk), replicates=replicates)


def small_data(n_procedures: int = 300, *, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Procedures of 1 or 2 rows with one numeric predictor; the outcome logistic in it."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_procedures), rng.integers(1, 3, n_procedures))
    x = rng.normal(size=len(groups))
    y = (rng.random(len(groups)) < expit(-0.5 + x)).astype(int)
    return pd.DataFrame({"x": x, "row": np.arange(len(groups))}), y, groups


# ------------------------------------------------------------------------------------------ the interval
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_the_point_is_the_calibrated_risk_and_always_lies_inside_its_interval(data):
    n = data.draw(st.integers(1, 8))
    replicates = data.draw(st.integers(2, 12))
    unit = st.floats(0.0, 1.0, allow_nan=False)
    risk = np.array(data.draw(st.lists(unit, min_size=n, max_size=n)))
    spread = np.array(data.draw(st.lists(st.lists(unit, min_size=n, max_size=n), min_size=replicates,
                                         max_size=replicates)))
    level = data.draw(st.floats(0.01, 0.999))
    model = with_replicates(risk, spread)
    interval = prediction_interval(model, pd.DataFrame(index=range(n)), level=level)
    np.testing.assert_array_equal(interval["risk"], model.predict_proba(None)[:, 1])
    assert (interval["low"] <= interval["risk"]).all() and (interval["risk"] <= interval["high"]).all()
    assert (interval["low"] >= 0).all() and (interval["high"] <= 1).all()


def test_the_interval_is_a_wald_interval_on_the_logit_scale_centred_at_the_risk():
    risk = np.array([0.02, 0.3, 0.7])
    shifts = np.linspace(-1.0, 1.0, 10)  # the replicates' logits: any centre, this spread
    spread = expit(logit(np.array([0.05, 0.2, 0.9]))[None, :] + shifts[:, None])
    interval = prediction_interval(with_replicates(risk, spread), pd.DataFrame(index=["a", "b", "c"]))
    se = np.std(shifts, ddof=1)
    np.testing.assert_allclose(interval["se_logit"], se, rtol=1e-9)
    np.testing.assert_allclose(interval["low"], expit(logit(risk) - T_975_9DF * se), rtol=1e-6)
    np.testing.assert_allclose(interval["high"], expit(logit(risk) + T_975_9DF * se), rtol=1e-6)
    assert list(interval.index) == ["a", "b", "c"] and list(interval.columns) == ["risk", "low", "high", "se_logit"]
    narrow = prediction_interval(with_replicates(risk, spread), pd.DataFrame(index=["a", "b", "c"]), level=0.5)
    assert (narrow["high"] - narrow["low"] < interval["high"] - interval["low"]).all()


def test_a_model_without_replicates_gives_no_interval_and_says_why():
    model = RecalibratedClassifier(FixedRisks(np.array([0.2])))
    assert model.replicates is None and replicate_count(model) == 0
    with pytest.raises(NoReplicatesError, match="stored without replicates"):
        prediction_interval(model, pd.DataFrame(index=[0]))
    assert isinstance(NoReplicatesError("x"), ValueError)
    with pytest.raises(ValueError, match="level must be a probability strictly between 0 and 1"):
        prediction_interval(with_replicates(np.array([0.2]), np.full((3, 1), 0.2)), pd.DataFrame(index=[0]), level=1)


def test_the_description_says_what_the_interval_covers():
    text = describe_interval(with_replicates(np.array([0.2]), np.full((40, 1), 0.2)))
    assert text.startswith("95% interval of this prediction from the model's parameter uncertainty (40 bootstrap")
    assert "without any bias of the model's form" in text
    assert "not a range for the patient's outcome" in text and "not the calibration curve" in text


# ------------------------------------------------------------------------------------------ the replicates
def test_replicates_resample_whole_procedures_and_are_the_same_on_any_mapper():
    X, y, groups = small_data()
    replicates = parameter_replicates(RowRecorder(), X, y, groups, recalibrate=(0.1, 0.9), n_replicates=12, seed=3)
    assert len(replicates) == 12 and all(r.replicates is None for r in replicates)
    for replicate in replicates:
        times = np.bincount(replicate.estimator.rows_, minlength=len(y))
        per_procedure = pd.Series(times).groupby(groups)
        assert (per_procedure.nunique() == 1).all()  # every row of a procedure as often as the procedure is drawn
        assert per_procedure.first().sum() == groups.max() + 1  # as many procedures drawn as there are
        assert (replicate.intercept, replicate.slope) == (0.1, 0.9)
    drawn = {tuple(r.estimator.rows_) for r in replicates}
    assert len(drawn) == 12

    def backwards(fn, items, shared=()):
        return [fn(item, *shared) for item in items[::-1]][::-1]

    again = parameter_replicates(RowRecorder(), X, y, groups, recalibrate=(0.1, 0.9), n_replicates=12, seed=3,
                                 mapper=backwards)
    assert [tuple(r.estimator.rows_) for r in again] == [tuple(r.estimator.rows_) for r in replicates]
    other = parameter_replicates(RowRecorder(), X, y, groups, recalibrate=(0.1, 0.9), n_replicates=12, seed=4)
    assert [tuple(r.estimator.rows_) for r in other] != [tuple(r.estimator.rows_) for r in replicates]


def test_a_learner_taking_weights_is_fitted_once_per_drawn_row_weighted_by_its_draws_through_a_pipeline():
    X, y, groups = small_data()
    learner = Pipeline([("scale", StandardScaler(with_mean=False, with_std=False)), ("model", WeightRecorder())])
    replicates = parameter_replicates(learner, X, y, groups, recalibrate=(0.0, 1.0), n_replicates=10, seed=3)
    repeated = parameter_replicates(RowRecorder(), X, y, groups, recalibrate=(0.0, 1.0), n_replicates=10, seed=3)
    for weighted, plain in zip(replicates, repeated):
        model = weighted.estimator.named_steps["model"]
        times = np.bincount(plain.estimator.rows_, minlength=len(y))  # the same draws, as repeated rows
        np.testing.assert_array_equal(model.rows_, np.flatnonzero(times))
        np.testing.assert_array_equal(model.weights_, times[times > 0])
        assert not any(hasattr(e, "_metadata_request") for e in (weighted.estimator, model,
                                                                  weighted.estimator.named_steps["scale"]))
    assert not sklearn.get_config()["enable_metadata_routing"]


def test_a_boosting_replicate_stops_early_as_the_final_model_does():
    """On repeated rows the early-stopping split would hold copies of training rows and never stop."""
    X, y, groups = small_data(600, seed=1)
    boosting = HistGradientBoostingClassifier(max_iter=300, early_stopping=True, validation_fraction=0.2,
                                              n_iter_no_change=10, random_state=0)
    final = clone(boosting).fit(X[["x"]], y).n_iter_
    replicates = parameter_replicates(boosting, X[["x"]], y, groups, recalibrate=(0.0, 1.0), n_replicates=10,
                                      seed=0)
    iterations = [r.estimator.n_iter_ for r in replicates]
    assert max(iterations) < 3 * final < 300, (final, iterations)


def test_each_replicate_refits_the_recalibration_on_its_resample_of_the_out_of_fold_risks():
    X, y, groups = small_data()
    out_of_fold = expit(0.8 * logit(np.clip(0.3 + 0.4 * (X["x"].to_numpy() > 0), 0.01, 0.99)))
    replicates = parameter_replicates(RowRecorder(), X, y, groups, recalibrate=out_of_fold, n_replicates=10, seed=1)
    for replicate in replicates:
        rows = replicate.estimator.rows_
        expected = fit_recalibration(y[rows], out_of_fold[rows])
        np.testing.assert_allclose((replicate.intercept, replicate.slope), expected, rtol=1e-9)
    assert len({r.slope for r in replicates}) == 10


@pytest.mark.parametrize(("change", "message"), [
    (dict(y=np.zeros(10)), "both events and non-events"),
    (dict(y=np.full(10, 2)), "y must be 0 or 1"),
    (dict(groups=np.arange(9)), "one entry per row"),
    (dict(groups=np.array([None] + list(range(9)), dtype=object)), "groups must name the procedure of every row"),
    (dict(n_replicates=MIN_REPLICATES - 1), f"at least {MIN_REPLICATES}"),
    (dict(recalibrate=(0.0, float("nan"))), "two finite numbers"),
    (dict(recalibrate=np.full(9, 0.5)), "one risk per row"),
    (dict(recalibrate=np.full(10, 1.5)), r"within \[0, 1\]"),
])
def test_replicates_check_their_inputs(change, message):
    arguments = dict(learner=RowRecorder(), X=pd.DataFrame({"row": range(10)}), y=np.arange(10) % 2,
                     groups=np.arange(10), recalibrate=(0.0, 1.0), n_replicates=MIN_REPLICATES, seed=0) | change
    with pytest.raises(ValueError, match=message):
        parameter_replicates(**arguments)


def test_a_model_with_replicates_survives_the_store_round_trip_and_an_old_one_loads_without_them():
    X, y, groups = small_data()
    X = X[["x"]]
    learner = LogisticRegression()
    replicates = parameter_replicates(learner, X, y, groups, recalibrate=(0.0, 1.0), n_replicates=10, seed=0)
    model = RecalibratedClassifier(clone(learner).fit(X, y), 0.05, 0.95, replicates=replicates)
    trusted = store.trusted_types(["models.calibration.RecalibratedClassifier"])
    data = sio.dumps(model)
    assert set(sio.get_untrusted_types(data=data)) <= set(trusted)
    loaded = sio.loads(data, trusted=trusted)
    pd.testing.assert_frame_equal(prediction_interval(loaded, X), prediction_interval(model, X))

    old = RecalibratedClassifier(clone(learner).fit(X, y), 0.05, 0.95)
    del old.__dict__["replicates"]  # as stored before replicates existed
    loaded_old = sio.loads(sio.dumps(old), trusted=trusted)
    assert loaded_old.replicates is None and replicate_count(loaded_old) == 0
    np.testing.assert_array_equal(loaded_old.predict_proba(X), old.predict_proba(X))



def test_the_store_keeps_replicates_in_their_own_file_read_only_when_asked(tmp_path):
    """Scoring loads the model alone (the replicates are most of a load's cost); the planner asks for them and
    gets the same intervals; the replicates file is covered by the version's integrity manifest."""
    from workspace import model_files

    from tests.models.test_store import make_card

    X, y, groups = small_data()
    X = X[["x"]]
    learner = LogisticRegression()
    replicates = parameter_replicates(learner, X, y, groups, recalibrate=(0.0, 1.0), n_replicates=10, seed=0)
    model = RecalibratedClassifier(clone(learner).fit(X, y), 0.05, 0.95, replicates=replicates)
    card = replace(make_card("leakage_any"), features=("x",))
    stored = store.save_model(tmp_path, outcome="leakage_any", estimator=model, card=card,
                              features=[{"name": "x", "kind": "number"}],
                              extra_trusted=["models.calibration.RecalibratedClassifier"])
    assert model.replicates is replicates  # the caller's model is not changed by the save
    files = {p.name for p in stored.path.iterdir()}
    assert model_files.REPLICATES_FILE in files
    manifest = json.loads((stored.path / model_files.INTEGRITY_FILE).read_text())
    assert model_files.REPLICATES_FILE in manifest["files"]
    in_model_file = sio.loads((stored.path / model_files.MODEL_FILE).read_bytes(),
                              trusted=store.trusted_types(["models.calibration.RecalibratedClassifier"]))
    assert in_model_file.replicates is None

    trusted = ["models.calibration.RecalibratedClassifier"]
    alone = store.load_model(tmp_path, outcome="leakage_any", version=stored.version, extra_trusted=trusted)
    assert alone.estimator.replicates is None
    np.testing.assert_array_equal(alone.estimator.predict_proba(X), model.predict_proba(X))
    whole = store.load_model(tmp_path, outcome="leakage_any", version=stored.version, extra_trusted=trusted,
                             replicates=True)
    assert replicate_count(whole.estimator) == 10
    pd.testing.assert_frame_equal(prediction_interval(whole.estimator, X), prediction_interval(model, X))

    (stored.path / model_files.REPLICATES_FILE).write_bytes(b"edited")
    store.load_model(tmp_path, outcome="leakage_any", version=stored.version, extra_trusted=trusted)  # no replicates
    with pytest.raises(store.ModelIntegrityError, match="replicates file"):
        store.load_model(tmp_path, outcome="leakage_any", version=stored.version, extra_trusted=trusted,
                         replicates=True)


# ------------------------------------------------------------------------------------------ coverage
@pytest.fixture(scope="module")
def registry_rows() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, pd.DataFrame]:
    """The leakage_any rows of a generated registry of 3,000 procedures: features, labels, procedures, truth."""
    registry = generate_registry(3_000, seed=3)
    frame = model_frames(registry.procedures, registry.levels)["level"]
    eligible, y = OUTCOMES_BY_NAME["leakage_any"].labels(frame)
    rows = frame.loc[eligible].reset_index(drop=True)
    truth = rows[[s.PROCEDURE_ID, s.VERTEBRA]].merge(registry.truth_levels, on=[s.PROCEDURE_ID, s.VERTEBRA],
                                                     how="left", validate="one_to_one")
    return rows[OUTCOMES_BY_NAME["leakage_any"].feature_names], y, rows[s.PROCEDURE_ID].to_numpy(), truth


def published_recipe(X: pd.DataFrame, y: np.ndarray, groups: np.ndarray, *, n_replicates: int,  # noqa: N803
                     seed: int) -> RecalibratedClassifier:
    """The spline logistic as the published models are made: fitted on all rows, recalibrated on its cross-fitted
    out-of-fold risks (folds by procedure), with its parameter replicates."""
    learner = spline_logistic(OUTCOMES_BY_NAME["leakage_any"].features, seed)
    codes, _ = pd.factorize(pd.Series(groups))
    folds = np.random.default_rng(seed).permutation(codes.max() + 1)[codes] % N_FOLDS
    out_of_fold = np.empty(len(y))
    for fold in range(N_FOLDS):
        fitted = clone(learner).fit(X[folds != fold], y[folds != fold])
        out_of_fold[folds == fold] = fitted.predict_proba(X[folds == fold])[:, 1]
    replicates = parameter_replicates(learner, X, y, groups, recalibrate=out_of_fold, n_replicates=n_replicates,
                                      seed=seed)
    return RecalibratedClassifier(clone(learner).fit(X, y), *fit_recalibration(y, out_of_fold), replicates=replicates)


def coverage(model: RecalibratedClassifier, X: pd.DataFrame, truth: np.ndarray) -> float:  # noqa: N803
    interval = prediction_interval(model, X)
    return float(((interval["low"] <= truth) & (truth <= interval["high"])).mean())


def specified_truth(X: pd.DataFrame) -> np.ndarray:  # noqa: N803
    """A risk the spline logistic can represent (logistic, additive in a few of the registry's features)."""
    column = X[s.CEMENT_VISCOSITY].astype(object)
    truth = expit(-1.6 + 1.5 * X[s.CORTICAL_DISRUPTION].astype(float) + 1.1 * (column == "low")
                  - 0.9 * (column == "high") + 0.3 * (X[s.CEMENT_VOLUME_ML].astype(float) - 3.0)
                  + 0.8 * (X[d.IMAGING].astype(object) == "ct") + 0.4 * X[s.INTRAVERTEBRAL_CLEFT].astype(float))
    return truth.to_numpy(dtype=float)


def test_95_intervals_cover_a_correctly_specified_truth_at_about_95_percent(registry_rows):
    """Registry features, outcomes drawn from a truth the spline logistic can represent (logistic, additive).

    Measured with these seeds: coverage 0.978, 0.958, 0.972, 0.950 (mean 0.964) over the 4 outcome draws; with
    other seeds and 6 draws 0.959; reusing the final recalibration in every replicate instead of refitting it gave
    0.944, recalibrating on each replicate's out-of-bag procedures 0.940, no recalibration at all 0.959. Tolerance
    0.92 to 0.985: a 4-draw mean has a Monte Carlo SD of about 0.01, 20 replicates estimate the standard error to
    about 16% (the t quantile allows for it), and the penalty and the recalibration's shrinkage bias the point a
    little (what the out-of-bag and reused recalibrations lose).
    """
    X, _, groups, _ = registry_rows
    truth = specified_truth(X)
    covered = []
    for draw in range(4):
        y = (np.random.default_rng(100 + draw).random(len(truth)) < truth).astype(int)
        covered.append(coverage(published_recipe(X, y, groups, n_replicates=20, seed=draw), X, truth))
    assert 0.92 <= np.mean(covered) <= 0.985, covered


def test_95_intervals_cover_the_registrys_observable_only_risk_less_its_models_bias(registry_rows):
    """The registry's own outcomes; the truth is the generator's risk given only what the records hold.

    The spline logistic is not the generator's model (CT sees every leak, X-ray a share that depends on where the
    leak goes; the risk is averaged over sites, operators and unrecorded values), and the interval holds parameter
    uncertainty, not that bias. Measured (3,000 procedures, 20 replicates): coverage 0.801 here (0.771 with other
    fold and replicate seeds; CT-assessed levels 0.64, X-ray 0.84), mean standard error 0.27 on the logit scale
    against a root-mean-square error of 0.44; 0.83 to 0.90 at 1,500 procedures, 0.75 at 6,000 (the bias does not
    shrink with more data); the interaction spline logistic 0.80; leakage_canal 0.64 (a mean logit error of +0.4).
    Bound: 0.72, well above what a standard error off by half would give (about 0.5). Should the generator lack
    ``p_leakage_any_observable``, ``p_leakage_any`` (site and operator effects and unrecorded values included,
    coverage 0.56) records an expected failure.
    """
    X, y, groups, truth = registry_rows
    column = "p_leakage_any_observable" if "p_leakage_any_observable" in truth else "p_leakage_any"
    model = published_recipe(X, y, groups, n_replicates=20, seed=1)
    covered = coverage(model, X, truth[column].to_numpy(dtype=float))
    if column == "p_leakage_any" and covered < 0.72:
        pytest.xfail(f"coverage {covered:.3f} of p_leakage_any, which holds what the records do not: the generator "
                     "has no p_leakage_any_observable")
    assert covered >= 0.72, f"coverage of {column}: {covered:.3f}"


def test_replicates_refitted_on_a_sample_and_scaled_cover_as_refits_on_every_row_do(registry_rows):
    """A large registry's replicates are refits on a sample of m of its n procedures, their spread scaled by
    sqrt(m / n) (the m-out-of-n bootstrap; :func:`models.development.develop` with ``refit_on``). On the correctly
    specified truth of the test above, half of the procedures: the scaled standard errors match those of refits on
    every row (median ratio measured 0.91 here, 1.04 with the next outcome draw; bound 0.8 to 1.25: 30 replicates
    each estimate a standard error to about 13%) and the intervals cover at about 95% (0.965 here, 0.961; refits on
    every row 0.979, 0.960; the unscaled spread covers at 0.999). Measured beyond the test: 20,000 procedures, a
    quarter sampled, ratios 1.04 and 0.98, coverage 0.968 and 0.961; 6,000, half, 0.97 and 1.00, 0.944 and 0.968.
    Below about 1,000 sampled procedures the scaled spread falls short (750: ratios 0.78 to 0.90, coverage 0.90 to
    0.95), the estimator not yet in its root-n regime: a development sample is never below
    :data:`models.training.MIN_DEVELOPMENT_ROWS` rows."""
    from models.development import development_sample

    X, _, groups, _ = registry_rows
    truth = specified_truth(X)
    y = (np.random.default_rng(100).random(len(truth)) < truth).astype(int)
    full = published_recipe(X, y, groups, n_replicates=30, seed=0)
    sample = development_sample(groups, max_rows=len(y) // 2, seed=0)
    part = published_recipe(X[sample].reset_index(drop=True), y[sample], groups[sample], n_replicates=30, seed=0)
    scale = np.sqrt(pd.unique(groups[sample]).size / pd.unique(groups).size)
    assert 0.65 <= scale <= 0.76
    sampled = RecalibratedClassifier(full.estimator, full.intercept, full.slope, replicates=part.replicates,
                                     replicate_scale=scale)
    ratio = prediction_interval(sampled, X)["se_logit"] / prediction_interval(full, X)["se_logit"]
    assert 0.8 <= float(np.median(ratio)) <= 1.25, float(np.median(ratio))
    assert 0.92 <= coverage(sampled, X, truth) <= 0.985, coverage(sampled, X, truth)
    assert "on a sample of the registry" in describe_interval(sampled) and "sample" not in describe_interval(full)
