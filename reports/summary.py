"""The night's story in a few lines of markdown: counts, quarantine, model decisions, drift, where the report is.

Shown as a Prefect artifact of each run (so the Prefect UI alone tells what happened) and usable anywhere
else; counts from 1 to 10 are shown as ``<11`` like every other published count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.suppression import SUPPRESSED, is_small
from reports.figures import data_figures
from reports.qi import FLAG_HIGH, FLAG_LOW


def run_summary_markdown(manifest: Mapping[str, Any]) -> str:
    """Markdown of one run from its manifest (as a dict)."""
    lines = [f"# cementrisk run {manifest['run_id']}: {manifest['status']}", ""]
    if manifest.get("reason"):
        lines += [f"**Reason:** {manifest['reason']}", ""]
    lines += ["| table | rows in | accepted | quarantined | already registered |", "|---|---:|---:|---:|---:|"]
    for name, counts in data_figures(manifest)["tables"].items():  # counts withheld as in the report
        lines.append(f"| {name} | {_count(counts['rows_in'])} | {_count(counts['rows_accepted'])} | "
                     f"{_count(counts['rows_quarantined'])} | {_count(counts['rows_skipped_registered'])} |")
    batches = ", ".join(str(b) for b in manifest.get("batches_loaded", [])) or "none (nothing new)"
    registry = manifest.get("registry") or {}
    lines += ["", f"**Batches loaded:** {batches}; batches registered {registry.get('batches_before', '-')} -> "
                  f"{registry.get('batches_after', '-')}."]
    if manifest.get("batches_replaced"):
        lines.append("**Batches replaced** (corrections; the registered rows kept in the registry's history): "
                     + ", ".join(str(b) for b in manifest["batches_replaced"]) + ".")
    for refusal in manifest.get("batches_refused") or []:
        lines.append(f"**Batch {refusal['batch']} refused:** {refusal['reason']}")
    models = manifest.get("models") or {}
    if models:
        verb = "retrained" if models.get("trained") else "not retrained"
        lines += ["", f"**Models {verb}:** {models.get('reason', '')}"]
        for name, info in (models.get("outcomes") or {}).items():
            state = ("no model" if not info.get("fitted") else
                     f"{info.get('version')} ({'champion' if info.get('champion') else 'not promoted by the gate'})")
            lines.append(f"- {name}: {state}")
        drift = models.get("drift") or {}
        if drift:
            flag = ("**DRIFT** (calibration): " + "; ".join(drift.get("reasons", [])) if drift.get("drifted")
                    else "no calibration drift")
            lines += ["", f"**Drift of the new batches:** {flag}"]
        warnings = models.get("warnings") or []
        if warnings:
            lines += ["", "**Warnings (covariate shift; not a reason to retrain while the champion stays calibrated):**",
                      *[f"- {text}" for text in warnings]]
    outputs = manifest.get("outputs") or {}
    if outputs.get("report"):
        lines += ["", f"**Report:** `{outputs['report']}`", f"**QI table:** `{outputs.get('qi_units')}`",
                  f"**Submission:** `{outputs.get('submission') or 'none'}`"]
    timings = manifest.get("timings_seconds") or {}
    if timings:
        lines += ["", "Seconds per step: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())]
    return "\n".join(lines) + "\n"


def _count(value: Any) -> str:
    return SUPPRESSED if isinstance(value, int) and is_small(value) else f"{value:,}" if isinstance(value, int) \
        else str(value)


def run_summary_tables(manifest: Mapping[str, Any], qi_units: Any = None) -> dict[str, list[dict[str, Any]]]:
    """The key tables of a run for the Prefect UI: models, drift of the new batches, flagged QI units.

    ``qi_units`` is the run's QI table (already suppressed); only units in alarm (beyond the alarm limits) are
    listed, with their q-value; a unit whose verdict is withheld is never listed.
    """
    models = manifest.get("models") or {}
    tables: dict[str, list[dict[str, Any]]] = {}
    tables["models"] = [{"outcome": name, "fitted": bool(info.get("fitted")), "version": info.get("version"),
                         "champion": bool(info.get("champion"))}
                        for name, info in (models.get("outcomes") or {}).items()] or [
        {"outcome": "all", "fitted": False, "version": None, "champion": False,
         "decision": models.get("reason", "not trained")}]
    drift = models.get("drift") or {}
    rows = [{"check": f"PSI {row['feature']}", "value": row["psi"], "band": row["band"],
             "drifted": False, "warning": row["band"] == "major"} for row in drift.get("features", [])]
    calibration = drift.get("calibration")
    if calibration:
        rows.insert(0, {"check": "calibration of the leakage champion", "value": calibration.get("reason", ""),
                        "band": "drifted" if calibration.get("drifted") else "calibrated",
                        "drifted": bool(calibration.get("drifted")), "warning": False})
    tables["drift"] = rows
    flagged = []
    if qi_units is not None and len(qi_units):
        outside = qi_units[qi_units["alarm"].isin([FLAG_HIGH, FLAG_LOW])]
        flagged = [{k: (None if v != v else v) for k, v in row.items()}  # NaN -> None
                   for row in outside[["unit_type", "unit_id", "outcome", "n", "observed", "expected", "oe_ratio",
                                       "alarm", "q_high", "q_low", "alarm_survives_fdr"]].astype(object).to_dict(
                       orient="records")]
    tables["qi_flags"] = flagged
    return tables
