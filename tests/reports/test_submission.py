"""The registry submission package: written from a slice of the sample, re-checked, tampered with, withheld,
assembled from kept per-batch files."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.outcomes import OUTCOMES, OUTCOMES_BY_NAME
from records.schema import (BMI, CEMENT_VOLUME_ML, DIABETES, EXTRACT_BATCH, LEVELS, PROCEDURE_ID, PROCEDURE_YEAR,
                            PROCEDURES, SEX, VERTEBRA, VERTEBRAE)
from reports.submission import (DATA_DIR, DICTIONARY_CSV, DICTIONARY_MD, KEY, MANIFEST_FILE, PACKAGE_FILES,
                                RISK_COLUMNS, RISK_DECIMALS, SCHEMA_FILE, SubmissionError, SubmissionWithheld,
                                assemble_submission, data_file_name, render_part, validate_submission,
                                write_submission)

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
SLICE_PROCEDURES = 2_000
CODE_VERSION = "0.1.0+test"
WATERMARK = 99
INFECTION = next(r for r in RISK_COLUMNS if r.outcome == next(o.name for o in OUTCOMES if o.unit == "procedure"))
LEAK_ANY = next(r for r in RISK_COLUMNS if r.source == OUTCOMES_BY_NAME["leakage_any"].risk_column)


@pytest.fixture(scope="module")
def sample() -> tuple[pd.DataFrame, pd.DataFrame]:
    procedures = pd.read_parquet(SAMPLE / "procedures.parquet").iloc[:SLICE_PROCEDURES].reset_index(drop=True)
    levels = pd.read_parquet(SAMPLE / "levels.parquet")
    return procedures, levels[levels[PROCEDURE_ID].isin(procedures[PROCEDURE_ID])].reset_index(drop=True)


def fake_risks(procedures: pd.DataFrame, levels: pd.DataFrame, *, infection: bool = True,
               seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Risk frames shaped as models.scoring gives them, drawn from a fixed rng."""
    rng = np.random.default_rng(seed)
    level_risks = levels[list(KEY)].copy()
    for risk in (r for r in RISK_COLUMNS if r.unit == "level"):
        level_risks[risk.source] = rng.uniform(0.0005, 0.6, len(levels))
    procedure_risks = procedures[[PROCEDURE_ID]].copy()
    no_leak = (1.0 - level_risks[LEAK_ANY.source]).groupby(level_risks[PROCEDURE_ID]).prod()
    combined = next(r for r in RISK_COLUMNS if r.unit == "procedure" and r.outcome == LEAK_ANY.outcome)
    procedure_risks[combined.source] = 1.0 - procedure_risks[PROCEDURE_ID].map(no_leak).to_numpy(dtype=float)
    procedure_risks[INFECTION.source] = rng.uniform(0.001, 0.05, len(procedures)) if infection else np.nan
    return level_risks, procedure_risks


def versions(*, infection: bool = True) -> dict[str, str | None]:
    return {r.outcome: ("v0002" if infection or r.outcome != INFECTION.outcome else None) for r in RISK_COLUMNS}


def write(out_dir: Path, procedures: pd.DataFrame, levels: pd.DataFrame, *, infection: bool = True, **overrides):
    level_risks, procedure_risks = fake_risks(procedures, levels, infection=infection)
    arguments = dict(procedures=procedures, levels=levels, level_risks=level_risks, procedure_risks=procedure_risks,
                     model_versions=versions(infection=infection), code_version=CODE_VERSION, watermark=WATERMARK)
    return write_submission(out_dir, **{**arguments, **overrides})


@pytest.fixture(scope="module")
def package(sample, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("package") / "submission"
    write(out_dir, *sample)
    SAMPLE_PACKAGE[:] = [out_dir]
    return out_dir


def data_files(out_dir: Path) -> list[Path]:
    """The package's data files in batch order."""
    return sorted((out_dir / DATA_DIR).glob("*.csv"), key=lambda p: int(p.stem.split("=")[1]))


def read_data(out_dir: Path) -> pd.DataFrame:
    """The whole table: the data files concatenated in batch order."""
    return pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in data_files(out_dir)],
                     ignore_index=True)


def first_file(out_dir: Path) -> Path:
    return data_files(out_dir)[0]


def copy_package(package: Path, to: Path) -> Path:
    """A copy with its own inodes (the tampering must not reach the package's hard links)."""
    shutil.copytree(package, to, copy_function=shutil.copyfile)
    return to


def test_sample_package_is_valid_and_counts_match_the_inputs(sample, package):
    procedures, levels = sample
    assert validate_submission(package) == []
    assert sorted(p.name for p in package.iterdir()) == sorted([*PACKAGE_FILES, MANIFEST_FILE, DATA_DIR])
    batches = sorted(procedures[EXTRACT_BATCH].unique())
    assert [f.relative_to(package).as_posix() for f in data_files(package)] == [data_file_name(b) for b in batches]
    manifest = json.loads((package / MANIFEST_FILE).read_text())
    assert manifest["code_version"] == CODE_VERSION and manifest["model_versions"] == versions()
    assert manifest["rows"] == {LEVELS.name: len(levels), PROCEDURES.name: len(procedures)}
    assert manifest["period"] == {f"{PROCEDURE_YEAR}_min": int(procedures[PROCEDURE_YEAR].min()),
                                  f"{PROCEDURE_YEAR}_max": int(procedures[PROCEDURE_YEAR].max()),
                                  f"{EXTRACT_BATCH}_min": int(procedures[EXTRACT_BATCH].min()),
                                  f"{EXTRACT_BATCH}_max": int(procedures[EXTRACT_BATCH].max()),
                                  "registry_watermark": WATERMARK}
    assert "time" not in json.dumps(manifest) and "date" not in json.dumps(manifest)
    data = read_data(package)
    assert len(data) == len(levels) and data[PROCEDURE_ID].nunique() == len(procedures)


def test_each_file_holds_its_batch_sorted_by_procedure_then_anatomical_vertebra(package):
    for path in data_files(package):
        data = pd.read_csv(path, dtype=str, keep_default_na=False)
        assert list(data.columns[:2]) == list(KEY)
        assert set(data[EXTRACT_BATCH]) == {path.stem.split("=")[1]}
        order = data.assign(rank=data[VERTEBRA].map(VERTEBRAE.index)).sort_values([PROCEDURE_ID, "rank"])
        assert order.index.tolist() == list(range(len(data)))
    data = read_data(package)
    assert (data[VERTEBRA] == "l1").any() and (data[VERTEBRA] == "t12").any()


def test_only_contract_and_risk_columns_are_published(sample, tmp_path):
    procedures, levels = sample
    with_bookkeeping = procedures.assign(source_row=np.arange(len(procedures)), run_id="20250101T000000Z-abc123")
    write(tmp_path / "out", with_bookkeeping, levels.assign(source_row=0))
    columns = set(read_data(tmp_path / "out").columns)
    assert columns == set(PROCEDURES.names) | set(LEVELS.names) | {r.name for r in RISK_COLUMNS}
    assert all(r.name.startswith("expected_") for r in RISK_COLUMNS)


def test_same_inputs_give_byte_identical_packages_whatever_the_row_order(sample, package, tmp_path):
    procedures, levels = sample
    shuffled_levels = levels.sample(frac=1.0, random_state=3)
    level_risks, procedure_risks = fake_risks(procedures, levels)
    write(tmp_path / "again", procedures.iloc[::-1], shuffled_levels,
          level_risks=level_risks.sample(frac=1.0, random_state=5), procedure_risks=procedure_risks)
    names = [*PACKAGE_FILES, MANIFEST_FILE, *(f.relative_to(package) for f in data_files(package))]
    for name in names:
        assert (tmp_path / "again" / name).read_bytes() == (package / name).read_bytes(), name


def test_text_format_is_fixed(package):
    raw = first_file(package).read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and b"\r" not in raw and raw.endswith(b"\n")
    data = read_data(package)
    schema = json.loads((package / SCHEMA_FILE).read_text())
    for column in schema["columns"]:
        cells = data[column["name"]][data[column["name"]] != ""]
        if column["type"] == "boolean":
            assert set(cells) <= {"true", "false"}, column["name"]
        if column["type"] == "number":
            assert cells.str.fullmatch(rf"-?\d+\.\d{{{column['decimals']}}}").all(), column["name"]
    assert data[LEAK_ANY.name].str.fullmatch(rf"0\.\d{{{RISK_DECIMALS}}}").all()
    assert schema["key"] == list(KEY) and not any(c["nullable"] for c in schema["columns"] if c["name"] in KEY)


def test_data_dictionary_covers_exactly_the_data_columns(package):
    header = list(read_data(package).columns)
    dictionary = pd.read_csv(package / DICTIONARY_CSV, dtype=str, keep_default_na=False)
    assert dictionary["name"].tolist() == header
    assert set(dictionary["source"]) == {PROCEDURES.name, LEVELS.name, "model"}
    assert [c["name"] for c in json.loads((package / SCHEMA_FILE).read_text())["columns"]] == header
    table_rows = [line for line in (package / DICTIONARY_MD).read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in table_rows[1:]] == header
    risk_rows = dictionary[dictionary["source"] == "model"]
    assert risk_rows["description"].str.contains("calibrated probability").all()
    assert risk_rows["description"].str.contains("v0002").all() and (risk_rows["unit"] == "probability").all()


def test_no_infection_model_gives_an_empty_nullable_column(sample, tmp_path):
    procedures, levels = sample
    write(tmp_path / "out", procedures, levels, infection=False)
    assert validate_submission(tmp_path / "out") == []
    assert (read_data(tmp_path / "out")[INFECTION.name] == "").all()
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    assert manifest["model_versions"][INFECTION.outcome] is None
    assert "no infection_90d model is published" in (tmp_path / "out" / DICTIONARY_MD).read_text()


# --- tampering ---------------------------------------------------------------------------------------------
def reseal(out_dir: Path) -> None:
    """Make the manifest agree with the files again, so only the data checks can find what was changed."""
    manifest = json.loads((out_dir / MANIFEST_FILE).read_text())
    for entry in manifest["files"]:
        content = (out_dir / entry["name"]).read_bytes()
        entry.update(bytes=len(content), sha256=hashlib.sha256(content).hexdigest())
    (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def edit_data(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """Edit the first data file and reseal the manifest."""
    def tamper(out_dir: Path) -> None:
        path = first_file(out_dir)
        data = edit(pd.read_csv(path, dtype=str, keep_default_na=False))
        path.write_bytes(data.to_csv(index=False, lineterminator="\n").encode())
        reseal(out_dir)
    return tamper


def flip_byte(out_dir: Path) -> None:
    raw = bytearray(first_file(out_dir).read_bytes())
    raw[-3] = ord("7") if raw[-3] != ord("7") else ord("3")
    first_file(out_dir).write_bytes(bytes(raw))


def set_cell(column: str, value: str, row: int = 0) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def edit(data: pd.DataFrame) -> pd.DataFrame:
        data.loc[row, column] = value
        return data
    return edit


TAMPERING = {
    "a changed byte": (flip_byte, f"{data_file_name(1)} does not match its SHA-256"),
    "a removed file": (lambda d: (d / DICTIONARY_MD).unlink(),
                       f"{DICTIONARY_MD} is listed in {MANIFEST_FILE} but missing"),
    "an extra file": (lambda d: (d / "notes.txt").write_text("x"), "notes.txt is in the package but not listed"),
    "an out-of-range value": (edit_data(set_cell(CEMENT_VOLUME_ML, "99.000", row=3)),
                              f"{CEMENT_VOLUME_ML} must be between 0 and 15 ml: broken in 1 row (line 5)"),
    "an out-of-range risk": (edit_data(set_cell(LEAK_ANY.name, "1.500000")),
                             f"{LEAK_ANY.name} must be between 0 and 1 probability: broken in 1 row (line 2)"),
    "a duplicate key": (edit_data(lambda data: pd.concat([data, data.iloc[[7]]], ignore_index=True)),
                        "key procedure_id+vertebra must be unique: broken in 2 rows"),
    "an unknown category": (edit_data(set_cell(VERTEBRA, "c7")), "vertebra must be one of t1"),
    "an empty required cell": (edit_data(set_cell(SEX, "")), f"{SEX} must not be empty: broken in 1 row (line 2)"),
    "a number out of format": (edit_data(set_cell(BMI, "24.5")), f"{BMI} must be written as number"),
    "a dropped column": (edit_data(lambda data: data.drop(columns=[DIABETES])), f"absent: ['{DIABETES}']"),
    "a missing manifest": (lambda d: (d / MANIFEST_FILE).unlink(), f"{MANIFEST_FILE} is missing"),
    "a removed data file": (lambda d: first_file(d).unlink(), f"{data_file_name(1)} is listed in {MANIFEST_FILE} but"),
    "an extra data file": (lambda d: (d / DATA_DIR / "extract_batch=77.csv").write_text("x"),
                           f"{DATA_DIR}/extract_batch=77.csv is in the package but not listed"),
    "rows of another batch": (edit_data(set_cell(EXTRACT_BATCH, "2")),
                              f"{data_file_name(1)} must hold the rows of its own {EXTRACT_BATCH} only"),
    "a key repeated across files": (edit_data(lambda data: pd.concat([data, pd.read_csv(
        SAMPLE_PACKAGE[0] / data_file_name(2), dtype=str, keep_default_na=False).iloc[[0]].assign(
            **{EXTRACT_BATCH: "1"})], ignore_index=True)), "must be unique across data files: 2 rows repeat"),
}
SAMPLE_PACKAGE: list[Path] = []  # filled by the package fixture: the package the tampering reads from


@pytest.mark.parametrize("tamper, expected", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampering_is_reported(package, tmp_path, tamper, expected):
    copy = copy_package(package, tmp_path / "copy")
    tamper(copy)
    problems = validate_submission(copy)
    assert any(expected in p for p in problems), problems


def test_a_duplicate_key_also_breaks_the_row_count(package, tmp_path):
    copy = copy_package(package, tmp_path / "copy")
    edit_data(lambda data: pd.concat([data, data.iloc[[0]]], ignore_index=True))(copy)
    assert any(p.startswith(f"manifest rows {LEVELS.name}") for p in validate_submission(copy))


# --- small cells and bad inputs -----------------------------------------------------------------------------
@pytest.mark.parametrize("n_procedures", [0, 1, 10])
def test_fewer_than_11_procedures_are_withheld_without_telling_the_count(sample, tmp_path, n_procedures):
    procedures, levels = sample
    few = procedures.iloc[:n_procedures]
    with pytest.raises(SubmissionWithheld) as withheld:
        write(tmp_path / "out", few, levels[levels[PROCEDURE_ID].isin(few[PROCEDURE_ID])])
    assert str(withheld.value) == ("no submission written: a record-level file of fewer than 11 procedures "
                                   "is itself a small cell")
    assert not (tmp_path / "out").exists()


def test_eleven_procedures_are_published_and_a_small_count_is_reported(sample, tmp_path):
    procedures, levels = sample
    few = procedures.iloc[:11]
    result = write(tmp_path / "out", few, levels[levels[PROCEDURE_ID].isin(few[PROCEDURE_ID])])
    assert result.manifest["rows"][PROCEDURES.name] == 11 and validate_submission(tmp_path / "out") == []
    manifest = json.loads((tmp_path / "out" / MANIFEST_FILE).read_text())
    manifest["rows"][PROCEDURES.name] = 9
    (tmp_path / "out" / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert any(f"rows {PROCEDURES.name} = 9 is a small cell" in p for p in validate_submission(tmp_path / "out"))


def test_an_existing_package_is_replaced_whole(sample, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "stale.csv").write_text("old")
    write(out_dir, *sample)
    assert validate_submission(out_dir) == [] and not (out_dir / "stale.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind


BAD_INPUTS = {
    "a level without risk": (lambda sample: {"level_risks": fake_risks(*sample)[0].iloc[1:]},
                             "level_risks must have exactly one row per submitted procedure_id\\+vertebra; 1 "),
    "infection risks without a model": (lambda sample: {"model_versions": versions(infection=False)},
                                        f"{INFECTION.source} must be given in every row when"),
    "a model version missing": (lambda sample: {"model_versions": {LEAK_ANY.outcome: "v0001"}},
                                "model_versions must give a version string or None for exactly"),
    "a risk above 1": (lambda sample: {"level_risks": fake_risks(*sample)[0].assign(**{LEAK_ANY.source: 1.2})},
                       f"{LEAK_ANY.source} must be a probability between 0 and 1"),
    "a batch above the watermark": (lambda sample: {"watermark": 0}, "must not exceed the registry watermark"),
    "a missing contract column": (lambda sample: {"procedures": sample[0].drop(columns=[SEX])}, f"missing: {SEX}"),
    "a repeated level": (lambda sample: {"levels": pd.concat([sample[1], sample[1].iloc[[0]]])},
                         "procedure_id\\+vertebra must be unique in levels; 2 rows repeat a key"),
}


@pytest.mark.parametrize("make, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_are_refused_and_nothing_is_written(sample, tmp_path, make, message):
    arguments = {"procedures": sample[0], "levels": sample[1], **make(sample)}
    with pytest.raises(SubmissionError, match=message):
        write(tmp_path / "out", arguments.pop("procedures"), arguments.pop("levels"), **arguments)
    assert not (tmp_path / "out").exists()


# --- assembly from kept files (the nightly path) ----------------------------------------------------------
def render_batches(sample, tmp_path: Path) -> list[tuple[Path, object]]:
    procedures, levels = sample
    level_risks, procedure_risks = fake_risks(procedures, levels)
    kept = tmp_path / "kept"
    kept.mkdir()
    parts = []
    for batch, rows in procedures.groupby(EXTRACT_BATCH, sort=True):
        ids = rows[PROCEDURE_ID]
        content, part = render_part(procedures=rows, levels=levels[levels[PROCEDURE_ID].isin(ids)],
                                    level_risks=level_risks[level_risks[PROCEDURE_ID].isin(ids)],
                                    procedure_risks=procedure_risks[procedure_risks[PROCEDURE_ID].isin(ids)],
                                    model_versions=versions())
        path = kept / f"{batch}.csv"
        path.write_bytes(content)
        parts.append((path, part))
    return parts


def test_assembled_package_links_the_kept_files_and_equals_the_whole_write(sample, package, tmp_path):
    parts = render_batches(sample, tmp_path)
    out = tmp_path / "assembled"
    assemble_submission(out, parts=parts, model_versions=versions(), code_version=CODE_VERSION, watermark=WATERMARK)
    assert validate_submission(out) == []
    for path, part in parts:
        assert (out / part.name).stat().st_ino == path.stat().st_ino  # a hard link: no copy, no extra disk
        assert (out / part.name).read_bytes() == (package / part.name).read_bytes()
    assert (out / MANIFEST_FILE).read_bytes() == (package / MANIFEST_FILE).read_bytes()
    assert sum(p.levels for _, p in parts) == len(sample[1])


def test_checked_files_are_not_parsed_again_but_still_hashed(sample, tmp_path):
    parts = render_batches(sample, tmp_path)
    out = tmp_path / "assembled"
    assemble_submission(out, parts=parts, model_versions=versions(), code_version=CODE_VERSION, watermark=WATERMARK)
    checked = {part.name: part for _, part in parts[:-1]}
    assert validate_submission(out, checked=checked) == []
    assert validate_submission(out, checked={part.name: part for _, part in parts}) == []  # nothing parsed
    broken = copy_package(out, tmp_path / "broken")
    flip_byte(broken)  # a kept file changed on disk: its hash no longer matches, so it is parsed and reported
    problems = validate_submission(broken, checked=checked)
    assert any(f"{data_file_name(1)} does not match its SHA-256" in p for p in problems), problems


def test_the_totals_are_checked_when_kept_files_are_not_parsed(sample, tmp_path):
    import dataclasses

    parts = render_batches(sample, tmp_path)
    out = tmp_path / "assembled"
    assemble_submission(out, parts=parts, model_versions=versions(), code_version=CODE_VERSION, watermark=WATERMARK)
    (_, first), (_, last) = parts[0], parts[-1]
    miscounted = {part.name: part for _, part in parts[:-1]}
    miscounted[first.name] = dataclasses.replace(first, levels=first.levels + 1, procedures=first.procedures + 1)
    problems = validate_submission(out, checked=miscounted)
    assert any("manifest rows levels" in p and "but the data files hold" in p for p in problems), problems
    assert any("manifest rows procedures" in p for p in problems), problems
    wrong_period = {last.name: dataclasses.replace(last, period={**last.period, "procedure_year_max": 2099})}
    problems = validate_submission(out, checked=wrong_period)
    manifest_max = max(part.period["procedure_year_max"] for _, part in parts)
    assert problems == [f"manifest period procedure_year_max = {manifest_max} but the data files give 2099"], problems


def test_a_kept_file_that_is_not_the_rendered_one_is_refused(sample, tmp_path):
    parts = render_batches(sample, tmp_path)
    parts[0][0].write_bytes(parts[0][0].read_bytes() + b"x")
    with pytest.raises(SubmissionError, match="is not the file that was rendered"):
        assemble_submission(tmp_path / "out", parts=parts, model_versions=versions(), code_version=CODE_VERSION,
                            watermark=WATERMARK)
    assert not (tmp_path / "out").exists()


def test_a_part_holds_one_batch(sample):
    procedures, levels = sample
    level_risks, procedure_risks = fake_risks(procedures, levels)
    with pytest.raises(SubmissionError, match="exactly one extract_batch"):
        render_part(procedures=procedures, levels=levels, level_risks=level_risks, procedure_risks=procedure_risks,
                    model_versions=versions())
