"""Seed outcomes by site: statistics against independent references, counted missing values, suppression."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import beta
from statsmodels.stats.weightstats import DescrStatsW

from records import schema as s
from reports import seed_outcomes as so
from models.suppression import SUPPRESSED, recoverable, small_counts

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"


def _registry(sizes: dict[str, int], *, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Procedures of the given sites (two levels each) with some missing values everywhere."""
    rng = np.random.default_rng(seed)
    n = sum(sizes.values())
    pre, post = rng.uniform(5, 10, n).round(1), rng.uniform(0, 6, n).round(1)
    procedures = pd.DataFrame({
        s.PROCEDURE_ID: [f"P{i:05d}" for i in range(n)],
        s.SITE_ID: pd.array([site for site, k in sizes.items() for _ in range(k)], dtype=s.TEXT_DTYPE),
        s.LENGTH_OF_STAY_DAYS: pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 5, n)), dtype="Int64"),
        s.PAIN_VAS_PRE: pd.array(np.where(rng.random(n) < 0.1, np.nan, pre), dtype="Float64"),
        s.PAIN_VAS_POST: pd.array(np.where(rng.random(n) < 0.2, np.nan, post), dtype="Float64"),
    })
    m = 2 * n
    leak = np.where(rng.random(m) < 0.05, None, rng.random(m) < 0.3)
    symptomatic = [None if lk is None else bool(lk and r < 0.3) for lk, r in zip(leak, rng.random(m))]
    symptomatic[np.flatnonzero([lk is True for lk in leak])[0]] = None  # leaked, symptoms not recorded
    angle_pre = rng.uniform(5, 30, m).round(1)
    levels = pd.DataFrame({
        s.PROCEDURE_ID: np.repeat(procedures[s.PROCEDURE_ID].to_numpy(), 2),
        s.KYPHOTIC_ANGLE_PRE: pd.array(np.where(rng.random(m) < 0.2, np.nan, angle_pre), dtype="Float64"),
        s.KYPHOTIC_ANGLE_POST: pd.array(angle_pre - rng.uniform(0, 8, m).round(1), dtype="Float64"),
        s.LEAKAGE: pd.array(leak, dtype="boolean"),
        s.LEAKAGE_SYMPTOMATIC: pd.array(symptomatic, dtype="boolean"),
    })
    return procedures, levels


def _clopper_pearson(events: int, n: int) -> tuple[float, float]:
    low = 0.0 if events == 0 else beta.ppf(0.025, events, n - events + 1)
    high = 1.0 if events == n else beta.ppf(0.975, events + 1, n - events)
    return low, high


def _reference(procedures: pd.DataFrame, levels: pd.DataFrame) -> dict[str, float]:
    """The statistics of one row, from statsmodels, scipy.stats.beta and the standard library."""
    both = procedures[[s.PAIN_VAS_PRE, s.PAIN_VAS_POST]].dropna().astype(float)
    change = DescrStatsW((both[s.PAIN_VAS_POST] - both[s.PAIN_VAS_PRE]).to_numpy())
    stay = procedures[s.LENGTH_OF_STAY_DAYS].dropna().astype(float).tolist()
    q1, median, q3 = statistics.quantiles(stay, n=4, method="inclusive")
    same_day = sum(d == 0 for d in stay)
    angles = levels[[s.KYPHOTIC_ANGLE_PRE, s.KYPHOTIC_ANGLE_POST]].dropna().astype(float)
    correction = DescrStatsW((angles[s.KYPHOTIC_ANGLE_PRE] - angles[s.KYPHOTIC_ANGLE_POST]).to_numpy())
    leak, symptomatic = levels[s.LEAKAGE], levels[s.LEAKAGE_SYMPTOMATIC]
    assessed = [lk is not pd.NA and (not lk or sy is not pd.NA) for lk, sy in zip(leak, symptomatic)]
    events = sum(lk is not pd.NA and sy is not pd.NA and bool(lk) and bool(sy) for lk, sy in zip(leak, symptomatic))
    return {
        so.PAIN_N: len(both), so.VAS_PRE_MEAN: both[s.PAIN_VAS_PRE].mean(),
        so.VAS_POST_MEAN: both[s.PAIN_VAS_POST].mean(), so.VAS_CHANGE_MEAN: change.mean,
        **dict(zip((so.VAS_CHANGE_LOW, so.VAS_CHANGE_HIGH), change.tconfint_mean(0.05))),
        so.LOS_N: len(stay), so.SAME_DAY_N: same_day, so.SAME_DAY_RATE: same_day / len(stay),
        **dict(zip((so.SAME_DAY_LOW, so.SAME_DAY_HIGH), _clopper_pearson(same_day, len(stay)))),
        so.LOS_MEDIAN: median, so.LOS_Q1: q1, so.LOS_Q3: q3,
        so.KYPHOSIS_N: len(angles), so.KYPHOSIS_MEAN: correction.mean,
        **dict(zip((so.KYPHOSIS_LOW, so.KYPHOSIS_HIGH), correction.tconfint_mean(0.05))),
        so.LEAKAGE_ASSESSED_N: sum(assessed), so.SYMPTOMATIC_N: events, so.SYMPTOMATIC_RATE: events / sum(assessed),
        **dict(zip((so.SYMPTOMATIC_LOW, so.SYMPTOMATIC_HIGH), _clopper_pearson(events, sum(assessed)))),
    }


def _row(table: pd.DataFrame, site: str) -> pd.Series:
    return table.loc[table[s.SITE_ID] == site].iloc[0]


def _assert_published_safely(table: pd.DataFrame) -> None:
    assert small_counts(table, count_columns=so.COUNT_COLUMNS) == []
    sites, total = table[table[s.SITE_ID] != so.ALL_SITES], _row(table, so.ALL_SITES)
    for column in so.COUNT_COLUMNS:
        assert not recoverable(sites, count_column=column, totals=total[column]), column


def test_statistics_match_independent_references():
    procedures, levels = _registry({"A": 300, "B": 200})
    table = so.seed_outcomes(procedures, levels)
    assert table[s.SITE_ID].tolist() == ["A", "B", so.ALL_SITES]
    for site, rows in (("A", procedures[s.SITE_ID] == "A"), (so.ALL_SITES, procedures[s.SITE_ID].notna())):
        mine = procedures[rows]
        expected = _reference(mine, levels[levels[s.PROCEDURE_ID].isin(mine[s.PROCEDURE_ID])])
        row = _row(table, site)
        assert row[so.PROCEDURES] == len(mine) and row[so.LEVELS] == 2 * len(mine)
        for column, value in expected.items():
            assert float(row[column]) == pytest.approx(value, rel=1e-9, abs=1e-12), (site, column)
    assert table[so.VAS_CHANGE_MEAN].lt(0).all()  # relief is a negative change by the documented sign


def test_missing_values_are_counted_not_dropped():
    procedures, levels = _registry({"A": 200})
    row = _row(so.seed_outcomes(procedures, levels), "A")
    assert row[so.PAIN_N] == int((procedures[s.PAIN_VAS_PRE].notna() & procedures[s.PAIN_VAS_POST].notna()).sum())
    assert row[so.LOS_N] == int(procedures[s.LENGTH_OF_STAY_DAYS].notna().sum()) < len(procedures)
    unassessed = levels[s.LEAKAGE].isna() | (levels[s.LEAKAGE].fillna(False) & levels[s.LEAKAGE_SYMPTOMATIC].isna())
    assert row[so.LEAKAGE_ASSESSED_N] == len(levels) - int(unassessed.sum())
    assert row[so.KYPHOSIS_N] == int(levels[[s.KYPHOTIC_ANGLE_PRE, s.KYPHOTIC_ANGLE_POST]].notna().all(axis=1).sum())


def test_small_site_is_withheld_entirely_and_cannot_be_recovered():
    procedures, levels = _registry({"A": 300, "B": 120, "C": 6})
    table = so.seed_outcomes(procedures, levels)
    small = _row(table, "C")
    assert all(small[c] == SUPPRESSED for c in so.COUNT_COLUMNS)
    assert small[list(so.DERIVED)].isna().all()
    assert _row(table, "B")[so.PROCEDURES] == SUPPRESSED  # complementary: 120 is the smallest other site
    assert _row(table, "A")[so.PROCEDURES] == 300 and _row(table, so.ALL_SITES)[so.PROCEDURES] == 426
    _assert_published_safely(table)


def test_mean_of_fewer_than_eleven_patients_is_not_published():
    procedures, levels = _registry({"A": 300, "B": 120})
    b = (procedures[s.SITE_ID] == "B").to_numpy()
    keep = np.zeros(len(procedures), dtype=bool)
    keep[np.flatnonzero(b & procedures[s.PAIN_VAS_PRE].notna().to_numpy())[:20]] = True
    post = procedures[s.PAIN_VAS_POST].where(~b | keep)
    post[np.flatnonzero(b & keep)[:12]] = pd.NA  # leaves at most 8 with both scores
    table = so.seed_outcomes(procedures.assign(**{s.PAIN_VAS_POST: post}), levels)
    row = _row(table, "B")
    assert row[so.PAIN_N] == SUPPRESSED and row[so.PROCEDURES] == 120
    assert np.isnan(row[[so.VAS_PRE_MEAN, so.VAS_POST_MEAN, so.VAS_CHANGE_MEAN, so.VAS_CHANGE_LOW]].astype(float)).all()
    assert not np.isnan(float(row[so.KYPHOSIS_MEAN]))
    _assert_published_safely(table)


@pytest.mark.slow
def test_sample_registry_publishes_no_small_or_recoverable_count():
    procedures = pd.read_parquet(SAMPLE / "procedures.parquet")
    levels = pd.read_parquet(SAMPLE / "levels.parquet")
    table = so.seed_outcomes(procedures, levels)
    total = _row(table, so.ALL_SITES)
    assert total[so.PROCEDURES] == len(procedures) and total[so.LEVELS] == len(levels)
    assert len(table) == procedures[s.SITE_ID].nunique() + 1
    assert all(table[c].dtype == object for c in so.COUNT_COLUMNS)
    _assert_published_safely(table)


@pytest.mark.parametrize(("change", "message"), [
    (lambda p, lv: (p.drop(columns=[s.PAIN_VAS_POST]), lv), "procedures must have the columns.*missing: pain_vas_post"),
    (lambda p, lv: (p, lv.drop(columns=[s.LEAKAGE])), "levels must have the columns.*missing: leakage"),
    (lambda p, lv: (p.iloc[:0], lv.iloc[:0]), "procedures must not be empty"),
    (lambda p, lv: (p.iloc[1:], lv), r"every level's procedure_id must be in procedures; 2 rows break it \(rows 0, 1"),
    (lambda p, lv: (pd.concat([p, p.iloc[:1]]), lv), "procedure_id must be unique; 2 rows"),
    (lambda p, lv: (p.assign(**{s.SITE_ID: p[s.SITE_ID].where(p.index != 3)}), lv),
     r"site_id must not be missing.*rows 3\)"),
])
def test_bad_input_is_refused_precisely(change, message):
    procedures, levels = change(*_registry({"A": 20}))
    with pytest.raises(ValueError, match=message):
        so.seed_outcomes(procedures, levels)
