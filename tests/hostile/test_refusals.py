"""Issue 9, class 9 (refusals): on every engine a refused input prints ``refused: <reason>`` and the manifest's path,
exits 2, shows no traceback, registers and publishes nothing; the Prefect flow run ends Failed with ``refused:
<reason>`` as its message. Ages 91 to 120 are identifiers (the batch is refused); an age outside 0-120 is an
impossible value (that procedure is quarantined, rule ``range``).

The Prefect engine: one fresh process (``driver``) runs the CLI's ``run`` on one workspace for each kind (an
impossible age, which publishes, then a missing column, an e-mail, an age of 117, an empty file, a truncated file, a
Latin-1 file), and the flow runs are read from Prefect's database in the workspace. The local engine runs
in-process on a copy of a workspace that already holds a published batch, for many more variants (CSV, Parquet,
SQLite)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from tests.conftest import make_batch
from tests.hostile._support import (
    Outcome,
    check_absent,
    check_accounting,
    check_no_traceback,
    check_registry_is_the_ledger,
    cli_inprocess,
    driver,
    ledger,
    published,
    write_csv,
    write_parquet,
    write_sqlite,
)

LOCAL = ("--engine", "local", "--no-models")
EMAIL = "jane.doe.ward7@example.org"
MRN = "MRN 00731942"
FREE_TEXT = "Bérénice Quixley"   # a free-text cell of the Latin-1 file: never shown
HIDDEN = "Quixley"
RUN_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")


def _frames(n: int = 4, batch: int = 1, start: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    b = make_batch(n, batch=batch, start=start)
    return b.procedures.copy(), b.levels.copy()


def _shown(outcome: Outcome) -> str:
    """What the user reads, without paths and run ids (which may hold any digits)."""
    return " ".join(word for word in RUN_ID.sub(" ", outcome.out).split() if "/" not in word)


def check_refused(outcome: Outcome, ws: Path, words: str, before: str | None, *hidden: str) -> dict:
    """Exit 2, ``refused:`` with ``words``, the manifest named and refused, rows accounted, nothing published, no
    traceback, none of ``hidden`` shown."""
    assert outcome.returncode == 2, outcome.out
    check_no_traceback(outcome)
    text = outcome.flat
    assert "refused:" in text and words in text, outcome.out
    assert "nothing was registered" in text, outcome.out
    manifest = outcome.manifest()
    assert manifest["status"] == "refused" and words in " ".join(manifest["reason"].split()), manifest["reason"]
    check_accounting(manifest)
    assert all(counts["rows_accepted"] == 0 for counts in manifest["tables"].values()), manifest["tables"]
    assert published(ws) == before
    check_absent(_shown(outcome), *hidden)
    check_absent(manifest["reason"], *hidden)
    check_absent(json.dumps(manifest), *[value for value in hidden if not value.isdigit()])
    check_registry_is_the_ledger(ws)
    return manifest


def check_quarantined_by_range(outcome: Outcome, ws: Path, *, rows_in: int, quarantined: int) -> dict:
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    assert f"procedures rows quarantined by rule: range {quarantined}" in outcome.flat, outcome.out
    assert "refused:" not in outcome.flat
    manifest = outcome.manifest()
    check_accounting(manifest)
    procedures = manifest["tables"]["procedures"]
    assert manifest["status"] == "ok"
    assert (procedures["rows_in"], procedures["rows_quarantined"]) == (rows_in, quarantined), procedures
    assert procedures["quarantine_rules"] == {"range": quarantined}, procedures
    assert published(ws) == manifest["run_id"]
    check_registry_is_the_ledger(ws)
    return manifest


# --------------------------------------------------------------------------------------------- the sources

def src_missing_columns(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    return write_csv(root, p.drop(columns=["age_years", "sex"]), l)


def src_missing_level_column(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    return write_csv(root, p, l.drop(columns=["cement_volume_ml"]))


def src_email_free_text(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    p["notes"] = ["ok", f"call {EMAIL} re follow-up", "x", "y"]
    return write_csv(root, p, l)


def src_email_in_id(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    p["site_id"] = p["site_id"].astype(object)
    p.loc[2, "site_id"] = EMAIL
    return write_csv(root, p, l)


def src_mrn_value(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    p["comment"] = ["none", MRN, "x", "y"]
    return write_csv(root, p, l)


def src_mrn_column(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    p["mrn"] = ["A731942", "A731943", "A731944", "A731945"]
    return write_csv(root, p, l)


def _age(value, *, column: str = "age_years", fmt: str = "csv"):
    def build(root: Path, batch: int) -> Path:
        p, l = _frames(batch=batch, start=batch * 10)
        if column not in p:
            p[column] = [70, 71, 72, 73]
        p[column] = p[column].astype(object if isinstance(value, str) else float if isinstance(value, float) else int)
        p.loc[1, column] = value
        return write_parquet(root, p, l) if fmt == "parquet" else write_csv(root, p, l)
    return build


def src_age_and_bad_sex(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    p["sex"] = p["sex"].astype(object)
    p.loc[1, ["sex", "age_years"]] = ["zz", 117]
    return write_csv(root, p, l)


def src_empty_procedures(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    folder = write_csv(root, p, l)
    (folder / "procedures.csv").write_bytes(b"")
    return folder


def src_empty_levels(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    folder = write_csv(root, p, l)
    (folder / "levels.csv").write_bytes(b"")
    return folder


def src_header_only(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    return write_csv(root, p.iloc[:0], l)


def _cut(table: str, cut, *, quote_all: bool = False, notes: list[str] | None = None):
    """The CSV of ``table`` cut: ``cut(data) -> data``."""
    def build(root: Path, batch: int) -> Path:
        p, l = _frames(batch=batch, start=batch * 10)
        if notes is not None:
            p["notes"] = notes
        folder = write_csv(root, p, l, quote_all=quote_all)
        path = folder / f"{table}.csv"
        path.write_bytes(cut(path.read_bytes()))
        return folder
    return build


def _latin1(table: str = "procedures", *, rows: int = 4):
    def build(root: Path, batch: int) -> Path:
        p, l = _frames(rows, batch=batch, start=batch * 100_000)
        p["notes"] = ["ok"] * (rows - 1) + [FREE_TEXT]  # the one non-ASCII cell is the last row's
        folder = write_csv(root, p, l)
        path = folder / f"{table}.csv"
        if table == "levels":
            l["leakage_sites"] = l["leakage_sites"].astype(object)
            l.to_csv(path, index=False)
            path.write_bytes(path.read_bytes().replace(b"intradiscal", "intradiscàl".encode("latin-1"), 1))
        else:
            path.write_bytes(path.read_text(encoding="utf-8").encode("latin-1"))
        return folder
    return build


def src_utf16(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    folder = write_csv(root, p, l)
    path = folder / "procedures.csv"
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))
    return folder


def src_parquet_truncated(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    folder = write_parquet(root, p, l)
    path = folder / "procedures.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return folder


def src_sqlite_truncated(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    path = write_sqlite(root / "extract.sqlite", p, l)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def src_sqlite_not_utf8(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    p["notes"] = ["a", "b", "c", "d"]
    path = write_sqlite(root / "extract.sqlite", p, l)
    with sqlite3.connect(path) as connection:  # 'Bérénice Quixley' in Latin-1 bytes, stored as TEXT
        connection.execute("UPDATE procedures SET notes = CAST(? AS TEXT) WHERE procedure_id = ?",
                           (FREE_TEXT.encode("latin-1"), p["procedure_id"].iloc[1]))
    return path


def src_parquet_binary_not_utf8(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    table = pa.Table.from_pandas(p, preserve_index=False)
    table = table.append_column("notes", pa.array([b"a", FREE_TEXT.encode("latin-1"), b"b", b"c"], pa.binary()))
    return write_parquet(root, table, l)


def src_parquet_dictionary_binary_not_utf8(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    table = pa.Table.from_pandas(p, preserve_index=False)
    notes = pa.array([b"a", FREE_TEXT.encode("latin-1"), b"b", b"c"], pa.binary()).dictionary_encode()
    return write_parquet(root, table.append_column("notes", notes), l)


def src_parquet_binary_view_not_utf8(root: Path, batch: int) -> Path:
    p, l = _frames(batch=batch, start=batch * 10)
    table = pa.Table.from_pandas(p, preserve_index=False)
    notes = pa.array([b"a", FREE_TEXT.encode("latin-1"), b"b", b"c"], pa.binary_view())
    return write_parquet(root, table.append_column("notes", notes), l)


def src_sqlite_not_utf8_in_an_identifier_named_column(root: Path, batch: int) -> Path:
    """The column's name is an e-mail address: the refusal must not print it either."""
    p, l = _frames(batch=batch, start=batch * 10)
    p[IDENTIFIER_NAME] = ["a", "b", "c", "d"]
    path = write_sqlite(root / "extract.sqlite", p, l)
    with sqlite3.connect(path) as connection:
        connection.execute(f'UPDATE procedures SET "{IDENTIFIER_NAME}" = CAST(? AS TEXT) WHERE procedure_id = ?',
                           (FREE_TEXT.encode("latin-1"), p["procedure_id"].iloc[1]))
    return path


IDENTIFIER_NAME = "jane.doe@hospital.example"


# ------------------------------------------------------------------------------------------ the Prefect engine

PREFECT_DRIVER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from pipelines.cli import app

    workspace, cases = sys.argv[1], json.loads(sys.argv[2])
    for name, source in cases:
        for stream in (sys.stdout, sys.stderr):
            print(f"\\n=== CASE {name}", file=stream, flush=True)
        try:
            app(["run", "--source", source, "--workspace", workspace, "--no-models"], prog_name="cementrisk")
            code = 0
        except SystemExit as error:
            code = error.code if isinstance(error.code, int) else 1
        sys.stderr.flush()
        pointer = Path(workspace, "published.json")
        print("=== PUBLISHED " + json.dumps(json.loads(pointer.read_text())["run_id"] if pointer.exists() else None))
        print("=== EXIT " + json.dumps(code), flush=True)
""")

PREFECT_CASES = [  # name, source builder, batch
    ("age_range", None, 2),
    ("missing_column", src_missing_columns, 3),
    ("email", src_email_free_text, 4),
    ("age_identifier", _age(117), 5),
    ("empty_file", src_empty_procedures, 6),
    ("truncated", _cut("procedures", lambda data: data[:-40]), 7),
    ("latin1", _latin1(), 8),
]


def src_age_range(root: Path, batch: int) -> Path:
    """Ages 150 and -4 on two of five procedures: impossible values, not identifiers."""
    p, l = _frames(5, batch=batch, start=batch * 10)
    p.loc[1, "age_years"], p.loc[3, "age_years"] = 150, -4
    return write_csv(root, p, l)


@pytest.fixture(scope="module")
def prefect_story(tmp_path_factory):
    root = tmp_path_factory.mktemp("refusals-prefect")
    ws = root / "ws"
    cases = [(name, str((build or src_age_range)(root / name, batch))) for name, build, batch in PREFECT_CASES]
    done = driver(PREFECT_DRIVER, str(ws), json.dumps(cases), timeout=600)
    outs = re.split(r"^=== CASE (\S+)$", done.stdout, flags=re.M)
    errs = re.split(r"^=== CASE (\S+)$", done.stderr, flags=re.M)
    stdout, stderr = dict(zip(outs[1::2], outs[2::2])), dict(zip(errs[1::2], errs[2::2]))
    outcomes, pointers = {}, {}
    for name, _ in cases:
        assert name in stdout, f"case {name} did not run:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        code = re.search(r"^=== EXIT (-?\d+)$", stdout[name], flags=re.M)
        pointer = re.search(r"^=== PUBLISHED (.*)$", stdout[name], flags=re.M)
        assert code and pointer, f"case {name} did not end:\n{stdout[name]}\n{stderr.get(name, '')}"
        outcomes[name] = Outcome(int(code.group(1)), stdout[name][:pointer.start()], stderr.get(name, ""))
        pointers[name] = json.loads(pointer.group(1))
    with sqlite3.connect(ws / ".prefect" / "prefect.db") as connection:
        rows = connection.execute("SELECT f.parameters, f.state_type, s.message FROM flow_run f "
                                  "LEFT JOIN flow_run_state s ON s.id = f.state_id").fetchall()
    runs = {json.loads(p).get("run_id"): {"state": state, "message": message} for p, state, message in rows}
    return {"ws": ws, "outcomes": outcomes, "published": pointers, "runs": runs}


PREFECT_REFUSALS = [
    ("missing_column", "table procedures: required column(s) absent: age_years, sex", ()),
    ("email", "procedures.notes: e-mail address", (EMAIL, "jane.doe")),
    ("age_identifier", "procedures.age_years: age over 89", ("117",)),
    ("empty_file", "procedures.csv is empty", ()),
    ("truncated", "procedures.csv is not well-formed CSV", ()),
    ("latin1", "procedures.csv is not UTF-8 text", (HIDDEN,)),
]


@pytest.mark.parametrize(("name", "words", "hidden"), PREFECT_REFUSALS, ids=[c[0] for c in PREFECT_REFUSALS])
def test_prefect_a_refused_input_exits_2_and_ends_the_flow_run_failed_with_its_reason(prefect_story, name, words,
                                                                                      hidden):
    outcome = prefect_story["outcomes"][name]
    ws = prefect_story["ws"]
    before = prefect_story["published"]["age_range"]
    assert prefect_story["published"][name] == before  # nothing published by the refusal
    manifest = check_refused(outcome, ws, words, before, *hidden)
    flow = prefect_story["runs"][manifest["run_id"]]
    assert flow["state"] == "FAILED", flow
    assert flow["message"] == f"refused: {manifest['reason']}", flow
    batch = {case: b for case, _, b in PREFECT_CASES}[name]
    assert str(batch) not in ledger(ws)["batches"]


def test_prefect_impossible_ages_are_quarantined_by_range_and_the_rest_is_registered_and_published(prefect_story):
    outcome = prefect_story["outcomes"]["age_range"]
    ws = prefect_story["ws"]
    assert outcome.returncode == 0, outcome.out
    check_no_traceback(outcome)
    assert "procedures rows quarantined by rule: range 2" in outcome.flat, outcome.out
    manifest = outcome.manifest()
    check_accounting(manifest)
    procedures = manifest["tables"]["procedures"]
    assert (procedures["rows_in"], procedures["rows_accepted"], procedures["rows_quarantined"]) == (5, 3, 2)
    assert manifest["batches_loaded"] == [2]
    assert prefect_story["published"]["age_range"] == manifest["run_id"]
    assert prefect_story["runs"][manifest["run_id"]]["state"] == "COMPLETED"
    check_registry_is_the_ledger(ws)


# -------------------------------------------------------------------------------------------- the local engine

@pytest.fixture(scope="module")
def base_workspace(tmp_path_factory):
    """A workspace holding batch 1, published."""
    root = tmp_path_factory.mktemp("refusals-local")
    ws = root / "ws"
    first = cli_inprocess("run", "--source", write_csv(root / "b1", *_frames(3, batch=1, start=1)), "--workspace", ws,
                          *LOCAL)
    assert first.returncode == 0, first.out
    return ws


def _local(base_workspace, tmp_path, build, batch: int = 5) -> tuple[Outcome, Path, str | None]:
    ws = tmp_path / "ws"
    shutil.copytree(base_workspace, ws)
    before = published(ws)
    outcome = cli_inprocess("run", "--source", build(tmp_path / "source", batch), "--workspace", ws, *LOCAL)
    return outcome, ws, before


LOCAL_REFUSALS = [
    pytest.param(src_missing_columns, "table procedures: required column(s) absent: age_years, sex", (),
                 id="missing-procedure-columns"),
    pytest.param(src_missing_level_column, "table levels: required column(s) absent: cement_volume_ml", (),
                 id="missing-level-column"),
    pytest.param(src_email_free_text, "procedures.notes: e-mail address", (EMAIL, "jane.doe"), id="email-free-text"),
    pytest.param(src_email_in_id, "procedures.site_id: e-mail address", (EMAIL,), id="email-in-id-column"),
    pytest.param(src_mrn_value, "procedures.comment: medical record number", ("00731942",), id="mrn-like-value"),
    pytest.param(src_mrn_column, "procedures.mrn: medical record number", ("A731942",), id="mrn-column"),
    pytest.param(_age(91), "procedures.age_years: age over 89", (), id="age-91"),
    pytest.param(_age(120), "procedures.age_years: age over 89", ("120",), id="age-120"),
    pytest.param(_age("117.0"), "procedures.age_years: age over 89", ("117",), id="age-117.0-as-text"),
    pytest.param(_age(117.0, fmt="parquet"), "procedures.age_years: age over 89", ("117",), id="age-117-parquet-float"),
    pytest.param(_age(117, column="patient_age"), "procedures.patient_age: age over 89", ("117",),
                 id="age-117-unknown-column"),
    pytest.param(src_age_and_bad_sex, "procedures.age_years: age over 89", ("117",), id="age-117-on-a-bad-row"),
    pytest.param(src_empty_procedures, "table procedures: procedures.csv is empty", (), id="empty-procedures-file"),
    pytest.param(src_empty_levels, "table levels: levels.csv is empty", (), id="empty-levels-file"),
    pytest.param(src_header_only, "is empty (no rows)", (), id="header-only"),
    pytest.param(_cut("procedures", lambda data: data[:-40]), "procedures.csv is not well-formed CSV", (),
                 id="truncated-mid-row"),
    pytest.param(_cut("levels", lambda data: data[: data.rindex(b"\n", 0, -1) - 25]), "levels.csv is not well-formed CSV",
                 (), id="truncated-levels-mid-row"),
    pytest.param(src_parquet_truncated, "(truncated or corrupt?)", (), id="truncated-parquet"),
    pytest.param(src_sqlite_truncated, "cannot read database", (), id="truncated-sqlite"),
    pytest.param(_latin1(), "table procedures: procedures.csv is not UTF-8 text", (HIDDEN,), id="latin1"),
    pytest.param(_latin1(rows=30_000), "table procedures: procedures.csv is not UTF-8 text", (HIDDEN,),
                 id="latin1-only-in-the-last-of-30000-rows"),
    pytest.param(_latin1("levels"), "table levels: levels.csv is not UTF-8 text", (), id="latin1-levels"),
    pytest.param(src_utf16, "procedures.csv is not UTF-8 text", (), id="utf16"),
    pytest.param(_cut("procedures", lambda data: data[:-3], quote_all=True), "procedures.csv is not well-formed CSV",
                 (), id="truncated-inside-the-last-quoted-field"),
    pytest.param(_cut("procedures", lambda data: data[: data.index(b"line one") + 8], quote_all=True,
                      notes=["a", "line one\nline two", "c", "d"]),
                 "procedures.csv is not well-formed CSV", ("line one",),
                 id="truncated-inside-a-quoted-multiline-cell"),
    pytest.param(_cut("procedures", lambda data: data[: data.index(b"line one") + 8], quote_all=True,
                      notes=["x" * 200_000, "line one\nline two", "c", "d"]),
                 "procedures.csv is not well-formed CSV", ("line one",),
                 id="truncated-inside-a-quoted-cell-after-a-cell-longer-than-pythons-csv-limit"),
    pytest.param(src_sqlite_not_utf8, "UTF-8", (HIDDEN,), id="sqlite-text-not-utf8"),
    pytest.param(src_parquet_binary_not_utf8, "UTF-8", (HIDDEN,), id="parquet-binary-not-utf8"),
    pytest.param(src_parquet_dictionary_binary_not_utf8, "UTF-8", (HIDDEN,), id="parquet-dictionary-binary-not-utf8"),
    pytest.param(src_parquet_binary_view_not_utf8, "UTF-8", (HIDDEN,), id="parquet-binary-view-not-utf8"),
    pytest.param(src_sqlite_not_utf8_in_an_identifier_named_column, "not UTF-8", (HIDDEN, IDENTIFIER_NAME),
                 id="sqlite-not-utf8-in-a-column-named-like-an-e-mail"),
]


@pytest.mark.parametrize(("build", "words", "hidden"), LOCAL_REFUSALS)
def test_local_a_refused_input_exits_2_names_the_reason_and_changes_nothing(base_workspace, tmp_path, monkeypatch,
                                                                            build, words, hidden):
    from records import readers
    from records.errors import Retry

    monkeypatch.setattr(readers, "SOURCE_RETRY", Retry(attempts=3, delays=(0.05,)))  # shorter waits, same attempts
    outcome, ws, before = _local(base_workspace, tmp_path, build)
    ledger_before = ledger(base_workspace)["batches"]
    check_refused(outcome, ws, words, before, *hidden)
    assert ledger(ws)["batches"] == ledger_before


@pytest.mark.parametrize(("ages", "quarantined"), [
    pytest.param((150, -1), 2, id="150-and-minus-1"),
    pytest.param((121,), 1, id="121"),
])
def test_local_an_impossible_age_quarantines_its_procedure_by_range(base_workspace, tmp_path, ages, quarantined):
    def build(root: Path, batch: int) -> Path:
        p, l = _frames(5, batch=batch, start=batch * 10)
        for i, age in enumerate(ages):
            p.loc[1 + 2 * i, "age_years"] = age
        return write_csv(root, p, l)

    outcome, ws, before = _local(base_workspace, tmp_path, build)
    manifest = check_quarantined_by_range(outcome, ws, rows_in=5, quarantined=quarantined)
    assert manifest["run_id"] != before and manifest["batches_loaded"] == [5]
    levels = manifest["tables"]["levels"]
    assert levels["quarantine_rules"].get("procedure_quarantined", 0) >= quarantined, levels
