"""Readers: a folder of Parquet or CSV, a SQLite file, or any SQLAlchemy URL -> raw frames of both tables.

Readers return the tables as found (no typing beyond what the source carries); typing and checking are
the job of :mod:`records.coerce` and :mod:`records.validation`. Whole-input problems raise
:class:`records.errors.SourceError` with one clear message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from records.errors import SourceError, SourceUnavailable
from records.schema import LEVELS, PROCEDURES, TEXT_DTYPE

TABLE_NAMES = (PROCEDURES.name, LEVELS.name)
MISSING_TOKENS = ("", "na", "n/a", "null", "none", "nan")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")


@dataclass(frozen=True)
class RawBatch:
    """Both tables as read from one source, with where they came from."""

    procedures: pd.DataFrame
    levels: pd.DataFrame
    source: str
    formats: dict[str, str] = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {PROCEDURES.name: self.procedures, LEVELS.name: self.levels}


def describe_source(source: str | Path) -> str:
    """The source as it may be written to a manifest: a URL's password is masked."""
    text = str(source)
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", text)


def is_url(source: str | Path) -> bool:
    return "://" in str(source)


def read_source(source: str | Path) -> RawBatch:
    """Read the `procedures` and `levels` tables of a source.

    Parameters
    ----------
    source
        A folder holding ``procedures`` and ``levels`` (``.parquet`` or ``.csv`` files, or folders of
        part files), a SQLite file, or a SQLAlchemy URL (``postgresql+psycopg://...``, ``sqlite:///...``).

    Raises
    ------
    SourceError
        The source is missing, empty, unreadable, truncated, not UTF-8, or lacks a table.
    """
    if is_url(source):
        return _read_sql(str(source))
    path = Path(source)
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_file():
        if path.suffix.lower() in _SQLITE_SUFFIXES or _has_sqlite_magic(path):
            return _read_sql(f"sqlite:///{path.resolve()}", shown=str(path))
        raise SourceError(f"source {path} is a file but not a SQLite database; give a folder or a database URL")
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


def _read_table_from_folder(folder: Path, table: str) -> tuple[pd.DataFrame, str]:
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
        if kinds == {".parquet"}:
            frame = _read_parquet(parts, table)
            fmt = "parquet"
        else:
            frame = pd.concat([_read_csv(p, table) for p in parts], ignore_index=True)
            fmt = "csv"
    elif path.suffix.lower() == ".parquet":
        frame, fmt = _read_parquet([path], table), "parquet"
    else:
        frame, fmt = _read_csv(path, table), "csv"
    if frame.empty:
        raise SourceError(f"table {table} in {folder} is empty (no rows)")
    return frame, fmt


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


def _read_sql(url: str, *, shown: str | None = None) -> RawBatch:
    import sqlalchemy as sa

    shown = shown or describe_source(url)
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise SourceError(f"source {shown} is not a usable database URL: {_first_line(exc)}") from None
    frames: dict[str, pd.DataFrame] = {}
    try:
        with engine.connect() as connection:
            present = set(sa.inspect(connection).get_table_names())
            for table in TABLE_NAMES:
                if table not in present:
                    raise SourceError(f"table {table} not found in database {shown}")
                result = connection.execute(sa.text(f'SELECT * FROM "{table}"'))
                frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
                if frame.empty:
                    raise SourceError(f"table {table} in database {shown} is empty (no rows)")
                frame.columns = [str(c).strip().lower() for c in frame.columns]
                frames[table] = frame
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise SourceUnavailable(f"cannot reach database {shown}: {type(exc).__name__}: "
                                f"{describe_source(_first_line(exc))}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"cannot read database {shown}: {type(exc).__name__}: "
                          f"{describe_source(_first_line(exc))}") from None
    finally:
        engine.dispose()
    return RawBatch(procedures=frames[PROCEDURES.name], levels=frames[LEVELS.name], source=shown,
                    formats={t: engine.dialect.name for t in TABLE_NAMES})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
