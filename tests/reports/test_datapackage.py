"""The submission package as a Frictionless Data Package: frictionless (library and command line) finds it valid, its
Table Schema is the record contract's, frictionless finds what was tampered with, and the package's own check
guards datapackage.json and tableschema.json."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import frictionless
import pandas as pd
import pytest

from records.schema import (EXTRACT_BATCH, ID_PATTERN, LEAKAGE_SITE_NAMES, LEVELS, OPERATOR_ID, PROCEDURE_ID,
                            PROCEDURES, SEX, SITE_ID, SITE_SEPARATOR, VERTEBRA)
from reports.datapackage import (DATAPACKAGE_FILE, DICTIONARY_CSV, DICTIONARY_MD, KEY, MANIFEST_FILE, RISK_COLUMNS,
                                 SCHEMA_FILE, TABLE_SCHEMA_FILE)
from reports.submission import validate_submission
from tests.reports.test_submission import (LEAK_ANY, copy_package, data_files, edit_data, flip_byte, reseal,
                                           set_cell, versions, write)
from tests.reports.test_submission import package, sample  # noqa: F401  (fixtures: the package of a sample slice)

CONTRACT_TYPES = {"id": "string", "category": "string", "sites": "string", "int": "integer", "float": "number",
                  "bool": "boolean"}
"""Table Schema's name for each kind of contract column, written here independently of the package code."""
PER_BATCH = 12  # procedures from each of two batches: above the small-cell limit, and fast to validate


@pytest.fixture(scope="module")
def small_package(sample, tmp_path_factory) -> Path:
    """A package of two batches of 12 procedures each, from the sample."""
    procedures, levels = sample
    few = pd.concat([rows.head(PER_BATCH) for _, rows in procedures.groupby(EXTRACT_BATCH)][:2], ignore_index=True)
    out_dir = tmp_path_factory.mktemp("small") / "submission"
    write(out_dir, few, levels[levels[PROCEDURE_ID].isin(few[PROCEDURE_ID])].reset_index(drop=True))
    return out_dir


def validate(out_dir: Path) -> frictionless.Report:
    """frictionless' report on a package, any warning it raises made an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return frictionless.validate(str(out_dir / DATAPACKAGE_FILE))


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_sample_package_is_a_valid_data_package(package):
    report = validate(package)
    assert report.valid, report.flatten(["taskName", "rowNumber", "fieldName", "type", "note"])
    assert report.warnings == [] and all(task.warnings == [] for task in report.tasks)
    tables = {task.name: task for task in report.tasks if task.type == "table"}
    assert set(tables) == {DICTIONARY_CSV, *(f"{EXTRACT_BATCH}_{f.stem.split('=')[1]}" for f in data_files(package))}
    assert all(task.stats["rows"] > 0 for task in tables.values())  # the rows were read and checked, not only hashed


def test_the_frictionless_command_line_finds_it_valid(package):
    checked = subprocess.run([sys.executable, "-m", "frictionless", "validate", "--json", DATAPACKAGE_FILE],
                             cwd=package, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    report = json.loads(checked.stdout)
    assert report["valid"] and report["stats"]["errors"] == 0 and report["stats"]["warnings"] == 0


def test_every_file_but_the_manifest_and_schema_json_is_a_resource_with_its_size_and_sha256(package):
    descriptor = read_json(package / DATAPACKAGE_FILE)
    manifest = read_json(package / MANIFEST_FILE)
    listed = {entry["name"] for entry in manifest["files"]}
    assert DATAPACKAGE_FILE in listed and TABLE_SCHEMA_FILE in listed
    resources = descriptor["resources"]
    assert [r["path"] for r in resources] == [e["name"] for e in manifest["files"]
                                              if e["name"] not in (SCHEMA_FILE, DATAPACKAGE_FILE)]
    assert len({r["name"] for r in resources}) == len(resources)
    for resource in resources:
        content = (package / resource["path"]).read_bytes()
        assert resource["bytes"] == len(content) and resource["hash"] == f"sha256:{hashlib.sha256(content).hexdigest()}"
        assert resource["encoding"] == "utf-8" and resource["format"] == resource["path"].rsplit(".", 1)[1]
    data = [r for r in resources if r["path"].startswith("data/")]
    assert len(data) == len(data_files(package))
    assert all(r["type"] == "table" and r["schema"] == TABLE_SCHEMA_FILE and r["mediatype"] == "text/csv"
               and r["dialect"] == {"delimiter": ",", "header": True, "lineTerminator": "\n"} for r in data)
    assert {r["path"]: r["mediatype"] for r in resources if not r["path"].startswith("data/")} == {
        DICTIONARY_CSV: "text/csv", DICTIONARY_MD: "text/markdown", TABLE_SCHEMA_FILE: "application/json"}


def leaves(node, key=None):
    """(key, value) of every scalar in a JSON document, with the key it sits under (list items: the list's key)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from leaves(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from leaves(v, key)
    else:
        yield key, node


def test_no_identifier_no_count_and_no_time_enters_the_description(sample, package):
    procedures, _ = sample
    identifiers = set(procedures[[PROCEDURE_ID, SITE_ID, OPERATOR_ID]].astype(str).stack())
    for name in (DATAPACKAGE_FILE, TABLE_SCHEMA_FILE):
        text = (package / name).read_text(encoding="utf-8")
        assert not identifiers & set(re.findall(r"[A-Za-z0-9_-]+", text)), name
        assert not {"created", "rows"} & {key for key, _ in leaves(json.loads(text))}, name
    integers = {key for key, value in leaves(read_json(package / DATAPACKAGE_FILE))
                if isinstance(value, int) and not isinstance(value, bool)}
    assert integers == {"bytes"}  # file sizes only: no row, field or procedure count


def test_the_table_schema_is_the_contract(package):
    table_schema = read_json(package / TABLE_SCHEMA_FILE)
    fields = {f["name"]: f for f in table_schema["fields"]}
    columns = [c["name"] for c in read_json(package / SCHEMA_FILE)["columns"]]
    assert list(fields) == columns == pd.read_csv(data_files(package)[0], nrows=0).columns.tolist()
    assert set(fields) == set(PROCEDURES.names) | set(LEVELS.names) | {r.name for r in RISK_COLUMNS}
    assert table_schema["primaryKey"] == list(KEY) and table_schema["missingValues"] == [""]
    for spec in (*PROCEDURES.columns, *LEVELS.columns):
        field = fields[spec.name]
        constraints = field["constraints"]
        assert field["type"] == CONTRACT_TYPES[spec.kind], spec.name
        assert constraints["required"] == (spec.required or spec.name in KEY), spec.name
        assert constraints.get("enum") == (list(spec.categories) or None), spec.name  # in the contract's order
        assert constraints.get("minimum") == spec.low and constraints.get("maximum") == spec.high, spec.name
        if spec.kind == "bool":
            assert (field["trueValues"], field["falseValues"]) == (["true"], ["false"]), spec.name
        if spec.kind == "id":
            assert constraints["pattern"] == ID_PATTERN, spec.name
        assert ("pattern" in constraints) == (spec.kind in ("id", "sites")), spec.name
    pattern = next(fields[spec.name]["constraints"]["pattern"] for spec in LEVELS.columns if spec.kind == "sites")
    assert "(?:" not in pattern  # an XML Schema regular expression, as Table Schema has it
    assert re.fullmatch(pattern, SITE_SEPARATOR.join(LEAKAGE_SITE_NAMES))
    assert not re.fullmatch(pattern, LEAKAGE_SITE_NAMES[0] + SITE_SEPARATOR)
    for risk in RISK_COLUMNS:
        constraints = fields[risk.name]["constraints"]
        assert (constraints["minimum"], constraints["maximum"], constraints["required"]) == (0, 1, True), risk.name


def test_an_unpublished_model_gives_an_optional_risk_field(sample, tmp_path):
    procedures, levels = sample
    few = procedures.head(30)
    write(tmp_path / "out", few, levels[levels[PROCEDURE_ID].isin(few[PROCEDURE_ID])], infection=False)
    fields = {f["name"]: f for f in read_json(tmp_path / "out" / TABLE_SCHEMA_FILE)["fields"]}
    unpublished = [r.name for r in RISK_COLUMNS if versions(infection=False)[r.outcome] is None]
    assert unpublished and all(fields[name]["constraints"]["required"] is False for name in unpublished)
    assert validate(tmp_path / "out").valid


# --- tampering: what frictionless finds ----------------------------------------------------------------------------
def reseal_datapackage(out_dir: Path) -> None:
    """Make datapackage.json's sizes and hashes agree with the files again, so only the content checks can find what
    was changed."""
    descriptor = read_json(out_dir / DATAPACKAGE_FILE)
    for resource in descriptor["resources"]:
        content = (out_dir / resource["path"]).read_bytes()
        resource.update(bytes=len(content), hash=f"sha256:{hashlib.sha256(content).hexdigest()}")
    (out_dir / DATAPACKAGE_FILE).write_text(json.dumps(descriptor, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def edit_first_file(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """Edit the first data file and reseal datapackage.json (not the manifest: frictionless does not read it)."""
    def tamper(out_dir: Path) -> None:
        path = data_files(out_dir)[0]
        data = edit(pd.read_csv(path, dtype=str, keep_default_na=False))
        path.write_bytes(data.to_csv(index=False, lineterminator="\n").encode("utf-8"))
        reseal_datapackage(out_dir)
    return tamper


FRICTIONLESS_TAMPERING = {
    "a category outside its enum": (edit_first_file(set_cell(VERTEBRA, "c7")), {("constraint-error", VERTEBRA)}),
    "a risk above 1": (edit_first_file(set_cell(LEAK_ANY.name, "1.500000")), {("constraint-error", LEAK_ANY.name)}),
    "an empty required cell": (edit_first_file(set_cell(SEX, "")), {("constraint-error", SEX)}),
    "an identifier out of pattern": (edit_first_file(set_cell(SITE_ID, "site 7")), {("constraint-error", SITE_ID)}),
    "a repeated key": (edit_first_file(lambda data: pd.concat([data, data.iloc[[0]]], ignore_index=True)),
                       {("primary-key", None)}),
    "a changed byte": (flip_byte, {("hash-count", None)}),
}


@pytest.mark.parametrize("tamper, expected", FRICTIONLESS_TAMPERING.values(), ids=FRICTIONLESS_TAMPERING.keys())
def test_frictionless_finds_what_was_tampered_with(small_package, tmp_path, tamper, expected):
    assert validate(small_package).valid
    copy = copy_package(small_package, tmp_path / "copy")
    tamper(copy)
    report = validate(copy)
    assert not report.valid
    assert {(error, field) for error, field in report.flatten(["type", "fieldName"])} == expected


# --- the package's own check guards the description -------------------------------------------------------------------
def edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def tamper(out_dir: Path) -> None:
        descriptor = read_json(out_dir / name)
        edit(descriptor)
        (out_dir / name).write_text(json.dumps(descriptor, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return tamper


def loosen_enum(table_schema: dict) -> None:
    next(f for f in table_schema["fields"] if f["name"] == VERTEBRA)["constraints"].pop("enum")


def then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def tamper(out_dir: Path) -> None:
        for step in steps:
            step(out_dir)
    return tamper


OWN_CHECK = {
    "a missing datapackage.json": (lambda d: (d / DATAPACKAGE_FILE).unlink(),
                                   f"{DATAPACKAGE_FILE} is listed in {MANIFEST_FILE} but missing"),
    "an edited datapackage.json": (edit_json(DATAPACKAGE_FILE, lambda d: d.update(description="x")),
                                   f"{DATAPACKAGE_FILE} does not match its SHA-256 in {MANIFEST_FILE}"),
    "an edited datapackage.json, the manifest made to agree": (
        then(edit_json(DATAPACKAGE_FILE, lambda d: d.update(description="x")), reseal),
        f"{DATAPACKAGE_FILE} does not describe this package"),
    "a loosened tableschema.json, datapackage.json and manifest made to agree": (
        then(edit_json(TABLE_SCHEMA_FILE, loosen_enum), reseal_datapackage, reseal),
        f"{TABLE_SCHEMA_FILE} does not describe this package"),
    "a data file changed, the manifest made to agree": (
        edit_data(set_cell(VERTEBRA, "l1")), f"{DATAPACKAGE_FILE} does not describe this package"),
    "a missing tableschema.json": (lambda d: (d / TABLE_SCHEMA_FILE).unlink(),
                                   f"{TABLE_SCHEMA_FILE} is listed in {MANIFEST_FILE} but missing"),
}


@pytest.mark.parametrize("tamper, expected", OWN_CHECK.values(), ids=OWN_CHECK.keys())
def test_the_package_check_guards_its_description(small_package, tmp_path, tamper, expected):
    assert validate_submission(small_package) == []
    copy = copy_package(small_package, tmp_path / "copy")
    tamper(copy)
    problems = validate_submission(copy)
    assert any(expected in p for p in problems), problems
