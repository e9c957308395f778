"""Coercion: raw columns as a source gives them -> the contract's dtypes, with every unreadable cell recorded.

CSV quirks handled here: surrounding blanks, booleans as true/false/1/0/yes/no in any case, categories in
any case, empty cells and NA/NULL as missing. A cell that cannot be read becomes missing in the typed frame
and a failure row that the validator turns into a quarantine reason: rule ``type`` (not a number, not a
boolean), ``range`` (a whole number too large to hold exactly) or ``control_character`` (a NUL, a line
break or another C0 control character other than tab, or DEL, anywhere in a text cell: never stripped
or cut off silently, and never echoed).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd
import pyarrow as pa

from records.errors import ContractError
from records.schema import (
    RULE_CONTROL_CHARACTER,
    RULE_RANGE,
    RULE_TYPE,
    TEXT_DTYPE,
    ColumnSpec,
    TableSpec,
)

FAILURE_COLUMNS = ("index", "column", "rule", "value")
MISSING_TOKENS = ("", "na", "n/a", "null", "none", "nan")
"""Cell texts read as missing, in any case, once blanks around them are stripped."""
CONTROL_CHARACTERS = r"[\x00-\x08\x0A-\x1F\x7F]"
"""A C0 control character other than tab (U+0000-U+0008, U+000A-U+001F) or DEL (U+007F), as a regular
expression for RE2 (pyarrow) and Python alike."""
LARGEST_EXACT_INTEGER = 2**53
"""The largest magnitude a whole number may have: every integer up to it is exact as a float64 (and in every
Parquet, SQL or pandas integer type); beyond it a value would be rounded or would wrap around in Int64."""

_TRUE_TOKENS = ("true", "1", "yes")
_FALSE_TOKENS = ("false", "0", "no")
_VALUE_CHARS = 40
_WITHHELD_RULES = frozenset({RULE_CONTROL_CHARACTER})
"""Rules whose cell is never shown: a control character could be anything, including a line of another file."""
_Failed = dict[str, np.ndarray]
"""Rule -> boolean mask of the cells of a column that broke it (masks of one column are disjoint)."""


@dataclass(frozen=True)
class CoercedTable:
    """A table in the contract's dtypes and the cells that could not be read."""

    frame: pd.DataFrame
    failures: pd.DataFrame
    dropped_columns: tuple[str, ...]


def coerce_table(raw: pd.DataFrame, table: TableSpec) -> CoercedTable:
    """Type one raw table by the contract.

    Parameters
    ----------
    raw
        The table as read; its index labels rows and is kept. Not modified.
    table
        The contract table to coerce to.

    Returns
    -------
    CoercedTable
        ``frame`` has exactly the contract columns in contract order (an absent optional column is all
        missing); ``failures`` has one row per unreadable cell, with columns :data:`FAILURE_COLUMNS`
        (``rule`` is ``type``, ``range`` or ``control_character``; ``value`` is the cell's text, cut to 40
        characters, or None for a key column or a control character); ``dropped_columns`` lists columns the
        contract does not know.

    Raises
    ------
    ContractError
        A required column is absent.
    """
    missing = [name for name in table.required_names if name not in raw.columns]
    if missing:
        raise ContractError(f"table {table.name}: required column(s) absent: {', '.join(missing)}")
    columns: dict[str, pd.Series] = {}
    failures: list[pd.DataFrame] = []
    for spec in table.columns:
        if spec.name not in raw.columns:
            columns[spec.name] = pd.Series(pd.NA, index=raw.index, dtype=spec.pandas_dtype)
            continue
        typed, failed = _coerce(raw[spec.name], spec)
        columns[spec.name] = typed
        failures.extend(_failure_rows(raw[spec.name], mask, spec, rule=rule)
                        for rule, mask in failed.items() if mask.any())
    frame = pd.DataFrame(columns, index=raw.index)
    dropped = tuple(c for c in raw.columns if c not in table.names)
    failure_frame = (pd.concat(failures, ignore_index=True) if failures
                     else pd.DataFrame({c: pd.Series(dtype="object") for c in FAILURE_COLUMNS}))
    return CoercedTable(frame=frame, failures=failure_frame, dropped_columns=dropped)


def coerce_column(values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    """One column to its contract dtype.

    Parameters
    ----------
    values
        The column as read (any dtype); not modified.
    spec
        The contract column.

    Returns
    -------
    (typed, rules)
        ``typed`` in ``spec.pandas_dtype``, missing where a cell could not be read; ``rules`` (object, same
        index) names the rule each such cell broke (``type``, ``range``, ``control_character``) and is None
        elsewhere. A cell breaks at most one rule.
    """
    typed, failed = _coerce(values, spec)
    rules = np.full(len(values), None, dtype=object)
    for rule, mask in failed.items():
        rules[mask] = rule
    return typed, pd.Series(rules, index=values.index, dtype=object)


def _coerce(values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, _Failed]:
    if spec.kind in ("id", "category", "sites"):
        text, control = _as_text(values)
        if spec.kind != "id":
            text = text.str.lower()
        if spec.kind == "sites":
            text = text.str.replace(r"\s*;\s*", ";", regex=True)
        return text, {RULE_CONTROL_CHARACTER: control}
    if spec.kind == "bool":
        return _to_bool(values)
    return _to_number(values, integer=spec.kind == "int")


def _is_text(values: pd.Series) -> bool:
    """Text to strip and screen: string and object columns, and categoricals (a dictionary-encoded Parquet column)."""
    dtype = values.dtype
    return pd.api.types.is_string_dtype(dtype) or dtype == object or isinstance(dtype, pd.CategoricalDtype)


def _as_text(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``(text, control)``: the cells as Arrow text, blanks around them stripped and missing tokens missing,
    and a mask of the cells holding a control character (checked before stripping; missing in ``text``)."""
    if not _is_text(values):
        return values.astype(TEXT_DTYPE), np.zeros(len(values), dtype=bool)
    text = values.astype(TEXT_DTYPE)
    control = _control_cells(text)
    text = text.str.strip()
    missing = text.str.lower().isin(MISSING_TOKENS).to_numpy(dtype=bool, na_value=False) | control
    return text.mask(missing), control


def _control_cells(text: pd.Series) -> np.ndarray:
    """Mask of the cells of an Arrow text column that hold a control character (:data:`CONTROL_CHARACTERS`).

    The column's bytes are screened first: UTF-8 writes a C0 control or DEL as that very byte, and every byte of a
    multi-byte character is 0x80 or above. A column without such a byte (nearly all) costs one pass of NumPy over
    its buffer instead of a regex pass over its cells (about 15 times faster).
    """
    if not _may_hold_control(text):
        return np.zeros(len(text), dtype=bool)
    return text.str.contains(CONTROL_CHARACTERS, regex=True).to_numpy(dtype=bool, na_value=False)


def _may_hold_control(text: pd.Series) -> bool:
    """False when no data buffer of the column holds a byte of a control character (tab aside); True may also
    come from bytes outside the column's slice or under a missing cell, which the regex then clears."""
    arrow = pa.array(text.array)
    for chunk in arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            return True  # another layout (string views): let the regex decide
        data = chunk.buffers()[2]
        if data is None or data.size == 0:
            continue
        octets = np.frombuffer(data, dtype=np.uint8)
        if octets.min() < 0x20 and np.count_nonzero(octets < 0x20) > np.count_nonzero(octets == 0x09):
            return True
        if np.count_nonzero(octets == 0x7F):
            return True
    return False


def _to_bool(values: pd.Series) -> tuple[pd.Series, _Failed]:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean"), {}
    if pd.api.types.is_numeric_dtype(values.dtype):
        numeric = values.astype("Float64")
        typed = pd.Series(pd.NA, index=values.index, dtype="boolean")
        typed[numeric == 1] = True
        typed[numeric == 0] = False
        bad = numeric.notna() & ~numeric.isin([0, 1])
        return typed, {RULE_TYPE: bad.to_numpy(dtype=bool, na_value=False)}
    text, control = _as_text(values)
    text = text.str.lower()
    typed = pd.Series(pd.NA, index=values.index, dtype="boolean")
    typed[text.isin(_TRUE_TOKENS).fillna(False).astype(bool)] = True
    typed[text.isin(_FALSE_TOKENS).fillna(False).astype(bool)] = False
    bad = (text.notna() & typed.isna()).to_numpy(dtype=bool, na_value=False)
    return typed, {RULE_CONTROL_CHARACTER: control, RULE_TYPE: bad}


def _to_number(values: pd.Series, *, integer: bool) -> tuple[pd.Series, _Failed]:
    control = np.zeros(len(values), dtype=bool)
    text = None
    if pd.api.types.is_bool_dtype(values.dtype):
        parsed = values.astype("Float64")
        present = parsed.notna().to_numpy(dtype=bool)
    elif pd.api.types.is_numeric_dtype(values.dtype):
        parsed = values
        present = parsed.notna().to_numpy(dtype=bool)
    else:
        text, control = _as_text(values)
        present = text.notna().to_numpy(dtype=bool)
        parsed = pd.to_numeric(text, errors="coerce")
    too_large = _beyond_exact(parsed, text) if integer else np.zeros(len(values), dtype=bool)
    numeric = parsed.astype("Float64").mask(too_large)
    numeric = numeric.mask(~np.isfinite(numeric.fillna(0).to_numpy(dtype="float64")))
    bad = present & numeric.isna().to_numpy(dtype=bool) & ~too_large
    if integer:
        fractional = (numeric.notna() & (numeric != numeric.round())).to_numpy(dtype=bool, na_value=False)
        bad = bad | fractional
        numeric = numeric.mask(fractional)
        return numeric.round().astype("Int64"), {RULE_CONTROL_CHARACTER: control, RULE_RANGE: too_large,
                                                 RULE_TYPE: bad}
    return numeric, {RULE_CONTROL_CHARACTER: control, RULE_TYPE: bad}


def _beyond_exact(parsed: pd.Series, text: pd.Series | None) -> np.ndarray:
    """Cells whose number has a magnitude above :data:`LARGEST_EXACT_INTEGER` (infinities are not numbers: left
    to rule ``type``). Integers are compared as integers; a float that rounds to exactly 2**53 is decided on
    its text, since 2**53 + 1 reads as 2**53 in float64."""
    if pd.api.types.is_integer_dtype(parsed.dtype):
        over = parsed > LARGEST_EXACT_INTEGER
        if pd.api.types.is_signed_integer_dtype(parsed.dtype):
            over = over | (parsed < -LARGEST_EXACT_INTEGER)
        return np.asarray(pd.Series(over).to_numpy(dtype=bool, na_value=False))
    numbers = pd.Series(parsed).astype("Float64").to_numpy(dtype="float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        magnitude = np.abs(numbers)
        over = np.isfinite(numbers) & (magnitude > LARGEST_EXACT_INTEGER)
        edge = magnitude == LARGEST_EXACT_INTEGER
    if text is not None and edge.any():
        over[edge] = [_text_beyond_exact(cell) for cell in text.to_numpy(dtype=object)[edge]]
    return over


def _text_beyond_exact(cell: object) -> bool:
    try:
        return abs(Decimal(str(cell))) > LARGEST_EXACT_INTEGER
    except InvalidOperation:  # to_numeric read it and Decimal does not (e.g. '1_000'): keep its float
        return False


def _failure_rows(values: pd.Series, failed: np.ndarray, spec: ColumnSpec, *, rule: str) -> pd.DataFrame:
    if spec.withhold_values or rule in _WITHHELD_RULES:
        shown = None
    else:
        shown = values[failed].astype(TEXT_DTYPE).str.slice(0, _VALUE_CHARS).to_numpy(dtype=object, na_value=None)
    return pd.DataFrame({
        "index": values.index[failed].to_numpy(),
        "column": spec.name,
        "rule": rule,
        "value": shown,
    })
