"""Honest manifests: a run that fails anywhere (a full disk while registering, while publishing, while committing)
ends with manifest status ``failed`` and its reason, never ``ok``; the registry and the published run stay as they
were; and the next run completes."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import workspace.durable as durable
from pipelines.job import run_job
from tests.conftest import AS_OF_YEAR, make_batch
from workspace import transaction
from workspace.ledger import load_ledger
from workspace.runs import read_published


def _source(folder: Path, *batches) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("procedures", "levels"):
        frame = pd.concat([b.tables()[name] for b in batches], ignore_index=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet")
    return folder


def _manifest(workspace: Path, run_id: str) -> dict:
    return json.loads((workspace / "runs" / run_id / "manifest.json").read_text())


def _state(workspace: Path) -> dict:
    return {"published": (workspace / "published.json").read_bytes(),
            "ledger": (workspace / "registry" / "ledger.json").read_bytes(),
            "rows": ds.dataset(workspace / "registry" / "procedures", format="parquet").count_rows()}


@pytest.fixture
def night(tmp_path):
    workspace = tmp_path / "ws"
    first = make_batch(12, batch=1)
    run_job(_source(tmp_path / "n1", first), workspace, run_id="night-1", train=False, as_of_year=AS_OF_YEAR)
    second = _source(tmp_path / "n2", first, make_batch(12, batch=2, start=100))
    return workspace, second


def _full_disk_at(monkeypatch, where):
    real = durable.write_durable

    def full(path, data):
        if where(Path(path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(durable, "write_durable", full)


@pytest.mark.parametrize(("label", "where"), [
    ("registering", lambda p: p.name == "part-0.parquet" and "registry" in p.parts),
    ("writing the report", lambda p: p.name == "report.html"),
    ("switching published.json", lambda p: p.name == "published.json"),
    ("committing", lambda p: p.name == transaction.COMMIT_MARK),
])
def test_a_full_disk_anywhere_ends_with_a_failed_manifest_and_nothing_changed(night, monkeypatch, label, where):
    workspace, source = night
    before = _state(workspace)
    _full_disk_at(monkeypatch, where)
    with pytest.raises(OSError, match="No space left"):
        run_job(source, workspace, run_id="full", train=False, as_of_year=AS_OF_YEAR)
    monkeypatch.undo()
    manifest = _manifest(workspace, "full")
    assert manifest["status"] == "failed", label
    assert "No space left" in manifest["reason"]
    assert _state(workspace) == before and read_published(workspace)["run_id"] == "night-1"
    assert sorted(load_ledger(workspace).batches) == [1]

    again = run_job(source, workspace, run_id="next", train=False, as_of_year=AS_OF_YEAR)
    assert again.manifest.status == "ok" and again.manifest.batches_loaded == [2]
    assert _manifest(workspace, "next")["status"] == "ok" and read_published(workspace)["run_id"] == "next"
    assert _manifest(workspace, "full")["status"] == "failed"


def test_a_run_that_cannot_even_write_its_failure_is_marked_failed_by_the_next_run(night, monkeypatch):
    """The disk is full for the manifest too: the run's own record says running; the next run to take the lock closes
    it (the lock file still names the run that did not end well)."""
    workspace, source = night
    calls = {"manifest": 0}
    original = durable.write_durable

    def flaky(path, data):
        path = Path(path)
        if "full" in path.parts and path.name == "manifest.json":
            calls["manifest"] += 1
            if calls["manifest"] > 1:  # the first (running) manifest is written, nothing after it
                raise OSError(errno.ENOSPC, "No space left on device")
        if path.name == "report.html":
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(path, data)

    monkeypatch.setattr(durable, "write_durable", flaky)
    with pytest.raises(OSError, match="No space left"):
        run_job(source, workspace, run_id="full", train=False, as_of_year=AS_OF_YEAR)
    monkeypatch.undo()
    assert _manifest(workspace, "full")["status"] == "running"
    with transaction.workspace_lock(workspace, run_id="probe"):
        pass
    manifest = _manifest(workspace, "full")
    assert manifest["status"] == "failed" and "stopped before it finished" in manifest["reason"]
