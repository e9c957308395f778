"""Validation metrics of predicted risks for a binary outcome: discrimination, calibration, net benefit.

Every metric here depends on the data only through the table of distinct predicted risks with, for
each, its number of rows and of events (:class:`models.risk_table.RiskTable`): each public metric checks its
inputs once (:mod:`models.checks`), builds that table once (one sort, O(n log n)) and evaluates on it.
Logistic fits are the Newton-Raphson fits of :mod:`models.logistic` (no statsmodels at run time); tests check
them against statsmodels GLM. The bootstrap intervals of these metrics (:func:`bootstrap_intervals`,
:func:`summarise_performance`) live in :mod:`models.bootstrap` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from models.binomial import exact_binomial_interval
from models.bootstrap import bootstrap_intervals, summarise_performance
from models.checks import check_integer, check_level, check_outcome_and_risk, positions
from models.logistic import (
    HARRELL_KNOT_QUANTILES,
    calibration_errors_of,
    check_knots,
    flexible_fit,
    recalibration_fits,
    spline_curve,
)
from models.risk_table import EPS, auroc_of, brier_of, log_loss_of, risk_table, scaled_brier_of

__all__ = [
    "EPS", "HARRELL_KNOT_QUANTILES", "FlexibleCalibration", "auroc", "binned_calibration", "bootstrap_intervals",
    "brier_score", "calibration_errors", "calibration_intercept_slope", "flexible_calibration", "log_loss",
    "net_benefit", "scaled_brier_score", "summarise_performance",
]
_GRID_POINTS = 100


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
    return auroc_of(risk_table(*check_outcome_and_risk(y, p, both_classes_for="auroc"))[0])


def brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Brier score, the mean of ``(p - y)**2`` (0 is perfect).

    Parameters and errors as :func:`auroc` (a single class is allowed).

    References
    ----------
    Brier GW. Verification of forecasts expressed in terms of probability. Mon Weather Rev 1950;78:1-3.
    """
    return brier_of(risk_table(*check_outcome_and_risk(y, p))[0])


def scaled_brier_score(y: ArrayLike, p: ArrayLike) -> float:
    """Scaled Brier score ``1 - Brier / (prevalence * (1 - prevalence))``, prevalence the observed event rate.

    1 is perfect; 0 is no better than predicting the prevalence for everyone. Parameters and errors as
    :func:`auroc`.

    References
    ----------
    Steyerberg EW, Vickers AJ, Cook NR, et al. Assessing the performance of prediction models: a
    framework for traditional and novel measures. Epidemiology 2010;21:128-138.
    """
    return scaled_brier_of(risk_table(*check_outcome_and_risk(y, p, both_classes_for="scaled_brier_score"))[0])


def log_loss(y: ArrayLike, p: ArrayLike) -> float:
    """Mean negative log-likelihood (natural log, nats per row), ``p`` clipped to ``[1e-15, 1 - 1e-15]``.

    Equal to ``sklearn.metrics.log_loss``. Parameters and errors as :func:`auroc` (a single class is allowed).
    """
    return log_loss_of(risk_table(*check_outcome_and_risk(y, p))[0])


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
    fits = recalibration_fits(risk_table(*check_outcome_and_risk(y, p, both_classes_for="calibration"))[0])
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
        return spline_curve(np.asarray(p, dtype=np.float64), self.knots, self.coefficients)


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
    y01, risk = check_outcome_and_risk(y, p, both_classes_for="flexible_calibration")
    at, beta, _ = flexible_fit(risk_table(y01, risk)[0], check_knots(knots))
    grid = np.unique(np.quantile(risk, np.linspace(0, 1, _GRID_POINTS)))
    arrays = {"grid": grid, "observed": spline_curve(grid, at, beta), "smoothed": spline_curve(risk, at, beta),
              "knots": at, "coefficients": beta}
    for array in arrays.values():
        array.flags.writeable = False
    return FlexibleCalibration(**arrays)


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
    y01, risk = check_outcome_and_risk(y, p, both_classes_for="calibration_errors")
    errors = calibration_errors_of(risk_table(y01, risk)[0], check_knots(knots))
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
    y01, risk = check_outcome_and_risk(y, p)
    check_integer(bins, "bins", minimum=1)
    check_level(level)
    edges = np.quantile(risk, np.linspace(0, 1, bins + 1))
    group = np.searchsorted(edges[1:-1], risk, side="left")
    n = np.bincount(group, minlength=bins)
    events = np.bincount(group, weights=y01, minlength=bins).astype(np.int64)
    total = np.bincount(group, weights=risk, minlength=bins)
    keep = n > 0
    n, events, total = n[keep], events[keep], total[keep]
    low, high = exact_binomial_interval(events, n, level=level)
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
    y01, risk = check_outcome_and_risk(y, p)
    t = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    bad = ~np.isfinite(t) | (t < 0) | (t >= 1)
    if t.ndim != 1 or bad.any():
        raise ValueError(f"thresholds must be a 1-D array within [0, 1); {int(bad.sum())} values are not "
                         f"({positions(bad.ravel())})")
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
