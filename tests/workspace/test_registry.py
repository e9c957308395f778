"""The registry and the ingest run: idempotent, a new batch adds only itself, refused runs register nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from records.errors import ContractError, SourceError
from records.guard import IdentifierError
from pipelines.ingest import run_ingest
from workspace.ledger import LEDGER_FILE, load_ledger
from workspace.registry import read_quarantine, read_registry_table, registered_procedure_ids, registry_root
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
    assert manifest["registry"] == {"batches_before": 0, "batches_after": 2, "highest_batch": 2}
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
    assert "cement_volume_ml must be between 0 and 15" in quarantine["reason"].iloc[0]
    assert "40" not in quarantine["reason"].iloc[0]  # the value stays in the row, never in the reason
    ledger = load_ledger(tmp_path / "ws")
    assert ledger.batches[2]["rows_in"] == {"procedures": 3, "levels": 5, "n_levels": 5}
    assert ledger.batches[2]["rows_quarantined"] == {"procedures": 1, "levels": 2}
    assert ledger.batches[2]["procedures"] == 2 and ledger.batches[2]["run_id"] == manifest["run_id"]
    assert len(ledger.batches[2]["content_sha256"]) == 64 and ledger.sequence == 2


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
    assert sorted(load_ledger(workspace).batches) == [1, 2]
    assert len(read_registry_table(workspace, PROCEDURES)) == 6


def test_a_new_batch_reusing_a_registered_id_is_quarantined(tmp_path):
    workspace = tmp_path / "ws"
    run_ingest(_write(tmp_path / "night1", make_batch(3, batch=1)), workspace, as_of_year=AS_OF_YEAR)
    manifest = run_ingest(_write(tmp_path / "night2", make_batch(2, batch=2, start=3)), workspace,
                          as_of_year=AS_OF_YEAR).manifest
    assert manifest.tables["procedures"].rows_quarantined == 1
    assert manifest.tables["procedures"].quarantine_rules == {"already_registered": 1}
    assert len(read_registry_table(workspace, PROCEDURES)) == 4


def test_partition_without_ledger_entry_is_invisible_and_overwritten(tmp_path):
    """A partition the ledger does not list (left by an older version of cementrisk) is not part of the registry."""
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
    outcome = run_ingest(source, workspace, run_id="r-refused", as_of_year=AS_OF_YEAR)
    assert isinstance(outcome.refusal, error) and words in str(outcome.refusal)
    manifest = json.loads((workspace / "runs" / "r-refused" / "manifest.json").read_text())
    assert manifest["status"] == "refused" and words in manifest["reason"]
    assert "jane.doe" not in json.dumps(manifest)
    for counts in manifest["tables"].values():
        assert counts["rows_in"] == counts["rows_accepted"] + counts["rows_quarantined"] == 0
    if damage != "missing":
        assert manifest["tables"]["procedures"]["rows_refused"] == 3
    assert not (workspace / "quarantine").exists() and not (workspace / "registry" / "procedures").exists()
    ledger = load_ledger(workspace)
    assert not ledger.batches
    if damage == "missing":
        assert not ledger.refused  # nothing was read: no batch is known
    else:  # the batch is listed as refused with the reason, and is tried again when it comes again
        assert [r["run_id"] for r in ledger.refused[1]["refusals"]] == ["r-refused"]
        assert words in ledger.refused[1]["refusals"][0]["reason"]


def test_quarantine_of_a_run_killed_before_it_recorded_its_batches_is_not_counted_twice(tmp_path):
    """A run that wrote its quarantine files and died before state.json: the rerun quarantines the same rows
    again in its own file; each row is read once, and recorded files are never removed."""
    from pipelines.ingest import check_batch, load_batch
    from workspace.registry import write_quarantine

    workspace = tmp_path / "ws"
    run_ingest(_two_batches(tmp_path / "night1", bad_level=True), workspace, run_id="night-1", as_of_year=AS_OF_YEAR)
    first = len(read_quarantine(workspace, LEVELS))
    source = _write(tmp_path / "night2", _bad(make_batch(3, batch=3, start=200)))
    dead = check_batch(load_batch(source), workspace=workspace, as_of_year=AS_OF_YEAR)
    orphans = write_quarantine(workspace, dead, run_id="killed")  # ... and the run is killed here
    assert orphans and all((workspace / f).is_file() for f in orphans)
    assert len(read_quarantine(workspace, LEVELS)) == first

    run_ingest(source, workspace, run_id="rerun", as_of_year=AS_OF_YEAR)
    quarantine = read_quarantine(workspace, LEVELS)
    assert len(quarantine) == first + len(dead.levels.quarantined) == 4
    assert set(quarantine["run_id"]) == {"night-1", "rerun"}
    assert not quarantine.duplicated(subset=["procedure_id", "vertebra"]).any()
    state = json.loads((registry_root(workspace) / LEDGER_FILE).read_text())
    assert len(state["quarantine"]) == 4 and not any("killed" in f for f in state["quarantine"])
    assert all((workspace / f).is_file() for f in state["quarantine"])


def test_a_workspace_from_before_the_ledger_is_read_from_its_state_and_continues(tmp_path):
    """state.json (watermark, batches, no quarantine list): its batches count as registered, its quarantine is every
    file in the folder; the next run writes the ledger and records them."""
    workspace = tmp_path / "ws"
    run_ingest(_two_batches(tmp_path / "night1", bad_level=True), workspace, run_id="night-1", as_of_year=AS_OF_YEAR)
    ledger_file = registry_root(workspace) / LEDGER_FILE
    recorded = json.loads(ledger_file.read_text())["quarantine"]
    legacy = {"watermark": 2, "batches": {"1": {"procedures": 4, "levels": 6, "run_id": "night-1"},
                                          "2": {"procedures": 2, "levels": 3, "run_id": "night-1"}}}
    ledger_file.unlink()
    (registry_root(workspace) / "state.json").write_text(json.dumps(legacy))
    ledger = load_ledger(workspace)
    assert sorted(ledger.batches) == [1, 2] and ledger.quarantine is None and ledger.contents() == {1: None, 2: None}
    assert len(read_quarantine(workspace, LEVELS)) == 2 and len(read_registry_table(workspace, PROCEDURES)) == 6
    again = run_ingest(_two_batches(tmp_path / "night1b", bad_level=True), workspace, as_of_year=AS_OF_YEAR).manifest
    assert again.batches_skipped == [1, 2] and again.batches_loaded == []  # registered before: taken as the same
    run_ingest(_write(tmp_path / "night2", make_batch(2, batch=3, start=300)), workspace, as_of_year=AS_OF_YEAR)
    assert sorted(load_ledger(workspace).quarantine) == sorted(recorded)
    assert len(read_quarantine(workspace, LEVELS)) == 2 and sorted(load_ledger(workspace).batches) == [1, 2, 3]


def test_registering_inside_a_run_that_fails_leaves_the_registry_as_it_was(tmp_path):
    from workspace.transaction import workspace_lock

    workspace = tmp_path / "ws"
    run_ingest(_write(tmp_path / "night1", make_batch(3, batch=1)), workspace, as_of_year=AS_OF_YEAR)
    state_before = (registry_root(workspace) / LEDGER_FILE).read_bytes()
    with pytest.raises(RuntimeError, match="models failed"):
        with workspace_lock(workspace, run_id="night-2"):
            run_ingest(_write(tmp_path / "night2", _bad(make_batch(2, batch=2, start=50))), workspace,
                       run_id="night-2", as_of_year=AS_OF_YEAR)
            assert sorted(load_ledger(workspace).batches) == [1, 2]  # the run itself sees what it registered
            assert len(read_registry_table(workspace, PROCEDURES)) == 4
            assert not (registry_root(workspace) / "procedures" / "extract_batch=2").exists()  # others do not
            raise RuntimeError("models failed")
    assert (registry_root(workspace) / LEDGER_FILE).read_bytes() == state_before
    assert sorted(load_ledger(workspace).batches) == [1] and len(read_registry_table(workspace, PROCEDURES)) == 3
    assert read_quarantine(workspace, LEVELS).empty and not (workspace / "quarantine").exists()
    assert not (registry_root(workspace) / "procedures" / "extract_batch=2").exists()


def test_transient_write_errors_of_a_partition_are_retried(tmp_path, monkeypatch):
    import errno

    import workspace.durable as durable
    import records.errors as errors
    from records.errors import Retry

    monkeypatch.setattr(errors, "WRITE_RETRY", Retry(attempts=3, delays=(0.0,)))
    real = durable.write_durable
    calls = []

    def flaky(path, data):
        if path.parent.name.startswith("extract_batch="):
            calls.append(path)
            if len(calls) == 1:
                raise OSError(errno.EIO, "input/output error on the share")
        return real(path, data)

    source = _write(tmp_path / "night1", make_batch(3, batch=1))
    monkeypatch.setattr(durable, "write_durable", flaky)
    workspace = tmp_path / "ws"
    run_ingest(source, workspace, as_of_year=AS_OF_YEAR)
    assert len(read_registry_table(workspace, PROCEDURES)) == 3 and len(read_registry_table(workspace, LEVELS)) > 0
    assert len(calls) == 3 and calls[0] == calls[1]  # the failed partition written again, then the other table's


def _bad(batch):
    """The batch with its first level's cement volume out of range (its procedure is quarantined)."""
    batch.levels.loc[0, "cement_volume_ml"] = 40.0
    return batch


def test_registered_ids_can_be_looked_up_among_a_batch_without_reading_them_all(tmp_path):
    source = _write(tmp_path / "night1", make_batch(5, batch=1))
    workspace = tmp_path / "ws"
    run_ingest(source, workspace, as_of_year=AS_OF_YEAR)
    every = registered_procedure_ids(workspace)
    assert sorted(every) == [f"P{i:05d}" for i in range(1, 6)]
    among = pd.Series(["P00002", "P00004", "P77777", None], dtype="string")
    assert sorted(registered_procedure_ids(workspace, among=among)) == ["P00002", "P00004"]
    assert registered_procedure_ids(workspace, among=pd.Series([], dtype="string")).empty
    # the nightly check finds a re-sent procedure through the lookup
    again = make_batch(2, batch=2, start=4)  # P00004 (registered) and P00005 (registered)
    run_ingest(_write(tmp_path / "night2", again), workspace, as_of_year=AS_OF_YEAR)
    assert len(read_quarantine(workspace, PROCEDURES)) == 2
