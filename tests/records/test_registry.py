"""The registry and the ingest run: idempotent, a new batch adds only itself, refused runs write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from records.errors import ContractError, SourceError
from records.guard import IdentifierError
from records.ingest import run_ingest
from records.registry import load_state, read_quarantine, read_registry_table, registry_root
from records.schema import LEVELS, PROCEDURES
from tests.conftest import AS_OF_YEAR, make_batch


def _write(folder: Path, batch) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in batch.tables().items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"{name}.parquet")
    return folder


def _two_batches(folder: Path, *, bad_level: bool = False) -> Path:
    first, second = make_batch(4, batch=1), make_batch(3, batch=2, start=50)
    if bad_level:
        second.levels.loc[0, "cement_volume_ml"] = 40.0
    procedures = pd.concat([first.procedures, second.procedures], ignore_index=True)
    levels = pd.concat([first.levels, second.levels], ignore_index=True)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(procedures, preserve_index=False), folder / "procedures.parquet")
    pq.write_table(pa.Table.from_pandas(levels, preserve_index=False), folder / "levels.parquet")
    return folder


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_run_registers_partitions_and_writes_the_manifest(tmp_path):
    source = _two_batches(tmp_path / "src", bad_level=True)
    outcome = run_ingest(source, tmp_path / "ws", as_of_year=AS_OF_YEAR)
    manifest = json.loads(outcome.manifest_path.read_text())
    assert outcome.manifest_path == tmp_path / "ws" / "runs" / manifest["run_id"] / "manifest.json"
    assert manifest["status"] == "ok"
    for name in ("procedures", "levels"):
        counts = manifest["tables"][name]
        assert counts["rows_in"] == counts["rows_accepted"] + counts["rows_quarantined"]
    assert manifest["tables"]["procedures"] == {**manifest["tables"]["procedures"],
                                                "rows_in": 7, "rows_accepted": 6, "rows_quarantined": 1}
    assert manifest["tables"]["levels"]["rows_quarantined"] == 2
    assert manifest["batches_loaded"] == [1, 2]
    assert manifest["watermark_before"] == 0 and manifest["watermark_after"] == 2
    assert set(manifest["timings_seconds"]) == {"read", "guard", "validate", "register"}
    assert manifest["code_version"] and manifest["source"] == str(source)

    registry = registry_root(tmp_path / "ws")
    assert sorted(p.name for p in (registry / "procedures").iterdir()) == ["extract_batch=1", "extract_batch=2"]
    procedures = read_registry_table(tmp_path / "ws", PROCEDURES)
    levels = read_registry_table(tmp_path / "ws", LEVELS)
    assert len(procedures) == 6 and procedures["extract_batch"].value_counts().to_dict() == {1: 4, 2: 2}
    assert set(levels["procedure_id"]) == set(procedures["procedure_id"])
    quarantine = read_quarantine(tmp_path / "ws", LEVELS)
    assert len(quarantine) == 2 and set(quarantine["run_id"]) == {manifest["run_id"]}
    assert "cement_volume_ml must be between 0 and 15 (got 40.0)" in quarantine["reason"].iloc[0]


def test_same_source_twice_registers_nothing_the_second_time(tmp_path):
    source = _two_batches(tmp_path / "src", bad_level=True)
    workspace = tmp_path / "ws"
    run_ingest(source, workspace, as_of_year=AS_OF_YEAR)
    before = _files(workspace / "registry") | _files(workspace / "quarantine")
    second = run_ingest(source, workspace, as_of_year=AS_OF_YEAR).manifest
    after = _files(workspace / "registry") | _files(workspace / "quarantine")
    assert after == before
    assert second.batches_loaded == [] and second.batches_skipped == [1, 2]
    for counts in second.tables.values():
        assert counts.rows_in == counts.rows_accepted == counts.rows_quarantined == 0
    assert second.tables["procedures"].rows_skipped_registered == 7


def test_a_new_batch_adds_only_itself(tmp_path):
    workspace = tmp_path / "ws"
    run_ingest(_write(tmp_path / "night1", make_batch(4, batch=1)), workspace, as_of_year=AS_OF_YEAR)
    old_files = _files(workspace / "registry" / "procedures")
    both = tmp_path / "night2"
    first, second = make_batch(4, batch=1), make_batch(2, batch=2, start=100)
    _write(both, type(first)(procedures=pd.concat([first.procedures, second.procedures], ignore_index=True),
                             levels=pd.concat([first.levels, second.levels], ignore_index=True), source="x"))
    manifest = run_ingest(both, workspace, as_of_year=AS_OF_YEAR).manifest
    assert manifest.batches_loaded == [2] and manifest.batches_skipped == [1]
    assert manifest.tables["procedures"].rows_in == 2
    assert manifest.tables["procedures"].rows_skipped_registered == 4
    new_files = _files(workspace / "registry" / "procedures")
    assert {k: v for k, v in new_files.items() if k in old_files} == old_files
    assert load_state(workspace).watermark == 2
    assert len(read_registry_table(workspace, PROCEDURES)) == 6


def test_a_new_batch_reusing_a_registered_id_is_quarantined(tmp_path):
    workspace = tmp_path / "ws"
    run_ingest(_write(tmp_path / "night1", make_batch(3, batch=1)), workspace, as_of_year=AS_OF_YEAR)
    manifest = run_ingest(_write(tmp_path / "night2", make_batch(2, batch=2, start=3)), workspace,
                          as_of_year=AS_OF_YEAR).manifest
    assert manifest.tables["procedures"].rows_quarantined == 1
    assert manifest.tables["procedures"].quarantine_rules == {"already_registered": 1}
    assert len(read_registry_table(workspace, PROCEDURES)) == 4


def test_partition_without_state_is_invisible_and_overwritten(tmp_path):
    """A run stopped after writing a partition but before the state leaves the registry as it was."""
    workspace = tmp_path / "ws"
    run_ingest(_write(tmp_path / "night1", make_batch(3, batch=1)), workspace, as_of_year=AS_OF_YEAR)
    stray = registry_root(workspace) / "procedures" / "extract_batch=2"
    stray.mkdir()
    pq.write_table(pa.Table.from_pandas(make_batch(1, start=900).procedures.drop(columns="extract_batch"),
                                        preserve_index=False), stray / "part-0.parquet")
    assert len(read_registry_table(workspace, PROCEDURES)) == 3
    run_ingest(_write(tmp_path / "night2", make_batch(2, batch=2, start=50)), workspace, as_of_year=AS_OF_YEAR)
    ids = set(read_registry_table(workspace, PROCEDURES)["procedure_id"])
    assert "P00900" not in ids and {"P00050", "P00051"} <= ids


@pytest.mark.parametrize(("damage", "error", "words"), [
    ("missing", SourceError, "source not found"),
    ("no_column", ContractError, "required column"),
    ("identifier", IdentifierError, "e-mail"),
])
def test_refused_runs_write_their_manifest_and_nothing_else(tmp_path, damage, error, words):
    workspace = tmp_path / "ws"
    batch = make_batch(3)
    if damage == "no_column":
        batch = type(batch)(procedures=batch.procedures.drop(columns="sex"), levels=batch.levels, source="x")
    if damage == "identifier":
        batch = type(batch)(procedures=batch.procedures.assign(contact="jane.doe@example.org"),
                            levels=batch.levels, source="x")
    source = tmp_path / "missing" if damage == "missing" else _write(tmp_path / "src", batch)
    with pytest.raises(error, match=words):
        run_ingest(source, workspace, run_id="r-refused", as_of_year=AS_OF_YEAR)
    manifest = json.loads((workspace / "runs" / "r-refused" / "manifest.json").read_text())
    assert manifest["status"] == "refused" and words in manifest["reason"]
    assert "jane.doe" not in json.dumps(manifest)
    for counts in manifest["tables"].values():
        assert counts["rows_in"] == counts["rows_accepted"] + counts["rows_quarantined"] == 0
    if damage != "missing":
        assert manifest["tables"]["procedures"]["rows_refused"] == 3
    assert not (workspace / "registry").exists() and not (workspace / "quarantine").exists()
