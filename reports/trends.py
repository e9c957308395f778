"""Observed outcome rates by procedure year with exact intervals, small counts suppressed."""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from models.binomial import exact_binomial_interval
from models.checks import check_level
from models.suppression import suppress_table
from records import schema as s

ALL_YEARS = "all_years"
"""Boolean output column: True on the last row, which holds the totals over all years."""
N = "n"
EVENTS = "events"
N_MISSING = "n_missing"
RATE = "rate"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
COUNT_COLUMNS: tuple[str, ...] = (N, EVENTS, N_MISSING)
"""Columns holding counts of cases: ints or ``"<11"`` after suppression."""
_SHOWN = 5


def observed_rates_by_year(frame: pd.DataFrame, *, outcome: str | ArrayLike, year_column: str = s.PROCEDURE_YEAR,
                           level: float = 0.95) -> pd.DataFrame:
    """Per year: rows with a known outcome, events, observed rate and its Clopper-Pearson interval.

    Rows whose outcome is missing (not assessed, not eligible) are left out of ``n`` and counted in
    ``n_missing``. A last row (``all_years`` True, year missing) holds the totals; it is the published
    margin against which the years are protected.

    Suppression (:func:`models.suppression.suppress_table`, one group - the outcome): counts 1..10 are
    ``"<11"``; events are also withheld when ``n - events`` is 1..10; a year with ``n`` 1..10 has every
    count and statistic withheld; rate and interval are withheld with ``n`` or ``events``; further years
    are withheld so that no withheld count can be worked out from the total row.

    Parameters
    ----------
    frame
        One row per unit of the outcome (procedure or level), with ``year_column``.
    outcome
        The outcome: a column of ``frame`` or an array of the same length; values 0/1 or booleans,
        missing (NaN, None, <NA>) for rows without an outcome.
    year_column
        Column holding the year; whole numbers, none missing.
    level
        Confidence level of the interval, strictly between 0 and 1.

    Returns
    -------
    DataFrame
        Columns ``year_column`` (Int64; <NA> on the total row), ``all_years`` (bool), ``n``, ``events``,
        ``n_missing`` (object: ints or ``"<11"``), ``rate``, ``ci_low``, ``ci_high`` (float; NaN when
        withheld or ``n`` is 0). One row per year present, ascending, then the total row.

    Raises
    ------
    ValueError
        A missing column, an outcome of the wrong length or with values other than 0/1, a missing or
        fractional year, or ``level`` outside (0, 1).

    References
    ----------
    Clopper CJ, Pearson ES. Biometrika 1934;26:404-413.
    """
    check_level(level)
    label = _outcome_values(frame, outcome)
    years = _year_values(frame, year_column)
    table = _count_by_year(years, label, year_column)
    table = _add_rates(table, level=level)
    return suppress_table(table, count_columns=COUNT_COLUMNS, derived={c: (N, EVENTS) for c in (RATE, CI_LOW, CI_HIGH)},
                          complements={EVENTS: N}, row_total=N, total_rows=table[ALL_YEARS].to_numpy())


def _count_by_year(years: np.ndarray, label: np.ndarray, year_column: str) -> pd.DataFrame:
    known = ~np.isnan(label)
    per_year = pd.DataFrame({year_column: years, N: known.astype(np.int64),
                             EVENTS: np.where(known, label, 0).astype(np.int64), N_MISSING: (~known).astype(np.int64)})
    table = per_year.groupby(year_column, sort=True).sum().reset_index()
    total = {year_column: pd.NA, **{c: int(table[c].sum()) for c in COUNT_COLUMNS}}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table[year_column] = table[year_column].astype("Int64")
    table.insert(1, ALL_YEARS, np.arange(len(table)) == len(table) - 1)
    return table


def _add_rates(table: pd.DataFrame, *, level: float) -> pd.DataFrame:
    n, events = table[N].to_numpy(), table[EVENTS].to_numpy()
    some = n > 0
    low, high = np.full(len(n), np.nan), np.full(len(n), np.nan)
    if some.any():
        low[some], high[some] = exact_binomial_interval(events[some], n[some], level=level)
    return table.assign(**{RATE: np.where(some, events / np.maximum(n, 1), np.nan), CI_LOW: low, CI_HIGH: high})


def _outcome_values(frame: pd.DataFrame, outcome: str | ArrayLike) -> np.ndarray:
    if isinstance(outcome, str):
        if outcome not in frame.columns:
            raise ValueError(f"outcome must be a column of frame or an array; no column {outcome!r}")
        outcome = frame[outcome]
    series = outcome if isinstance(outcome, pd.Series) else pd.Series(np.asarray(outcome, dtype=object))
    if len(series) != len(frame):
        raise ValueError(f"outcome must have one value per row of frame ({len(frame)}); got {len(series)}")
    if pd.api.types.is_bool_dtype(series.dtype) or pd.api.types.is_numeric_dtype(series.dtype):
        values = series.astype("Float64").to_numpy(dtype="float64", na_value=np.nan)  # as _as_label, vectorised
    else:
        values = np.array([_as_label(v) for v in series.astype(object)], dtype="float64")
    bad = ~np.isnan(values) & ~np.isin(values, (0.0, 1.0))
    _check_rows(bad, "outcome must be 0, 1 (booleans accepted) or missing")
    return values


def _as_label(value: object) -> float:
    """0/1 as float, NaN for missing, -1 for anything else (reported as bad)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return np.nan
    if isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating)):
        return float(value)
    return -1.0


def _year_values(frame: pd.DataFrame, year_column: str) -> np.ndarray:
    if year_column not in frame.columns:
        raise ValueError(f"frame must have the year column {year_column!r}")
    years = pd.to_numeric(frame[year_column], errors="coerce").astype("float64").to_numpy()
    _check_rows(np.isnan(years) | (years != np.floor(years)), f"{year_column} must be a whole year, not missing")
    return years.astype(np.int64)


def _check_rows(bad: np.ndarray, rule: str) -> None:
    if bad.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(bad)[:_SHOWN])
        more = ", ..." if bad.sum() > _SHOWN else ""
        raise ValueError(f"{rule}; {int(bad.sum())} rows break it (rows {rows}{more})")
