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

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from records.errors import Retry, SourceError, SourceUnavailable, retry_call
from records.schema import EXTRACT_BATCH, ID_PATTERN, LEVELS, PROCEDURE_ID, PROCEDURES, TEXT_DTYPE

TABLE_NAMES = (PROCEDURES.name, LEVELS.name)
MISSING_TOKENS = ("", "na", "n/a", "null", "none", "nan")
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
    """Rows of batches at or below ``after_batch`` that the source kept back (a database read), per table."""
    skipped_batches: tuple[int, ...] = ()
    """The batches those rows belong to."""

    def tables(self) -> dict[str, pd.DataFrame]:
        return {PROCEDURES.name: self.procedures, LEVELS.name: self.levels}


def describe_source(source: str | Path) -> str:
    """The source as it may be written to a manifest: a URL's password is masked."""
    text = str(source)
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", text)


def is_url(source: str | Path) -> bool:
    return "://" in str(source)


def read_source(source: str | Path, *, retry: Retry | None = None, after_batch: int = 0) -> RawBatch:
    """Read the `procedures` and `levels` tables of a source.

    With ``after_batch`` (the registry's watermark) a database or a Parquet folder returns only what validation would
    not skip: the procedures of later batches (or with no valid batch) and the levels not belonging only to earlier
    ones; the rows kept back are counted in :attr:`RawBatch.skipped` (:func:`records.validation.validate_batch` adds
    them to its own). This needs an integer ``extract_batch`` column; otherwise, and for CSV, everything is read and
    validation sets the registered batches aside.

    Parameters
    ----------
    source
        A folder holding ``procedures`` and ``levels`` (``.parquet`` or ``.csv`` files, or folders of
        part files), a SQLite file, or a SQLAlchemy URL (``postgresql+psycopg://...``, ``sqlite:///...``).
    retry
        Attempts at a database and the waits between them; default :data:`SOURCE_RETRY`.
    after_batch
        The highest extract batch already registered (0: none).

    Raises
    ------
    SourceError
        The source is missing, empty, unreadable, truncated, not UTF-8, or lacks a table.
    SourceUnavailable
        A database could not be reached, or the connection was lost mid-read, at every attempt.
    """
    if is_url(source):
        return _read_sql(str(source), retry=retry, after_batch=after_batch)
    path = Path(source)
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_file():
        if path.suffix.lower() in _SQLITE_SUFFIXES or _has_sqlite_magic(path):
            return _read_sql(f"sqlite:///{path.resolve()}", shown=str(path), retry=retry, after_batch=after_batch)
        raise SourceError(f"source {path} is a file but not a SQLite database; give a folder or a database URL")
    if after_batch > 0 and (night := _read_parquet_night(path, after_batch)) is not None:
        return night
    frames: dict[str, pd.DataFrame] = {}
    formats: dict[str, str] = {}
    for table in TABLE_NAMES:
        frames[table], formats[table] = _read_table_from_folder(path, table)
    return RawBatch(procedures=frames[PROCEDURES.name], levels=frames[LEVELS.name], source=str(path), formats=formats)


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
    return [path], "parquet" if path.suffix.lower() == ".parquet" else "csv"


def _read_table_from_folder(folder: Path, table: str) -> tuple[pd.DataFrame, str]:
    paths, fmt = _table_files(folder, table)
    if fmt == "parquet":
        frame = _read_parquet(paths, table)
    else:
        frame = pd.concat([_read_csv(p, table) for p in paths], ignore_index=True)
    if frame.empty:
        raise SourceError(f"table {table} in {folder} is empty (no rows)")
    return frame, fmt


def _read_parquet_night(folder: Path, after_batch: int) -> RawBatch | None:
    """Both Parquet tables of a folder without the rows validation would skip at watermark ``after_batch``, which are
    counted instead: the rule of :class:`_NewRowsPlan`, applied by Arrow. Only two key columns of the history are
    read whole. None when the folder is not Parquet or ``extract_batch`` is not an integer column (read it all)."""
    files = {table: _table_files(folder, table) for table in TABLE_NAMES}
    if any(fmt != "parquet" for _, fmt in files.values()):
        return None
    try:
        data = {table: ds.dataset([str(p) for p in paths], format="parquet") for table, (paths, _) in files.items()}
        procedures, levels = data[PROCEDURES.name], data[LEVELS.name]
        batch_field = procedures.schema.field(EXTRACT_BATCH) if EXTRACT_BATCH in procedures.schema.names else None
        if (batch_field is None or not pa.types.is_integer(batch_field.type)
                or any(PROCEDURE_ID not in d.schema.names for d in data.values())
                or not all(pa.types.is_string(t) or pa.types.is_large_string(t)
                           for t in (d.schema.field(PROCEDURE_ID).type for d in data.values()))):
            return None
        low, high = int(PROCEDURES.column(EXTRACT_BATCH).low), int(after_batch)
        batch = ds.field(EXTRACT_BATCH)
        keys = procedures.to_table(columns=[PROCEDURE_ID, EXTRACT_BATCH])
        level_ids = levels.to_table(columns=[PROCEDURE_ID])[PROCEDURE_ID]
        if not (_ids_are_clean(keys[PROCEDURE_ID]) and _ids_are_clean(level_ids)):
            return None
        old = pc.fill_null(pc.and_(pc.greater_equal(keys[EXTRACT_BATCH], low),
                                   pc.less_equal(keys[EXTRACT_BATCH], high)), False)
        ids = keys[PROCEDURE_ID].cast(pa.string())
        old_ids = pc.unique(ids.filter(old).drop_null())
        new_ids = pc.unique(ids.filter(pc.invert(old)).drop_null())
        only_old = old_ids.filter(pc.invert(pc.is_in(old_ids, value_set=new_ids)))
        fresh = procedures.to_table(filter=batch.is_null() | (batch < low) | (batch > high))
        level_id = ds.field(PROCEDURE_ID)
        only_old = only_old.cast(levels.schema.field(PROCEDURE_ID).type)  # isin wants the column's own type
        kept_levels = levels.to_table(filter=level_id.is_null() | ~level_id.isin(only_old))
        totals = {PROCEDURES.name: keys.num_rows, LEVELS.name: len(level_ids)}  # the key columns are whole
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"source {folder}: a Parquet file is not readable (truncated or corrupt?): "
                          f"{_first_line(exc)}") from None
    for table, total in totals.items():
        if total == 0:
            raise SourceError(f"table {table} in {folder} is empty (no rows)")
    skipped_batches = tuple(sorted(int(b) for b in pc.unique(keys[EXTRACT_BATCH].filter(old)).to_pylist()))
    return RawBatch(procedures=arrow_to_frame(fresh), levels=arrow_to_frame(kept_levels), source=str(folder),
                    formats=dict.fromkeys(TABLE_NAMES, "parquet"),
                    skipped={PROCEDURES.name: int(pc.sum(old).as_py() or 0),
                             LEVELS.name: totals[LEVELS.name] - kept_levels.num_rows},
                    skipped_batches=skipped_batches)


def _arrow_to_pandas_type(arrow_type: pa.DataType) -> object | None:
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    if pa.types.is_floating(arrow_type):
        return pd.Float64Dtype()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


def arrow_to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as a pandas frame with nullable dtypes (Int64, Float64, boolean, string)."""
    return table.to_pandas(types_mapper=_arrow_to_pandas_type)


def _read_parquet(paths: list[Path], table: str) -> pd.DataFrame:
    try:
        if len(paths) == 1:
            arrow_table = pq.read_table(paths[0])
        else:
            arrow_table = ds.dataset([str(p) for p in paths], format="parquet").to_table()
    except (pa.ArrowException, OSError) as exc:
        names = ", ".join(p.name for p in paths)
        raise SourceError(f"table {table}: {names} is not a readable Parquet file "
                          f"(truncated or corrupt?): {_first_line(exc)}") from None
    return arrow_to_frame(arrow_table)


def _read_csv(path: Path, table: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"table {table}: {path.name} is not UTF-8 text; export it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise SourceError(f"table {table}: {path.name} is empty (no header, no rows)") from None
    except pd.errors.ParserError as exc:
        raise SourceError(f"table {table}: {path.name} is not well-formed CSV: {_first_line(exc)}") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame.astype(TEXT_DTYPE)


def _read_sql(url: str, *, shown: str | None = None, retry: Retry | None = None, after_batch: int = 0) -> RawBatch:
    """Both tables of a database in one snapshot, retried from the start while the database cannot be reached."""
    import sqlalchemy as sa

    shown = shown or describe_source(url)
    policy = retry or SOURCE_RETRY
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise SourceError(f"source {shown} is not a usable database URL: {_first_line(exc)}") from None
    failures: list[str] = []

    def unavailable(error: BaseException) -> bool:
        if isinstance(error, SourceUnavailable):
            failures.append(error.detail)
            return True
        return False

    try:
        return retry_call(lambda: _read_sql_once(url, parsed, shown, after_batch), policy=policy,
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


def _read_sql_once(url: str, parsed: object, shown: str, after_batch: int = 0) -> RawBatch:
    import sqlalchemy as sa

    where = _host_port(parsed)
    connect_args = {}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        engine = sa.create_engine(url, connect_args=connect_args)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise SourceError(f"source {shown} is not a usable database URL: {_first_line(exc)}") from None
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
            step = "checking whether it can leave out the registered batches"
            plan = _new_rows_plan(connection, inspector, after_batch) if after_batch > 0 else None
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
                batches = connection.execute(sa.text(plan.skipped_batches()), plan.bounds).all()
                # every level is either read or skipped (the skip test is never NULL): count the table, not the test
                levels = int(connection.execute(sa.text(f'SELECT COUNT(*) FROM "{LEVELS.name}"')).scalar())
                skipped = {PROCEDURES.name: int(sum(n for _, n in batches)),
                           LEVELS.name: levels - len(frames[LEVELS.name])}
                skipped_batches = tuple(sorted(int(b) for b, _ in batches))
    except sa.exc.DBAPIError as exc:
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
    return RawBatch(procedures=frames[PROCEDURES.name], levels=frames[LEVELS.name], source=shown,
                    formats={t: engine.dialect.name for t in TABLE_NAMES}, skipped=skipped,
                    skipped_batches=skipped_batches)


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


@dataclass(frozen=True)
class _NewRowsPlan:
    """The SQL that reads only what validation would not skip at watermark ``high``, and counts the rest.

    It mirrors :func:`records.validation.validate_batch`: a procedure is skipped when its extract_batch lies in
    [low, high]; a level is skipped when a skipped procedure has its procedure_id and no other procedure does.
    Everything else is read (a NULL or out-of-range batch, an orphan level), so validation sees it as before.
    """

    bounds: dict[str, int]
    dialect: str

    @property
    def _OLD(self) -> str:  # noqa: N802 - a fragment of SQL
        """A batch in [low, high]; in SQLite also a whole number (it may hold 1.5 in an INTEGER column, which
        validation quarantines). PostgreSQL's integer columns hold whole numbers, and the plain range keeps its
        index usable."""
        whole = " AND p.extract_batch = CAST(p.extract_batch AS INTEGER)" if self.dialect == "sqlite" else ""
        return f"(p.extract_batch >= :low AND p.extract_batch <= :high{whole})"

    @property
    def _NOT_OLD(self) -> str:  # noqa: N802
        """The exact complement of :attr:`_OLD`, NULL included."""
        if self.dialect == "sqlite":
            return f"(NOT COALESCE({self._OLD}, FALSE))"
        return "(p.extract_batch IS NULL OR p.extract_batch < :low OR p.extract_batch > :high)"

    def _level_skipped(self) -> str:
        return (f'EXISTS (SELECT 1 FROM "procedures" p WHERE p.procedure_id = l.procedure_id AND {self._OLD}) '
                f'AND NOT EXISTS (SELECT 1 FROM "procedures" p WHERE p.procedure_id = l.procedure_id '
                f'AND {self._NOT_OLD})')

    def new_rows(self, table: str) -> str:
        if table == PROCEDURES.name:
            return f'SELECT p.* FROM "procedures" p WHERE {self._NOT_OLD}'
        return f'SELECT l.* FROM "levels" l WHERE NOT ({self._level_skipped()})'

    def skipped_batches(self) -> str:
        return f'SELECT p.extract_batch, COUNT(*) FROM "procedures" p WHERE {self._OLD} GROUP BY p.extract_batch'


def _new_rows_plan(connection: object, inspector: object, after_batch: int) -> _NewRowsPlan | None:
    """The plan when the database can apply validation's skip rule itself; else None (everything is read).

    That needs an integer ``extract_batch``, ``procedure_id`` as text in both tables, and every id reading as
    stored (:func:`_unclean_id_sql`): validation strips blanks and reads "NA" as missing, the database compares
    ids as stored.
    """
    import sqlalchemy as sa

    columns = {table: {str(c["name"]): c["type"] for c in inspector.get_columns(table)} for table in TABLE_NAMES}
    batch_type = columns[PROCEDURES.name].get(EXTRACT_BATCH)
    if not isinstance(batch_type, sa.Integer) or any(
            not isinstance(cols.get(PROCEDURE_ID), sa.String) for cols in columns.values()):
        return None
    unclean = _unclean_id_sql(connection.dialect.name)
    if unclean is None:
        return None
    for table in TABLE_NAMES:
        probe = f'SELECT 1 FROM "{table}" t WHERE t.procedure_id IS NOT NULL AND ({unclean}) LIMIT 1'
        if connection.execute(sa.text(probe)).first() is not None:
            return None
    return _NewRowsPlan(bounds={"low": int(PROCEDURES.column(EXTRACT_BATCH).low), "high": int(after_batch)},
                        dialect=connection.dialect.name)


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
    text = describe_source(_first_line(getattr(exc, "orig", None) or exc))
    try:
        import sqlalchemy as sa

        password = sa.engine.make_url(url).password
    except Exception:  # noqa: BLE001 - a URL that cannot be parsed has no password to hide here
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
