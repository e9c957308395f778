"""Issue 9, promises 1 and 8: the batch ledger decides what is loaded, skipped, refused and replaced, and the
registry dataset shows exactly the ledger's registered rows after every run.

The CSV story runs the real CLI in subprocesses on one workspace (module fixture); the Parquet night and the
--replace-batch misuses run the same CLI in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_batch
from tests.hostile._support import (
    check_absent,
    check_accounting,
    check_no_traceback,
    check_registry_is_the_ledger,
    cli,
    cli_inprocess,
    dataset_rows,
    ledger,
    published,
    write_source,
)

LOCAL = ("--engine", "local", "--no-models")
CHANGED_BMI = "31.7"  # the changed cell's value: never shown
ADDED_ID = "P00077"    # the id added to batch 3: never shown


def _batch3_changed():
    """Batch 3 sent again: P00030 removed, P00077 added, one bmi changed (P00031)."""
    changed = make_batch(3, batch=3, start=30)
    changed.procedures.loc[1, "bmi_kg_m2"] = float(CHANGED_BMI)
    procedures = changed.procedures.copy()
    procedures.loc[0, "procedure_id"] = ADDED_ID
    levels = changed.levels.copy()
    levels.loc[levels["procedure_id"] == "P00030", "procedure_id"] = ADDED_ID
    return type(changed)(procedures=procedures, levels=levels, source="memory")


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """run A: batches 1 and 3 (a gap); run B: 1 again unchanged, 2 late (below the highest), 3 changed;
    run C: the same source with --replace-batch 3."""
    root = tmp_path_factory.mktemp("ledger")
    ws = root / "ws"
    b1, b3 = make_batch(3, batch=1, start=1), make_batch(3, batch=3, start=30)
    b2 = make_batch(2, batch=2, start=20)
    steps = {}
    steps["A"] = cli("run", "--source", write_source(root / "a", b1, b3), "--workspace", ws, *LOCAL)
    steps["A_ledger"] = ledger(ws)
    source_b = write_source(root / "b", b1, b2, _batch3_changed())
    steps["B"] = cli("run", "--source", source_b, "--workspace", ws, *LOCAL)
    steps["B_ledger"], steps["B_published"] = ledger(ws), published(ws)
    steps["B_rows"] = dataset_rows(ws)
    steps["C"] = cli("run", "--source", source_b, "--workspace", ws, *LOCAL, "--replace-batch", "3")
    steps["C_ledger"], steps["C_published"] = ledger(ws), published(ws)
    steps["ws"] = ws
    return steps


def test_first_run_registers_batches_with_a_gap(story):
    first = story["A"]
    assert first.returncode == 0, first.out
    check_no_traceback(first)
    manifest = first.manifest()
    assert manifest["status"] == "ok" and manifest["batches_loaded"] == [1, 3]
    check_accounting(manifest)
    assert sorted(story["A_ledger"]["batches"], key=int) == ["1", "3"]
    assert story["A_ledger"]["batches"]["3"]["rows_in"]["procedures"] == 3


def test_a_changed_resend_is_refused_naming_what_differs_and_the_other_batches_are_published(story):
    second = story["B"]
    assert second.returncode == 2, second.out
    check_no_traceback(second)
    text = second.flat
    assert "refused:" in text and "batch 3 differs" in text
    assert "procedures 3 -> 3 rows (1 ids added, 1 removed)" in text
    assert "cells changed: bmi_kg_m2 in 1 row" in text
    assert "--replace-batch 3" in text
    assert "the other batches were registered and published" in text
    check_absent(second.out, CHANGED_BMI, ADDED_ID)  # what differs is counted, never shown
    manifest = second.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok"
    assert manifest["batches_loaded"] == [2]                      # late, below the highest registered batch
    assert manifest["batches_skipped"] == [1]                     # identical: skipped
    assert [r["batch"] for r in manifest["batches_refused"]] == [3]
    assert manifest["tables"]["procedures"]["rows_skipped_registered"] == 3
    assert manifest["tables"]["procedures"]["rows_refused"] == 3
    assert manifest["tables"]["procedures"]["rows_accepted"] == 2
    assert story["B_published"] == manifest["run_id"]
    entries = story["B_ledger"]["batches"]
    assert sorted(entries, key=int) == ["1", "2", "3"]
    assert entries["3"]["content_sha256"] == story["A_ledger"]["batches"]["3"]["content_sha256"]
    assert entries["3"]["refusals"] and "batch 3 differs" in entries["3"]["refusals"][-1]["reason"]
    check_absent(json.dumps(story["B_ledger"]), CHANGED_BMI, ADDED_ID)
    ids = set(story["B_rows"]["procedure_id"])
    assert ADDED_ID not in ids and "P00030" in ids  # nothing of the changed batch was taken


def test_replace_batch_registers_the_correction_keeps_history_and_republishes(story):
    third = story["C"]
    ws = story["ws"]
    assert third.returncode == 0, third.out
    check_no_traceback(third)
    assert "batches replaced" in third.flat
    manifest = third.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok"
    assert manifest["batches_replaced"] == [3] and manifest["batches_loaded"] == [3]
    assert story["C_published"] == manifest["run_id"] != story["B_published"]
    assert Path(manifest["outputs"]["report"]).is_file()  # re-scored and republished
    entry = story["C_ledger"]["batches"]["3"]
    assert len(entry["corrections"]) == 1
    correction = entry["corrections"][0]
    assert correction["content_sha256"] == story["A_ledger"]["batches"]["3"]["content_sha256"]
    assert correction["replaced_by"] == manifest["run_id"]
    old = pq.read_table(ws / correction["history"]["procedures"]).to_pandas()
    assert sorted(old["procedure_id"]) == ["P00030", "P00031", "P00032"]
    rows = dataset_rows(ws)
    assert sorted(rows.loc[rows["extract_batch"] == 3, "procedure_id"]) == ["P00031", "P00032", ADDED_ID]
    check_registry_is_the_ledger(ws)


def _night(root: Path, *batches) -> str:
    return str(write_source(root, *batches, fmt="parquet"))


@pytest.fixture(scope="module")
def parquet_night(tmp_path_factory):
    """A Parquet workspace holding batches 1 and 3."""
    root = tmp_path_factory.mktemp("night")
    ws = root / "ws"
    first = cli_inprocess("run", "--source", _night(root / "p1", make_batch(3, batch=1), make_batch(3, batch=3, start=30)),
                          "--workspace", ws, *LOCAL)
    assert first.returncode == 0, first.out
    return root, ws


def _copy(parquet_night, name: str) -> Path:
    root, ws = parquet_night
    target = root / name
    shutil.copytree(ws, target)
    return target


def test_a_parquet_night_leaves_out_a_registered_batch_with_equal_counts_and_verify_finds_the_change(
        parquet_night, tmp_path):
    ws = _copy(parquet_night, "equal-counts")
    changed = make_batch(3, batch=3, start=30)
    changed.procedures.loc[1, "bmi_kg_m2"] = float(CHANGED_BMI)
    source = _night(tmp_path / "p2", make_batch(3, batch=1), changed, make_batch(2, batch=2, start=20))
    night = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert night.returncode == 0, night.out
    manifest = night.manifest()
    check_accounting(manifest)
    assert manifest["batches_loaded"] == [2] and sorted(manifest["batches_skipped"]) == [1, 3]
    assert manifest["tables"]["procedures"]["rows_skipped_registered"] == 6
    check_registry_is_the_ledger(ws)
    verified = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL, "--verify-registered")
    assert verified.returncode == 2, verified.out
    text = verified.flat
    assert "refused:" in text and "batch 3 differs" in text and "cells changed: bmi_kg_m2 in 1 row" in text
    assert "--replace-batch 3" in text
    check_absent(verified.out, CHANGED_BMI)
    check_accounting(verified.manifest())
    assert published(ws) == manifest["run_id"]  # nothing new: the night's run stays published
    check_registry_is_the_ledger(ws)


def test_a_parquet_night_reads_a_registered_batch_whose_counts_changed_and_refuses_it(parquet_night, tmp_path):
    ws = _copy(parquet_night, "more-rows")
    before = published(ws)
    source = _night(tmp_path / "p3", make_batch(3, batch=1), make_batch(4, batch=3, start=30))
    night = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert night.returncode == 2, night.out
    text = night.flat
    assert "batch 3 differs" in text and "procedures 3 -> 4 rows (1 ids added, 0 removed)" in text
    check_absent(night.out, "P00033")
    manifest = night.manifest()
    check_accounting(manifest)
    assert manifest["tables"]["procedures"]["rows_refused"] == 4
    assert published(ws) == before
    check_registry_is_the_ledger(ws)


def test_an_identical_batch_sent_again_as_csv_in_another_order_is_skipped(parquet_night, tmp_path):
    ws = _copy(parquet_night, "as-csv")
    before = published(ws)
    frames = {t: f.iloc[::-1] for t, f in write_source_frames(make_batch(3, batch=1),
                                                              make_batch(3, batch=3, start=30)).items()}
    folder = tmp_path / "csv"
    folder.mkdir()
    for name, frame in frames.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    again = cli_inprocess("run", "--source", folder, "--workspace", ws, *LOCAL)
    assert again.returncode == 0, again.out
    manifest = again.manifest()
    check_accounting(manifest)
    assert manifest["batches_loaded"] == [] and sorted(manifest["batches_skipped"]) == [1, 3]
    assert manifest["tables"]["procedures"]["rows_skipped_registered"] == 6
    assert "nothing new" in again.flat and published(ws) == before
    check_registry_is_the_ledger(ws)


def write_source_frames(*batches) -> dict[str, pd.DataFrame]:
    return {t: pd.concat([b.tables()[t] for b in batches], ignore_index=True) for t in ("procedures", "levels")}


@pytest.mark.parametrize(("label", "batches", "replace", "words"), [
    ("not registered", [(9, 90)], "9", "--replace-batch 9: batch 9 is not registered"),
    ("not in the source", [(2, 20)], "3", "--replace-batch 3: the source holds no procedure of batch 3"),
    ("the same content", [(3, 30)], "3", "--replace-batch 3: batch 3 in the source is the same as the registered one"),
])
def test_a_replace_batch_that_cannot_be_made_is_refused_and_changes_nothing(parquet_night, tmp_path, label, batches,
                                                                            replace, words):
    ws = _copy(parquet_night, f"replace-{label.replace(' ', '-')}")
    before = (ledger(ws), published(ws))
    source = _night(tmp_path / "src", *[make_batch(3, batch=b, start=s) for b, s in batches])
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL, "--replace-batch", replace)
    assert outcome.returncode == 2, outcome.out
    assert "refused:" in outcome.flat and words in outcome.flat, outcome.out
    manifest = outcome.manifest()
    assert manifest["status"] == "refused"
    check_accounting(manifest)
    assert (ledger(ws)["batches"], published(ws)) == (before[0]["batches"], before[1])
    check_registry_is_the_ledger(ws)


def test_a_batch_refused_for_an_identifier_is_loaded_when_it_comes_back_clean(parquet_night, tmp_path):
    ws = _copy(parquet_night, "identifier-then-clean")
    dirty = make_batch(2, batch=6, start=60)
    email = "night.nurse@example.org"
    dirty.procedures["contact"] = [email, "day.nurse@example.org"]
    refused = cli_inprocess("run", "--source", _night(tmp_path / "dirty", dirty), "--workspace", ws, *LOCAL)
    assert refused.returncode == 2 and "refused:" in refused.flat and "procedures.contact: e-mail address" in refused.flat
    check_absent(refused.out, email)
    assert "6" in ledger(ws)["refused"] and "6" not in ledger(ws)["batches"]
    check_absent(json.dumps(ledger(ws)), email)
    check_registry_is_the_ledger(ws)
    clean = cli_inprocess("run", "--source", _night(tmp_path / "clean", make_batch(2, batch=6, start=60)),
                          "--workspace", ws, *LOCAL)
    assert clean.returncode == 0, clean.out
    manifest = clean.manifest()
    check_accounting(manifest)
    assert manifest["batches_loaded"] == [6] and published(ws) == manifest["run_id"]
    entries = ledger(ws)
    assert "6" in entries["batches"] and "6" not in entries["refused"]
    assert len(entries["batches"]["6"]["refusals"]) == 1  # the refusal stays on record
    check_registry_is_the_ledger(ws)


def test_every_run_of_the_story_leaves_the_dataset_equal_to_the_ledger(story):
    check_registry_is_the_ledger(story["ws"])
    for step in ("A", "B", "C"):
        check_no_traceback(story[step])
