"""A night's read from a source that keeps its history leaves out exactly the registered batches it holds unchanged:
a late batch below the highest registered one is read, a registered batch with other row counts is read (so that
validation compares its content), and thousands of registered batches with gaps are asked as ranges."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from records.batches import batch_ranges
from records.readers import MAX_RANGES, read_source, skippable_batches
from tests.conftest import make_batch


def _tables(batches: list[int]) -> dict[str, pd.DataFrame]:
    made = [make_batch(2, batch=b, start=10 * b) for b in batches]
    return {name: pd.concat([m.tables()[name] for m in made], ignore_index=True) for name in ("procedures", "levels")}


def _rows(batch: int) -> dict[str, int]:
    """What the ledger records of a make_batch(2) batch: two procedures, 2 + 1 levels, n_levels summing to 3."""
    return {"procedures": 2, "levels": 3, "n_levels": 3}


def _sqlite(path: Path, tables: dict[str, pd.DataFrame]) -> str:
    with sqlite3.connect(path) as connection:
        for name, frame in tables.items():
            frame.astype(object).where(frame.notna(), None).to_sql(name, connection, index=False,
                                                                   dtype={"extract_batch": "INTEGER"})
    return str(path)


def _parquet(folder: Path, tables: dict[str, pd.DataFrame]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet")
    return str(folder)


def test_batch_ranges_encode_gaps_not_every_number():
    assert batch_ranges([]) == []
    assert batch_ranges([5, 1, 2, 3, 9, 10, 3]) == [(1, 3), (5, 5), (9, 10)]
    assert batch_ranges(range(1, 5001)) == [(1, 5000)]
    assert len(batch_ranges(b for b in range(1, 20001) if b % 100)) == 200


def test_skippable_batches_are_those_with_the_recorded_counts_or_no_record():
    counts = {"procedures": {1: 2, 2: 3, 4: 2, 5: 2}, "n_levels": {1: 3, 2: 3, 4: 3, 5: 4}}
    registered = {1: _rows(1), 2: _rows(2), 3: _rows(3), 4: None, 5: _rows(5)}
    # 2 has another count of procedures, 5 another sum of n_levels; 3 is not in the source; 4 has no record
    assert skippable_batches(registered, counts) == {1, 4}
    assert skippable_batches({1: {"procedures": 2, "levels": 3}}, counts) == {1}  # a record without the sum


@pytest.mark.parametrize("kind", ["sqlite", "parquet"])
def test_a_late_batch_below_the_highest_registered_one_is_read(tmp_path, kind):
    tables = _tables([1, 2, 3, 4, 5])
    source = _sqlite(tmp_path / "h.sqlite", tables) if kind == "sqlite" else _parquet(tmp_path / "h", tables)
    registered = {b: _rows(b) for b in (1, 2, 4, 5)}  # batch 3 came late: never registered
    night = read_source(source, registered=registered)
    assert sorted(night.procedures["extract_batch"].unique()) == [3]
    assert night.skipped_batches == (1, 2, 4, 5)
    assert night.skipped == {"procedures": 8, "levels": 12}
    assert set(night.levels["procedure_id"]) == set(night.procedures["procedure_id"])


@pytest.mark.parametrize("kind", ["sqlite", "parquet"])
def test_a_registered_batch_with_other_row_counts_is_read_so_that_validation_compares_it(tmp_path, kind):
    tables = _tables([1, 2, 3])
    extra = make_batch(1, batch=2, start=77)  # a procedure added to batch 2 after it was registered
    tables = {name: pd.concat([tables[name], extra.tables()[name]], ignore_index=True) for name in tables}
    source = _sqlite(tmp_path / "h.sqlite", tables) if kind == "sqlite" else _parquet(tmp_path / "h", tables)
    night = read_source(source, registered={b: _rows(b) for b in (1, 2, 3)})
    assert sorted(night.procedures["extract_batch"].unique()) == [2]
    assert len(night.procedures) == 3 and night.skipped_batches == (1, 3)


@pytest.mark.parametrize("kind", ["sqlite", "parquet"])
def test_a_level_added_to_a_registered_batch_makes_the_batch_read(tmp_path, kind):
    """A level added to a procedure comes with its n_levels: the procedures' n_levels sum tells a database (Parquet
    counts the levels too) without a join over the history."""
    tables = _tables([1, 2])
    levels = tables["levels"]
    added = levels[levels["procedure_id"] == "P00011"].assign(vertebra="l4")  # batch 1's second procedure
    tables["levels"] = pd.concat([levels, added], ignore_index=True)
    tables["procedures"].loc[tables["procedures"]["procedure_id"] == "P00011", "n_levels"] = 2
    source = _sqlite(tmp_path / "h.sqlite", tables) if kind == "sqlite" else _parquet(tmp_path / "h", tables)
    night = read_source(source, registered={1: _rows(1), 2: _rows(2)})
    assert sorted(night.procedures["extract_batch"].unique()) == [1] and night.skipped_batches == (2,)


def test_many_registered_batches_with_gaps_are_asked_as_ranges(tmp_path):
    """Every other batch of 2,000 registered: 1,000 ranges, beyond MAX_RANGES for SQLite, so it reads everything
    and validation sets the registered batches aside; 400 batches with gaps stay within the limit and are left out."""
    batches = list(range(1, 2 * (MAX_RANGES + 10), 2))
    source = _sqlite(tmp_path / "h.sqlite", _tables([*batches[:50], 2000]))
    registered = {b: _rows(b) for b in batches}
    whole = read_source(source, registered=registered)
    assert whole.skipped == {} and len(whole.procedures) == 102
    few = {b: _rows(b) for b in batches[:50]}
    night = read_source(source, registered=few)
    assert sorted(night.procedures["extract_batch"].unique()) == [2000] and len(night.skipped_batches) == 50


def test_postgresql_leaves_out_registered_batches_by_ranges_and_reads_late_and_changed_ones(postgres_schema):
    import sqlalchemy as sa

    tables = _tables([1, 2, 3, 4, 5, 6])
    extra = make_batch(1, batch=5, start=99)
    tables = {name: pd.concat([tables[name], extra.tables()[name]], ignore_index=True) for name in tables}
    url = postgres_schema.load(tables, extract_batch=sa.Integer(), n_levels=sa.Integer())
    registered = {b: _rows(b) for b in (1, 2, 4, 5)}  # 3 late, 5 changed, 6 new
    night = read_source(url, registered=registered)
    assert sorted(night.procedures["extract_batch"].unique()) == [3, 5, 6]
    assert night.skipped_batches == (1, 2, 4) and night.skipped == {"procedures": 6, "levels": 9}
    many = {b: _rows(b) for b in range(1, 2 * MAX_RANGES + 20, 2)}  # beyond MAX_RANGES: an array
    night = read_source(url, registered=many)
    assert night.skipped_batches == (1, 3) and sorted(night.procedures["extract_batch"].unique()) == [2, 4, 5, 6]
