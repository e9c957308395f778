"""The registry: accepted records appended to the workspace as Parquet partitioned by extract_batch,
a watermark in ``state.json``, and the quarantine store that the pipeline never deletes.

Only batches listed in ``state.json`` are part of the registry: a partition written by a run that was
stopped before it recorded the batch is invisible and is overwritten by the next run, so registering is
idempotent and a killed run leaves the registry as it was. Likewise only the quarantine files listed in
``state.json`` are part of the quarantine store, so the rows a killed run quarantined are not counted twice
when the next run quarantines them again.

Within a run (the workspace lock held, :mod:`workspace.transaction`) ``state.json`` and the quarantine files are
staged and take effect when the run commits, at its end: a run killed or failed after registering leaves
the registry as it was before the run.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from workspace import transaction as lock
from workspace.durable import write_durably
from records.readers import arrow_to_frame
from records.schema import EXTRACT_BATCH, LEVELS, PROCEDURE_ID, PROCEDURES, TableSpec
from records.validation import ValidationResult

REGISTRY_DIR = "registry"
QUARANTINE_DIR = "quarantine"
STATE_FILE = "state.json"
PART_FILE = "part-0.parquet"
_PARTITIONING = ds.partitioning(pa.schema([(EXTRACT_BATCH, pa.int64())]), flavor="hive")


@dataclass(frozen=True)
class RegistryState:
    """The watermark (highest extract batch registered), what each registered batch holds, and the quarantine
    files that belong to the registry (workspace-relative paths; None for a state written before they were
    recorded, whose quarantine is every file in the folder)."""

    watermark: int = 0
    batches: dict[int, dict[str, object]] = field(default_factory=dict)
    quarantine: tuple[str, ...] | None = None

    def to_json(self) -> str:
        payload: dict[str, object] = {"watermark": self.watermark,
                                      "batches": {str(b): info for b, info in sorted(self.batches.items())}}
        if self.quarantine is not None:
            payload["quarantine"] = sorted(self.quarantine)
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Registration:
    """What one run added to the registry."""

    batches_loaded: list[int]
    rows_written: dict[str, int]
    watermark_before: int
    watermark_after: int
    quarantine_files: list[str]


def registry_root(workspace: Path) -> Path:
    return Path(workspace) / REGISTRY_DIR


def load_state(workspace: Path) -> RegistryState:
    """The registry state of a workspace; an empty state when nothing was registered yet.

    Inside a run, the run's own staged state (see :mod:`workspace.transaction`); elsewhere the committed one.
    """
    data = lock.read_bytes(workspace, registry_root(workspace) / STATE_FILE)
    if data is None:
        return RegistryState()
    payload = json.loads(data.decode("utf-8"))
    quarantine = payload.get("quarantine")
    return RegistryState(watermark=int(payload["watermark"]),
                         batches={int(b): dict(info) for b, info in payload["batches"].items()},
                         quarantine=None if quarantine is None else tuple(str(q) for q in quarantine))


def read_registry_table(workspace: Path, table: TableSpec, *, columns: list[str] | None = None,
                        state: RegistryState | None = None, where: ds.Expression | None = None) -> pd.DataFrame:
    """One registry table (only batches recorded in the state, and rows matching ``where``), with its
    ``extract_batch`` column."""
    state = state or load_state(workspace)
    root = registry_root(workspace) / table.name
    names = columns or list(table.names)
    if not state.batches or not root.exists():
        schema = table.arrow_schema()
        empty = pa.table({n: pa.array([], type=schema.field(n).type) for n in names}, schema=None)
        return arrow_to_frame(empty)
    dataset = ds.dataset(root, format="parquet", partitioning=_PARTITIONING)
    wanted = pa.array(sorted(state.batches), type=pa.int64())
    keep = ds.field(EXTRACT_BATCH).isin(wanted)
    arrow_table = dataset.to_table(columns=names, filter=keep if where is None else keep & where)
    return arrow_to_frame(arrow_table)


def registered_procedure_ids(workspace: Path, *, state: RegistryState | None = None,
                             among: pd.Series | None = None) -> pd.Series:
    """Every procedure_id already registered, or only those ``among`` the given ids (the filter runs in Arrow over
    the Parquet column, so a night's check does not turn a million registered ids into Python strings)."""
    where = None if among is None else ds.field(PROCEDURE_ID).isin(pa.array(pd.Series(among).dropna().astype(str),
                                                                              type=pa.string()))
    return read_registry_table(workspace, PROCEDURES, columns=[PROCEDURE_ID], state=state,
                               where=where)[PROCEDURE_ID]


def register_batches(workspace: Path, result: ValidationResult, *, run_id: str) -> Registration:
    """Append the accepted rows of a validated input, one partition per extract batch, then the quarantine.

    The state (watermark, and the quarantine files) is written last and atomically: until then no new batch
    and no new quarantine file is visible. Inside a run the state is staged until the run commits.
    Batches whose rows were all quarantined still advance the watermark (they were loaded).
    """
    workspace = Path(workspace)
    state = load_state(workspace)
    procedures = result.procedures.accepted
    levels = result.levels.accepted
    level_batch = levels[PROCEDURE_ID].map(procedures.set_index(PROCEDURE_ID)[EXTRACT_BATCH])
    if level_batch.isna().any():
        raise RuntimeError(f"{int(level_batch.isna().sum())} accepted level rows have no accepted procedure; "
                           "nothing was registered (this is a bug in validation)")
    quarantine_files = write_quarantine(workspace, result, run_id=run_id)
    batches = result.batches()
    written = {PROCEDURES.name: 0, LEVELS.name: 0}
    new_batches = dict(state.batches)
    proc_groups = dict(tuple(procedures.groupby(EXTRACT_BATCH, sort=True)))
    lev_groups = dict(tuple(levels.groupby(level_batch, sort=True)))
    for batch in batches:
        proc_part = proc_groups.get(batch, procedures.iloc[0:0])
        lev_part = lev_groups.get(batch, levels.iloc[0:0])
        _write_partition(workspace, PROCEDURES, batch, proc_part)
        _write_partition(workspace, LEVELS, batch, lev_part)
        written[PROCEDURES.name] += len(proc_part)
        written[LEVELS.name] += len(lev_part)
        new_batches[batch] = {"procedures": len(proc_part), "levels": len(lev_part), "run_id": run_id}
    watermark_after = max([state.watermark, *batches])
    recorded = set(state.quarantine) if state.quarantine is not None else set(_quarantine_on_disk(workspace))
    _write_atomic(workspace, registry_root(workspace) / STATE_FILE,
                  RegistryState(watermark=watermark_after, batches=new_batches,
                                quarantine=tuple(sorted(recorded | set(quarantine_files)))).to_json())
    return Registration(batches_loaded=batches, rows_written=written, watermark_before=state.watermark,
                        watermark_after=watermark_after, quarantine_files=quarantine_files)


def write_quarantine(workspace: Path, result: ValidationResult, *, run_id: str) -> list[str]:
    """Keep every quarantined row with its batch, reason and run id; never overwrite or delete.

    The files belong to the quarantine store once :func:`register_batches` records them in the state.
    Returns their workspace-relative paths.
    """
    files: list[str] = []
    for name, outcome in result.tables().items():
        rows = outcome.quarantined
        if rows.empty:
            continue
        rows = rows.assign(run_id=run_id)
        batch_label = rows[EXTRACT_BATCH].astype("string").fillna("unknown")
        for label, part in rows.groupby(batch_label, sort=True):
            path = Path(workspace) / QUARANTINE_DIR / f"{EXTRACT_BATCH}={label}" / f"{name}-{run_id}.parquet"
            table = pa.Table.from_pandas(part.reset_index(drop=True), preserve_index=False)
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            lock.write_file(workspace, path, buffer.getvalue())
            files.append(path.relative_to(workspace).as_posix())
    return files


def read_quarantine(workspace: Path, table: TableSpec, *, state: RegistryState | None = None) -> pd.DataFrame:
    """Every quarantined row of one table kept in the workspace, across runs, each once.

    Only the files the registry state records are read: a file left by a run that was killed before it
    recorded its batches is not (the rerun quarantines those rows again, in a file of its own).
    """
    state = state or load_state(workspace)
    if state.quarantine is None:
        names = _quarantine_on_disk(workspace)
    else:
        names = sorted(state.quarantine)
    frames = []
    for name in names:
        if not Path(name).name.startswith(f"{table.name}-"):
            continue
        data = lock.read_bytes(workspace, Path(workspace) / name)
        if data is None:
            raise FileNotFoundError(f"the quarantine file {name} recorded in {STATE_FILE} is missing from "
                                    f"{workspace}; the quarantine is never deleted by the pipeline")
        frames.append(arrow_to_frame(pq.read_table(pa.BufferReader(data))))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _quarantine_on_disk(workspace: Path) -> list[str]:
    """Every quarantine file in the folder (the quarantine of a state written before files were recorded)."""
    root = Path(workspace) / QUARANTINE_DIR
    return sorted(p.relative_to(workspace).as_posix() for p in root.glob("*/*.parquet"))


def _write_partition(workspace: Path, table: TableSpec, batch: int, rows: pd.DataFrame) -> None:
    folder = registry_root(workspace) / table.name / f"{EXTRACT_BATCH}={batch}"
    folder.mkdir(parents=True, exist_ok=True)
    schema = table.arrow_schema(exclude=(EXTRACT_BATCH,))
    frame = rows[[n for n in schema.names]].reset_index(drop=True)
    arrow_table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(arrow_table, sink, compression="zstd")
    write_durably(folder / PART_FILE, sink.getvalue().to_pybytes())


def _write_atomic(workspace: Path, path: Path, text: str) -> None:
    """Replace a file of the workspace whole (staged inside a run; see :func:`workspace.transaction.write_file`)."""
    lock.write_file(workspace, path, text.encode("utf-8"))
