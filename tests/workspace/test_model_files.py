"""The model store's files: a version staged with its integrity manifest last and renamed into place; every file
checked against the manifest on every read; champion pointers staged within a run; bytes and JSON only."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from workspace import model_files
from workspace.model_files import ModelFilesError, ModelFilesIntegrityError, VersionFiles
from workspace.transaction import workspace_lock

MODEL = b"PK\x03\x04 not really a skops file, but bytes are all this layer knows"
FEATURES = [{"name": "cement_volume_ml", "kind": "numeric"}, {"name": "age_years", "kind": "numeric"}]
COVERED = ["model.skops", "card.json", "card.md", "features.json"]


def card_for(version: str) -> tuple[dict, str]:
    card = {"outcome": "leakage_any", "version": version,
            "metrics": {"calibration_band": {"predicted": [0.1, 0.5], "low": [0.05, 0.4], "high": [0.2, 0.6]}}}
    return card, f"# Model card: leakage_any {version}\n"


def save(workspace: Path, **kwargs) -> tuple[Path, VersionFiles]:
    options = {"outcome": "leakage_any", "model": MODEL, "features": FEATURES, "card_for": card_for,
               "check": lambda files: files} | kwargs
    return model_files.save_version(workspace, **options)


def test_a_saved_version_reads_back_its_bytes_and_json(tmp_path):
    folder, staged = save(tmp_path)
    assert folder == tmp_path / "models" / "leakage_any" / "v0001"
    assert staged.folder.name.startswith(".incomplete-")  # what the check saw: the staged copy, before the rename
    files = model_files.read_version(tmp_path, outcome="leakage_any", version="v0001")
    assert (files.model, files.features, files.card) == (MODEL, FEATURES, card_for("v0001")[0])
    assert files.card_markdown == card_for("v0001")[1] and files.shown == "models/leakage_any/v0001"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*COVERED, "model.sha256", "integrity.json"])
    assert (folder / "model.sha256").read_text() == f"{hashlib.sha256(MODEL).hexdigest()}  model.skops\n"
    assert model_files.list_versions(tmp_path, "leakage_any") == ["v0001"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_the_manifest_lists_every_file_with_its_sha256_and_size(tmp_path):
    folder, _ = save(tmp_path)
    manifest = json.loads((folder / "integrity.json").read_text())
    assert (manifest["outcome"], manifest["version"], manifest["algorithm"]) == ("leakage_any", "v0001", "sha256")
    assert sorted(manifest["files"]) == sorted(COVERED)
    for name in COVERED:
        data = (folder / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_the_manifest_is_written_last_and_the_folder_renamed_after_the_check(tmp_path, monkeypatch):
    events: list[str] = []
    write = model_files._write_staged
    rename = model_files.os.rename

    def recording_write(path: Path, data: bytes) -> None:
        events.append(f"write {path.name}")
        write(path, data)

    def recording_rename(source, target) -> None:
        events.append(f"rename to {Path(target).name}")
        rename(source, target)

    monkeypatch.setattr(model_files, "_write_staged", recording_write)
    monkeypatch.setattr(model_files.os, "rename", recording_rename)
    save(tmp_path, check=lambda files: events.append("check"))
    assert events[-3:] == ["write integrity.json", "check", "rename to v0001"]
    assert sorted(e.removeprefix("write ") for e in events[:-2]) == sorted([*COVERED, "model.sha256",
                                                                             "integrity.json"])


def test_a_version_taken_meanwhile_is_left_alone_and_the_next_one_claimed(tmp_path, monkeypatch):
    save(tmp_path)
    claims = iter(["v0001", "v0002"])  # a racing writer saw no v0001 and then took it
    monkeypatch.setattr(model_files, "_next_version", lambda outcome_dir: next(claims))
    folder, _ = save(tmp_path, model=MODEL + b"2")
    assert folder.name == "v0002"
    assert model_files.read_version(tmp_path, outcome="leakage_any", version="v0001").model == MODEL
    second = model_files.read_version(tmp_path, outcome="leakage_any", version="v0002")
    assert second.model == MODEL + b"2" and second.card["version"] == "v0002"


def test_a_failed_check_leaves_no_version_and_no_staging(tmp_path):
    def refuse(files: VersionFiles) -> None:
        raise RuntimeError("cannot be rebuilt")

    with pytest.raises(RuntimeError, match="cannot be rebuilt"):
        save(tmp_path, check=refuse)
    assert list((tmp_path / "models" / "leakage_any").iterdir()) == []


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _append(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b" ")


@pytest.mark.parametrize("name", COVERED)
@pytest.mark.parametrize("tamper", [_flip_a_byte, _append], ids=["same size", "size changed"])
def test_any_changed_file_is_refused_naming_it(tmp_path, name, tamper):
    save(tmp_path)
    tamper(tmp_path / "models" / "leakage_any" / "v0001" / name)
    with pytest.raises(ModelFilesIntegrityError) as refused:
        model_files.read_version(tmp_path, outcome="leakage_any", version="v0001")
    message = str(refused.value)
    assert f"models/leakage_any/v0001/{name} " in message
    assert "the version's files do not match its integrity manifest" in message
    assert "the fix is to retrain (`cementrisk run --retrain`)" in message


@pytest.mark.parametrize("name", [*COVERED, "model.sha256"])
def test_a_missing_file_is_refused_naming_it(tmp_path, name):
    save(tmp_path)
    (tmp_path / "models" / "leakage_any" / "v0001" / name).unlink()
    expected = rf"model leakage_any v0001 is incomplete: {name} missing \(models/leakage_any/v0001/{name}\).*--retrain"
    with pytest.raises(ModelFilesIntegrityError, match=expected):
        model_files.read_version(tmp_path, outcome="leakage_any", version="v0001")


def test_a_version_from_before_the_manifest_is_refused_saying_so(tmp_path):
    save(tmp_path)
    (tmp_path / "models" / "leakage_any" / "v0001" / "integrity.json").unlink()
    with pytest.raises(ModelFilesIntegrityError, match=r"models/leakage_any/v0001/integrity.json missing\): it "
                                                       r"predates the integrity manifest.*cementrisk run --retrain"):
        model_files.read_version(tmp_path, outcome="leakage_any", version="v0001")


def test_a_model_sha256_that_disagrees_with_the_manifest_is_refused(tmp_path):
    save(tmp_path)
    (tmp_path / "models" / "leakage_any" / "v0001" / "model.sha256").write_text(f"{'0' * 64}  model.skops\n")
    with pytest.raises(ModelFilesIntegrityError, match=r"models/leakage_any/v0001/model.sha256 disagrees with the "
                                                       r"integrity manifest"):
        model_files.read_version(tmp_path, outcome="leakage_any", version="v0001")


def _drop_an_entry(manifest: dict) -> None:
    del manifest["files"]["card.json"]


def _blank_a_digest(manifest: dict) -> None:
    manifest["files"]["card.md"]["sha256"] = "not a digest"


@pytest.mark.parametrize(("change", "problem"), [
    (_drop_an_entry, "it lists card.md, features.json, model.skops, not"),
    (_blank_a_digest, "an entry lacks a SHA-256 hex digest"),
])
def test_an_edited_manifest_is_refused(tmp_path, change, problem):
    save(tmp_path)
    path = tmp_path / "models" / "leakage_any" / "v0001" / "integrity.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelFilesIntegrityError, match=rf"models/leakage_any/v0001/integrity.json is not the "
                                                       rf"integrity manifest of model leakage_any v0001: {problem}"):
        model_files.read_version(tmp_path, outcome="leakage_any", version="v0001")
    path.write_text("{")
    with pytest.raises(ModelFilesIntegrityError, match="integrity.json is not the integrity manifest .* not JSON"):
        model_files.read_version(tmp_path, outcome="leakage_any", version="v0001")


def test_a_version_folder_copied_under_another_name_is_refused(tmp_path):
    folder, _ = save(tmp_path)
    shutil.copytree(folder, folder.with_name("v0002"))
    with pytest.raises(ModelFilesIntegrityError, match="describes leakage_any v0001, not leakage_any v0002"):
        model_files.read_version(tmp_path, outcome="leakage_any", version="v0002")


def test_names_are_checked_and_an_absent_version_is_no_integrity_error(tmp_path):
    with pytest.raises(ModelFilesError, match="outcome must be lower case"):
        model_files.list_versions(tmp_path, "../elsewhere")
    with pytest.raises(ModelFilesError, match="a version is 'v' and at least 4 digits"):
        model_files.read_version(tmp_path, outcome="leakage_any", version="../v0001")
    with pytest.raises(ModelFilesError, match="no version v0001 of model leakage_any") as refused:
        model_files.read_version(tmp_path, outcome="leakage_any", version="v0001")
    assert not isinstance(refused.value, ModelFilesIntegrityError)
    assert not model_files.has_version(tmp_path, outcome="leakage_any", version="v0001")


def test_the_champion_pointer_is_staged_within_a_held_lock(tmp_path):
    save(tmp_path)
    pointer = tmp_path / "models" / "leakage_any" / "champion.json"
    assert model_files.read_champion(tmp_path, "leakage_any") is None
    model_files.write_champion(tmp_path, outcome="leakage_any", pointer={"version": "v0001", "history": []})
    before = pointer.read_bytes()
    with pytest.raises(RuntimeError, match="killed"):
        with workspace_lock(tmp_path, run_id="night-2"):
            written = model_files.write_champion(tmp_path, outcome="leakage_any", pointer={"version": "v0002"})
            assert written != pointer and pointer.read_bytes() == before  # staged, not in place
            assert model_files.read_champion(tmp_path, "leakage_any") == {"version": "v0002"}  # the run sees it
            raise RuntimeError("killed")
    assert model_files.read_champion(tmp_path, "leakage_any")["version"] == "v0001"
    with workspace_lock(tmp_path, run_id="night-3"):
        model_files.write_champion(tmp_path, outcome="leakage_any", pointer={"version": "v0002"})
        assert pointer.read_bytes() == before
    assert json.loads(pointer.read_text()) == {"version": "v0002"}
    pointer.write_text("{")
    with pytest.raises(ModelFilesIntegrityError, match="champion.json of the champion pointer cannot be read"):
        model_files.read_champion(tmp_path, "leakage_any")
    with pytest.raises(ModelFilesError, match="names its version"):
        model_files.write_champion(tmp_path, outcome="leakage_any", pointer={"decision": {}})


def test_leftover_staging_is_swept_only_under_the_lock(tmp_path):
    save(tmp_path)
    outcome_dir = tmp_path / "models" / "leakage_any"
    leftover = outcome_dir / ".incomplete-deadbeef"
    leftover.mkdir()
    (leftover / "model.skops").write_bytes(b"half")
    (outcome_dir / ".champion.json.0badc0de.tmp").write_text("{")
    save(tmp_path)  # without the lock another writer may be filling it: kept
    assert leftover.is_dir()
    assert model_files.list_versions(tmp_path, "leakage_any") == ["v0001", "v0002"]  # hidden folders are no version
    with workspace_lock(tmp_path, run_id="r"):
        assert save(tmp_path)[0].name == "v0003"
    assert not [p.name for p in outcome_dir.iterdir() if p.name.startswith(".")]


def test_values_that_are_not_json_ready_are_refused(tmp_path):
    with pytest.raises(ModelFilesError, match="the feature list is not JSON-serialisable"):
        save(tmp_path, features=[{"name": object()}])
    with pytest.raises(ModelFilesError, match="an integrity manifest covers exactly"):
        model_files.integrity_manifest({"model.skops": b""}, outcome="leakage_any", version="v0001")


def test_the_module_imports_only_the_standard_library_records_and_workspace():
    source = Path(model_files.__file__).read_text(encoding="utf-8")
    import_lines = [line.strip() for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert import_lines, "no import lines found"
    for forbidden in ("models", "skops", "sklearn"):
        assert not [line for line in import_lines if forbidden in line.split()[1]], forbidden
    tops = set()
    for node in ast.walk(ast.parse(source)):  # imports anywhere, not only at the top of a line
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            tops.add(node.module.split(".")[0])
    assert tops - set(sys.stdlib_module_names) - {"__future__"} <= {"records", "workspace"}
