"""The run summary shown as a Prefect artifact: the night's counts, decisions and drift, small counts withheld."""

from __future__ import annotations

import re

from reports.summary import run_summary_markdown

MANIFEST = {
    "run_id": "20261125T020000Z-abc123", "status": "ok", "reason": None, "source": "warehouse",
    "tables": {"procedures": {"rows_in": 1200, "rows_accepted": 1195, "rows_quarantined": 5,
                              "rows_skipped_registered": 0, "columns_dropped": [], "quarantine_rules": {"range": 5}},
               "levels": {"rows_in": 1900, "rows_accepted": 1880, "rows_quarantined": 20,
                          "rows_skipped_registered": 0, "columns_dropped": [], "quarantine_rules": {"range": 20}}},
    "batches_loaded": [45], "batches_skipped": [], "registry": {"batches_before": 44, "batches_after": 45},
    "models": {"trained": True, "reason": "the new batches drifted: observed/expected ratio 1.31 excludes 1",
               "outcomes": {"leakage_any": {"fitted": True, "version": "v0002", "champion": True},
                            "infection_90d": {"fitted": False, "version": None, "champion": False}},
               "drift": {"drifted": True, "reasons": ["observed/expected ratio 1.31 excludes 1"]},
               "warnings": ["covariate shift: PSI of cement_volume_ml is 0.31 (higher)"]},
    "outputs": {"report": "/ws/runs/x/report.html", "qi_units": "/ws/runs/x/qi_units.csv", "submission": None},
    "timings_seconds": {"read": 1.25, "report": 10.0},
}


def test_summary_tells_the_night_and_withholds_small_counts():
    text = run_summary_markdown(MANIFEST)
    assert text.startswith("# cementrisk run 20261125T020000Z-abc123: ok")
    assert "| procedures | 1,200 | <11 | <11 | 0 |" in text  # 5 quarantined; 1,195 would give it away
    # the second table's cells are withheld as the complement (one table of counts, one suppression pass)
    assert "| levels | 1,900 | <11 | <11 | 0 |" in text
    assert "**Models retrained:** the new batches drifted" in text
    assert "- leakage_any: v0002 (champion)" in text and "- infection_90d: no model" in text
    assert "**DRIFT** (calibration): observed/expected ratio 1.31 excludes 1" in text
    assert "- covariate shift: PSI of cement_volume_ml is 0.31 (higher)" in text  # a warning, not a reason
    assert "`/ws/runs/x/report.html`" in text and "read 1.2" in text
    table_counts = re.findall(r"\| (\d[\d,]*) ", text)
    assert not [c for c in table_counts if 0 < int(c.replace(",", "")) < 11]


def test_a_refused_run_says_why():
    refused = {**MANIFEST, "status": "refused", "reason": "identifier column found: patient_name (name)",
               "models": {}, "outputs": {}}
    text = run_summary_markdown(refused)
    assert "refused" in text.splitlines()[0] and "**Reason:** identifier column found" in text
    assert "Report" not in text


def test_the_key_tables_hold_models_drift_and_only_flagged_units():
    import pandas as pd

    from reports.summary import run_summary_tables

    manifest = {**MANIFEST, "models": {**MANIFEST["models"], "drift": {
        "drifted": True, "reasons": ["PSI of cement_volume_ml is 0.31"],
        "features": [{"feature": "cement_volume_ml", "kind": "numeric", "psi": 0.31, "band": "major"},
                     {"feature": "age_years", "kind": "numeric", "psi": 0.02, "band": "stable"}],
        "calibration": {"drifted": False, "reason": "observed/expected ratio 1.010 includes 1"}}}}
    qi_units = pd.DataFrame({"unit_type": ["site", "site", "operator"], "unit_id": ["S1", "S2", "O9"],
                             "outcome": "leakage_any", "n": [400, 500, "<11"], "observed": [90, 80, "<11"],
                             "expected": [60.0, 81.0, 3.1], "oe_ratio": [1.5, 0.99, None],
                             "alarm": ["high", "", "withheld"], "q_high": [0.004, 0.6, None],
                             "q_low": [1.0, 0.5, None], "alarm_survives_fdr": [True, False, False]})
    tables = run_summary_tables(manifest, qi_units)
    assert [row["outcome"] for row in tables["models"]] == ["leakage_any", "infection_90d"]
    assert tables["drift"][0]["check"] == "calibration of the leakage champion"
    # a major PSI is a warning; only the champion's calibration drifts
    assert [(row["check"], row["drifted"], row["warning"]) for row in tables["drift"][1:]] == [
        ("PSI cement_volume_ml", False, True), ("PSI age_years", False, False)]
    assert [row["unit_id"] for row in tables["qi_flags"]] == ["S1"] and tables["qi_flags"][0]["alarm"] == "high"
    assert tables["qi_flags"][0]["alarm_survives_fdr"] is True
    assert run_summary_tables({**MANIFEST, "models": {}})["models"][0]["fitted"] is False
