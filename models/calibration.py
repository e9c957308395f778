"""Cross-fitted logistic recalibration: a calibrator learned only from predictions on data the model did not see.

Method (recorded in every model card): the learner's out-of-fold predicted risks are mapped by
``expit(a + b * logit(p))``, with ``a`` and ``b`` fitted by maximum likelihood on out-of-fold predictions
(Cox 1958 recalibration; Platt scaling on the logit). Validated predictions use, for each fold, a
calibrator fitted on the other folds only; the published model uses one fitted on all out-of-fold
predictions, wrapped with the learner refitted on all rows.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

METHOD = ("logistic recalibration expit(a + b*logit(p)) fitted on cross-fitted out-of-fold predictions "
          "(the learner never saw the rows its calibrator learned from)")
_EPS = 1e-12


def fit_recalibration(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """Intercept ``a`` and slope ``b`` of the logistic regression of ``y`` on ``logit(p)`` (no penalty)."""
    x = logit(np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)).reshape(-1, 1)
    model = LogisticRegression(C=np.inf, max_iter=200, tol=1e-10).fit(x, np.asarray(y, dtype=int))
    return float(model.intercept_[0]), float(model.coef_[0, 0])


def apply_recalibration(p: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    """``expit(intercept + slope * logit(p))``."""
    return expit(intercept + slope * logit(np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)))


def cross_fitted_recalibration(y: np.ndarray, p: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Recalibrate out-of-fold predictions fold by fold, each with a calibrator fitted on the other folds."""
    out = np.empty_like(np.asarray(p, dtype=float))
    for fold in np.unique(folds):
        test = folds == fold
        a, b = fit_recalibration(y[~test], p[~test])
        out[test] = apply_recalibration(p[test], a, b)
    return out


class RecalibratedClassifier(ClassifierMixin, BaseEstimator):
    """A fitted learner and a fixed logistic recalibration of its predicted risk, optionally with its replicates.

    Built by :func:`models.training` from a learner refitted on all rows and a calibrator fitted on the
    learner's out-of-fold predictions; ``fit`` is deliberately not offered (the calibrator must not be
    refitted on the learner's own training rows).

    ``replicates``: the same recipe refitted on cluster-bootstrap resamples of the training rows (each a
    ``RecalibratedClassifier`` without replicates of its own, :func:`models.prediction_intervals.parameter_replicates`);
    what :func:`models.prediction_intervals.prediction_interval` takes the uncertainty of a prediction from. ``None``
    (the default, and what a model stored before replicates existed loads with): no interval can be given.
    """

    def __init__(self, estimator: object = None, intercept: float = 0.0, slope: float = 1.0,
                 replicates: tuple[RecalibratedClassifier, ...] | None = None) -> None:
        self.estimator = estimator
        self.intercept = intercept
        self.slope = slope
        self.replicates = replicates

    def __setstate__(self, state: dict[str, object]) -> None:
        # a model stored before replicates existed has no such attribute: it loads as one without replicates
        super().__setstate__({"replicates": None, **state})

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def fit(self, X: object, y: object) -> RecalibratedClassifier:  # noqa: N803
        raise NotImplementedError("RecalibratedClassifier is assembled from a fitted learner and an "
                                  "out-of-fold calibrator; refit through models.training instead")

    def predict_proba(self, X: object) -> np.ndarray:  # noqa: N803
        p = apply_recalibration(self.estimator.predict_proba(X)[:, 1], self.intercept, self.slope)
        return np.column_stack([1 - p, p])

    def predict(self, X: object) -> np.ndarray:  # noqa: N803
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
