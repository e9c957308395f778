"""Issue 9, class 10: faults. A run that fails or rolls back for any reason (a full disk anywhere, an error or an
interrupt in a step) ends with manifest status ``failed`` and its reason, never ``ok``, and leaves the published run,
the ledger and the registry as they were. A refused run prints only paths that exist (a refused or unreachable
PREFECT_API_URL prints no manifest that is never written). A planned case nested 100,000 deep is a clear refusal,
exit 2, never a RecursionError. An edited card.json (the calibration band the planner prints), model file, feature
list or integrity manifest is refused on load naming the file, and the planner does not print the edited band. A
workspace that is a file, an empty --workspace, a source that does not exist or holds no tables are bad input.

In-process mostly, with faults injected by monkeypatching ``workspace.durable.write_durable`` (every durable write
goes through it) or the job's steps. Subprocesses for the Prefect API URL (two, ~15 s), an interrupt (~7 s) and the
deep case (~7 s). The model-integrity cases train small models once for the module (about 12-25 s on 2 cores:
1,500 sample procedures, 3 folds, 10 bootstrap replicates)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import pipelines.job as job
import workspace.durable as durable
from tests.conftest import make_batch
from tests.hostile._support import (
    check_paths_exist,
    check_absent,
    check_accounting,
    check_no_traceback,
    check_registry_is_the_ledger,
    cli,
    cli_inprocess,
    dataset_rows,
    driver,
    ledger,
    published,
    write_csv,
    write_source,
)
from workspace import transaction

LOCAL = ("--engine", "local", "--no-models")
REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
EXAMPLE_CASE = SAMPLE / "planned_case.json"
NAME = "Jane Doe"  # an invalid etiology in batch 2: quarantined, never printed
FULL = "No space left on device"


def _state(ws: Path) -> dict:
    return {"published": published(ws), "ledger": ledger(ws)["batches"],
            "rows": sorted(dataset_rows(ws)["procedure_id"]) if (ws / "registry").exists() else []}


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A workspace with night 1 published (batch 1), and night 2's source: batch 1 again and batch 2, one of whose
    procedures has the etiology 'Jane Doe' (quarantined, so the run writes a quarantine file)."""
    root = tmp_path_factory.mktemp("night")
    first = make_batch(4, batch=1)
    outcome = cli_inprocess("run", "--source", write_source(root / "n1", first), "--workspace", root / "ws", *LOCAL)
    assert outcome.returncode == 0, outcome.out
    second = make_batch(4, batch=2, start=50)
    procedures = pd.concat([first.procedures, second.procedures], ignore_index=True).astype(object)
    procedures.loc[5, "etiology"] = NAME
    levels = pd.concat([first.levels, second.levels], ignore_index=True)
    return root / "ws", write_csv(root / "n2", procedures, levels)


@pytest.fixture
def ws(night, tmp_path):
    return Path(shutil.copytree(night[0], tmp_path / "ws"))


def _full_disk(monkeypatch, where) -> None:
    real = durable.write_durable

    def full(path, data):
        if where(Path(path)):
            raise OSError(errno.ENOSPC, FULL)
        return real(path, data)

    monkeypatch.setattr(durable, "write_durable", full)


WHERE = {
    "registering": lambda p: p.name == "part-0.parquet" and "registry" in p.parts,
    "writing the quarantine": lambda p: "quarantine" in p.parts,
    "writing the ledger": lambda p: p.name == "ledger.json",
    "writing the report": lambda p: p.name == "report.html",
    "writing the scored store": lambda p: "scored" in p.parts,
    "switching published.json": lambda p: p.name == "published.json",
    "staging the final manifest": lambda p: p.name == "manifest.json" and ".staging" in p.parts,
    "committing": lambda p: p.name == transaction.COMMIT_MARK,
}


@pytest.mark.parametrize("label", list(WHERE), ids=list(WHERE))
def test_a_full_disk_anywhere_fails_the_run_honestly(night, ws, monkeypatch, label):
    _, source = night
    before = _state(ws)
    _full_disk(monkeypatch, WHERE[label])
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    monkeypatch.undo()
    assert outcome.returncode == 1, outcome.out
    check_no_traceback(outcome)
    assert f"internal error: OSError: [Errno 28] {FULL}" in outcome.flat
    assert "the run was rolled back; manifest:" in outcome.flat
    manifest = outcome.manifest()
    assert manifest["status"] == "failed" and FULL in manifest["reason"], manifest
    check_accounting(manifest)
    check_absent(outcome.out, NAME)
    check_absent(json.dumps(manifest), NAME)
    assert _state(ws) == before
    check_registry_is_the_ledger(ws)
    check_paths_exist(outcome, ws)


def test_a_full_disk_at_the_commit_leaves_no_staging_behind(night, ws, monkeypatch):
    _, source = night
    before = _state(ws)
    _full_disk(monkeypatch, WHERE["committing"])
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    monkeypatch.undo()
    assert outcome.returncode == 1, outcome.out
    check_no_traceback(outcome)
    assert outcome.manifest()["status"] == "failed"
    assert _state(ws) == before
    assert not (ws / ".staging").exists(), sorted(str(p.relative_to(ws)) for p in (ws / ".staging").rglob("*"))[:5]
    # the next night does the work, and the failed run stays failed
    again = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert again.returncode == 0, again.out
    assert again.manifest()["batches_loaded"] == [2] and published(ws) == again.manifest()["run_id"]
    assert outcome.manifest()["status"] == "failed"


def test_a_disk_too_full_for_any_manifest_prints_no_manifest_path(night, ws, monkeypatch):
    _, source = night
    before = _state(ws)
    _full_disk(monkeypatch, lambda p: p.name == "manifest.json")
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    monkeypatch.undo()
    assert outcome.returncode == 1, outcome.out
    check_no_traceback(outcome)
    assert f"internal error: OSError: [Errno 28] {FULL}" in outcome.flat and "the run was rolled back" in outcome.flat
    assert outcome.manifest_path() is None  # none was written: none is named
    check_paths_exist(outcome, ws)
    assert _state(ws) == before
    check_absent(outcome.out, NAME)


def test_a_refusal_whose_manifest_cannot_be_closed_is_closed_by_the_next_run(night, ws, monkeypatch, tmp_path):
    """Source missing, and the disk fills after the run's first ('running') manifest: whatever is printed exists,
    and the next run to take the workspace says the stuck run failed."""
    before = _state(ws)
    writes = {"manifest": 0}
    real = durable.write_durable

    def full(path, data):
        if Path(path).name == "manifest.json":
            writes["manifest"] += 1
            if writes["manifest"] > 1:
                raise OSError(errno.ENOSPC, FULL)
        return real(path, data)

    monkeypatch.setattr(durable, "write_durable", full)
    outcome = cli_inprocess("run", "--source", tmp_path / "nowhere", "--workspace", ws, *LOCAL)
    monkeypatch.undo()
    assert outcome.returncode in (1, 2), outcome.out
    check_no_traceback(outcome)
    check_paths_exist(outcome, ws)
    stuck = outcome.manifest_path()
    assert stuck is not None and json.loads(stuck.read_text())["status"] in ("running", "failed", "refused")
    assert _state(ws) == before
    nxt = cli_inprocess("run", "--source", night[1], "--workspace", ws, *LOCAL)
    assert nxt.returncode == 0, nxt.out
    closed = json.loads(stuck.read_text())
    assert closed["status"] in ("failed", "refused") and closed["reason"], closed
    check_accounting(closed)


def test_a_failure_after_the_commit_point_is_reported_as_what_it_is(night, ws, monkeypatch):
    _, source = night
    before = _state(ws)
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst) == ws / "published.json" and ".staging" in Path(src).parts:
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(transaction.os, "replace", replace)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    monkeypatch.undo()
    check_no_traceback(outcome)
    assert outcome.returncode != 0, outcome.out
    manifest = outcome.manifest()
    check_accounting(manifest)
    rolled_back = "rolled back" in outcome.out
    # what the CLI says and what the workspace holds agree
    if rolled_back:
        assert manifest["status"] == "failed", manifest["status"]
        assert _state(ws) == before
    else:
        assert manifest["status"] == "ok"
    again = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert again.returncode == 0, again.out


def test_an_interrupt_between_the_renames_of_the_commit_leaves_the_run_for_the_next_run_to_finish(night, ws,
                                                                                                 monkeypatch):
    """Ctrl-C (or a termination signal) after the commit mark: the run is committed, so nothing of it is discarded
    (a discarded half-applied commit would leave the ledger ahead of the registry for good); the next run puts the
    rest in place and the registry equals the ledger."""
    _, source = night
    real = os.replace
    moved = []

    def replace(src, dst, *args, **kwargs):
        if ".staging" in Path(src).parts and ".staging" not in Path(dst).parts:  # the commit's renames into place
            moved.append(dst)
            if len(moved) == 3:
                raise KeyboardInterrupt("Ctrl-C during the commit")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(transaction.os, "replace", replace)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    monkeypatch.undo()
    check_no_traceback(outcome)
    assert outcome.returncode == 1, outcome.out
    assert "incomplete:" in outcome.flat and "is committed" in outcome.flat and "rolled back" not in outcome.out
    assert any((ws / ".staging").glob(f"*/{transaction.COMMIT_MARK}")), "the committed run's staging was discarded"
    again = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert again.returncode == 0, again.out
    assert not (ws / ".staging").exists() or not any((ws / ".staging").iterdir())
    check_registry_is_the_ledger(ws)
    assert sorted(ledger(ws)["batches"], key=int) == ["1", "2"]
    assert (ws / "runs" / outcome.manifest_path().parent.name / "manifest.json").is_file()
    assert json.loads(outcome.manifest_path().read_text())["status"] == "ok"


def test_an_empty_workspace_variable_is_refused(tmp_path, monkeypatch):
    source = write_source(tmp_path / "src", make_batch(3, batch=1))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("CEMENTRISK_WORKSPACE", "  ")
    outcome = cli_inprocess("run", "--source", source, *LOCAL)
    assert outcome.returncode == 2, outcome.out
    assert "refused: CEMENTRISK_WORKSPACE is set but empty" in outcome.flat
    assert list(cwd.iterdir()) == []


INTERRUPT = r'''
import dataclasses, sys
import pipelines.job as job
def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
job.run_job.__kwdefaults__["steps"] = dataclasses.replace(job.PLAIN, reports=interrupted)
from pipelines.cli import main
sys.argv = ["cementrisk", "run", "--source", sys.argv[1], "--workspace", sys.argv[2], "--engine", "local",
            "--no-models"]
main()
'''


def test_an_interrupt_in_the_middle_of_a_run_leaves_a_failed_manifest(night, ws):
    _, source = night
    before = _state(ws)
    outcome = driver(INTERRUPT, source, ws)
    assert outcome.returncode not in (0, 2), outcome.out
    check_no_traceback(outcome)
    check_absent(outcome.out, NAME)
    runs = [p for p in (ws / "runs").iterdir() if p.name != before["published"]]
    assert len(runs) == 1
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "KeyboardInterrupt" in manifest["reason"], manifest
    check_accounting(manifest)
    assert _state(ws) == before
    check_paths_exist(outcome, ws)


def _with_steps(monkeypatch, **steps) -> None:
    monkeypatch.setitem(job.run_job.__kwdefaults__, "steps", dataclasses.replace(job.PLAIN, **steps))


def test_an_error_in_the_models_step_fails_the_run_honestly(night, ws, monkeypatch):
    _, source = night
    before = _state(ws)

    def broken(*args, **kwargs):
        raise RuntimeError("the learner fell over")

    _with_steps(monkeypatch, models=broken)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, "--engine", "local")
    monkeypatch.undo()
    assert outcome.returncode == 1, outcome.out
    check_no_traceback(outcome)
    assert "internal error: RuntimeError: the learner fell over" in outcome.flat
    assert "the run was rolled back; manifest:" in outcome.flat
    manifest = outcome.manifest()
    assert manifest["status"] == "failed" and manifest["reason"] == "models: RuntimeError: the learner fell over"
    check_accounting(manifest)
    assert _state(ws) == before
    check_absent(outcome.out, NAME)


def test_a_step_that_calls_sys_exit_does_not_make_a_failed_run_exit_0(night, ws, monkeypatch):
    _, source = night
    before = _state(ws)

    def exits(*args, **kwargs):
        raise SystemExit(0)

    _with_steps(monkeypatch, reports=exits)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    monkeypatch.undo()
    check_no_traceback(outcome)
    runs = [p for p in (ws / "runs").iterdir() if p.name != before["published"]]
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert _state(ws) == before
    assert outcome.returncode != 0, "a failed run exited 0"
    assert "failed" in outcome.out or "rolled back" in outcome.out


def test_a_refused_prefect_api_url_names_no_manifest_that_is_not_written(tmp_path):
    """PREFECT_API_URL on loopback with nothing listening: the run cannot start (exit 3, like an unreachable
    source); it names no manifest it did not write."""
    source = write_source(tmp_path / "src", make_batch(3, batch=1))
    ws = tmp_path / "ws"
    outcome = cli("run", "--source", source, "--workspace", ws, "--no-models",
                  env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert outcome.returncode == 3, outcome.out
    check_no_traceback(outcome)
    assert "prefect unavailable: the Prefect API at http://127.0.0.1:9/api does not answer" in outcome.flat, outcome.out
    assert "nothing was registered" in outcome.flat
    path = outcome.manifest_path()
    assert path is None or path.is_file(), f"names a manifest that was never written: {path}"
    check_paths_exist(outcome, tmp_path)
    assert published(ws) is None and not (ws / "registry").exists()
    for manifest in ws.rglob("manifest.json"):
        assert json.loads(manifest.read_text())["status"] != "ok"
        check_accounting(json.loads(manifest.read_text()))


# --- planned cases nested too deeply --------------------------------------------------------------------------

DEEP = 100_000
TOO_DEEP = "it nests objects or lists too deeply"


def test_a_case_of_100000_nested_lists_is_refused_by_the_real_cli(tmp_path):
    case = tmp_path / "deep.json"
    case.write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    outcome = cli("plan", "--case", case, "--workspace", tmp_path / "ws")
    assert outcome.returncode == 2, outcome.out[-2000:]
    check_no_traceback(outcome)
    assert "RecursionError" not in outcome.out
    assert f"refused: cannot read the case file {case}: {TOO_DEEP}" in outcome.flat
    assert not case.with_suffix(".plan.html").exists()
    assert published(tmp_path / "ws") is None


@pytest.mark.parametrize(("label", "make"), [
    ("nested objects", lambda base: '{"a":' * DEEP + "1" + "}" * DEEP),
    ("a field nested deep", lambda base: base.replace('"sex": "f"', '"sex": ' + "[" * DEEP + '"f"' + "]" * DEEP)),
    ("a level field nested deep", lambda base: base.replace(
        '"vertebra": "t12"', '"vertebra": ' + '{"x":' * DEEP + '"t12"' + "}" * DEEP)),
    ("just under the parser's limit", lambda base: base.replace(
        '"sex": "f"', '"sex": ' + "[" * 700 + '"Jane Doe"' + "]" * 700)),
], ids=["nested objects", "a field nested deep", "a level field nested deep", "just under the parser's limit"])
def test_a_deeply_nested_case_is_refused_not_a_crash(tmp_path, label, make):
    case = tmp_path / "case.json"
    case.write_text(make(EXAMPLE_CASE.read_text(encoding="utf-8")), encoding="utf-8")
    outcome = cli_inprocess("plan", "--case", case, "--workspace", tmp_path / "ws")
    assert outcome.returncode == 2, outcome.out[-2000:]
    check_no_traceback(outcome)
    assert "RecursionError" not in outcome.out
    if label == "just under the parser's limit":
        assert "sex must be a single value" in outcome.flat
    else:
        assert TOO_DEEP in outcome.flat
    check_absent(outcome.out, NAME)
    assert not case.with_suffix(".plan.html").exists()


# --- model integrity ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(shared_nights, tmp_path_factory) -> Path:
    """A workspace with champions of every leakage outcome and nothing registered: the models of the shared
    workspace after its first night, without its registry and runs."""
    folder = tmp_path_factory.mktemp("trained") / "ws"
    shutil.copytree(shared_nights.after_night_1 / "models", folder / "models")
    for outcome in ("leakage_any", "leakage_canal", "leakage_venous"):
        assert (folder / "models" / outcome / "champion.json").is_file(), f"no champion for {outcome}"
    return folder


@pytest.fixture
def models_ws(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "ws"))


VERSION = Path("models") / "leakage_any" / "v0001"
EDITED_HIGH = 0.777  # the edited band's upper edge: 77.7% must never be printed


def _edit_band(ws: Path) -> None:
    path = ws / VERSION / "card.json"
    card = json.loads(path.read_text(encoding="utf-8"))
    band = card["metrics"]["calibration_band"]
    band["low"] = [0.0] * len(band["low"])
    band["high"] = [EDITED_HIGH] * len(band["high"])
    path.write_text(json.dumps(card, indent=2), encoding="utf-8")


def _edit_same_size(ws: Path) -> None:
    path = ws / VERSION / "card.json"
    text = path.read_text(encoding="utf-8")
    assert '"level": 0.95' in text
    edited = text.replace('"level": 0.95', '"level": 0.99', 1)
    assert len(edited) == len(text)
    path.write_text(edited, encoding="utf-8")


def _flip_model_byte(ws: Path) -> None:
    path = ws / VERSION / "model.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_features(ws: Path) -> None:
    path = ws / VERSION / "features.json"
    path.write_text(path.read_text(encoding="utf-8").replace("cement_volume_ml", "cement_volume_xx", 1),
                    encoding="utf-8")


def _remove_integrity(ws: Path) -> None:
    (ws / VERSION / "integrity.json").unlink()


TAMPER = {
    "edited calibration band": (_edit_band, "card.json"),
    "same-size edit of card.json": (_edit_same_size, "card.json"),
    "one byte of the model file": (_flip_model_byte, "model.skops"),
    "edited feature list": (_edit_features, "features.json"),
    "integrity manifest removed": (_remove_integrity, "integrity.json"),
}


def test_the_untouched_models_plan_with_a_band(models_ws):
    """The control: the trained workspace plans (exit 0, intervals printed), so the refusals below are the edits'."""
    out = models_ws / "plan.html"
    outcome = cli_inprocess("plan", "--case", EXAMPLE_CASE, "--workspace", models_ws, "--out", out)
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    assert "Planned case: models leakage_any v0001" in outcome.out and re.search(r"\[\d+\.\d-\d+\.\d\]", outcome.out)
    assert out.is_file()


@pytest.mark.parametrize("label", list(TAMPER), ids=list(TAMPER))
def test_an_edited_model_version_is_refused_on_load_naming_the_file(models_ws, label):
    tamper, named = TAMPER[label]
    tamper(models_ws)
    out = models_ws / "plan.html"
    outcome = cli_inprocess("plan", "--case", EXAMPLE_CASE, "--workspace", models_ws, "--out", out)
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "refused:" in outcome.flat and named in outcome.flat, outcome.out
    assert "leakage_any" in outcome.flat and "v0001" in outcome.flat
    assert "retrain" in outcome.flat  # the fix is said
    assert "Planned case:" not in outcome.out and "page:" not in outcome.out
    assert f"{EDITED_HIGH * 100:.1f}" not in outcome.out  # the edited band is never printed
    assert not out.exists()


def test_a_champion_pointer_to_a_missing_version_is_refused(models_ws):
    pointer = models_ws / "models" / "leakage_canal" / "champion.json"
    data = json.loads(pointer.read_text(encoding="utf-8"))
    data["version"] = "v0009"
    pointer.write_text(json.dumps(data), encoding="utf-8")
    outcome = cli_inprocess("plan", "--case", EXAMPLE_CASE, "--workspace", models_ws, "--out", models_ws / "p.html")
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "champion.json points to v0009, which is not stored" in outcome.flat, outcome.out
    assert not (models_ws / "p.html").exists()


def test_scoring_with_an_edited_card_is_refused_naming_it(models_ws, tmp_path):
    _edit_band(models_ws)
    out = tmp_path / "scored"
    outcome = cli_inprocess("score", "--input", SAMPLE, "--output", out, "--workspace", models_ws)
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "refused:" in outcome.flat and "card.json" in outcome.flat and "has changed" in outcome.flat
    assert not list(out.glob("*.parquet")) if out.exists() else True


def test_a_run_on_an_edited_champion_fails_naming_the_file_and_publishes_nothing(models_ws, tmp_path):
    """--no-models: the report scores the registry with the champions; the edited one is refused, never used."""
    _edit_band(models_ws)
    source = write_source(tmp_path / "src", make_batch(6, batch=1))
    outcome = cli_inprocess("run", "--source", source, "--workspace", models_ws, *LOCAL)
    assert outcome.returncode in (1, 2), outcome.out
    check_no_traceback(outcome)
    assert "card.json has changed" in outcome.flat, outcome.out
    assert f"{EDITED_HIGH * 100:.1f}" not in outcome.out
    manifest = outcome.manifest()
    assert manifest["status"] == "failed" and "card.json" in manifest["reason"]
    check_accounting(manifest)
    assert published(models_ws) is None and ledger(models_ws)["batches"] == {}
    check_registry_is_the_ledger(models_ws)


# --- bad workspaces and sources -------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "where"), [
    pytest.param("run", "is a file"),
    pytest.param("run", "under a file"),
    pytest.param("validate", "is a file"),
], ids=["run, workspace is a file", "run, workspace under a file", "validate, workspace is a file"])
def test_a_workspace_that_is_a_file_is_refused(tmp_path, command, where):
    source = write_source(tmp_path / "src", make_batch(3, batch=1))
    (tmp_path / "afile").write_text("not a folder", encoding="utf-8")
    ws = tmp_path / "afile" if where == "is a file" else tmp_path / "afile" / "ws"
    args = ("run", "--source", source, "--workspace", ws, *LOCAL) if command == "run" else \
        ("validate", "--source", source, "--workspace", ws)
    outcome = cli_inprocess(*args)
    check_no_traceback(outcome)
    assert (tmp_path / "afile").read_text(encoding="utf-8") == "not a folder"
    named = outcome.manifest_path()
    assert named is None or named.is_file(), named
    assert outcome.returncode == 2, outcome.out
    assert "refused:" in outcome.flat and "workspace" in outcome.flat and str(tmp_path / "afile") in outcome.flat


def test_an_empty_workspace_argument_is_refused(tmp_path, monkeypatch):
    source = write_source(tmp_path / "src", make_batch(3, batch=1))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    outcome = cli_inprocess("run", "--source", source, "--workspace", "", *LOCAL)
    check_no_traceback(outcome)
    written = sorted(p.name for p in cwd.iterdir())
    assert written == [], f"wrote into the current folder: {written}"
    assert outcome.returncode == 2, outcome.out
    assert "refused:" in outcome.flat and "workspace" in outcome.flat


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "exports" / "2026-12"


def _no_tables(tmp_path: Path) -> Path:
    folder = tmp_path / "empty-export"
    folder.mkdir()
    (folder / "README.txt").write_text("the export job failed", encoding="utf-8")
    return folder


def _table_folder_without_parts(tmp_path: Path) -> Path:
    folder = write_source(tmp_path / "parts", make_batch(3, batch=2, start=20))
    (folder / "levels.csv").unlink()
    (folder / "levels").mkdir()
    return folder


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "export.txt"
    path.write_text("procedure_id;site_id\n", encoding="utf-8")
    return path


def _fifo(tmp_path: Path) -> Path:
    """levels.csv a named pipe nobody writes to: reading it would wait for ever, with the workspace locked."""
    folder = write_source(tmp_path / "fifo", make_batch(3, batch=2, start=20))
    (folder / "levels.csv").unlink()
    os.mkfifo(folder / "levels.csv")
    return folder


@pytest.mark.parametrize(("label", "make", "said"), [
    ("source does not exist", _missing, "refused: source not found: {source}"),
    ("a table that is a pipe", _fifo, "refused: table levels: {source}/levels.csv is not a regular file"),
    ("folder with no tables", _no_tables, "refused: table procedures not found in {source}"),
    ("table folder without part files", _table_folder_without_parts,
     "refused: table levels: folder {source}/levels holds no .parquet or .csv part files"),
    ("a text file", _text_file, "refused: source {source} is a file but not a SQLite database"),
], ids=["source does not exist", "a table that is a pipe", "folder with no tables", "table folder without part files",
        "a text file"])
def test_a_refused_source_prints_only_paths_that_exist(ws, night, tmp_path, label, make, said):
    source = make(tmp_path)
    before = _state(ws)
    for args in (("validate", "--source", source), ("run", "--source", source, "--workspace", ws, *LOCAL)):
        outcome = cli_inprocess(*args)
        assert outcome.returncode == 2, outcome.out
        check_no_traceback(outcome)
        assert said.format(source=source) in outcome.flat, outcome.out
        check_paths_exist(outcome, ws)
    assert "nothing was registered; manifest:" in outcome.flat
    manifest = outcome.manifest()
    assert manifest["status"] == "refused" and manifest["reason"]
    check_accounting(manifest)
    assert _state(ws) == before


def test_a_run_with_a_refused_batch_prints_only_paths_that_exist(ws, tmp_path):
    changed = make_batch(4, batch=1)
    changed.procedures.loc[0, "bmi_kg_m2"] = 31.7
    before = _state(ws)
    outcome = cli_inprocess("run", "--source", write_source(tmp_path / "src", changed), "--workspace", ws, *LOCAL)
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "refused: batch 1 differs from the batch registered by run" in outcome.flat
    check_absent(outcome.out, "31.7")
    manifest = outcome.manifest()
    check_accounting(manifest)
    after = _state(ws)
    assert after["published"] == before["published"] and after["rows"] == before["rows"]
    assert after["ledger"]["1"]["content_sha256"] == before["ledger"]["1"]["content_sha256"]
    assert after["ledger"]["1"]["refusals"][-1]["run_id"] == manifest["run_id"]  # the refusal is on record
    check_paths_exist(outcome, ws)
