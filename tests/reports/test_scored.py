"""The scored store: a new batch is scored once, and the incremental report equals one built from scratch."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from models.training import TrainingConfig
from pipelines.job import run_job
from workspace.ledger import load_ledger
from records.schema import EXTRACT_BATCH, PROCEDURE_ID
from synth.generator import SyntheticRegistry, generate_registry, write_registry
from reports import scored
from reports.publish import SUBMISSION_DIR, publish_reports
from reports.scored import load_scored_state, read_outcome_frames, update_scored
from reports.submission import PACKAGE_FILES

# scoring, not the models: no prediction-interval replicates, no internal-external validation
FAST = TrainingConfig(seed=7, n_folds=3, repeats=1, n_boot=30, n_replicates=0, internal_external=False)


def only_batches(registry: SyntheticRegistry, last: int) -> SyntheticRegistry:
    procedures = registry.procedures[registry.procedures[EXTRACT_BATCH] <= last]
    keep = registry.levels[PROCEDURE_ID].isin(procedures[PROCEDURE_ID])
    return SyntheticRegistry(procedures=procedures.reset_index(drop=True),
                             levels=registry.levels[keep].reset_index(drop=True),
                             truth_levels=registry.truth_levels, truth_procedures=registry.truth_procedures)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Night 1 registers batches 1-6 and trains; night 2 adds batch 7 without retraining."""
    root = tmp_path_factory.mktemp("nights")
    registry = generate_registry(3_000, seed=11)
    last = int(registry.procedures[EXTRACT_BATCH].max())
    write_registry(only_batches(registry, last - 1), root / "night1")
    write_registry(registry, root / "night2")
    workspace = root / "ws"
    first = run_job(root / "night1", workspace, run_id="night-1", config=FAST)
    second = run_job(root / "night2", workspace, run_id="night-2", train=False)
    return workspace, first.manifest, second.manifest, last


@pytest.fixture(scope="module")
def sources(nights, tmp_path_factory):
    return nights[0].parent


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
