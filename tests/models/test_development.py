"""Nested selection: the candidate of each outer fold is chosen without that fold, and its risks are the fold's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from features.dictionary import FeatureSpec
from models.calibration import cross_fitted_recalibration
from models.development import develop, development_sample, out_of_fold
from models.learners import Candidate
from models.metrics import log_loss

FEATURES = (FeatureSpec("x1", "numeric", "", ("x1",), "x1"), FeatureSpec("x2", "numeric", "", ("x2",), "x2"))
SEEN: list[frozenset[int]] = []


class Recording(ClassifierMixin, BaseEstimator):
    """A logistic regression on the columns ``use`` that records which row ids it was fitted on."""

    def __init__(self, use: tuple[str, ...] = ("x1",)) -> None:
        self.use = use

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> Recording:  # noqa: N803
        SEEN.append(frozenset(X["row"].tolist()))
        self.model_ = LogisticRegression().fit(X[list(self.use)], y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        return self.model_.predict_proba(X[list(self.use)])


def candidates() -> tuple[Candidate, ...]:
    one = Candidate("x1_only", "logistic on x1", lambda features, seed: Recording(("x1",)))
    both = Candidate("both", "logistic on x1 and x2", lambda features, seed: Recording(("x1", "x2")))
    mean = Candidate("mean", "average", lambda features, seed: None, members=("x1_only", "both"), regression=False)
    return one, both, mean


def data(n: int = 1_200, *, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = (rng.random(n) < 1 / (1 + np.exp(-(-0.5 + x[:, 0] + 0.8 * x[:, 1])))).astype(np.int8)
    groups = np.arange(n) // 2  # two rows per procedure
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "row": np.arange(n)}), y, groups


def test_no_fit_behind_a_fold_s_validated_risks_saw_that_fold():
    X, y, groups = data()
    SEEN.clear()
    dev = develop(candidates()[:2], FEATURES, X, y, groups, n_folds=4, repeats=1, seed=1)
    folds = dev.folds
    # per learner: 4 outer fits, 6 inner (pair) fits, and the final refit on every row
    assert len(SEEN) == 2 * (4 + 6) + 1
    for seen in SEEN[:-1]:
        held = set(np.unique(folds[~np.isin(np.arange(len(y)), list(seen))]))
        assert 1 <= len(held) <= 2  # every CV fit left out one or two whole folds
        left_out = np.isin(folds, list(held))
        assert not (set(np.flatnonzero(left_out)) & seen)
    assert SEEN[-1] == frozenset(range(len(y)))
    # groups never straddle folds
    assert (pd.Series(folds).groupby(groups).nunique() == 1).all()


def test_nested_risks_are_the_chosen_candidate_s_fold_by_fold_and_the_better_model_wins():
    X, y, groups = data()
    dev = develop(candidates(), FEATURES, X, y, groups, n_folds=5, repeats=1, seed=2)
    by_name = {c.name: c for c in dev.candidates}
    assert len(dev.nested.chosen_by_fold) == 5
    assert set(dev.nested.chosen_by_fold) <= {"both", "mean"}  # x2 matters: the x1-only model never wins
    for k, name in enumerate(dev.nested.chosen_by_fold):
        fold = dev.folds == k
        assert np.array_equal(dev.validated[fold], by_name[name].validated[fold])
    assert dev.nested.log_loss_nested == pytest.approx(log_loss(y, dev.validated))
    assert dev.selected == min(dev.candidates, key=lambda c: c.cv_log_loss).name


def test_an_ensemble_is_the_mean_of_its_members_out_of_fold_risks():
    X, y, groups = data(600)
    one, both, mean = candidates()
    dev = develop((one, both, mean), FEATURES, X, y, groups, n_folds=3, repeats=1, seed=4)
    raw = [out_of_fold(c, FEATURES, X, y, dev.folds, seed=4) for c in (one, both)]
    expected = cross_fitted_recalibration(y, (raw[0] + raw[1]) / 2, dev.folds)
    assert np.allclose(dev.candidates[2].validated, expected, atol=1e-12)


def test_ensemble_members_must_be_candidates_and_folds_at_least_three():
    X, y, groups = data(300)
    one, both, mean = candidates()
    with pytest.raises(ValueError, match="each must be a candidate"):
        develop((one, mean), FEATURES, X, y, groups, n_folds=3, repeats=1, seed=0)
    with pytest.raises(ValueError, match="at least 3"):
        develop((one, both), FEATURES, X, y, groups, n_folds=2, repeats=1, seed=0)


def test_the_cross_fitted_calibration_is_the_one_selection_sees():
    X, y, groups = data(900)
    dev = develop(candidates()[:2], FEATURES, X, y, groups, n_folds=3, repeats=1, seed=5)
    assert np.allclose(cross_fitted_recalibration(y, dev.raw_out_of_fold, dev.folds),
                       {c.name: c for c in dev.candidates}[dev.selected].validated)


def test_the_development_sample_takes_whole_procedures_up_to_the_rows_allowed():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"P{i:05d}" for i in range(3_000)], rng.integers(1, 5, 3_000))  # 1 to 4 levels each
    assert development_sample(groups, max_rows=None, seed=1).all()
    assert development_sample(groups, max_rows=len(groups), seed=1).all()
    sample = development_sample(groups, max_rows=2_000, seed=1)
    assert 2_000 - 4 < sample.sum() <= 2_000  # as many procedures as fit
    taken = pd.Series(sample).groupby(groups).agg(["min", "max"])
    assert (taken["min"] == taken["max"]).all()  # every level of a procedure, or none
    assert (development_sample(groups, max_rows=2_000, seed=1) == sample).all()
    assert not (development_sample(groups, max_rows=2_000, seed=2) == sample).all()
    shuffled = rng.permutation(len(groups))  # which procedures does not depend on the rows' order
    assert set(groups[shuffled][development_sample(groups[shuffled], max_rows=2_000, seed=1)]) == set(groups[sample])
