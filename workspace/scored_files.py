"""The scored store's files: the kept rows and submission data file of every scored batch, and the store's state.

Layout::

    scored/state.json                                        generation, model versions, the batches kept
    scored/<generation>/<outcome>/extract_batch=<n>/part-0.parquet
                                                             an outcome's kept rows of batch n
    scored/<generation>/submission/extract_batch=<n>.csv     batch n's submission data file

Every file is staged with the run that holds the workspace's lock (:mod:`workspace.transaction`) and becomes visible
when the run commits, with the state that lists it; the run itself reads its staged files. What the rows mean is
:mod:`reports.scored`'s; this module deals in paths, bytes and Arrow tables.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from records.schema import EXTRACT_BATCH
from workspace import transaction

SCORED_DIR = "scored"
STATE_FILE = "state.json"
SUBMISSION_DIR = "submission"
PART_FILE = "part-0.parquet"


def generation_dir(workspace: Path, generation: str) -> Path:
    return Path(workspace) / SCORED_DIR / generation


def _rows_path(workspace: Path, generation: str, outcome: str, batch: int) -> Path:
    return generation_dir(workspace, generation) / outcome / f"{EXTRACT_BATCH}={batch}" / PART_FILE


def _submission_path(workspace: Path, generation: str, name: str) -> Path:
    return generation_dir(workspace, generation) / SUBMISSION_DIR / Path(name).name


def read_state(workspace: Path) -> bytes | None:
    return transaction.read_bytes(workspace, Path(workspace) / SCORED_DIR / STATE_FILE)


def write_state(workspace: Path, text: str) -> None:
    transaction.write_file(workspace, Path(workspace) / SCORED_DIR / STATE_FILE, text.encode("utf-8"))


def write_kept_rows(workspace: Path, *, generation: str, outcome: str, batch: int, table: pa.Table) -> None:
    """Keep one outcome's scored rows of one batch (without the batch column: the path carries it)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    transaction.write_file(workspace, _rows_path(workspace, generation, outcome, batch), sink.getvalue().to_pybytes())


def read_kept_rows(workspace: Path, *, generation: str, outcome: str, batches: Iterable[int]) -> pa.Table | None:
    """An outcome's kept rows of ``batches``, with their ``extract_batch`` column; None when there are no batches."""
    batches = sorted(batches)
    if not batches:
        return None
    paths = [str(transaction.visible_path(workspace, _rows_path(workspace, generation, outcome, b))) for b in batches]
    schema = pq.read_schema(paths[0]).append(pa.field(EXTRACT_BATCH, pa.int64()))
    dataset = ds.FileSystemDataset.from_paths(
        paths, schema=schema, format=ds.ParquetFileFormat(), filesystem=pafs.LocalFileSystem(),
        partitions=[ds.field(EXTRACT_BATCH) == pa.scalar(b, pa.int64()) for b in batches])
    return dataset.to_table()


def write_kept_submission(workspace: Path, *, generation: str, name: str, content: bytes) -> None:
    """Keep a batch's rendered submission data file (``name``: its name in the package, e.g. data/extract_batch=3.csv)."""
    transaction.write_file(workspace, _submission_path(workspace, generation, name), content)


def kept_submission_path(workspace: Path, *, generation: str, name: str) -> Path:
    """Where a kept submission data file is to be read (the run's staged copy, or the committed one)."""
    return transaction.visible_path(workspace, _submission_path(workspace, generation, name))


def remove_unused_generations(workspace: Path, keep: set[str]) -> None:
    """Generations neither the visible state nor this run uses are never read again; runs that published their files
    keep them through hard links."""
    root = Path(workspace) / SCORED_DIR
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
