"""Model development: grouped cross-validation of every candidate, selection by validated log loss,
cross-fitted calibration, and the final refit on all eligible rows.

Rows are levels or procedures; folds are assigned per procedure, so the levels of one procedure never
sit on both sides of a split. The validated predictions (out-of-fold, recalibrated by calibrators that
never saw their fold) are what every validation metric is computed on: a cross-validated,
optimism-corrected estimate (Steyerberg, Clinical Prediction Models, 2nd ed., ch. 17).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone

from features.dictionary import FeatureSpec
from models.calibration import RecalibratedClassifier, cross_fitted_recalibration, fit_recalibration
from models.fanout import Mapper, sequential
from models.learners import Candidate
from models.metrics import log_loss


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's cross-validation: validated predictions (repeat 1) and log loss per repeat."""

    name: str
    description: str
    validated: np.ndarray
    log_loss_by_repeat: tuple[float, ...]

    @property
    def cv_log_loss(self) -> float:
        return float(np.mean(self.log_loss_by_repeat))


@dataclass(frozen=True)
class Development:
    """The selected candidate, refitted and recalibrated, and what the selection saw."""

    selected: str
    model: RecalibratedClassifier
    validated: np.ndarray          # validated predictions of the selected candidate (repeat 1)
    folds: np.ndarray              # fold of each row (repeat 1)
    candidates: tuple[CandidateResult, ...]
    calibration_intercept: float
    calibration_slope: float


def assign_folds(groups: np.ndarray, *, n_folds: int, seed: int) -> np.ndarray:
    """A fold per row, the same for all rows of a group; groups shuffled by ``seed``, balanced in count."""
    codes, uniques = pd.factorize(pd.Series(groups), sort=True)
    rng = np.random.default_rng(seed)
    group_fold = rng.permutation(len(uniques)) % n_folds
    return group_fold[codes]


def out_of_fold(candidate: Candidate, features: Sequence[FeatureSpec], X: pd.DataFrame, y: np.ndarray,  # noqa: N803
                folds: np.ndarray, *, seed: int, mapper: Mapper = sequential) -> np.ndarray:
    """Each row's predicted risk from the candidate fitted on the other folds."""
    p = np.empty(len(y), dtype=float)
    fold_ids = [int(f) for f in np.unique(folds)]
    fitted = mapper(_fold_fit, [(0, 0, f) for f in fold_ids], shared=((candidate,), features, X, y, (folds,), seed))
    for fold, p_fold in zip(fold_ids, fitted):
        p[folds == fold] = p_fold
    return p


def _fold_fit(job: tuple[int, int, int], candidates: Sequence[Candidate], features: Sequence[FeatureSpec],
              X: pd.DataFrame, y: np.ndarray, fold_sets: Sequence[np.ndarray], seed: int) -> np.ndarray:  # noqa: N803
    """One cross-validation fit: candidate ``c`` on repeat ``r`` without fold ``f``; its risks on fold ``f``."""
    c, r, f = job
    test = fold_sets[r] == f
    model = clone(candidates[c].build(features, seed)).fit(X.loc[~test], y[~test])
    return model.predict_proba(X.loc[test])[:, 1]


def develop(candidates: Sequence[Candidate], features: Sequence[FeatureSpec], X: pd.DataFrame,  # noqa: N803
            y: np.ndarray, groups: np.ndarray, *, n_folds: int, repeats: int, seed: int,
            mapper: Mapper = sequential) -> Development:
    """Cross-validate every candidate, select by validated log loss, refit the winner on all rows.

    Every fit of every candidate, repeat and fold is one piece of work for ``mapper`` (:mod:`models.fanout`).

    Raises
    ------
    ValueError
        Fewer than ``n_folds`` groups, or a class absent.
    """
    if len(np.unique(y)) < 2:
        raise ValueError("the outcome has a single class among eligible rows; no model can be fitted")
    fold_sets = [assign_folds(groups, n_folds=n_folds, seed=seed + r) for r in range(repeats)]
    candidates = tuple(candidates)
    jobs = [(c, r, int(f)) for c in range(len(candidates)) for r in range(repeats) for f in np.unique(fold_sets[r])]
    fitted = dict(zip(jobs, mapper(_fold_fit, jobs, shared=(candidates, features, X, y, fold_sets, seed))))
    results = []
    for c, candidate in enumerate(candidates):
        validated_by_repeat = []
        for r, folds in enumerate(fold_sets):
            raw = np.empty(len(y), dtype=float)
            for f in np.unique(folds):
                raw[folds == f] = fitted[(c, r, int(f))]
            validated_by_repeat.append((raw, cross_fitted_recalibration(y, raw, folds)))
        results.append((candidate, validated_by_repeat))
    summaries = tuple(CandidateResult(
        name=c.name, description=c.description, validated=runs[0][1],
        log_loss_by_repeat=tuple(round(log_loss(y, v), 8) for _, v in runs)) for c, runs in results)
    best = min(range(len(summaries)), key=lambda i: (summaries[i].cv_log_loss, i))
    chosen, runs = results[best]
    raw_first = runs[0][0]
    intercept, slope = fit_recalibration(y, raw_first)
    final = chosen.build(features, seed).fit(X, y)
    model = RecalibratedClassifier(estimator=final, intercept=intercept, slope=slope)
    return Development(selected=chosen.name, model=model, validated=summaries[best].validated,
                       folds=fold_sets[0], candidates=summaries, calibration_intercept=intercept,
                       calibration_slope=slope)
