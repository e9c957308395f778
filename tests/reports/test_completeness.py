"""Completeness per site: counts, year-adjusted follow-up, volume against the site's own share, safe publication."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from models.suppression import SUPPRESSED, recoverable, small_counts
from records import schema as s
from reports import completeness as cp

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
OLD_YEARS = (2019, 2020, 2021, 2022, 2023)
LATEST = 2024


def _site(name: str, per_year: dict[int, int], *, no_follow_up: dict[int, int] | None = None, not_assessed: int = 0,
          no_imaging: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One level per procedure; the first procedures of a year lack follow-up; the first levels lack leakage
    assessment, the next ones imaging."""
    ids, years, infection = [], [], []
    for year, count in per_year.items():
        missing = (no_follow_up or {}).get(year, 0)
        ids += [f"{name}-{year}-{k}" for k in range(count)]
        years += [year] * count
        infection += [None] * missing + [False] * (count - missing)
    procedures = pd.DataFrame({s.PROCEDURE_ID: ids, s.SITE_ID: name, s.PROCEDURE_YEAR: pd.array(years, dtype="Int64"),
                               s.INFECTION_90D: pd.array(infection, dtype="boolean")})
    n = len(ids)
    leakage = [None] * not_assessed + [False] * (n - not_assessed)
    imaging = [None] * (not_assessed + no_imaging) + ["xray"] * (n - not_assessed - no_imaging)
    levels = pd.DataFrame({s.PROCEDURE_ID: ids, s.LEAKAGE: pd.array(leakage, dtype="boolean"),
                           s.LEAKAGE_IMAGING: pd.array(imaging, dtype="string")})
    return procedures, levels


def _ordinary(name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """100 procedures a year, a partial latest year (40), follow-up lag in the latest year (60% missing)."""
    return _site(name, {**{y: 100 for y in OLD_YEARS}, LATEST: 40},
                 no_follow_up={**{y: 2 for y in OLD_YEARS}, LATEST: 24}, not_assessed=12, no_imaging=11)


def _registry(*parts: tuple[pd.DataFrame, pd.DataFrame], ordinary: int = 6) -> tuple[pd.DataFrame, pd.DataFrame]:
    parts = tuple(_ordinary(f"S{k:02d}") for k in range(ordinary)) + parts
    return (pd.concat([p for p, _ in parts], ignore_index=True), pd.concat([lv for _, lv in parts], ignore_index=True))


def _row(result: cp.Completeness | pd.DataFrame, site: str) -> pd.Series:
    table = result.table if isinstance(result, cp.Completeness) else result
    return table.set_index(s.SITE_ID).loc[site]


def test_counts_per_site_and_per_year():
    procedures, levels = _registry(_site("A", {2022: 30, LATEST: 20}, no_follow_up={LATEST: 5}, not_assessed=4,
                                          no_imaging=3))
    extra = pd.DataFrame({s.PROCEDURE_ID: ["A-2022-0"], s.LEAKAGE: pd.array([None], dtype="boolean"),
                          s.LEAKAGE_IMAGING: pd.array([None], dtype="string")})  # a second level, not assessed
    result = cp.site_completeness(procedures, pd.concat([levels, extra], ignore_index=True))
    a = _row(result, "A")
    assert (a[cp.PROCEDURES], a[cp.LEVELS], a[cp.LEAKAGE_NOT_ASSESSED], a[cp.LEAKAGE_ASSESSED]) == (50, 51, 5, 46)
    assert a[cp.IMAGING_MISSING] == 3  # levels not assessed are not counted again as missing imaging
    assert a[cp.INFECTION_MISSING] == 5
    assert (a[cp.LATEST_PROCEDURES], a[cp.BASELINE_PROCEDURES], a[cp.RECENT_PROCEDURES]) == (20, 30, 50)
    assert a[cp.LEAKAGE_SHARE] == pytest.approx(5 / 51) and a[cp.IMAGING_SHARE] == pytest.approx(3 / 46)
    registry_not_assessed = (6 * 12 + 5) / (6 * 540 + 51)
    assert a[cp.LEAKAGE_REGISTRY] == pytest.approx(registry_not_assessed)
    assert a[cp.LEAKAGE_P] == pytest.approx(stats.binom.sf(4, 51, registry_not_assessed))
    by_year = result.by_year[result.by_year[s.SITE_ID] == "A"]
    assert by_year[s.PROCEDURE_YEAR].tolist() == [2022, LATEST] and by_year[cp.YEAR_PROCEDURES].tolist() == [30, 20]
    assert by_year[cp.INFECTION_MISSING].tolist() == [0, 5]
    assert list(result.table[s.SITE_ID]) == sorted(result.table[s.SITE_ID])


def test_follow_up_is_judged_against_the_registry_in_the_same_years():
    recent = _site("NEW", {2023: 50, LATEST: 50}, no_follow_up={2023: 1, LATEST: 30})
    late = _site("LATE", {**{y: 100 for y in OLD_YEARS}, LATEST: 40},
                 no_follow_up={**{y: 12 for y in OLD_YEARS}, LATEST: 24})
    result = cp.site_completeness(*_registry(recent, late))
    new = _row(result, "NEW")
    share_2023 = (6 * 2 + 1 + 12) / (6 * 100 + 50 + 100)
    share_latest = (6 * 24 + 30 + 24) / (6 * 40 + 50 + 40)
    assert new[cp.INFECTION_EXPECTED] == pytest.approx(50 * share_2023 + 50 * share_latest)
    assert new[cp.INFECTION_SHARE] > cp.MAX_MISSING_SHARE  # 31% missing, but that is the lag of recent years
    assert not new[cp.INFECTION_FLAG] and not new[cp.POOR]
    bad = _row(result, "LATE")
    exact = stats.poisson.sf(bad[cp.INFECTION_MISSING] - 1, bad[cp.INFECTION_EXPECTED])
    assert bad[cp.INFECTION_P] == pytest.approx(exact)
    assert bad[cp.INFECTION_FLAG] and bad[cp.POOR]
    assert any(r.startswith("90-day infection follow-up missing for 16% of procedures") for r in bad[cp.REASONS])


def test_leakage_fails_on_absolute_share_or_clear_excess_over_the_registry():
    absolute = _site("ABS", {y: 40 for y in OLD_YEARS}, not_assessed=50)  # 25%
    relative = _site("REL", {y: 100 for y in OLD_YEARS}, not_assessed=40)  # 8% against about 2.2%
    slight = _site("SLI", {y: 100 for y in OLD_YEARS}, not_assessed=15)  # 3%
    result = cp.site_completeness(*_registry(absolute, relative, slight))
    assert _row(result, "ABS")[cp.LEAKAGE_FLAG] and _row(result, "REL")[cp.LEAKAGE_FLAG]
    rel = _row(result, "REL")
    assert rel[cp.LEAKAGE_P] < cp.ALPHA and rel[cp.LEAKAGE_RATIO] >= cp.MIN_RATIO
    assert rel[cp.REASONS][0] == f"leakage not assessed for 8.0% of levels (registry {rel[cp.LEAKAGE_REGISTRY]:.1%})"
    assert not _row(result, "SLI")[cp.LEAKAGE_FLAG]
    assert not _row(result, "S00")[cp.POOR]
    looser = cp.site_completeness(*_registry(absolute, relative, slight), max_missing_share=0.3, min_ratio=10)
    assert not _row(looser, "ABS")[cp.LEAKAGE_FLAG] and not _row(looser, "REL")[cp.LEAKAGE_FLAG]


def test_imaging_is_judged_among_levels_assessed_for_leakage():
    result = cp.site_completeness(*_registry(_site("IMG", {y: 60 for y in OLD_YEARS}, no_imaging=90)))
    row = _row(result, "IMG")
    assert row[cp.IMAGING_FLAG] and row[cp.IMAGING_SHARE] == pytest.approx(0.3)
    assert "imaging not recorded for 30% of levels assessed for leakage" in row[cp.REASONS][0]


def test_small_site_gets_no_verdict_and_says_so():
    result = cp.site_completeness(*_registry(_site("SMALL", {2020: 20}, not_assessed=20, no_follow_up={2020: 20})))
    row = _row(result, "SMALL")
    assert not row[cp.POOR] and row[cp.REASONS] == []
    assert "leakage assessment not judged: 20 levels (fewer than 30)" in row[cp.NOTES]
    assert "90-day infection follow-up not judged: 20 procedures (fewer than 30)" in row[cp.NOTES]
    lower = cp.site_completeness(*_registry(_site("SMALL", {2020: 20}, not_assessed=20)), min_rows=10)
    assert _row(lower, "SMALL")[cp.LEAKAGE_FLAG]  # judged, and failed, with a lower minimum


def test_a_drop_in_the_latest_year_share_fails_but_a_partial_latest_year_does_not():
    drop = _site("DROP", {**{y: 100 for y in OLD_YEARS}, LATEST: 5})
    result = cp.site_completeness(*_registry(drop))
    row, ordinary = _row(result, "DROP"), _row(result, "S00")
    registry_latest, registry_baseline = 6 * 40 + 5, 7 * 300
    assert row[cp.LATEST_EXPECTED] == pytest.approx(registry_latest * 300 / registry_baseline)
    assert row[cp.VOLUME_P] == pytest.approx(stats.hypergeom.cdf(5, registry_latest + registry_baseline,
                                                                 registry_latest, 305))
    assert row[cp.VOLUME_FLAG] and row[cp.POOR]
    assert row[cp.REASONS] == ["2024 volume 0.14 times the site's share of the years before "
                               "(5 procedures, 35 expected)"]
    assert ordinary[cp.VOLUME_RATIO] == pytest.approx(40 / 35) and not ordinary[cp.VOLUME_FLAG]
    assert "2021-2023" in result.method and "2024 volume" in result.method


def test_a_new_site_has_no_volume_verdict():
    result = cp.site_completeness(*_registry(_site("NEW", {LATEST: 80})))
    assert not _row(result, "NEW")[cp.VOLUME_FLAG]
    assert "latest-year volume not judged: 0 procedures in the baseline years (fewer than 30)" in \
        _row(result, "NEW")[cp.NOTES]


# --------------------------------------------------------------------------------------------- publication
_CHECK_COUNTS = {cp.LEAKAGE_FLAG: (cp.LEVELS, cp.LEAKAGE_ASSESSED),
                 cp.IMAGING_FLAG: (cp.LEAKAGE_ASSESSED, cp.IMAGING_MISSING),
                 cp.INFECTION_FLAG: (cp.PROCEDURES, cp.INFECTION_MISSING),
                 cp.VOLUME_FLAG: (cp.RECENT_PROCEDURES, cp.LATEST_PROCEDURES)}
_REASON_START = {cp.LEAKAGE_FLAG: "leakage not assessed", cp.IMAGING_FLAG: "imaging not recorded",
                 cp.INFECTION_FLAG: "90-day infection follow-up", cp.VOLUME_FLAG: "2024 volume"}


def _is(verdict: object, value: bool) -> bool:
    return not pd.isna(verdict) and bool(verdict) is value


def _publication_registry() -> cp.Completeness:
    hidden_fail = _site("W48", {2020: 48}, not_assessed=10)  # 20.8% > 20%: fails on a count of 10
    hidden_pass = _site("N40", {2020: 40}, not_assessed=3)  # passes on a count of 3
    both = _site("BOTH", {2020: 48}, not_assessed=10, no_follow_up={2020: 25})
    tiny = _site("TINY", {2020: 8}, not_assessed=8)
    # the smallest cells above 10: complementary suppression withholds these to protect TINY's
    pad = _site("PAD", {2022: 14, LATEST: 12}, no_follow_up={LATEST: 12}, no_imaging=11)
    return cp.site_completeness(*_registry(hidden_fail, hidden_pass, both, tiny, pad))


def test_published_table_has_no_small_count_and_no_recoverable_cell():
    result = _publication_registry()
    published = result.published()
    assert small_counts(published, count_columns=cp.COUNT_COLUMNS) == []
    for column in cp.COUNT_COLUMNS:
        assert not recoverable(published, count_column=column, totals=int(result.table[column].sum())), column
    tiny = _row(published, "TINY")
    assert all(tiny[c] == SUPPRESSED for c in cp.COUNT_COLUMNS)
    assert np.isnan(tiny[cp.LEAKAGE_SHARE]) and np.isnan(tiny[cp.INFECTION_EXPECTED]) and tiny[cp.LEAKAGE_FLAG] is None
    assert pd.isna(tiny[cp.POOR]) and tiny[cp.REASONS] == []
    assert _row(published, "PAD")[cp.PROCEDURES] == SUPPRESSED  # 26 withheld: TINY's 8 from the total otherwise
    ordinary = _row(published, "S01")
    assert ordinary[cp.PROCEDURES] == 540 and ordinary[cp.LEAKAGE_NOT_ASSESSED] == 12
    assert ordinary[cp.LEAKAGE_SHARE] == pytest.approx(12 / 540)
    assert _is(ordinary[cp.POOR], False) and ordinary[cp.NOTES] == []
    assert list(published.columns) == list(result.table.columns)


def test_published_verdict_never_rests_on_a_withheld_count():
    result = _publication_registry()
    published = result.published()
    raw, shown = _row(result, "W48"), _row(published, "W48")
    assert raw[cp.POOR] and raw[cp.LEAKAGE_FLAG]  # internally: failed on 10 of 48 levels
    assert shown[cp.LEAKAGE_NOT_ASSESSED] == SUPPRESSED and shown[cp.LEAKAGE_FLAG] is None
    assert pd.isna(shown[cp.POOR]) and shown[cp.REASONS] == []  # neither True nor False: both bound the count
    assert "leakage assessment not judged here: counts withheld" in shown[cp.NOTES]
    assert not _row(result, "N40")[cp.POOR] and pd.isna(_row(published, "N40")[cp.POOR])  # False bounds it too
    both = _row(published, "BOTH")
    assert _is(both[cp.POOR], True) and len(both[cp.REASONS]) == 1  # the published failure stands; the other is unsaid
    assert both[cp.REASONS][0].startswith("90-day infection follow-up missing for 52% of procedures")
    for _, row in published.iterrows():
        published_checks = {flag: all(row[c] != SUPPRESSED for c in counts) for flag, counts in _CHECK_COUNTS.items()}
        for flag, shown_counts in published_checks.items():
            said = any(r.startswith(_REASON_START[flag]) for r in row[cp.REASONS])
            assert said == (shown_counts and bool(row[flag])), (row[s.SITE_ID], flag)
            assert (row[flag] is None) == (not shown_counts)
        if _is(row[cp.POOR], False):
            assert all(published_checks.values()), row[s.SITE_ID]


def test_sample_registry_end_to_end():
    result = cp.site_completeness(pd.read_parquet(SAMPLE / "procedures.parquet"),
                                  pd.read_parquet(SAMPLE / "levels.parquet"))
    published = result.published()
    assert len(published) == result.table[s.SITE_ID].nunique()
    assert small_counts(published, count_columns=cp.COUNT_COLUMNS) == []
    assert result.table[cp.PROCEDURES].sum() == 20000 and result.latest_year == 2025


# --------------------------------------------------------------------------------------------- input checks
def _bad(kind: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    procedures, levels = _site("A", {2020: 12, 2021: 12})
    if kind == "column":
        return procedures.drop(columns=s.INFECTION_90D), levels
    if kind == "duplicate":
        return pd.concat([procedures, procedures.iloc[[3]]], ignore_index=True), levels
    if kind == "orphan":
        orphan = levels.iloc[[0]].assign(**{s.PROCEDURE_ID: "nowhere"})
        return procedures, pd.concat([levels, orphan], ignore_index=True)
    if kind == "year":
        return procedures.assign(**{s.PROCEDURE_YEAR: pd.array([None] + [2020] * 23, dtype="Int64")}), levels
    if kind == "site":
        return procedures.assign(**{s.SITE_ID: [None] + ["A"] * 23}), levels
    if kind == "empty":
        return procedures.iloc[:0], levels.iloc[:0]
    return procedures, levels


@pytest.mark.parametrize(("kind", "options", "message"), [
    ("column", {}, "procedures must have the columns .*; missing: infection_90d"),
    ("duplicate", {}, r"procedure_id must be unique; 1 rows break it \(rows 24\)"),
    ("orphan", {}, r"levels: every procedure_id must be a procedure of procedures; 1 rows break it \(rows 24\)"),
    ("year", {}, r"procedure_year must be a whole year, not missing; 1 rows break it \(rows 0\)"),
    ("site", {}, "site_id must not be missing"),
    ("empty", {}, "procedures must have at least one row"),
    ("ok", {"max_missing_share": 20}, "max_missing_share must be strictly between 0 and 1; got 20"),
    ("ok", {"min_ratio": 0.5}, "min_ratio must be a number of at least 1"),
    ("ok", {"alpha": 0}, "alpha must be strictly between 0 and 1"),
    ("ok", {"min_rows": 2.5}, "min_rows must be a whole number of at least 1"),
    ("ok", {"latest_year": 2025}, r"latest_year must be a procedure year with procedures \(2020-2021\); got 2025"),
])
def test_bad_input_fails_naming_the_rule(kind, options, message):
    with pytest.raises(ValueError, match=message):
        cp.site_completeness(*_bad(kind), **options)
