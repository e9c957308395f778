"""The run as a whole: one run per workspace (a lock a killed run does not leave behind), and publishing
that switches to a run only when all of it is written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.job import PLAIN, run_job
from workspace.transaction import LOCK_FILE, WorkspaceBusy, workspace_lock
from workspace.manifest import STATUS_FAILED
from records.schema import EXTRACT_BATCH, PROCEDURE_ID
from synth.generator import generate_registry, write_registry
from reports.publish import PUBLISHED_FILE, published_run

REPO = Path(__file__).resolve().parents[2]
HOLDER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from workspace.transaction import workspace_lock
with workspace_lock(Path({workspace!r}), run_id="holder-run"):
    print("locked", flush=True)
    time.sleep(float(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src")
    write_registry(generate_registry(300, seed=3), folder)
    return folder


def _hold(workspace: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER.format(repo=str(REPO), workspace=str(workspace)),
                               str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _write_earlier_batches(folder: Path) -> int:
    """The `source` registry without its last batch, written to ``folder``; returns that last batch's number."""
    registry = generate_registry(300, seed=3)
    last = int(registry.procedures[EXTRACT_BATCH].max())
    earlier = registry.procedures[registry.procedures[EXTRACT_BATCH] < last]
    write_registry(replace(registry, procedures=earlier,
                           levels=registry.levels[registry.levels[PROCEDURE_ID].isin(earlier[PROCEDURE_ID])]),
                   folder)
    return last


def test_a_second_run_is_refused_while_the_first_holds_the_workspace_and_a_killed_holder_frees_it(
        source, tmp_path):
    workspace = tmp_path / "ws"
    holder = _hold(workspace, 60)
    try:
        with pytest.raises(WorkspaceBusy, match="holder-run"):
            run_job(source, workspace, run_id="second", train=False)
        assert not (workspace / "registry").exists() and not (workspace / "runs").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    outcome = run_job(source, workspace, run_id="after-kill", train=False)
    assert outcome.manifest.status == "ok" and published_run(workspace) == "after-kill"


def test_a_run_waits_for_the_one_in_progress(source, tmp_path):
    workspace = tmp_path / "ws"
    holder = _hold(workspace, 1.0)
    start = time.monotonic()
    outcome = run_job(source, workspace, run_id="patient", train=False, lock_wait_seconds=30)
    holder.wait()
    assert outcome.manifest.status == "ok" and time.monotonic() - start >= 0.5


def test_the_lock_is_reentrant_across_sequential_runs_and_rejects_bad_waits(tmp_path):
    for run_id in ("a", "b"):
        with workspace_lock(tmp_path, run_id=run_id):
            assert json.loads((tmp_path / LOCK_FILE).read_text())["run_id"] == run_id
    with pytest.raises(ValueError, match="wait_seconds"):
        with workspace_lock(tmp_path, run_id="c", wait_seconds=-1):
            pass


def test_a_run_that_fails_while_reporting_leaves_the_previous_run_and_the_registry_as_they_were(source, tmp_path):
    last = _write_earlier_batches(tmp_path / "earlier")
    workspace = tmp_path / "ws"
    run_job(tmp_path / "earlier", workspace, run_id="good", train=False)
    assert published_run(workspace) == "good"
    before = {name: (workspace / name).read_bytes() for name in (PUBLISHED_FILE, "registry/ledger.json")}

    def broken_reports(*args, **kwargs):
        raise OSError("disk full while writing report.html")

    with pytest.raises(OSError, match="disk full"):
        run_job(source, workspace, run_id="broken", train=False, steps=replace(PLAIN, reports=broken_reports))
    assert {name: (workspace / name).read_bytes() for name in before} == before  # nothing of it was kept
    manifest = json.loads((workspace / "runs" / "broken" / "manifest.json").read_text())
    assert manifest["status"] == STATUS_FAILED and manifest["reason"].startswith("report: OSError")

    outcome = run_job(source, workspace, run_id="next", train=False)
    assert published_run(workspace) == "next" and outcome.manifest.batches_loaded == [last]


def test_the_cli_says_the_workspace_is_busy_with_exit_2(source, tmp_path):
    workspace = tmp_path / "ws"
    holder = _hold(workspace, 60)
    try:
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--source", str(source),
                                 "--workspace", str(workspace), "--engine", "local", "--wait", "0"],
                                capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert result.returncode == 2 and "busy" in result.stderr and "holder-run" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_run_with_retention_prunes_older_runs_at_its_end_and_keeps_the_published_one(tmp_path):
    """run_job(retention=...) prunes inside its lock after the report: the run published while it runs stays whole
    (it is still published until this run commits); with keep_runs=1 an older run keeps only its manifest and
    pruned.json; a night with nothing new prunes too; the manifest says what went."""
    from workspace.retention import PRUNED_FILE, RetentionPolicy

    _write_earlier_batches(tmp_path / "earlier")
    write_registry(generate_registry(300, seed=3), tmp_path / "all")
    workspace = tmp_path / "ws"
    run_job(tmp_path / "earlier", workspace, run_id="20260101T000000Z-aaaaaa", train=False)
    outcome = run_job(tmp_path / "all", workspace, run_id="20260102T000000Z-bbbbbb", train=False,
                      retention=RetentionPolicy(keep_runs=1))
    assert published_run(workspace) == "20260102T000000Z-bbbbbb"
    assert (workspace / "runs" / "20260101T000000Z-aaaaaa" / "report.html").is_file()  # published during the run
    nothing_new = run_job(tmp_path / "all", workspace, run_id="20260103T000000Z-cccccc", train=False,
                          retention=RetentionPolicy(keep_runs=1))
    assert "retention" in nothing_new.manifest.outputs
    old = workspace / "runs" / "20260101T000000Z-aaaaaa"
    assert sorted(p.name for p in old.iterdir()) == sorted(["manifest.json", PRUNED_FILE])
    new = workspace / "runs" / "20260102T000000Z-bbbbbb"
    assert (new / "report.html").is_file() and (new / "metrics.json").is_file()
    assert "retention" in outcome.manifest.outputs and "retention" in outcome.manifest.timings_seconds
    assert "error" not in outcome.manifest.outputs["retention"]


def test_a_retraining_that_promotes_a_champion_publishes_even_without_a_new_batch(source, tmp_path):
    """`run --retrain` on an unchanged registry: no batch is new, but when the gate promotes a new champion the standing
    report shows models that no longer score, so the run publishes its own; when no champion changes, the last
    report still stands."""
    from models.refresh import ModelsSummary

    workspace = tmp_path / "ws"
    first = run_job(source, workspace, run_id="first", train=False)
    assert published_run(workspace) == "first"
    kept = ModelsSummary(trained=True, reason="retrain requested",
                         outcomes={"leakage_any": {"fitted": True, "version": "v0002", "champion": False}})
    promoted = replace(kept, outcomes={"leakage_any": {"fitted": True, "version": "v0002", "champion": True}})
    calm = run_job(source, workspace, run_id="calm", steps=replace(PLAIN, models=lambda *a, **k: kept), retrain=True)
    assert calm.manifest.batches_loaded == [] and calm.manifest.outputs["published"] == "first"
    assert published_run(workspace) == "first"
    moved = run_job(source, workspace, run_id="moved", steps=replace(PLAIN, models=lambda *a, **k: promoted),
                    retrain=True)
    assert moved.manifest.batches_loaded == [] and moved.manifest.status == "ok"
    assert published_run(workspace) == "moved" and (workspace / "runs" / "moved" / "report.html").is_file()
    assert first.manifest.status == "ok"


def test_a_run_that_trains_writes_metrics_json_once_with_the_training_configuration(source, tmp_path, monkeypatch):
    from dataclasses import asdict

    from models.training import TrainingConfig
    from workspace import runs

    written, write = [], runs.write_run_file

    def counted(workspace, run_id, name, data):
        written.append(name)
        return write(workspace, run_id, name, data)

    monkeypatch.setattr(runs, "write_run_file", counted)
    config = TrainingConfig(seed=3, n_folds=3, repeats=1, n_boot=10, n_replicates=0, internal_external=False)
    outcome = run_job(source, tmp_path / "ws", run_id="trains", config=config)
    assert outcome.manifest.models["trained"] and "metrics_path" not in outcome.manifest.models
    assert written.count("metrics.json") == 1
    metrics = json.loads(Path(outcome.manifest.outputs["metrics"]).read_text())
    assert {name: figures["config"] for name, figures in metrics["outcomes"].items()} == dict.fromkeys(
        metrics["outcomes"], asdict(config))
