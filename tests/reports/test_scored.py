"""The scored store: a new batch is scored once, and the incremental report equals one built from scratch."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from pipelines.job import run_job
from workspace.ledger import load_ledger
from records.schema import PROCEDURE_ID
from tests.conftest import copy_workspace
from reports import scored
from reports.publish import SUBMISSION_DIR, publish_reports
from reports.scored import load_scored_state, read_outcome_frames, update_scored
from reports.submission import PACKAGE_FILES


@pytest.fixture(scope="module")
def nights(shared_nights, tmp_path_factory):
    """A copy of the shared workspace after its two nights: night 1 registered batches 1 to last - 1 and trained;
    night 2 added batch ``last`` without retraining."""
    workspace = copy_workspace(shared_nights.after_night_2, tmp_path_factory.mktemp("nights"))
    return workspace, shared_nights.first, shared_nights.second, shared_nights.new_batch


@pytest.fixture(scope="module")
def sources(shared_nights):
    """The folder of the two nights' sources, ``night1`` and ``night2`` (read only)."""
    return shared_nights.night2.parent


def test_a_new_batch_is_the_only_one_scored(nights):
    workspace, first, second, last = nights
    assert first.outputs["scored"]["scored_batches"] == list(range(1, last))
    assert second.batches_loaded == [last]
    assert second.outputs["scored"]["scored_batches"] == [last]
    assert second.outputs["scored"]["rescored_all"] is False
    assert sorted(load_scored_state(workspace).batches) == list(range(1, last + 1))


def test_the_same_night_twice_publishes_nothing_new(nights, sources):
    workspace, *_ = nights
    published = (workspace / "published.json").read_bytes()
    package = {p: p.read_bytes() for p in (workspace / "runs" / "night-2" / SUBMISSION_DIR).rglob("*") if p.is_file()}
    again = run_job(sources / "night2", workspace, run_id="night-2-again", train=False)
    assert again.manifest.status == "ok" and again.manifest.batches_loaded == []
    assert again.manifest.outputs["published"] == "night-2"
    assert "nothing new" in again.manifest.outputs["notes"][0]
    assert (workspace / "published.json").read_bytes() == published
    assert not (workspace / "runs" / "night-2-again" / "report.html").exists()
    assert {p: p.read_bytes() for p in package} == package


def test_the_incremental_report_equals_one_built_from_scratch(nights, tmp_path):
    workspace, _, second, last = nights
    run_dir = workspace / "runs" / "night-2"
    shutil.rmtree(workspace / scored.SCORED_DIR)
    again = publish_reports(workspace, run_id="scratch", manifest=asdict(second))
    assert again.scored["scored_batches"] == list(range(1, last + 1))
    scratch = Path(again.report).parent
    for name in ("metrics.json", "qi_units.csv"):
        assert (scratch / name).read_bytes() == (run_dir / name).read_bytes(), name
    files = sorted(p.relative_to(run_dir) for p in (run_dir / SUBMISSION_DIR).rglob("*") if p.is_file())
    assert len(files) == len(PACKAGE_FILES) + 1 + last  # the package's own files, its manifest, a file per batch
    for name in files:
        assert (scratch / name).read_bytes() == (run_dir / name).read_bytes(), name
    shutil.rmtree(scratch)


def test_the_kept_rows_are_the_registry_rows_once_each(nights):
    workspace, *_ = nights
    state = load_ledger(workspace)
    frames = read_outcome_frames(workspace, state)
    levels = sum(int(info["levels"]) for info in state.batches.values())
    assert len(frames["leakage_any"]) <= levels
    assert not frames["leakage_any"].duplicated([PROCEDURE_ID, "vertebra"]).any()
    assert frames["leakage_any"]["p"].between(0, 1).all() and frames["leakage_any"]["y"].isin([0, 1]).all()


def test_a_champion_change_rescores_everything_and_a_failure_midway_keeps_the_old_state(nights, monkeypatch):
    workspace, *_ = nights
    state = load_ledger(workspace)
    before = (workspace / scored.SCORED_DIR / scored.STATE_FILE).read_bytes()
    old = load_scored_state(workspace)
    monkeypatch.setattr(scored, "FORMAT", scored.FORMAT + 1)  # as a new champion would: a new generation
    monkeypatch.setattr(scored, "CHUNK_PROCEDURES", 100)

    def stop(chunk):
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        update_scored(workspace, state, on_chunk=stop)
    assert (workspace / scored.SCORED_DIR / scored.STATE_FILE).read_bytes() == before
    assert (workspace / scored.SCORED_DIR / old.generation).is_dir()  # still readable
    update = update_scored(workspace, state)
    assert update.rescored_all and update.scored_batches == sorted(state.batches)
    assert update_scored(workspace, state).scored_batches == []
    assert not (workspace / scored.SCORED_DIR / old.generation).exists()  # removed once nothing reads it
    assert json.loads((workspace / scored.SCORED_DIR / scored.STATE_FILE).read_text())["format"] == scored.FORMAT
