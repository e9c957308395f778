"""Durable, atomic file writes: a reader sees the old file or the new one, never a part, and a write that returned
is on disk (fsync of the file and of its folder). Used for every file of the workspace that another step or run
reads: registry partitions, manifests, the scored store, published reports, and (through :mod:`workspace.transaction`,
which stages them) the state files."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from records.errors import retry_write


def write_durable(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all, and on disk when this returns: a temporary file in the
    same folder, fsynced, renamed over ``path``, then the folder fsynced. A write that fails leaves ``path`` as
    it was. Not staged (:func:`workspace.transaction.write_file` stages a workspace's state files); no retry (wrap in
    :func:`records.errors.retry_write`, or call :func:`write_durably`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own for every write (two threads or two hosts may write the same file), created exclusively;
    # the leading dot keeps a temporary left by a killed writer out of every Parquet dataset and listing
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_durably(path: Path, data: bytes) -> None:
    """:func:`write_durable`, retried on transient write errors (``records.errors.TRANSIENT_WRITE_ERRNOS``)."""
    retry_write(lambda: write_durable(path, data))


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
