"""Maximum likelihood logistic fits on a risk table: the recalibration ``a + b logit(p)`` and the spline calibration.

One Newton-Raphson solver (:func:`fit_logistic`, numpy) fits every calibration model of the validation metrics
on the table of distinct risks of :mod:`models.risk_table`: the logistic recalibration (:func:`recalibration_fits`;
with Wald intervals, :func:`recalibration_intervals`) and Harrell's restricted cubic spline of logit(p)
(:func:`flexible_fit`). Tests check them against statsmodels GLM and R. statsmodels is imported only by the
``"irls"`` method of :func:`recalibration_intervals`, which keeps the drift check's published figures.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from scipy import stats
from scipy.special import expit

from models.risk_table import RiskTable, clipped_logit, weighted_quantile

HARRELL_KNOT_QUANTILES: dict[int, tuple[float, ...]] = {  # Harrell, RMS 2nd ed. (2015), Table 2.3
    3: (0.10, 0.50, 0.90),
    4: (0.05, 0.35, 0.65, 0.95),
    5: (0.05, 0.275, 0.50, 0.725, 0.95),
    6: (0.05, 0.23, 0.41, 0.59, 0.77, 0.95),
    7: (0.025, 0.1833, 0.3417, 0.50, 0.6583, 0.8167, 0.975),
}
_MAX_NEWTON = 100
_MAX_HALVING = 30
_NEWTON_TOL = 1e-9
_NOT_ESTIMABLE = (np.nan, np.nan, np.nan)


# ------------------------------------------------------------------------------------- the solver
def fit_logistic(terms: np.ndarray, t: RiskTable, *, start: np.ndarray,
                 offset: np.ndarray | None = None) -> np.ndarray:
    """Maximum likelihood ``beta`` of ``events ~ Binomial(rows, expit(offset + beta @ terms))``.

    Newton-Raphson with step halving: a step is halved until the log-likelihood does not decrease, so
    every iterate improves the (concave) likelihood whatever the start. Stops when the largest step is
    below 1e-9 relative to the largest coefficient (Newton converges quadratically: the estimate is then
    accurate far beyond the 6 reported decimals).

    Parameters
    ----------
    terms : array of shape (k, K)
        One row per coefficient, one column per distinct risk of ``t``.
    t : RiskTable
        Rows and events per distinct risk.
    start : array of shape (k,)
        Starting coefficients.
    offset : array of shape (K,), optional
        Fixed part of the linear predictor.

    Returns
    -------
    array of shape (k,)
        The estimate; NaNs when the maximum does not exist or is not reached in 100 steps (separation of
        events by the terms).
    """
    beta = np.asarray(start, dtype=np.float64)
    mu, loglik = _fitted_and_loglik(beta, terms, t, offset)
    for _ in range(_MAX_NEWTON):
        score = terms @ (t.events - t.rows * mu)
        information = _weighted_cross_products(terms, t.rows * mu * (1 - mu))
        try:
            step = np.linalg.solve(information, score)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        for _ in range(_MAX_HALVING):
            new_mu, new_loglik = _fitted_and_loglik(beta + step, terms, t, offset)
            if new_loglik >= loglik - 1e-12 * abs(loglik):
                break
            step = step / 2
        else:
            break
        beta, mu, loglik = beta + step, new_mu, new_loglik
        if np.max(np.abs(step)) <= _NEWTON_TOL * (1 + np.max(np.abs(beta))):
            return beta
    return np.full_like(beta, np.nan)


def logistic_covariance(terms: np.ndarray, t: RiskTable, beta: np.ndarray,
                        offset: np.ndarray | None = None) -> np.ndarray:
    """Inverse Fisher information ``(X^T W X)^-1`` at ``beta`` of the model of :func:`fit_logistic`, shape (k, k).

    Raises
    ------
    numpy.linalg.LinAlgError
        The information is singular (e.g. one distinct risk for an intercept and a slope).
    """
    mu, _ = _fitted_and_loglik(np.asarray(beta, dtype=np.float64), terms, t, offset)
    return np.linalg.inv(_weighted_cross_products(terms, t.rows * mu * (1 - mu)))


def _fitted_and_loglik(beta: np.ndarray, terms: np.ndarray, t: RiskTable,
                       offset: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Fitted risk ``expit(eta)`` and binomial log-likelihood ``sum(events * eta - rows * log(1 + e^eta))``."""
    eta = beta @ terms if offset is None else offset + beta @ terms
    softplus = np.maximum(eta, 0.0) + np.log1p(np.exp(-np.abs(eta)))  # log(1 + e^eta) without overflow
    loglik = float(t.events @ eta - t.rows @ softplus)
    return np.exp(eta - softplus), loglik if np.isfinite(loglik) else -np.inf


def _weighted_cross_products(terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``(terms * weights) @ terms.T``, term by term (k is small; faster than one product at large K)."""
    k = len(terms)
    out = np.empty((k, k))
    for i in range(k):
        weighted = terms[i] * weights
        for j in range(i, k):
            out[i, j] = out[j, i] = weighted @ terms[j]
    return out


# ----------------------------------------------------------------------------- logistic recalibration
def recalibration_fits(t: RiskTable, *, start: np.ndarray | None = None) -> np.ndarray:
    """``[intercept with slope fixed at 1, a, b]`` of ``logit P(y=1) = a + b logit(p)``; NaN without both classes.

    The first is calibration-in-the-large (``logit(p)`` as an offset); ``a`` and ``b`` are the joint
    recalibration intercept and slope (``b`` is the calibration slope). All by maximum likelihood
    (:func:`fit_logistic`); NaN where the estimate does not exist (separation). Newton starts from ``start``
    (same layout) when finite, else from perfect calibration ``[0, 0, 1]``.

    References
    ----------
    Cox DR. Two further applications of a model for binary regression. Biometrika 1958;45:562-565.
    """
    if t.n_events in (0, t.n):
        return np.full(3, np.nan)
    if start is None or not np.all(np.isfinite(start)):
        start = np.array([0.0, 0.0, 1.0])
    ones = np.ones((1, len(t.logit)))
    in_the_large = fit_logistic(ones, t, start=start[:1], offset=t.logit)
    if separated(t):  # no maximum: Newton would stop wherever the weights underflow (the float library's choice)
        return np.concatenate([in_the_large, [np.nan, np.nan]])
    return np.concatenate([in_the_large, fit_logistic(np.vstack([ones, t.logit]), t, start=start[1:])])


def separated(t: RiskTable) -> bool:
    """Whether the risks separate events from non-events (completely or quasi-completely: every event at a risk at
    or above every non-event's, or at or below), so that ``logit P(y=1) = a + b logit(p)`` has no maximum likelihood
    estimate (Albert & Anderson 1984). The table's risks are distinct and ascending."""
    has_event, has_non_event = t.events > 0, t.rows - t.events > 0
    if not has_event.any() or not has_non_event.any() or len(t.logit) < 2:
        return False
    events_at, non_events_at = np.flatnonzero(has_event), np.flatnonzero(has_non_event)
    return bool(events_at[0] >= non_events_at[-1] or events_at[-1] <= non_events_at[0])


def recalibration_intervals(t: RiskTable, *, level: float, method: Literal["irls", "newton"] = "irls"
                            ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Calibration-in-the-large and calibration slope of a table, each as ``(estimate, low, high)`` (Wald interval).

    The models of :func:`recalibration_fits`: ``a`` in ``logit P(y=1) = a + logit(p)`` and ``b`` in
    ``logit P(y=1) = a + b logit(p)``, with intervals ``estimate -/+ z se``, ``z`` the normal quantile of
    ``level``. NaN where not estimable: without both classes, the slope with a single distinct risk, and as
    each method below says.

    Parameters
    ----------
    t : RiskTable
        Rows and events per distinct risk.
    level : float
        Coverage of the intervals, in (0, 1) (checked by the caller).
    method : {"irls", "newton"}, default "irls"
        ``"irls"``: statsmodels GLM Binomial on the grouped table (IRLS to a deviance change of 1e-10); its
        standard errors are those of its last IRLS iteration; NaN when statsmodels flags a perfect separation
        or prediction or the fit fails. What :func:`models.drift.batch_calibration` publishes, kept so that its
        figures stay the same. ``"newton"``: :func:`recalibration_fits`, standard errors from the inverse
        Fisher information at the estimate (the textbook Wald interval); NaN under separation. The estimates
        agree to about 1e-11; the limits differ by up to 1e-7 in batches of thousands and 1e-5 in batches of
        tens (IRLS's information lags one iteration), and under quasi-separation IRLS stops at a huge finite
        estimate where Newton gives NaN.

    References
    ----------
    Cox DR. Two further applications of a model for binary regression. Biometrika 1958;45:562-565.
    """
    if method not in ("irls", "newton"):
        raise ValueError(f"method must be 'irls' or 'newton'; got {method!r}")
    if t.n_events in (0, t.n):
        return _NOT_ESTIMABLE, _NOT_ESTIMABLE
    z = float(stats.norm.ppf(0.5 + level / 2))
    ones = np.ones((1, len(t.risk)))
    joint = np.vstack([ones, t.logit])
    if method == "irls":
        return (_irls_wald(t, ones, t.logit, 0, z),
                _irls_wald(t, joint, None, 1, z) if len(t.risk) > 1 else _NOT_ESTIMABLE)
    fits = recalibration_fits(t)
    return (_newton_wald(t, ones, t.logit, fits[:1], 0, z),
            _newton_wald(t, joint, None, fits[1:], 1, z) if len(t.risk) > 1 else _NOT_ESTIMABLE)


def _newton_wald(t: RiskTable, terms: np.ndarray, offset: np.ndarray | None, beta: np.ndarray, coefficient: int,
                 z: float) -> tuple[float, float, float]:
    """One coefficient of a Newton fit with its Wald interval from the inverse information at the estimate."""
    if not np.all(np.isfinite(beta)):
        return _NOT_ESTIMABLE
    try:
        se = float(np.sqrt(logistic_covariance(terms, t, beta, offset)[coefficient, coefficient]))
    except np.linalg.LinAlgError:
        return _NOT_ESTIMABLE
    estimate = float(beta[coefficient])
    return (estimate, estimate - z * se, estimate + z * se) if np.isfinite(estimate + se) else _NOT_ESTIMABLE


def _irls_wald(t: RiskTable, terms: np.ndarray, offset: np.ndarray | None, coefficient: int,
               z: float) -> tuple[float, float, float]:
    """One coefficient of a grouped binomial GLM (statsmodels IRLS) with its Wald interval; NaN when no fit exists."""
    import statsmodels.api as sm  # only this method needs statsmodels
    from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

    endog = np.column_stack([t.events, t.rows - t.events])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow on the way to a separated fit: checked below
        try:
            fit = sm.GLM(endog, terms.T, family=sm.families.Binomial(), offset=offset).fit(tol=1e-10, maxiter=100)
        except (PerfectSeparationWarning, PerfectSeparationError, np.linalg.LinAlgError, ValueError):
            return _NOT_ESTIMABLE
    estimate, se = float(fit.params[coefficient]), float(fit.bse[coefficient])
    return (estimate, estimate - z * se, estimate + z * se) if np.isfinite(estimate + se) else _NOT_ESTIMABLE


# ----------------------------------------------------------------------------- spline calibration
def check_knots(knots: int) -> int:
    """``knots`` after checking it is a number of knots in Harrell's table (3 to 7)."""
    if knots not in HARRELL_KNOT_QUANTILES:
        raise ValueError(f"knots must be one of 3, 4, 5, 6, 7 (Harrell's quantiles); got {knots!r}")
    return knots


def spline_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Terms ``[1, x, S_1(x), ..., S_{k-2}(x)]`` (one row each) of Harrell's restricted cubic spline.

    As ``rcspline.eval(x, knots, inclx=TRUE, norm=2)`` of R package Hmisc, plus an intercept row.
    """
    terms = np.empty((max(len(knots), 2), len(x)))
    terms[0], terms[1] = 1.0, x
    if len(knots):
        last, before_last, scale = knots[-1], knots[-2], (knots[-1] - knots[0]) ** 2
        tail_last, tail_before = _positive_cube(x - last), _positive_cube(x - before_last)
        for j, knot in enumerate(knots[:-2]):
            terms[j + 2] = (_positive_cube(x - knot)
                            - tail_before * ((last - knot) / (last - before_last))
                            + tail_last * ((before_last - knot) / (last - before_last))) / scale
    return terms


def _positive_cube(u: np.ndarray) -> np.ndarray:
    u = np.maximum(u, 0.0)
    return u * u * u


def spline_knots(t: RiskTable, knots: int) -> np.ndarray:
    """Harrell's knots on logit(p), duplicates dropped; fewer than 3 distinct knots leave a linear fit."""
    at = np.unique(weighted_quantile(t.logit, t.rows, HARRELL_KNOT_QUANTILES[knots]))
    return at if len(at) >= 3 else at[:0]


def flexible_fit(t: RiskTable, knots: int, *,
                 start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knots (logit scale), coefficients and smoothed risk at each table risk of the spline calibration model.

    Newton starts from ``start`` when it has the right length and is finite, else from the linear
    recalibration ``a + b logit(p)`` (spline coefficients 0).
    """
    at = spline_knots(t, knots)
    terms = spline_basis(t.logit, at)
    if start is None or len(start) != len(terms) or not np.all(np.isfinite(start)):
        start = np.zeros(len(terms))
        linear = recalibration_fits(t)[1:]  # the spline family contains a + b logit(p): start there
        start[:2] = linear if np.all(np.isfinite(linear)) else (0.0, 1.0)
    beta = fit_logistic(terms, t, start=start)
    return at, beta, expit(beta @ terms)


def spline_curve(risk: np.ndarray, knots: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Smoothed observed risk at predicted risks ``risk`` of a fitted spline calibration model."""
    return expit(beta @ spline_basis(clipped_logit(risk), knots))


def calibration_errors_of(t: RiskTable, knots: int, *, start: np.ndarray | None = None) -> dict[str, float]:
    """ICI, E50, E90, Emax of a table (and ``beta``, the spline coefficients, to start the next fit from)."""
    _, beta, smoothed = flexible_fit(t, knots, start=start)
    error = np.abs(t.risk - smoothed)
    if not np.all(np.isfinite(error)):
        return dict.fromkeys(("ici", "e50", "e90", "emax"), np.nan) | {"beta": beta}
    order = np.argsort(error)
    e50, e90 = weighted_quantile(error[order], t.rows[order], [0.5, 0.9])
    return {"ici": float(np.dot(t.rows, error) / t.n), "e50": float(e50), "e90": float(e90),
            "emax": float(error.max()), "beta": beta}
