"""Random-effects meta-analysis of performance across held-out sites or years: REML, HKSJ, prediction interval.

Each held-out unit gives an estimate and its standard error on the scale Debray et al. (2017) recommend for
pooling: logit(AUROC), log(O/E), the calibration intercept and slope as they are. Between-unit variance
``tau^2`` is estimated by restricted maximum likelihood, as ``metafor::rma(method="REML")``; the pooled mean
has a Hartung-Knapp-Sidik-Jonkman (HKSJ) interval by default (``test="knha"`` in metafor), and the prediction
interval for the performance in a new unit uses a t distribution with k - 2 degrees of freedom (Higgins,
Thompson & Spiegelhalter 2009; Riley, Higgins & Deeks 2011), metafor's ``predict(..., pi.type="riley")``.
Results are taken back to the natural scale (expit, exp) for reporting. Tests compare every number with
metafor (``tests/models/fixtures/metafor/``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import expit

from models.checks import check_level

Method = Literal["hksj", "z"]
Prediction = Literal["t_k-2", "t_k-1", "z"]

SCALES: dict[str, str] = {"auroc": "logit", "oe_ratio": "log", "calibration_intercept": "identity",
                          "calibration_slope": "identity"}
"""Measure -> the scale its per-unit estimates are pooled on (Debray et al. 2017)."""
METHODS: dict[str, str] = {
    "hksj": "Hartung-Knapp-Sidik-Jonkman: t with k - 1 df and the weighted residual variance "
            "(metafor test='knha', not truncated)",
    "z": "Wald: standard normal, SE sqrt(1 / sum of weights) (metafor test='z')",
}
PREDICTIONS: dict[str, str] = {
    "t_k-2": "mean +- t(k - 2) sqrt(tau^2 + SE^2) (Higgins 2009; Riley 2011; metafor pi.type='riley')",
    "t_k-1": "mean +- t(k - 1) sqrt(tau^2 + SE^2) (metafor's default with test='knha')",
    "z": "mean +- z sqrt(tau^2 + SE^2) (metafor's default with test='z')",
}
DECIMALS = 6
_REML_TOLERANCE = 1e-12
_REML_ITERATIONS = 1000
_HALVINGS = 60


@dataclass(frozen=True)
class RandomEffects:
    """A random-effects meta-analysis on the pooling scale (see :func:`random_effects`).

    ``prediction_low``/``prediction_high`` are NaN when the prediction interval is not defined (t with k - 2
    df and k = 2).
    """

    k: int
    estimate: float
    se: float
    low: float
    high: float
    prediction_low: float
    prediction_high: float
    tau2: float
    q: float
    q_p: float
    i2: float
    level: float
    method: Method
    prediction: Prediction


def random_effects(estimates: ArrayLike, standard_errors: ArrayLike, *, level: float = 0.95, method: Method = "hksj",
                   prediction: Prediction = "t_k-2") -> RandomEffects:
    """Random-effects meta-analysis: REML ``tau^2``, pooled mean with CI, and prediction interval.

    Model ``y_i ~ N(mu, s_i^2 + tau^2)``. ``tau^2`` maximises the restricted likelihood over ``tau^2 >= 0``
    (Fisher scoring from the DerSimonian-Laird estimate, step halving, stopping when the step is below
    1e-12; a maximum at the boundary gives exactly 0). ``mu`` is the inverse-variance weighted mean with
    weights ``1 / (s_i^2 + tau^2)``.

    CI of ``mu``: ``method="hksj"`` (default) uses ``SE^2 = sum w_i (y_i - mu)^2 / ((k - 1) sum w_i)`` and
    t with k - 1 df (IntHout et al. 2014 recommend it over the Wald interval, which is too narrow with few
    units); as in metafor it is not truncated, so with ``tau^2 = 0`` and little spread it can be narrower
    than the Wald interval. ``method="z"``: ``SE^2 = 1 / sum w_i`` and the normal quantile.

    Prediction interval for the true value in a new unit, ``mu +- c sqrt(tau^2 + SE^2)``: ``c`` from t with
    k - 2 df (``"t_k-2"``, default, Riley et al. 2011; undefined, NaN, for k = 2, where metafor would use 1
    df), t with k - 1 df (``"t_k-1"``, metafor's default under knha) or the normal (``"z"``).

    ``q`` is Cochran's Q (fixed-effect weights) with ``q_p`` its chi-square p-value on k - 1 df; ``i2`` is
    ``tau^2 / (tau^2 + s^2)`` in percent, ``s^2`` the typical within-unit variance (Higgins & Thompson 2002),
    as metafor.

    Parameters
    ----------
    estimates, standard_errors : arrays of shape (k,)
        Per-unit estimates on the pooling scale and their standard errors (> 0), k >= 2.
    level
        Coverage of both intervals, in (0, 1).
    method, prediction
        As above.

    Raises
    ------
    ValueError
        Fewer than 2 units, lengths differ, a value is not finite, a standard error is not positive, or an
        option is not one of those listed.

    References
    ----------
    Viechtbauer W. Bias and efficiency of meta-analytic variance estimators in the random-effects model.
    J Educ Behav Stat 2005;30:261-293 (REML by Fisher scoring).
    IntHout J, Ioannidis JP, Borm GF. The Hartung-Knapp-Sidik-Jonkman method for random effects
    meta-analysis is straightforward and considerably outperforms the standard DerSimonian-Laird method.
    BMC Med Res Methodol 2014;14:25.
    Higgins JPT, Thompson SG, Spiegelhalter DJ. A re-evaluation of random-effects meta-analysis. J R Stat
    Soc A 2009;172:137-159. Riley RD, Higgins JPT, Deeks JJ. Interpretation of random effects
    meta-analyses. BMJ 2011;342:d549.
    Debray TPA, Damen JAAG, Snell KIE, et al. A guide to systematic review and meta-analysis of prediction
    model performance. BMJ 2017;356:i6460.
    """
    y, v = _check_units(estimates, standard_errors)
    level = check_level(level)
    check_options(method=method, prediction=prediction)
    k = len(y)
    tau2 = _reml_tau2(y, v)
    w = 1 / (v + tau2)
    mu = float(w @ y / w.sum())
    if method == "hksj":
        se = float(np.sqrt(w @ (y - mu) ** 2 / ((k - 1) * w.sum())))
        crit = float(stats.t.ppf(0.5 + level / 2, k - 1))
    else:
        se, crit = float(np.sqrt(1 / w.sum())), float(stats.norm.ppf(0.5 + level / 2))
    df = {"t_k-2": k - 2, "t_k-1": k - 1, "z": np.inf}[prediction]
    half = (float(stats.t.ppf(0.5 + level / 2, df)) if df > 0 else np.nan) * np.sqrt(tau2 + se ** 2)
    q, q_p, i2 = _heterogeneity(y, v, tau2)
    return RandomEffects(k=k, estimate=mu, se=se, low=mu - crit * se, high=mu + crit * se,
                         prediction_low=mu - half, prediction_high=mu + half, tau2=tau2, q=q, q_p=q_p, i2=i2,
                         level=level, method=method, prediction=prediction)


def check_options(*, method: str, prediction: str) -> None:
    """ValueError unless ``method`` is one of :data:`METHODS` and ``prediction`` one of :data:`PREDICTIONS`."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}")


def pool_measure(units: Sequence[str], estimates: ArrayLike, standard_errors: ArrayLike, *, measure: str,
                 level: float = 0.95, method: Method = "hksj",
                 prediction: Prediction = "t_k-2") -> dict[str, object]:
    """Meta-analysis of one measure across units, back on its natural scale, JSON-ready.

    Units whose estimate or standard error is missing (None or NaN: withheld, or not estimable) are left
    out and named in ``left_out``. With 2 or more units left, :func:`random_effects` on the measure's
    scale (:data:`SCALES`); ``estimate``, ``low``, ``high``, ``prediction_low``, ``prediction_high`` are taken
    back (expit for AUROC, exp for O/E), and ``theta``/``se``/``tau2``/``tau`` stay on the pooling scale.
    With one unit nothing is pooled: its own estimate and CI on the natural scale are given with
    ``pooled`` False and a ``note``; with none, every value is None. Floats rounded to 6 decimals (``q_p`` to 6
    significant digits), NaN as None.

    Parameters
    ----------
    units
        Label of each unit (site pseudonym or year), shape (k,).
    estimates, standard_errors
        Per-unit estimates on the pooling scale and their standard errors; None or NaN where not available.
    measure
        One of :data:`SCALES`.
    level, method, prediction
        As :func:`random_effects`.

    Returns
    -------
    dict
        ``measure``, ``scale``, ``k``, ``units``, ``left_out``, ``pooled``, ``estimate``, ``low``, ``high``,
        ``prediction_low``, ``prediction_high``, ``theta``, ``se``, ``tau2``, ``tau``, ``i2``, ``q``,
        ``q_p``, ``level``, ``ci_method``, ``prediction_method``, ``note``.

    Raises
    ------
    ValueError
        ``measure`` unknown, lengths differ, a present standard error is not positive, or an option or
        ``level`` as :func:`random_effects` rejects.
    """
    if measure not in SCALES:
        raise ValueError(f"measure must be one of {', '.join(SCALES)}; got {measure!r}")
    labels = [str(u) for u in units]
    theta, se = _optional_numbers(estimates, "estimates"), _optional_numbers(standard_errors, "standard_errors")
    if not len(labels) == len(theta) == len(se):
        raise ValueError(f"units, estimates and standard_errors must have the same length; "
                         f"got {len(labels)}, {len(theta)} and {len(se)}")
    level = check_level(level)
    check_options(method=method, prediction=prediction)
    present = np.isfinite(theta) & np.isfinite(se)
    scale = SCALES[measure]
    out: dict[str, object] = {
        "measure": measure, "scale": scale, "k": int(present.sum()),
        "units": [u for u, keep in zip(labels, present) if keep],
        "left_out": [u for u, keep in zip(labels, present) if not keep], "pooled": False, "level": level,
        "ci_method": METHODS[method], "prediction_method": PREDICTIONS[prediction], "note": None,
        **dict.fromkeys(("estimate", "low", "high", "prediction_low", "prediction_high", "theta", "se", "tau2",
                         "tau", "i2", "q", "q_p"))}
    if present.sum() >= 2:
        fit = random_effects(theta[present], se[present], level=level, method=method, prediction=prediction)
        natural = {name: _back(getattr(fit, name), scale) for name in ("estimate", "low", "high", "prediction_low",
                                                                         "prediction_high")}
        out.update(natural, pooled=True, theta=fit.estimate, se=fit.se, tau2=fit.tau2, tau=np.sqrt(fit.tau2),
                   i2=fit.i2, q=fit.q, q_p=fit.q_p)
        if fit.k == 2 and prediction == "t_k-2":
            out["note"] = "two units: no prediction interval (t with k - 2 = 0 degrees of freedom)"
    elif present.sum() == 1:
        one = int(np.flatnonzero(present)[0])
        z = float(stats.norm.ppf(0.5 + level / 2))
        out.update(estimate=_back(theta[one], scale), low=_back(theta[one] - z * se[one], scale),
                   high=_back(theta[one] + z * se[one], scale), theta=theta[one], se=se[one],
                   note=f"one unit ({labels[one]}): nothing to pool; its own estimate and Wald CI, no heterogeneity "
                        f"or prediction interval")
    else:
        out["note"] = "no unit with an estimate: nothing to pool"
    return {key: _rounded(value, significant=key == "q_p") for key, value in out.items()}


# ----------------------------------------------------------------------------------------- private steps
def _check_units(estimates: ArrayLike, standard_errors: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Estimates and within-unit variances after checking the rules of :func:`random_effects`."""
    y, se = (np.asarray(a, dtype=np.float64) for a in (estimates, standard_errors))
    if y.ndim != 1 or se.ndim != 1 or len(y) != len(se):
        raise ValueError(f"estimates and standard_errors must be 1-D of the same length; got shapes {y.shape} "
                         f"and {se.shape}")
    if len(y) < 2:
        raise ValueError(f"a random-effects meta-analysis needs at least 2 units; got {len(y)}")
    for name, arr in (("estimates", y), ("standard_errors", se)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite; {int((~np.isfinite(arr)).sum())} of {len(arr)} are not")
    if (se <= 0).any():
        raise ValueError(f"standard_errors must be positive; {int((se <= 0).sum())} of {len(se)} are not")
    return y, se ** 2


def _optional_numbers(values: ArrayLike, name: str) -> np.ndarray:
    """A 1-D float array with None as NaN; text or other objects raise."""
    items = list(np.atleast_1d(np.asarray(values, dtype=object)))
    if any(v is not None and not isinstance(v, numbers.Real) for v in items):
        raise ValueError(f"{name} must hold numbers or None; got {sorted({type(v).__name__ for v in items})}")
    out = np.array([np.nan if v is None else float(v) for v in items], dtype=np.float64)
    if name == "standard_errors" and (out[np.isfinite(out)] <= 0).any():
        raise ValueError("standard_errors must be positive where given; "
                         f"{int((out[np.isfinite(out)] <= 0).sum())} are not")
    return out


def _restricted_loglik(tau2: float, y: np.ndarray, v: np.ndarray) -> float:
    """REML log-likelihood of ``tau^2`` (up to a constant) for the intercept-only model."""
    w = 1 / (v + tau2)
    mu = w @ y / w.sum()
    return float(-0.5 * (np.log(v + tau2).sum() + np.log(w.sum()) + w @ (y - mu) ** 2))


def _reml_tau2(y: np.ndarray, v: np.ndarray) -> float:
    """REML ``tau^2`` by Fisher scoring on ``tau^2 >= 0`` (Viechtbauer 2005, eq. 10-11), with step halving."""
    w0 = 1 / v
    mu0 = w0 @ y / w0.sum()
    q = w0 @ (y - mu0) ** 2
    tau2 = max(0.0, (q - (len(y) - 1)) / (w0.sum() - (w0 ** 2).sum() / w0.sum()))  # DerSimonian-Laird start
    loglik = _restricted_loglik(tau2, y, v)
    for _ in range(_REML_ITERATIONS):
        w = 1 / (v + tau2)
        p_diag = w - w ** 2 / w.sum()  # diagonal of P = W - W 1 (1' W 1)^-1 1' W
        residual = w * (y - w @ y / w.sum())  # P y
        trace_pp = (w ** 2).sum() - 2 * (w ** 3).sum() / w.sum() + ((w ** 2).sum() / w.sum()) ** 2
        step = (residual @ residual - p_diag.sum()) / trace_pp
        if tau2 == 0 and step <= 0:
            return 0.0  # the restricted likelihood falls from the boundary: its maximum is at 0
        for _ in range(_HALVINGS):
            new = max(0.0, tau2 + step)
            new_loglik = _restricted_loglik(new, y, v)
            if new_loglik >= loglik - 1e-14 * abs(loglik):
                break
            step /= 2
        moved = abs(new - tau2)
        tau2, loglik = new, new_loglik
        if moved <= _REML_TOLERANCE * (1 + tau2):
            return float(tau2)
    raise ArithmeticError(f"REML estimate of tau^2 did not converge in {_REML_ITERATIONS} Fisher scoring steps")


def _heterogeneity(y: np.ndarray, v: np.ndarray, tau2: float) -> tuple[float, float, float]:
    """Cochran's Q, its p-value on k - 1 df, and I^2 (%) with metafor's typical within-unit variance."""
    w = 1 / v
    q = float(w @ (y - w @ y / w.sum()) ** 2)
    typical = (len(y) - 1) * w.sum() / (w.sum() ** 2 - (w ** 2).sum())
    return q, float(stats.chi2.sf(q, len(y) - 1)), float(100 * tau2 / (tau2 + typical))


def _back(value: float, scale: str) -> float:
    """A pooling-scale value on the natural scale of its measure."""
    if not np.isfinite(value):
        return np.nan
    return float(expit(value)) if scale == "logit" else float(np.exp(value)) if scale == "log" else float(value)


def _rounded(value: object, *, significant: bool = False) -> object:
    """Floats to 6 decimals (6 significant digits when ``significant``: p-values), NaN as None."""
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return None
        return float(f"{value:.{DECIMALS}g}") if significant else round(float(value), DECIMALS)
    if isinstance(value, np.integer):
        return int(value)
    return value
