"""The registry: accepted records as Parquet partitioned by extract batch, the quarantine store, and the rows a
correction replaced, with the batch ledger (:mod:`workspace.ledger`) saying which of them count.

Layout::

    registry/ledger.json                                   what became of every batch (the registry's state)
    registry/procedures/extract_batch=N/part-0.parquet     the accepted rows of batch N (hive partitions)
    registry/levels/extract_batch=N/part-0.parquet
    registry/history/extract_batch=N/<run_id>/<table>.parquet
                                                           the rows of batch N as run <run_id> registered them,
                                                           kept when a correction replaced them
    quarantine/extract_batch=N/<table>-<run_id>.parquet    rejected rows with their reasons (``unknown``: rows
                                                           without a valid batch number); never deleted

Only committed rows are visible: within a run (the workspace lock held) new partitions, history links, quarantine
files and the ledger are staged (:mod:`workspace.transaction`) and put in place when the run commits, so
``pyarrow.dataset("<workspace>/registry/procedures")`` never shows a killed or failed run's rows. The run itself reads
its staged files.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from records.coerce import coerce_table
from records.readers import arrow_to_frame
from records.schema import EXTRACT_BATCH, LEVELS, PROCEDURE_ID, PROCEDURES, TableSpec
from records.validation import QUARANTINE_META, ValidationResult
from workspace import transaction
from workspace.ledger import REGISTRY_DIR, Ledger, load_ledger, record_registration, write_ledger
from workspace.manifest import utc_now

QUARANTINE_DIR = "quarantine"
HISTORY_DIR = "history"
PART_FILE = "part-0.parquet"
UNKNOWN_BATCH = "unknown"


@dataclass(frozen=True)
class Registration:
    """What one run did to the registry."""

    batches_loaded: list[int]
    batches_replaced: list[int]
    batches_refused: dict[int, str]
    rows_written: dict[str, int]
    quarantine_files: list[str]
    registered_before: int
    registered_after: int


def registry_root(workspace: Path) -> Path:
    return Path(workspace) / REGISTRY_DIR


def partition_path(workspace: Path, table: TableSpec, batch: int) -> Path:
    return registry_root(workspace) / table.name / f"{EXTRACT_BATCH}={batch}" / PART_FILE


def read_registry_table(workspace: Path, table: TableSpec, *, columns: list[str] | None = None,
                        ledger: Ledger | None = None, where: ds.Expression | None = None) -> pd.DataFrame:
    """One registry table (the batches the ledger lists as registered, rows matching ``where``), with its
    ``extract_batch`` column; inside a run, with the partitions the run staged."""
    ledger = ledger if ledger is not None else load_ledger(workspace)
    names = columns or list(table.names)
    schema = table.arrow_schema()
    batches = sorted(ledger.batches)
    if not batches:
        return arrow_to_frame(pa.table({n: pa.array([], type=schema.field(n).type) for n in names}))
    paths = [str(transaction.visible_path(workspace, partition_path(workspace, table, b))) for b in batches]
    dataset = ds.FileSystemDataset.from_paths(
        paths, schema=schema, format=ds.ParquetFileFormat(), filesystem=pafs.LocalFileSystem(),
        partitions=[ds.field(EXTRACT_BATCH) == pa.scalar(b, pa.int64()) for b in batches])
    return arrow_to_frame(dataset.to_table(columns=names, filter=where))


def registered_procedure_ids(workspace: Path, *, ledger: Ledger | None = None, among: pd.Series | None = None,
                             excluding: Iterable[int] = ()) -> pd.Series:
    """Every registered procedure_id, or those ``among`` the given ids (the filter runs in Arrow over the Parquet
    column, so a night's check does not turn a million ids into Python strings), outside the batches ``excluding``
    (those a correction replaces)."""
    ledger = ledger if ledger is not None else load_ledger(workspace)
    dropped = set(excluding)
    ledger = ledger.subset(b for b in ledger.batches if b not in dropped)
    where = None if among is None else ds.field(PROCEDURE_ID).isin(
        pa.array(pd.Series(among).dropna().astype(str), type=pa.string()))
    return read_registry_table(workspace, PROCEDURES, columns=[PROCEDURE_ID], ledger=ledger, where=where)[PROCEDURE_ID]


def registered_batch_rows(workspace: Path, batch: int, *, ledger: Ledger | None = None) -> dict[str, pd.DataFrame]:
    """A registered batch's rows as they came, typed: its accepted rows and its quarantined rows (read back from the
    quarantine store and typed again), per table. What a changed re-send is compared with."""
    ledger = ledger if ledger is not None else load_ledger(workspace)
    entry = ledger.batches[batch]
    one = ledger.subset([batch])
    quarantine = {spec.name: read_quarantine(workspace, spec, ledger=ledger) for spec in (PROCEDURES, LEVELS)}
    out = {}
    for spec in (PROCEDURES, LEVELS):
        accepted = read_registry_table(workspace, spec, ledger=one)
        rows = quarantine[spec.name]
        if not rows.empty:
            rows = rows[(rows[EXTRACT_BATCH].astype("string") == str(batch)).fillna(False).to_numpy(dtype=bool)
                        & (rows["run_id"].astype("string") == str(entry.get("run_id"))).fillna(False).to_numpy(bool)]
            rows = coerce_table(rows[[c for c in spec.names if c in rows.columns]].reset_index(drop=True), spec).frame
        out[spec.name] = pd.concat([accepted[list(spec.names)], rows], ignore_index=True) if len(rows) else accepted
    return out


def register_batches(workspace: Path, result: ValidationResult, *, run_id: str) -> Registration:
    """Register the batches of a validated input: one partition per batch and table, the quarantine, the rows a
    correction replaces kept in history, and the ledger, written last. Inside a run all of it is staged and takes
    effect when the run commits.
    """
    workspace = Path(workspace)
    ledger = load_ledger(workspace)
    if ledger.quarantine is None:  # a legacy state: its quarantine is every file in the folder, now recorded
        ledger = replace(ledger, quarantine=tuple(_quarantine_on_disk(workspace)))
    procedures = result.procedures.accepted
    levels = result.levels.accepted
    level_batch = levels[PROCEDURE_ID].map(procedures.set_index(PROCEDURE_ID)[EXTRACT_BATCH])
    if level_batch.isna().any():
        raise RuntimeError(f"{int(level_batch.isna().sum())} accepted level rows have no accepted procedure; "
                           "nothing was registered (this is a bug in validation)")
    quarantine_files = write_quarantine(workspace, result, run_id=run_id)
    history = {batch: _keep_history(workspace, ledger, batch) for batch in result.replaced_batches}
    written = {PROCEDURES.name: 0, LEVELS.name: 0}
    proc_groups = dict(tuple(procedures.groupby(EXTRACT_BATCH, sort=True)))
    lev_groups = dict(tuple(levels.groupby(level_batch, sort=True)))
    for batch in result.batches():
        proc_part = proc_groups.get(batch, procedures.iloc[0:0])
        lev_part = lev_groups.get(batch, levels.iloc[0:0])
        _write_partition(workspace, PROCEDURES, batch, proc_part)
        _write_partition(workspace, LEVELS, batch, lev_part)
        written[PROCEDURES.name] += len(proc_part)
        written[LEVELS.name] += len(lev_part)
    after = record_registration(ledger, result, run_id=run_id, at=utc_now(), quarantine_files=quarantine_files,
                                history=history)
    write_ledger(workspace, after)
    return Registration(batches_loaded=result.batches(), batches_replaced=list(result.replaced_batches),
                        batches_refused={b: c.describe() for b, c in result.conflicts.items()},
                        rows_written=written, quarantine_files=quarantine_files,
                        registered_before=len(ledger.batches), registered_after=len(after.batches))


def write_quarantine(workspace: Path, result: ValidationResult, *, run_id: str) -> list[str]:
    """Keep every quarantined row with its batch, reason and run id; never overwrite or delete.

    The files belong to the quarantine store once the ledger lists them. Returns their workspace-relative paths.
    """
    files: list[str] = []
    for name, outcome in result.tables().items():
        rows = outcome.quarantined
        if rows.empty:
            continue
        rows = rows.assign(run_id=run_id)
        batch_label = rows[EXTRACT_BATCH].astype("string").fillna(UNKNOWN_BATCH)
        for label, part in rows.groupby(batch_label, sort=True):
            path = Path(workspace) / QUARANTINE_DIR / f"{EXTRACT_BATCH}={label}" / f"{name}-{run_id}.parquet"
            table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            transaction.write_file(workspace, path, buffer.getvalue())
            files.append(path.relative_to(workspace).as_posix())
    return files


def read_quarantine(workspace: Path, table: TableSpec, *, ledger: Ledger | None = None) -> pd.DataFrame:
    """Every quarantined row of one table kept in the workspace, across runs, each once.

    Only the files the ledger records are read: a file left by a run that was killed before it committed is not (the
    rerun quarantines those rows again, in a file of its own).
    """
    ledger = ledger if ledger is not None else load_ledger(workspace)
    names = _quarantine_on_disk(workspace) if ledger.quarantine is None else sorted(ledger.quarantine)
    frames = []
    for name in names:
        if not Path(name).name.startswith(f"{table.name}-"):
            continue
        data = transaction.read_bytes(workspace, Path(workspace) / name)
        if data is None:
            raise FileNotFoundError(f"the quarantine file {name} recorded in the ledger is missing from "
                                    f"{workspace}; the quarantine is never deleted by the pipeline")
        frames.append(arrow_to_frame(pq.read_table(pa.BufferReader(data))))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in (*table.names, *QUARANTINE_META)})
    return pd.concat(frames, ignore_index=True)


def _quarantine_on_disk(workspace: Path) -> list[str]:
    """Every quarantine file in the folder (the quarantine of a legacy state written before files were recorded)."""
    root = Path(workspace) / QUARANTINE_DIR
    return sorted(p.relative_to(workspace).as_posix() for p in root.glob("*/*.parquet"))


def _keep_history(workspace: Path, ledger: Ledger, batch: int) -> dict[str, str]:
    """Link the registered partitions of a batch a correction replaces into ``registry/history/``; their paths."""
    run_id = str(ledger.batches[batch].get("run_id", "unknown"))
    kept = {}
    for spec in (PROCEDURES, LEVELS):
        source = transaction.visible_path(workspace, partition_path(workspace, spec, batch))
        target = registry_root(workspace) / HISTORY_DIR / f"{EXTRACT_BATCH}={batch}" / run_id / f"{spec.name}.parquet"
        if source.is_file():
            transaction.link_file(workspace, source, target)
            kept[spec.name] = target.relative_to(workspace).as_posix()
    return kept


def _write_partition(workspace: Path, table: TableSpec, batch: int, rows: pd.DataFrame) -> None:
    schema = table.arrow_schema(exclude=(EXTRACT_BATCH,))
    frame = rows[[n for n in schema.names]].reset_index(drop=True)
    arrow_table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(arrow_table, sink, compression="zstd")
    transaction.write_file(workspace, partition_path(workspace, table, batch), sink.getvalue().to_pybytes())
