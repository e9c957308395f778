"""Each contract rule is caught with a readable reason; rows are never lost; a bad level takes its procedure."""

from __future__ import annotations

import pandas as pd
import pytest

from records.errors import ContractError
from records.readers import RawBatch
from records.schema import (
    RULE_ALREADY_REGISTERED,
    RULE_CATEGORY,
    RULE_FORMAT,
    RULE_LEVEL_QUARANTINED,
    RULE_N_LEVELS,
    RULE_ORPHAN_LEVEL,
    RULE_PROCEDURE_QUARANTINED,
    RULE_RANGE,
    RULE_REQUIRED,
    RULE_SITES_IFF_LEAKAGE,
    RULE_SYMPTOMATIC,
    RULE_TYPE,
    RULE_UNIQUE,
    RULE_VERTEBRA_UNIQUE,
)
from records.validation import REASON, RULES, Registered, validate_batch
from tests.conftest import AS_OF_YEAR, make_batch


def _check(batch: RawBatch, **kwargs):
    result = validate_batch(batch, as_of_year=AS_OF_YEAR, **kwargs)
    assert_accounting(batch, result)
    return result


def assert_accounting(batch: RawBatch, result) -> None:
    """rows in = accepted + quarantined (+ skipped), per table, and the accepted tables are consistent."""
    for name, outcome in result.tables().items():
        raw_rows = len(batch.tables()[name])
        assert outcome.rows_in + outcome.skipped + outcome.refused == raw_rows, name
        assert outcome.rows_in == len(outcome.accepted) + len(outcome.quarantined)
        assert outcome.quarantined[REASON].notna().all() and (outcome.quarantined[REASON].str.len() > 0).all()
    accepted_ids = set(result.procedures.accepted["procedure_id"])
    assert set(result.levels.accepted["procedure_id"]) <= accepted_ids
    counts = result.levels.accepted["procedure_id"].value_counts()
    for pid, n in zip(result.procedures.accepted["procedure_id"], result.procedures.accepted["n_levels"]):
        assert counts.get(pid, 0) == n


def _quarantined_proc(result, pid: str) -> pd.Series:
    rows = result.procedures.quarantined[result.procedures.quarantined["procedure_id"] == pid]
    assert len(rows) >= 1, f"{pid} was not quarantined"
    return rows.iloc[0]


def test_valid_batch_is_accepted_whole(valid_batch):
    result = _check(valid_batch)
    assert len(result.procedures.accepted) == len(valid_batch.procedures)
    assert len(result.levels.accepted) == len(valid_batch.levels)
    assert result.procedures.quarantined.empty and result.levels.quarantined.empty
    assert result.batches() == [1]


# (table, row, column, bad value, rule, words the reason must contain)
PROCEDURE_CASES = [
    ("age_years", 12, RULE_RANGE, "age_years must be between 18 and 90"),
    ("asa_class", 6, RULE_RANGE, "asa_class must be between 1 and 5"),
    ("procedure_year", 1999, RULE_RANGE, f"procedure_year must be between 2000 and {AS_OF_YEAR}"),
    ("procedure_year", AS_OF_YEAR + 1, RULE_RANGE, "procedure_year must be between"),
    ("extract_batch", 0, RULE_RANGE, "extract_batch must be between 1 and 2147483647"),
    ("bmi_kg_m2", 80.0, RULE_RANGE, "bmi_kg_m2 must be between 12 and 70"),
    ("bmd_t_score", -7.0, RULE_RANGE, "bmd_t_score must be between -6 and 4"),
    ("procedure_minutes", 700.0, RULE_RANGE, "procedure_minutes must be between 5 and 600"),
    ("length_of_stay_days", 400, RULE_RANGE, "length_of_stay_days must be between 0 and 365"),
    ("pain_vas_pre", 11.0, RULE_RANGE, "pain_vas_pre must be between 0 and 10"),
    ("n_levels", 11, RULE_RANGE, "n_levels must be between 1 and 10"),
    ("sex", "x", RULE_CATEGORY, "sex must be one of f, m"),
    ("etiology", "infective", RULE_CATEGORY, "etiology must be one of osteoporotic, malignant, traumatic"),
    ("anesthesia", "spinal", RULE_CATEGORY, "anesthesia must be one of"),
    ("approach", "transpedicular", RULE_CATEGORY, "approach must be one of"),
    ("site_id", "site 1", RULE_FORMAT, "site_id must be 1-64 characters"),
    ("operator_id", "x" * 65, RULE_FORMAT, "operator_id must be 1-64 characters"),
    ("diabetes", None, RULE_REQUIRED, "diabetes is required but missing"),
    ("age_years", None, RULE_REQUIRED, "age_years is required but missing"),
    ("etiology", None, RULE_REQUIRED, "etiology is required but missing"),
]


@pytest.mark.parametrize(("column", "value", "rule", "words"), PROCEDURE_CASES)
def test_each_procedure_rule_is_caught_with_its_reason(column, value, rule, words):
    batch = make_batch(4)
    batch.procedures.loc[1, column] = value
    result = _check(batch)
    row = _quarantined_proc(result, "P00002")
    assert rule in row[RULES].split(",")
    assert words in row[REASON]
    if value is not None and len(str(value)) > 1:  # the value stays in the quarantined row, never in the reason
        assert str(value) not in row[REASON].replace(words, "")
    # the procedure's levels go with it, the others stay
    assert (result.levels.quarantined["procedure_id"] == "P00002").sum() == 1
    assert set(result.levels.quarantined[RULES]) == {RULE_PROCEDURE_QUARANTINED}
    assert len(result.procedures.accepted) == 3


LEVEL_CASES = [
    ("genant_grade", 4, RULE_RANGE, "genant_grade must be between 0 and 3"),
    ("fracture_age_days", 4000, RULE_RANGE, "fracture_age_days must be between 0 and 3650"),
    ("height_loss_pct", 101.0, RULE_RANGE, "height_loss_pct must be between 0 and 100"),
    ("balloon_volume_ml", 11.0, RULE_RANGE, "balloon_volume_ml must be between 0 and 10"),
    ("cement_volume_ml", 17.2, RULE_RANGE, "cement_volume_ml must be between 0 and 15"),
    ("cement_volume_ml", -0.5, RULE_RANGE, "cement_volume_ml must be between 0 and 15"),
    ("vertebral_body_volume_ml", 2.0, RULE_RANGE, "vertebral_body_volume_ml must be between 5 and 100"),
    ("kyphotic_angle_pre_deg", 95.0, RULE_RANGE, "kyphotic_angle_pre_deg must be between -10 and 90"),
    ("vertebra", "c5", RULE_CATEGORY, "vertebra must be one of t1"),
    ("morphology", "burst", RULE_CATEGORY, "morphology must be one of wedge, biconcave, crush"),
    ("cement_type", "bone_graft", RULE_CATEGORY, "cement_type must be one of pmma, calcium_phosphate"),
    ("cement_viscosity", "thick", RULE_CATEGORY, "cement_viscosity must be one of low, medium, high"),
    ("leakage_imaging", "mri", RULE_CATEGORY, "leakage_imaging must be one of xray, ct"),
    ("leakage_sites", "intradiscal;lung", RULE_FORMAT, "leakage_sites must be ';'-joined names"),
    ("cement_volume_ml", None, RULE_REQUIRED, "cement_volume_ml is required but missing"),
    ("cortical_disruption", None, RULE_REQUIRED, "cortical_disruption is required but missing"),
]


@pytest.mark.parametrize(("column", "value", "rule", "words"), LEVEL_CASES)
def test_each_level_rule_is_caught_and_quarantines_its_procedure(column, value, rule, words):
    batch = make_batch(4)
    # level row 0 is P00001's first level (leak, sites 'intradiscal'); P00001 has two levels
    batch.levels.loc[0, column] = value
    result = _check(batch)
    bad = result.levels.quarantined
    first = bad[bad["source_row"] == 1].iloc[0]
    assert rule in first[RULES].split(",")
    assert words in first[REASON]
    sibling = bad[bad["source_row"] == 2].iloc[0]
    assert sibling[RULES] == RULE_PROCEDURE_QUARANTINED
    proc = _quarantined_proc(result, "P00001")
    assert proc[RULES] == RULE_LEVEL_QUARANTINED
    assert "P00001" not in set(result.procedures.accepted["procedure_id"])
    assert len(result.levels.accepted) == len(batch.levels) - 2


def test_duplicate_procedure_id_quarantines_every_copy():
    batch = make_batch(4)
    batch.procedures.loc[3, "procedure_id"] = "P00003"
    result = _check(batch)
    dup = result.procedures.quarantined[result.procedures.quarantined["procedure_id"] == "P00003"]
    assert len(dup) == 2
    assert all(RULE_UNIQUE in r for r in dup[RULES])
    assert "procedure_id must be unique in procedures" in dup[REASON].iloc[0]


def test_vertebra_twice_in_a_procedure():
    batch = make_batch(2)
    batch.levels.loc[1, "vertebra"] = batch.levels.loc[0, "vertebra"]
    result = _check(batch)
    assert set(result.levels.quarantined.loc[result.levels.quarantined["source_row"].isin([1, 2]), RULES]) == {
        RULE_VERTEBRA_UNIQUE}
    assert "vertebra must be unique within a procedure" in result.levels.quarantined[REASON].iloc[0]


def test_n_levels_must_equal_level_rows():
    batch = make_batch(3)
    batch.procedures.loc[1, "n_levels"] = 3  # P00002 has one level row
    result = _check(batch)
    row = _quarantined_proc(result, "P00002")
    assert RULE_N_LEVELS in row[RULES]
    assert "n_levels must equal the number of level rows" in row[REASON]


def test_leakage_sites_nonempty_exactly_when_leakage():
    batch = make_batch(3)
    batch.levels.loc[0, "leakage_sites"] = None          # leak without sites
    batch.levels.loc[4, "leakage_sites"] = "venous"      # sites without leak (P00003 t12)
    result = _check(batch)
    rules = result.levels.quarantined.set_index("source_row")[RULES]
    assert RULE_SITES_IFF_LEAKAGE in rules[1] and RULE_SITES_IFF_LEAKAGE in rules[5]
    assert "leakage_sites must be non-empty exactly when leakage is true" in \
        result.levels.quarantined.set_index("source_row").loc[5, REASON]


def test_symptomatic_leak_requires_leakage():
    batch = make_batch(3)
    batch.levels.loc[4, "leakage_symptomatic"] = True   # leakage false (P00003 t12)
    result = _check(batch)
    assert RULE_SYMPTOMATIC in result.levels.quarantined.set_index("source_row").loc[5, RULES]
    assert "leakage_symptomatic must be false or missing" in \
        result.levels.quarantined.set_index("source_row").loc[5, REASON]


def test_level_without_procedure():
    batch = make_batch(3)
    batch.levels.loc[len(batch.levels) - 1, "procedure_id"] = "P99999"
    result = _check(batch)
    orphan = result.levels.quarantined[result.levels.quarantined["procedure_id"] == "P99999"]
    assert orphan[RULES].tolist() == [RULE_ORPHAN_LEVEL]
    assert orphan["extract_batch"].isna().all()


def test_unparseable_text_is_a_type_failure_not_a_missing_one():
    batch = make_batch(3)
    procedures = batch.procedures.astype({"age_years": "string"})
    procedures.loc[0, "age_years"] = "seventy"
    result = _check(RawBatch(procedures=procedures, levels=batch.levels, source="memory"))
    row = _quarantined_proc(result, "P00001")
    assert row[RULES].split(",")[0] == RULE_TYPE
    assert RULE_REQUIRED not in row[RULES]
    assert row[REASON] == "age_years must be a whole number" and row["age_years"] == "seventy"


def test_no_value_enters_a_reason():
    """Reasons name the column and the rule; the value (which may be a name) stays in the quarantined row."""
    batch = make_batch(3)
    batch.procedures.loc[0, "operator_id"] = "dr smith"
    batch.procedures.loc[1, "sex"] = "[/bold]Jane"
    result = _check(batch)
    reason = _quarantined_proc(result, "P00001")[REASON]
    assert reason == "operator_id must be 1-64 characters of A-Z a-z 0-9 _ -"
    assert _quarantined_proc(result, "P00002")[REASON] == "sex must be one of f, m"
    assert _quarantined_proc(result, "P00001")["operator_id"] == "dr smith"


def test_required_column_absent_refuses_the_table():
    batch = make_batch(3)
    with pytest.raises(ContractError, match="required column\\(s\\) absent: cement_volume_ml"):
        validate_batch(RawBatch(procedures=batch.procedures, levels=batch.levels.drop(columns="cement_volume_ml"),
                                source="memory"), as_of_year=AS_OF_YEAR)


def test_optional_columns_may_be_absent_and_unknown_ones_are_listed():
    batch = make_batch(3)
    procedures = batch.procedures.drop(columns=["bmi_kg_m2", "infection_90d"]).assign(ward_code="A")
    result = _check(RawBatch(procedures=procedures, levels=batch.levels, source="memory"))
    assert len(result.procedures.accepted) == 3
    assert result.procedures.accepted["bmi_kg_m2"].isna().all()
    assert result.procedures.dropped_columns == ("ward_code",)
    assert "ward_code" not in result.procedures.accepted.columns


def test_rows_of_registered_batches_are_skipped_and_known_ids_refused():
    old = make_batch(3, batch=1)
    new = make_batch(2, batch=2, start=10)
    batch = RawBatch(procedures=pd.concat([old.procedures, new.procedures], ignore_index=True),
                     levels=pd.concat([old.levels, new.levels], ignore_index=True), source="memory")
    result = _check(batch, registered=Registered(contents={1: None}, ids=["P00001", "P00011"]))
    assert result.procedures.skipped == 3 and result.levels.skipped == len(old.levels)
    assert result.procedures.rows_in == 2
    row = _quarantined_proc(result, "P00011")
    assert RULE_ALREADY_REGISTERED in row[RULES]
    assert result.procedures.accepted["procedure_id"].tolist() == ["P00010"]


def test_a_registry_lookup_gets_the_checked_ids_of_the_new_rows_only():
    old = make_batch(3, batch=1)
    new = make_batch(2, batch=2, start=10)
    new.procedures["procedure_id"] = new.procedures["procedure_id"].astype(object)
    new.procedures.loc[1, "procedure_id"] = " P00011 "  # checked as P00011
    new.levels["procedure_id"] = new.levels["procedure_id"].replace({"P00011": " P00011 "})
    batch = RawBatch(procedures=pd.concat([old.procedures, new.procedures], ignore_index=True),
                     levels=pd.concat([old.levels, new.levels], ignore_index=True), source="memory")
    asked = []

    def lookup(ids):
        asked.append(sorted(ids))
        return [i for i in ids if i == "P00011"]

    result = _check(batch, registered=Registered(contents={1: None}, ids=lookup))
    assert asked == [["P00010", "P00011"]]  # neither the skipped rows' ids nor the raw spelling
    assert RULE_ALREADY_REGISTERED in _quarantined_proc(result, " P00011 ")[RULES]  # the raw row is kept
    assert result.procedures.accepted["procedure_id"].tolist() == ["P00010"]


def test_reason_counts_summarise_rules():
    batch = make_batch(4)
    batch.procedures.loc[0, "sex"] = "u"
    batch.procedures.loc[1, "sex"] = "u"
    counts = _check(batch).reason_counts()
    assert counts["procedures"][RULE_CATEGORY] == 2
    assert counts["levels"][RULE_PROCEDURE_QUARANTINED] == 3
