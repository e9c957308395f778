"""Observed rates by year: counts, Clopper-Pearson intervals against scipy, suppression of small years."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta

from records import schema as s
from reports import trends as tr
from models.suppression import SUPPRESSED, recoverable, small_counts

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def _frame(per_year: dict[int, tuple[int, int, int]]) -> pd.DataFrame:
    """Rows per year: (events, non-events, missing outcome)."""
    years, labels = [], []
    for year, (events, non_events, missing) in per_year.items():
        years += [year] * (events + non_events + missing)
        labels += [True] * events + [False] * non_events + [None] * missing
    return pd.DataFrame({s.PROCEDURE_YEAR: pd.array(years, dtype="Int64"), "label": pd.array(labels, dtype="boolean")})


def _years(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table[tr.ALL_YEARS]]


def _assert_published_safely(table: pd.DataFrame) -> None:
    assert small_counts(table, count_columns=tr.COUNT_COLUMNS) == []
    total = table[table[tr.ALL_YEARS]].iloc[0]
    for column in tr.COUNT_COLUMNS:
        assert not recoverable(_years(table), count_column=column, totals=total[column]), column


def test_counts_and_clopper_pearson_interval_match_scipy():
    frame = _frame({2020: (12, 18, 0), 2021: (30, 50, 2), 2022: (25, 40, 0)})
    table = tr.observed_rates_by_year(frame, outcome="label")
    assert table[s.PROCEDURE_YEAR].tolist()[:3] == [2020, 2021, 2022] and table[s.PROCEDURE_YEAR].isna().tolist()[3]
    assert table[tr.ALL_YEARS].tolist() == [False, False, False, True]
    assert table[tr.N].tolist() == [30, 80, 65, 175] and table[tr.EVENTS].tolist() == [12, 30, 25, 67]
    for row in table.itertuples():
        n, events = getattr(row, tr.N), getattr(row, tr.EVENTS)
        assert getattr(row, tr.RATE) == pytest.approx(events / n)
        assert getattr(row, tr.CI_LOW) == pytest.approx(beta.ppf(0.025, events, n - events + 1), rel=1e-9)
        assert getattr(row, tr.CI_HIGH) == pytest.approx(beta.ppf(0.975, events + 1, n - events), rel=1e-9)
    assert table[tr.N_MISSING].tolist() == [0, SUPPRESSED, 0, SUPPRESSED]  # a small total publishes no margin


def test_other_levels_use_the_same_exact_interval():
    table = tr.observed_rates_by_year(_frame({2020: (12, 88, 0)}), outcome="label", level=0.90)
    assert table[tr.CI_LOW].iloc[0] == pytest.approx(beta.ppf(0.05, 12, 89), rel=1e-9)


def test_small_events_and_small_complement_are_withheld_and_protected():
    table = tr.observed_rates_by_year(_frame({2020: (12, 18, 0), 2021: (3, 37, 0), 2022: (20, 5, 0),
                                              2023: (40, 40, 0)}), outcome="label")
    years = _years(table)
    assert years[tr.EVENTS].tolist() == [12, SUPPRESSED, SUPPRESSED, 40]
    assert years[tr.N].tolist() == [30, 40, 25, 80]
    assert years[tr.RATE].isna().tolist() == [False, True, True, False]
    assert years[[tr.CI_LOW, tr.CI_HIGH]].isna().any(axis=1).tolist() == [False, True, True, False]
    assert table[tr.EVENTS].iloc[-1] == 75  # the total is published: 3 + 20 = 23 cannot be split back
    _assert_published_safely(table)


def test_small_year_is_withheld_entirely():
    table = tr.observed_rates_by_year(_frame({2020: (12, 18, 0), 2021: (0, 6, 0), 2022: (30, 30, 0)}),
                                      outcome="label")
    small = table.iloc[1]
    assert small[tr.N] == SUPPRESSED and small[tr.EVENTS] == SUPPRESSED and np.isnan(small[tr.RATE])
    assert table[tr.N].iloc[0] == SUPPRESSED  # 30 is the smallest other year: 96 - 60 no longer gives 6
    _assert_published_safely(table)


def test_outcome_as_array_equals_outcome_as_column():
    frame = _frame({2020: (12, 18, 3), 2021: (30, 50, 0)})
    by_column = tr.observed_rates_by_year(frame, outcome="label")
    as_floats = frame["label"].astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    pd.testing.assert_frame_equal(by_column, tr.observed_rates_by_year(frame.drop(columns="label"), outcome=as_floats))


def test_year_without_known_outcome_has_no_rate():
    table = tr.observed_rates_by_year(_frame({2020: (12, 18, 0), 2021: (0, 0, 40), 2022: (30, 30, 20)}),
                                      outcome="label")
    row = table.iloc[1]
    assert row[tr.N] == 0 and row[tr.N_MISSING] == 40 and np.isnan(row[tr.RATE]) and np.isnan(row[tr.CI_LOW])


@pytest.mark.slow
def test_sample_symptomatic_leakage_by_year_publishes_no_small_or_recoverable_count():
    procedures = pd.read_parquet(SAMPLE / "procedures.parquet", columns=[s.PROCEDURE_ID, s.PROCEDURE_YEAR])
    levels = pd.read_parquet(SAMPLE / "levels.parquet", columns=[s.PROCEDURE_ID, s.LEAKAGE_SYMPTOMATIC])
    frame = levels.merge(procedures, on=s.PROCEDURE_ID, how="left", validate="many_to_one")
    table = tr.observed_rates_by_year(frame, outcome=s.LEAKAGE_SYMPTOMATIC)
    total = table.iloc[-1]
    assert total[tr.N] + total[tr.N_MISSING] == len(levels)
    assert total[tr.EVENTS] == int(levels[s.LEAKAGE_SYMPTOMATIC].sum())
    _assert_published_safely(table)


@pytest.mark.parametrize(("frame", "options", "message"), [
    (_frame({2020: (1, 1, 0)}), {"outcome": "nope"}, "no column 'nope'"),
    (_frame({2020: (1, 1, 0)}), {"outcome": [1, 0, 1]}, r"one value per row of frame \(2\); got 3"),
    (_frame({2020: (1, 1, 0)}), {"outcome": [2, 0]}, r"outcome must be 0, 1.*1 rows break it \(rows 0\)"),
    (_frame({2020: (1, 1, 0)}), {"outcome": ["yes", 0]}, r"outcome must be 0, 1.*rows 0\)"),
    (_frame({2020: (1, 1, 0)}).assign(**{s.PROCEDURE_YEAR: pd.array([2020, None], dtype="Int64")}),
     {"outcome": "label"}, r"procedure_year must be a whole year, not missing; 1 rows break it \(rows 1\)"),
    (_frame({2020: (1, 1, 0)}), {"outcome": "label", "year_column": "year"}, "frame must have the year column 'year'"),
    (_frame({2020: (1, 1, 0)}), {"outcome": "label", "level": 1.0}, "level must be a probability strictly between 0 and 1; got 1.0"),
])
def test_bad_input_is_refused_precisely(frame, options, message):
    with pytest.raises(ValueError, match=message):
        tr.observed_rates_by_year(frame, **options)
