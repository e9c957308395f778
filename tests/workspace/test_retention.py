"""Retention: the plan keeps exactly what the policy says, the prune never touches the registry, the ledger, the
history of corrections, the quarantine, the scored store or the champions, applying it twice is applying it once,
and a prune killed in the middle leaves a workspace that the next prune completes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from pipelines.job import run_job
from tests.conftest import make_batch
from workspace import model_files, model_state, retention, runs
from workspace.manifest import MANIFEST_FILE, RunManifest, write_manifest
from workspace.retention import (PRUNED_FILE, TRASH_DIR, Inventory, Removal, RetentionError, RetentionPlan,
                                 RetentionPolicy, RunEntry, apply_plan, pin_run, plan_retention, prune_workspace)
from workspace.transaction import workspace_lock

NOW = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.timezone.utc)
OUTCOME = "demo_leak"  # a model store outcome no run scores with, so that fake model bytes never reach a run
NEVER_TOUCHED = ("registry/", "quarantine/", "scored/", "published.json", f"models/{OUTCOME}/champion.json",
                 "models/metrics/")


# --- pure plans ----------------------------------------------------------------------------------------------------

def _run(run_id: str, day: int, **kwargs: object) -> RunEntry:
    return RunEntry(run_id=run_id, started_at=f"2026-11-{day:02d}T02:00:00+00:00", status="ok",
                    contents=(MANIFEST_FILE, "metrics.json", "report.html", "submission"), **kwargs)


def _kept(plan: RetentionPlan, prefix: str) -> dict[str, tuple[str, ...]]:
    return {k.subject.removeprefix(prefix): k.reasons for k in plan.kept if k.subject.startswith(prefix)}


def _removed(plan: RetentionPlan) -> set[str]:
    return {r.path for r in plan.removals}


def test_the_plan_keeps_the_published_pinned_current_and_last_n_runs_and_thins_the_others():
    inventory = Inventory(
        runs=(_run("a", 1), _run("b", 2, pinned=True), _run("c", 3, audiences=("internal",)), _run("d", 4),
              _run("e", 5), _run("f", 6), RunEntry(run_id="odd", started_at=None, contents=("notes.txt",))),
        published=("c",), current_run="f")
    plan = plan_retention(inventory, RetentionPolicy(keep_runs=2, pinned_runs=frozenset({"a"})), now=NOW)
    kept = _kept(plan, "run ")
    assert set(kept) == {"a", "b", "c", "e", "f", "odd"}
    assert kept["a"] == ("pinned",) and kept["b"] == ("pinned",) and kept["c"] == ("published",)
    assert kept["f"] == ("the run in progress", "one of the last 2 runs") and kept["e"] == ("one of the last 2 runs",)
    assert "not known to be a run" in kept["odd"][0]
    assert _removed(plan) == {"runs/d/metrics.json", "runs/d/report.html", "runs/d/submission"}
    assert all(r.kind == "run_output" and r.subject == "run d" for r in plan.removals)


def test_a_pruned_run_loses_its_on_demand_reports_and_without_manifests_its_whole_folder():
    inventory = Inventory(runs=(_run("a", 1, audiences=("internal", "reports")), _run("b", 2)), published=("b",))
    thinned = plan_retention(inventory, RetentionPolicy(keep_runs=0), now=NOW)
    assert _removed(thinned) == {"runs/a/metrics.json", "runs/a/report.html", "runs/a/submission", "internal/a",
                                 "reports/a"}
    whole = plan_retention(inventory, RetentionPolicy(keep_runs=0, keep_manifests=False), now=NOW)
    assert _removed(whole) == {"runs/a", "internal/a", "reports/a"}


def test_keep_days_keeps_the_runs_started_within_them():
    inventory = Inventory(runs=tuple(_run(f"r{day:02d}", day) for day in range(1, 31)))
    plan = plan_retention(inventory, RetentionPolicy(keep_runs=3, keep_days=7), now=NOW)
    # now is 1 December 03:00: within 7 days is from 24 November 03:00 on, so the run of 24 November 02:00 goes
    assert set(_kept(plan, "run ")) == {f"r{day:02d}" for day in range(25, 31)}


def test_the_plan_keeps_champions_previous_champions_the_newest_in_use_and_referenced_models():
    models = tuple((OUTCOME, f"v{n:04d}") for n in range(1, 8)) + (("other", "v0001"), ("other", "v0002"))
    inventory = Inventory(
        runs=(_run("old", 1, model_versions=((OUTCOME, "v0001"),)),
              _run("new", 2, model_versions=((OUTCOME, "v0002"),))),
        models=models, champions=((OUTCOME, "v0005"), (OUTCOME, "v0006")), previous_champions=((OUTCOME, "v0004"),),
        in_use=((OUTCOME, "v0003"),), unreadable_pointers=("other",), published=("new",))
    plan = plan_retention(inventory, RetentionPolicy(keep_runs=1), now=NOW)
    kept = _kept(plan, "model ")
    assert set(kept) == {f"{OUTCOME} v{n:04d}" for n in range(2, 8)} | {"other v0001", "other v0002"}
    assert kept[f"{OUTCOME} v0002"] == ("named by kept run new",)
    assert kept[f"{OUTCOME} v0003"] == ("used by the scored store",)
    assert kept[f"{OUTCOME} v0004"] == ("previous champion",)
    assert kept[f"{OUTCOME} v0005"] == kept[f"{OUTCOME} v0006"] == ("champion",)
    assert "never given twice" in kept[f"{OUTCOME} v0007"][0]
    assert kept["other v0001"] == ("its outcome's champion pointer cannot be read",)
    assert f"models/{OUTCOME}/v0001" in _removed(plan)  # named only by a run that is not kept
    assert not {r.path for r in plan.removals if r.kind == "model_version"} - {f"models/{OUTCOME}/v0001"}
    unpruned = plan_retention(inventory, RetentionPolicy(keep_runs=1, prune_models=False), now=NOW)
    assert not [r for r in unpruned.removals if r.kind == "model_version"]


def test_the_policy_and_the_clock_are_checked():
    with pytest.raises(ValueError, match="keep_runs must be a whole number >= 0; got -1"):
        RetentionPolicy(keep_runs=-1)
    with pytest.raises(ValueError, match="keep_days must be a finite number of days >= 0; got inf"):
        RetentionPolicy(keep_days=float("inf"))
    with pytest.raises(ValueError, match="pinned_runs must be a set of run ids"):
        RetentionPolicy(pinned_runs="r1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now must be a timezone-aware datetime"):
        plan_retention(Inventory(), RetentionPolicy(), now=dt.datetime(2026, 12, 1))


# --- a real workspace ------------------------------------------------------------------------------------------------

def _source(folder: Path, batch, *, bad_row: bool = False) -> Path:
    procedures = batch.procedures.copy()
    if bad_row:
        procedures.loc[0, "age_years"] = 150  # an impossible age: quarantined with its levels
    folder.mkdir(parents=True)
    procedures.to_parquet(folder / "procedures.parquet", index=False)
    batch.levels.to_parquet(folder / "levels.parquet", index=False)
    return folder


def _save_version(workspace: Path, n: int) -> None:
    model_files.save_version(workspace, outcome=OUTCOME, model=f"model {n}".encode(),
                             features=[{"name": "cement_volume_ml", "kind": "numeric"}],
                             card_for=lambda version: ({"version": version}, f"# {version}\n"), check=lambda files: None)
    model_state.write_outcome_metrics(workspace, outcome=OUTCOME, version=f"v{n:04d}", text='{"auroc": 0.7}\n')


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """Five real runs (r0: batch 1; r1: batch 2 with a quarantined row, pinned; r2: a correction of batch 1, so the
    registry keeps history; r3: batch 3, published; r4: nothing new), five stored versions of a model (v0001 named by
    pinned r1, v0002 by nobody, v0003 previous champion, v0004 champion, v0005 newest), on-demand reports, and the
    leftovers of killed runs."""
    root = tmp_path_factory.mktemp("retention")
    workspace, sources = root / "ws", root / "sources"
    first = make_batch(12, batch=1, start=1)
    corrected = make_batch(12, batch=1, start=1)
    corrected.procedures["bmi_kg_m2"] = 27.0
    steps = [("r0", _source(sources / "0", first), ()),
             ("r1", _source(sources / "1", make_batch(12, batch=2, start=101), bad_row=True), ()),
             ("r2", _source(sources / "2", corrected), (1,)),
             ("r3", _source(sources / "3", make_batch(12, batch=3, start=201)), ()),
             ("r4", sources / "3", ())]
    for run_id, source, replacing in steps:
        run_job(source, workspace, run_id=run_id, train=False, replacing=replacing)
    for n in range(1, 6):
        _save_version(workspace, n)
    model_files.write_champion(workspace, outcome=OUTCOME, pointer={
        "version": "v0004", "history": [{"version": "v0001"}, {"version": "v0003"}]})
    runs.write_run_folder(workspace, "r1", "submission", {"manifest.json": json.dumps(
        {"model_versions": {OUTCOME: "v0001"}}).encode()})
    pin_run(workspace, "r1", reason="submission delivered to the national registry", now=NOW)
    runs.write_audience_file(workspace, "internal", "r0", "report.html", b"<p>internal</p>")
    runs.write_audience_file(workspace, "reports", "r3", "report.html", b"<p>published, other limits</p>")
    (workspace / "scratch" / "killed-run").mkdir(parents=True)
    (workspace / "scratch" / "killed-run" / "levels.parquet").write_bytes(b"frames")
    (workspace / "models" / OUTCOME / ".incomplete-dead").mkdir()
    assert runs.read_published(workspace)["run_id"] == "r3"
    assert list((workspace / "registry" / "history").rglob("*.parquet"))
    assert list((workspace / "quarantine").rglob("*.parquet"))
    return workspace


@pytest.fixture()
def workspace(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(built, copy)
    return copy


def _snapshot(root: Path, *, only: tuple[str, ...] = ()) -> dict[str, str]:
    """Every file's SHA-256 by workspace path (the lock file aside), or those under ``only``."""
    files = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in root.rglob("*") if p.is_file() and p.name != ".lock"}
    return {k: v for k, v in files.items() if not only or k.startswith(only)}


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_prune_thins_old_runs_removes_unused_models_and_leftovers_and_nothing_else(workspace):
    protected = _snapshot(workspace, only=NEVER_TOUCHED)
    kept_runs = {r: _snapshot(workspace / "runs" / r) for r in ("r1", "r3", "r4")}
    report = prune_workspace(workspace, RetentionPolicy(keep_runs=1), now=NOW)
    assert _snapshot(workspace, only=NEVER_TOUCHED) == protected
    assert {r: _snapshot(workspace / "runs" / r) for r in ("r1", "r3", "r4")} == kept_runs
    for run_id in ("r0", "r2"):
        assert _files(workspace / "runs" / run_id) == {MANIFEST_FILE, PRUNED_FILE}
        marker = json.loads((workspace / "runs" / run_id / PRUNED_FILE).read_text())
        assert marker["pruned_at"] == NOW.isoformat() and f"runs/{run_id}/report.html" in marker["removed"]
    assert not (workspace / "internal").exists() and (workspace / "reports" / "r3" / "report.html").is_file()
    assert model_files.list_versions(workspace, OUTCOME) == ["v0001", "v0003", "v0004", "v0005"]
    assert (workspace / "models" / "metrics" / OUTCOME / "v0002.json").is_file()  # the figures of record stay
    assert not (workspace / "scratch").exists() and not (workspace / "models" / OUTCOME / ".incomplete-dead").exists()
    assert not (workspace / TRASH_DIR).exists()
    summary = report.to_dict()
    assert summary["runs_pruned"] == ["run r0", "run r2"] and summary["models_pruned"] == [f"model {OUTCOME} v0002"]
    assert summary["bytes_freed"] > 0 and summary["runs_kept"] == 3


def test_applying_twice_is_a_no_op_and_the_pruned_workspace_still_runs(workspace, tmp_path):
    prune_workspace(workspace, RetentionPolicy(keep_runs=1), now=NOW)
    after_first = _snapshot(workspace)
    again = prune_workspace(workspace, RetentionPolicy(keep_runs=1), now=NOW + dt.timedelta(hours=1))
    assert again.plan.removals == () and again.removed == () and _snapshot(workspace) == after_first
    run_job(_source(tmp_path / "night", make_batch(12, batch=4, start=301)), workspace, run_id="r5", train=False)
    assert runs.read_published(workspace)["run_id"] == "r5"


def test_a_prune_killed_after_its_first_rename_leaves_a_workspace_the_next_prune_completes(workspace, tmp_path,
                                                                                           monkeypatch):
    reference = tmp_path / "reference"
    shutil.copytree(workspace, reference)
    prune_workspace(reference, RetentionPolicy(keep_runs=1), now=NOW)
    protected = _snapshot(workspace, only=NEVER_TOUCHED)
    move = retention._move_to_trash
    calls = []

    def killed_after_one(source: Path, target: Path) -> None:
        if calls:
            raise KeyboardInterrupt("killed in the middle of a prune")
        calls.append(source)
        move(source, target)

    monkeypatch.setattr(retention, "_move_to_trash", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        prune_workspace(workspace, RetentionPolicy(keep_runs=1), now=NOW)
    monkeypatch.undo()
    # consistent in the middle: the protected state, the published run, every manifest, every version whole
    assert len(calls) == 1 and len(list((workspace / TRASH_DIR).iterdir())) == 1
    assert _snapshot(workspace, only=NEVER_TOUCHED) == protected
    assert all((folder / MANIFEST_FILE).is_file() for folder in (workspace / "runs").iterdir())
    assert _files(workspace / "runs" / "r3") >= {"report.html", "metrics.json", "qi_units.csv"}
    for version in model_files.list_versions(workspace, OUTCOME):
        model_files.read_version(workspace, outcome=OUTCOME, version=version)  # integrity checked
    prune_workspace(workspace, RetentionPolicy(keep_runs=1), now=NOW)
    assert _snapshot(workspace) == _snapshot(reference)
    assert not (workspace / TRASH_DIR).exists()


def test_a_run_after_a_killed_prune_publishes_and_its_own_prune_completes_the_killed_one(workspace, tmp_path,
                                                                                        monkeypatch):
    def killed(source: Path, target: Path) -> None:
        raise KeyboardInterrupt("killed before the first rename")

    monkeypatch.setattr(retention, "_move_to_trash", killed)
    with pytest.raises(KeyboardInterrupt):
        prune_workspace(workspace, RetentionPolicy(keep_runs=1), now=NOW)
    monkeypatch.undo()
    run_job(_source(tmp_path / "night", make_batch(12, batch=4, start=301)), workspace, run_id="r5", train=False)
    with workspace_lock(workspace, run_id="r6"):  # where the run's own prune sits: at its end, inside its lock
        prune_workspace(workspace, RetentionPolicy(keep_runs=1), now=NOW)
    assert runs.read_published(workspace)["run_id"] == "r5"
    assert all(_files(workspace / "runs" / r) == {MANIFEST_FILE, PRUNED_FILE} for r in ("r0", "r2", "r3"))
    assert "report.html" in _files(workspace / "runs" / "r5") and not (workspace / TRASH_DIR).exists()


def test_a_prune_inside_a_run_keeps_the_run_and_the_committed_published_run(workspace):
    with workspace_lock(workspace, run_id="r5"):
        write_manifest(workspace, RunManifest(run_id="r5", source="memory", workspace=str(workspace),
                                              started_at="2026-12-01T02:00:00+00:00"))
        runs.write_run_file(workspace, "r5", "report.html", b"<p>r5</p>")
        runs.write_published(workspace, {"run_id": "r5"})  # staged: committed when the run ends
        report = prune_workspace(workspace, RetentionPolicy(keep_runs=0), now=NOW)
        kept = _kept(report.plan, "run ")
        assert kept["r5"] == ("the run in progress", "published") and kept["r3"] == ("published",)
        assert set(kept) == {"r1", "r3", "r5"}
    assert runs.read_published(workspace)["run_id"] == "r5"
    assert _files(workspace / "runs" / "r4") == {MANIFEST_FILE}  # nothing new: it had nothing but its manifest
    assert "report.html" in _files(workspace / "runs" / "r3")


@pytest.mark.parametrize("path", [
    "registry/ledger.json", "registry/history", "quarantine", "scored/state.json", "published.json",
    f"models/{OUTCOME}/champion.json", f"models/{OUTCOME}/v0004", f"models/{OUTCOME}/v0003", "models/metrics/x",
    "runs/r3/report.html", "runs/r3", "reports/r3", "runs/r0/manifest.json", "runs/../registry", ".prefect",
])
def test_apply_refuses_to_remove_what_the_workspace_never_loses(workspace, path):
    before = _snapshot(workspace)
    plan = RetentionPlan(kept=(), removals=(Removal(path="runs/r0/report.html", kind="run_output", subject="run r0",
                                                    reason="old"),
                                            Removal(path=path, kind="leftover", subject=path, reason="hand-made")))
    with pytest.raises(RetentionError, match="retention never removes"):
        apply_plan(workspace, plan, now=NOW)
    assert _snapshot(workspace) == before


def test_pin_and_prune_refuse_what_is_not_there(workspace, tmp_path):
    with pytest.raises(FileNotFoundError, match="no run 'nope'"):
        pin_run(workspace, "nope", reason="delivered")
    prune_workspace(workspace, RetentionPolicy(keep_runs=0), now=NOW)
    with pytest.raises(FileNotFoundError, match="were pruned already"):
        pin_run(workspace, "r0", reason="delivered")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        prune_workspace(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_the_prune_command_dry_runs_pins_and_prunes_with_the_policy_given(workspace):
    from typer.testing import CliRunner

    from pipelines.cli import app

    runner = CliRunner()
    before = _snapshot(workspace)
    dry = runner.invoke(app, ["prune", "--workspace", str(workspace), "--keep-runs", "1", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would remove runs/r0/report.html" in dry.output and "nothing was removed" in dry.output
    assert _snapshot(workspace) == before  # a dry run writes nothing, not even a lock
    refused = runner.invoke(app, ["prune", "--workspace", str(workspace), "--pin", "r0"])
    assert refused.exit_code == 2 and "--pin needs --reason" in refused.output
    assert _snapshot(workspace) == before
    protected = _snapshot(workspace, only=NEVER_TOUCHED)
    done = runner.invoke(app, ["prune", "--workspace", str(workspace), "--keep-runs", "1", "--pin", "r0",
                               "--reason", "sent to the registry"])
    assert done.exit_code == 0, done.output
    assert "runs pruned: 1," in done.output and "model versions removed: 1" in done.output
    assert _snapshot(workspace, only=NEVER_TOUCHED) == protected
    assert json.loads((workspace / "runs" / "r0" / "keep.json").read_text())["reason"] == "sent to the registry"
    assert (workspace / "runs" / "r0" / "report.html").is_file()  # pinned: kept whole
    assert _files(workspace / "runs" / "r2") == {MANIFEST_FILE, PRUNED_FILE}
    missing = runner.invoke(app, ["prune", "--workspace", str(workspace / "nope")])
    assert missing.exit_code == 2 and "not a folder" in missing.output
