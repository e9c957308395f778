"""Risk-adjusted QI statistics: O/E tables, exact funnel limits with overdispersion, FDR q-values, VLAD, CUSUM.

Pure numpy/pandas/scipy; no plotting, no I/O, no suppression of small cells (another module does that).
The O/E table has one row per unit (site or operator pseudonym) under the column :data:`UNIT`; every
other column name is a constant below so that plots and reports never spell them out.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from statsmodels.stats.multitest import multipletests

from models.checks import check_level
from models.intervals import poisson_ratio_interval
from reports.null_counts import CountDistribution, null_count_distribution

UNIT, N_CASES, OBSERVED, EXPECTED, VARIANCE = "unit", "n", "observed", "expected", "variance"
OE_RATIO, OE_LOW, OE_HIGH = "oe_ratio", "oe_low", "oe_high"
RISK_ADJUSTED_RATE, Z_SCORE = "risk_adjusted_rate", "z"
PRECISION, Z_ADJUSTED = "precision", "z_adjusted"
P_HIGH, P_LOW, ALERT, ALARM, NULL = "p_high", "p_low", "alert", "alarm", "null"
FLAG_HIGH, FLAG_LOW, FLAG_NONE = "high", "low", ""
OVERALL_RATE = "overall_rate"  # key in ``DataFrame.attrs`` of the O/E table
WINSOR_QUANTILES = (0.10, 0.90)  # winsorising percentiles (Spiegelhalter 2005)
OVERDISPERSION_ALPHA = 0.05
MIN_UNITS_FOR_OVERDISPERSION = 5


# --------------------------------------------------------------------------------------------- checks
def positions(bad: np.ndarray) -> str:
    """The first three flagged rows for an error message: 'rows 0, 4, 9, ...'."""
    where = np.flatnonzero(bad)
    return f"rows {', '.join(str(i) for i in where[:3])}{', ...' if len(where) > 3 else ''}"


def _as_float(values: ArrayLike, name: str) -> np.ndarray:
    """Numbers or bools (pandas nullable values with NA become NaN) as float64; never text."""
    if isinstance(values, pd.Series):
        if not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
            raise ValueError(f"{name} must be numeric; got dtype {values.dtype}")
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional; got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _check_cases(y: ArrayLike, p: ArrayLike, *, y_name: str = "y", p_name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    """Outcomes as 0/1 float and risks as float, after checking every rule; ValueError names the rule."""
    y_num, p_num = _as_float(y, y_name), _as_float(p, p_name)
    if len(y_num) != len(p_num):
        raise ValueError(f"{y_name} and {p_name} must have the same length; got {len(y_num)} and {len(p_num)}")
    if len(y_num) == 0:
        raise ValueError(f"{y_name} and {p_name} must not be empty; got 0 cases")
    bad = (y_num != 0) & (y_num != 1)  # NaN is bad too
    if bad.any():
        raise ValueError(f"{y_name} must be 0 or 1 (bool accepted); {bad.sum()} values are not ({positions(bad)})")
    bad = ~((p_num > 0) & (p_num < 1))  # NaN is bad too
    if bad.any():
        raise ValueError(f"{p_name} must be an expected risk strictly between 0 and 1 (no NaN); {bad.sum()} values "
                         f"are not ({positions(bad)})")
    return y_num, p_num


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """ValueError unless ``frame`` is a DataFrame holding every one of ``columns`` (``what`` names it)."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{what} must be a pandas DataFrame; got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks required columns {missing}; it has {list(frame.columns)}")


# ------------------------------------------------------------------------------------------ O/E table
def observed_expected(frame: pd.DataFrame, *, unit: str, observed: str, expected: str,
                      level: float = 0.95) -> pd.DataFrame:
    """Observed and expected events per unit, with exact O/E limits and indirectly standardised rates.

    Parameters
    ----------
    frame : DataFrame
        One row per eligible case, with a unit label, a 0/1 outcome and the model's expected risk.
    unit, observed, expected : str
        Names of the unit-label column, the 0/1 outcome column and the expected-risk column (in (0, 1)).
    level : float, default 0.95
        Coverage of the two-sided exact Poisson interval for O/E.

    Returns
    -------
    DataFrame
        One row per unit, sorted by unit, with columns :data:`UNIT`, ``n`` (cases), ``observed`` (O, int),
        ``expected`` (E = sum p), ``variance`` (V = sum p(1-p)), ``oe_ratio`` (O/E), ``oe_low`` and ``oe_high``
        (Garwood exact Poisson limits of O divided by E: ``chi2.ppf(a/2, 2O)/2/E``, 0 when O = 0, and
        ``chi2.ppf(1-a/2, 2O+2)/2/E`` with ``a = 1 - level``), ``risk_adjusted_rate`` (O/E times the overall
        observed rate, indirect standardisation) and ``z`` ((O-E)/sqrt(V)). The overall observed rate is
        in ``attrs[OVERALL_RATE]`` and is recomputed from the table by :func:`overall_rate`.

    Raises
    ------
    ValueError
        If a column is missing, a unit label is missing, the outcome is not 0/1, the expected risk is
        NaN or not strictly inside (0, 1), the frame is empty, or ``level`` is not in (0, 1).

    References
    ----------
    Garwood F. Fiducial limits for the Poisson distribution. Biometrika 1936;28:437-442.
    Breslow NE, Day NE. Statistical Methods in Cancer Research II. IARC 1987 (SMR, indirect standardisation).
    """
    require_columns(frame, [unit, observed, expected], "frame")
    alpha = 1 - check_level(level)
    labels = frame[unit]
    bad = labels.isna().to_numpy()
    if bad.any():
        raise ValueError(f"{unit} must name a unit on every row; {bad.sum()} rows are missing ({positions(bad)})")
    y, p = _check_cases(frame[observed], frame[expected], y_name=observed, p_name=expected)
    cases = pd.DataFrame({UNIT: labels.to_numpy(), OBSERVED: y, EXPECTED: p, VARIANCE: p * (1 - p)})
    grouped = cases.groupby(UNIT, sort=True, observed=True)
    table = grouped[[OBSERVED, EXPECTED, VARIANCE]].sum().reset_index()
    table.insert(1, N_CASES, grouped.size().to_numpy().astype(np.int64))
    table[OBSERVED] = table[OBSERVED].round().astype(np.int64)
    o, e, v = table[OBSERVED].to_numpy(), table[EXPECTED].to_numpy(), table[VARIANCE].to_numpy()
    rate = float(y.mean())
    table[OE_RATIO] = o / e
    table[OE_LOW], table[OE_HIGH] = poisson_ratio_interval(o, e, level=1 - alpha)
    table[RISK_ADJUSTED_RATE] = table[OE_RATIO] * rate
    table[Z_SCORE] = (o - e) / np.sqrt(v)
    table.attrs[OVERALL_RATE] = rate
    return table


def overall_rate(table: pd.DataFrame) -> float:
    """Overall observed event rate (sum of O over sum of n) of an O/E table from :func:`observed_expected`."""
    require_columns(table, [N_CASES, OBSERVED], "table")
    return float(table[OBSERVED].sum() / table[N_CASES].sum())


# --------------------------------------------------------------------------------------------- funnel
@dataclass(frozen=True)
class FunnelResult:
    """A funnel assessment: the unit table with exact limits, p-values and verdicts, and the overdispersion."""

    table: pd.DataFrame
    phi: float  # overdispersion factor from winsorised z-scores; NaN when too few units
    tau2: float  # additive random-effects variance on the O/E scale; 0 without adjustment
    overdispersed: bool
    p_value: float  # P(chi2 with I-1 df >= I*phi); NaN when too few units
    alert: float  # two-sided level of the alert limits (0.95)
    alarm: float  # two-sided level of the alarm limits (0.998)
    method: str  # one sentence for the report's methods section


def limit_columns(level: float) -> tuple[str, str]:
    """Names of the lower and upper limit columns for ``level``: 0.95 -> ('lower_95', 'upper_95'), 0.998 ->
    ('lower_99_8', 'upper_99_8'); distinct levels get distinct names (0.099 -> '9_9', 0.99 -> '99')."""
    tag = f"{100 * check_level(level):.10g}".replace(".", "_")
    return f"lower_{tag}", f"upper_{tag}"


def count_limits(distribution: CountDistribution, level: float) -> tuple[int, int]:
    """(l, u) counts: a count below ``l`` or above ``u`` is beyond the two-sided ``level`` limits.

    ``P(X < l) <= a`` and ``P(X > u) <= a`` with ``a = (1 - level) / 2``, each as tight as the discrete
    distribution allows, so a count beyond a limit has one-sided p-value at most ``a``.
    """
    alpha = (1 - check_level(level)) / 2
    return distribution.lower_count(alpha), distribution.upper_count(alpha)


def typical_limits(expected_grid: ArrayLike, *, mean_risk: float, tau2: float,
                   level: float) -> tuple[np.ndarray, np.ndarray]:
    """Funnel curves on the O/E scale for a unit whose every case has the outcome's mean risk.

    At each expected count ``E`` of the grid the unit has ``n = max(1, round(E / mean_risk))`` cases of risk
    ``E / n``; the curves are ``l / E`` and ``u / E`` of :func:`count_limits` (steps: counts are whole numbers).
    Units are judged by their own case mix (:func:`funnel_assessment`), so a point near a curve may sit on
    either side of its own limit.
    """
    grid = _as_float(expected_grid, "expected_grid")
    if not np.all(np.isfinite(grid) & (grid > 0)):
        raise ValueError("expected_grid must be positive and finite")
    if not 0 < mean_risk < 1:
        raise ValueError(f"mean_risk must be strictly between 0 and 1; got {mean_risk!r}")
    lower, upper = np.empty(len(grid)), np.empty(len(grid))
    for i, e in enumerate(grid):
        n = max(1, int(round(e / mean_risk)))
        risk = min(e / n, 1 - 1e-9)
        l, u = count_limits(null_count_distribution(np.full(n, risk), tau2=tau2), level)
        lower[i], upper[i] = l / e, u / e
    return lower, upper


def estimate_overdispersion(table: pd.DataFrame) -> tuple[float, float, bool, float]:
    """(phi, p, overdispersed, tau2) of an O/E table (``observed``, ``expected``, ``variance``) by Spiegelhalter's
    10%-winsorised additive random-effects recipe (the rule is in :func:`funnel_assessment`)."""
    require_columns(table, [OBSERVED, EXPECTED, VARIANCE], "table")
    o, e, v = (_as_float(table[c], c) for c in (OBSERVED, EXPECTED, VARIANCE))
    bad = ~(np.isfinite(e) & (e > 0) & np.isfinite(v) & (v > 0) & np.isfinite(o) & (o >= 0))
    if bad.any():
        raise ValueError(f"observed must be a count >= 0 and expected and variance positive and finite; "
                         f"{bad.sum()} units are not ({positions(bad)})")
    return _overdispersion((o - e) / np.sqrt(v), e**2 / v)


def _overdispersion(z: np.ndarray, weights: np.ndarray) -> tuple[float, float, bool, float]:
    units = len(z)
    if units < MIN_UNITS_FOR_OVERDISPERSION:
        return np.nan, np.nan, False, 0.0
    low, high = np.quantile(z, WINSOR_QUANTILES)  # linear interpolation (Hyndman-Fan type 7)
    phi = float(np.mean(np.clip(z, low, high) ** 2))
    p_value = float(stats.chi2.sf(units * phi, units - 1))
    overdispersed = bool(units * phi > units - 1 and p_value < OVERDISPERSION_ALPHA)
    if not overdispersed:
        return phi, p_value, False, 0.0
    tau2 = (units * phi - (units - 1)) / (weights.sum() - np.sum(weights**2) / weights.sum())
    return phi, p_value, True, float(max(0.0, tau2))


def funnel_assessment(frame: pd.DataFrame, *, unit: str, observed: str, expected: str, alert: float = 0.95,
                      alarm: float = 0.998, overdispersion: bool = True) -> FunnelResult:
    """Exact funnel limits, one-sided p-values and alert/alarm verdicts for O/E per unit.

    Under the null a unit's observed count is Poisson-binomial from its own cases' risks
    (:func:`reports.null_counts.null_count_distribution`), so limits and p-values are exact at every expected
    count. ``p_high = P(X >= O)`` and ``p_low = P(X <= O)``. A unit is in *alarm* high when ``p_high <= (1 -
    alarm)/2`` (above the upper alarm limit), in *alert* high when ``p_high <= (1 - alert)/2`` (HQIP: alert at
    2 SD, alarm at 3 SD); low likewise. Limits on the O/E scale are ``l/E`` and ``u/E`` of :func:`count_limits`:
    a unit is beyond them when ``O/E < l/E`` or ``O/E > u/E``.

    Overdispersion (Spiegelhalter 2005): z-scores ``(O - E)/sqrt(V)`` with ``V = sum p(1-p)`` winsorised at their
    10th and 90th percentiles give ``phi = mean(z_w^2)``; with ``I >= 5`` units, when ``I*phi > I - 1`` and
    ``P(chi2_{I-1} >= I*phi) < 0.05``, ``tau2 = max(0, (I*phi - (I-1)) / (sum w - sum w^2 / sum w))`` with ``w =
    E^2/V``, and the null becomes the frailty mixture of variance ``V + tau2 E^2``. ``overdispersion=False``
    keeps ``tau2 = 0``.

    Parameters
    ----------
    frame : DataFrame
        One row per eligible case: unit label, 0/1 outcome, expected risk in (0, 1).
    unit, observed, expected : str
        Column names.
    alert, alarm : float, default 0.95 and 0.998
        Two-sided levels of the alert and alarm limits, ``alert < alarm``.
    overdispersion : bool, default True
        Estimate and allow for overdispersion.

    Returns
    -------
    FunnelResult
        ``table``: :func:`observed_expected`'s columns plus ``precision`` (``E^2/V``), ``z_adjusted`` ((O/E - 1) /
        sqrt(1/x + tau2)), the four limit columns (:func:`limit_columns`), ``p_high``, ``p_low``, ``alert`` and
        ``alarm`` (``'high'``, ``'low'`` or ``''``; a unit in alarm is also in alert) and ``null`` (the
        distribution used).

    Raises
    ------
    ValueError
        As :func:`observed_expected`, or levels not in (0, 1) or ``alert >= alarm``.

    References
    ----------
    Spiegelhalter DJ. Funnel plots for comparing institutional performance. Stat Med 2005;24:1185-1202.
    Spiegelhalter DJ. Handling over-dispersion of performance indicators. Qual Saf Health Care 2005;14:347-351.
    Healthcare Quality Improvement Partnership. Detection and management of outliers for national clinical
    audits, 2024.
    """
    alert, alarm = check_level(alert, "alert"), check_level(alarm, "alarm")
    if not alert < alarm:
        raise ValueError(f"alert must be a lower level than alarm; got alert {alert!r}, alarm {alarm!r}")
    table = observed_expected(frame, unit=unit, observed=observed, expected=expected)
    o, e, v = (table[c].to_numpy(dtype=np.float64) for c in (OBSERVED, EXPECTED, VARIANCE))
    x = e**2 / v
    phi, p_value, overdispersed, tau2 = _overdispersion((o - e) / np.sqrt(v), x)
    if not overdispersion:
        overdispersed, tau2 = False, 0.0
    risks = frame[expected].to_numpy(dtype=np.float64)
    codes = pd.Index(table[UNIT]).get_indexer(frame[unit].to_numpy())
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(table) + 1))
    columns: dict[str, list] = {name: [] for name in
                                (*limit_columns(alert), *limit_columns(alarm), P_HIGH, P_LOW, NULL)}
    for i in range(len(table)):
        # sorted: the same cases in any row order give the same bits (the scored store and a rebuild agree)
        distribution = null_count_distribution(np.sort(risks[order[bounds[i]:bounds[i + 1]]]), tau2=tau2)
        for level in (alert, alarm):
            (lower_name, upper_name), (l, u) = limit_columns(level), count_limits(distribution, level)
            columns[lower_name].append(l / e[i])
            columns[upper_name].append(u / e[i])
        columns[P_HIGH].append(float(distribution.sf(int(o[i]))))
        columns[P_LOW].append(float(distribution.cdf(int(o[i]))))
        columns[NULL].append(distribution.method)
    out = table.copy()
    out[PRECISION] = x
    out[Z_ADJUSTED] = (o / e - 1) / np.sqrt(1 / x + tau2)
    for name, values in columns.items():
        out[name] = values
    for name, level in ((ALERT, alert), (ALARM, alarm)):
        a = (1 - level) / 2
        out[name] = np.select([out[P_HIGH] <= a, out[P_LOW] <= a], [FLAG_HIGH, FLAG_LOW], default=FLAG_NONE)
    return FunnelResult(table=out, phi=phi, tau2=tau2, overdispersed=overdispersed, p_value=p_value, alert=alert,
                        alarm=alarm, method=_describe_method(len(out), phi, p_value, overdispersed, tau2))


def fdr_q_values(p_values: ArrayLike) -> np.ndarray:
    """Benjamini-Hochberg q-values (adjusted p-values) of one family of tests; NaN stays NaN.

    References
    ----------
    Benjamini Y, Hochberg Y. Controlling the false discovery rate. J R Stat Soc B 1995;57:289-300.
    Jones HE, Ohlssen DI, Spiegelhalter DJ. Use of the false discovery rate when comparing multiple health
    care providers. J Clin Epidemiol 2008;61:232-240.
    """
    p = _as_float(p_values, "p_values")
    q = np.full(len(p), np.nan)
    known = ~np.isnan(p)
    if known.any():
        q[known] = multipletests(np.clip(p[known], 0.0, 1.0), method="fdr_bh")[1]
    return q


def _describe_method(units: int, phi: float, p_value: float, overdispersed: bool, tau2: float) -> str:
    exact = ("exact limits and one-sided p-values from the Poisson-binomial distribution of each unit's count "
             "given its own cases' risks")
    if units < MIN_UNITS_FOR_OVERDISPERSION:
        return (f"{exact}; overdispersion not assessed: {units} units, at least {MIN_UNITS_FOR_OVERDISPERSION} "
                f"needed")
    test = (f"phi = {phi:.3g} from 10%-winsorised z-scores of {units} units, "
            f"I*phi vs chi2({units - 1}), p = {p_value:.2g}")
    if overdispersed:
        return (f"{exact}, widened for overdispersion by a gamma frailty of variance tau^2 = {tau2:.3g} on the O/E "
                f"scale (its beta-binomial counterpart where it dominates chance; {test}; Spiegelhalter 2005)")
    return f"{exact}; no overdispersion detected ({test})"


# ------------------------------------------------------------------------------------------ over time
def vlad(y: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Variable life-adjusted display: the running sum of expected minus observed events, in case order.

    Going up means fewer events than the model expected. ``y`` (0/1) and ``p`` (in (0, 1)) have shape (n,);
    the result has shape (n,). Raises ValueError on invalid or empty inputs.

    References
    ----------
    Lovegrove J, Valencia O, Treasure T, Sherlaw-Johnson C, Gallivan S. Monitoring the results of cardiac
    surgery by variable life-adjusted display. Lancet 1997;350:1128-1130.
    """
    y_num, p_num = _check_cases(y, p)
    return np.cumsum(p_num - y_num)


@dataclass(frozen=True)
class CusumResult:
    """A risk-adjusted CUSUM path: ``path[t]`` is S_t after case t (before any reset), ``signals`` 0-based cases."""

    path: np.ndarray
    weights: np.ndarray
    signals: np.ndarray
    odds_ratio: float
    h: float
    reset: bool
    direction: str  # 'deterioration' (odds_ratio > 1) or 'improvement' (odds_ratio < 1)


def risk_adjusted_cusum(y: ArrayLike, p: ArrayLike, *, odds_ratio: float = 2.0, h: float = 4.5,
                        reset: bool = True) -> CusumResult:
    """Risk-adjusted Bernoulli CUSUM (log-likelihood ratio of odds ratio ``R`` against 1), in case order.

    Weights ``W_t = y_t log R - log(1 - p_t + R p_t)``; ``S_t = max(0, S_{t-1} + W_t)``, ``S_0 = 0``; a signal
    at case t when ``S_t >= h``. With ``reset``, the chart restarts from 0 after a signal; without it, a
    signal is each case at which the path reaches ``h`` from below. The same chart with ``R < 1`` detects
    improvement (W is then the log-likelihood ratio for lower odds, positive after non-events); to draw it
    below the axis in the usual two-sided display, plot ``-path``.

    Parameters
    ----------
    y, p : arrays of shape (n,)
        Outcomes (0/1) and expected risks (in (0, 1)) of one unit's cases, in time order.
    odds_ratio : float, default 2.0
        Odds ratio ``R`` to detect (positive, not 1); ``h`` is the positive decision threshold.
    reset : bool, default True
        Restart from 0 after each signal (Steiner et al. 2000); otherwise keep accumulating.

    Returns
    -------
    CusumResult
        ``path`` and ``weights`` of shape (n,), ``signals`` (0-based case indices) and the settings.

    Raises
    ------
    ValueError
        If ``y`` or ``p`` is invalid or empty, ``odds_ratio`` is not positive, finite and != 1, or ``h`` is
        not positive and finite.

    References
    ----------
    Steiner SH, Cook RJ, Farewell VT, Treasure T. Monitoring surgical performance using risk-adjusted
    cumulative sum charts. Biostatistics 2000;1:441-452.
    """
    y_num, p_num = _check_cases(y, p)
    if not (isinstance(odds_ratio, numbers.Real) and np.isfinite(odds_ratio) and odds_ratio > 0 and odds_ratio != 1):
        raise ValueError(f"odds_ratio must be a positive finite number other than 1; got {odds_ratio!r}")
    if not (isinstance(h, numbers.Real) and np.isfinite(h) and h > 0):
        raise ValueError(f"h must be a positive finite threshold; got {h!r}")
    weights = y_num * np.log(odds_ratio) - np.log1p((odds_ratio - 1) * p_num)
    path = np.empty_like(weights)
    signals: list[int] = []
    level, armed = 0.0, True  # armed: below h before this case (always, with reset)
    for t, w in enumerate(weights):
        level = path[t] = max(0.0, level + w)
        if level >= h and armed:
            signals.append(t)
        armed = reset or level < h
        if reset and level >= h:
            level = 0.0
    path.setflags(write=False)
    weights.setflags(write=False)
    return CusumResult(path=path, weights=weights, signals=np.array(signals, dtype=np.int64),
                       odds_ratio=float(odds_ratio), h=float(h), reset=reset,
                       direction="deterioration" if odds_ratio > 1 else "improvement")
