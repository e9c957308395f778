"""The record contract v1 as one module: every column, type, range, category and cross-table rule.

Other modules import column names from here; a contract column name is written once, in this file.
Reference: shared record-contract.md (v1).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
import pyarrow.compute as pc

CONTRACT_VERSION = "1"

Kind = Literal["id", "int", "float", "bool", "category", "sites"]
TEXT_DTYPE = "string[pyarrow]"
"""Text columns are Arrow-backed: a fraction of the memory of Python strings, and vectorised string checks."""

ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
FIRST_PROCEDURE_YEAR = 2000
BATCH_MAX = 2**31 - 1
"""The highest extract batch number the contract accepts (a signed 32-bit integer: every warehouse and every
Parquet or SQL integer type holds it exactly). A number outside 1..BATCH_MAX is quarantined with rule ``range``."""

# --- column names: procedures -------------------------------------------------------------
PROCEDURE_ID = "procedure_id"
SITE_ID = "site_id"
OPERATOR_ID = "operator_id"
EXTRACT_BATCH = "extract_batch"
PROCEDURE_YEAR = "procedure_year"
AGE_YEARS = "age_years"
SEX = "sex"
BMI = "bmi_kg_m2"
BMD_T_SCORE = "bmd_t_score"
DIABETES = "diabetes"
GLUCOCORTICOID_USE = "glucocorticoid_use"
IMMUNOSUPPRESSED = "immunosuppressed"
RECENT_INFECTION = "recent_infection"
ASA_CLASS = "asa_class"
ETIOLOGY = "etiology"
ANESTHESIA = "anesthesia"
APPROACH = "approach"
ANTIBIOTIC_PROPHYLAXIS = "antibiotic_prophylaxis"
PROCEDURE_MINUTES = "procedure_minutes"
N_LEVELS = "n_levels"
INFECTION_90D = "infection_90d"
LENGTH_OF_STAY_DAYS = "length_of_stay_days"
PAIN_VAS_PRE = "pain_vas_pre"
PAIN_VAS_POST = "pain_vas_post"

# --- column names: levels -----------------------------------------------------------------
VERTEBRA = "vertebra"
GENANT_GRADE = "genant_grade"
MORPHOLOGY = "morphology"
FRACTURE_AGE_DAYS = "fracture_age_days"
HEIGHT_LOSS_PCT = "height_loss_pct"
INTRAVERTEBRAL_CLEFT = "intravertebral_cleft"
CORTICAL_DISRUPTION = "cortical_disruption"
ENDPLATE_DISRUPTION = "endplate_disruption"
BASIVERTEBRAL_FORAMEN = "basivertebral_foramen"
CEMENT_TYPE = "cement_type"
CEMENT_VISCOSITY = "cement_viscosity"
BALLOON_VOLUME_ML = "balloon_volume_ml"
CEMENT_VOLUME_ML = "cement_volume_ml"
VERTEBRAL_BODY_VOLUME_ML = "vertebral_body_volume_ml"
KYPHOTIC_ANGLE_PRE = "kyphotic_angle_pre_deg"
KYPHOTIC_ANGLE_POST = "kyphotic_angle_post_deg"
LEAKAGE = "leakage"
LEAKAGE_SITES = "leakage_sites"
LEAKAGE_SYMPTOMATIC = "leakage_symptomatic"
LEAKAGE_IMAGING = "leakage_imaging"

# --- categories ---------------------------------------------------------------------------
SEXES = ("f", "m")
ETIOLOGIES = ("osteoporotic", "malignant", "traumatic")
ANESTHESIAS = ("local_sedation", "general")
APPROACHES = ("unipedicular", "bipedicular", "extrapedicular")
VERTEBRAE = tuple(f"t{i}" for i in range(1, 13)) + tuple(f"l{i}" for i in range(1, 6))
MORPHOLOGIES = ("wedge", "biconcave", "crush")
CEMENT_TYPES = ("pmma", "calcium_phosphate")
VISCOSITIES = ("low", "medium", "high")
LEAKAGE_SITE_NAMES = ("intradiscal", "paravertebral", "epidural", "foraminal", "venous")
IMAGING_MODALITIES = ("xray", "ct")
SITE_SEPARATOR = ";"


@dataclass(frozen=True)
class ColumnSpec:
    """One contract column: its name, kind, whether it is required, and its allowed values."""

    name: str
    kind: Kind
    required: bool
    low: float | None = None
    high: float | None = None
    categories: tuple[str, ...] = ()
    description: str = ""

    @property
    def pandas_dtype(self) -> str:
        return _PANDAS_DTYPES[self.kind]

    @property
    def arrow_type(self) -> pa_arrow.DataType:
        return _ARROW_TYPES[self.kind]

    @property
    def withhold_values(self) -> bool:
        """Values of pseudonymous keys and free text are never echoed in messages."""
        return self.kind in ("id",)

    def rule_text(self) -> str:
        """The rule in words, for messages: 'must be between 0 and 15'."""
        if self.kind == "id":
            return "must be 1-64 characters of A-Z a-z 0-9 _ -"
        if self.kind == "category":
            return "must be one of " + ", ".join(self.categories)
        if self.kind == "sites":
            return "must be ';'-joined names from " + ", ".join(LEAKAGE_SITE_NAMES)
        if self.low is not None and self.high is not None:
            return f"must be between {_fmt(self.low)} and {_fmt(self.high)}"
        if self.low is not None:
            return f"must be at least {_fmt(self.low)}"
        return "must be valid"


@dataclass(frozen=True)
class TableSpec:
    """One contract table: its columns and its key."""

    name: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> ColumnSpec:
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(f"{name!r} is not a column of the {self.name} table in contract v{CONTRACT_VERSION}")

    def arrow_schema(self, *, exclude: tuple[str, ...] = ()) -> pa_arrow.Schema:
        return pa_arrow.schema([(c.name, c.arrow_type) for c in self.columns if c.name not in exclude])


_PANDAS_DTYPES: dict[str, str] = {
    "id": TEXT_DTYPE,
    "int": "Int64",
    "float": "Float64",
    "bool": "boolean",
    "category": TEXT_DTYPE,
    "sites": TEXT_DTYPE,
}
_ARROW_TYPES: dict[str, pa_arrow.DataType] = {
    "id": pa_arrow.string(),
    "int": pa_arrow.int64(),
    "float": pa_arrow.float64(),
    "bool": pa_arrow.bool_(),
    "category": pa_arrow.string(),
    "sites": pa_arrow.string(),
}


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _col(name: str, kind: Kind, required: bool, low: float | None = None, high: float | None = None,
         categories: tuple[str, ...] = (), description: str = "") -> ColumnSpec:
    return ColumnSpec(name=name, kind=kind, required=required, low=low, high=high,
                      categories=categories, description=description)


def current_year() -> int:
    return _dt.date.today().year


PROCEDURES = TableSpec(
    name="procedures",
    key=(PROCEDURE_ID,),
    columns=(
        _col(PROCEDURE_ID, "id", True, description="pseudonymous procedure key"),
        _col(SITE_ID, "id", True, description="pseudonymous hospital / centre"),
        _col(OPERATOR_ID, "id", True, description="pseudonymous operator"),
        _col(EXTRACT_BATCH, "int", True, 1, BATCH_MAX, description="warehouse extract number"),
        # upper bound is 'this year', applied at validation time (see procedures_schema)
        _col(PROCEDURE_YEAR, "int", True, FIRST_PROCEDURE_YEAR, None, description="year of the procedure"),
        _col(AGE_YEARS, "int", True, 18, 90, description="age in years, 90 = 90 or older"),
        _col(SEX, "category", True, categories=SEXES),
        _col(BMI, "float", False, 12, 70, description="body-mass index, kg/m2"),
        _col(BMD_T_SCORE, "float", False, -6, 4, description="lowest DXA T-score"),
        _col(DIABETES, "bool", True),
        _col(GLUCOCORTICOID_USE, "bool", True, description="long-term systemic steroids"),
        _col(IMMUNOSUPPRESSED, "bool", True, description="other immunosuppression"),
        _col(RECENT_INFECTION, "bool", True, description="infection treated in the 90 days before"),
        _col(ASA_CLASS, "int", True, 1, 5),
        _col(ETIOLOGY, "category", True, categories=ETIOLOGIES),
        _col(ANESTHESIA, "category", True, categories=ANESTHESIAS),
        _col(APPROACH, "category", True, categories=APPROACHES),
        _col(ANTIBIOTIC_PROPHYLAXIS, "bool", True),
        _col(PROCEDURE_MINUTES, "float", False, 5, 600),
        _col(N_LEVELS, "int", True, 1, 10, description="number of treated levels"),
        _col(INFECTION_90D, "bool", False, description="infection within 90 days; missing = incomplete follow-up"),
        _col(LENGTH_OF_STAY_DAYS, "int", False, 0, 365, description="0 = same-day discharge"),
        _col(PAIN_VAS_PRE, "float", False, 0, 10),
        _col(PAIN_VAS_POST, "float", False, 0, 10),
    ),
)

LEVELS = TableSpec(
    name="levels",
    key=(PROCEDURE_ID, VERTEBRA),
    columns=(
        _col(PROCEDURE_ID, "id", True, description="the procedure this level belongs to"),
        _col(VERTEBRA, "category", True, categories=VERTEBRAE),
        _col(GENANT_GRADE, "int", True, 0, 3, description="0 = prophylactic augmentation"),
        _col(MORPHOLOGY, "category", True, categories=MORPHOLOGIES),
        _col(FRACTURE_AGE_DAYS, "int", False, 0, 3650, description="days from pain onset to procedure"),
        _col(HEIGHT_LOSS_PCT, "float", False, 0, 100),
        _col(INTRAVERTEBRAL_CLEFT, "bool", True),
        _col(CORTICAL_DISRUPTION, "bool", True),
        _col(ENDPLATE_DISRUPTION, "bool", True),
        _col(BASIVERTEBRAL_FORAMEN, "bool", False),
        _col(CEMENT_TYPE, "category", True, categories=CEMENT_TYPES),
        _col(CEMENT_VISCOSITY, "category", True, categories=VISCOSITIES),
        _col(BALLOON_VOLUME_ML, "float", False, 0, 10),
        _col(CEMENT_VOLUME_ML, "float", True, 0, 15),
        _col(VERTEBRAL_BODY_VOLUME_ML, "float", False, 5, 100, description="CT segmentation volume"),
        _col(KYPHOTIC_ANGLE_PRE, "float", False, -10, 90),
        _col(KYPHOTIC_ANGLE_POST, "float", False, -10, 90),
        _col(LEAKAGE, "bool", False, description="any extravertebral cement; missing = not assessed"),
        _col(LEAKAGE_SITES, "sites", False, description="';'-joined leak sites"),
        _col(LEAKAGE_SYMPTOMATIC, "bool", False),
        _col(LEAKAGE_IMAGING, "category", False, categories=IMAGING_MODALITIES),
    ),
)

TABLES: dict[str, TableSpec] = {PROCEDURES.name: PROCEDURES, LEVELS.name: LEVELS}

# rule names used in quarantine reasons and tests
RULE_TYPE = "type"
RULE_REQUIRED = "required"
RULE_RANGE = "range"
RULE_CATEGORY = "category"
RULE_FORMAT = "format"
RULE_UNIQUE = "unique_key"
RULE_VERTEBRA_UNIQUE = "vertebra_unique_within_procedure"
RULE_N_LEVELS = "n_levels_equals_level_rows"
RULE_SITES_IFF_LEAKAGE = "leakage_sites_iff_leakage"
RULE_SYMPTOMATIC = "symptomatic_requires_leakage"
RULE_ORPHAN_LEVEL = "level_without_procedure"
RULE_PROCEDURE_QUARANTINED = "procedure_quarantined"
RULE_LEVEL_QUARANTINED = "level_quarantined"
RULE_ALREADY_REGISTERED = "already_registered"
RULE_CONTROL_CHARACTER = "control_character"

_SITES_REGEX = "(?:{0})(?:;(?:{0}))*".format("|".join(LEAKAGE_SITE_NAMES))


def _column_checks(spec: ColumnSpec, *, as_of_year: int) -> list[pa.Check]:
    high = as_of_year if spec.name == PROCEDURE_YEAR else spec.high
    if spec.kind == "id":
        return [pa.Check.str_matches(f"^{ID_PATTERN}$", name=RULE_FORMAT)]
    if spec.kind == "category":
        return [pa.Check.isin(list(spec.categories), name=RULE_CATEGORY)]
    if spec.kind == "sites":
        return [pa.Check.str_matches(f"^{_SITES_REGEX}$", name=RULE_FORMAT)]
    if spec.kind in ("int", "float") and (spec.low is not None or high is not None):
        if high is None:
            return [pa.Check.ge(spec.low, name=RULE_RANGE)]
        return [pa.Check.in_range(spec.low, high, name=RULE_RANGE)]
    return []


def range_text(spec: ColumnSpec, *, as_of_year: int) -> str:
    """The rule text of a column, with 'this year' filled in for procedure_year."""
    if spec.name == PROCEDURE_YEAR:
        return f"must be between {FIRST_PROCEDURE_YEAR} and {as_of_year}"
    return spec.rule_text()


def _sites_iff_leakage(frame: pd.DataFrame) -> pd.Series:
    has_sites = frame[LEAKAGE_SITES].fillna("").str.len() > 0
    leak_true = frame[LEAKAGE].fillna(False).astype(bool)
    return (has_sites == leak_true).astype(bool)


def _symptomatic_requires_leakage(frame: pd.DataFrame) -> pd.Series:
    symptomatic = frame[LEAKAGE_SYMPTOMATIC].fillna(False).astype(bool)
    leak_true = frame[LEAKAGE].fillna(False).astype(bool)
    return (~symptomatic | leak_true).astype(bool)


def table_schema(table: TableSpec, *, as_of_year: int | None = None) -> pa.DataFrameSchema:
    """The pandera schema of one table, for frames already coerced to the contract's dtypes.

    Row-level rules only; rules that need both tables are in :func:`cross_table_violations`.
    """
    year = as_of_year if as_of_year is not None else current_year()
    columns = {
        spec.name: pa.Column(
            spec.pandas_dtype,
            checks=_column_checks(spec, as_of_year=year),
            nullable=not spec.required,
            unique=(table.key == (spec.name,)),
            required=True,
        )
        for spec in table.columns
    }
    checks: list[pa.Check] = []
    if table.name == LEVELS.name:
        checks = [
            pa.Check(_sites_iff_leakage, name=RULE_SITES_IFF_LEAKAGE),
            pa.Check(_symptomatic_requires_leakage, name=RULE_SYMPTOMATIC),
        ]
    return pa.DataFrameSchema(columns, checks=checks, strict=False, coerce=False, name=table.name)


def rule_message(rule: str, *, table: str, column: str | None = None) -> str:
    """Words for a table-level or cross-table rule."""
    messages = {
        RULE_UNIQUE: f"{column} must be unique in {table}; this key occurs more than once",
        RULE_VERTEBRA_UNIQUE: "vertebra must be unique within a procedure; this vertebra occurs twice",
        RULE_N_LEVELS: "n_levels must equal the number of level rows of the procedure",
        RULE_SITES_IFF_LEAKAGE: "leakage_sites must be non-empty exactly when leakage is true",
        RULE_SYMPTOMATIC: "leakage_symptomatic must be false or missing when leakage is not true",
        RULE_ORPHAN_LEVEL: "level has no procedure with its procedure_id in this batch",
        RULE_PROCEDURE_QUARANTINED: "its procedure is quarantined",
        RULE_LEVEL_QUARANTINED: "a level row of this procedure is quarantined",
        RULE_ALREADY_REGISTERED: "procedure_id is already in the registry from an earlier batch",
        RULE_CONTROL_CHARACTER: (f"{column} holds a control character (NUL, a line break or another C0 character "
                                 "other than tab); the cell is kept as it came, in the quarantine file"),
    }
    return messages[rule]


def cross_table_violations(procedures: pd.DataFrame, levels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows that break a rule spanning both tables.

    Parameters
    ----------
    procedures, levels
        Frames coerced to the contract dtypes, any index.

    Returns
    -------
    (procedure_failures, level_failures)
        Frames with columns ``index`` (the row's index label), ``column`` and ``rule``.
    """
    level_failures = []
    dup_vertebra = levels.duplicated([PROCEDURE_ID, VERTEBRA], keep=False) & levels[VERTEBRA].notna()
    level_failures.append(_failures(levels.index[dup_vertebra], VERTEBRA, RULE_VERTEBRA_UNIQUE))
    orphan = ~is_in(levels[PROCEDURE_ID], procedures[PROCEDURE_ID])
    level_failures.append(_failures(levels.index[orphan], PROCEDURE_ID, RULE_ORPHAN_LEVEL))

    counts = levels[PROCEDURE_ID].value_counts()
    level_rows = procedures[PROCEDURE_ID].map(counts).fillna(0).astype("int64")
    mismatch = procedures[N_LEVELS].notna() & (procedures[N_LEVELS].astype("Float64") != level_rows).fillna(True)
    procedure_failures = _failures(procedures.index[mismatch], N_LEVELS, RULE_N_LEVELS)
    return procedure_failures, pd.concat(level_failures, ignore_index=True)


def is_in(values: pd.Series, among: pd.Series | Iterable[str]) -> np.ndarray:
    """``values.isin(among)`` for text, computed by Arrow (pandas' isin on Arrow-backed strings walks the values in
    Python: seconds per million ids). A missing value is in nothing.

    Returns
    -------
    numpy.ndarray of bool, aligned with ``values``.
    """
    if not isinstance(among, pd.Series):
        among = pd.Series(list(among), dtype=TEXT_DTYPE)
    haystack = pa_arrow.array(among.astype(TEXT_DTYPE).dropna(), type=pa_arrow.string()).unique()
    needles = pa_arrow.array(values.astype(TEXT_DTYPE), type=pa_arrow.string())
    found = pc.fill_null(pc.is_in(needles, value_set=haystack, skip_nulls=True), False)
    return found.to_numpy(zero_copy_only=False).astype(bool)


def _failures(index: pd.Index, column: str, rule: str) -> pd.DataFrame:
    return pd.DataFrame({"index": index.to_numpy(), "column": column, "rule": rule})
