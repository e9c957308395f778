"""The models' state besides the store (:mod:`workspace.model_files`): each outcome's validation figures per version
and the latest, the record of the last training, and the drift reference sample.

Layout::

    models/metrics/<outcome>/<version>.json    the validation figures of a stored version
    models/metrics/<outcome>/latest.json       those of the outcome's latest training (fitted or not)
    models/trained.json                        the ledger's registration number, the date and the events at training
    models/reference_levels.parquet            a sample of the training level rows: the drift reference

All are part of the workspace's state: staged with the run that holds the lock (:mod:`workspace.transaction`) and kept
only if it commits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from workspace import transaction
from workspace.model_files import MODELS_DIR, check_version_name, outcome_folder

METRICS_DIR = "metrics"
LATEST = "latest"
TRAINED_FILE = "trained.json"
REFERENCE_FILE = "reference_levels.parquet"


def _metrics_path(workspace: Path, outcome: str, name: str) -> Path:
    outcome_folder(workspace, outcome)  # checks the outcome's name
    return Path(workspace) / MODELS_DIR / METRICS_DIR / outcome / f"{name}.json"


def write_outcome_metrics(workspace: Path, *, outcome: str, version: str | None, text: str) -> None:
    """Keep an outcome's figures as its latest, and as those of ``version`` when a version was stored."""
    data = text.encode("utf-8")
    if version is not None:
        check_version_name(version)
        transaction.write_file(workspace, _metrics_path(workspace, outcome, version), data)
    transaction.write_file(workspace, _metrics_path(workspace, outcome, LATEST), data)


def read_outcome_metrics(workspace: Path, *, outcome: str, version: str | None) -> dict | None:
    """The figures of ``version`` (when given and kept), else of the outcome's latest training; None when neither."""
    names = ([version] if version else []) + [LATEST]
    for name in names:
        data = transaction.read_bytes(workspace, _metrics_path(workspace, outcome, name))
        if data is not None:
            return json.loads(data.decode("utf-8"))
    return None


def read_trained(workspace: Path) -> dict[str, object]:
    """The record of the last training; empty before the first."""
    data = transaction.read_bytes(workspace, Path(workspace) / MODELS_DIR / TRAINED_FILE)
    return json.loads(data.decode("utf-8")) if data is not None else {}


def write_trained(workspace: Path, record: Mapping[str, object]) -> None:
    text = json.dumps(dict(record), indent=2, allow_nan=False) + "\n"
    transaction.write_file(workspace, Path(workspace) / MODELS_DIR / TRAINED_FILE, text.encode("utf-8"))


def read_reference(workspace: Path) -> bytes | None:
    """The drift reference sample (Parquet bytes), or None when no training stored one."""
    return transaction.read_bytes(workspace, Path(workspace) / MODELS_DIR / REFERENCE_FILE)


def write_reference(workspace: Path, data: bytes) -> None:
    transaction.write_file(workspace, Path(workspace) / MODELS_DIR / REFERENCE_FILE, data)
