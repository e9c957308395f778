"""O/E per unit and procedure year, and its log-linear trend per unit (Poisson regression, offset log E)."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from models.intervals import poisson_ratio_interval
from records import schema as s
from reports import qi
from reports.qi import EXPECTED, N_CASES, OBSERVED, OE_HIGH, OE_LOW, OE_RATIO, UNIT

YEARS, FIRST_YEAR, LAST_YEAR = "years", "first_year", "last_year"
OE_TREND, OE_TREND_LOW, OE_TREND_HIGH = "oe_per_year", "oe_per_year_low", "oe_per_year_high"
P_VALUE, SCALE, REASON = "p_value", "scale", "reason"
COUNT_COLUMNS: tuple[str, ...] = (N_CASES, OBSERVED)
"""Columns holding counts of cases. Nothing here is suppressed: the caller withholds small counts (and the
statistics computed from them) before publishing. Unit, count and O/E column names are those of reports.qi."""
MIN_YEARS = 3
_BOUND = 50.0  # |log O/E ratio per year| searched for the fit; e**50 is far beyond any real trend
_SHOWN = 5


def oe_by_year(frame: pd.DataFrame, *, unit: str, y: str = "y", p: str = "p", year: str = s.PROCEDURE_YEAR,
               level: float = 0.95) -> pd.DataFrame:
    """Per unit and procedure year: cases, observed and expected events, O/E and its exact Poisson interval.

    Parameters
    ----------
    frame
        One row per eligible case of one outcome.
    unit, y, p, year
        Columns of ``frame``: the unit label (none missing), the 0/1 outcome (booleans accepted), the
        expected risk (strictly inside (0, 1)) and the procedure year (whole, none missing).
    level
        Coverage of the two-sided interval, strictly between 0 and 1.

    Returns
    -------
    DataFrame
        One row per unit and year with cases, sorted by unit then year: :data:`~reports.qi.UNIT`, ``year``
        (int), ``n`` and ``observed`` (int, counts of cases), ``expected`` (sum of p), ``oe_ratio`` (O/E),
        ``oe_low`` and ``oe_high`` (Garwood exact Poisson limits of O divided by E).

    Raises
    ------
    ValueError
        A missing column, an empty frame, a missing unit or year, a fractional year, an outcome other
        than 0/1, a risk outside (0, 1), or ``level`` outside (0, 1).

    References
    ----------
    Garwood F. Fiducial limits for the Poisson distribution. Biometrika 1936;28:437-442.
    """
    level = qi.check_level(level)
    table = _yearly(frame, unit=unit, y=y, p=p, year=year)
    o, e = table[OBSERVED].to_numpy(), table[EXPECTED].to_numpy()
    low, high = poisson_ratio_interval(o, e, level=level)
    return table.assign(**{OE_RATIO: o / e, OE_LOW: low, OE_HIGH: high})


def oe_slopes(frame: pd.DataFrame, *, unit: str, y: str = "y", p: str = "p", year: str = s.PROCEDURE_YEAR,
              level: float = 0.95, interval: Literal["profile", "wald"] = "profile",
              dispersion: Literal["pooled", "none"] = "pooled", min_years: int = MIN_YEARS) -> pd.DataFrame:
    """Per unit: the change in O/E per year, from a Poisson regression of yearly O on year with offset log E.

    For each unit, ``O_t ~ Poisson(E_t exp(a + b (t - mean t)))`` over its years with cases, where O_t and
    E_t are the year's observed events and summed expected risks; ``exp(b)`` is the factor by which O/E
    changes per year (1 = no trend). The fit is Newton's method on the likelihood profiled over ``a``
    (a closed form), vectorised over units: it equals the maximum-likelihood fit of statsmodels' GLM with
    a Poisson family and that offset.

    Overdispersion (``dispersion="pooled"``): year-to-year variation beyond Poisson widens the intervals
    by ``sqrt(phi)``, with the quasi-Poisson scale ``phi`` = Pearson chi-squared summed over the estimable
    units divided by their summed residual degrees of freedom (years - 2), applied only when above 1. It is
    pooled because a unit has a few years, and a per-unit scale on 1-8 degrees of freedom is too noisy to
    use (it would make most intervals wide at random). It assumes units share one dispersion, and makes a
    unit's interval depend slightly on the others. ``"none"``: phi = 1. A yearly O is a sum of Bernoulli
    cases, whose variance sum p(1 - p) is below the Poisson sum p; phi is not allowed below 1, so with
    risks near 0.1 the 95% intervals cover about 96-97% (nominal at low risks; see the tests).

    Interval and p-value: ``"profile"`` (default) - profile-likelihood limits (``2 (l(b_hat) - l(b)) / phi``
    equal to the chi-squared(1) quantile) and the likelihood-ratio test of b = 0, better than Wald with
    few events; ``"wald"`` - ``b +/- z se sqrt(phi)`` and the Wald z-test. Either way the interval excludes
    1 exactly when p < 1 - level.

    Parameters
    ----------
    frame, unit, y, p, year, level
        As in :func:`oe_by_year`.
    interval
        ``"profile"`` or ``"wald"``.
    dispersion
        ``"pooled"`` or ``"none"``.
    min_years
        Fewest years with cases for a trend (at least 2); default 3, leaving a degree of freedom for the scale.

    Returns
    -------
    DataFrame
        One row per unit, sorted: :data:`~reports.qi.UNIT`, ``years`` (years with cases), ``first_year``,
        ``last_year``, ``n`` and ``observed`` (counts of cases), ``expected``, ``oe_ratio`` (over all years),
        ``oe_per_year`` (exp b) with ``oe_per_year_low`` and ``oe_per_year_high``, ``p_value``, ``scale``
        (phi used) and ``reason`` - empty when estimated; otherwise why not (fewer than ``min_years`` years
        with cases, no events, or every event in the first or last year, where the maximum-likelihood
        slope is infinite), with the statistics NaN.

    Raises
    ------
    ValueError
        As :func:`oe_by_year`, or ``interval``, ``dispersion`` or ``min_years`` not one of the allowed values.

    References
    ----------
    McCullagh P, Nelder JA. Generalized Linear Models, 2nd ed. Chapman & Hall 1989 (Poisson log-linear
    model with offset; quasi-likelihood scale from Pearson chi-squared). Venzon DJ, Moolgavkar SH. Appl
    Stat 1988;37:87-94 (profile-likelihood intervals).
    """
    level = qi.check_level(level)
    _check_choice(interval, "interval", ("profile", "wald"))
    _check_choice(dispersion, "dispersion", ("pooled", "none"))
    if not isinstance(min_years, numbers.Integral) or isinstance(min_years, bool) or min_years < 2:
        raise ValueError(f"min_years must be a whole number of at least 2; got {min_years!r}")
    yearly = _yearly(frame, unit=unit, y=y, p=p, year=year)
    summary = _summarise(yearly, year=year)
    reasons = _reasons(yearly, summary, year=year, min_years=int(min_years))
    fitted = summary[UNIT][reasons == ""]
    fit = _Fit(yearly[yearly[UNIT].isin(fitted)], year=year)
    b_hat = fit.mle()
    phi = fit.pooled_scale(b_hat) if dispersion == "pooled" else 1.0
    low, high, p_value = (fit.profile if interval == "profile" else fit.wald)(b_hat, phi=phi, level=level)
    estimates = {OE_TREND: np.exp(b_hat), OE_TREND_LOW: np.exp(low), OE_TREND_HIGH: np.exp(high), P_VALUE: p_value,
                 SCALE: np.full(len(b_hat), phi)}
    out = summary.assign(**{c: np.nan for c in estimates})
    out.loc[(reasons == "").to_numpy(), list(estimates)] = np.column_stack(list(estimates.values()))
    out[REASON] = reasons.to_numpy()
    return out


# --------------------------------------------------------------------------------------------- tables
def _yearly(frame: pd.DataFrame, *, unit: str, y: str, p: str, year: str) -> pd.DataFrame:
    """Cases, observed and expected per unit and year with cases, sorted by unit then year."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in (unit, y, p, year) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame must have the columns {unit}, {y}, {p}, {year}; missing: {', '.join(missing)}")
    if len(frame) == 0:
        raise ValueError("frame must have at least one case; got 0 rows")
    units, labels = pd.factorize(frame[unit], sort=True)
    _check_rows(units < 0, f"{unit} must name a unit on every row")
    outcome, risk = _numeric(frame[y], y), _numeric(frame[p], p)
    _check_rows((outcome != 0) & (outcome != 1), f"{y} must be 0 or 1 (booleans accepted), not missing")
    _check_rows(~((risk > 0) & (risk < 1)), f"{p} must be an expected risk strictly between 0 and 1, not missing")
    years = _numeric(frame[year], year)
    _check_rows(np.isnan(years) | (years != np.floor(years)), f"{year} must be a whole year, not missing")
    year_codes, year_values = pd.factorize(years.astype(np.int64), sort=True)
    cell = units.astype(np.int64) * len(year_values) + year_codes
    size = len(labels) * len(year_values)
    n = np.bincount(cell, minlength=size)
    present = np.flatnonzero(n)
    return pd.DataFrame({
        UNIT: labels[present // len(year_values)],
        year: np.asarray(year_values)[present % len(year_values)].astype(np.int64),
        N_CASES: n[present].astype(np.int64),
        OBSERVED: np.bincount(cell, weights=outcome, minlength=size)[present].round().astype(np.int64),
        EXPECTED: np.bincount(cell, weights=risk, minlength=size)[present],
    })


def _summarise(yearly: pd.DataFrame, *, year: str) -> pd.DataFrame:
    grouped = yearly.groupby(UNIT, sort=True, observed=True)
    out = grouped.agg(**{YEARS: (year, "size"), FIRST_YEAR: (year, "min"), LAST_YEAR: (year, "max"),
                         N_CASES: (N_CASES, "sum"), OBSERVED: (OBSERVED, "sum"), EXPECTED: (EXPECTED, "sum")})
    out = out.reset_index()
    out[OE_RATIO] = out[OBSERVED] / out[EXPECTED]
    return out


def _reasons(yearly: pd.DataFrame, summary: pd.DataFrame, *, year: str, min_years: int) -> pd.Series:
    """Why each unit's trend cannot be estimated ("" when it can); ``summary`` is in the unit order of ``yearly``."""
    codes, _ = pd.factorize(yearly[UNIT], sort=True)
    t, o, events = yearly[year].to_numpy(), yearly[OBSERVED].to_numpy(), summary[OBSERVED].to_numpy()
    at_first = np.bincount(codes, weights=o * (t == summary[FIRST_YEAR].to_numpy()[codes]), minlength=len(summary))
    at_last = np.bincount(codes, weights=o * (t == summary[LAST_YEAR].to_numpy()[codes]), minlength=len(summary))
    reason = np.select([summary[YEARS].to_numpy() < min_years, events == 0, (at_first == events) | (at_last == events)],
                       [f"fewer than {min_years} years with cases", "no events",
                        "every event in the first or last year: the trend is infinite"], default="")
    return pd.Series(reason, index=summary.index)


# --------------------------------------------------------------------------------------------- fit
class _Fit:
    """Yearly O and E of the estimable units, sorted by unit, with the profile likelihood in the slope b.

    Profiling out the intercept gives ``a(b) = log(O / sum E e^{bx})`` and, up to a constant,
    ``l(b) = b sum(O x) - O log(sum E e^{bx})``; its score is ``sum(O x) - O m(b)`` and its derivative
    ``-O v(b)``, with m and v the mean and variance of x weighted by ``E e^{bx}``.
    """

    def __init__(self, yearly: pd.DataFrame, *, year: str) -> None:
        codes, _ = pd.factorize(yearly[UNIT], sort=True)
        self.units = codes.astype(np.int64)
        self.k = int(codes.max()) + 1 if len(codes) else 0
        self.starts = np.flatnonzero(np.r_[True, np.diff(codes) != 0]) if len(codes) else np.zeros(0, np.int64)
        t = yearly[year].to_numpy(np.float64)
        self.x = t - self._sum(t)[self.units] / np.bincount(self.units, minlength=self.k)[self.units]
        self.o, self.e = yearly[OBSERVED].to_numpy(np.float64), yearly[EXPECTED].to_numpy(np.float64)
        self.o_total, self.ox = self._sum(self.o), self._sum(self.o * self.x)
        self.years = np.bincount(self.units, minlength=self.k)

    def _sum(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.units, weights=values, minlength=self.k)

    def _moments(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Weights E e^{bx - c} per row, and per unit log(sum E e^{bx}), m(b) and v(b); c avoids overflow."""
        bx = b[self.units] * self.x
        shift = np.maximum.reduceat(bx, self.starts) if self.k else np.zeros(0)
        w = self.e * np.exp(bx - shift[self.units])
        s0, s1, s2 = self._sum(w), self._sum(w * self.x), self._sum(w * self.x ** 2)
        m = s1 / s0
        return w / s0[self.units], shift + np.log(s0), m, np.maximum(s2 / s0 - m ** 2, 0.0)

    def loglik(self, b: np.ndarray) -> np.ndarray:
        return b * self.ox - self.o_total * self._moments(b)[1]

    def mle(self) -> np.ndarray:
        def score(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            _, _, m, v = self._moments(b)
            return self.ox - self.o_total * m, -self.o_total * v
        return _root(score, np.full(self.k, -_BOUND), np.full(self.k, _BOUND))

    def pooled_scale(self, b: np.ndarray) -> float:
        """max(1, sum of Pearson chi-squared / sum of (years - 2)) over the units with years > 2."""
        share = self._moments(b)[0]
        mu = self.o_total[self.units] * share
        chi2 = self._sum((self.o - mu) ** 2 / mu)
        df = self.years - 2
        used = df > 0
        return max(1.0, float(chi2[used].sum() / df[used].sum())) if used.any() else 1.0

    def _se(self, b: np.ndarray) -> np.ndarray:
        return 1.0 / np.sqrt(self.o_total * self._moments(b)[3])

    def wald(self, b: np.ndarray, *, phi: float, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        se = self._se(b) * np.sqrt(phi)
        z = stats.norm.ppf(0.5 + level / 2)
        return b - z * se, b + z * se, 2 * stats.norm.sf(np.abs(b) / se)

    def profile(self, b: np.ndarray, *, phi: float, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        top, q = self.loglik(b), stats.chi2.ppf(level, 1)

        def excess(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # 2 (l(b_hat) - l(c)) / phi - q, and its slope
            _, log_s0, m, _ = self._moments(c)
            return 2 * (top - (c * self.ox - self.o_total * log_s0)) / phi - q, -2 * (self.ox - self.o_total * m) / phi

        step = np.maximum(self._se(b) * np.sqrt(phi * q), 1e-3)
        limits = []
        for sign in (-1.0, 1.0):
            far = b + sign * step
            for _ in range(60):  # l(c) falls without bound on both sides when the MLE is finite
                short = excess(far)[0] < 0
                if not short.any():
                    break
                far = np.where(short, b + 2 * (far - b), far)
            limits.append(_root(excess, b, far))
        return limits[0], limits[1], stats.chi2.sf(np.maximum(2 * (top - self.loglik(np.zeros(self.k))) / phi, 0), 1)


def _root(fun: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], a: np.ndarray, b: np.ndarray, *,
          iterations: int = 200, tol: float = 1e-12) -> np.ndarray:
    """Elementwise root of a monotone ``fun`` (value and derivative) bracketed by ``a`` and ``b``: Newton
    steps, bisection whenever a step would leave the bracket."""
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    f_lo = fun(lo)[0]
    x = (lo + hi) / 2
    for _ in range(iterations):
        f, df = fun(x)
        below = np.sign(f) == np.sign(f_lo)
        lo, f_lo, hi = np.where(below, x, lo), np.where(below, f, f_lo), np.where(below, hi, x)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = x - f / df
        inside = np.isfinite(newton) & (newton > lo) & (newton < hi)
        step = np.where(inside, newton, (lo + hi) / 2)
        done = np.abs(step - x) <= tol * (1 + np.abs(x))
        x = step
        if done.all():
            break
    return x


# --------------------------------------------------------------------------------------------- checks
def _numeric(values: pd.Series, name: str) -> np.ndarray:
    if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
        raise ValueError(f"{name} must be numeric (booleans accepted); got dtype {values.dtype}")
    return values.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_choice(value: str, name: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_rows(bad: np.ndarray, rule: str) -> None:
    if bad.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(bad)[:_SHOWN]) + (", ..." if bad.sum() > _SHOWN else "")
        raise ValueError(f"{rule}; {int(bad.sum())} rows break it (rows {rows})")
