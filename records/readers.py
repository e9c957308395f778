"""Readers: a folder of Parquet or CSV, a SQLite file, or any SQLAlchemy URL -> raw frames of both tables.

Readers return the tables as found (no typing beyond what the source carries); typing and checking are
the job of :mod:`records.coerce` and :mod:`records.validation`. Whole-input problems raise
:class:`records.errors.SourceError` with one clear message.

A database is read whole or not at all: both tables in one connection (on PostgreSQL one repeatable-read
snapshot), nothing returned until both are in memory. A database that cannot be reached, or whose connection
is lost in the middle of the read, is tried again from the start (:data:`SOURCE_RETRY`: 3 attempts, waiting
1 s then 4 s); after the last attempt :class:`records.errors.SourceUnavailable` names the host and port and
what failed, never the password.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from records.batches import batch_ranges
from records.coerce import MISSING_TOKENS
from records.columns import check_column_names, unified_arrow_schema
from records.errors import Retry, SourceError, SourceUnavailable, retry_call
from records.sources import connectable_url, display_source, mask_secrets
from records.schema import BATCH_MAX, EXTRACT_BATCH, ID_PATTERN, LEVELS, N_LEVELS, PROCEDURE_ID, PROCEDURES

TABLE_NAMES = (PROCEDURES.name, LEVELS.name)
_ID_CHARS = re.fullmatch(r"(\[.*\])\{1,\d+\}", ID_PATTERN).group(1)  # type: ignore[union-attr]
"""The characters of an id, as a regular-expression class (``[A-Za-z0-9_-]``)."""
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
SOURCE_RETRY = Retry(attempts=3, delays=(1.0, 4.0))
"""Attempts at reading a database source, and the waits between them (read at call time: tests shorten it)."""
CONNECT_TIMEOUT_SECONDS = 10
"""PostgreSQL: give up connecting after this long (unless the URL sets ``connect_timeout``)."""


@dataclass(frozen=True)
class RawBatch:
    """Both tables as read from one source, with where they came from."""

    procedures: pd.DataFrame
    levels: pd.DataFrame
    source: str
    formats: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows of registered batches that the source kept back (a database or Parquet-folder read), per table."""
    skipped_batches: tuple[int, ...] = ()
    """The batches those rows belong to."""

    def tables(self) -> dict[str, pd.DataFrame]:
        return {PROCEDURES.name: self.procedures, LEVELS.name: self.levels}


def is_url(source: str | Path) -> bool:
    return "://" in str(source)


BatchRows = Mapping[str, int]
"""What the ledger recorded of one batch when it was taken: its rows per table and the sum of its procedures'
``n_levels`` (``{"procedures": n, "levels": m, "n_levels": s}``; an older record may lack some)."""


def read_source(source: str | Path, *, retry: Retry | None = None,
                registered: Mapping[int, BatchRows | None] | None = None) -> RawBatch:
    """Read the `procedures` and `levels` tables of a source.

    With ``registered`` (the ledger's batches and the rows each held when it was taken) a database or a Parquet
    folder leaves out the batches it holds with the same row counts (a batch with another count is read, so that
    validation can compare its content), and counts them in :attr:`RawBatch.skipped`; a batch recorded without counts
    (None) is left out whenever present. Everything else is read: unregistered batches whatever their number, rows
    without a valid batch, levels without a procedure. The source is asked with ranges of batch numbers (one per gap
    in the registry), so a night transfers the new rows, not the history. This needs an integer ``extract_batch``
    column and ids stored as validation reads them; otherwise, and for CSV, everything is read and validation sets
    the registered batches aside by their content.

    Parameters
    ----------
    source
        A folder holding ``procedures`` and ``levels`` (``.parquet`` or ``.csv`` files, or folders of
        part files), a SQLite file, or a SQLAlchemy URL (``postgresql+psycopg://...``, ``sqlite:///...``).
    retry
        Attempts at a database and the waits between them; default :data:`SOURCE_RETRY`.
    registered
        Batches the source may leave out, with their recorded row counts (None or empty: read everything).

    Raises
    ------
    SourceError
        The source is missing, empty, unreadable, truncated, not UTF-8, or lacks a table.
    ContractError
        A table has too many columns, two columns of one name, or a nested column.
    SourceUnavailable
        A database could not be reached, or the connection was lost mid-read, at every attempt.
    """
    registered = dict(registered or {})
    if is_url(source):
        return _read_sql(str(source), retry=retry, registered=registered)
    path = Path(source)
    if not path.exists():
        raise SourceError(f"source not found: {display_source(path)}")
    if path.is_file():
        if path.suffix.lower() in _SQLITE_SUFFIXES or _has_sqlite_magic(path):
            return _read_sql(f"sqlite:///{path.resolve()}", shown=str(path), retry=retry, registered=registered)
        raise SourceError(f"source {display_source(path)} is a file but not a SQLite database; give a folder or a "
                          "database URL")
    if registered and (night := _read_parquet_night(path, registered)) is not None:
        return night
    frames: dict[str, pd.DataFrame] = {}
    formats: dict[str, str] = {}
    for table in TABLE_NAMES:
        frames[table], formats[table] = _read_table_from_folder(path, table)
    return RawBatch(procedures=frames[PROCEDURES.name], levels=frames[LEVELS.name], source=display_source(path),
                    formats=formats)


def skippable_batches(registered: Mapping[int, BatchRows | None], counts: Mapping[str, Mapping[int, int]]
                      ) -> set[int]:
    """The registered batches a source may leave out: those it holds with every count recorded when they were taken
    (``counts``: what the source counted per batch, e.g. ``{"procedures": {...}, "n_levels": {...}}``; each count
    the ledger and the source both have is compared), and those recorded without counts."""
    skip = set()
    for batch, rows in registered.items():
        compared = [key for key in counts if rows is not None and key in rows]
        if rows is None or (compared and all(int(counts[key].get(batch, 0)) == int(rows[key]) for key in compared)):
            skip.add(int(batch))
    return skip


def _has_sqlite_magic(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def _table_files(folder: Path, table: str) -> tuple[list[Path], str]:
    """The files of one table in a folder source and their format (``parquet`` or ``csv``)."""
    candidates = [p for p in (folder / f"{table}.parquet", folder / f"{table}.csv", folder / table) if p.exists()]
    if not candidates:
        raise SourceError(f"table {table} not found in {folder}: expected {table}.parquet, {table}.csv "
                          f"or a folder {table}/ of part files")
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise SourceError(f"table {table} is ambiguous in {folder}: found {names}; keep exactly one")
    path = candidates[0]
    if path.is_dir():
        parts = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".csv") and p.is_file())
        kinds = {p.suffix.lower() for p in parts}
        if not parts:
            raise SourceError(f"table {table}: folder {path} holds no .parquet or .csv part files")
        if len(kinds) > 1:
            raise SourceError(f"table {table}: folder {path} mixes Parquet and CSV part files")
        return parts, "parquet" if kinds == {".parquet"} else "csv"
    if not path.is_file():  # a FIFO or a device would block the read (with the workspace locked) or never end
        raise SourceError(f"table {table}: {path} is not a regular file (a pipe or a device?); export it to a file")
    return [path], "parquet" if path.suffix.lower() == ".parquet" else "csv"


def _read_table_from_folder(folder: Path, table: str) -> tuple[pd.DataFrame, str]:
    paths, fmt = _table_files(folder, table)
    if fmt == "parquet":
        frame = _read_parquet(paths, table)
    else:
        frame = pd.concat([_read_csv(p, table) for p in paths], ignore_index=True)
    if frame.empty:
        raise SourceError(f"table {table} in {display_source(folder)} is empty (no rows)")
    return frame, fmt


def _read_parquet_night(folder: Path, registered: Mapping[int, BatchRows | None]) -> RawBatch | None:
    """Both Parquet tables of a folder without the registered batches it holds with their recorded row counts, which
    are counted instead (the rule of :func:`skippable_batches` and :class:`_NewRowsPlan`, applied by Arrow). Only
    two key columns of the history are read whole. None when the folder is not Parquet or ``extract_batch`` is not an
    integer column (read it all)."""
    files = {table: _table_files(folder, table) for table in TABLE_NAMES}
    if any(fmt != "parquet" for _, fmt in files.values()):
        return None
    try:
        data = {table: _parquet_dataset(paths, table) for table, (paths, _) in files.items()}
        procedures, levels = data[PROCEDURES.name], data[LEVELS.name]
        batch_field = procedures.schema.field(EXTRACT_BATCH) if EXTRACT_BATCH in procedures.schema.names else None
        if (batch_field is None or not pa.types.is_integer(batch_field.type)
                or any(PROCEDURE_ID not in d.schema.names for d in data.values())
                or not all(pa.types.is_string(t) or pa.types.is_large_string(t)
                           for t in (d.schema.field(PROCEDURE_ID).type for d in data.values()))):
            return None
        with_sum = N_LEVELS in procedures.schema.names and pa.types.is_integer(procedures.schema.field(N_LEVELS).type)
        keys = procedures.to_table(columns=[PROCEDURE_ID, EXTRACT_BATCH, *([N_LEVELS] if with_sum else [])])
        level_ids = levels.to_table(columns=[PROCEDURE_ID])[PROCEDURE_ID]
        if not (_ids_are_clean(keys[PROCEDURE_ID]) and _ids_are_clean(level_ids)):
            return None
        ids = keys[PROCEDURE_ID].cast(pa.string())
        batches = _batch_numbers(keys[EXTRACT_BATCH])
        wanted = pa.array(sorted(registered), type=pa.int64())
        in_registry = pc.fill_null(pc.is_in(batches, value_set=wanted), False)
        first = pc.index_in(level_ids.cast(pa.string()), value_set=ids)  # the first procedure with the level's id
        level_batch = pc.take(batches, pc.fill_null(first, 0)).combine_chunks() if len(ids) else pa.array([], pa.int64())
        level_batch = pc.if_else(pc.is_null(first), pa.scalar(None, pa.int64()), level_batch)
        counts = {PROCEDURES.name: _value_counts(batches.filter(in_registry)),
                  LEVELS.name: _value_counts(pc.filter(level_batch, pc.fill_null(
                      pc.is_in(level_batch, value_set=wanted), False)))}
        if with_sum:
            summed = pa.table({"b": batches.filter(in_registry),
                               "n": keys[N_LEVELS].cast(pa.int64()).filter(in_registry)}).group_by("b").aggregate(
                [("n", "sum")])
            counts[N_LEVELS] = {int(b): int(n or 0) for b, n in zip(summed["b"].to_pylist(), summed["n_sum"].to_pylist())}
        skip = pa.array(sorted(skippable_batches(registered, counts)), type=pa.int64())
        old = pc.fill_null(pc.is_in(batches, value_set=skip), False)
        old_ids = pc.unique(ids.filter(old).drop_null())
        new_ids = pc.unique(ids.filter(pc.invert(old)).drop_null())
        only_old = old_ids.filter(pc.invert(pc.is_in(old_ids, value_set=new_ids)))
        batch = ds.field(EXTRACT_BATCH)
        fresh = procedures.to_table(filter=batch.is_null() | ~batch.isin(skip.cast(batch_field.type)))
        level_id = ds.field(PROCEDURE_ID)
        only_old = only_old.cast(levels.schema.field(PROCEDURE_ID).type)  # isin wants the column's own type
        kept_levels = levels.to_table(filter=level_id.is_null() | ~level_id.isin(only_old))
        totals = {PROCEDURES.name: keys.num_rows, LEVELS.name: len(level_ids)}  # the key columns are whole
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"source {display_source(folder)}: a Parquet file is not readable (truncated or corrupt?): "
                          f"{_first_line(exc)}") from None
    for table, total in totals.items():
        if total == 0:
            raise SourceError(f"table {table} in {display_source(folder)} is empty (no rows)")
    skipped_batches = tuple(sorted(int(b) for b in pc.unique(batches.filter(old)).to_pylist()))
    return RawBatch(procedures=arrow_to_frame(fresh, PROCEDURES.name),
                    levels=arrow_to_frame(kept_levels, LEVELS.name), source=display_source(folder),
                    formats=dict.fromkeys(TABLE_NAMES, "parquet"),
                    skipped={PROCEDURES.name: int(pc.sum(old).as_py() or 0),
                             LEVELS.name: totals[LEVELS.name] - kept_levels.num_rows},
                    skipped_batches=skipped_batches)


def _is_binary(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type)
            or pa.types.is_fixed_size_binary(arrow_type) or pa.types.is_binary_view(arrow_type))


def _batch_numbers(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """An integer ``extract_batch`` column as int64, null where it is no valid batch number (below 1, above
    BATCH_MAX, or beyond int64 as uint64 may be): those rows belong to no batch and are read, then quarantined."""
    if pa.types.is_uint64(column.type):  # the only integer type int64 does not hold; compared in its own type
        small = pc.fill_null(pc.less_equal(column, pa.scalar(BATCH_MAX, column.type)), False)
        column = pc.if_else(small, column, pa.scalar(None, column.type))
    column = column.cast(pa.int64())
    valid = pc.fill_null(pc.and_(pc.greater_equal(column, 1), pc.less_equal(column, BATCH_MAX)), False)
    return pc.if_else(valid, column, pa.scalar(None, pa.int64()))


def _value_counts(values: pa.Array | pa.ChunkedArray) -> dict[int, int]:
    counted = pc.value_counts(values.drop_null() if isinstance(values, pa.ChunkedArray) else values.drop_null())
    return {int(v): int(n) for v, n in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())}


def _arrow_to_pandas_type(arrow_type: pa.DataType) -> object | None:
    if pa.types.is_uint64(arrow_type):
        return None  # may exceed Int64: NumPy's own type, which coercion checks for range
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    if pa.types.is_floating(arrow_type):
        return pd.Float64Dtype()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


def arrow_to_frame(table: pa.Table, name: str = "") -> pd.DataFrame:
    """An Arrow table as a pandas frame with nullable dtypes (Int64, Float64, boolean, string).

    A binary column (text some writers store as bytes) is read as text when it is UTF-8; otherwise the table is
    refused, naming the column and never showing its bytes.
    """
    for position, arrow_field in enumerate(table.schema):
        value_type = arrow_field.type.value_type if pa.types.is_dictionary(arrow_field.type) else arrow_field.type
        if _is_binary(value_type):
            try:
                column = table.column(position)
                if pa.types.is_dictionary(arrow_field.type):
                    column = column.cast(value_type)  # dense first: the dictionary's bytes checked as text below
                column = column.cast(pa.binary()).cast(pa.string())
            except pa.ArrowInvalid:
                from records.guard import header_labels

                label = header_labels(table.schema.names)[position]
                raise SourceError(f"table {name or '?'}: column {label} holds bytes that are not UTF-8 text (not "
                                  "shown); store it as UTF-8 text") from None
            table = table.set_column(position, pa.field(arrow_field.name, pa.string()), column)
    return table.to_pandas(types_mapper=_arrow_to_pandas_type)


def _parquet_dataset(paths: list[Path], table: str) -> ds.Dataset:
    """The table's Parquet files as one dataset over the union of their columns, each file's schema checked first
    (too many columns, twins, nested columns), so that a column only a later part file holds is never missed."""
    schemas = [pq.read_schema(p) for p in paths]
    return ds.dataset([str(p) for p in paths], format="parquet", schema=unified_arrow_schema(table, schemas))


def _read_parquet(paths: list[Path], table: str) -> pd.DataFrame:
    try:
        dataset = _parquet_dataset(paths, table)
        arrow_table = pq.read_table(paths[0]) if len(paths) == 1 else dataset.to_table()
    except (pa.ArrowException, OSError) as exc:
        names = ", ".join(p.name for p in paths)
        raise SourceError(f"table {table}: {names} is not a readable Parquet file "
                          f"(truncated or corrupt?): {_first_line(exc)}") from None
    return arrow_to_frame(arrow_table, table)


def _read_csv(path: Path, table: str) -> pd.DataFrame:
    """A CSV file as text columns, every byte of a cell kept (a NUL or a line break inside a quoted cell stays in the
    value, for validation to quarantine), the header checked before any row is parsed."""
    names = _csv_header(path, table)
    check_column_names(table, names)
    try:
        arrow_table = pacsv.read_csv(
            path, read_options=pacsv.ReadOptions(use_threads=True, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        message = str(exc)
        if "UTF8" in message or "UTF-8" in message:
            raise SourceError(f"table {table}: {path.name} is not UTF-8 text; export it as UTF-8") from None
        if "Empty CSV file" in message:
            raise SourceError(f"table {table}: {path.name} is empty (no header, no rows)") from None
        raise SourceError(f"table {table}: {path.name} is not well-formed CSV: {_csv_problem(message)}") from None
    if _ends_inside_quotes(path):
        raise SourceError(f"table {table}: {path.name} is not well-formed CSV: it ends inside a quoted field (a "
                          "truncated export?); send the whole file again")
    frame = arrow_to_frame(arrow_table, table)
    frame.columns = [str(c).strip().lower() for c in names]
    return frame


def _ends_inside_quotes(path: Path) -> bool:
    """True when the file ends inside a quoted field: what a cut-off export looks like, which Arrow would read as a
    last (short) value. Cheap: a well-formed file has an even number of quote characters (a quote inside a quoted
    field is doubled); only an odd count is parsed, strictly, to tell a truncation from a stray literal quote."""
    count = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 24):
            count += chunk.count(b'"')
    if count % 2 == 0:
        return False
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # a long quoted cell is no reason to stop before the end
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            for _ in csv.reader(handle, strict=True):
                pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    finally:
        csv.field_size_limit(limit)
    return False


def _csv_header(path: Path, table: str) -> list[str]:
    """The names in a CSV file's first record, read without parsing the rest (a header of 100,000 columns is refused
    in milliseconds by :func:`records.columns.check_column_names`)."""
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError:
        raise SourceError(f"table {table}: {path.name} is not UTF-8 text; export it as UTF-8") from None
    except csv.Error as exc:
        raise SourceError(f"table {table}: {path.name} is not well-formed CSV: {_first_line(exc)}") from None
    if not header:
        raise SourceError(f"table {table}: {path.name} is empty (no header, no rows)")
    return header


def _csv_problem(message: str) -> str:
    """Arrow's CSV error without the row it quotes, which holds values: 'CSV parse error: Expected 24 columns, got 23'."""
    first = message.strip().splitlines()[0] if message.strip() else "unreadable"
    return ": ".join(first.split(": ")[:2])


def _read_sql(url: str, *, shown: str | None = None, retry: Retry | None = None,
              registered: Mapping[int, BatchRows | None] | None = None) -> RawBatch:
    """Both tables of a database in one snapshot, retried from the start while the database cannot be reached."""
    import sqlalchemy as sa

    shown = shown or display_source(url)
    url = connectable_url(url)
    policy = retry or SOURCE_RETRY
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise SourceError(f"source {shown} is not a usable database URL: {_driver_message(exc, url)}") from None
    failures: list[str] = []

    def unavailable(error: BaseException) -> bool:
        if isinstance(error, SourceUnavailable):
            failures.append(error.detail)
            return True
        return False

    try:
        return retry_call(lambda: _read_sql_once(url, parsed, shown, registered or {}), policy=policy,
                          retry_if=unavailable)
    except SourceUnavailable as error:
        if policy.attempts == 1:
            raise
        if len(failures) < policy.attempts:
            failures.append(error.detail)
        raise SourceUnavailable(f"cannot reach database {shown}{_host_port(parsed)}: gave up after "
                                f"{policy.describe()}: {_attempts(failures)}") from None


def _attempts(failures: list[str]) -> str:
    """Each distinct failure with the attempts it ended: 'attempt 1: ...; attempts 2, 3: ...'."""
    seen: dict[str, list[int]] = {}
    for number, text in enumerate(failures, start=1):
        seen.setdefault(text, []).append(number)
    return "; ".join(f"attempt{'s' if len(n) > 1 else ''} {', '.join(map(str, n))}: {text}"
                     for text, n in seen.items())


def _read_sql_once(url: str, parsed: object, shown: str, registered: Mapping[int, BatchRows | None]) -> RawBatch:
    import sqlalchemy as sa

    where = _host_port(parsed)
    connect_args = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        engine = sa.create_engine(url, connect_args=connect_args)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise SourceError(f"source {shown} is not a usable database URL: {_driver_message(exc, url)}") from None
    if engine.dialect.name == "sqlite":
        _one_sqlite_transaction(engine)
    frames: dict[str, pd.DataFrame] = {}
    skipped: dict[str, int] = {}
    skipped_batches: tuple[int, ...] = ()
    step = None
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            step = "listing its tables"
            inspector = sa.inspect(connection)
            present = set(inspector.get_table_names())
            for table in TABLE_NAMES:
                if table not in present:
                    raise SourceError(f"table {table} not found in database {shown}")
                check_column_names(table, [str(c["name"]) for c in inspector.get_columns(table)])
            step = "checking whether it can leave out the registered batches"
            plan = _new_rows_plan(connection, inspector, registered) if registered else None
            for table in TABLE_NAMES:
                step = f"reading table {table}"
                if plan is None:
                    result = connection.execute(sa.text(f'SELECT * FROM "{table}"'))
                else:
                    result = connection.execute(sa.text(plan.new_rows(table)), plan.bounds)
                frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
                if frame.empty and (plan is None or connection.execute(
                        sa.text(f'SELECT 1 FROM "{table}" LIMIT 1')).first() is None):
                    raise SourceError(f"table {table} in database {shown} is empty (no rows)")
                frame.columns = [str(c).strip().lower() for c in frame.columns]
                frames[table] = frame
            if plan is not None:
                step = "counting the rows of registered batches"
                # every level is either read or skipped (the skip test is never NULL): count the table, not the test
                levels = int(connection.execute(sa.text(f'SELECT COUNT(*) FROM "{LEVELS.name}"')).scalar())
                skipped = {PROCEDURES.name: int(sum(plan.skipped_rows.values())),
                           LEVELS.name: levels - len(frames[LEVELS.name])}
                skipped_batches = tuple(sorted(plan.skipped_rows))
    except sa.exc.DBAPIError as exc:
        permanent = _permanent_problem(exc)
        if permanent is not None:
            raise SourceError(f"cannot read database {shown}{where}" + (f" ({step})" if step else "")
                              + f": {permanent}") from None
        if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)) or exc.connection_invalidated:
            what = ("could not connect" if step is None
                    else f"the connection was lost while {step} (nothing read was kept)")
            detail = f"{what}: {type(exc).__name__}: {_driver_message(exc, url)}"
            raise SourceUnavailable(f"cannot reach database {shown}{where}: {detail}", detail=detail) from None
        raise SourceError(f"cannot read database {shown}: {type(exc).__name__}: "
                          f"{_driver_message(exc, url)}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot read database {shown}: {type(exc).__name__}: "
                          f"{_driver_message(exc, url)}") from None
    finally:
        engine.dispose()
    return RawBatch(procedures=frames[PROCEDURES.name], levels=frames[LEVELS.name], source=display_source(shown),
                    formats={t: engine.dialect.name for t in TABLE_NAMES}, skipped=skipped,
                    skipped_batches=skipped_batches)


_NOT_UTF8 = re.compile(r"Could not decode to UTF-8 column '(?P<column>[^']*)'")
_PERMANENT = (
    (re.compile(r'database "[^"]*" does not exist'), "the database does not exist"),
    (re.compile(r'role "[^"]*" does not exist'), "the user (role) does not exist"),
    # "LDAP/RADIUS authentication failed" is also what PostgreSQL says when that server is down: left to retries
    (re.compile(r"password authentication failed|no password supplied", re.I),
     "the login was refused (user or password)"),
    (re.compile(r"invalid (?:integer )?value .* for connection option|invalid port", re.I),
     "a connection option of the URL is invalid (the port?)"),
)
"""Driver errors that no retry can mend: the source is refused (exit 2), not unavailable. Each message is ours: the
driver's text may quote values."""


def _permanent_problem(exc: BaseException) -> str | None:
    """What is wrong, when a driver error is about the data or the URL rather than the connection; None otherwise."""
    text = str(getattr(exc, "orig", None) or exc)
    not_utf8 = _NOT_UTF8.search(text)
    if not_utf8:
        from records.guard import header_labels

        name = not_utf8.group("column")
        label = name if header_labels([name]) == [name] else "a column whose name looks like an identifier (withheld)"
        return f"{label} holds text that is not UTF-8 (its value is not shown); store it as UTF-8"
    return next((message for pattern, message in _PERMANENT if pattern.search(text)), None)


def _one_sqlite_transaction(engine: object) -> None:
    """Every statement of a read in one SQLite transaction, so both tables and the counts come from one state of
    the file (Python's sqlite3 opens none for SELECTs; SQLAlchemy's documented recipe)."""
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def _driver_leaves_transactions_to_us(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


MAX_RANGES = 500
"""Beyond this many ranges of registered batches (gaps in the registry) a SQLite source is read whole; PostgreSQL is
asked with an array instead."""


@dataclass(frozen=True)
class _NewRowsPlan:
    """The SQL that reads only what validation would not skip, and what it leaves out.

    It mirrors :func:`records.validation.validate_batch`: a procedure is left out when its extract_batch is one of the
    skipped batches (:func:`skippable_batches`, given as ranges); a level is left out when a left-out procedure has its
    procedure_id and no other procedure does. Everything else is read (a NULL or invalid batch, an unregistered one,
    an orphan level), so validation sees it as in a whole read.
    """

    ranges: tuple[tuple[int, int], ...]
    dialect: str
    skipped_rows: dict[int, int]
    """The procedures of each left-out batch that the source holds."""

    @property
    def bounds(self) -> dict[str, object]:
        if self._as_array:
            return {"skip": [b for low, high in self.ranges for b in range(low, high + 1)]}
        return {**{f"a{i}": low for i, (low, _) in enumerate(self.ranges)},
                **{f"b{i}": high for i, (_, high) in enumerate(self.ranges)}}

    @property
    def _as_array(self) -> bool:
        return len(self.ranges) > MAX_RANGES

    @property
    def _OLD(self) -> str:  # noqa: N802 - a fragment of SQL
        """A batch in one of the ranges; in SQLite also a whole number (it may hold 1.5 in an INTEGER column, which
        validation quarantines). PostgreSQL's integer columns hold whole numbers, and plain ranges keep its index
        usable."""
        if self._as_array:
            return "(p.extract_batch = ANY(CAST(:skip AS bigint[])))"
        whole = " AND p.extract_batch = CAST(p.extract_batch AS INTEGER)" if self.dialect == "sqlite" else ""
        terms = " OR ".join(f"(p.extract_batch >= :a{i} AND p.extract_batch <= :b{i})" for i in range(len(self.ranges)))
        return f"(({terms}){whole})"

    @property
    def _NOT_OLD(self) -> str:  # noqa: N802
        """The exact complement of :attr:`_OLD`, NULL included: in PostgreSQL as the gaps between the ranges."""
        if self.dialect == "sqlite":
            return f"(NOT COALESCE({self._OLD}, FALSE))"
        if self._as_array:
            return f"(p.extract_batch IS NULL OR NOT {self._OLD})"
        gaps = ["p.extract_batch < :a0"]
        gaps += [f"(p.extract_batch > :b{i - 1} AND p.extract_batch < :a{i})" for i in range(1, len(self.ranges))]
        gaps.append(f"p.extract_batch > :b{len(self.ranges) - 1}")
        return "(p.extract_batch IS NULL OR " + " OR ".join(gaps) + ")"

    def _level_skipped(self) -> str:
        return (f'EXISTS (SELECT 1 FROM "procedures" p WHERE p.procedure_id = l.procedure_id AND {self._OLD}) '
                f'AND NOT EXISTS (SELECT 1 FROM "procedures" p WHERE p.procedure_id = l.procedure_id '
                f'AND {self._NOT_OLD})')

    def new_rows(self, table: str) -> str:
        if table == PROCEDURES.name:
            return f'SELECT p.* FROM "procedures" p WHERE {self._NOT_OLD}'
        return f'SELECT l.* FROM "levels" l WHERE NOT ({self._level_skipped()})'


def _registered_counts_sql(ranges: list[tuple[int, int]], dialect: str, *, n_levels: bool
                           ) -> tuple[str, dict[str, int]]:
    """SQL counting, per registered batch the source holds, its procedures and (when ``n_levels`` is an integer
    column) the sum of their ``n_levels``: one grouped pass over the procedures, no join with the levels (a level
    added or removed changes its procedure's ``n_levels``, which the contract ties to the level rows)."""
    whole = " AND p.extract_batch = CAST(p.extract_batch AS INTEGER)" if dialect == "sqlite" else ""
    terms = " OR ".join(f"(p.extract_batch >= :a{i} AND p.extract_batch <= :b{i})" for i in range(len(ranges)))
    bounds = {**{f"a{i}": low for i, (low, _) in enumerate(ranges)}, **{f"b{i}": high for i, (_, high) in enumerate(ranges)}}
    total = ", SUM(p.n_levels)" if n_levels else ""
    return (f'SELECT p.extract_batch, COUNT(*){total} FROM "procedures" p WHERE (({terms}){whole}) '
            'GROUP BY p.extract_batch', bounds)


def _new_rows_plan(connection: object, inspector: object, registered: Mapping[int, BatchRows | None]
                   ) -> _NewRowsPlan | None:
    """The plan when the database can apply validation's skip rule itself; else None (everything is read).

    That needs an integer ``extract_batch``, ``procedure_id`` as text in both tables, and every id reading as
    stored (:func:`_unclean_id_sql`): validation strips blanks and reads "NA" as missing, the database compares
    ids as stored. The registered batches' row counts are compared with the ledger's (:func:`skippable_batches`).
    """
    import sqlalchemy as sa

    columns = {table: {str(c["name"]): c["type"] for c in inspector.get_columns(table)} for table in TABLE_NAMES}
    batch_type = columns[PROCEDURES.name].get(EXTRACT_BATCH)
    if not isinstance(batch_type, sa.Integer) or any(
            not isinstance(cols.get(PROCEDURE_ID), sa.String) for cols in columns.values()):
        return None
    dialect = connection.dialect.name
    unclean = _unclean_id_sql(dialect)
    if unclean is None:
        return None
    for table in TABLE_NAMES:
        probe = f'SELECT 1 FROM "{table}" t WHERE t.procedure_id IS NOT NULL AND ({unclean}) LIMIT 1'
        if connection.execute(sa.text(probe)).first() is not None:
            return None
    registered_ranges = batch_ranges(registered)
    if len(registered_ranges) > MAX_RANGES and dialect != "postgresql":
        return None
    with_sum = isinstance(columns[PROCEDURES.name].get(N_LEVELS), sa.Integer)
    counts: dict[str, dict[int, int]] = {PROCEDURES.name: {}, **({N_LEVELS: {}} if with_sum else {})}
    for start in range(0, len(registered_ranges), MAX_RANGES):  # bounded statements, whatever the gaps
        query, bounds = _registered_counts_sql(registered_ranges[start:start + MAX_RANGES], dialect,
                                               n_levels=with_sum)
        for row in connection.execute(sa.text(query), bounds).all():
            counts[PROCEDURES.name][int(row[0])] = int(row[1])
            if with_sum:
                counts[N_LEVELS][int(row[0])] = int(row[2] or 0)
    skip = skippable_batches(registered, counts)
    present = {b: n for b, n in counts[PROCEDURES.name].items() if b in skip}
    if not skip:
        return None
    return _NewRowsPlan(ranges=tuple(batch_ranges(skip)), dialect=dialect, skipped_rows=present)


def _unclean_id_sql(dialect: str) -> str | None:
    """SQL true for an id ``t.procedure_id`` that validation would read differently from its stored form.

    Validation strips an id's blanks and reads a missing-value token as missing, nothing else; so an id whose
    first and last characters are id characters and that is no token reads as stored. (Checking the ends, not
    every character, keeps the probe cheap: a full regular expression took 5 s over 1.65M PostgreSQL rows.)
    """
    tokens = ", ".join(f"'{token}'" for token in MISSING_TOKENS if token)
    longest = max(len(token) for token in MISSING_TOKENS)
    missing = f"(length(t.procedure_id) <= {longest} AND lower(t.procedure_id) IN ({tokens}))"
    if dialect == "postgresql":
        return (f"t.procedure_id = '' OR (left(t.procedure_id, 1) || right(t.procedure_id, 1)) !~ '^{_ID_CHARS}+$' "
                f"OR {missing}")
    if dialect == "sqlite":
        return (f"t.procedure_id = '' OR (substr(t.procedure_id, 1, 1) || substr(t.procedure_id, -1, 1)) "
                f"GLOB '*[^{_ID_CHARS[1:]}*' OR {missing}")
    return None


def _ids_are_clean(ids: pa.ChunkedArray) -> bool:
    """Every id reads as stored (the rule of :func:`_unclean_id_sql`, in Arrow)."""
    present = ids.drop_null().cast(pa.string())
    if len(present) == 0:
        return True
    ends = pc.binary_join_element_wise(pc.utf8_slice_codeunits(present, 0, 1),
                                       pc.utf8_slice_codeunits(present, -1, 2 ** 31 - 1), "")
    clean_ends = pc.match_substring_regex(ends, f"^{_ID_CHARS}{{2}}$|^{_ID_CHARS}$")
    missing = pc.is_in(pc.utf8_lower(present), value_set=pa.array(list(MISSING_TOKENS), pa.string()))
    return bool(pc.all(clean_ends).as_py()) and not bool(pc.any(missing).as_py())


def _host_port(parsed: object) -> str:
    host = getattr(parsed, "host", None)
    if not host:
        return ""
    port = getattr(parsed, "port", None)
    return f" (host {host}, port {port})" if port else f" (host {host})"


def _driver_message(exc: BaseException, url: str) -> str:
    """The driver's first line, any URL in it masked, and the password of ``url`` never shown."""
    return mask_secrets(_first_line(getattr(exc, "orig", None) or exc), source=url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
