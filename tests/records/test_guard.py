"""Tests of the identifier guard: every Safe Harbor kind refused, no value ever echoed, clean data passes."""

from __future__ import annotations

import pickle
import re

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from records import guard, schema
from records.columns import MAX_COLUMNS, NestedColumn, NestedColumnError
from records.errors import ContractError, InputError
from records.guard import (
    IdentifierError,
    IdentifierFinding,
    check_identifiers,
    find_identifiers,
    header_label,
    header_labels,
    withheld_label,
)
from records.readers import arrow_to_frame


def clean_frames() -> dict[str, pd.DataFrame]:
    """Three procedures and four levels with plausible, typed contract values (as from Parquet)."""
    procedures = pd.DataFrame({
        schema.PROCEDURE_ID: ["P0000001", "P0000002", "P0000003"],
        schema.SITE_ID: ["S01", "S01", "S02"],
        schema.OPERATOR_ID: ["OP001", "OP002", "OP001"],
        schema.EXTRACT_BATCH: [1, 1, 2],
        schema.PROCEDURE_YEAR: [2019, 2021, 2023],
        schema.AGE_YEARS: [67, 90, 81],
        schema.SEX: ["f", "f", "m"],
        schema.BMI: [22.5, None, 31.0],
        schema.BMD_T_SCORE: [-2.8, -3.4, None],
        schema.DIABETES: [False, True, False],
        schema.GLUCOCORTICOID_USE: [True, False, False],
        schema.IMMUNOSUPPRESSED: [False, False, True],
        schema.RECENT_INFECTION: [False, False, False],
        schema.ASA_CLASS: [2, 3, 3],
        schema.ETIOLOGY: ["osteoporotic", "osteoporotic", "malignant"],
        schema.ANESTHESIA: ["local_sedation", "general", "general"],
        schema.APPROACH: ["bipedicular", "unipedicular", "extrapedicular"],
        schema.ANTIBIOTIC_PROPHYLAXIS: [True, True, False],
        schema.PROCEDURE_MINUTES: [45.0, 62.5, None],
        schema.N_LEVELS: [1, 2, 1],
        schema.INFECTION_90D: [False, None, True],
        schema.LENGTH_OF_STAY_DAYS: [0, 3, 12],
        schema.PAIN_VAS_PRE: [8.0, 7.5, 9.0],
        schema.PAIN_VAS_POST: [3.0, 2.5, None],
    })
    levels = pd.DataFrame({
        schema.PROCEDURE_ID: ["P0000001", "P0000002", "P0000002", "P0000003"],
        schema.VERTEBRA: ["t12", "l1", "l2", "t8"],
        schema.GENANT_GRADE: [2, 3, 0, 1],
        schema.MORPHOLOGY: ["wedge", "crush", "biconcave", "wedge"],
        schema.FRACTURE_AGE_DAYS: [21, 400, None, 3000],
        schema.HEIGHT_LOSS_PCT: [35.0, 60.0, 0.0, 20.0],
        schema.INTRAVERTEBRAL_CLEFT: [False, True, False, False],
        schema.CORTICAL_DISRUPTION: [True, False, False, False],
        schema.ENDPLATE_DISRUPTION: [False, True, False, True],
        schema.BASIVERTEBRAL_FORAMEN: [None, True, False, False],
        schema.CEMENT_TYPE: ["pmma", "pmma", "pmma", "calcium_phosphate"],
        schema.CEMENT_VISCOSITY: ["high", "low", "medium", "high"],
        schema.BALLOON_VOLUME_ML: [3.0, None, 2.5, 4.0],
        schema.CEMENT_VOLUME_ML: [4.5, 6.0, 2.0, 3.5],
        schema.VERTEBRAL_BODY_VOLUME_ML: [28.0, 35.5, None, 30.0],
        schema.KYPHOTIC_ANGLE_PRE: [18.0, 25.0, 5.0, -2.0],
        schema.KYPHOTIC_ANGLE_POST: [12.0, 16.0, 5.0, -3.0],
        schema.LEAKAGE: [True, False, None, True],
        schema.LEAKAGE_SITES: ["intradiscal;venous", None, None, "paravertebral"],
        schema.LEAKAGE_SYMPTOMATIC: [False, False, None, False],
        schema.LEAKAGE_IMAGING: ["ct", "xray", None, "ct"],
    })
    return {schema.PROCEDURES.name: procedures, schema.LEVELS.name: levels}


def as_text(frames: dict[str, pd.DataFrame], dtype: str | None = "string") -> dict[str, pd.DataFrame]:
    """Every column as text, as CSV or SQL may deliver it (``None``: plain object columns)."""
    def to_text(frame: pd.DataFrame) -> pd.DataFrame:
        text = frame.astype(object).where(frame.notna(), None).map(lambda v: None if v is None else str(v).lower())
        return text if dtype is None else text.astype(dtype)
    return {name: to_text(frame) for name, frame in frames.items()}


def with_column(frames: dict[str, pd.DataFrame], table: str, column: str, value: object) -> dict[str, pd.DataFrame]:
    """A copy of the frames whose ``table.column`` holds ``value`` in its first row (others left as they were)."""
    frames = {name: frame.copy() for name, frame in frames.items()}
    frame = frames[table]
    if column not in frame.columns:
        frame[column] = pd.Series([None] * len(frame), dtype=object)
    frame[column] = frame[column].astype(object)
    frame.loc[frame.index[0], column] = value
    return frames


def refused(frames: dict[str, pd.DataFrame]) -> IdentifierError:
    with pytest.raises(IdentifierError, match="batch refused") as caught:
        check_identifiers(frames)
    return caught.value


def assert_never_echoed(error: IdentifierError | NestedColumnError, value: object) -> None:
    """Neither the value nor any word or number of it appears in the message, repr or findings (or columns)."""
    parts = getattr(error, "findings", ()) + getattr(error, "columns", ())
    texts = [str(error), repr(error), *map(repr, parts), *map(str, parts)]
    fragments = [str(value), *re.findall(r"[A-Za-z]{4,}|\d{3,}", str(value))]
    for text in texts:
        for fragment in fragments:
            assert fragment not in text, f"{fragment!r} echoed"


# --- clean data ---------------------------------------------------------------------------
@pytest.mark.parametrize("text", [None, "object", "string", "string[pyarrow]"], ids=str)
def test_clean_frames_pass(text: str | None) -> None:
    frames = clean_frames() if text is None else as_text(clean_frames(), None if text == "object" else text)
    assert find_identifiers(frames) == []
    check_identifiers(frames)


def test_frames_not_modified() -> None:
    frames = with_column(clean_frames(), "procedures", "contact", "jane.doe@example.org")
    before = {name: frame.copy() for name, frame in frames.items()}
    find_identifiers(frames)
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(frame, before[name])


def test_contract_columns_never_flagged_by_name() -> None:
    every_name = dict.fromkeys(schema.PROCEDURES.names + schema.LEVELS.names)
    harmless = pd.DataFrame({name: ["x1", "x2"] for name in every_name})
    harmless[schema.AGE_YEARS] = ["70", "71"]
    assert find_identifiers({schema.PROCEDURES.name: harmless, schema.LEVELS.name: harmless}) == []


# --- by column name -----------------------------------------------------------------------
BY_NAME = [
    ("first_name", guard.NAME), ("Surname", guard.NAME), ("patientName", guard.NAME), ("next_of_kin", guard.NAME),
    ("mrn", guard.MRN), ("medical_record_number", guard.MRN), ("chart_no", guard.MRN),
    ("hospital_number", guard.MRN), ("PatientID", guard.MRN),
    ("dob", guard.DATE), ("birth_date", guard.DATE), ("date_of_birth", guard.DATE), ("admission_date", guard.DATE),
    ("procedureDateTime", guard.DATE), ("updated_timestamp", guard.DATE), ("discharge_dt", guard.DATE),
    ("phone", guard.PHONE), ("fax_number", guard.PHONE), ("mobile", guard.PHONE), ("TelNr", guard.PHONE),
    ("email", guard.EMAIL), ("E-Mail", guard.EMAIL), ("contact_email_address", guard.EMAIL),
    ("ssn", guard.SSN), ("social_security_number", guard.SSN),
    ("health_plan_id", guard.ACCOUNT), ("insurance_number", guard.ACCOUNT), ("member_id", guard.ACCOUNT),
    ("account_number", guard.ACCOUNT),
    ("licence_number", guard.LICENCE_OR_DEVICE), ("drivers_license", guard.LICENCE_OR_DEVICE),
    ("certificate", guard.LICENCE_OR_DEVICE), ("device_serial_number", guard.LICENCE_OR_DEVICE),
    ("implant_udi", guard.LICENCE_OR_DEVICE),
    ("url", guard.URL), ("website", guard.URL), ("ip_address", guard.IP), ("IPAddress", guard.IP),
    ("street_address", guard.ADDRESS), ("city", guard.ADDRESS), ("county", guard.ADDRESS),
    ("photo", guard.PHOTO), ("face_image", guard.PHOTO), ("fingerprint", guard.PHOTO),
    ("biometric_template", guard.PHOTO),
]


@pytest.mark.parametrize(("column", "kind"), BY_NAME, ids=[c for c, _ in BY_NAME])
@pytest.mark.parametrize("table", [schema.PROCEDURES.name, schema.LEVELS.name])
def test_identifier_column_refused_by_name(table: str, column: str, kind: str) -> None:
    error = refused(with_column(clean_frames(), table, column, "x"))
    assert error.findings == (IdentifierFinding(table, column, kind, guard.BY_NAME),)
    assert f"{table}.{column}: {kind} (found by column name)" in str(error)


@pytest.mark.parametrize("column", ["admission_year", "diagnosis_year", "implant_age_days", "insurance_type",
                                    "surgeon_experience_years", "comment"])
def test_harmless_extra_columns_pass(column: str) -> None:
    assert find_identifiers(with_column(clean_frames(), "procedures", column, "2019")) == []


@pytest.mark.parametrize("values", [["123", "045", None], [123, 45, None], ["7", None, "999"]], ids=str)
@pytest.mark.parametrize("column", ["zip3", "zip", "postcode"])
def test_zip3_column_passes(column: str, values: list[object]) -> None:
    frames = clean_frames()
    frames["procedures"] = frames["procedures"].assign(**{column: values})
    assert find_identifiers(frames) == []


@pytest.mark.parametrize("value", ["12345", 12345, "8021-123", "1234"], ids=str)
def test_zip_beyond_3_digits_refused(value: object) -> None:
    error = refused(with_column(clean_frames(), "procedures", "zip", value))
    assert [(f.column, f.kind, f.rows) for f in error.findings] == [("zip", guard.ZIP, 1)]
    assert_never_echoed(error, value)


# --- by value -----------------------------------------------------------------------------
BY_VALUE = [
    ("jane.doe@example.org", guard.EMAIL),
    ("https://clinic.example.org/patients", guard.URL), ("www.example.com", guard.URL),
    ("192.168.10.24", guard.IP), ("fe80::1ff:fe23:4567:890a", guard.IP),
    ("123-45-6789", guard.SSN),
    ("(555) 123-4567", guard.PHONE), ("555-123-4567", guard.PHONE), ("555.123.4567", guard.PHONE),
    ("+41 44 123 45 67", guard.PHONE), ("044 123 45 67", guard.PHONE),
    ("2021-03-04", guard.DATE), ("03/04/2021", guard.DATE), ("4.3.2021", guard.DATE),
    ("2021-03-04T10:00", guard.DATE), ("March 4, 2021", guard.DATE), ("4 Mar 2021", guard.DATE),
    ("2021-03", guard.DATE),
    ("12345-6789", guard.ZIP),
    ("Smith, John", guard.NAME), ("Mr. John Smith", guard.NAME), ("Dr. Meier", guard.NAME),
    ("12 Main Street", guard.ADDRESS), ("Bahnhofstrasse 12", guard.ADDRESS),
    ("MRN: 4711081", guard.MRN),
    ("CH93 0076 2011 6238 5295 7", guard.ACCOUNT),
    ("00:1a:2b:3c:4d:5e", guard.LICENCE_OR_DEVICE),
    ("scan_0042.jpg", guard.PHOTO),
]
PLACES = [  # an unknown column and contract columns that arrive as text
    ("procedures", "note"), ("procedures", schema.SITE_ID), ("procedures", schema.PROCEDURE_YEAR),
    ("levels", schema.LEAKAGE_SITES), ("levels", "remarks"),
]


@pytest.mark.parametrize(("value", "kind"), BY_VALUE, ids=[v for v, _ in BY_VALUE])
@pytest.mark.parametrize(("table", "column"), PLACES, ids=[f"{t}.{c}" for t, c in PLACES])
def test_identifier_value_refused(table: str, column: str, value: str, kind: str) -> None:
    error = refused(with_column(as_text(clean_frames()), table, column, value))
    assert error.findings == (IdentifierFinding(table, column, kind, guard.BY_VALUE, 1),)
    assert f"{table}.{column}: {kind} (found in 1 row by value)" in str(error)
    assert_never_echoed(error, value)


@pytest.mark.parametrize("column", [schema.PROCEDURE_ID, schema.SITE_ID, schema.OPERATOR_ID])
@pytest.mark.parametrize("value", ["123456", "0004711081", 4711081], ids=str)
def test_long_bare_number_in_key_column_refused_as_mrn(column: str, value: object) -> None:
    frames = clean_frames() if isinstance(value, str) else {
        **clean_frames(), "procedures": clean_frames()["procedures"].assign(**{column: [4711081, 2, 3]})}
    frames = with_column(frames, "procedures", column, value)
    error = refused(frames)
    assert [(f.column, f.kind, f.rows) for f in error.findings] == [(column, guard.MRN, 1)]
    assert_never_echoed(error, value)


ALLOWED = ["P0000001", "S01", "OP001", "t12", "osteoporotic", "intradiscal;venous", "2021", "12.5", "true",
           "-2.5", "90", "local_sedation", "12345", "1.5e-3", "l1-l2", "4 levels", "ct", "Osteoporotic"]


@pytest.mark.parametrize("value", ALLOWED)
@pytest.mark.parametrize(("table", "column"), [("procedures", "note"), ("procedures", schema.SITE_ID)])
def test_allowed_values_never_flagged(table: str, column: str, value: str) -> None:
    assert find_identifiers(with_column(as_text(clean_frames()), table, column, value)) == []


@pytest.mark.parametrize("dtype", ["category", pd.ArrowDtype(pa.string()), "string[python]"], ids=str)
def test_values_found_whatever_the_text_dtype(dtype: object) -> None:
    frames = with_column(clean_frames(), "levels", "remarks", "call 555-123-4567")
    frames["levels"]["remarks"] = frames["levels"]["remarks"].astype(dtype)
    error = refused(frames)
    assert [(f.column, f.kind, f.rows) for f in error.findings] == [("remarks", guard.PHONE, 1)]


def test_nested_cells_are_refused_before_screening() -> None:
    """Was ``test_nested_cells_are_scanned`` (an e-mail in a list cell found by value): a nested column is now
    refused whole as such, before any value is screened, without echoing the value."""
    frames = clean_frames()
    frames["levels"] = frames["levels"].assign(tags=[["ok"], ["jane.doe@example.org"], None, ["ok"]])
    with pytest.raises(NestedColumnError, match=r"^table levels: tags is a list column; the contract has flat "
                                                r"columns only") as caught:
        check_identifiers(frames)
    assert caught.value.columns == (NestedColumn("levels", "tags", "list"),)
    assert_never_echoed(caught.value, "jane.doe@example.org")


def test_not_a_frame_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"frames\['levels'\] must be a pandas DataFrame"):
        find_identifiers({"levels": [1, 2]})  # type: ignore[dict-item]


def test_date_typed_column_refused() -> None:
    frames = clean_frames()
    frames["procedures"] = frames["procedures"].assign(
        surgery=pd.to_datetime(["2021-03-04", None, "2022-01-09"]))
    error = refused(frames)
    assert [(f.column, f.kind, f.how, f.rows) for f in error.findings] == [
        ("surgery", guard.DATE, guard.BY_VALUE, 2)]


def test_header_that_is_a_value_is_withheld() -> None:
    frames = with_column(clean_frames(), "levels", "jane.doe@example.org", "x")
    error = refused(frames)
    assert [f.kind for f in error.findings] == [guard.EMAIL]
    assert "name withheld" in error.findings[0].column
    assert_never_echoed(error, "jane.doe@example.org")


# --- ages over 89 -------------------------------------------------------------------------
@pytest.mark.parametrize("text", [False, True])
def test_age_years_91_refused_90_passes(text: bool) -> None:
    frames = with_column(clean_frames(), "procedures", schema.AGE_YEARS, 91)
    frames["procedures"][schema.AGE_YEARS] = frames["procedures"][schema.AGE_YEARS].astype("int64")
    if text:
        frames = as_text(frames)
    error = refused(frames)
    assert error.findings == (
        IdentifierFinding("procedures", schema.AGE_YEARS, guard.AGE_OVER_89, guard.BY_VALUE, 1),)
    assert_never_echoed(error, 91)
    assert find_identifiers(with_column(clean_frames(), "procedures", schema.AGE_YEARS, 90)) == []


@pytest.mark.parametrize(("column", "value", "refuse"), [
    ("patient_age", 95, True), ("patient_age", "95", True), ("AgeAtSurgery", 90, True), ("patient_age", 89, False),
    ("birth_year", 1925, True), ("birth_year", 1950, False),
])
def test_other_age_columns(column: str, value: object, refuse: bool) -> None:
    frames = with_column(clean_frames(), "procedures", column, value)
    findings = find_identifiers(frames)
    assert [(f.column, f.kind) for f in findings] == ([(column, guard.AGE_OVER_89)] if refuse else [])


@pytest.mark.parametrize("text", [False, True])
def test_impossible_age_years_are_not_identifiers(text: bool) -> None:
    """Two procedures aged 150 and one aged -3 are impossible values, left to validation (rule ``range``)."""
    frames = clean_frames()
    frames["procedures"] = frames["procedures"].assign(**{schema.AGE_YEARS: [150, 150, -3]})
    if text:
        frames = as_text(frames)
    assert find_identifiers(frames) == []
    check_identifiers(frames)


@pytest.mark.parametrize(("age", "refuse"), [(95, True), (91, True), (120, True), (121, False), (150, False),
                                             (-3, False), (90, False), (18, False)])
def test_age_years_identifies_only_from_91_to_120(age: int, refuse: bool) -> None:
    frames = with_column(clean_frames(), "procedures", schema.AGE_YEARS, age)
    expected = [IdentifierFinding("procedures", schema.AGE_YEARS, guard.AGE_OVER_89, guard.BY_VALUE, 1)]
    assert find_identifiers(frames) == (expected if refuse else [])


def test_age_95_refused_even_beside_impossible_ages() -> None:
    frames = clean_frames()
    frames["procedures"] = frames["procedures"].assign(**{schema.AGE_YEARS: [150, 95, -3]})
    error = refused(frames)
    assert error.findings == (
        IdentifierFinding("procedures", schema.AGE_YEARS, guard.AGE_OVER_89, guard.BY_VALUE, 1),)
    assert_never_echoed(error, 95)


@pytest.mark.parametrize(("column", "value", "refuse"), [
    ("patient_age", 120, True), ("patient_age", 121, False), ("patient_age", "150", False), ("age", -3, False),
    ("AgeAtSurgery", 100.5, True),
])
def test_other_age_columns_identify_only_up_to_120(column: str, value: object, refuse: bool) -> None:
    findings = find_identifiers(with_column(clean_frames(), "procedures", column, value))
    assert [(f.column, f.kind, f.rows) for f in findings] == ([(column, guard.AGE_OVER_89, 1)] if refuse else [])


@pytest.mark.parametrize(("birth_year", "refuse"), [(1919, True), (1899, True), (1898, False), (1800, False),
                                                    (1930, False), (2030, False)])
def test_year_of_birth_identifies_only_up_to_120(birth_year: int, refuse: bool) -> None:
    """Reckoned at the row's procedure_year (2019 in the first row): 1899 gives 120, 1898 gives 121."""
    findings = find_identifiers(with_column(clean_frames(), "procedures", "birth_year", birth_year))
    assert [(f.column, f.kind, f.rows) for f in findings] == (
        [("birth_year", guard.AGE_OVER_89, 1)] if refuse else [])


# --- nested columns, refused before any screening ----------------------------------------
NESTED = [
    ("struct", pa.array([{"mrn": "4711081", "patient": "Smith, John"}, None, {"mrn": None, "patient": "x"}])),
    ("list", pa.array([["jane.doe@example.org"], None, []])),
    ("list", pa.array([[1, 2], None, [3, 4]], type=pa.list_(pa.int64(), 2))),
    ("list", pa.array([["a"], None, ["b"]], type=pa.large_list(pa.string()))),
    ("map", pa.array([[("mrn", "4711081")], None, [("k", "v")]], type=pa.map_(pa.string(), pa.string()))),
]


@pytest.mark.parametrize(("kind", "values"), NESTED, ids=[f"{k}-{v.type}" for k, v in NESTED])
def test_nested_parquet_column_refused(kind: str, values: pa.Array) -> None:
    frames = clean_frames()
    procedures = pa.Table.from_pandas(frames["procedures"], preserve_index=False).append_column("meta", values)
    frames["procedures"] = arrow_to_frame(procedures)
    with pytest.raises(NestedColumnError, match=rf"^table procedures: meta is a {kind} column; the contract has "
                                                r"flat columns only") as caught:
        check_identifiers(frames)
    assert caught.value.columns == (NestedColumn("procedures", "meta", kind),)
    assert isinstance(caught.value, ContractError) and isinstance(caught.value, InputError)
    for value in ("4711081", "Smith, John", "jane.doe@example.org"):
        assert_never_echoed(caught.value, value)


def test_nested_column_refused_before_identifiers_are_screened() -> None:
    """An e-mail column beside a struct column: the nested column decides, and both tables are checked first."""
    frames = with_column(clean_frames(), "procedures", "note", "jane.doe@example.org")
    frames["levels"] = frames["levels"].assign(meta=[{"a": 1}, None, {"a": 2}, {"a": 3}])
    with pytest.raises(NestedColumnError) as caught:
        find_identifiers(frames)
    assert caught.value.columns == (NestedColumn("levels", "meta", "struct"),)


def test_nested_arrow_dtype_column_refused() -> None:
    frames = clean_frames()
    struct = pa.array([{"mrn": "1"}, None, {"mrn": "3"}])
    frames["procedures"] = frames["procedures"].assign(meta=pd.Series(struct.to_pandas(types_mapper=pd.ArrowDtype)
                                                                      .array))
    assert isinstance(frames["procedures"]["meta"].dtype, pd.ArrowDtype)
    with pytest.raises(NestedColumnError, match=r"^table procedures: meta is a struct column;"):
        check_identifiers(frames)


def test_nested_column_with_an_identifier_header_is_named_by_position() -> None:
    frames = clean_frames()
    frames["levels"] = frames["levels"].assign(**{"jane.doe@example.org": [[1], None, [2], [3]]})
    position = frames["levels"].shape[1]
    with pytest.raises(NestedColumnError, match=rf"^table levels: column {position} \(name withheld\) is a list "
                                                r"column;") as caught:
        check_identifiers(frames)
    assert_never_echoed(caught.value, "jane.doe@example.org")


def test_nested_error_survives_pickling() -> None:
    frames = clean_frames()
    frames["levels"] = frames["levels"].assign(tags=[["a"], None, ["b"], ["c"]])
    with pytest.raises(NestedColumnError) as caught:
        check_identifiers(frames)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.columns == caught.value.columns and str(copy) == str(caught.value)


# --- the header, checked before any screening --------------------------------------------
def test_twin_columns_refused_before_screening() -> None:
    frames = clean_frames()
    frames["procedures"] = frames["procedures"].assign(SITE_ID=["jane.doe@example.org", "S01", "S02"])
    with pytest.raises(ContractError, match=r"^table procedures: columns site_id and SITE_ID are the same column "
                                            r"in another case; keep exactly one of each$"):
        check_identifiers(frames)


def test_too_many_columns_refused_before_screening() -> None:
    wide = pd.DataFrame({f"c{i}": ["x"] for i in range(MAX_COLUMNS + 1)})
    with pytest.raises(ContractError, match=rf"^table levels has {MAX_COLUMNS + 1} columns; at most {MAX_COLUMNS} "):
        check_identifiers({"procedures": clean_frames()["procedures"], "levels": wide})


def test_header_labels() -> None:
    names = ["site_id", "jane.doe@example.org", 3, "555-123-4567"]
    assert header_labels(names) == ["site_id", "column 2 (name withheld)", "3", "column 4 (name withheld)"]
    assert header_label("jane.doe@example.org", 0) == "column 1 (name withheld)"
    assert header_label("patient_note", 6) == "patient_note"
    assert header_label(7, 6) == "7"
    assert header_labels([]) == []
    assert withheld_label(0) == "column 1 (name withheld)"


# --- the error ----------------------------------------------------------------------------
def test_all_findings_reported_together() -> None:
    frames = as_text(clean_frames())
    frames = with_column(frames, "procedures", "email", "x")
    frames = with_column(frames, "procedures", "note", "555-123-4567")
    frames = with_column(frames, "procedures", schema.PROCEDURE_YEAR, "2021-03-04")
    frames = with_column(frames, "levels", "remarks", "Smith, John")
    error = refused(frames)
    expected = [
        ("procedures", schema.PROCEDURE_YEAR, guard.DATE),
        ("procedures", "email", guard.EMAIL),
        ("procedures", "note", guard.PHONE),
        ("levels", "remarks", guard.NAME),
    ]
    assert [(f.table, f.column, f.kind) for f in error.findings] == expected
    lines = str(error).splitlines()
    assert lines[0].startswith("batch refused: it carries identifiers (HIPAA Safe Harbor)")
    assert len(lines) == 1 + len(expected)
    for value in ["555-123-4567", "2021-03-04", "Smith, John"]:
        assert_never_echoed(error, value)


def test_rows_are_counted_not_shown() -> None:
    frames = as_text(clean_frames())
    frames["procedures"] = frames["procedures"].assign(contact=["a@example.org", "b@example.org", "a@example.org"])
    error = refused(frames)
    assert error.findings == (IdentifierFinding("procedures", "contact", guard.EMAIL, guard.BY_VALUE, 3),)
    assert "procedures.contact: e-mail address (found in 3 rows by value)" in str(error)


def test_error_survives_pickling() -> None:
    error = refused(with_column(clean_frames(), "procedures", "email", "x"))
    copy = pickle.loads(pickle.dumps(error))
    assert copy.findings == error.findings and str(copy) == str(error)


# --- property -----------------------------------------------------------------------------
PSEUDONYMS = st.one_of(
    st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,63}", fullmatch=True),
    st.from_regex(r"[A-Za-z]{1,4}[_-]?[0-9]{1,12}", fullmatch=True),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(PSEUDONYMS, min_size=3, max_size=3))
def test_letter_prefixed_pseudonyms_never_trigger(pseudonyms: list[str]) -> None:
    assert all(re.fullmatch(schema.ID_PATTERN, pseudonym) for pseudonym in pseudonyms)
    procedures = pd.DataFrame({schema.PROCEDURE_ID: pseudonyms, schema.SITE_ID: pseudonyms[::-1],
                               schema.OPERATOR_ID: pseudonyms, "note": pseudonyms})
    levels = pd.DataFrame({schema.PROCEDURE_ID: pseudonyms})
    for dtype in ("object", "string[pyarrow]"):
        frames = {"procedures": procedures.astype(dtype), "levels": levels.astype(dtype)}
        assert find_identifiers(frames) == []
