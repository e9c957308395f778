"""A run's published files (``runs/<run_id>/``: metrics.json, qi_units.csv, report.html, submission/), the published
pointer ``published.json``, and the model frames a run hands to its fits (``scratch/<run_id>/``).

Every file is written whole or not at all (:mod:`workspace.durable`). A run's folder is its own until
``published.json`` names it: the pointer is switched last, after the run's files are written and checked, and a reader
that follows it never sees a half-written run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from workspace import transaction
from workspace.durable import replace_folder, write_durably
from workspace.manifest import RUNS_DIR

PUBLISHED_FILE = "published.json"
SCRATCH_DIR = "scratch"
PREFECT_DIR = ".prefect"


def run_dir(workspace: Path, run_id: str) -> Path:
    return Path(workspace) / RUNS_DIR / run_id


def write_run_file(workspace: Path, run_id: str, name: str, data: bytes) -> Path:
    """Write one file of a run's folder (durably, whole or not at all) and return its path."""
    path = run_dir(workspace, run_id) / name
    write_durably(path, data)
    return path


INTERNAL_DIR = "internal"
REPORTS_DIR = "reports"


def audience_dir(workspace: Path, audience: str, run_id: str) -> Path:
    """Where an on-demand report of the published run goes: ``internal/<run_id>/`` (never published, never part
    of a submission) or ``reports/<run_id>/`` for a published report with other limits."""
    return Path(workspace) / (INTERNAL_DIR if audience == "internal" else REPORTS_DIR) / run_id


def write_audience_file(workspace: Path, audience: str, run_id: str, name: str, data: bytes) -> Path:
    """Write one file of an on-demand report (durably, whole or not at all) and return its path."""
    path = audience_dir(workspace, audience, run_id) / name
    write_durably(path, data)
    return path


def write_run_folder(workspace: Path, run_id: str, name: str, files: Mapping[str, bytes], *,
                     linked: Mapping[str, Path] = {}) -> Path:  # noqa: B006 - read only
    """Put a folder of a run in place whole (the submission package): ``files`` written, ``linked`` hard-linked from
    the kept files of the workspace (no copy), then renamed over the old folder (:func:`workspace.durable.replace_folder`)."""
    target = run_dir(workspace, run_id) / name
    replace_folder(target, files, linked=linked)
    return target


def remove_run_folder(workspace: Path, run_id: str, name: str) -> None:
    shutil.rmtree(run_dir(workspace, run_id) / name, ignore_errors=True)


def read_published(workspace: Path) -> dict[str, Any] | None:
    """The published pointer, or None before the first published run."""
    path = Path(workspace) / PUBLISHED_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_published(workspace: Path, payload: Mapping[str, Any]) -> Path:
    """Switch the published pointer atomically (a reader sees the previous run or this one). Inside a run it is staged
    and switched by the run's commit, last of the run's files (:mod:`workspace.transaction`): a run whose commit fails
    never becomes the published one."""
    path = Path(workspace) / PUBLISHED_FILE
    transaction.write_file(workspace, path, (json.dumps(dict(payload), indent=2) + "\n").encode("utf-8"))
    return path


@contextlib.contextmanager
def scratch_frames(workspace: Path, run_id: str, frames: Mapping[str, pd.DataFrame]) -> Iterator[Path]:
    """The model frames as Parquet files in ``scratch/<run_id>/`` for the length of the ``with`` block (what fits in
    other processes read), removed afterwards."""
    folder = Path(workspace) / SCRATCH_DIR / run_id
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name, frame in frames.items():
            frame.to_parquet(folder / f"{name}.parquet", index=False)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # only when no other run's frames are there


def prefect_home(workspace: Path) -> Path:
    """Prefect's home for runs on this workspace (its embedded API's database, serve's server log): created, and
    Prefect's own; nothing of cementrisk's is written there."""
    home = Path(workspace).resolve() / PREFECT_DIR
    home.mkdir(parents=True, exist_ok=True)
    return home
