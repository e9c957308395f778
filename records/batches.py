"""Extract batches as data: which rows belong to which batch, a content fingerprint of each batch, and what differs
between a batch as registered and as sent again.

A batch is the procedures whose ``extract_batch`` is a whole number in 1..:data:`records.schema.BATCH_MAX`, and the
levels of those procedures. Its fingerprint is a SHA-256 over the rows in the contract's types (so a batch sent again
as CSV instead of Parquet, or with its rows in another order, is the same batch), with the text of any cell that could
not be read as its type; it never holds a value and cannot be turned back into one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from records.coerce import CoercedTable
from records.schema import BATCH_MAX, EXTRACT_BATCH, LEVELS, N_LEVELS, PROCEDURE_ID, PROCEDURES, VERTEBRA, TableSpec

_FIELD_SEPARATOR = "\x1f"


@dataclass(frozen=True)
class BatchContent:
    """One batch of an input: its fingerprint and how many rows of each table it holds."""

    batch: int
    sha256: str
    procedures: int
    levels: int
    n_levels: int = 0
    """The sum of the procedures' ``n_levels`` (missing as 0): a source can count it without reading the levels."""

    def rows(self) -> dict[str, int]:
        """What a source is asked to count of the batch (:func:`records.readers.skippable_batches`)."""
        return {PROCEDURES.name: self.procedures, LEVELS.name: self.levels, N_LEVELS: self.n_levels}


def valid_batch_mask(values: pd.Series) -> pd.Series:
    """True where an (Int64) ``extract_batch`` is a batch number of the contract: 1..BATCH_MAX."""
    numbers = pd.Series(values).astype("Float64")
    return ((numbers >= 1) & (numbers <= BATCH_MAX) & (numbers == numbers.round())).fillna(False).astype(bool)


def batch_numbers(procedures: pd.DataFrame) -> list[int]:
    """The valid batch numbers a raw procedures table carries (for a refusal's record); [] when it has none that
    can be read."""
    if EXTRACT_BATCH not in procedures.columns or not procedures.columns.is_unique:
        return []
    numbers = pd.to_numeric(procedures[EXTRACT_BATCH].astype("string").str.strip(), errors="coerce")
    numbers = numbers[valid_batch_mask(numbers.astype("Float64"))]
    return sorted(int(b) for b in numbers.unique())


def level_batches(procedures: pd.DataFrame, levels: pd.DataFrame) -> pd.Series:
    """The batch of each level row: that of the procedure with its ``procedure_id`` (first occurrence), missing for a
    level without a procedure, or whose procedure has no valid batch."""
    batches = procedures[EXTRACT_BATCH].where(valid_batch_mask(procedures[EXTRACT_BATCH]))
    lookup = pd.Series(batches.to_numpy(), index=procedures[PROCEDURE_ID].to_numpy())
    lookup = lookup[lookup.index.notna() & ~pd.Index(lookup.index).duplicated()]
    return levels[PROCEDURE_ID].map(lookup).astype("Int64")


def batch_contents(raw: Mapping[str, pd.DataFrame], coerced: Mapping[str, CoercedTable]) -> dict[int, BatchContent]:
    """The fingerprint and row counts of every valid batch of an input.

    Parameters
    ----------
    raw
        ``{"procedures": frame, "levels": frame}`` as read (index 0..n-1, the index of ``coerced``).
    coerced
        The same tables after :func:`records.coerce.coerce_table`.

    Returns
    -------
    dict
        Batch number -> :class:`BatchContent`, in batch order.
    """
    proc, lev = coerced[PROCEDURES.name], coerced[LEVELS.name]
    proc_hash = _row_hashes(raw[PROCEDURES.name], proc, PROCEDURES)
    lev_hash = _row_hashes(raw[LEVELS.name], lev, LEVELS)
    proc_batch = proc.frame[EXTRACT_BATCH].where(valid_batch_mask(proc.frame[EXTRACT_BATCH]))
    lev_batch = level_batches(proc.frame, lev.frame)
    out: dict[int, BatchContent] = {}
    proc_groups = pd.Series(proc_hash, index=proc.frame.index).groupby(proc_batch.to_numpy(), sort=True)
    lev_groups = dict(tuple(pd.Series(lev_hash, index=lev.frame.index).groupby(lev_batch.to_numpy(), sort=True)))
    n_levels = proc.frame[N_LEVELS].astype("Float64").fillna(0).groupby(proc_batch.to_numpy(), sort=True).sum()
    for batch, hashes in proc_groups:
        levels = lev_groups.get(batch, pd.Series([], dtype="uint64"))
        digest = hashlib.sha256()
        digest.update(np.sort(hashes.to_numpy(dtype="uint64")).tobytes())
        digest.update(b"|levels|")
        digest.update(np.sort(levels.to_numpy(dtype="uint64")).tobytes())
        out[int(batch)] = BatchContent(batch=int(batch), sha256=digest.hexdigest(), procedures=len(hashes),
                                       levels=len(levels), n_levels=int(n_levels.get(batch, 0)))
    return out


def _row_hashes(raw: pd.DataFrame, table: CoercedTable, spec: TableSpec) -> np.ndarray:
    """One 64-bit hash per row: the row's contract cells as typed, and the text of its cells that could not be read.

    ``extract_batch`` is left out of the procedures' hash: the batch number names a batch, it is not its content.
    """
    names = [n for n in spec.names if n != EXTRACT_BATCH]
    hashes = pd.util.hash_pandas_object(table.frame[names], index=False).to_numpy(dtype="uint64")
    failures = table.failures
    if failures.empty:
        return hashes
    cells = failures[["index", "column"]].drop_duplicates()
    cells = cells[cells["column"].isin(raw.columns)]
    if cells.empty:
        return hashes
    texts = [f"{column}={raw.at[index, column]}" for index, column in zip(cells["index"], cells["column"])]
    per_row = pd.Series(texts, index=cells["index"].to_numpy()).groupby(level=0).agg(_FIELD_SEPARATOR.join)
    extra = pd.util.hash_pandas_object(per_row.astype(str), index=False).to_numpy(dtype="uint64")
    positions = table.frame.index.get_indexer(per_row.index)
    hashes = hashes.copy()
    combined = pd.DataFrame({"cells": hashes[positions], "unreadable": extra})
    hashes[positions] = pd.util.hash_pandas_object(combined, index=False).to_numpy(dtype="uint64")
    return hashes


@dataclass(frozen=True)
class BatchChange:
    """What differs between a batch as registered and as sent again: counts only, never a value."""

    batch: int
    registered_by: str
    procedures_before: int
    procedures_after: int
    levels_before: int
    levels_after: int
    procedures_added: int
    procedures_removed: int
    levels_added: int
    levels_removed: int
    cells_changed: dict[str, int]
    """Per column, how many rows present in both hold another value (procedures and levels columns)."""

    def describe(self) -> str:
        """One paragraph: the batch, what differs, and how to correct it."""
        parts = [f"procedures {self.procedures_before} -> {self.procedures_after} rows "
                 f"({self.procedures_added} ids added, {self.procedures_removed} removed)",
                 f"levels {self.levels_before} -> {self.levels_after} rows "
                 f"({self.levels_added} added, {self.levels_removed} removed)"]
        if self.cells_changed:
            parts.append("cells changed: " + ", ".join(f"{column} in {n} row{'s' if n != 1 else ''}"
                                                       for column, n in self.cells_changed.items()))
        elif not (self.procedures_added or self.procedures_removed or self.levels_added or self.levels_removed):
            parts.append("the same rows and values, but cells that could not be read differ")
        return (f"batch {self.batch} differs from the batch registered by run {self.registered_by}: "
                + "; ".join(parts) + f". Nothing of batch {self.batch} was taken. To register the batch as now sent "
                f"(the registered rows are kept in the workspace's registry history), run again with "
                f"--replace-batch {self.batch}; to keep the registered batch, leave batch {self.batch} out of the "
                "export.")


def describe_change(batch: int, *, registered_by: str, before: Mapping[str, pd.DataFrame],
                    after: Mapping[str, pd.DataFrame]) -> BatchChange:
    """Compare one batch as registered (``before``: its accepted and quarantined rows, typed) with the batch as sent
    again (``after``: typed), by key: procedures by ``procedure_id``, levels by ``procedure_id`` and ``vertebra``."""
    old_p, new_p = before[PROCEDURES.name], after[PROCEDURES.name]
    old_l, new_l = before[LEVELS.name], after[LEVELS.name]
    p_added, p_removed, p_changed = _compare(old_p, new_p, [PROCEDURE_ID], PROCEDURES)
    l_added, l_removed, l_changed = _compare(old_l, new_l, [PROCEDURE_ID, VERTEBRA], LEVELS)
    changed = {**p_changed, **{c: n + p_changed.get(c, 0) for c, n in l_changed.items()}}
    return BatchChange(batch=batch, registered_by=registered_by, procedures_before=len(old_p),
                       procedures_after=len(new_p), levels_before=len(old_l), levels_after=len(new_l),
                       procedures_added=p_added, procedures_removed=p_removed, levels_added=l_added,
                       levels_removed=l_removed, cells_changed=dict(sorted(changed.items())))


def _compare(old: pd.DataFrame, new: pd.DataFrame, keys: list[str], spec: TableSpec
             ) -> tuple[int, int, dict[str, int]]:
    old_keys, new_keys = _key_set(old, keys), _key_set(new, keys)
    columns = [c for c in spec.names if c not in keys and c != EXTRACT_BATCH and c in old.columns and c in new.columns]
    left = old.drop_duplicates(keys).set_index(keys)
    right = new.drop_duplicates(keys).set_index(keys)
    common = left.index.intersection(right.index)
    changed: dict[str, int] = {}
    for column in columns:
        a = left.loc[common, column].astype(object)
        b = right.loc[common, column].astype(object)
        same = (a == b).fillna(False).to_numpy(dtype=bool) | (a.isna().to_numpy() & b.isna().to_numpy())
        n = int((~same).sum())
        if n:
            changed[column] = n
    return len(new_keys - old_keys), len(old_keys - new_keys), changed


def _key_set(frame: pd.DataFrame, keys: Iterable[str]) -> set[tuple]:
    return set(map(tuple, frame[list(keys)].astype(object).itertuples(index=False, name=None)))


def batch_ranges(batches: Iterable[int]) -> list[tuple[int, int]]:
    """Batch numbers as the fewest closed ranges, in order: ``[1, 2, 3, 7, 9, 10]`` -> ``[(1, 3), (7, 7), (9, 10)]``.

    A source asked to leave out thousands of registered batches gets a handful of ranges (one per gap), not a list
    of every number."""
    ranges: list[tuple[int, int]] = []
    for batch in sorted({int(b) for b in batches}):
        if ranges and batch == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], batch)
        else:
            ranges.append((batch, batch))
    return ranges
