"""Small-cell suppression: primary, complement pairs, whole rows, complementary cells, and the checkers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.suppression import (SMALL_CELL, SUPPRESSED, Unprotectable, is_small, recoverable, small_counts,
                                 suppress_table)

PAIR = {"events": "n"}
RATE = {"rate": ("events", "n")}


def _table(n: list[int], events: list[int], **extra: list[object]) -> pd.DataFrame:
    frame = pd.DataFrame({"unit": [f"u{i}" for i in range(len(n))], "n": n, "events": events, **extra})
    return frame.assign(rate=frame["events"] / frame["n"])


def _hidden(column: pd.Series) -> list[bool]:
    return [v == SUPPRESSED for v in column]


def pinned_small_values(true: np.ndarray, hidden: np.ndarray) -> list[int]:
    """True values 1..10 of withheld cells that a reader can pin down from their known sum (independent reference).

    A reader knows the sum S of the k withheld cells and, by some reading, bounds for each: [1, 10] if
    ``"<11"`` is taken at face value (only when k <= S <= 10 k is feasible), [1, inf) if only "not zero"
    is believed, [0, inf) otherwise. Interval arithmetic gives each cell's feasible range.
    """
    k, total = int(hidden.sum()), int(true[hidden].sum())
    pinned: list[int] = []
    for low, high in ((1, SMALL_CELL - 1), (1, np.inf), (0, np.inf)):
        if not k * low <= total <= k * high:
            continue
        for value in true[hidden]:
            lo = max(low, total - (k - 1) * high)
            hi = min(high, total - (k - 1) * low)
            if lo == hi == value and is_small(value):
                pinned.append(int(value))
    return pinned


@pytest.mark.parametrize(("value", "expected"), [
    (0, False), (1, True), (10, True), (11, False), (np.int64(3), True), (7.0, True), ("5", True), (" 12 ", False),
    (SUPPRESSED, False), (None, False), (np.nan, False), (pd.NA, False), (True, False), (-3, False),
])
def test_is_small_is_one_to_ten(value, expected):
    assert is_small(value) is expected


def test_table_without_small_cells_is_unchanged():
    frame = _table([100, 50, 30, 200], [40, 20, 15, 40])
    out = suppress_table(frame, count_columns=["n", "events"], derived=RATE, complements=PAIR)
    assert out["n"].dtype == object and out["events"].dtype == object
    assert out["n"].tolist() == [100, 50, 30, 200] and out["events"].tolist() == [40, 20, 15, 40]
    assert all(type(v) is int for v in out["events"])
    pd.testing.assert_series_equal(out["rate"], frame["rate"])


def test_one_small_cell_withholds_the_smallest_other_non_zero_cell():
    frame = _table([100, 50, 30, 200, 80], [5, 20, 16, 40, 0])
    before = frame.copy()
    out = suppress_table(frame, count_columns=["n", "events"], derived=RATE, complements=PAIR)
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    assert _hidden(out["events"]) == [True, False, True, False, False]  # 16 is the smallest non-zero other
    assert out["rate"].isna().tolist() == [True, False, True, False, False]
    assert out["n"].tolist() == [100, 50, 30, 200, 80]
    total = int(frame["events"].sum())
    rest = sum(v for v in out["events"] if v != SUPPRESSED)
    assert total - rest == 21  # only the sum of the two is known: 1 + 20, 2 + 19, ..., 10 + 11 all fit
    assert not recoverable(out, count_column="events", totals=total)
    assert small_counts(out, count_columns=["n", "events"]) == []


def test_small_complement_withholds_events():
    frame = _table([100, 50, 40, 200], [95, 20, 15, 40])  # 100 - 95 = 5 non-events
    out = suppress_table(frame, count_columns=["n", "events"], derived=RATE, complements=PAIR)
    assert out["events"].iloc[0] == SUPPRESSED and out["n"].iloc[0] == 100
    assert _hidden(out["events"]).count(True) >= 2
    non_events = [n - e if e != SUPPRESSED else SUPPRESSED for n, e in zip(out["n"], out["events"])]
    assert not recoverable(pd.DataFrame({"x": non_events}), count_column="x",
                           totals=int((frame["n"] - frame["events"]).sum()))


def test_small_row_total_withholds_the_whole_row():
    frame = _table([100, 50, 8, 200, 13], [70, 20, 0, 40, 6], mean=[1.0, 2.0, 3.0, 4.0, 5.0])
    out = suppress_table(frame, count_columns=["n", "events"], derived={**RATE, "mean": ("n",)}, complements=PAIR,
                         row_total="n")
    assert out.loc[2, "n"] == SUPPRESSED and out.loc[2, "events"] == SUPPRESSED  # even its zero
    assert np.isnan(out.loc[2, "rate"]) and np.isnan(out.loc[2, "mean"])
    assert out.loc[4, "n"] == SUPPRESSED  # complementary partner of the n column: 13 is the smallest
    assert small_counts(out, count_columns=["n", "events"]) == []
    for column in ("n", "events"):
        assert not recoverable(out, count_column=column, totals=int(frame[column].sum()))


@pytest.mark.parametrize("events", [[1, 1, 30, 50], [10, 10, 30, 50]])
def test_withheld_cells_forced_to_all_ones_or_all_tens_get_a_third(events):
    frame = pd.DataFrame({"events": events})
    out = suppress_table(frame, count_columns=["events"])
    assert _hidden(out["events"]) == [True, True, True, False]
    assert pinned_small_values(np.array(events), np.array(_hidden(out["events"]))) == []


def test_zero_cell_is_withheld_only_when_no_non_zero_cell_is_left():
    out = suppress_table(pd.DataFrame({"events": [0, 4, 20]}), count_columns=["events"])
    assert _hidden(out["events"]) == [False, True, True]
    out = suppress_table(pd.DataFrame({"events": [0, 4, 0, 0]}), count_columns=["events"])
    assert _hidden(out["events"]) == [True, True, False, False]


def test_groups_are_protected_separately():
    frame = pd.DataFrame({"outcome": ["a"] * 3 + ["b"] * 3, "events": [3, 40, 50, 60, 70, 80]})
    out = suppress_table(frame, count_columns=["events"], group_by=["outcome"])
    assert _hidden(out["events"]) == [True, True, False, False, False, False]
    totals = frame.groupby("outcome")["events"].sum().to_dict()
    assert not recoverable(out, count_column="events", group_by=["outcome"], totals=totals)


def test_total_row_is_withheld_when_nothing_else_protects_the_group():
    frame = pd.DataFrame({"events": [1] * 11 + [11]})
    out = suppress_table(frame, count_columns=["events"], total_rows=np.arange(12) == 11)
    assert _hidden(out["events"]) == [True] * 12


def test_total_published_elsewhere_that_would_reveal_cells_is_refused():
    with pytest.raises(Unprotectable, match="cannot be protected.*total_rows"):
        suppress_table(pd.DataFrame({"events": [1] * 11}), count_columns=["events"])


def test_an_unprotectable_table_can_be_withheld_whole_instead():
    frame = pd.DataFrame({"n": [40, 30], "events": [5, 0], "rate": [5 / 40, 0.0]})
    with pytest.raises(Unprotectable):
        suppress_table(frame.iloc[:1], count_columns=["n", "events"], derived={"rate": ["events"]})
    out = suppress_table(frame.iloc[:1], count_columns=["n", "events"], derived={"rate": ["events"]},
                         unprotectable="withhold")
    assert out["n"].tolist() == [SUPPRESSED] and out["events"].tolist() == [SUPPRESSED] and out["rate"].isna().all()
    # a table that can be protected is the same with either choice
    pd.testing.assert_frame_equal(suppress_table(frame, count_columns=["n", "events"], unprotectable="withhold"),
                                  suppress_table(frame, count_columns=["n", "events"]))
    with pytest.raises(ValueError, match="unprotectable must be"):
        suppress_table(frame, count_columns=["n"], unprotectable="ignore")


def test_recoverable_reads_published_tables():
    one = pd.DataFrame({"g": ["a", "a", "b", "b"], "x": [SUPPRESSED, 30, SUPPRESSED, SUPPRESSED]})
    assert recoverable(one, count_column="x", group_by=["g"], totals={"a": 35})
    assert not recoverable(one, count_column="x", group_by=["g"], totals={("a",): SUPPRESSED, ("b",): 40})
    assert recoverable(one, count_column="x", group_by=["g"], totals={("b",): 2})  # both must be 1
    assert recoverable(one, count_column="x", group_by=["g"], totals={"b": 20})  # both must be 10
    assert not recoverable(one, count_column="x", group_by=["g"], totals={})
    as_text = pd.DataFrame({"x": ["12", SUPPRESSED, SUPPRESSED]})
    assert not recoverable(as_text, count_column="x", totals=30)
    with pytest.raises(ValueError, match="must map each group"):
        recoverable(one, count_column="x", group_by=["g"], totals=10)


def test_small_counts_finds_numbers_and_numeric_text():
    frame = pd.DataFrame({"n": [5, 50, SUPPRESSED, "7", 0], "label": ["a", "b", "c", "d", "e"]}, index=list("vwxyz"))
    assert small_counts(frame, count_columns=["n"]) == [("v", "n"), ("y", "n")]
    with pytest.raises(ValueError, match="count_columns must name columns.*missing: k"):
        small_counts(frame, count_columns=["k"])


@pytest.mark.parametrize(("frame", "options", "message"), [
    (pd.DataFrame({"n": [5, -1]}), {}, r"n must be a whole number of cases >= 0.*1 rows break it \(rows 1\)"),
    (pd.DataFrame({"n": [5.5, None]}), {}, r"whole number.*2 rows break it \(rows 0, 1\)"),
    (pd.DataFrame({"n": ["5", SUPPRESSED]}), {}, r"whole number.*1 rows break it \(rows 1\)"),
    (pd.DataFrame({"n": [5, 8], "events": [6, 1]}), {"complements": PAIR}, r"events must not exceed n; 1 rows"),
    (pd.DataFrame({"n": [5], "rate": [0.1]}), {"derived": {"rate": ["events"]}}, "not counts: events"),
    (pd.DataFrame({"n": [5], "events": [1]}), {"derived": {"events": ["n"]}, "count_columns": ["n", "events"]},
     "either a count or derived"),
    (pd.DataFrame({"n": [5, 6]}), {"total_rows": np.array([False, True])}, "each total row must equal the sum"),
    (pd.DataFrame({"n": [5, 5]}), {"total_rows": np.array([True, True])}, "exactly one row in each group"),
    (pd.DataFrame({"n": [5, 5]}), {"total_rows": [1, 0]}, "boolean mask"),
    (pd.DataFrame({"n": [5]}), {"group_by": ["site"]}, "group_by must name columns.*missing: site"),
])
def test_bad_input_is_refused_precisely(frame, options, message):
    options = {"count_columns": [c for c in ("n", "events") if c in frame.columns], **options}
    with pytest.raises(ValueError, match=message):
        suppress_table(frame, **options)


# ------------------------------------------------------------------------------- property test
@st.composite
def count_tables(draw):
    """Groups of (n, events) rows with a total row each; counts drawn near the small-cell boundary."""
    rows = []
    for group in range(draw(st.integers(1, 3))):
        cells = []
        for _ in range(draw(st.integers(1, 6))):
            n = draw(st.one_of(st.integers(0, 14), st.integers(15, 60)))
            events = draw(st.one_of(st.integers(0, n), st.integers(max(n - 12, 0), n)))
            cells.append((n, events))
        rows += [(group, False, n, e) for n, e in cells]
        rows.append((group, True, sum(n for n, _ in cells), sum(e for _, e in cells)))
    frame = pd.DataFrame(rows, columns=["g", "total", "n", "events"])
    return frame.assign(rate=frame["events"] / frame["n"].where(frame["n"] > 0))


def _assert_safe(frame: pd.DataFrame, out: pd.DataFrame, total: np.ndarray) -> None:
    assert small_counts(out, count_columns=["n", "events"]) == []
    hidden = {c: np.array(_hidden(out[c])) for c in ("n", "events")}
    assert out["rate"][hidden["n"] | hidden["events"]].isna().all()
    lines = {c: (frame[c].to_numpy(), hidden[c]) for c in ("n", "events")}
    lines["n - events"] = ((frame["n"] - frame["events"]).to_numpy(), hidden["n"] | hidden["events"])
    for name, (true, unknown) in lines.items():
        for group in frame["g"].unique():
            cells = (frame["g"] == group).to_numpy() & ~total
            total_row = (frame["g"] == group).to_numpy() & total
            if total_row.any() and unknown[total_row].any():
                continue  # no published margin
            assert pinned_small_values(true[cells], unknown[cells]) == [], (name, group)
            if name != "n - events":
                published = out[cells].assign(**{name: [SUPPRESSED if h else v
                                                        for v, h in zip(true[cells], unknown[cells])]})
                assert not recoverable(published, count_column=name, totals=int(true[cells].sum()))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(count_tables())
def test_property_no_small_count_left_and_none_recoverable_from_totals(frame):
    total = frame["total"].to_numpy()
    out = suppress_table(frame, count_columns=["n", "events"], group_by=["g"], derived=RATE, complements=PAIR,
                         row_total="n", total_rows=total)
    _assert_safe(frame, out, total)


@settings(max_examples=60, deadline=None)
@given(count_tables())
def test_property_totals_published_elsewhere_are_protected_or_refused(frame):
    cells = frame[~frame["total"]].reset_index(drop=True)
    try:
        out = suppress_table(cells, count_columns=["n", "events"], group_by=["g"], derived=RATE, complements=PAIR)
    except ValueError as error:
        assert "cannot be protected" in str(error)
        return
    _assert_safe(cells, out, np.zeros(len(cells), dtype=bool))
