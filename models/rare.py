"""Rare outcomes: the crude rate with its exact interval, and FLIC regression (Firth with intercept correction).

Riley et al.'s minimum sample size, which decides whether a model of a rare outcome can be developed at all, is
:mod:`models.sample_size`; its public names are re-exported here.

References
----------
- Firth D. Bias reduction of maximum likelihood estimates. Biometrika 1993;80:27-38.
- Puhr R, Heinze G, Nold M, Lusa L, Geroldinger A. Firth's logistic regression with rare events:
  accurate effect estimates and predictions? Stat Med 2017;36:2302-2317 (FLIC).
- Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the case of the
  binomial. Biometrika 1934;26:404-413.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg, optimize
from scipy.special import expit, logit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from models.binomial import exact_binomial_interval
from models.checks import check_level
from models.sample_size import (
    CONSERVATIVE_FRACTION_OF_MAX_R2,
    CRITERIA,
    Z_95,
    SampleSizeAssessment,
    assess_sample_size,
    max_r2_cs,
    r2_cs_from_c_statistic,
)

__all__ = [
    "CONSERVATIVE_FRACTION_OF_MAX_R2", "CRITERIA", "Z_95", "CrudeRate", "FlicLogisticRegression",
    "SampleSizeAssessment", "assess_sample_size", "crude_rate", "max_r2_cs", "r2_cs_from_c_statistic",
]


# ------------------------------------------------------------------------------------------- crude rate
@dataclass(frozen=True)
class CrudeRate:
    """An observed proportion ``events / n`` with its exact (Clopper-Pearson) interval."""

    events: int
    n: int
    rate: float
    low: float
    high: float
    method: str


def crude_rate(events: int, n: int, *, level: float = 0.95) -> CrudeRate:
    """The crude rate ``events / n`` with its Clopper-Pearson exact interval.

    The interval is :func:`models.binomial.exact_binomial_interval`: ``low`` the ``(1 - level) / 2`` quantile of
    Beta(events, n - events + 1) (0 with no events), ``high`` the ``(1 + level) / 2`` quantile of
    Beta(events + 1, n - events) (1 when every procedure had the event); with no events
    ``high = 1 - ((1 - level) / 2) ** (1 / n)``. Reported when no model can be fitted.

    Parameters
    ----------
    events : int
        Procedures with the outcome, ``0 <= events <= n``.
    n : int
        Procedures followed for it, at least 1.
    level : float, default 0.95
        Confidence level, strictly between 0 and 1.

    Raises
    ------
    ValueError
        A count or ``level`` out of range.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1; got {n}")
    if not 0 <= events <= n:
        raise ValueError(f"events must be between 0 and n ({n}); got {events}")
    check_level(level)
    low, high = (float(limit) for limit in exact_binomial_interval(events, n, level=level))
    return CrudeRate(events=int(events), n=int(n), rate=events / n, low=low, high=high,
                     method=f"Clopper-Pearson exact {level * 100:g}%")


# ------------------------------------------------------------------------------------------------- FLIC
class FlicLogisticRegression(ClassifierMixin, BaseEstimator):
    """Firth's logistic regression with intercept correction (FLIC; Puhr et al. 2017, Stat Med 36:2302).

    The coefficients are Firth-penalised (maximising ``l(b) + 0.5 log|I(b)|``; Firth 1993), fitted with
    ``firthmodels.FirthLogisticRegression``; they stay finite under separation and have small bias with
    few events. Firth's penalty pulls predicted risks towards 0.5, so the intercept is then re-estimated by
    maximum likelihood with the linear predictor as an offset: the mean predicted risk on the training
    rows equals the observed event rate. No class weights, no resampling.

    A predictor constant in the training rows carries no information; it gets a coefficient of 0 (its
    level is absorbed by the intercept) instead of making the Firth fit singular, as a rare category
    absent from a cross-validation fold would.

    Parameters
    ----------
    max_iter : int, default 100
        Newton-Raphson iterations of the Firth fit.
    tol : float, default 1e-8
        Convergence tolerance of the Firth fit, given to firthmodels as both ``gtol`` (largest modified
        score) and ``xtol`` (largest Newton step). So tight a tolerance is at the limit of float64:
        firthmodels then often stops one step short (its step-halving finds no increase of the penalised
        log-likelihood) or runs out of iterations while creeping, and flags the fit as not converged. Such
        a fit is accepted when the largest absolute modified score, recomputed here, is at most
        ``sqrt(tol)`` (1e-4, firthmodels' own default); otherwise a ``ConvergenceWarning`` is issued.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        Class labels; the second is the event.
    coef_ : ndarray of shape (n_features,)
        Firth-penalised coefficients (log odds ratios per unit of each feature).
    intercept_ : float
        FLIC intercept.
    firth_intercept_ : float
        Intercept of the plain Firth fit (for comparison; not used to predict).
    n_iter_ : int
        Newton-Raphson iterations the Firth fit took.
    converged_ : bool
        Whether the Firth fit converged (in the sense of ``tol`` above).
    n_features_in_ : int
        Features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` had string column names.
    """

    def __init__(self, *, max_iter: int = 100, tol: float = 1e-8) -> None:
        self.max_iter = max_iter
        self.tol = tol

    def __sklearn_tags__(self):  # noqa: ANN204 - sklearn.utils.Tags
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def fit(self, X: ArrayLike, y: ArrayLike) -> FlicLogisticRegression:  # noqa: N803
        """Fit the Firth coefficients, then the intercept by maximum likelihood with them as an offset.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Predictors, finite.
        y : array-like of shape (n_samples,)
            Binary outcome with both classes present.

        Raises
        ------
        ValueError
            ``y`` has other than two classes, ``X`` is not finite, or the varying predictors are linearly
            dependent.
        """
        if not isinstance(self.max_iter, int | np.integer) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer; got {self.max_iter!r}")
        if not self.tol > 0:
            raise ValueError(f"tol must be positive; got {self.tol!r}")
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_min_samples=2)  # noqa: N806
        check_classification_targets(y)
        classes = np.unique(y)
        if classes.size != 2:
            raise ValueError(f"Only binary classification is supported: y must hold exactly two classes; "
                             f"it has {classes.size}: {classes.tolist()[:10]}")
        target = (y == classes[1]).astype(np.float64)
        varying = np.ptp(X, axis=0) > 0
        coef = np.zeros(X.shape[1])
        if varying.any():
            firth_coef, firth_intercept, n_iter, converged = self._fit_firth(X[:, varying], target)
            coef[varying] = firth_coef
        else:  # intercept only: Firth's estimate of a proportion is (events + 1/2) / (n + 1)
            firth_intercept = float(logit((target.sum() + 0.5) / (target.size + 1.0)))
            n_iter, converged = 0, True
        self.classes_ = classes
        self.coef_ = coef
        self.intercept_ = _intercept_given_offset(target, X @ coef)
        self.firth_intercept_ = firth_intercept
        self.n_iter_ = n_iter
        self.converged_ = converged
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:  # noqa: N803
        """Linear predictor (log odds of the event), shape (n_samples,)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)  # noqa: N806
        return self.intercept_ + X @ self.coef_

    def predict_proba(self, X: ArrayLike) -> np.ndarray:  # noqa: N803
        """Probabilities of ``classes_``, shape (n_samples, 2); the second column is the event risk."""
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: ArrayLike) -> np.ndarray:  # noqa: N803
        """The more probable class of each row."""
        events = self.decision_function(X) > 0
        return self.classes_[events.astype(int)]

    def _fit_firth(self, X: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, int, bool]:  # noqa: N803
        """Firth coefficients and intercept, iterations, and whether the fit converged (see ``fit``)."""
        from firthmodels import FirthLogisticRegression

        firth = FirthLogisticRegression(max_iter=self.max_iter, gtol=self.tol, xtol=self.tol)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                firth.fit(X, target)
        except linalg.LinAlgError as err:
            raise ValueError(f"the Firth fit failed ({err}): the {X.shape[1]} predictors that vary in the "
                             f"training rows are linearly dependent") from err
        coef, intercept = np.asarray(firth.coef_, dtype=float), float(firth.intercept_)
        converged = bool(firth.converged_)
        if not converged:
            score = _max_modified_score(np.column_stack([X, np.ones(len(X))]), target, np.append(coef, intercept))
            converged = score <= math.sqrt(self.tol)
            if not converged:
                warnings.warn(f"the Firth fit did not converge in {firth.n_iter_} iterations: largest modified "
                              f"score {score:.2g} > {math.sqrt(self.tol):.2g}; increase max_iter",
                              ConvergenceWarning, stacklevel=3)
        return coef, intercept, int(firth.n_iter_), converged


def _max_modified_score(design: np.ndarray, target: np.ndarray, beta: np.ndarray) -> float:
    """Largest absolute Firth-modified score ``X'(y - p + h (1/2 - p))`` (Firth 1993; Heinze & Schemper 2002).

    ``h`` is the diagonal of the weighted hat matrix ``W^1/2 X (X'WX)^-1 X' W^1/2``; ``design`` includes
    the intercept column. Zero at the Firth estimate.
    """
    p = expit(design @ beta)
    q, _ = np.linalg.qr(np.sqrt(p * (1.0 - p))[:, None] * design)
    h = np.einsum("ij,ij->i", q, q)
    return float(np.abs(design.T @ (target - p + h * (0.5 - p))).max())


def _intercept_given_offset(target: np.ndarray, offset: np.ndarray) -> float:
    """ML intercept of a logistic model with a fixed offset: solves ``sum(expit(a + offset)) = events``.

    The score is increasing in ``a``; the root lies between ``logit(mean) - max(offset)`` (every risk at
    most the mean) and ``logit(mean) - min(offset)`` (every risk at least the mean).
    """
    events = float(target.sum())
    centre = float(logit(events / target.size))
    lower, upper = centre - float(offset.max()), centre - float(offset.min())
    if lower == upper:
        return lower
    return float(optimize.brentq(lambda a: float(expit(a + offset).sum()) - events, lower, upper,
                                 xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500))
