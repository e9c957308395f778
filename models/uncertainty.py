"""The validated calibration curve with a pointwise confidence band: how well a model's risks held in validation.

The curve is the one of :func:`models.metrics.flexible_calibration` (logistic regression of the outcome on a
restricted cubic spline of logit(p), knots at Harrell's quantiles); the band is a Wald interval on the
logit scale from the covariance of its coefficients, taken back with expit. Computed from validated
(out-of-fold) predictions, the band at a risk r is the range of event rates, among cases given risk r,
that the validation data are consistent with: a check of the model's calibration at r (a band excluding r says
such risks were miscalibrated), not the uncertainty of one prediction, which it may exclude. That is
:func:`models.prediction_intervals.prediction_interval`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import statsmodels.api as sm
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import expit
from statsmodels.tools.sm_exceptions import PerfectSeparationError, PerfectSeparationWarning

from models.checks import check_integer, check_level, check_outcome_and_risk
from models.logistic import check_knots, spline_basis, spline_knots
from models.risk_table import EPS, clipped_logit, risk_table

BAND_KEYS = ("predicted", "observed", "low", "high")
DECIMALS = 6
_FIT_TOLERANCE = 1e-12
_FIT_ITERATIONS = 200


def calibration_band(y: ArrayLike, p: ArrayLike, *, knots: int = 4, level: float = 0.95,
                     grid_points: int = 100) -> dict[str, object]:
    """Flexible calibration curve with a pointwise Wald confidence band, JSON-ready.

    The curve is ``expit(X(p) @ beta)``, ``X(p)`` Harrell's restricted cubic spline basis of logit(p)
    with ``knots`` knots at his quantiles of logit(p) (as :func:`models.metrics.flexible_calibration`,
    whose curve it equals), ``beta`` the maximum likelihood estimate of a binomial GLM (statsmodels,
    IRLS). The band is ``expit(X(p) @ beta -/+ z * se)`` with ``se = sqrt(X(p) @ V @ X(p))``, ``V`` the
    inverse Fisher information ``(X^T W X)^-1`` and ``z`` the normal quantile of ``level``. Pointwise:
    at each risk, not simultaneously over the curve.

    Parameters
    ----------
    y : array of shape (n,)
        Outcome, 0/1 or bool; at least one event and one non-event.
    p : array of shape (n,)
        Predicted risk in [0, 1], validated (out-of-fold) for an honest band.
    knots
        Number of knots, 3 to 7 (Harrell's table); coinciding knots are merged, fewer than 3 distinct
        knots leave a fit linear in logit(p).
    level
        Coverage of the pointwise interval, in (0, 1).
    grid_points
        Number of quantiles of ``p`` (0 to 1) at which the curve is tabulated; coinciding ones merge.

    Returns
    -------
    dict
        ``predicted`` (ascending grid of risks), ``observed`` (the curve), ``low``, ``high`` (the band),
        lists of floats rounded to 6 decimals; ``level``; ``method`` (the method in words, with n and
        events).

    Raises
    ------
    ValueError
        As :func:`models.metrics.flexible_calibration`; ``level`` outside (0, 1); ``grid_points`` below 2;
        or the fit does not exist (events separated by the spline terms).

    References
    ----------
    Harrell FE. Regression Modeling Strategies, 2nd ed. Springer 2015, sections 2.4.5-2.4.6 and 10.5.
    Van Calster B, Nieboer D, Vergouwe Y, et al. A calibration hierarchy for risk models was defined:
    from utopia to empirical data. J Clin Epidemiol 2016;74:167-176.
    """
    y01, risk = check_outcome_and_risk(y, p, both_classes_for="calibration_band")
    check_knots(knots)
    check_level(level)
    check_integer(grid_points, "grid_points", minimum=2)
    table, _ = risk_table(y01, risk)
    at = spline_knots(table, knots)
    beta, covariance = _fit_spline_glm(spline_basis(table.logit, at).T, table.events, table.rows)
    grid = np.unique(np.quantile(risk, np.linspace(0, 1, grid_points)))
    eta, se = _linear_predictor(grid, at, beta, covariance)
    z = float(stats.norm.ppf(0.5 + level / 2))
    method = (f"logistic regression of the outcome on a restricted cubic spline of logit(p) ({len(at) or 'no'} "
              f"knots at Harrell's quantiles), statsmodels GLM Binomial; pointwise {level:.0%} Wald band on the "
              f"logit scale, back-transformed with expit; n={len(risk)}, events={int(y01.sum())}")
    return {"predicted": _rounded(grid), "observed": _rounded(expit(eta)), "low": _rounded(expit(eta - z * se)),
            "high": _rounded(expit(eta + z * se)), "level": level, "method": method}


def band_at(band: Mapping[str, object], risk: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The calibration curve and its band at given risks, interpolated linearly on the logit scale.

    Risks outside the band's grid (the range of the validation predictions) are clipped to it: the band
    does not extrapolate, so a risk beyond the validated range gets the band of the nearest validated
    risk. :func:`outside_band` says which risks were clipped.

    Parameters
    ----------
    band
        As returned by :func:`calibration_band` (or read back from JSON).
    risk : array of any shape
        Predicted risks in [0, 1].

    Returns
    -------
    (observed, low, high)
        Arrays of the shape of ``risk``.

    Raises
    ------
    ValueError
        ``band`` lacks a key, its lists differ in length, are empty or not finite, or ``risk`` is
        outside [0, 1].
    """
    grid, columns = _band_arrays(band)
    values = _checked_risk(risk)
    at = clipped_logit(np.clip(values, grid[0], grid[-1]))
    x = clipped_logit(grid)
    out = tuple(expit(np.interp(at, x, clipped_logit(column))).reshape(values.shape) for column in columns)
    return out[0], out[1], out[2]


def outside_band(band: Mapping[str, object], risk: ArrayLike) -> np.ndarray:
    """Boolean mask (shape of ``risk``): risks outside the band's grid, which :func:`band_at` clips."""
    grid, _ = _band_arrays(band)
    values = _checked_risk(risk)
    return (values < grid[0]) | (values > grid[-1])


# ----------------------------------------------------------------------------------- private steps
def _fit_spline_glm(design: np.ndarray, events: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and their covariance of ``events ~ Binomial(rows, expit(design @ beta))``.

    ``design`` has one row per distinct risk (shape (K, k)); grouped binomial counts give the same
    estimate and covariance as one row per case.
    """
    endog = np.column_stack([events, rows - events])
    separated = ValueError("the calibration curve does not exist: the events are separated by the spline terms of "
                           "logit(p) (too few events, or risks of 0 and 1)")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PerfectSeparationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow on the way to a separated fit: checked below
        try:
            fit = sm.GLM(endog, design, family=sm.families.Binomial()).fit(tol=_FIT_TOLERANCE, maxiter=_FIT_ITERATIONS)
            beta, covariance = np.asarray(fit.params), np.asarray(fit.cov_params())
        except (PerfectSeparationWarning, PerfectSeparationError) as error:
            raise separated from error
        except (np.linalg.LinAlgError, ValueError) as error:
            raise ValueError(f"the calibration curve cannot be fitted: {error}") from error
    if not (np.all(np.isfinite(beta)) and np.all(np.isfinite(covariance))):
        raise separated
    return beta, covariance


def _linear_predictor(risk: np.ndarray, knots: np.ndarray, beta: np.ndarray,
                      covariance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``eta = X beta`` and its standard error ``sqrt(diag(X V X^T))`` at ``risk``."""
    design = spline_basis(clipped_logit(risk), knots).T
    variance = np.einsum("ij,jk,ik->i", design, covariance, design)
    return design @ beta, np.sqrt(np.maximum(variance, 0.0))


def _band_arrays(band: Mapping[str, object]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The band's grid (ascending, distinct) and its observed, low and high columns, checked."""
    missing = [key for key in BAND_KEYS if key not in band]
    if missing:
        raise ValueError(f"a calibration band needs keys {', '.join(BAND_KEYS)}; missing: {', '.join(missing)}")
    try:
        arrays = [np.asarray(band[key], dtype=np.float64) for key in BAND_KEYS]
    except (TypeError, ValueError) as error:
        raise ValueError(f"a calibration band's lists must hold numbers: {error}") from None
    lengths = {key: len(a) for key, a in zip(BAND_KEYS, arrays)}
    if len(set(lengths.values())) != 1 or lengths["predicted"] == 0:
        raise ValueError(f"a calibration band's lists must be non-empty and of equal length; got {lengths}")
    if not all(np.all(np.isfinite(a)) for a in arrays):
        raise ValueError("a calibration band's lists must hold finite numbers (no null)")
    grid, first = np.unique(np.clip(arrays[0], EPS, 1 - EPS), return_index=True)
    return grid, [a[first] for a in arrays[1:]]


def _checked_risk(risk: ArrayLike) -> np.ndarray:
    values = np.asarray(risk, dtype=np.float64)
    bad = ~np.isfinite(values) | (values < 0) | (values > 1)
    if bad.any():
        raise ValueError(f"risk must be within [0, 1]; {int(bad.sum())} values are not")
    return values


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), DECIMALS) for v in values]
