"""The outcomes kyphoplasty is done for (pain, discharge, stay, kyphosis, symptomatic leakage) by site, suppressed.

Output is wide: one row per site (sorted by site id) and a last row :data:`ALL_SITES` holding the
published totals. Every statistic sits next to the count of the cases it is computed from, so rows with
missing values are counted, never silently dropped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from models.binomial import exact_binomial_interval
from models.suppression import suppress_table
from records import schema as s

ALL_SITES = "all sites"
LEVEL = 0.95

# --- output columns -------------------------------------------------------------------------
PROCEDURES = "procedures"
LEVELS = "levels"
PAIN_N = "pain_n"
VAS_PRE_MEAN = "vas_pre_mean"
VAS_POST_MEAN = "vas_post_mean"
VAS_CHANGE_MEAN = "vas_change_mean"
VAS_CHANGE_LOW = "vas_change_ci_low"
VAS_CHANGE_HIGH = "vas_change_ci_high"
LOS_N = "los_n"
SAME_DAY_N = "same_day_n"
SAME_DAY_RATE = "same_day_rate"
SAME_DAY_LOW = "same_day_ci_low"
SAME_DAY_HIGH = "same_day_ci_high"
LOS_MEDIAN = "los_median_days"
LOS_Q1 = "los_q1_days"
LOS_Q3 = "los_q3_days"
KYPHOSIS_N = "kyphosis_n"
KYPHOSIS_MEAN = "kyphosis_correction_mean_deg"
KYPHOSIS_LOW = "kyphosis_correction_ci_low_deg"
KYPHOSIS_HIGH = "kyphosis_correction_ci_high_deg"
LEAKAGE_ASSESSED_N = "leakage_assessed_n"
SYMPTOMATIC_N = "symptomatic_leakage_n"
SYMPTOMATIC_RATE = "symptomatic_leakage_rate"
SYMPTOMATIC_LOW = "symptomatic_leakage_ci_low"
SYMPTOMATIC_HIGH = "symptomatic_leakage_ci_high"

COUNT_COLUMNS: tuple[str, ...] = (PROCEDURES, LEVELS, PAIN_N, LOS_N, SAME_DAY_N, KYPHOSIS_N,
                                  LEAKAGE_ASSESSED_N, SYMPTOMATIC_N)
"""Columns holding counts of cases: ints or ``"<11"`` after suppression."""
DERIVED: dict[str, tuple[str, ...]] = {
    VAS_PRE_MEAN: (PAIN_N,), VAS_POST_MEAN: (PAIN_N,), VAS_CHANGE_MEAN: (PAIN_N,),
    VAS_CHANGE_LOW: (PAIN_N,), VAS_CHANGE_HIGH: (PAIN_N,),
    SAME_DAY_RATE: (SAME_DAY_N, LOS_N), SAME_DAY_LOW: (SAME_DAY_N, LOS_N), SAME_DAY_HIGH: (SAME_DAY_N, LOS_N),
    LOS_MEDIAN: (LOS_N,), LOS_Q1: (LOS_N,), LOS_Q3: (LOS_N,),
    KYPHOSIS_MEAN: (KYPHOSIS_N,), KYPHOSIS_LOW: (KYPHOSIS_N,), KYPHOSIS_HIGH: (KYPHOSIS_N,),
    SYMPTOMATIC_RATE: (SYMPTOMATIC_N, LEAKAGE_ASSESSED_N), SYMPTOMATIC_LOW: (SYMPTOMATIC_N, LEAKAGE_ASSESSED_N),
    SYMPTOMATIC_HIGH: (SYMPTOMATIC_N, LEAKAGE_ASSESSED_N),
}
"""Each statistic -> the counts it is computed from; it is withheld with any of them."""
COMPLEMENTS: dict[str, str] = {SAME_DAY_N: LOS_N, SYMPTOMATIC_N: LEAKAGE_ASSESSED_N}
"""Event count -> its denominator; ``denominator - events`` is a count of cases too."""

PROCEDURE_COLUMNS = (s.PROCEDURE_ID, s.SITE_ID, s.LENGTH_OF_STAY_DAYS, s.PAIN_VAS_PRE, s.PAIN_VAS_POST)
LEVEL_COLUMNS = (s.PROCEDURE_ID, s.KYPHOTIC_ANGLE_PRE, s.KYPHOTIC_ANGLE_POST, s.LEAKAGE, s.LEAKAGE_SYMPTOMATIC)


def seed_outcomes(procedures: pd.DataFrame, levels: pd.DataFrame) -> pd.DataFrame:
    """Per site and overall: the outcomes the procedure exists for, small counts suppressed.

    Per procedure (patient): pain on the 0-10 VAS among procedures with both scores (mean before, mean
    after, mean change after - before with a t confidence interval; negative = relief); same-day
    discharge (length of stay 0 days) among procedures whose stay is known, with an exact
    Clopper-Pearson interval; median length of stay and quartiles (linear interpolation, numpy's
    default). Per treated level: kyphotic angle correction (before - after, degrees; positive = angle
    reduced) among levels with both angles, with a t interval; symptomatic cement leakage among levels
    whose leakage was assessed (leakage known, and symptom status known when leakage occurred), with a
    Clopper-Pearson interval. All intervals are 95%.

    Suppression (:func:`models.suppression.suppress_table`): counts 1..10 are ``"<11"``; same-day and
    symptomatic counts are also withheld when their complement (denominator - count) is 1..10; a site
    with 1..10 procedures has every count and statistic withheld; a statistic is withheld with any count
    it is computed from (so no mean of fewer than 11 cases is published); further site cells are
    withheld so none can be worked out from the ``"all sites"`` row, which is the published total.

    Parameters
    ----------
    procedures
        Procedure rows of the contract (``site_id``, ``procedure_id``, length of stay, VAS scores).
    levels
        Level rows of the contract; every level's procedure must be in ``procedures``.

    Returns
    -------
    DataFrame
        One row per site, then ``"all sites"``; columns ``site_id``, :data:`COUNT_COLUMNS` (object:
        ints or ``"<11"``) and the statistics of :data:`DERIVED` (float, NaN when withheld or undefined).

    Raises
    ------
    ValueError
        A required column is missing, ``procedures`` is empty, a site id is missing, a procedure id is
        missing or repeated, or a level has no procedure.

    References
    ----------
    Clopper CJ, Pearson ES. Biometrika 1934;26:404-413 (exact binomial interval).
    """
    _check_inputs(procedures, levels)
    site_of_level = levels[s.PROCEDURE_ID].map(pd.Series(procedures[s.SITE_ID].to_numpy(),
                                                          index=procedures[s.PROCEDURE_ID].to_numpy()))
    level_parts = dict(tuple(levels.groupby(site_of_level.astype(str).to_numpy(), sort=True)))
    rows = [_site_row(str(site), part, level_parts.get(str(site), levels.iloc[0:0]))
            for site, part in procedures.groupby(procedures[s.SITE_ID].astype(str), sort=True)]
    rows.append(_site_row(ALL_SITES, procedures, levels))
    table = pd.DataFrame(rows)
    table[s.SITE_ID] = table[s.SITE_ID].astype(s.TEXT_DTYPE)
    return suppress_table(table, count_columns=COUNT_COLUMNS, derived=DERIVED, complements=COMPLEMENTS,
                          row_total=PROCEDURES, total_rows=(table[s.SITE_ID] == ALL_SITES).to_numpy())


def _site_row(site: str, procedures: pd.DataFrame, levels: pd.DataFrame) -> dict[str, object]:
    return {s.SITE_ID: site, PROCEDURES: len(procedures), LEVELS: len(levels),
            **_pain(procedures), **_stay(procedures), **_kyphosis(levels), **_symptomatic_leakage(levels)}


def _pain(procedures: pd.DataFrame) -> dict[str, object]:
    pre, post = _floats(procedures[s.PAIN_VAS_PRE]), _floats(procedures[s.PAIN_VAS_POST])
    both = ~np.isnan(pre) & ~np.isnan(post)
    change = post[both] - pre[both]
    mean, low, high = _mean_t_interval(change)
    return {PAIN_N: int(both.sum()), VAS_PRE_MEAN: _mean(pre[both]), VAS_POST_MEAN: _mean(post[both]),
            VAS_CHANGE_MEAN: mean, VAS_CHANGE_LOW: low, VAS_CHANGE_HIGH: high}


def _stay(procedures: pd.DataFrame) -> dict[str, object]:
    days = _floats(procedures[s.LENGTH_OF_STAY_DAYS])
    days = days[~np.isnan(days)]
    same_day = int((days == 0).sum())
    rate, low, high = _clopper_pearson(same_day, len(days))
    q1, median, q3 = np.percentile(days, [25, 50, 75]) if len(days) else (np.nan,) * 3
    return {LOS_N: len(days), SAME_DAY_N: same_day, SAME_DAY_RATE: rate, SAME_DAY_LOW: low, SAME_DAY_HIGH: high,
            LOS_MEDIAN: float(median), LOS_Q1: float(q1), LOS_Q3: float(q3)}


def _kyphosis(levels: pd.DataFrame) -> dict[str, object]:
    correction = _floats(levels[s.KYPHOTIC_ANGLE_PRE]) - _floats(levels[s.KYPHOTIC_ANGLE_POST])
    correction = correction[~np.isnan(correction)]
    mean, low, high = _mean_t_interval(correction)
    return {KYPHOSIS_N: len(correction), KYPHOSIS_MEAN: mean, KYPHOSIS_LOW: low, KYPHOSIS_HIGH: high}


def _symptomatic_leakage(levels: pd.DataFrame) -> dict[str, object]:
    leak = levels[s.LEAKAGE].astype("boolean")
    symptomatic = levels[s.LEAKAGE_SYMPTOMATIC].astype("boolean")
    assessed = (leak.notna() & (~leak.fillna(True) | symptomatic.notna())).to_numpy(dtype=bool)
    events = int((leak.fillna(False) & symptomatic.fillna(False)).to_numpy(dtype=bool)[assessed].sum())
    rate, low, high = _clopper_pearson(events, int(assessed.sum()))
    return {LEAKAGE_ASSESSED_N: int(assessed.sum()), SYMPTOMATIC_N: events, SYMPTOMATIC_RATE: rate,
            SYMPTOMATIC_LOW: low, SYMPTOMATIC_HIGH: high}


def _mean_t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its two-sided t interval at :data:`LEVEL` (NaN bounds for fewer than 2 values)."""
    if len(values) < 2:
        return _mean(values), np.nan, np.nan
    mean = float(values.mean())
    low, high = stats.t.interval(LEVEL, df=len(values) - 1, loc=mean, scale=stats.sem(values))
    return mean, float(low), float(high)


def _clopper_pearson(events: int, n: int) -> tuple[float, float, float]:
    if n == 0:
        return np.nan, np.nan, np.nan
    low, high = exact_binomial_interval(events, n, level=LEVEL)
    return events / n, float(low), float(high)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else np.nan


def _floats(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()


def _check_inputs(procedures: pd.DataFrame, levels: pd.DataFrame) -> None:
    for name, frame, required in (("procedures", procedures, PROCEDURE_COLUMNS), ("levels", levels, LEVEL_COLUMNS)):
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} must have the columns {', '.join(required)}; missing: {', '.join(missing)}")
    if procedures.empty:
        raise ValueError("procedures must not be empty; got 0 rows")
    for column in (s.SITE_ID, s.PROCEDURE_ID):
        _check_rows(procedures[column].isna().to_numpy(), f"procedures.{column} must not be missing")
    _check_rows(procedures[s.PROCEDURE_ID].duplicated(keep=False).to_numpy(),
                f"procedures.{s.PROCEDURE_ID} must be unique")
    # as objects: pandas' isin on Arrow-backed strings is a loop in Python (5 s for 1.6M levels, 0.7 s so)
    known = levels[s.PROCEDURE_ID].astype(object).isin(procedures[s.PROCEDURE_ID].astype(object))
    _check_rows(~known.to_numpy(dtype=bool), f"every level's {s.PROCEDURE_ID} must be in procedures")


def _check_rows(bad: np.ndarray, rule: str) -> None:
    if bad.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(bad)[:5])
        raise ValueError(f"{rule}; {int(bad.sum())} rows break it (rows {rows}{', ...' if bad.sum() > 5 else ''})")
