"""Cross-fitted logistic recalibration: a calibrator learned only from predictions on data the model did not see.

Method (recorded in every model card): the learner's out-of-fold predicted risks are mapped by
``expit(a + b * logit(p))``, with ``a`` and ``b`` fitted by maximum likelihood on out-of-fold predictions
(Cox 1958 recalibration; Platt scaling on the logit). Validated predictions use, for each fold, a
calibrator fitted on the other folds only; the published model uses one fitted on all out-of-fold
predictions, wrapped with the learner refitted on all rows.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression

from models.checks import check_outcome_and_risk
from models.logistic import recalibration_fits
from models.risk_table import risk_table

METHOD = ("logistic recalibration expit(a + b*logit(p)) fitted on cross-fitted out-of-fold predictions "
          "(the learner never saw the rows its calibrator learned from)")
_EPS = 1e-12


def fit_recalibration(y: ArrayLike, p: ArrayLike, *,
                      method: Literal["lbfgs", "newton"] = "lbfgs") -> tuple[float, float]:
    """Intercept ``a`` and slope ``b`` of the logistic recalibration ``logit P(y=1) = a + b logit(p)`` (no penalty).

    Maximum likelihood either way; the two methods agree to about 1e-9 and differ in their last digits only.

    Parameters
    ----------
    y : array of shape (n,)
        Outcome, 0/1 or bool, with both classes.
    p : array of shape (n,)
        Predicted risk in [0, 1].
    method : {"lbfgs", "newton"}, default "lbfgs"
        ``"lbfgs"``: scikit-learn's ``LogisticRegression`` (L-BFGS to a tolerance of 1e-10) on
        ``logit(p)``, ``p`` clipped to ``[1e-12, 1 - 1e-12]``: the fit of the published calibrators
        (:class:`RecalibratedClassifier`, :func:`cross_fitted_recalibration`), kept so that stored models
        and their risks stay the same. ``"newton"``: the Newton-Raphson fit of the validation metrics
        (:func:`models.logistic.recalibration_fits` on the table of distinct risks, ``p`` clipped to
        ``[1e-15, 1 - 1e-15]``), exact to about 1e-15; NaN when the estimate does not exist (separation).
        Its inputs are checked as :func:`models.metrics.auroc` checks them.

    Raises
    ------
    ValueError
        Unknown ``method``; with ``"newton"``, ``y`` or ``p`` as :func:`models.checks.check_outcome_and_risk`
        refuses them (a single class included); with ``"lbfgs"``, a single class (scikit-learn's message).

    References
    ----------
    Cox DR. Two further applications of a model for binary regression. Biometrika 1958;45:562-565.
    """
    if method == "newton":
        y01, risk = check_outcome_and_risk(y, p, both_classes_for="fit_recalibration")
        _, intercept, slope = recalibration_fits(risk_table(y01, risk)[0])
        return float(intercept), float(slope)
    if method != "lbfgs":
        raise ValueError(f"method must be 'lbfgs' or 'newton'; got {method!r}")
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
    ``replicate_scale``: the factor on the replicates' spread (1; ``sqrt(m / n)`` when they were refitted on a sample
    of ``m`` of the model's ``n`` procedures, :func:`models.development.develop`).
    """

    def __init__(self, estimator: object = None, intercept: float = 0.0, slope: float = 1.0,
                 replicates: tuple[RecalibratedClassifier, ...] | None = None, replicate_scale: float = 1.0) -> None:
        self.estimator = estimator
        self.intercept = intercept
        self.slope = slope
        self.replicates = replicates
        self.replicate_scale = replicate_scale

    def __setstate__(self, state: dict[str, object]) -> None:
        # a model stored before replicates (or their scale) existed loads as one without replicates (at scale 1)
        super().__setstate__({"replicates": None, "replicate_scale": 1.0, **state})

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
