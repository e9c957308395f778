"""Small-cell suppression of published counts: primary, complement-pair and complementary suppression, and its checks.

The rule: a published count of cases that is above 0 and below :data:`SMALL_CELL` is shown as
:data:`SUPPRESSED`, and no suppressed value can be worked out from the totals a report publishes.

Why the complementary step is sufficient for one-dimensional margins
--------------------------------------------------------------------
Within a group whose total is published, the only linear fact a reader learns about the ``k`` withheld
cells of a count column is their sum ``S`` (total minus the published cells). Reading ``"<11"`` at face
value also bounds each withheld cell to 1..10. A withheld cell is then pinned to one value exactly when

* ``k == 1`` (the cell *is* ``S``), or
* ``k >= 2`` and ``S == k`` (every cell must be 1) or ``S == 10 k`` (every cell must be 10).

For any other ``S`` each cell has at least two feasible values (the others can absorb the difference),
so none is recoverable. :func:`suppress_table` withholds further cells, smallest non-zero first, until no
group of any count column is in one of those states (:func:`recoverable` tests the same condition from a
published table). A declared pair (events, n) adds one more published identity, ``n - events``; it is
treated as a column of its own whose cell is unknown when either count is withheld, and protected the
same way (by withholding ``events`` in a further row). A total that is itself withheld publishes no
margin. Two-dimensional margins (rows *and* columns both summed) need more (linear programming); tables
here have one margin per count column.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from numbers import Real
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

SMALL_CELL = 11
"""Counts ``0 < count < SMALL_CELL`` are never published."""
SUPPRESSED = "<11"


class Unprotectable(ValueError):
    """A published total would reveal a group's withheld cells whatever else is withheld."""
"""Shown for a withheld count: a small count, or a count withheld so that a small one cannot be derived."""
_LARGEST_SMALL = SMALL_CELL - 1
_SHOWN = 5


class _Line(NamedTuple):
    """One published additive column: its cell values, which cells are unknown, and which count to withhold."""

    name: str
    values: np.ndarray
    hidden: np.ndarray
    target: str


def is_small(count: object) -> bool:
    """Whether ``count`` is a number of cases that must not be published (``0 < count < 11``).

    Numbers and numeric text (as read back from CSV) are tested; ``"<11"``, missing values and
    booleans are not counts and give False.
    """
    value = _as_number(count)
    return value is not None and 0 < value < SMALL_CELL


def small_counts(frame: pd.DataFrame, *, count_columns: Sequence[str]) -> list[tuple[Hashable, str]]:
    """Every numeric count 1..10 left in a table meant for publication.

    ``frame`` is a published table (ints, ``"<11"``, or text as read back from CSV) and
    ``count_columns`` its columns of counts of cases. Returns (index label, column) pairs, empty when
    the table is safe to publish; raises ValueError when a count column is not in ``frame``.
    """
    columns = _check_columns(frame, count_columns, "count_columns")
    return [(label, column) for column in columns for label, value in frame[column].items() if is_small(value)]


def recoverable(frame: pd.DataFrame, *, count_column: str, group_by: Sequence[str] | None = None,
                totals: int | Mapping[Hashable, object]) -> bool:
    """Whether some withheld cell of ``count_column`` can be worked out from a published group total.

    A cell is recoverable when its group's total is published and either it is the group's only
    withheld cell, or the withheld cells' sum forces all of them to 1 or all to 10 (see the module
    docstring).

    Parameters
    ----------
    frame
        The published cells (no total rows), counts as ints or ``"<11"``.
    count_column
        The column to check.
    group_by
        Columns whose values define the groups that share a total; none means one group.
    totals
        Published total per group: a mapping from group key (a tuple, or the value itself for one
        ``group_by`` column; ``()`` for no grouping) to the total, or a single number when there is no
        grouping. A group that is missing, or whose total is ``"<11"`` or None, publishes no total.

    Raises
    ------
    ValueError
        A column is missing, or a cell is neither a count nor ``"<11"``.
    """
    (column,) = _check_columns(frame, [count_column], "count_column")
    keys = _check_columns(frame, group_by or (), "group_by")
    if not isinstance(totals, Mapping):
        if keys:
            raise ValueError(f"totals must map each group of {', '.join(keys)} to its total; got one number")
        totals = {(): totals}
    parts = [((), frame)] if not keys else frame.groupby(list(keys), dropna=False, sort=False)
    for key, part in parts:
        total = _as_number(_lookup(totals, key))
        if total is None:
            continue
        hidden = part[column].map(lambda v: isinstance(v, str) and v == SUPPRESSED).to_numpy(dtype=bool)
        shown = [_as_number(v) for v in part[column][~hidden]]
        if any(v is None for v in shown):
            raise ValueError(f"{column} must hold counts or {SUPPRESSED!r}; some published cells are neither")
        if _determined(int(hidden.sum()), total - sum(shown)):
            return True
    return False


def suppress_table(frame: pd.DataFrame, *, count_columns: Sequence[str], group_by: Sequence[str] | None = None,
                   derived: Mapping[str, Sequence[str]] | None = None, complements: Mapping[str, str] | None = None,
                   row_total: str | None = None, total_rows: ArrayLike | None = None,
                   unprotectable: Literal["raise", "withhold"] = "raise",
                   already: Mapping[str, ArrayLike] | None = None) -> pd.DataFrame:
    """Withhold small counts, the statistics that would reveal them, and enough other cells that totals cannot.

    Steps: (1) primary: a count 1..10 is withheld; for a declared pair ``events -> n``, ``events`` is also
    withheld when ``n - events`` is 1..10; when ``row_total`` is 1..10 every count and statistic of that
    row is withheld. (2) complementary: within each group, while a withheld cell could be worked out from
    the published total (:func:`recoverable`), the smallest non-zero published cell of that column in the
    group is withheld too (a zero cell if none is left; the group's total row as a last resort).
    (3) derived: a statistic is withheld where any count it is computed from is withheld.

    Parameters
    ----------
    frame
        One row per published cell (any index); count columns whole numbers >= 0, no missing values.
    count_columns
        Columns holding counts of cases.
    group_by
        Columns whose values define the groups that share a published total per count column; none
        means the whole table is one group.
    derived
        Statistic column -> the count columns it is computed from (``{"rate": ["events", "n"]}``).
    complements
        ``events -> n`` pairs whose difference ``n - events`` is also a count of cases.
    row_total
        Count column of the row's cases (e.g. procedures); 1..10 withholds the whole row.
    total_rows
        Boolean mask marking, in each group, the one row holding the group's totals (e.g. "all sites").
        It gets primary suppression and is withheld when nothing else can protect the group. Without
        it, totals are assumed published elsewhere and must not be withheld.
    unprotectable
        What to do when a group's published total would reveal its withheld cells whatever else is
        withheld: ``"raise"`` :class:`Unprotectable`, or ``"withhold"`` every count and statistic of the
        table (for tables whose total is published elsewhere and that may be empty rather than fail).
    already
        Count column -> boolean mask of cells withheld already (by another table that shares a margin with
        this one); they count as primary suppressions. Lets a caller protect a hierarchy (operators within
        sites within the outcome) by running one table per level until no level withholds anything new.

    Returns
    -------
    DataFrame
        A copy; count columns are object dtype holding ints or ``"<11"``; withheld statistics NaN (None
        in non-numeric columns).

    Raises
    ------
    ValueError
        A column is missing or listed in two roles, a count is not a whole number >= 0, ``events``
        exceeds ``n``, total rows do not sum their groups, or (:class:`Unprotectable`, without
        ``total_rows`` and with ``unprotectable="raise"``) a group's published total would reveal its
        withheld cells whatever else is withheld.

    References
    ----------
    Cox LH. Suppression methodology and statistical disclosure control. J Am Stat Assoc
    1980;75:377-385. CMS Cell Size Suppression Policy (cells 1-10 withheld).
    """
    counts = _check_columns(frame, count_columns, "count_columns")
    derived = {str(k): tuple(v) for k, v in (derived or {}).items()}
    complements = dict(complements or {})
    _check_roles(frame, counts, derived, complements, row_total)
    values = {c: _count_values(frame[c], c) for c in counts}
    for events, n in complements.items():
        _check_positions(values[events] > values[n], f"{events} must not exceed {n}")
    groups = _group_codes(frame, _check_columns(frame, group_by or (), "group_by"))
    totals = _check_total_rows(total_rows, groups, values, len(frame))
    if unprotectable not in ("raise", "withhold"):
        raise ValueError(f"unprotectable must be 'raise' or 'withhold'; got {unprotectable!r}")
    hidden = _primary(values, complements, row_total)
    for column, mask in (already or {}).items():
        if column not in hidden:
            raise ValueError(f"already names {column!r}, which is not one of count_columns {list(counts)}")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(frame),):
            raise ValueError(f"already[{column!r}] must have one value per row ({len(frame)}); got {mask.shape}")
        hidden[column] = hidden[column] | mask
    try:
        hidden = _protect_margins(values, hidden, groups, totals, complements)
    except Unprotectable:
        if unprotectable == "raise":
            raise
        hidden = {c: np.ones(len(frame), dtype=bool) for c in values}
    return _publish(frame, values, hidden, derived, row_total)


def _primary(values: dict[str, np.ndarray], complements: dict[str, str],
             row_total: str | None) -> dict[str, np.ndarray]:
    hidden = {c: _small(v) for c, v in values.items()}
    for events, n in complements.items():
        hidden[events] = hidden[events] | _small(values[n] - values[events])
    if row_total is not None:
        withheld = _small(values[row_total])
        hidden = {c: h | withheld for c, h in hidden.items()}
    return hidden


def _protect_margins(values: dict[str, np.ndarray], primary: dict[str, np.ndarray], groups: np.ndarray,
                     totals: np.ndarray | None, complements: dict[str, str]) -> dict[str, np.ndarray]:
    """Withhold further cells until no group of any line is determined by its published total."""
    hidden = {c: h.copy() for c, h in primary.items()}
    changed = True
    while changed:
        changed = False
        for i in range(len(values) + len(complements)):  # rebuilt each time: a line sees every earlier change
            for group in np.unique(groups):
                changed |= _protect_group(_lines(values, hidden, complements)[i], hidden, groups == group, totals)
    return hidden


def _lines(values: dict[str, np.ndarray], hidden: dict[str, np.ndarray], complements: dict[str, str]) -> list[_Line]:
    lines = [_Line(c, v, hidden[c], c) for c, v in values.items()]
    lines += [_Line(f"{n} - {e}", values[n] - values[e], hidden[e] | hidden[n], e) for e, n in complements.items()]
    return lines


def _protect_group(line: _Line, hidden: dict[str, np.ndarray], in_group: np.ndarray, totals: np.ndarray | None) -> bool:
    cells = in_group if totals is None else in_group & ~totals
    total_row = None if totals is None else int(np.flatnonzero(in_group & totals)[0])
    if total_row is not None and line.hidden[total_row]:
        return False  # no published margin
    unknown = cells & line.hidden
    if not _determined(int(unknown.sum()), int(line.values[unknown].sum())):
        return False
    candidates = np.flatnonzero(cells & ~line.hidden)
    if len(candidates):
        nonzero = candidates[line.values[candidates] > 0]
        pool = nonzero if len(nonzero) else candidates
        row = int(pool[np.argmin(line.values[pool])])
    elif total_row is not None:
        row = total_row
    else:
        raise Unprotectable(f"{line.name} cannot be protected: every cell of a group is withheld and its total, "
                         f"published elsewhere, would still reveal them; pass the totals as rows (total_rows=) "
                         f"so they can be withheld")
    hidden[line.target][row] = True
    return True


def _publish(frame: pd.DataFrame, values: dict[str, np.ndarray], hidden: dict[str, np.ndarray],
             derived: dict[str, tuple[str, ...]], row_total: str | None) -> pd.DataFrame:
    out = frame.copy()
    for column, counts in values.items():
        cells = [SUPPRESSED if h else int(v) for v, h in zip(counts, hidden[column])]
        out[column] = pd.Series(cells, index=frame.index, dtype=object)
    row_withheld = _small(values[row_total]) if row_total is not None else np.zeros(len(frame), dtype=bool)
    for column, sources in derived.items():
        withheld = row_withheld.copy()
        for source in sources:
            withheld |= hidden[source]
        out[column] = _withhold(frame[column], withheld)
    return out


def _withhold(column: pd.Series, withheld: np.ndarray) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.astype("float64").where(~withheld)
    return column.astype(object).where(~withheld, None)


def _determined(k: int, withheld_sum: float) -> bool:
    """Whether ``k`` withheld cells summing to ``withheld_sum`` have a cell with only one feasible value."""
    return k == 1 or (k >= 2 and withheld_sum in (k, _LARGEST_SMALL * k))


def _small(values: np.ndarray) -> np.ndarray:
    return (values > 0) & (values < SMALL_CELL)


def _as_number(value: object) -> float | None:
    if isinstance(value, (bool, np.bool_)) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, Real) or pd.isna(value):
        return None
    return float(value)


def _lookup(totals: Mapping[Hashable, object], key: Hashable) -> object:
    single = isinstance(key, tuple) and len(key) == 1 and key not in totals
    return totals.get(key[0] if single else key)


def _check_columns(frame: pd.DataFrame, columns: Sequence[str] | str, role: str) -> tuple[str, ...]:
    if isinstance(columns, str):
        raise ValueError(f"{role} must be a sequence of column names; got the string {columns!r}")
    names = tuple(columns)
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ValueError(f"{role} must name columns of the table; missing: {', '.join(map(str, missing))}")
    return names


def _check_roles(frame: pd.DataFrame, counts: tuple[str, ...], derived: dict[str, tuple[str, ...]],
                 complements: dict[str, str], row_total: str | None) -> None:
    if not counts:
        raise ValueError("count_columns must name at least one column; got none")
    _check_columns(frame, list(derived), "derived")
    both = sorted(set(derived) & set(counts))
    if both:
        raise ValueError(f"a column is either a count or derived, not both; both: {', '.join(both)}")
    sources = {src for srcs in derived.values() for src in srcs} | set(complements) | set(complements.values())
    sources |= {row_total} if row_total is not None else set()
    unknown = sorted(map(str, sources - set(counts)))
    if unknown:
        raise ValueError(f"derived, complements and row_total must refer to count_columns; not counts: "
                         f"{', '.join(unknown)}")


def _count_values(column: pd.Series, name: str) -> np.ndarray:
    numeric = pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()
    numeric = np.full(len(column), np.nan) if pd.api.types.is_bool_dtype(column) else numeric
    bad = ~np.isfinite(numeric) | (numeric < 0) | (numeric != np.floor(numeric))
    _check_positions(bad, f"{name} must be a whole number of cases >= 0 (no missing values)")
    return numeric.astype(np.int64)


def _check_positions(bad: np.ndarray, rule: str) -> None:
    if bad.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(bad)[:_SHOWN]) + (", ..." if bad.sum() > _SHOWN else "")
        raise ValueError(f"{rule}; {int(bad.sum())} rows break it (rows {rows})")


def _group_codes(frame: pd.DataFrame, keys: tuple[str, ...]) -> np.ndarray:
    if keys:
        return frame.groupby(list(keys), dropna=False, sort=False).ngroup().to_numpy()
    return np.zeros(len(frame), dtype=np.int64)


def _check_total_rows(total_rows: ArrayLike | None, groups: np.ndarray, values: dict[str, np.ndarray],
                      n_rows: int) -> np.ndarray | None:
    if total_rows is None:
        return None
    mask = np.asarray(total_rows)
    if mask.shape != (n_rows,) or mask.dtype != bool:
        raise ValueError(f"total_rows must be a boolean mask with one value per row ({n_rows}); "
                         f"got dtype {mask.dtype} and shape {mask.shape}")
    per_group = np.bincount(groups[mask], minlength=groups.max(initial=-1) + 1)
    if (per_group != 1).any():
        raise ValueError(f"total_rows must mark exactly one row in each group; "
                         f"{int((per_group != 1).sum())} of {len(per_group)} groups do not")
    for column, counts in values.items():
        published = np.zeros(len(per_group))
        published[groups[mask]] = counts[mask]
        cell_sums = np.bincount(groups[~mask], weights=counts[~mask], minlength=len(per_group))
        if (cell_sums != published).any():
            raise ValueError(f"{column}: each total row must equal the sum of the other rows of its group; "
                             f"it does not in {int((cell_sums != published).sum())} of {len(per_group)} groups")
    return mask
