"""Tests of coercion: control characters are failures (never stripped, never echoed), whole numbers beyond 2**53
are out of range (never wrapped around), and every cell breaks at most one rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from records import schema
from records.coerce import (
    FAILURE_COLUMNS,
    LARGEST_EXACT_INTEGER,
    coerce_column,
    coerce_table,
)
from records.readers import RawBatch
from records.schema import RULE_CONTROL_CHARACTER, RULE_RANGE, RULE_REQUIRED, RULE_TYPE, TEXT_DTYPE
from records.validation import REASON, RULES, validate_batch
from tests.conftest import AS_OF_YEAR, make_batch, make_levels, make_procedures


def as_text(frame: pd.DataFrame, dtype: object = TEXT_DTYPE) -> pd.DataFrame:
    """Every cell as text, as a CSV reader gives it (missing as an empty cell)."""
    return frame.astype(object).where(frame.notna(), "").astype(str).astype(dtype)


def with_cell(frame: pd.DataFrame, column: str, value: object, *, row: int = 0) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype(object)
    frame.loc[frame.index[row], column] = value
    return frame


def failures_of(frame: pd.DataFrame, table: schema.TableSpec) -> list[tuple[object, ...]]:
    failures = coerce_table(frame, table).failures
    assert tuple(failures.columns) == FAILURE_COLUMNS
    return [tuple(row) for row in failures.itertuples(index=False, name=None)]


# --- control characters -------------------------------------------------------------------
CONTROL_CASES = [
    (schema.PROCEDURES, schema.SITE_ID, "S1\x006"),
    (schema.PROCEDURES, schema.SITE_ID, "S01\n"),
    (schema.PROCEDURES, schema.PROCEDURE_ID, "\nP00001"),
    (schema.PROCEDURES, schema.ETIOLOGY, "x\ny"),
    (schema.PROCEDURES, schema.ETIOLOGY, "x\r\ny"),
    (schema.PROCEDURES, schema.ETIOLOGY, "\x1b[31mred"),
    (schema.PROCEDURES, schema.SEX, "f\x7f"),
    (schema.PROCEDURES, schema.SEX, "f\x0b"),
    (schema.PROCEDURES, schema.SEX, "\x1ff"),
    (schema.PROCEDURES, schema.DIABETES, "true\n"),
    (schema.PROCEDURES, schema.ASA_CLASS, "2\r"),
    (schema.PROCEDURES, schema.BMI, "\x0c24.5"),
    (schema.LEVELS, schema.CEMENT_VOLUME_ML, "2\x003.3"),
    (schema.LEVELS, schema.LEAKAGE_SITES, "intradiscal;\nvenous"),
    (schema.LEVELS, schema.VERTEBRA, "l1\x08"),
]


def _text_table(table: schema.TableSpec, dtype: object = TEXT_DTYPE) -> pd.DataFrame:
    procedures = make_procedures(3)
    frame = procedures if table is schema.PROCEDURES else make_levels(procedures)
    return as_text(frame, dtype)


@pytest.mark.parametrize("dtype", [TEXT_DTYPE, object], ids=["arrow", "object"])
@pytest.mark.parametrize(("table", "column", "value"), CONTROL_CASES,
                         ids=[f"{c}-{v!r}" for _, c, v in CONTROL_CASES])
def test_control_character_is_a_failure_not_stripped(table: schema.TableSpec, column: str, value: str,
                                                     dtype: object) -> None:
    clean = _text_table(table, dtype)
    frame = with_cell(clean, column, value, row=1)
    frame[column] = frame[column].astype(dtype)
    coerced = coerce_table(frame, table)
    assert [tuple(r) for r in coerced.failures.itertuples(index=False, name=None)] == [
        (1, column, RULE_CONTROL_CHARACTER, None)]
    assert pd.isna(coerced.frame.loc[1, column])
    expected = coerce_table(clean, table).frame
    expected.loc[1, column] = pd.NA
    pd.testing.assert_frame_equal(coerced.frame, expected)  # only that cell differs from the clean table
    assert frame.loc[1, column] == value  # the raw frame is not modified


def test_control_character_in_a_typed_arrow_column() -> None:
    """A Parquet text column (Arrow-backed) of a contract id column."""
    frame = with_cell(make_procedures(3), schema.SITE_ID, "S1\x006", row=2)
    frame[schema.SITE_ID] = frame[schema.SITE_ID].astype(TEXT_DTYPE)
    assert failures_of(frame, schema.PROCEDURES) == [(2, schema.SITE_ID, RULE_CONTROL_CHARACTER, None)]


@pytest.mark.parametrize(("value", "typed"), [
    ("S1\t6", "S1\t6"),      # a tab inside a value is the format rule's business, as before
    ("S01\t", "S01"),        # blanks and tabs around a value are stripped, as before
    (" S01 ", "S01"),
    ("S01\u00a0", "S01"),    # not a C0 character: handled as before
])
def test_tab_and_blanks_are_not_control_characters(value: str, typed: str) -> None:
    frame = with_cell(_text_table(schema.PROCEDURES), schema.SITE_ID, value)
    coerced = coerce_table(frame, schema.PROCEDURES)
    assert coerced.failures.empty
    assert coerced.frame.loc[0, schema.SITE_ID] == typed


def test_tab_in_a_category_is_kept_for_the_category_rule() -> None:
    frame = with_cell(_text_table(schema.PROCEDURES), schema.ETIOLOGY, "osteo\tporotic")
    coerced = coerce_table(frame, schema.PROCEDURES)
    assert coerced.failures.empty
    assert coerced.frame.loc[0, schema.ETIOLOGY] == "osteo\tporotic"


def test_coerce_column_names_each_cells_rule() -> None:
    values = pd.Series(["1", "2\n", "x", "1e19", None, "3.5", "\x00"], dtype=TEXT_DTYPE)
    typed, rules = coerce_column(values, schema.PROCEDURES.column(schema.ASA_CLASS))
    assert rules.tolist() == [None, RULE_CONTROL_CHARACTER, RULE_TYPE, RULE_RANGE, None, RULE_TYPE,
                              RULE_CONTROL_CHARACTER]
    assert typed.tolist() == [1, pd.NA, pd.NA, pd.NA, pd.NA, pd.NA, pd.NA]
    assert str(typed.dtype) == "Int64"


def test_control_character_in_a_long_sliced_chunked_column() -> None:
    """The byte screen looks at whole Arrow buffers: a control character outside the column's slice is no failure,
    one in a later chunk is found."""
    clean = pd.Series([f"S{i:05d}" for i in range(50_000)], dtype=TEXT_DTYPE)
    dirty = pd.Series(["S\n1"] + [f"S{i:05d}" for i in range(50_000)], dtype=TEXT_DTYPE)
    sliced = dirty.iloc[1:]
    spec = schema.PROCEDURES.column(schema.SITE_ID)
    _, rules = coerce_column(sliced, spec)
    assert rules.notna().sum() == 0
    chunked = pd.concat([clean, dirty], ignore_index=True)
    _, rules = coerce_column(chunked, spec)
    assert rules[rules.notna()].to_dict() == {50_000: RULE_CONTROL_CHARACTER}


@pytest.mark.parametrize("value", ["x\ny", "\x00", "S01\n"])
def test_control_character_cell_is_never_echoed(value: str) -> None:
    for column in (schema.SITE_ID, schema.ETIOLOGY, schema.PROCEDURE_MINUTES):
        frame = with_cell(_text_table(schema.PROCEDURES), column, value)
        failures = coerce_table(frame, schema.PROCEDURES).failures
        assert failures["value"].tolist() == [None]


# --- through validation: one rule per cell ------------------------------------------------
def _quarantined_rules(batch: RawBatch) -> tuple[list[str], list[str]]:
    result = validate_batch(batch, as_of_year=AS_OF_YEAR)
    return (result.procedures.quarantined[RULES].tolist(), result.levels.quarantined[RULES].tolist())


@pytest.mark.parametrize(("column", "value"), [
    (schema.SITE_ID, "S1\x006"), (schema.SITE_ID, "S01\n"), (schema.ETIOLOGY, "x\r\ny"),
    (schema.DIABETES, "true\n"), (schema.ASA_CLASS, "\x002"),
])
def test_required_cell_with_control_character_is_quarantined_once(column: str, value: str) -> None:
    """Not also ``required`` (the typed cell is missing) nor ``type``: the one rule is control_character."""
    batch = make_batch(3)
    procedures = with_cell(as_text(batch.procedures), column, value, row=1)
    levels = as_text(batch.levels)
    result = validate_batch(RawBatch(procedures=procedures, levels=levels, source="memory"), as_of_year=AS_OF_YEAR)
    quarantined = result.procedures.quarantined
    assert quarantined[RULES].tolist() == [RULE_CONTROL_CHARACTER]
    assert quarantined[REASON].tolist() == [schema.rule_message(RULE_CONTROL_CHARACTER, table="procedures",
                                                                column=column)]
    assert RULE_REQUIRED not in quarantined[REASON].iloc[0] and value not in quarantined[REASON].iloc[0]
    assert len(result.procedures.accepted) == 2


def test_level_cell_with_control_character_quarantines_its_procedure() -> None:
    batch = make_batch(3)
    levels = with_cell(as_text(batch.levels), schema.CEMENT_VOLUME_ML, "2\x003.3", row=0)
    proc_rules, level_rules = _quarantined_rules(RawBatch(procedures=as_text(batch.procedures), levels=levels,
                                                          source="memory"))
    assert level_rules[0] == RULE_CONTROL_CHARACTER
    assert proc_rules == [schema.RULE_LEVEL_QUARANTINED]


# --- whole numbers that do not fit ---------------------------------------------------------
BATCH = schema.PROCEDURES.column(schema.EXTRACT_BATCH)


@pytest.mark.parametrize(("values", "dtype", "typed", "rules"), [
    ([9223372036854775807, 1], "Int64", [pd.NA, 1], [RULE_RANGE, None]),
    ([-9223372036854775808, 1], "Int64", [pd.NA, 1], [RULE_RANGE, None]),
    ([9223372036854775807, 1], "int64", [pd.NA, 1], [RULE_RANGE, None]),
    ([2**53, 2**53 + 1], "Int64", [2**53, pd.NA], [None, RULE_RANGE]),
    ([-(2**53), -(2**53) - 1], "Int64", [-(2**53), pd.NA], [None, RULE_RANGE]),
    ([18446744073709551615, 1], "uint64", [pd.NA, 1], [RULE_RANGE, None]),
    (["1e19", "-1e19"], TEXT_DTYPE, [pd.NA, pd.NA], [RULE_RANGE, RULE_RANGE]),
    ([1e19, -1e19, 1e300], "float64", [pd.NA, pd.NA, pd.NA], [RULE_RANGE, RULE_RANGE, RULE_RANGE]),
    (["9223372036854775807", "9223372036854775808", "18446744073709551616"], TEXT_DTYPE,
     [pd.NA, pd.NA, pd.NA], [RULE_RANGE, RULE_RANGE, RULE_RANGE]),
    ([str(2**53), str(2**53 + 1), "1.5"], TEXT_DTYPE, [2**53, pd.NA, pd.NA], [None, RULE_RANGE, RULE_TYPE]),
    ([9223372036854775807, "1"], object, [pd.NA, 1], [RULE_RANGE, None]),
    ([1e15, 2**31, 2**31 - 1, 0, np.nan], "float64", [10**15, 2**31, 2**31 - 1, 0, pd.NA],
     [None, None, None, None, None]),
    (["1e15", str(2**31), str(2**31 - 1), "0", "1.5", "inf", ""], TEXT_DTYPE,
     [10**15, 2**31, 2**31 - 1, 0, pd.NA, pd.NA, pd.NA], [None, None, None, None, RULE_TYPE, RULE_TYPE, None]),
], ids=lambda v: str(v)[:40])
def test_integers_beyond_2_53_are_out_of_range_never_wrapped(values: list[object], dtype: object,
                                                             typed: list[object], rules: list[object]) -> None:
    column, failed = coerce_column(pd.Series(values, dtype=dtype), BATCH)
    assert str(column.dtype) == "Int64"
    assert column.tolist() == typed
    assert failed.tolist() == rules
    assert not (column.dropna() < -LARGEST_EXACT_INTEGER).any()


def test_largest_exact_integer_is_2_53() -> None:
    assert LARGEST_EXACT_INTEGER == 2**53
    assert float(2**53) + 1 == float(2**53)  # the reason: 2**53 + 1 has no float64


def test_float_column_keeps_large_values_for_its_range_rule() -> None:
    values, rules = coerce_column(pd.Series(["1e19"], dtype=TEXT_DTYPE), schema.PROCEDURES.column(schema.BMI))
    assert values.tolist() == [1e19] and rules.tolist() == [None]


def test_range_failure_row_shows_the_number() -> None:
    frame = with_cell(make_procedures(3), schema.EXTRACT_BATCH, 9223372036854775807)
    frame[schema.EXTRACT_BATCH] = frame[schema.EXTRACT_BATCH].astype("Int64")
    assert failures_of(frame, schema.PROCEDURES) == [
        (0, schema.EXTRACT_BATCH, RULE_RANGE, "9223372036854775807")]


@pytest.mark.parametrize(("value", "dtype", "rules"), [
    (9223372036854775807, "Int64", RULE_RANGE),
    ("1e19", TEXT_DTYPE, RULE_RANGE),
    ("-1e19", TEXT_DTYPE, RULE_RANGE),
    (1e15, "Float64", RULE_RANGE),
    (2**31, "Int64", RULE_RANGE),
    (0, "Int64", RULE_RANGE),
    ("1.5", TEXT_DTYPE, RULE_TYPE),
    (2**31 - 1, "Int64", None),
], ids=str)
def test_extract_batch_through_validation(value: object, dtype: object, rules: str | None) -> None:
    batch = make_batch(3)
    procedures = with_cell(batch.procedures, schema.EXTRACT_BATCH, value, row=1)
    procedures[schema.EXTRACT_BATCH] = procedures[schema.EXTRACT_BATCH].astype(dtype)
    result = validate_batch(RawBatch(procedures=procedures, levels=batch.levels, source="memory"),
                            as_of_year=AS_OF_YEAR)
    quarantined = result.procedures.quarantined
    if rules is None:
        assert quarantined.empty
        assert sorted(result.procedures.accepted[schema.EXTRACT_BATCH].tolist()) == [1, 1, 2**31 - 1]
        return
    assert quarantined[RULES].tolist() == [rules]
    if rules == RULE_RANGE:
        assert quarantined[REASON].tolist() == [f"extract_batch must be between 1 and {schema.BATCH_MAX}"]
    assert result.procedures.accepted[schema.EXTRACT_BATCH].tolist() == [1, 1]
