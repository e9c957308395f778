"""Durable, atomic file writes: a reader sees the old file or the new one, never a part, and a write that returned
is on disk (fsync of the file and of its folder). Used for every file of the workspace that another step or run
reads: registry partitions, manifests, the scored store, published reports, and (through :mod:`workspace.transaction`,
which stages them) the state files."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
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


def replace_folder(out_dir: Path, files: Mapping[str, bytes], *, linked: Mapping[str, Path]) -> None:
    """Write ``files`` and link ``linked`` into a sibling temporary folder, rename it to ``out_dir`` (a folder of a run
    that appears whole: the submission package).

    Never a mix of old and new files. A linked file is a hard link (no copy, no extra disk) where the file system
    allows one, a copy otherwise.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".new", dir=out_dir.parent))
    retired = staging.with_suffix(".old")
    try:
        os.chmod(staging, 0o755)
        for name, content in files.items():
            with open(staging / name, "xb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        for name, source in linked.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
        fsync_dir(staging)
        if out_dir.exists():
            os.replace(out_dir, retired)
        os.replace(staging, out_dir)
        fsync_dir(out_dir.parent)
    finally:
        if retired.exists() and not out_dir.exists():
            os.replace(retired, out_dir)  # the new package could not be put in place: keep the old one
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
