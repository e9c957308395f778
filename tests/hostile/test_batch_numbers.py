"""Issue 9, promise 2: extract_batch must be a whole number in 1..2147483647. Anything else is quarantined with its
reason and never becomes a ledger entry or a registry partition (nor a batch number it could be rounded, cut or
wrapped to).

One CSV source carries every hostile number next to a valid batch 7 and goes through the real CLI once; the typed
Parquet variants run in-process, on a first read and on a night read (a workspace already holding a batch)."""

from __future__ import annotations

import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.conftest import make_batch
from tests.hostile._support import (
    check_absent,
    check_accounting,
    check_no_traceback,
    check_registry_is_the_ledger,
    cli,
    cli_inprocess,
    ledger,
    published,
    write_csv,
    write_parquet,
)

LOCAL = ("--engine", "local", "--no-models")
GOOD_BATCH = 7

# label, the cell as written in the CSV, the rule, whether the text is distinctive enough to look for in the output
HOSTILE = [
    ("zero", "0", "range", False),
    ("negative", "-1", "range", False),
    ("fraction", "1.5", "type", False),
    ("ten to the 15", str(10**15), "range", True),
    ("int64 max", "9223372036854775807", "range", True),
    ("1e19", "1e19", "range", True),
    ("text", "Batch-Zq9", "type", True),
    ("empty", "", "required", False),
    ("just above the maximum", "2147483648", "range", True),
    ("a 400-digit number", "7" * 400, None, True),
    ("a fraction of the good batch", "7.25", "type", True),
]


def _row_id(i: int) -> str:
    return f"PB{i:03d}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    good = make_batch(2, batch=GOOD_BATCH)
    procedures, levels = [good.procedures.astype(object)], [good.levels]
    for i, (_, value, _, _) in enumerate(HOSTILE):
        one = make_batch(1, batch=GOOD_BATCH, start=500 + i)
        p = one.procedures.astype(object)
        p["procedure_id"] = _row_id(i)
        p["extract_batch"] = value
        lv = one.levels.copy()
        lv["procedure_id"] = _row_id(i)
        procedures.append(p)
        levels.append(lv)
    source = write_csv(root / "src", pd.concat(procedures, ignore_index=True), pd.concat(levels, ignore_index=True))
    ws = root / "ws"
    outcome = cli("run", "--source", source, "--workspace", ws, *LOCAL)
    quarantine = ds.dataset([str(p) for p in (ws / "quarantine").rglob("procedures-*.parquet")],
                            format="parquet").to_table().to_pandas()
    return outcome, ws, quarantine


@pytest.mark.parametrize(("label", "value", "rule", "distinctive"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_batch_number_is_quarantined_and_never_a_batch(run, label, value, rule, distinctive):
    outcome, ws, quarantine = run
    i = [h[0] for h in HOSTILE].index(label)
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["batches_loaded"] == [GOOD_BATCH]
    row = quarantine[quarantine["procedure_id"] == _row_id(i)]
    assert len(row) == 1, f"{label}: the row was not quarantined"
    assert "extract_batch" in row["reason"].iloc[0]
    if rule is not None:
        assert rule in row["rules"].iloc[0].split(","), row["rules"].iloc[0]
    assert pd.isna(row["extract_batch"].iloc[0])  # it belongs to no batch
    # only the good batch exists, in the ledger and on disk; no number was rounded, cut or wrapped into a batch
    assert sorted(ledger(ws)["batches"]) == [str(GOOD_BATCH)] and ledger(ws)["refused"] == {}
    assert {p.name for p in (ws / "registry" / "procedures").iterdir()} == {f"extract_batch={GOOD_BATCH}"}
    assert {p.name for p in (ws / "quarantine").iterdir()} == {"extract_batch=unknown"}
    check_registry_is_the_ledger(ws)
    assert published(ws) == manifest["run_id"]
    if distinctive:
        check_absent(outcome.out, value)


PARQUET = [
    ("int64 max", pa.int64(), 2**63 - 1),
    ("int64 zero", pa.int64(), 0),
    ("int64 ten to the 15", pa.int64(), 10**15),
    ("uint64 max", pa.uint64(), 2**64 - 1),
    ("uint64 above int64", pa.uint64(), 2**63 + 5),
    ("float 1.5", pa.float64(), 1.5),
]


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A workspace holding batch 1 (so a Parquet source is read at night: registered batches left out)."""
    root = tmp_path_factory.mktemp("night-batches")
    first = make_batch(2, batch=1, start=900)
    ws = root / "ws"
    outcome = cli_inprocess("run", "--source", write_parquet(root / "first", first.procedures, first.levels),
                            "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out
    return root, ws, first


@pytest.mark.parametrize("night", [False, True], ids=["first read", "night read"])
@pytest.mark.parametrize(("label", "arrow_type", "value"), PARQUET, ids=[p[0] for p in PARQUET])
def test_a_typed_parquet_batch_number_out_of_range_is_quarantined_not_a_refusal(registered, tmp_path, night, label,
                                                                                 arrow_type, value):
    root, prepared, first = registered
    ws = tmp_path / "ws"
    if night:
        shutil.copytree(prepared, ws)
    new = make_batch(2, batch=2, start=50)
    procedures = pd.concat([first.procedures, new.procedures], ignore_index=True) if night else new.procedures
    levels = pd.concat([first.levels, new.levels], ignore_index=True) if night else new.levels
    numbers = [1] * (len(procedures) - 2) + [2, value]
    table = pa.Table.from_pandas(procedures.drop(columns=["extract_batch"]), preserve_index=False)
    table = table.append_column("extract_batch", pa.array(numbers, type=arrow_type))
    source = write_parquet(tmp_path / "src", table, levels)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out  # one bad cell: that procedure is quarantined, the batch is not refused
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["batches_loaded"] == [2]
    assert manifest["tables"]["procedures"]["rows_quarantined"] == 1
    assert manifest["tables"]["procedures"]["rows_accepted"] == 1
    assert manifest["tables"]["procedures"]["rows_skipped_registered"] == (2 if night else 0)
    assert sorted(ledger(ws)["batches"], key=int) == (["1", "2"] if night else ["2"])
    check_registry_is_the_ledger(ws)
    assert published(ws) == manifest["run_id"]
    if len(str(value)) > 4:
        check_absent(outcome.out, str(value))
