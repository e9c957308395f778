"""Coercion: raw columns as a source gives them -> the contract's dtypes, with every unparseable cell recorded.

CSV quirks handled here: surrounding blanks, booleans as true/false/1/0/yes/no in any case, categories in
any case, empty cells and NA/NULL as missing. A cell that cannot be parsed becomes missing in the typed
frame and a failure row (rule ``type``) that the validator turns into a quarantine reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from records.errors import ContractError
from records.readers import MISSING_TOKENS
from records.schema import RULE_TYPE, TEXT_DTYPE, ColumnSpec, TableSpec

FAILURE_COLUMNS = ("index", "column", "rule", "value")
_TRUE_TOKENS = ("true", "1", "yes")
_FALSE_TOKENS = ("false", "0", "no")
_VALUE_CHARS = 40


@dataclass(frozen=True)
class CoercedTable:
    """A table in the contract's dtypes and the cells that could not be parsed."""

    frame: pd.DataFrame
    failures: pd.DataFrame
    dropped_columns: tuple[str, ...]


def coerce_table(raw: pd.DataFrame, table: TableSpec) -> CoercedTable:
    """Type one raw table by the contract.

    Parameters
    ----------
    raw
        The table as read; its index labels rows and is kept.
    table
        The contract table to coerce to.

    Returns
    -------
    CoercedTable
        ``frame`` has exactly the contract columns in contract order (an absent optional column is all
        missing); ``failures`` has one row per unparseable cell; ``dropped_columns`` lists columns the
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
        typed, bad = coerce_column(raw[spec.name], spec)
        columns[spec.name] = typed
        if bad.any():
            failures.append(_failure_rows(raw[spec.name], bad, spec))
    frame = pd.DataFrame(columns, index=raw.index)
    dropped = tuple(c for c in raw.columns if c not in table.names)
    failure_frame = (pd.concat(failures, ignore_index=True) if failures
                     else pd.DataFrame({c: pd.Series(dtype="object") for c in FAILURE_COLUMNS}))
    return CoercedTable(frame=frame, failures=failure_frame, dropped_columns=dropped)


def coerce_column(values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.Series]:
    """One column to its contract dtype.

    Returns
    -------
    (typed, unparseable)
        ``typed`` in ``spec.pandas_dtype``; ``unparseable`` is a boolean mask of cells that held a value
        that could not be read as the column's type.
    """
    if spec.kind in ("id", "category", "sites"):
        text = _as_text(values)
        if spec.kind != "id":
            text = text.str.lower()
        if spec.kind == "sites":
            text = text.str.replace(r"\s*;\s*", ";", regex=True)
        return text, pd.Series(False, index=values.index)
    if spec.kind == "bool":
        return _to_bool(values)
    return _to_number(values, integer=spec.kind == "int")


def _as_text(values: pd.Series) -> pd.Series:
    if pd.api.types.is_string_dtype(values.dtype) or values.dtype == object:
        text = values.astype(TEXT_DTYPE).str.strip()
        return text.mask(text.str.lower().isin(MISSING_TOKENS))
    return values.astype(TEXT_DTYPE)


def _to_bool(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean"), pd.Series(False, index=values.index)
    if pd.api.types.is_numeric_dtype(values.dtype):
        numeric = values.astype("Float64")
        typed = pd.Series(pd.NA, index=values.index, dtype="boolean")
        typed[numeric == 1] = True
        typed[numeric == 0] = False
        bad = numeric.notna() & ~numeric.isin([0, 1])
        return typed, bad.fillna(False).astype(bool)
    text = _as_text(values).str.lower()
    typed = pd.Series(pd.NA, index=values.index, dtype="boolean")
    typed[text.isin(_TRUE_TOKENS).fillna(False).astype(bool)] = True
    typed[text.isin(_FALSE_TOKENS).fillna(False).astype(bool)] = False
    bad = text.notna() & typed.isna()
    return typed, bad.fillna(False).astype(bool)


def _to_number(values: pd.Series, *, integer: bool) -> tuple[pd.Series, pd.Series]:
    if pd.api.types.is_bool_dtype(values.dtype):
        numeric = values.astype("Float64")
        present = numeric.notna()
    elif pd.api.types.is_numeric_dtype(values.dtype):
        numeric = values.astype("Float64")
        present = numeric.notna()
    else:
        text = _as_text(values)
        present = text.notna()
        numeric = pd.to_numeric(text, errors="coerce").astype("Float64")
    numeric = numeric.mask(~np.isfinite(numeric.fillna(0).to_numpy(dtype="float64")))
    bad = present & numeric.isna()
    if integer:
        fractional = numeric.notna() & (numeric != numeric.round())
        bad = bad | fractional.fillna(False)
        numeric = numeric.mask(fractional.fillna(False).astype(bool))
        return numeric.round().astype("Int64"), bad.fillna(False).astype(bool)
    return numeric, bad.fillna(False).astype(bool)


def _failure_rows(values: pd.Series, bad: pd.Series, spec: ColumnSpec) -> pd.DataFrame:
    shown = None if spec.withhold_values else values[bad].astype(TEXT_DTYPE).str.slice(0, _VALUE_CHARS)
    return pd.DataFrame({
        "index": values.index[bad.to_numpy()].to_numpy(),
        "column": spec.name,
        "rule": RULE_TYPE,
        "value": shown.to_numpy(dtype=object) if shown is not None else None,
    })
