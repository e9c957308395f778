"""Issue 9, class 7: the identifier guard and nested fields, and category values that may be names.

Nested Parquet columns (struct ``meta{mrn, patient}``, list, large and fixed-size list, map, a list of structs, a
nested contract column, one that is all null) cannot be screened column by column: they are refused as a whole,
exit 2, naming the table, the column and its kind, never a value; a flat dictionary-encoded column is not nested.
An invalid category value (which may be a name, ``Jane Doe``) is quarantined by position and never echoed: not by
validate, not by run, not in the manifest, the ledger, the report or any other file outside the quarantine; a
value that looks like a name (``Doe, Jane``) refuses the batch naming the column and the kind.

All in-process; each refusal runs on a copy of a workspace with one published run, which must stay published."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_batch
from tests.hostile._support import (
    published_base,
    check_absent,
    check_accounting,
    check_no_traceback,
    check_registry_is_the_ledger,
    cli_inprocess,
    dataset_rows,
    files_holding,
    ledger,
    published,
    write_csv,
    write_sqlite,
)

LOCAL = ("--engine", "local", "--no-models")
EXAMPLE_CASE = Path(__file__).resolve().parents[2] / "data" / "sample" / "planned_case.json"
SECRETS = ("Jane Doe", "12345678", "MRN 1234567", "John Roe")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return published_base(tmp_path_factory.mktemp("guard-base"))


@pytest.fixture
def ws(base, tmp_path):
    return Path(shutil.copytree(base[0], tmp_path / "ws"))


# --- nested columns -------------------------------------------------------------------------------------------

N = 3
NESTED = {
    # label: (table, column, arrow array of N cells, kind in the message)
    "struct meta{mrn, patient}": ("procedures", "meta",
                                  pa.array([{"mrn": "12345678", "patient": "Jane Doe"}] * N), "struct"),
    "list": ("procedures", "meta", pa.array([["Jane Doe", "John Roe"]] * N), "list"),
    "large list": ("procedures", "meta", pa.array([["Jane Doe"]] * N, type=pa.large_list(pa.string())), "list"),
    "fixed-size list": ("procedures", "meta", pa.array([["Jane Doe", "12345678"]] * N,
                                                       type=pa.list_(pa.string(), 2)), "list"),
    "map": ("procedures", "meta", pa.array([[("mrn", "MRN 1234567"), ("patient", "Jane Doe")]] * N,
                                           type=pa.map_(pa.string(), pa.string())), "map"),
    "list of structs": ("procedures", "meta", pa.array([[{"patient": "Jane Doe"}]] * N), "list"),
    "struct, all null": ("procedures", "meta", pa.nulls(N, pa.struct([("patient", pa.string())])), "struct"),
    "contract column as a struct": ("procedures", "etiology",
                                    pa.array([{"value": "osteoporotic", "patient": "Jane Doe"}] * N), "struct"),
    "levels list column": ("levels", "leakage_sites", None, "list"),
}


def _nested_source(folder: Path, table: str, column: str, array) -> Path:
    batch = make_batch(N, batch=2, start=20)
    tables = {name: pa.Table.from_pandas(frame, preserve_index=False)
              for name, frame in (("procedures", batch.procedures), ("levels", batch.levels))}
    target = tables[table]
    if array is None:  # every level's leakage_sites as a list of texts
        array = pa.array([["intradiscal", "Jane Doe"]] * target.num_rows)
    if column in target.column_names:
        target = target.set_column(target.column_names.index(column), column, array)
    else:
        target = target.append_column(column, array)
    tables[table] = target
    folder.mkdir(parents=True)
    for name, arrow in tables.items():
        pq.write_table(arrow, folder / f"{name}.parquet")
    return folder


@pytest.mark.parametrize("label", list(NESTED), ids=list(NESTED))
def test_a_nested_column_is_refused_naming_it_and_no_value(tmp_path, ws, base, label):
    table, column, array, kind = NESTED[label]
    source = _nested_source(tmp_path / "src", table, column, array)
    before = ledger(ws)
    checked = cli_inprocess("validate", "--source", source)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    for result in (checked, outcome):
        assert result.returncode == 2, result.out
        check_no_traceback(result)
        assert f"refused: table {table}: {column} is a {kind} column; the contract has flat columns only" \
               in result.flat, result.out
        check_absent(result.out, *SECRETS)
    assert "nothing was registered; manifest:" in outcome.flat
    manifest = outcome.manifest()
    assert manifest["status"] == "refused" and f"{column} is a {kind} column" in manifest["reason"]
    check_accounting(manifest)
    check_absent(json.dumps(manifest), *SECRETS)
    check_absent(json.dumps(ledger(ws)), *SECRETS)
    assert ledger(ws)["batches"] == before["batches"]
    assert published(ws) == base[1]
    check_registry_is_the_ledger(ws)
    assert files_holding(ws, {"Jane Doe", "John Roe", "MRN 1234567"}) == []  # nothing of it was taken


def test_a_nested_column_whose_name_looks_like_an_identifier_is_named_by_position(tmp_path, ws, base):
    source = _nested_source(tmp_path / "src", "procedures", "jane.doe@example.com",
                            pa.array([{"patient": "Jane Doe"}] * N))
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "column 25 (name withheld) is a struct column" in outcome.flat, outcome.out
    check_absent(outcome.out.lower(), "jane.doe", "example.com", "jane doe")
    manifest = outcome.manifest()
    check_accounting(manifest)
    check_absent(json.dumps(manifest).lower(), "jane.doe", "jane doe")
    assert published(ws) == base[1]


def test_a_dictionary_encoded_text_column_is_flat_and_taken(tmp_path, ws):
    batch = make_batch(N, batch=2, start=20)
    procedures = pa.Table.from_pandas(batch.procedures, preserve_index=False)
    position = procedures.column_names.index("etiology")
    procedures = procedures.set_column(position, "etiology", procedures.column("etiology").dictionary_encode())
    folder = tmp_path / "src"
    folder.mkdir()
    pq.write_table(procedures, folder / "procedures.parquet")
    pq.write_table(pa.Table.from_pandas(batch.levels, preserve_index=False), folder / "levels.parquet")
    assert pa.types.is_dictionary(pq.read_schema(folder / "procedures.parquet").field("etiology").type)
    outcome = cli_inprocess("run", "--source", folder, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["batches_loaded"] == [2]
    assert manifest["tables"]["procedures"]["rows_accepted"] == N
    assert published(ws) == manifest["run_id"]
    check_registry_is_the_ledger(ws)


@pytest.mark.parametrize(("label", "first", "later", "said"), [
    pytest.param("struct only in a later part", None, ("meta", pa.array([{"patient": "Jane Doe"}] * 2)),
                 "table procedures: meta is a struct column", id="struct only in a later part"),
    pytest.param("identifier column only in a later part", None,
                 ("patient_email", pa.array(["jane.doe@example.com"] * 2)),
                 "procedures.patient_email: e-mail address (found by column name)", id="identifier column only in a later part"),
    pytest.param("text in one part, struct in another", ("meta", pa.array(["a", "b"])),
                 ("meta", pa.array([{"patient": "Jane Doe"}] * 2)), "table procedures: meta is a struct column",
                 id="text in one part, struct in another"),
])
def test_every_part_file_of_a_parquet_table_is_checked(tmp_path, ws, base, label, first, later, said):
    batch = make_batch(4, batch=2, start=20)
    procedures = pa.Table.from_pandas(batch.procedures, preserve_index=False)
    folder = tmp_path / "src"
    (folder / "procedures").mkdir(parents=True)
    part0, part1 = procedures.slice(0, 2), procedures.slice(2, 2)
    if first is not None:
        part0 = part0.append_column(*first)
    part1 = part1.append_column(*later)
    pq.write_table(part0, folder / "procedures" / "part-0.parquet")
    pq.write_table(part1, folder / "procedures" / "part-1.parquet")
    pq.write_table(pa.Table.from_pandas(batch.levels, preserve_index=False), folder / "levels.parquet")
    before = ledger(ws)["batches"]
    checked = cli_inprocess("validate", "--source", folder)
    outcome = cli_inprocess("run", "--source", folder, "--workspace", ws, *LOCAL)
    for result in (checked, outcome):
        check_no_traceback(result)
        check_absent(result.out, "Jane Doe", "jane.doe@example.com")
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert ledger(ws)["batches"] == before and published(ws) == base[1], "the batch was registered and published"
    for result in (checked, outcome):
        assert result.returncode == 2, result.out
        assert said in result.flat, result.out
    assert manifest["status"] == "refused"


@pytest.mark.parametrize("how", ["a dictionary-encoded column in one part only",
                                 "int32 in one part, int64 in the other", "a column only the later part has"])
def test_part_files_that_differ_only_in_encoding_or_width_are_read_whole(tmp_path, ws, base, how):
    """What writers differ in without meaning anything (pandas categoricals, integer widths, an extra column the
    contract does not know): the parts are one table, every row taken, the extra column dropped and named."""
    batch = make_batch(4, batch=2, start=20)
    procedures = pa.Table.from_pandas(batch.procedures, preserve_index=False)
    part0, part1 = procedures.slice(0, 2), procedures.slice(2, 2)
    if how.startswith("a dictionary"):
        i = part1.schema.get_field_index("sex")
        part1 = part1.set_column(i, "sex", pc.dictionary_encode(part1.column("sex")))
    elif how.startswith("int32"):
        i = part1.schema.get_field_index("age_years")
        part1 = part1.set_column(i, "age_years", part1.column("age_years").cast(pa.int32()))
    else:
        part1 = part1.append_column("ward_code", pa.array(["W1", "W2"]))
    folder = tmp_path / "src"
    (folder / "procedures").mkdir(parents=True)
    pq.write_table(part0, folder / "procedures" / "part-0.parquet")
    pq.write_table(part1, folder / "procedures" / "part-1.parquet")
    pq.write_table(pa.Table.from_pandas(batch.levels, preserve_index=False), folder / "levels.parquet")
    outcome = cli_inprocess("run", "--source", folder, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["tables"]["procedures"]["rows_accepted"] == 4
    assert manifest["tables"]["procedures"]["columns_dropped"] == (["ward_code"] if how.startswith("a column") else [])
    assert published(ws) == manifest["run_id"]
    check_registry_is_the_ledger(ws)


# --- category values that are names ---------------------------------------------------------------------------

def _named_batch():
    """Batch 2: 'Jane Doe' as the etiology of row 2 and the sex of row 3, 'John Roe' as a level's morphology."""
    batch = make_batch(4, batch=2, start=20)
    procedures = batch.procedures.astype(object).copy()
    procedures.loc[1, "etiology"] = "Jane Doe"
    procedures.loc[2, "sex"] = "Jane Doe"
    levels = batch.levels.astype(object).copy()
    first = levels.index[levels["procedure_id"] == "P00023"][0]  # the 4th procedure's first level
    levels.loc[first, "morphology"] = "John Roe"
    return procedures, levels, levels.index.get_loc(first) + 1


@pytest.mark.parametrize("fmt", ["csv", "parquet", "sqlite"])
def test_an_invalid_category_that_is_a_name_is_quarantined_and_never_echoed(tmp_path, ws, base, fmt):
    procedures, levels, level_row = _named_batch()
    if fmt == "csv":
        source = write_csv(tmp_path / "src", procedures, levels)
    elif fmt == "sqlite":
        source = write_sqlite(tmp_path / "src.sqlite", procedures, levels)
    else:
        folder = tmp_path / "src"
        folder.mkdir()
        for name, frame in (("procedures", procedures), ("levels", levels)):
            frame.astype(object).where(frame.notna(), None).to_parquet(folder / f"{name}.parquet", index=False)
        source = folder
    checked = cli_inprocess("validate", "--source", source, "--show", "50")
    assert checked.returncode == 0, checked.out
    check_no_traceback(checked)
    for reason in ("procedures row 2: etiology must be one of osteoporotic, malignant, traumatic",
                   "procedures row 3: sex must be one of f, m",
                   f"levels row {level_row}: morphology must be one of wedge, biconcave, crush"):
        assert reason in checked.flat, checked.out
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    manifest = outcome.manifest()
    check_accounting(manifest)
    assert manifest["status"] == "ok" and manifest["batches_loaded"] == [2]
    assert manifest["tables"]["procedures"]["rows_quarantined"] == 3  # two by category, one for its level
    assert manifest["tables"]["procedures"]["quarantine_rules"]["category"] == 2
    assert set(dataset_rows(ws)["procedure_id"]) == {"P00001", "P00002", "P00003", "P00020"}
    assert published(ws) == manifest["run_id"]
    check_registry_is_the_ledger(ws)
    for text in (checked.out, outcome.out, json.dumps(manifest), json.dumps(ledger(ws))):
        check_absent(text, "Jane Doe", "John Roe", "Jane", "Roe")
    # only the quarantine files hold the values: not the report, metrics, QI table, submission or scored store
    holding = files_holding(ws, {"Jane Doe", "John Roe"})
    assert holding and all("quarantine" in Path(path).relative_to(ws).parts for path, _ in holding), holding


def test_a_value_that_looks_like_a_name_refuses_the_batch_naming_column_and_kind(tmp_path, ws, base):
    procedures, levels, _ = _named_batch()
    procedures.loc[3, "etiology"] = "Doe, Jane"
    source = write_csv(tmp_path / "src", procedures, levels)
    before = ledger(ws)["batches"]
    checked = cli_inprocess("validate", "--source", source)
    outcome = cli_inprocess("run", "--source", source, "--workspace", ws, *LOCAL)
    for result in (checked, outcome):
        assert result.returncode == 2, result.out
        check_no_traceback(result)
        assert "refused: batch refused: it carries identifiers (HIPAA Safe Harbor)" in result.flat
        assert "procedures.etiology: name (found in 1 row by value)" in result.flat
        check_absent(result.out, "Doe, Jane", "Jane Doe", "John Roe", "Jane", "Roe")
    manifest = outcome.manifest()
    assert manifest["status"] == "refused"
    check_accounting(manifest)
    assert manifest["tables"]["procedures"]["rows_refused"] == 4
    refusal = ledger(ws)["refused"]["2"]["refusals"][-1]
    assert refusal["run_id"] == manifest["run_id"] and "procedures.etiology: name" in refusal["reason"]
    assert ledger(ws)["batches"] == before
    assert published(ws) == base[1]
    assert files_holding(ws, {"Doe, Jane", "Jane Doe", "John Roe"}) == []


@pytest.mark.parametrize(("label", "change", "said"), [
    ("category that is a name", lambda d: d.update(etiology="Jane Doe"),
     "etiology must be one of osteoporotic, malignant, traumatic"),
    ("level category that is a name", lambda d: d["levels"][0].update(cement_type="John Roe"), "cement_type"),
    ("nested patient object", lambda d: d.update(patient={"name": "Jane Doe", "mrn": "12345678"}),
     "patient must be a single value"),
    ("struct where a value belongs", lambda d: d.update(etiology={"mrn": "MRN 1234567"}),
     "etiology must be a single value"),
    ("list where a value belongs", lambda d: d["levels"][1].update(vertebra=["l1", "Jane Doe"]),
     "vertebra must be a single value"),
], ids=["category that is a name", "level category that is a name", "nested patient object",
        "struct where a value belongs", "list where a value belongs"])
def test_a_planned_case_never_echoes_a_name(tmp_path, label, change, said):
    data = json.loads(EXAMPLE_CASE.read_text(encoding="utf-8"))
    change(data)
    case = tmp_path / "case.json"
    case.write_text(json.dumps(data), encoding="utf-8")
    outcome = cli_inprocess("plan", "--case", case, "--workspace", tmp_path / "ws")
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    assert "refused: case.json" in outcome.flat and said in outcome.flat, outcome.out
    check_absent(outcome.out, *SECRETS)
    assert not case.with_suffix(".plan.html").exists()
    assert published(tmp_path / "ws") is None
