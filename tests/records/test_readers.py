"""Readers: Parquet and CSV folders (single files and part files), SQLite, PostgreSQL; CSV quirks; whole-input errors."""

from __future__ import annotations

import errno
import pickle
import sqlite3
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from records.coerce import coerce_table
from records.errors import (
    ContractError,
    InputError,
    Retry,
    SourceError,
    SourceUnavailable,
    retry_call,
    retry_write,
)
from records.readers import read_source
from records.schema import LEVELS, PROCEDURES
from records.validation import Registered, validate_batch
from tests.conftest import AS_OF_YEAR, make_batch


def _write_parquet(folder: Path, batch) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in batch.tables().items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet")
    return folder


def _write_csv(folder: Path, batch, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in batch.tables().items():
        frame.to_csv(folder / f"{name}.csv", index=False, **kwargs)
    return folder


def _assert_same_typed(raw_a, raw_b) -> None:
    for table in (PROCEDURES, LEVELS):
        a = coerce_table(raw_a.tables()[table.name], table).frame
        b = coerce_table(raw_b.tables()[table.name], table).frame
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_parquet_and_csv_folders_read_to_the_same_records(tmp_path):
    batch = make_batch(5)
    from_parquet = read_source(_write_parquet(tmp_path / "pq", batch))
    from_csv = read_source(_write_csv(tmp_path / "csv", batch))
    assert from_parquet.formats == {"procedures": "parquet", "levels": "parquet"}
    assert from_csv.formats == {"procedures": "csv", "levels": "csv"}
    _assert_same_typed(from_parquet, from_csv)
    _assert_same_typed(from_parquet, batch)


def test_folders_of_part_files(tmp_path):
    batch = make_batch(6)
    for name, frame in batch.tables().items():
        parts = tmp_path / "src" / name
        parts.mkdir(parents=True)
        half = len(frame) // 2
        pq.write_table(pa.Table.from_pandas(frame.iloc[:half], preserve_index=False), parts / "part-0.parquet")
        pq.write_table(pa.Table.from_pandas(frame.iloc[half:], preserve_index=False), parts / "part-1.parquet")
    raw = read_source(tmp_path / "src")
    assert len(raw.procedures) == 6 and len(raw.levels) == len(batch.levels)
    result = validate_batch(raw, as_of_year=AS_OF_YEAR)
    assert result.procedures.quarantined.empty


def test_csv_quirks_bom_booleans_case_and_missing_markers(tmp_path):
    batch = make_batch(4)
    procedures = batch.procedures.astype("string")
    procedures["diabetes"] = ["TRUE", "no", "1", "False"]
    procedures["glucocorticoid_use"] = ["Yes", "0", "NO", "true"]
    procedures["sex"] = ["F", "M", " f ", "m"]
    procedures["etiology"] = ["Osteoporotic", "MALIGNANT", "traumatic", "osteoporotic"]
    procedures["bmi_kg_m2"] = ["", "NA", "NULL", "23.5"]
    procedures["infection_90d"] = ["null", "", "false", "na"]
    folder = tmp_path / "csv"
    folder.mkdir()
    procedures.to_csv(folder / "procedures.csv", index=False, encoding="utf-8-sig")  # with a byte-order mark
    batch.levels.to_csv(folder / "levels.csv", index=False)
    assert (folder / "procedures.csv").read_bytes()[:3] == b"\xef\xbb\xbf"
    raw = read_source(folder)
    assert raw.procedures.columns[0] == "procedure_id"
    result = validate_batch(raw, as_of_year=AS_OF_YEAR)
    assert result.procedures.quarantined.empty, result.procedures.quarantined["reason"].tolist()
    accepted = result.procedures.accepted
    assert accepted["diabetes"].tolist() == [True, False, True, False]
    assert accepted["glucocorticoid_use"].tolist() == [True, False, False, True]
    assert accepted["sex"].tolist() == ["f", "m", "f", "m"]
    assert accepted["etiology"].tolist() == ["osteoporotic", "malignant", "traumatic", "osteoporotic"]
    assert accepted["bmi_kg_m2"].isna().tolist() == [True, True, True, False]
    assert accepted["infection_90d"].isna().tolist() == [True, True, False, True]


def test_csv_boolean_that_is_not_a_boolean_is_quarantined(tmp_path):
    batch = make_batch(2)
    procedures = batch.procedures.astype("string")
    procedures["diabetes"] = ["maybe", "yes"]
    folder = tmp_path / "csv"
    folder.mkdir()
    procedures.to_csv(folder / "procedures.csv", index=False)
    batch.levels.to_csv(folder / "levels.csv", index=False)
    result = validate_batch(read_source(folder), as_of_year=AS_OF_YEAR)
    reason = result.procedures.quarantined["reason"].iloc[0]
    assert reason == "diabetes must be true/false, 1/0 or yes/no"


def test_sqlite_file(tmp_path):
    batch = make_batch(5)
    path = tmp_path / "extract.sqlite"
    with sqlite3.connect(path) as connection:
        for name, frame in batch.tables().items():
            frame.astype(object).where(frame.notna(), None).to_sql(name, connection, index=False)
    raw = read_source(path)
    assert raw.formats["procedures"] == "sqlite"
    _assert_same_typed(raw, batch)
    also = read_source(f"sqlite:///{path}")
    _assert_same_typed(also, batch)


def test_postgresql_source(postgres_schema):
    batch = make_batch(5)
    raw = read_source(postgres_schema.load(batch.tables()))
    assert raw.formats["levels"] == "postgresql"
    _assert_same_typed(raw, batch)
    result = validate_batch(raw, as_of_year=AS_OF_YEAR)
    assert len(result.procedures.accepted) == 5 and result.levels.quarantined.empty


def test_unreachable_database_is_a_clear_unavailable_error():
    masked = "cannot reach database postgresql\\+psycopg://u:\\*\\*\\*@127.0.0.1:9"
    with pytest.raises(SourceUnavailable, match=masked) as caught:
        read_source("postgresql+psycopg://u:secret@127.0.0.1:9/none?connect_timeout=2",
                    retry=Retry(attempts=2, delays=(0.01,)))
    message = str(caught.value)
    assert "(host 127.0.0.1, port 9)" in message and "gave up after 2 attempts" in message
    assert "attempts 1, 2: could not connect" in message and "secret" not in message
    assert not isinstance(caught.value, InputError)  # not a bad input: the run fails, worth a retry


def test_source_unavailable_survives_pickling_with_its_detail():
    error = pickle.loads(pickle.dumps(SourceUnavailable("cannot reach database x: lost", detail="lost")))
    assert str(error) == "cannot reach database x: lost" and error.detail == "lost"


def test_retry_call_retries_only_what_it_is_told_and_waits_between_attempts():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise SourceUnavailable("down")
        return "read"

    assert retry_call(flaky, policy=Retry(attempts=3, delays=(1.0, 4.0)),
                      retry_if=lambda e: isinstance(e, SourceUnavailable), sleep=waits.append) == "read"
    assert waits == [1.0, 4.0]
    calls.clear()
    with pytest.raises(SourceError):
        retry_call(lambda: calls.append(1) or (_ for _ in ()).throw(SourceError("bad input")),
                   policy=Retry(attempts=3, delays=(0.0,)), retry_if=lambda e: isinstance(e, SourceUnavailable),
                   sleep=waits.append)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="attempts"):
        Retry(attempts=0)
    assert Retry(attempts=4, delays=(1.0, 2.0)).describe() == "4 attempts (waiting 1 s, 2 s, 2 s)"


def test_file_writes_retry_transient_errors_only():
    waits, calls = [], []

    def busy_then_ok():
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.EAGAIN, "resource temporarily unavailable")
        return "written"

    assert retry_write(busy_then_ok, sleep=waits.append) == "written" and len(waits) == 1
    for error in (OSError(errno.ENOSPC, "no space left on device"), PermissionError(errno.EACCES, "denied"),
                  TypeError("a programming error")):
        calls.clear()

        def fails(error=error):
            calls.append(1)
            raise error

        with pytest.raises(type(error)):
            retry_write(fails, sleep=waits.append)
        assert len(calls) == 1


# --- whole-input problems: one clear SourceError / ContractError, never a traceback -----------

def test_missing_source(tmp_path):
    with pytest.raises(SourceError, match="source not found"):
        read_source(tmp_path / "nowhere")


def test_missing_table(tmp_path):
    folder = _write_parquet(tmp_path / "src", make_batch(2))
    (folder / "levels.parquet").unlink()
    with pytest.raises(SourceError, match="table levels not found"):
        read_source(folder)


def test_ambiguous_table(tmp_path):
    batch = make_batch(2)
    folder = _write_parquet(tmp_path / "src", batch)
    batch.levels.to_csv(folder / "levels.csv", index=False)
    with pytest.raises(SourceError, match="table levels is ambiguous"):
        read_source(folder)


def test_empty_csv_and_header_only_csv(tmp_path):
    folder = _write_csv(tmp_path / "src", make_batch(2))
    (folder / "levels.csv").write_text("")
    with pytest.raises(SourceError, match="levels.csv is empty"):
        read_source(folder)
    (folder / "levels.csv").write_text(",".join(LEVELS.names) + "\n")
    with pytest.raises(SourceError, match="table levels .* is empty"):
        read_source(folder)


def test_truncated_parquet(tmp_path):
    folder = _write_parquet(tmp_path / "src", make_batch(20))
    data = (folder / "procedures.parquet").read_bytes()
    (folder / "procedures.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        read_source(folder)


def test_not_utf8(tmp_path):
    folder = _write_csv(tmp_path / "src", make_batch(2))
    text = (folder / "procedures.csv").read_text().replace("osteoporotic", "ostéoporotic")
    (folder / "procedures.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(SourceError, match="not UTF-8"):
        read_source(folder)


def test_a_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "extract.db"
    path.write_text("not a database")
    with pytest.raises(SourceError, match="cannot read database"):
        read_source(path)


def test_required_column_absent_is_a_contract_error(tmp_path):
    batch = make_batch(2)
    folder = _write_csv(tmp_path / "src", batch)
    batch.procedures.drop(columns=["site_id", "sex"]).to_csv(folder / "procedures.csv", index=False)
    with pytest.raises(ContractError, match="required column\\(s\\) absent: site_id, sex"):
        validate_batch(read_source(folder), as_of_year=AS_OF_YEAR)


# ------------------------------------------------------------------ a night reads only what is not registered
def _upto(last: int) -> dict[int, None]:
    """Batches 1..last registered before contents were recorded: a source leaves them out whenever it holds them."""
    return dict.fromkeys(range(1, last + 1))


def _known(last: int) -> Registered:
    """The same registry as validation sees it: the batches set aside whatever their content."""
    return Registered(contents=_upto(last))


def _history() -> dict[str, pd.DataFrame]:
    """Batches 1-3, plus the rows a filter could get wrong: a procedure without a batch, one with batch 0, an
    orphan level, and a procedure id registered in batch 1 and sent again in batch 3."""
    batches = [make_batch(4, batch=b, start=100 * b) for b in (1, 2, 3)]
    procedures = pd.concat([b.procedures for b in batches], ignore_index=True)
    levels = pd.concat([b.levels for b in batches], ignore_index=True)
    odd = make_batch(3, batch=3, start=900)
    odd.procedures["extract_batch"] = pd.array([None, 0, 3], dtype="Int64")
    odd.procedures.loc[2, "procedure_id"] = "P00100"  # batch 1's first procedure again, in batch 3
    odd_levels = odd.levels[odd.levels["procedure_id"] != "P00902"]
    orphan = odd.levels.iloc[[0]].assign(procedure_id="P99999")
    return {"procedures": pd.concat([procedures, odd.procedures], ignore_index=True),
            "levels": pd.concat([levels, odd_levels, orphan], ignore_index=True)}


def _sqlite_history(tmp_path: Path, tables: dict[str, pd.DataFrame]) -> str:
    path = tmp_path / "history.sqlite"
    with sqlite3.connect(path) as connection:
        for name, frame in tables.items():
            frame.astype(object).where(frame.notna(), None).to_sql(name, connection, index=False,
                                                                   dtype={"extract_batch": "INTEGER"})
    return str(path)


def _outcome(result) -> dict:
    """What validation decided, independent of row order and of the rows' positions in the read."""
    out = {"batches": result.skipped_batches}
    for name, table in result.tables().items():
        key = ["procedure_id"] + (["vertebra"] if name == "levels" else [])
        accepted = table.accepted.sort_values(key).reset_index(drop=True)
        reasons = sorted(zip(table.quarantined["procedure_id"].astype(str), table.quarantined["reason"]))
        out[name] = (accepted, reasons, table.skipped, len(table.accepted) + len(table.quarantined))
    return out


def _assert_same_decisions(a, b) -> None:
    assert a["batches"] == b["batches"]
    for name in ("procedures", "levels"):
        pd.testing.assert_frame_equal(a[name][0], b[name][0])
        assert a[name][1:] == b[name][1:], name


def _check_pushdown(source: str) -> None:
    whole = read_source(source)
    for last in (1, 2, 3):
        night = read_source(source, registered=_upto(last))
        assert len(night.procedures) < len(whole.procedures) and night.skipped["procedures"] > 0
        assert night.skipped["procedures"] + len(night.procedures) == len(whole.procedures)
        assert night.skipped["levels"] + len(night.levels) == len(whole.levels)
        _assert_same_decisions(_outcome(validate_batch(night, as_of_year=AS_OF_YEAR, registered=_known(last))),
                               _outcome(validate_batch(whole, as_of_year=AS_OF_YEAR, registered=_known(last))))
    night = read_source(source, registered=_upto(2))
    assert night.skipped_batches == (1, 2)
    assert set(night.procedures["procedure_id"]) == {f"P{i:05d}" for i in range(300, 304)} | {"P00900", "P00901",
                                                                                              "P00100"}
    assert "P99999" in set(night.levels["procedure_id"])  # the orphan is read, so validation quarantines it


def test_a_database_returns_only_the_unregistered_rows_and_counts_the_rest(tmp_path):
    _check_pushdown(_sqlite_history(tmp_path, _history()))


def _parquet_history(folder: Path, tables: dict[str, pd.DataFrame], *, parts: bool = False,
                     id_type: pa.DataType = pa.string()) -> str:
    for name, frame in tables.items():
        table = pa.Table.from_pandas(frame, preserve_index=False)
        table = table.set_column(table.schema.get_field_index("procedure_id"), "procedure_id",
                                 table["procedure_id"].cast(id_type))
        if parts:  # a folder of part files, one per half
            (folder / name).mkdir(parents=True, exist_ok=True)
            half = table.num_rows // 2
            pq.write_table(table.slice(0, half), folder / name / "part-0.parquet")
            pq.write_table(table.slice(half), folder / name / "part-1.parquet")
        else:
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / f"{name}.parquet")
    return str(folder)


@pytest.mark.parametrize("parts, id_type", [(False, pa.string()), (True, pa.large_string())])
def test_a_parquet_folder_returns_only_the_unregistered_rows(tmp_path, parts, id_type):
    _check_pushdown(_parquet_history(tmp_path / "history", _history(), parts=parts, id_type=id_type))


def test_a_csv_folder_is_read_whole(tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    for name, frame in _history().items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    night = read_source(folder, registered=_upto(2))
    assert night.skipped == {} and len(night.procedures) == len(_history()["procedures"])


def test_postgresql_returns_only_the_unregistered_rows(postgres_schema):
    import sqlalchemy as sa

    _check_pushdown(postgres_schema.load(_history(), extract_batch=sa.Integer()))


def test_a_night_with_nothing_new_reads_no_rows_but_an_empty_table_is_still_an_error(tmp_path):
    clean = [make_batch(3, batch=b, start=10 * b) for b in (1, 2)]
    source = _sqlite_history(tmp_path, {name: pd.concat([b.tables()[name] for b in clean], ignore_index=True)
                                        for name in ("procedures", "levels")})
    night = read_source(source, registered=_upto(2))
    assert night.procedures.empty and night.levels.empty and night.skipped_batches == (1, 2)
    result = validate_batch(night, as_of_year=AS_OF_YEAR, registered=_known(2))
    assert result.procedures.accepted.empty and result.procedures.quarantined.empty
    assert result.procedures.skipped == 6 and result.levels.skipped == len(pd.concat([b.levels for b in clean]))
    with sqlite3.connect(source) as connection:
        connection.execute("DELETE FROM levels")
    with pytest.raises(SourceError, match="table levels in database .* is empty"):
        read_source(source, registered=_upto(2))


def test_a_text_batch_column_is_read_whole_and_validation_sets_registered_batches_aside(tmp_path):
    path = tmp_path / "text.sqlite"
    tables = _history()
    with sqlite3.connect(path) as connection:
        for name, frame in tables.items():
            frame.astype(str).to_sql(name, connection, index=False)  # every column TEXT
    night = read_source(path, registered=_upto(2))
    assert night.skipped == {} and len(night.procedures) == len(tables["procedures"])


def test_nightly_ingest_from_a_database_reads_the_new_batch_and_accounts_for_the_rest(tmp_path):
    import json

    from pipelines.ingest import run_ingest
    from workspace.ledger import load_ledger

    history = [make_batch(4, batch=b, start=100 * b) for b in (1, 2)]
    source = _sqlite_history(tmp_path, {name: pd.concat([b.tables()[name] for b in history], ignore_index=True)
                                        for name in ("procedures", "levels")})
    workspace = tmp_path / "ws"
    run_ingest(source, workspace, run_id="night-1", as_of_year=AS_OF_YEAR)
    new = make_batch(3, batch=3, start=300)
    with sqlite3.connect(source) as connection:
        for name, frame in new.tables().items():
            frame.astype(object).where(frame.notna(), None).to_sql(name, connection, index=False, if_exists="append")
    run_ingest(source, workspace, run_id="night-2", as_of_year=AS_OF_YEAR)
    manifest = json.loads((workspace / "runs" / "night-2" / "manifest.json").read_text())
    assert manifest["tables"]["procedures"]["rows_in"] == 3 and manifest["tables"]["levels"]["rows_in"] == len(new.levels)
    assert manifest["tables"]["procedures"]["rows_skipped_registered"] == 8
    assert manifest["tables"]["levels"]["rows_skipped_registered"] == sum(len(b.levels) for b in history)
    assert manifest["batches_skipped"] == [1, 2] and manifest["batches_loaded"] == [3]
    assert sorted(load_ledger(workspace).batches) == [1, 2, 3]


def _dirty(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The history with ids that validation reads differently from their stored form: a padded id and "NA"."""
    procedures, levels = tables["procedures"].copy(), tables["levels"].copy()
    procedures["procedure_id"] = procedures["procedure_id"].astype(object)
    levels["procedure_id"] = levels["procedure_id"].astype(object)
    procedures.loc[procedures["procedure_id"] == "P00101", "procedure_id"] = "P00101 "  # batch 1; levels say P00101
    procedures.loc[procedures["procedure_id"] == "P00201", "procedure_id"] = "NA"  # batch 2
    levels.loc[levels["procedure_id"] == "P00201", "procedure_id"] = "NA"
    return {"procedures": procedures.astype({"procedure_id": "string"}),
            "levels": levels.astype({"procedure_id": "string"})}


@pytest.mark.parametrize("kind", ["sqlite", "parquet"])
def test_ids_stored_unlike_validation_reads_them_make_the_night_read_everything(tmp_path, kind):
    tables = _dirty(_history())
    source = (_sqlite_history(tmp_path, tables) if kind == "sqlite"
              else _parquet_history(tmp_path / "history", tables))
    whole = read_source(source)
    for last in (1, 2):
        night = read_source(source, registered=_upto(last))
        assert night.skipped == {} and len(night.procedures) == len(whole.procedures)
        _assert_same_decisions(_outcome(validate_batch(night, as_of_year=AS_OF_YEAR, registered=_known(last))),
                               _outcome(validate_batch(whole, as_of_year=AS_OF_YEAR, registered=_known(last))))


def test_a_fractional_batch_in_a_sqlite_integer_column_is_read_and_quarantined(tmp_path):
    source = _sqlite_history(tmp_path, _history())
    with sqlite3.connect(source) as connection:
        connection.execute("UPDATE procedures SET extract_batch = 1.5 WHERE procedure_id = 'P00102'")
    night = read_source(source, registered=_upto(2))
    assert "P00102" in set(night.procedures["procedure_id"]) and night.skipped_batches == (1, 2)
    _assert_same_decisions(_outcome(validate_batch(night, as_of_year=AS_OF_YEAR, registered=_known(2))),
                           _outcome(validate_batch(read_source(source), as_of_year=AS_OF_YEAR, registered=_known(2))))


def test_ids_of_another_type_than_text_make_the_night_read_everything(tmp_path):
    path = tmp_path / "typed.sqlite"
    with sqlite3.connect(path) as connection:
        for name, frame in _history().items():
            frame.astype(object).where(frame.notna(), None).to_sql(
                name, connection, index=False,
                dtype={"extract_batch": "INTEGER", "procedure_id": "BLOB" if name == "procedures" else "TEXT"})
    assert read_source(path, registered=_upto(2)).skipped == {}


def test_a_sqlite_night_reads_one_state_of_the_file(tmp_path, monkeypatch):
    import sqlalchemy as sa

    source = _sqlite_history(tmp_path, _history())
    with sqlite3.connect(source) as connection:
        connection.execute("PRAGMA journal_mode=WAL")  # a writer may commit while the night reads
    expected = read_source(source, registered=_upto(2))
    real_create = sa.create_engine

    def create_engine(*args, **kwargs):
        engine = real_create(*args, **kwargs)

        @sa.event.listens_for(engine, "before_cursor_execute")
        def write_meanwhile(conn, cursor, statement, parameters, context, executemany):
            if statement.startswith('SELECT COUNT(*) FROM "levels"'):
                with sqlite3.connect(source) as other:  # another process appends a level of batch 1
                    other.execute("INSERT INTO levels SELECT * FROM levels WHERE procedure_id = 'P00102' LIMIT 1")
        return engine

    monkeypatch.setattr(sa, "create_engine", create_engine)
    night = read_source(source, registered=_upto(2))
    assert night.skipped == expected.skipped  # the row committed meanwhile is not counted
    with sqlite3.connect(source) as connection:
        assert connection.execute("SELECT COUNT(*) FROM levels").fetchone()[0] == sum(
            expected.skipped.values()) - expected.skipped["procedures"] + len(expected.levels) + 1
