"""The shape of a table's header before any value is read: how many columns, their names, and that each is flat.

A source whose header breaks one of these rules is refused as a whole (:class:`records.errors.ContractError`): too
many columns, two columns that are one column in another case, or a nested column (Parquet struct, list, map or
union; a dict, list or array in a cell). Messages name the table and the column, never a value; a header that itself
looks like an identifier value is named by its position (:func:`records.guard.header_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from records.errors import ContractError

MAX_COLUMNS = 1000
"""The most columns a table may have; the contract's tables have a few dozen, so more is not a contract table (and a
header of 100,000 columns must not cost a screening of each)."""

STRUCT = "struct"
LIST = "list"
MAP = "map"
UNION = "union"

# what pandas.api.types.infer_dtype says of an object column that holds only flat values (skipping missing ones)
_FLAT_INFERRED = frozenset({
    "string", "bytes", "floating", "integer", "mixed-integer-float", "decimal", "complex", "categorical", "boolean",
    "datetime64", "datetime", "date", "timedelta64", "timedelta", "time", "period", "interval", "empty",
})


@dataclass(frozen=True)
class NestedColumn:
    """One nested column of one table; never holds a value.

    Attributes
    ----------
    table
        The table it was found in.
    column
        Its name, or ``"column 3 (name withheld)"`` when the header itself looks like an identifier value.
    kind
        ``"struct"``, ``"list"``, ``"map"`` or ``"union"``.
    """

    table: str
    column: str
    kind: str

    def describe(self) -> str:
        """``meta is a struct column``."""
        return f"{self.column} is a {self.kind} column"


class NestedColumnError(ContractError):
    """A table refused as a whole because it has nested columns; the message names table, column and kind of each.

    Attributes
    ----------
    columns : tuple of NestedColumn
    """

    def __init__(self, columns: Sequence[NestedColumn]) -> None:
        self.columns: tuple[NestedColumn, ...] = tuple(columns)
        tables = dict.fromkeys(c.table for c in self.columns)
        parts = "; ".join(f"table {table}: " + ", ".join(c.describe() for c in self.columns if c.table == table)
                          for table in tables)
        super().__init__(f"{parts}; the contract has flat columns only (one number, text or true/false per cell): "
                         "flatten nested fields into columns of their own at the source, or leave them out of the "
                         "export")

    def __reduce__(self) -> tuple[type[NestedColumnError], tuple[tuple[NestedColumn, ...]]]:
        return (type(self), (self.columns,))


def check_column_names(table: str, names: Sequence[object]) -> None:
    """Refuse a header with too many columns, or with two columns that are one after normalisation.

    Names are compared as ``str(name).strip().lower()``: exact duplicates and case twins (``site_id`` and
    ``SITE_ID``) are one column, which the readers would otherwise merge or rename silently.

    Parameters
    ----------
    table
        The table's name, for the message.
    names
        The header as given (strings, or any objects such as the integers of a CSV read without a header).

    Raises
    ------
    ContractError
        More than :data:`MAX_COLUMNS` columns (checked first, from the count alone), or names that are one column.
        The message names the columns as given, or by position when a header looks like an identifier value.
    """
    count = len(names)
    if count > MAX_COLUMNS:
        raise ContractError(f"table {table} has {count} columns; at most {MAX_COLUMNS} are accepted (the contract's "
                            f"tables have a few dozen): export only the contract's columns")
    given = [str(name) for name in names]
    keys = [name.strip().lower() for name in given]
    if len(set(keys)) == count:
        return
    positions: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        positions.setdefault(key, []).append(position)
    labels = _labels(given)
    problems = [_twin_problem([given[p] for p in group], group, withheld=any(labels[p] != given[p] for p in group))
                for group in positions.values() if len(group) > 1]
    raise ContractError(f"table {table}: " + "; ".join(problems) + "; keep exactly one of each")


def _twin_problem(spellings: list[str], positions: list[int], *, withheld: bool) -> str:
    """``column site_id appears 2 times`` or ``columns site_id and SITE_ID are the same column in another case``.

    When one name of the group looks like an identifier value, all are named by position: its twins spell it too.
    """
    if withheld:
        names = _joined([_withheld(p) for p in positions])
    else:
        names = "columns " + _joined([_quoted(s) for s in spellings])
    if len(set(spellings)) == 1:
        if withheld:
            return f"{names} have the same name"
        return f"column {_quoted(spellings[0])} appears {len(spellings)} times"
    differs = []
    if len({s.strip() for s in spellings}) > 1:
        differs.append("in another case")
    if len({s.lower() for s in spellings}) > 1:
        differs.append("with blanks around the name")
    return f"{names} are the same column {' and '.join(differs)}"


def _quoted(name: str) -> str:
    """A name as written, quoted when blanks around it (or its emptiness) would not show."""
    return repr(name) if name != name.strip() or not name else name


def _joined(words: list[str]) -> str:
    return ", ".join(words[:-1]) + " and " + words[-1]


def _withheld(position: int) -> str:
    from records.guard import withheld_label  # imported here: the guard imports this module at its top

    return withheld_label(position)


def _labels(names: list[str]) -> list[str]:
    """Each name, or ``column N (name withheld)`` where the header looks like an identifier value."""
    from records.guard import header_labels  # imported here: the guard imports this module at its top

    return header_labels(names)


def check_arrow_schema(table: str, schema: pa.Schema) -> None:
    """Refuse an Arrow (Parquet) schema with nested columns, before any row is read.

    Parameters
    ----------
    table
        The table's name, for the message.
    schema
        The schema of the table's file or dataset.

    Raises
    ------
    NestedColumnError
        A column is a struct, list (also large or fixed-size, or a list view), map or union; one finding per column.
    """
    kinds = {position: _arrow_kind(field.type) for position, field in enumerate(schema)}
    _raise_nested(table, schema.names, {p: k for p, k in kinds.items() if k is not None})


def unified_arrow_schema(table: str, schemas: Sequence[pa.Schema]) -> pa.Schema:
    """The one schema of a table stored as several Parquet part files, every part's own schema checked first.

    Each part is checked as a file of its own (:func:`check_column_names`, :func:`check_arrow_schema`), so that a
    column only a later part carries is screened like any other; then the parts' schemas are unified (a column a
    part lacks is missing there; integer and float widths widen), so that a reader sees every column of every part.

    Raises
    ------
    ContractError
        A part has too many columns or twin names, or two parts disagree on a column's type (named).
    NestedColumnError
        A part has a nested column.
    """
    for schema in schemas:
        check_column_names(table, schema.names)
        check_arrow_schema(table, schema)
    # a dictionary-encoded column (a pandas categorical) is its values' type, so parts may encode a column or not;
    # a view type (string_view, binary_view) is read as its plain type, which every compute kernel takes
    dense = [pa.schema([f.with_type(_plain_type(f.type)) for f in schema], metadata=schema.metadata)
             for schema in schemas]
    if len(dense) == 1:
        return dense[0]
    try:
        return pa.unify_schemas(dense, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        types: dict[str, set[str]] = {}
        for schema in dense:
            for field in schema:
                types.setdefault(field.name, set()).add(str(field.type))
        names = list(types)
        labels = dict(zip(names, _labels(names), strict=True))
        clashing = [labels[name] for name, kinds in types.items() if len(kinds) > 1]
        raise ContractError(f"table {table}: its Parquet part files disagree on the type of "
                            f"{_joined(clashing) if len(clashing) > 1 else clashing[0] if clashing else 'a column'}; "
                            "write every part with the same column types") from None


def _plain_type(arrow_type: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(arrow_type):
        return _plain_type(arrow_type.value_type)
    if pa.types.is_string_view(arrow_type):
        return pa.string()
    if pa.types.is_binary_view(arrow_type):
        return pa.binary()
    return arrow_type


def check_flat_frame(table: str, frame: pd.DataFrame) -> None:
    """Refuse a pandas frame with nested columns: what the identifier guard checks before screening any value.

    A column is nested when its dtype is an Arrow nested type, or when it holds objects and any of its non-missing
    cells is a dict (a Parquet struct), a list, tuple, set or NumPy array (a Parquet list; a list of key-value
    tuples is a map).

    Parameters
    ----------
    table
        The table's name, for the message.
    frame
        The table as read; not modified.

    Raises
    ------
    NestedColumnError
        One finding per nested column.
    """
    kinds: dict[int, str] = {}
    for position in range(frame.shape[1]):
        kind = _frame_kind(frame.iloc[:, position])
        if kind is not None:
            kinds[position] = kind
    _raise_nested(table, list(frame.columns), kinds)


def _raise_nested(table: str, names: Sequence[object], kinds: dict[int, str]) -> None:
    if not kinds:
        return
    labels = _labels([str(name) for name in names])
    raise NestedColumnError([NestedColumn(table, labels[p], kind) for p, kind in sorted(kinds.items())])


def _arrow_kind(arrow_type: pa.DataType) -> str | None:
    """The nested kind of an Arrow type, None for a flat one (a dictionary is flat when its values are)."""
    if pa.types.is_dictionary(arrow_type):
        return _arrow_kind(arrow_type.value_type)
    if pa.types.is_struct(arrow_type):
        return STRUCT
    if pa.types.is_map(arrow_type):
        return MAP
    if pa.types.is_union(arrow_type):
        return UNION
    if pa.types.is_nested(arrow_type):  # list, large list, fixed-size list, list views
        return LIST
    return None


def _frame_kind(column: pd.Series) -> str | None:
    dtype = column.dtype
    if isinstance(dtype, pd.ArrowDtype):
        return _arrow_kind(dtype.pyarrow_dtype)
    if dtype != object or pd.api.types.infer_dtype(column, skipna=True) in _FLAT_INFERRED:
        return None  # infer_dtype runs in C: a text column of a million rows costs milliseconds
    for value in column.to_numpy(dtype=object):
        kind = _value_kind(value)
        if kind is not None:
            return kind
    return None


def _value_kind(value: object) -> str | None:
    if isinstance(value, dict):
        return STRUCT
    if isinstance(value, list) and value and all(isinstance(item, tuple) and len(item) == 2 for item in value):
        return MAP  # pyarrow turns a map cell into a list of (key, value) tuples
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return LIST
    return None
