"""Issue 9, promise 3: a NUL, another C0 control character (tab aside) or DEL inside a cell is quarantined with rule
control_character; the value is never cut at it (``S1\\x006`` must not become ``S1``), never accepted, never echoed.
A line break inside a quoted CSV cell is a control character too.

The CSV source (every character in its own procedure, every cell quoted) goes through the real CLI once; the same
NUL from Parquet and SQLite runs in-process."""

from __future__ import annotations

import pandas as pd
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
    dataset_rows,
    published,
    write_csv,
    write_parquet,
    write_sqlite,
)

LOCAL = ("--engine", "local", "--no-models")
CHARACTERS = {"NUL": "\x00", "SOH": "\x01", "BEL": "\x07", "backspace": "\x08", "line feed": "\n",
              "carriage return": "\r", "CRLF": "\r\n", "vertical tab": "\x0b", "form feed": "\x0c",
              "escape": "\x1b", "unit separator": "\x1f", "DEL": "\x7f"}
# (table, column, clean value, where the character goes): a key, a category, a number, a boolean, a level's text
COLUMNS = [("procedures", "site_id", "S16"), ("procedures", "etiology", "osteoporotic"),
           ("procedures", "age_years", "70"), ("procedures", "diabetes", "false"),
           ("levels", "leakage_sites", "intradiscal")]


def _cases():
    cases = [(f"site_id {name}", "procedures", "site_id", "S1" + char + "6") for name, char in CHARACTERS.items()]
    cases += [(f"{column} NUL", table, column, clean[:3] + "\x00" + clean[3:]) for table, column, clean in COLUMNS[1:]]
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("control")
    good = make_batch(2, batch=1)
    procedures, levels = [good.procedures.astype(object)], [good.levels.astype(object)]
    for i, (_, table, column, value) in enumerate(CASES):
        one = make_batch(1, batch=1, start=100 + i)
        p, lv = one.procedures.astype(object), one.levels.astype(object)
        pid = f"PC{i:03d}"
        p["procedure_id"], lv["procedure_id"] = pid, pid
        if table == "procedures":
            p[column] = value
        else:
            lv.loc[0, column] = value
        procedures.append(p)
        levels.append(lv)
    source = write_csv(root / "src", pd.concat(procedures, ignore_index=True), pd.concat(levels, ignore_index=True),
                       quote_all=True)
    ws = root / "ws"
    outcome = cli("run", "--source", source, "--workspace", ws, *LOCAL)
    quarantine = {t: ds.dataset([str(p) for p in (ws / "quarantine").rglob(f"{t}-*.parquet")],
                                format="parquet").to_table().to_pandas() for t in ("procedures", "levels")}
    return outcome, ws, quarantine


@pytest.mark.parametrize(("label", "table", "column", "value"), CASES, ids=[c[0] for c in CASES])
def test_a_control_character_in_a_csv_cell_is_quarantined_never_cut(run, label, table, column, value):
    outcome, ws, quarantine = run
    i = [c[0] for c in CASES].index(label)
    pid = f"PC{i:03d}"
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["batches_loaded"] == [1]
    rows = quarantine[table][quarantine[table]["procedure_id"] == pid]
    assert len(rows) >= 1, f"{label}: not quarantined"
    assert "control_character" in ",".join(rows["rules"]), rows["rules"].tolist()
    assert f"{column} holds a control character" in " ".join(rows["reason"])
    assert value not in " ".join(rows["reason"])
    # the procedure and its levels stay out of the registry, nothing was cut at the character
    accepted = dataset_rows(ws, "procedures")
    assert pid not in set(accepted["procedure_id"])
    assert set(accepted["procedure_id"]) == {"P00001", "P00002"}
    assert not set(accepted["site_id"]) & {"S1", "S16"}
    assert pid not in set(dataset_rows(ws, "levels")["procedure_id"])
    check_registry_is_the_ledger(ws)
    assert published(ws) == manifest["run_id"]
    check_absent(outcome.out, value)


@pytest.mark.parametrize("fmt", ["parquet", "sqlite"])
def test_a_nul_inside_a_parquet_or_sqlite_cell_is_quarantined_never_cut(tmp_path, fmt):
    batch = make_batch(2, batch=1)
    procedures = batch.procedures.astype(object).copy()
    procedures.loc[1, "site_id"] = "S1\x006"
    procedures.loc[0, "operator_id"] = "OP0\x7f01"
    source = (write_parquet(tmp_path / "src", procedures, batch.levels) if fmt == "parquet"
              else write_sqlite(tmp_path / "src.sqlite", procedures, batch.levels))
    ws = tmp_path / "ws"
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["tables"]["procedures"]["quarantine_rules"].get("control_character") == 2
    assert manifest["tables"]["procedures"]["rows_accepted"] == 0
    assert dataset_rows(ws).empty or dataset_rows(ws)["site_id"].tolist() == []
    check_registry_is_the_ledger(ws)
    check_absent(outcome.out, "S1\x006", "S1\x00", "OP0\x7f01")


def test_validate_lists_the_reason_without_the_value(tmp_path):
    batch = make_batch(2, batch=1)
    procedures = batch.procedures.astype(object).copy()
    procedures.loc[1, "site_id"] = "S1\x1b[2J6"  # an escape sequence that would clear a terminal
    source = write_csv(tmp_path / "src", procedures, batch.levels, quote_all=True)
    outcome = cli_inprocess("validate", "--source", source)
    assert outcome.returncode == 0, outcome.out
    assert "procedures row 2: site_id holds a control character" in outcome.flat
    check_absent(outcome.out, "\x1b[2J", "S1\x1b")
