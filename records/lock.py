"""One run at a time per workspace: an exclusive ``flock`` on ``<workspace>/.lock``.

The kernel releases the lock when its process ends, however it ends (SIGKILL included), so a killed run
never leaves the workspace locked. The file also holds who holds the lock (pid, run id, start time) so
that a refused run can say so.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"
POLL_SECONDS = 0.2


class WorkspaceBusy(Exception):
    """Another run holds the workspace and did not let go within the wait."""


@contextmanager
def workspace_lock(workspace: Path, *, run_id: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """Hold the workspace's lock for the duration of the ``with`` block.

    Parameters
    ----------
    workspace
        The workspace folder (created if missing).
    run_id
        Written into the lock file for the message another run gets.
    wait_seconds
        How long to wait for a run in progress to finish before refusing (0: refuse at once).

    Raises
    ------
    WorkspaceBusy
        The lock is still held after ``wait_seconds``; the message names the holder.
    """
    if wait_seconds < 0:
        raise ValueError(f"wait_seconds must be >= 0; got {wait_seconds}")
    path = Path(workspace) / LOCK_FILE
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
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "run_id": run_id,
                                 "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def _busy_message(path: Path, waited: float) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    who = (f"run {holder.get('run_id', '?')} (process {holder.get('pid', '?')}, since {holder.get('since', '?')})"
           if holder else "another run")
    return (f"the workspace {path.parent} is busy: {who} holds it; waited {waited:g} s. Try again when it has "
            "finished (a run that was killed releases the workspace at once).")
