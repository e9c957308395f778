"""Validation metrics of predicted risks for a binary outcome: discrimination, calibration, net benefit, bootstrap CIs.

Every metric here depends on the data only through the table of distinct predicted risks with, for
each, its number of rows and of events (:class:`_RiskTable`). Each public metric builds that table once
(one sort, O(n log n)) and evaluates on it; a bootstrap replicate rebuilds it from frequency weights in
O(n) without sorting again, so an estimate and its bootstrap replicates are computed by the same code.
Logistic fits use Newton-Raphson in numpy (no statsmodels at run time); tests check them against
statsmodels GLM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import expit, logit

from models.fanout import Mapper, pieces_for, sequential

EPS = 1e-15  # predicted risks are clipped to [EPS, 1 - EPS] before log() and logit()
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
_GRID_POINTS = 100


# --------------------------------------------------------------------------------------------- inputs
def _check_inputs(y: ArrayLike, p: ArrayLike, *, both_classes_for: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``y`` as 0/1 int8 and ``p`` as float64, after checking every rule once; raise ValueError naming the rule."""
    y_arr, p_arr = np.asarray(y), np.asarray(p)
    for name, arr in (("y", y_arr), ("p", p_arr)):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if len(y_arr) != len(p_arr):
        raise ValueError(f"y and p must have the same length; got {len(y_arr)} and {len(p_arr)}")
    if len(y_arr) == 0:
        raise ValueError("y and p must not be empty; got 0 values")
    y_num, p_num = _as_float(y_arr, "y", "0 or 1 (bool accepted)"), _as_float(p_arr, "p", "a number")
    bad = (y_num != 0) & (y_num != 1)  # NaN is bad too
    if bad.any():
        raise ValueError(f"y must be 0 or 1 (bool accepted); {bad.sum()} values are not "
                         f"(e.g. {y_num[bad][0]:g}; {_positions(bad)})")
    bad = ~np.isfinite(p_num)
    if bad.any():
        raise ValueError(f"p must be finite; {bad.sum()} values are NaN or infinite ({_positions(bad)})")
    bad = (p_num < 0) | (p_num > 1)
    if bad.any():
        raise ValueError(f"p must be within [0, 1]; {bad.sum()} values outside "
                         f"(min {p_num.min():.6g}, max {p_num.max():.6g}; {_positions(bad)})")
    events = int(y_num.sum())
    if both_classes_for is not None and events in (0, len(y_num)):
        raise ValueError(f"y must contain at least one event (1) and one non-event (0) for {both_classes_for}; "
                         f"got {events} events in {len(y_num)} rows")
    return y_num.astype(np.int8), p_num


def _as_float(arr: np.ndarray, name: str, rule: str) -> np.ndarray:
    """Numbers and bools as float64; objects (e.g. pandas nullable values) only if all are numbers; never text."""
    try:
        if arr.dtype.kind in "USV":
            raise TypeError
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {rule}; got non-numeric values (dtype {arr.dtype})") from None


def _positions(bad: np.ndarray) -> str:
    where = np.flatnonzero(bad)
    shown = ", ".join(str(i) for i in where[:3])
    return f"positions {shown}{', ...' if len(where) > 3 else ''}"


def _check_groups(groups: ArrayLike, n: int) -> tuple[np.ndarray, int]:
    """Integer cluster code per row and the number of clusters."""
    codes, uniques = pd.factorize(np.asarray(groups), sort=False)
    if len(codes) != n:
        raise ValueError(f"groups must have one value per row; got {len(codes)} values for {n} rows")
    if (codes < 0).any():
        raise ValueError(f"groups must not be missing; {(codes < 0).sum()} values are ({_positions(codes < 0)})")
    return codes, len(uniques)


# ------------------------------------------------------------------------------------- the risk table
@dataclass(frozen=True)
class _RiskTable:
    """Distinct predicted risks (ascending) with their logit, and the (weighted) number of rows and events."""

    risk: np.ndarray
    logit: np.ndarray
    rows: np.ndarray
    events: np.ndarray

    @property
    def n(self) -> float:
        return float(self.rows.sum())

    @property
    def n_events(self) -> float:
        return float(self.events.sum())

    def reweighted(self, codes: np.ndarray, y: np.ndarray, weights: np.ndarray) -> _RiskTable:
        """The table of a resample given by integer frequency ``weights`` per row (O(n), no sort)."""
        rows = np.bincount(codes, weights=weights, minlength=len(self.risk))
        events = np.bincount(codes, weights=weights * y, minlength=len(self.risk))
        keep = rows > 0
        return _RiskTable(self.risk[keep], self.logit[keep], rows[keep], events[keep])


def _risk_table(y: np.ndarray, p: np.ndarray) -> tuple[_RiskTable, np.ndarray]:
    """The table of checked data and, per row, the index of its risk in the table."""
    risk, codes, rows = np.unique(p, return_inverse=True, return_counts=True)
    events = np.bincount(codes, weights=y, minlength=len(risk))
    return _RiskTable(risk, _logit(risk), rows.astype(np.float64), events), codes


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: ArrayLike) -> np.ndarray:
    """``np.quantile(expanded, q)`` (linear method) of ``values`` (ascending) repeated ``weights`` (integer) times."""
    cum = np.cumsum(weights)
    h = (cum[-1] - 1) * np.asarray(q, dtype=np.float64)
    lo = np.floor(h)
    below = values[np.searchsorted(cum, lo, side="right")]
    above = values[np.searchsorted(cum, np.minimum(lo + 1, cum[-1] - 1), side="right")]
    return below + (h - lo) * (above - below)


def _logit(risk: np.ndarray) -> np.ndarray:
    return logit(np.clip(risk, EPS, 1 - EPS))


# ------------------------------------------------------------------------------- metrics of a table
def _auroc_of(t: _RiskTable) -> float:
    non_events = t.rows - t.events
    below = np.cumsum(non_events) - non_events  # non-events with a strictly lower risk
    pairs = t.n_events * float(non_events.sum())
    return float(np.dot(t.events, below + 0.5 * non_events) / pairs) if pairs > 0 else np.nan


def _brier_of(t: _RiskTable) -> float:
    return float((np.dot(t.events, (1 - t.risk) ** 2) + np.dot(t.rows - t.events, t.risk ** 2)) / t.n)


def _scaled_brier_of(t: _RiskTable) -> float:
    prevalence = t.n_events / t.n
    worst = prevalence * (1 - prevalence)
    return 1 - _brier_of(t) / worst if worst > 0 else np.nan


def _log_loss_of(t: _RiskTable) -> float:
    risk = np.clip(t.risk, EPS, 1 - EPS)
    return float(-(np.dot(t.events, np.log(risk)) + np.dot(t.rows - t.events, np.log1p(-risk))) / t.n)


def _fit_logistic(terms: np.ndarray, t: _RiskTable, *, start: np.ndarray,
                  offset: np.ndarray | None = None) -> np.ndarray:
    """Maximum likelihood ``beta`` of ``events ~ Binomial(rows, expit(offset + beta @ terms))``.

    Newton-Raphson with step halving: a step is halved until the log-likelihood does not decrease, so
    every iterate improves the (concave) likelihood whatever the start. Stops when the largest step is
    below 1e-9 relative to the largest coefficient (Newton converges quadratically: the estimate is then
    accurate far beyond the 6 reported decimals). ``terms`` has one row per coefficient, shape (k, K).
    Returns NaNs when the maximum does not exist or is not reached in 100 steps (separation of events
    by the terms).
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


def _fitted_and_loglik(beta: np.ndarray, terms: np.ndarray, t: _RiskTable,
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


def _calibration_fits(t: _RiskTable, *, start: np.ndarray | None = None) -> np.ndarray:
    """``[intercept with slope fixed at 1, a, b]`` of ``logit P(y=1) = a + b logit(p)``; NaN without both classes.

    Newton starts from ``start`` (same layout) when finite, else from perfect calibration ``[0, 0, 1]``.
    """
    if t.n_events in (0, t.n):
        return np.full(3, np.nan)
    if start is None or not np.all(np.isfinite(start)):
        start = np.array([0.0, 0.0, 1.0])
    ones = np.ones((1, len(t.logit)))
    in_the_large = _fit_logistic(ones, t, start=start[:1], offset=t.logit)
    return np.concatenate([in_the_large, _fit_logistic(np.vstack([ones, t.logit]), t, start=start[1:])])


def _spline_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
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


def _spline_knots(t: _RiskTable, knots: int) -> np.ndarray:
    """Harrell's knots on logit(p), duplicates dropped; fewer than 3 distinct knots leave a linear fit."""
    at = np.unique(_weighted_quantile(t.logit, t.rows, HARRELL_KNOT_QUANTILES[knots]))
    return at if len(at) >= 3 else at[:0]


def _flexible_of(t: _RiskTable, knots: int, *,
                 start: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Knots (logit scale), coefficients and smoothed risk at each table risk of the spline calibration model.

    Newton starts from ``start`` when it has the right length and is finite, else from the linear
    recalibration ``a + b logit(p)`` (spline coefficients 0).
    """
    at = _spline_knots(t, knots)
    terms = _spline_basis(t.logit, at)
    if start is None or len(start) != len(terms) or not np.all(np.isfinite(start)):
        start = np.zeros(len(terms))
        linear = _calibration_fits(t)[1:]  # the spline family contains a + b logit(p): start there
        start[:2] = linear if np.all(np.isfinite(linear)) else (0.0, 1.0)
    beta = _fit_logistic(terms, t, start=start)
    return at, beta, expit(beta @ terms)


def _curve(risk: np.ndarray, knots: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Smoothed observed risk at predicted risks ``risk`` of a fitted spline calibration model."""
    return expit(beta @ _spline_basis(_logit(risk), knots))


def _errors_of(t: _RiskTable, knots: int, *, start: np.ndarray | None = None) -> dict[str, float]:
    """ICI, E50, E90, Emax of a table (and ``beta``, the spline coefficients, to start the next fit from)."""
    _, beta, smoothed = _flexible_of(t, knots, start=start)
    error = np.abs(t.risk - smoothed)
    if not np.all(np.isfinite(error)):
        return dict.fromkeys(("ici", "e50", "e90", "emax"), np.nan) | {"beta": beta}
    order = np.argsort(error)
    e50, e90 = _weighted_quantile(error[order], t.rows[order], [0.5, 0.9])
    return {"ici": float(np.dot(t.rows, error) / t.n), "e50": float(e50), "e90": float(e90),
            "emax": float(error.max()), "beta": beta}


# ----------------------------------------------------------------------------------- public metrics
def auroc(y: ArrayLike, p: ArrayLike) -> float:
    """Area under the ROC curve (c statistic), from the Mann-Whitney U statistic.

    The probability that a random event has a higher predicted risk than a random non-event, ties
    counting 1/2; equal to ``sklearn.metrics.roc_auc_score``. O(n log n).

    Parameters
    ----------
    y : array of shape (n,)
        Outcome, 0/1 or bool; at least one event and one non-event.
    p : array of shape (n,)
        Predicted risk in [0, 1].

    Raises
    ------
    ValueError
        If ``y`` is not 0/1, ``p`` is outside [0, 1] or not finite, the lengths differ, or ``y`` has a
        single class.

    References
    ----------
    Hanley JA, McNeil BJ. The meaning and use of the area under a ROC curve. Radiology 1982;143:29-36.
    """
    return _auroc_of(_risk_table(*_check_inputs(y, p, both_classes_for="auroc"))[0])


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score, the mean of ``(p - y)**2`` (0 is perfect).

    Parameters and errors as :func:`auroc` (a single class is allowed).

    References
    ----------
    Brier GW. Verification of forecasts expressed in terms of probability. Mon Weather Rev 1950;78:1-3.
    """
    return _brier_of(_risk_table(*_check_inputs(y, p))[0])


def scaled_brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Scaled Brier score ``1 - Brier / (prevalence * (1 - prevalence))``, prevalence the observed event rate.

    1 is perfect; 0 is no better than predicting the prevalence for everyone. Parameters and errors as
    :func:`auroc`.

    References
    ----------
    Steyerberg EW, Vickers AJ, Cook NR, et al. Assessing the performance of prediction models: a
    framework for traditional and novel measures. Epidemiology 2010;21:128-138.
    """
    return _scaled_brier_of(_risk_table(*_check_inputs(y, p, both_classes_for="scaled_brier_score"))[0])


def log_loss(y: ArrayLike, p: ArrayLike) -> float:
    """Mean negative log-likelihood (natural log, nats per row), ``p`` clipped to ``[1e-15, 1 - 1e-15]``.

    Equal to ``sklearn.metrics.log_loss``. Parameters and errors as :func:`auroc` (a single class is allowed).
    """
    return _log_loss_of(_risk_table(*_check_inputs(y, p))[0])


def calibration_intercept_slope(y: ArrayLike, p: ArrayLike) -> tuple[float, float]:
    """Calibration-in-the-large (intercept) and calibration slope of predicted risks.

    ``slope``: coefficient of ``logit(p)`` in the logistic regression ``logit P(y=1) = a + b logit(p)``
    (1 is ideal; below 1, predictions too extreme). ``intercept``: ``a`` in
    ``logit P(y=1) = a + logit(p)``, the slope fixed at 1 by an offset (0 is ideal; above 0, risks
    under-estimated on average). Both by maximum likelihood (Newton-Raphson); NaN when the estimate does
    not exist (complete separation of events by ``p``). ``p`` is clipped to ``[1e-15, 1 - 1e-15]`` before
    the logit. Parameters and errors as :func:`auroc`.

    References
    ----------
    Cox DR. Two further applications of a model for binary regression. Biometrika 1958;45:562-565.
    Van Calster B, Nieboer D, Vergouwe Y, et al. A calibration hierarchy for risk models was defined:
    from utopia to empirical data. J Clin Epidemiol 2016;74:167-176.
    """
    fits = _calibration_fits(_risk_table(*_check_inputs(y, p, both_classes_for="calibration"))[0])
    return float(fits[0]), float(fits[2])


@dataclass(frozen=True, eq=False)
class FlexibleCalibration:
    """A smooth calibration curve: observed risk as a function of predicted risk.

    Attributes
    ----------
    grid : array
        Predicted risks at which the curve is tabulated: distinct quantiles of ``p`` from 0 to 1.
    observed : array
        Smoothed observed risk at ``grid``.
    smoothed : array of shape (n,)
        Smoothed observed risk of each input row (same order as ``p``).
    knots : array
        Knots on the logit scale (empty: too few distinct risks, a linear fit in logit(p)).
    coefficients : array
        Intercept, coefficient of logit(p), then of each spline term.
    """

    grid: np.ndarray
    observed: np.ndarray
    smoothed: np.ndarray
    knots: np.ndarray
    coefficients: np.ndarray = field(repr=False)

    def risk_at(self, p: ArrayLike) -> np.ndarray:
        """Smoothed observed risk at predicted risks ``p``."""
        return _curve(np.asarray(p, dtype=np.float64), self.knots, self.coefficients)


def flexible_calibration(y: ArrayLike, p: ArrayLike, *, knots: int = 4) -> FlexibleCalibration:
    """Flexible calibration curve by unpenalised logistic regression on a restricted cubic spline of logit(p).

    Knots at Harrell's quantiles of logit(p) (4 knots: 5%, 35%, 65%, 95%; linear interpolation, R's
    quantile type 7); coinciding knots (ties) are merged, and with fewer than 3 distinct knots the fit is
    linear in logit(p). The spline is cubic between knots and linear beyond the outer ones. Coefficients are NaN when
    the estimate does not exist (separation).

    Parameters
    ----------
    y, p
        As :func:`auroc`.
    knots
        Number of knots, 3 to 7 (Harrell's table).

    Raises
    ------
    ValueError
        As :func:`auroc`, or ``knots`` not in 3..7.

    References
    ----------
    Harrell FE. Regression Modeling Strategies, 2nd ed. Springer 2015, section 2.4.6 (Table 2.3).
    Austin PC, Steyerberg EW. Graphical assessment of internal and external calibration of logistic
    regression models by using loess smoothers. Stat Med 2014;33:517-535.
    """
    y01, risk = _check_inputs(y, p, both_classes_for="flexible_calibration")
    at, beta, _ = _flexible_of(_risk_table(y01, risk)[0], _check_knots(knots))
    grid = np.unique(np.quantile(risk, np.linspace(0, 1, _GRID_POINTS)))
    arrays = {"grid": grid, "observed": _curve(grid, at, beta), "smoothed": _curve(risk, at, beta),
              "knots": at, "coefficients": beta}
    for array in arrays.values():
        array.flags.writeable = False
    return FlexibleCalibration(**arrays)


def _check_knots(knots: int) -> int:
    if knots not in HARRELL_KNOT_QUANTILES:
        raise ValueError(f"knots must be one of 3, 4, 5, 6, 7 (Harrell's quantiles); got {knots!r}")
    return knots


def calibration_errors(y: ArrayLike, p: ArrayLike, *, knots: int = 4) -> dict[str, float]:
    """Integrated calibration index and related summaries of ``|p - smoothed observed risk|``.

    ``ici`` is the mean, ``e50`` the median, ``e90`` the 90th percentile and ``emax`` the maximum over the
    rows of the absolute difference between the predicted risk and the flexible calibration curve of
    :func:`flexible_calibration` (a restricted cubic spline rather than the loess of the reference;
    both are accepted smoothers there). Values are risk differences (0 to 1). Parameters and errors as
    :func:`flexible_calibration`.

    References
    ----------
    Austin PC, Steyerberg EW. The Integrated Calibration Index (ICI) and related metrics for
    quantifying the calibration of logistic regression models. Stat Med 2019;38:4051-4065.
    """
    y01, risk = _check_inputs(y, p, both_classes_for="calibration_errors")
    errors = _errors_of(_risk_table(y01, risk)[0], _check_knots(knots))
    return {name: errors[name] for name in ("ici", "e50", "e90", "emax")}


def binned_calibration(y: ArrayLike, p: ArrayLike, *, bins: int = 10, level: float = 0.95) -> pd.DataFrame:
    """Observed event rate per quantile group of predicted risk, with exact (Clopper-Pearson) intervals.

    Groups are bounded by the quantiles of ``p`` (deciles for ``bins=10``), right-closed as
    ``pandas.qcut``; groups left empty by coinciding quantiles (ties) are dropped and the rest numbered
    from 1.

    Returns
    -------
    DataFrame
        One row per group: ``bin``, ``n``, ``mean_predicted``, ``observed`` (event rate),
        ``observed_low``, ``observed_high`` (exact ``level`` interval), ``events``.

    Raises
    ------
    ValueError
        As :func:`brier_score`, or ``bins`` below 1, or ``level`` outside (0, 1).

    References
    ----------
    Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the case of the
    binomial. Biometrika 1934;26:404-413.
    """
    y01, risk = _check_inputs(y, p)
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer; got {bins!r}")
    _check_level(level)
    edges = np.quantile(risk, np.linspace(0, 1, bins + 1))
    group = np.searchsorted(edges[1:-1], risk, side="left")
    n = np.bincount(group, minlength=bins)
    events = np.bincount(group, weights=y01, minlength=bins).astype(np.int64)
    total = np.bincount(group, weights=risk, minlength=bins)
    keep = n > 0
    n, events, total = n[keep], events[keep], total[keep]
    alpha = 1 - level
    low = np.where(events > 0, stats.beta.ppf(alpha / 2, events, n - events + 1), 0.0)
    high = np.where(events < n, stats.beta.ppf(1 - alpha / 2, events + 1, n - events), 1.0)
    return pd.DataFrame({"bin": np.arange(1, len(n) + 1), "n": n, "mean_predicted": total / n,
                         "observed": events / n, "observed_low": low, "observed_high": high, "events": events})


def net_benefit(y: ArrayLike, p: ArrayLike, thresholds: ArrayLike) -> pd.DataFrame:
    """Decision curve: net benefit of treating rows with ``p >= t``, of treating all, and of treating none.

    ``NB(t) = TP/n - FP/n * t / (1 - t)``; treat all: ``prevalence - (1 - prevalence) * t / (1 - t)``;
    treat none: 0. One sort of ``p``, then O(log n) per threshold.

    Parameters
    ----------
    y, p
        As :func:`brier_score`.
    thresholds : array of shape (m,)
        Threshold probabilities in [0, 1).

    Returns
    -------
    DataFrame
        ``threshold``, ``net_benefit_model``, ``net_benefit_treat_all``, ``net_benefit_treat_none``.

    References
    ----------
    Vickers AJ, Elkin EB. Decision curve analysis: a novel method for evaluating prediction models.
    Med Decis Making 2006;26:565-574.
    """
    y01, risk = _check_inputs(y, p)
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    bad = ~np.isfinite(t) | (t < 0) | (t >= 1)
    if t.ndim != 1 or bad.any():
        raise ValueError(f"thresholds must be a 1-D array within [0, 1); {int(bad.sum())} values are not "
                         f"({_positions(bad.ravel())})")
    order = np.argsort(risk, kind="stable")
    sorted_risk = risk[order]
    events_at_or_above = np.concatenate([np.cumsum(y01[order][::-1], dtype=np.int64)[::-1], [0]])
    n, events = len(risk), int(y01.sum())
    first = np.searchsorted(sorted_risk, t, side="left")  # rows first..n-1 have p >= t
    tp = events_at_or_above[first]
    fp = (n - first) - tp
    odds = t / (1 - t)
    prevalence = events / n
    return pd.DataFrame({"threshold": t, "net_benefit_model": tp / n - fp / n * odds,
                         "net_benefit_treat_all": prevalence - (1 - prevalence) * odds,
                         "net_benefit_treat_none": np.zeros_like(t)})


# ---------------------------------------------------------------------------------------- bootstrap
def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be within (0, 1); got {level!r}")


def _replicate_weights(n: int, groups: ArrayLike | None, *, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Frequency weight of each row in each of ``n_boot`` resamples (rows, or whole clusters, with replacement).

    A resample of m units is ``m`` draws of ``rng.integers(0, m)``; their counts (a multinomial draw) are
    the weights, O(n) per replicate; a row's weight is its cluster's count.
    """
    codes, units, blocks = _replicate_blocks(n, groups, n_boot=n_boot, seed=seed, pieces=1)
    return _block_weights(blocks[0], codes, units)


@dataclass(frozen=True)
class _Block:
    """``size`` consecutive bootstrap replicates, drawn from a generator in ``state`` (PCG64)."""

    size: int
    state: dict


def _replicate_blocks(n: int, groups: ArrayLike | None, *, n_boot: int, seed: int,
                      pieces: int) -> tuple[np.ndarray | None, int, list[_Block]]:
    """The replicates of :func:`_replicate_weights` cut into ``pieces`` blocks that can be drawn anywhere.

    One generator draws every replicate in turn; a block carries the generator's state at its first
    replicate, so drawing the blocks apart gives exactly the resamples of one pass (the state is recorded by
    drawing through the earlier blocks once here). Returns the row -> cluster codes (None: rows), the number
    of units resampled and the blocks.
    """
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer; got {n_boot!r}")
    codes, units = (None, n) if groups is None else _check_groups(groups, n)
    sizes = np.diff(np.linspace(0, n_boot, min(max(int(pieces), 1), int(n_boot)) + 1).round().astype(np.int64))
    rng = np.random.default_rng(seed)
    blocks = []
    for i, size in enumerate(sizes):
        blocks.append(_Block(int(size), rng.bit_generator.state))
        if i + 1 < len(sizes):
            for _ in range(size):
                rng.integers(0, units, units)
    return codes, units, blocks


def _block_weights(block: _Block, codes: np.ndarray | None, units: int) -> Iterator[np.ndarray]:
    bits = np.random.PCG64()
    bits.state = block.state
    rng = np.random.Generator(bits)
    for _ in range(block.size):
        counts = np.bincount(rng.integers(0, units, units), minlength=units).astype(np.float64)
        yield counts if codes is None else counts[codes]


def _interval(estimate: float, replicates: list[float], level: float) -> tuple[float, float, float]:
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return float(estimate), np.nan, np.nan
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(estimate), float(low), float(high)


def bootstrap_intervals(y: ArrayLike, p: ArrayLike, metrics: Mapping[str, Callable[[np.ndarray, np.ndarray], float]],
                        *, n_boot: int = 200, seed: int, level: float = 0.95,
                        groups: ArrayLike | None = None) -> dict[str, tuple[float, float, float]]:
    """Estimate and percentile bootstrap interval of each metric; clusters resampled when ``groups`` is given.

    Each replicate resamples rows with replacement, or, with ``groups``, whole clusters (e.g. the levels
    of one procedure, which are correlated); the metric is evaluated on the resample (rows in index
    order, each repeated by its frequency weight). A replicate where a metric is undefined (NaN, or the
    metric raises ValueError, e.g. no event drawn) is left out of that metric's interval. The same
    ``seed`` gives the same resamples, here and in :func:`summarise_performance`. Cost: ``n_boot`` times
    each metric on n rows; :func:`summarise_performance` gets the standard metrics faster from weights.

    Parameters
    ----------
    y, p
        As :func:`brier_score`.
    metrics
        Name -> function of ``(y, p)`` returning a float.
    n_boot
        Number of bootstrap replicates.
    seed
        Seed of ``numpy.random.default_rng``.
    level
        Coverage of the interval.
    groups : array of shape (n,), optional
        Cluster of each row.

    Returns
    -------
    dict
        Name -> ``(estimate, low, high)``; ``low``/``high`` NaN when no replicate was defined.

    References
    ----------
    Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall 1993, ch. 13 (percentile
    interval). Field CA, Welsh AH. Bootstrapping clustered data. J R Stat Soc B 2007;69:369-390.
    """
    y01, risk = _check_inputs(y, p)
    _check_level(level)
    estimates = {name: float(metric(y01, risk)) for name, metric in metrics.items()}
    replicates: dict[str, list[float]] = {name: [] for name in metrics}
    for weights in _replicate_weights(len(risk), groups, n_boot=n_boot, seed=seed):
        rows = np.repeat(np.arange(len(risk)), weights.astype(np.int64))
        for name, metric in metrics.items():
            replicates[name].append(_defined(metric, y01[rows], risk[rows]))
    return {name: _interval(estimates[name], replicates[name], level) for name in metrics}


def _defined(metric: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, p: np.ndarray) -> float:
    try:
        return float(metric(y, p))
    except ValueError:
        return np.nan


_SUMMARY = ("auroc", "brier", "scaled_brier", "log_loss", "calibration_intercept", "calibration_slope",
            "ici", "e50", "e90", "prevalence")


def _summary_of(t: _RiskTable, *, start: _Summary | None = None) -> _Summary:
    """Every summary metric of a table; logistic fits start from ``start`` (the full-data fits for a replicate)."""
    fits = _calibration_fits(t, start=None if start is None else start.calibration_fits)
    errors = (_errors_of(t, 4, start=None if start is None else start.spline)
              if 0 < t.n_events < t.n else dict.fromkeys(("ici", "e50", "e90", "beta"), np.nan))
    values = {"auroc": _auroc_of(t), "brier": _brier_of(t), "scaled_brier": _scaled_brier_of(t),
              "log_loss": _log_loss_of(t), "calibration_intercept": float(fits[0]),
              "calibration_slope": float(fits[2]), "ici": errors["ici"], "e50": errors["e50"], "e90": errors["e90"],
              "prevalence": t.n_events / t.n}
    return _Summary(values=values, calibration_fits=fits, spline=np.atleast_1d(errors["beta"]))


@dataclass(frozen=True)
class _Summary:
    """Summary metrics of one table, with the fitted coefficients (Newton starting values for replicates).

    Starting a replicate's fits from the full-data estimates reaches the same maximum (the likelihoods
    are concave) in fewer steps.
    """

    values: dict[str, float]
    calibration_fits: np.ndarray
    spline: np.ndarray


def summarise_performance(y: ArrayLike, p: ArrayLike, *, n_boot: int, seed: int, groups: ArrayLike | None = None,
                          level: float = 0.95, mapper: Mapper = sequential) -> dict[str, dict[str, float | int | None]]:
    """Every validation metric with its percentile bootstrap interval, JSON-ready and stable.

    The metrics of :func:`auroc`, :func:`brier_score`, :func:`scaled_brier_score`, :func:`log_loss`,
    :func:`calibration_intercept_slope`, :func:`calibration_errors` (4 knots) and the prevalence, each as
    ``{"estimate", "low", "high"}``; ``n`` as ``{"rows", "clusters"}``; ``events`` as ``{"rows",
    "clusters"}`` (clusters with at least one event); ``bootstrap`` as ``{"replicates", "defined",
    "level"}`` (``defined``: fewest replicates in which a metric was defined). Floats are rounded to 6
    decimals; undefined values are None.

    Replicates are the resamples of :func:`bootstrap_intervals` with the same ``seed`` and ``groups``
    (identical intervals), computed as frequency weights on the table of distinct risks: O(n) per
    replicate plus the logistic fits, instead of a sort of every resample. With a ``mapper`` other than
    :func:`models.fanout.sequential` the replicates go out in blocks (:func:`models.fanout.pieces_for`),
    each drawn from the generator's state at its start: the same resamples, so the same intervals.

    Raises
    ------
    ValueError
        As :func:`auroc`, or ``groups`` of another length or with missing values.
    """
    y01, risk = _check_inputs(y, p, both_classes_for="summarise_performance")
    _check_level(level)
    table, codes = _risk_table(y01, risk)
    estimate = _summary_of(table)
    clusters_of, units, blocks = _replicate_blocks(len(risk), groups, n_boot=n_boot, seed=seed,
                                                   pieces=pieces_for(mapper, n_boot))
    replicates: dict[str, list[float]] = {name: [] for name in _SUMMARY}
    for block in mapper(_summary_block, blocks, shared=(table, codes, y01, estimate, clusters_of, units)):
        for name in _SUMMARY:
            replicates[name].extend(block[name])
    out: dict[str, dict[str, float | int | None]] = {}
    for name in _SUMMARY:
        value, low, high = _interval(estimate.values[name], replicates[name], level)
        out[name] = {"estimate": _rounded(value), "low": _rounded(low), "high": _rounded(high)}
    cluster, clusters = (np.arange(len(risk)), len(risk)) if groups is None else _check_groups(groups, len(risk))
    out["n"] = {"rows": len(risk), "clusters": clusters}
    out["events"] = {"rows": int(y01.sum()), "clusters": len(np.unique(cluster[y01 == 1]))}
    out["bootstrap"] = {"replicates": int(n_boot), "level": level,
                        "defined": min(int(np.isfinite(v).sum()) for v in replicates.values())}
    return out


def _summary_block(block: _Block, table: _RiskTable, codes: np.ndarray, y01: np.ndarray, estimate: _Summary,
                   clusters_of: np.ndarray | None, units: int) -> dict[str, list[float]]:
    """Every summary metric of each replicate of one block (a piece of work for a mapper)."""
    values: dict[str, list[float]] = {name: [] for name in _SUMMARY}
    for weights in _block_weights(block, clusters_of, units):
        for name, value in _summary_of(table.reweighted(codes, y01, weights), start=estimate).values.items():
            values[name].append(value)
    return values


def _rounded(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None
