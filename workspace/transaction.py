"""One run at a time per workspace, and a run that takes effect whole or not at all.

The lock is an exclusive ``flock`` on ``<workspace>/.lock``. The kernel releases it when its process ends,
however it ends (SIGKILL included), so a killed run never leaves the workspace locked. The file also holds
who holds the lock (pid, run id, start time) so that a refused run can say so.

While a process holds the lock for run R, the files that make the workspace's state (the registry's
``state.json``, the quarantine files, the champion pointers; :func:`write_file`) are not replaced in place
but staged in ``<workspace>/.staging/R/`` under their workspace paths. Run R sees them at once
(:func:`read_bytes`, :func:`visible_path`); every other reader keeps seeing the state before R. When R's
``with workspace_lock(...)`` block ends normally, R commits: a ``.commit`` mark is written into its staging
folder (the commit point), then each staged file is renamed into place. When the block ends with an
exception, the staging folder is discarded: a failed run changes nothing. When R is killed, its staging
folder stays behind, invisible; the next run to take the lock discards it (or finishes applying it, when it
carries the ``.commit`` mark, or when ``published.json`` names R: R was killed after it published) and marks
R's manifest ``failed``.

Without the lock (a test or a benchmark calling the steps directly), :func:`write_file` replaces the file at
once, atomically (write a temporary file, fsync, rename).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from workspace.durable import fsync_dir, write_durable, write_durably

LOCK_FILE = ".lock"
STAGING_DIR = ".staging"
COMMIT_MARK = ".commit"
PUBLISHED_FILE = "published.json"  # reports.publish.PUBLISHED_FILE: the pointer to the last finished run
POLL_SECONDS = 0.2

_held: dict[str, str] = {}  # resolved workspace -> run id, for the locks this process holds
_held_guard = threading.Lock()


class CommitIncomplete(OSError):
    """A run committed (its commit mark is durable) but some of its staged files were not put in place: an I/O error,
    or an interrupt (Ctrl-C, a termination signal) in the middle of the renames. The run stands: readers through
    this package already see its files, and the next run on the workspace puts them in place (:func:`recover`).
    ``run_id`` names the run; the cause is chained."""

    def __init__(self, run_id: str, cause: BaseException) -> None:
        super().__init__(f"run {run_id} is committed, but putting its files in place failed ({cause}); the next run "
                         "on this workspace completes it")
        self.run_id = run_id


class WorkspaceBusy(Exception):
    """Another run holds the workspace and did not let go within the wait."""


@contextmanager
def workspace_lock(workspace: Path, *, run_id: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the workspace's lock for the duration of the ``with`` block; commit the run's staged files when
    the block ends normally, discard them when it raises.

    Parameters
    ----------
    workspace
        The workspace folder (created if missing).
    run_id
        Written into the lock file for the message another run gets; names the staging folder.
    wait_seconds
        How long to wait for a run in progress to finish before refusing (0: refuse at once).

    Raises
    ------
    WorkspaceBusy
        The lock is still held after ``wait_seconds``; the message names the holder.
    """
    if wait_seconds < 0:
        raise ValueError(f"wait_seconds must be >= 0; got {wait_seconds}")
    workspace = Path(workspace)
    path = workspace / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceBusy(_busy_message(path, wait_seconds)) from None
                time.sleep(POLL_SECONDS)
        ended_well = False
        try:
            previous = _holder(handle)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "run_id": run_id,
                                     "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}))
            handle.flush()
            recover(workspace, by_run=run_id, previous=previous)
            (_staging_root(workspace) / run_id).mkdir(parents=True, exist_ok=True)
            key = _key(workspace)
            with _held_guard:
                _held[key] = run_id
            try:
                yield
            except BaseException:
                _release(key)
                _discard(workspace, run_id)
                raise
            _release(key)
            try:
                _commit(workspace, run_id)
            except BaseException:  # past a durable commit mark (CommitIncomplete) the next run puts the rest in place
                if not (_staging_root(workspace) / run_id / COMMIT_MARK).is_file():
                    _discard(workspace, run_id)  # the commit mark was never written: the run is rolled back now
                raise
            ended_well = True
        finally:
            if ended_well:  # a run that raised stays named, so the next run can make its manifest say failed
                handle.seek(0)
                handle.truncate()
                handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def held_run(workspace: Path) -> str | None:
    """The run id for which this process holds the workspace's lock, or None."""
    with _held_guard:
        return _held.get(_key(workspace))


def write_file(workspace: Path, target: Path, data: bytes) -> Path:
    """Write ``target`` (a file inside ``workspace``) whole: staged for the run that holds the workspace's lock,
    else replaced at once (temporary file, fsync, rename). Transient write errors are retried.

    The run is the one this process holds the lock for or, in a process that does not hold it (a worker the run
    handed a piece of its work, e.g. an outcome's fit on a Dask cluster), the run that holds it elsewhere: one run
    at a time writes to a workspace, so whatever is written while it is locked belongs to that run.

    Returns
    -------
    Path
        Where the bytes were written (the staged copy or ``target``).
    """
    dest = _destination(workspace, target)
    write_durably(dest, data)
    return dest


def _destination(workspace: Path, target: Path) -> Path:
    """Where a write of ``target`` goes: the staging folder of the run that holds the workspace (this process's, or
    another process's, see :func:`write_file`), else ``target`` itself."""
    rel = _relative(workspace, target)
    run_id = held_run(workspace) or _locking_run(workspace)
    return Path(target) if run_id is None else _staging_root(workspace) / run_id / rel


def link_file(workspace: Path, source: Path, target: Path) -> Path:
    """Make ``target`` (a file inside ``workspace``) hold what ``source`` holds now, without copying it: a hard link,
    staged like :func:`write_file` (or put in place at once without the lock). The link keeps the content even when
    ``source`` is later replaced by a rename (a corrected registry partition replacing the one kept in history).
    Copies where the file system has no hard links.

    Returns
    -------
    Path
        Where the link was made (the staged copy or ``target``).
    """
    dest = _destination(workspace, target)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(dest.parent)
    return dest


def visible_path(workspace: Path, target: Path) -> Path:
    """Where ``target`` is to be read: this process's run's staged copy, a committed run's copy not yet renamed
    into place, or ``target`` itself."""
    root = _staging_root(workspace)
    if not root.is_dir():
        return Path(target)
    rel = _relative(workspace, target)
    run_id = held_run(workspace)
    if run_id is not None:
        staged = root / run_id / rel
        return staged if staged.is_file() else Path(target)
    for folder in _committed_folders(workspace):
        staged = folder / rel
        if staged.is_file():
            return staged
    return Path(target)


def read_bytes(workspace: Path, target: Path) -> bytes | None:
    """The visible content of ``target`` (see :func:`visible_path`), or None when there is none."""
    for _ in range(5):
        path = visible_path(workspace, target)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            if path == Path(target):
                return None
            continue  # renamed into place meanwhile by the committing run: look again
    return None


def committed_but_unapplied(workspace: Path, run_id: str) -> bool:
    """True when run ``run_id`` passed its commit point but not all its staged files are in place yet (the next run
    to take the lock finishes applying them): its staging folder carries the commit mark, or ``published.json``
    already names it."""
    return any(folder.name == run_id for folder in _committed_folders(workspace))


def recover(workspace: Path, *, by_run: str, previous: str | None = None) -> list[str]:
    """Deal with what runs that ended without committing left in ``.staging`` (call with the lock held).

    A folder with a commit mark, or of the run ``published.json`` names, is applied (its run had finished);
    any other is discarded and its run's manifest, if it says ``ok`` or ``running``, is marked ``failed``. So is the
    manifest of ``previous`` (the run that held the lock last and did not end well: killed, or failed without being
    able to say so, e.g. on a full disk), when it still says ``running``.

    Returns
    -------
    list[str]
        The run ids whose staged files were discarded.
    """
    if previous and previous != by_run:
        _mark_abandoned(workspace, previous, by_run=by_run, only_running=True)
    root = _staging_root(workspace)
    if not root.is_dir():
        return []
    discarded = []
    committed = {f.name for f in _committed_folders(workspace)}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name in committed:
            _apply(workspace, folder)
        else:
            _mark_abandoned(workspace, folder.name, by_run=by_run)
            discarded.append(folder.name)
        shutil.rmtree(folder, ignore_errors=True)
    _remove_if_empty(root)
    _sweep_temporaries(workspace)
    return discarded


def _sweep_temporaries(workspace: Path) -> None:
    """Remove the temporaries (``.<name>.<pid>.<hex>.tmp``, :func:`workspace.durable.write_durable`) that writers of a
    run that ended without committing left behind; no other run writes while the lock is held. Prefect's home is
    not ours."""
    for tmp in Path(workspace).rglob(".*.tmp"):
        if tmp.is_file() and ".prefect" not in tmp.relative_to(workspace).parts[:1]:
            tmp.unlink(missing_ok=True)


# --- private steps -------------------------------------------------------------------------------------

def _locking_run(workspace: Path) -> str | None:
    """The run id of the lock another process holds on the workspace (None when it is free)."""
    path = Path(workspace) / LOCK_FILE
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                return None
            run_id = holder.get("run_id") if isinstance(holder, dict) else None
            if isinstance(run_id, str) and (_staging_root(workspace) / run_id).is_dir():
                return run_id
            return None
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return None


def _key(workspace: Path) -> str:
    return str(Path(workspace).resolve())


def _release(key: str) -> None:
    with _held_guard:
        _held.pop(key, None)


def _staging_root(workspace: Path) -> Path:
    return Path(workspace) / STAGING_DIR


def _relative(workspace: Path, target: Path) -> Path:
    try:
        rel = Path(target).relative_to(Path(workspace))
    except ValueError:
        try:
            rel = Path(target).resolve().relative_to(Path(workspace).resolve())
        except ValueError:
            rel = Path("..")
    if not rel.parts or rel.parts[0] in (STAGING_DIR, LOCK_FILE) or ".." in rel.parts:
        raise ValueError(f"{target} is not a file of the workspace {workspace}")
    return rel


def _staged_files(folder: Path) -> list[Path]:
    """A staging folder's files in the order they are put in place: the published pointer last, so that a reader who
    follows it finds the run's state already there."""
    files = [p.relative_to(folder) for p in folder.rglob("*")
             if p.is_file() and p.name != COMMIT_MARK and not p.name.endswith(".tmp")]
    return sorted(files, key=lambda rel: (rel == Path(PUBLISHED_FILE), rel))


def _commit(workspace: Path, run_id: str) -> None:
    folder = _staging_root(workspace) / run_id
    if folder.is_dir():
        files = _staged_files(folder)
        if files:
            mark = {"run_id": run_id, "files": [str(f) for f in files],
                    "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            write_durably(folder / COMMIT_MARK, (json.dumps(mark, indent=2) + "\n").encode())
            try:
                _apply(workspace, folder)
            except BaseException as error:  # past the commit point (an I/O error, Ctrl-C, a termination signal):
                raise CommitIncomplete(run_id, error) from error  # never discarded; recover() finishes it
        shutil.rmtree(folder, ignore_errors=True)
    _remove_if_empty(_staging_root(workspace))


def _discard(workspace: Path, run_id: str) -> None:
    shutil.rmtree(_staging_root(workspace) / run_id, ignore_errors=True)
    _remove_if_empty(_staging_root(workspace))


def _apply(workspace: Path, folder: Path) -> None:
    """Rename every staged file of a committed run into place (idempotent: a file already moved is skipped)."""
    mark = folder / COMMIT_MARK
    try:
        listed = [Path(f) for f in json.loads(mark.read_text(encoding="utf-8"))["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        listed = _staged_files(folder)
    failed: OSError | None = None
    for rel in listed:  # every file that can be moved is, so one that cannot holds back no other
        source, target = folder / rel, Path(workspace) / rel
        if not source.is_file():
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            fsync_dir(target.parent)
        except OSError as error:
            failed = failed or error
    if failed is not None:
        raise failed


def _committed_folders(workspace: Path) -> list[Path]:
    root = _staging_root(workspace)
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    published = _published_run(workspace)
    return [f for f in folders if (f / COMMIT_MARK).is_file() or f.name == published]


def _published_run(workspace: Path) -> str | None:
    try:
        return json.loads((Path(workspace) / PUBLISHED_FILE).read_text(encoding="utf-8")).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def _holder(handle: object) -> str | None:
    """The run id the lock file names (the last holder, when it did not end well), or None."""
    try:
        handle.seek(0)  # type: ignore[attr-defined]
        holder = json.loads(handle.read() or "{}")  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return None
    run_id = holder.get("run_id") if isinstance(holder, dict) else None
    return run_id if isinstance(run_id, str) else None


def _mark_abandoned(workspace: Path, run_id: str, *, by_run: str, only_running: bool = False) -> None:
    """A run that ended without committing: its manifest (``running``, or ``ok`` from before manifests were
    committed with their run) says failed."""
    from workspace.manifest import MANIFEST_FILE, RUNS_DIR, STATUS_FAILED, STATUS_OK, STATUS_RUNNING  # noqa: PLC0415

    path = Path(workspace) / RUNS_DIR / run_id / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    wanted = (STATUS_RUNNING,) if only_running else (STATUS_RUNNING, STATUS_OK)
    if not isinstance(manifest, dict) or manifest.get("status") not in wanted:
        return
    manifest["status"] = STATUS_FAILED
    manifest["reason"] = (f"the run stopped before it finished (killed or crashed): nothing it registered, "
                          f"quarantined or promoted was kept; found by run {by_run}")
    write_durable(path, (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode())


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _busy_message(path: Path, waited: float) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    who = (f"run {holder.get('run_id', '?')} (process {holder.get('pid', '?')}, since {holder.get('since', '?')})"
           if holder else "another run")
    return (f"the workspace {path.parent} is busy: {who} holds it; waited {waited:g} s. Try again when it has "
            "finished (a run that was killed releases the workspace at once).")
