"""Every figure of one run's report, JSON-ready: what metrics.json holds and report.html shows.

Pure functions of the registry, its scores, the models' figures and the run's manifest. Every count
that leaves is passed through :mod:`models.suppression` first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.matrices import build_level_frame, build_procedure_frame
from models.outcomes import OUTCOMES
from models.scoring import Scores
from records import schema as s
from reports import completeness, qi, verdicts
from reports.attention import attention, calibration_figures
from reports import seed_outcomes as so
from models.suppression import SUPPRESSED, is_small, suppress_table
from reports.trends import observed_rates_by_year

MONITORED = "leakage_any"
VLAD_POINTS = 200
FUNNEL_GRID = 120
COMPLETENESS_PROCEDURE_COLUMNS = (s.PROCEDURE_ID, s.SITE_ID, s.PROCEDURE_YEAR, s.INFECTION_90D)
COMPLETENESS_LEVEL_COLUMNS = (s.PROCEDURE_ID, s.LEAKAGE, s.LEAKAGE_IMAGING)
"""The registry columns the data completeness reads (:func:`qi_figures`)."""
PUBLISHED, INTERNAL = "published", "internal"
AUDIENCES = (PUBLISHED, INTERNAL)
TITLES = {"leakage_any": "Any cement leakage (per level)", "leakage_canal": "Leakage into the canal (per level)",
          "leakage_venous": "Venous leakage (per level)", "infection_90d": "Infection within 90 days (per procedure)"}


@dataclass(frozen=True)
class ReportFigures:
    """The figures (metrics.json) and the QI unit table (qi_units.csv) of one run."""

    figures: dict[str, Any]
    qi_units: pd.DataFrame


def outcome_frames(procedures: pd.DataFrame, levels: pd.DataFrame,
                   scores: Scores | None) -> dict[str, pd.DataFrame]:
    """Per outcome: eligible rows with site, operator, year, order keys, the label ``y`` and risk ``p``."""
    frames = {"level": build_level_frame(procedures, levels), "procedure": build_procedure_frame(procedures)}
    keys = {"level": [s.PROCEDURE_ID, s.VERTEBRA], "procedure": [s.PROCEDURE_ID]}
    out = {}
    for spec in OUTCOMES:
        frame = frames[spec.unit]
        eligible, y = spec.labels(frame)
        rows = frame.loc[eligible, [*keys[spec.unit], s.SITE_ID, s.OPERATOR_ID, s.PROCEDURE_YEAR,
                                    s.EXTRACT_BATCH]].reset_index(drop=True)
        rows["y"] = y
        risk = None
        if scores is not None:
            scored = scores.levels if spec.unit == "level" else scores.procedures
            if spec.risk_column in scored and scored[spec.risk_column].notna().all():
                risk = rows[keys[spec.unit]].merge(scored[[*keys[spec.unit], spec.risk_column]], how="left",
                                                   on=keys[spec.unit], validate="one_to_one")[spec.risk_column]
        rows["p"] = np.nan if risk is None else risk.to_numpy(dtype=float)
        out[spec.name] = rows
    return out


def trends_figures(frames: Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """Observed rate per procedure year of each outcome (suppressed)."""
    out = {}
    for spec in OUTCOMES:
        table = observed_rates_by_year(frames[spec.name], outcome="y")
        rows = [{"year": None if r["all_years"] else int(r[s.PROCEDURE_YEAR]), "n": r["n"], "events": r["events"],
                 "rate": _num(r["rate"]), "low": _num(r["ci_low"]), "high": _num(r["ci_high"])}
                for r in table.to_dict(orient="records")]
        out[spec.name] = {"title": TITLES.get(spec.name, spec.name), "rows": [r for r in rows if r["year"] is not None],
                          "all_years": next(r for r in rows if r["year"] is None)}
    return out


def qi_figures(frames: Mapping[str, pd.DataFrame], published: Mapping[str, bool], *, audience: str = PUBLISHED,
               limits: tuple[float, float] = (verdicts.ALERT, verdicts.ALARM),
               procedures: pd.DataFrame | None = None,
               levels: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict, dict, dict]:
    """(qi_units table, QI figures, monitoring figures, completeness figures) for ``audience``: 'published' withholds
    as a count every verdict of a unit whose observed count is withheld; 'internal' keeps exact counts and every
    verdict. Each unit carries its site's data completeness beside its verdicts.

    The QI table and the completeness table share cells (a site's assessed levels are its levels minus those not
    assessed; its infection denominator is its procedures minus those without follow-up), so they are suppressed
    together: what one withholds the other withholds, until neither withholds anything new.
    """
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {AUDIENCES}; got {audience!r}")
    alert, alarm = limits
    found = verdicts.unit_verdicts(frames, published, alert=alert, alarm=alarm)
    complete = None
    if procedures is not None and len(procedures) and set(COMPLETENESS_PROCEDURE_COLUMNS) <= set(procedures.columns):
        complete = completeness.site_completeness(procedures, levels)
    if audience == INTERNAL:
        units = found.units.assign(verdict_withheld=False)
        table = complete.table if complete is not None else None
    else:
        units, table = _suppress_together(found.units, complete)
    complete_block = _completeness_block(complete, table)
    units = _with_completeness(units, complete_block)
    signals = found.signals if audience == INTERNAL else verdicts.signals_publishable(found.signals, units)
    blocks = {}
    for (outcome, unit_type), result in found.funnels.items():
        rows = units[(units["outcome"] == outcome) & (units["unit_type"] == unit_type)]
        blocks.setdefault(outcome, {"title": TITLES.get(outcome, outcome), "units": {}})["units"][unit_type] = \
            _funnel_block(rows, result, frames[outcome], unit_type=unit_type)
    signals = signals.sort_values(["outcome", "unit_type", "unit_id", "case"], kind="stable")
    if audience != INTERNAL:  # case numbers give run lengths (their differences) and, with h, a count of events
        signals = signals.drop(columns=["case", "since_reset", "value"])
    monitoring = _monitoring_block(frames.get(MONITORED) if published.get(MONITORED) else None, units, signals)
    levels = {"alert": alert, "alarm": alarm, "fdr": verdicts.FDR_LEVEL}
    return units, {"outcomes": blocks, "levels": levels, "methods": found.methods}, monitoring, complete_block


_SHARED_N = {"infection_90d": completeness.INFECTION_MISSING}
"""Per outcome, the completeness count whose complement is the QI site row's n (level outcomes: assessed levels)."""


def _suppress_together(units: pd.DataFrame, complete: Any) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if complete is None or units.empty:
        return verdicts.publishable(units), None if complete is None else complete.published()
    c = completeness
    sites = complete.table[s.SITE_ID].astype(str).to_numpy()
    site_rows = (units["unit_type"] == "site").to_numpy()
    shared = np.array([_SHARED_N.get(o, c.LEAKAGE_ASSESSED) for o in units["outcome"]])
    unit_sites = units["site_id"].astype(str).to_numpy()
    already = {name: np.zeros(len(sites), dtype=bool) for name in (c.LEAKAGE_ASSESSED, c.INFECTION_MISSING)}
    for _ in range(10):
        table = complete.published(already=already)
        hidden = {name: set(sites[(table[name] == SUPPRESSED).to_numpy()])
                  for name in (c.LEAKAGE_ASSESSED, c.INFECTION_MISSING, c.PROCEDURES)}
        hidden[c.INFECTION_MISSING] |= hidden[c.PROCEDURES]  # the complement needs both
        mark = site_rows & np.array([site in hidden[name] for name, site in zip(shared, unit_sites)], dtype=bool)
        public = verdicts.publishable(units, withheld_n=mark)
        held = site_rows & (public["n"] == SUPPRESSED).to_numpy()
        grown = {name: already[name] | np.isin(sites, unit_sites[held & (shared == name)]) for name in already}
        if all((grown[name] == already[name]).all() for name in already):
            return public, table
        already = grown
    raise RuntimeError("the QI and completeness tables' suppression did not settle in 10 rounds")


def _funnel_block(rows: pd.DataFrame, result: qi.FunnelResult, frame: pd.DataFrame, *, unit_type: str) -> dict:
    shown = rows[~rows["verdict_withheld"]]
    e = rows["expected"].to_numpy(dtype=float)
    grid = np.geomspace(max(float(e.min()) * 0.8, 0.05), max(float(e.max()) * 1.2, 1.0), FUNNEL_GRID)
    mean_risk = float(frame["p"].mean())
    limits = {}
    for label, level in ((f"{100 * result.alert:g}%", result.alert), (f"{100 * result.alarm:g}%", result.alarm)):
        limits[label] = [_round_list(x) for x in qi.typical_limits(grid, mean_risk=mean_risk, tau2=result.tau2,
                                                                    level=level)]
    hidden = len(rows) - len(shown)
    method = result.method + (f". {hidden} {unit_type}s whose observed count is withheld are not plotted and have "
                              f"no published verdict." if hidden else "")
    return {"method": method, "phi": _num(result.phi), "tau2": _num(result.tau2),
            "overdispersed": bool(result.overdispersed),
            "points": {"expected": _round_list(shown["expected"]), "oe_ratio": _round_list(shown["oe_ratio"]),
                       "unit_id": shown["unit_id"].tolist(), "alarm": shown["alarm"].tolist(),
                       "alert": shown["alert"].tolist()},
            "limit_grid": _round_list(grid), "limits": limits,
            "rows": [_jsonable(r) for r in rows.to_dict(orient="records")]}


def _monitoring_block(frame: pd.DataFrame | None, units: pd.DataFrame, signals: pd.DataFrame) -> dict[str, Any]:
    """VLAD per site for any leakage (registry order) and every CUSUM signal of the published units."""
    title = TITLES[MONITORED]
    listed = [_jsonable(r) for r in signals.to_dict(orient="records")] if len(signals) else []
    if frame is None or frame.empty or frame["p"].isna().any():
        return {"title": title, "sites": [], "signals": listed,
                "reason": "no published leakage model: nothing to monitor"}
    ordered = frame.sort_values([s.SITE_ID, s.PROCEDURE_YEAR, s.EXTRACT_BATCH, s.PROCEDURE_ID, s.VERTEBRA],
                                kind="stable")
    mine = units[(units["outcome"] == MONITORED) & (units["unit_type"] == "site")].set_index("unit_id")
    sites, withheld = [], 0
    for site, part in ordered.groupby(s.SITE_ID, sort=True, observed=True):
        y, p = part["y"].to_numpy(dtype=float), part["p"].to_numpy(dtype=float)
        events = int(y.sum())
        if is_small(len(y)) or is_small(events) or is_small(len(y) - events) or \
                bool(mine["verdict_withheld"].get(str(site), True)):
            withheld += 1
            continue
        path = qi.vlad(y, p)
        at = np.unique(np.linspace(0, len(path) - 1, min(VLAD_POINTS, len(path))).round().astype(int))
        sites.append({"site": str(site), "n": len(y), "vlad_final": round(float(path[-1]), 2),
                      "vlad_path": _round_list(path[at]), "vlad_case": at.tolist(),
                      "cusum_h": _num(mine.at[str(site), "cusum_h"]),
                      "cusum_signals": _num(mine.at[str(site), "cusum_signals"]),
                      "cusum_last_signal_year": mine.at[str(site), "cusum_last_signal_year"]})
    caption = ("Running sum of expected minus observed leaks per site (up: fewer leaks than the case mix "
               "predicts). Levels in registry order (procedure year, extract batch, procedure).")
    if withheld:
        caption += (f" {withheld} sites are not charted: their levels, leaks or non-leaks number 1 to 10, or their "
                    f"verdicts are withheld.")
    return {"title": title, "caption": caption, "sites": sites, "signals": listed}


def _completeness_block(found: Any, table: pd.DataFrame | None) -> dict:
    """Data completeness per site for the report: ``table`` is the raw table (internal) or the published one."""
    if found is None or table is None:
        return {"method": "no procedures: completeness not assessed", "header": [], "rows": [], "sites": [],
                "assessed": False}
    header = ["site", "procedures", "levels", "leakage not assessed", "share", "imaging not recorded", "share",
              "infection follow-up missing", "share", "expected share", "latest-year volume / expected", "poor",
              "reasons"]
    rows, sites = [], []
    c = completeness
    for r in table.to_dict(orient="records"):
        poor = r[c.POOR]
        verdict = "withheld" if poor is None or pd.isna(poor) else ("poor" if bool(poor) else "ok")
        rows.append([str(r[s.SITE_ID]), r[c.PROCEDURES], r[c.LEVELS], r[c.LEAKAGE_NOT_ASSESSED], _num(r[c.LEAKAGE_SHARE]),
                     r[c.IMAGING_MISSING], _num(r[c.IMAGING_SHARE]), r[c.INFECTION_MISSING],
                     _num(r[c.INFECTION_SHARE]), _num(r[c.INFECTION_EXPECTED_SHARE]), _num(r[c.VOLUME_RATIO]),
                     verdict, "; ".join([*r[c.REASONS], *r[c.NOTES]])])
        sites.append({"site_id": str(r[s.SITE_ID]), "poor": verdict == "poor", "verdict": verdict,
                      "reasons": list(r[c.REASONS])})
    return {"method": found.method, "header": header, "rows": [[_cell(v) for v in row] for row in rows],
            "sites": sites, "assessed": True}


def _cell(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return _num(value)
    return value


def _with_completeness(units: pd.DataFrame, figures: Mapping[str, Any]) -> pd.DataFrame:
    """The verdict table with each unit's site completeness beside it ('poor', 'ok', 'withheld')."""
    verdict = {row["site_id"]: row["verdict"] for row in figures.get("sites", [])}
    out = units.copy()
    out["site_completeness"] = out["site_id"].map(verdict).fillna("not assessed") if len(out) else []
    return out


def seed_outcome_figures(procedures: pd.DataFrame, levels: pd.DataFrame) -> dict[str, Any]:
    table = so.seed_outcomes(procedures, levels)
    header = list(table.columns)
    return {"header": header, "rows": [_jsonable(r) for r in table.to_dict(orient="records")]}


def data_figures(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What was loaded and quarantined in this run, with quarantine counts by rule suppressed."""
    tables = {}
    for name, counts in manifest["tables"].items():
        tables[name] = {k: counts[k] for k in ("rows_in", "rows_accepted", "rows_quarantined",
                                               "rows_skipped_registered", "columns_dropped")}
    frame = pd.DataFrame({"table": list(tables), **{k: [t[k] for t in tables.values()]
                                                    for k in ("rows_in", "rows_accepted", "rows_quarantined")}})
    # accepted = in - quarantined: withheld with quarantined (the pair protects both), shown as withheld too
    frame = suppress_table(frame, count_columns=["rows_in", "rows_quarantined"],
                           complements={"rows_quarantined": "rows_in"}, derived={"rows_accepted": ["rows_quarantined"]},
                           row_total="rows_in", unprotectable="withhold")
    for row in frame.to_dict(orient="records"):
        accepted = SUPPRESSED if row["rows_quarantined"] == SUPPRESSED else int(row["rows_accepted"])
        tables[row["table"]].update(rows_in=row["rows_in"], rows_accepted=accepted,
                                    rows_quarantined=row["rows_quarantined"])
    rules = pd.DataFrame([{"table": name, "rule": rule, "rows": int(n)}
                          for name, counts in manifest["tables"].items()
                          for rule, n in sorted(counts.get("quarantine_rules", {}).items())],
                         columns=["table", "rule", "rows"])
    if len(rules):
        rules = suppress_table(rules, count_columns=["rows"], group_by=["table"], unprotectable="withhold")
    models = manifest.get("models") or {}
    drift = models.get("drift") or {}
    retraining = {"trained": bool(models.get("trained")), "reason": models.get("reason", ""),
                  "drifted": drift.get("drifted"), "drift_reasons": list(drift.get("reasons", [])),
                  "features": list(drift.get("features", []))[:5], "warnings": list(models.get("warnings") or [])}
    return {"source": manifest["source"], "status": manifest["status"], "reason": manifest.get("reason"),
            "retraining": retraining,
            "tables": tables, "rules": [_jsonable(r) for r in rules.to_dict(orient="records")],
            "batches_loaded": list(manifest.get("batches_loaded", [])),
            "batches_skipped": list(manifest.get("batches_skipped", []))}


def build_figures(*, run: Mapping[str, Any], manifest: Mapping[str, Any], procedures: pd.DataFrame,
                  levels: pd.DataFrame, scores: Scores | None, model_metrics: Mapping[str, dict],
                  submission: Mapping[str, Any], watermark: int,
                  frames: Mapping[str, pd.DataFrame] | None = None,
                  versions: Mapping[str, str | None] | None = None, audience: str = PUBLISHED,
                  limits: tuple[float, float] = (verdicts.ALERT, verdicts.ALARM)) -> ReportFigures:
    """All figures of one run; ``scores`` is None when no leakage model is published.

    ``frames`` (each outcome's labelled, scored rows, as :func:`outcome_frames` gives them) and ``versions`` (each
    outcome's champion) may come from the scored store instead of ``scores``; ``procedures`` and ``levels`` then need
    only the columns of the registry summary, the data completeness and the seed outcomes. ``audience`` 'internal'
    keeps the exact counts and every verdict of the QI sections (never published); ``limits`` are the two-sided
    levels of the alert and alarm limits.
    """
    if frames is None:
        frames = outcome_frames(procedures, levels, scores)
    if versions is None:
        versions = dict(scores.versions) if scores is not None else {}
    if not versions.get(MONITORED):
        versions = {}
    published = {spec.name: bool(versions.get(spec.name)) for spec in OUTCOMES}
    qi_units, qi_block, monitoring, complete = qi_figures(frames, published, audience=audience, limits=limits,
                                                          procedures=procedures, levels=levels)
    models = {name: {**block, "title": TITLES.get(name, name)} for name, block in model_metrics.items()}
    trends = trends_figures(frames)
    calibration = calibration_figures(frames, published, manifest, trends)
    figures = {
        "run": dict(run), "audience": audience,
        "registry": {"watermark": watermark, "procedures": len(procedures), "levels": len(levels),
                     "year_min": _int_or_none(procedures[s.PROCEDURE_YEAR].min()) if len(procedures) else None,
                     "year_max": _int_or_none(procedures[s.PROCEDURE_YEAR].max()) if len(procedures) else None},
        "attention": attention(qi_units, monitoring["signals"], calibration, complete, qi_block["levels"],
                               latest_year=_int_or_none(procedures[s.PROCEDURE_YEAR].max()) if len(procedures)
                               else None),
        "completeness": complete,
        "data": data_figures(manifest),
        "trends": trends,
        "outcomes": models,
        "qi": {**qi_block,
               "reason": "" if qi_block["outcomes"] else "no published model: sites and operators cannot be compared yet",
               "model_versions": dict(versions)},
        "calibration": calibration,
        "monitoring": monitoring,
        "seed_outcomes": seed_outcome_figures(procedures, levels) if len(procedures) else {"header": [], "rows": []},
        "submission": dict(submission),
    }
    return ReportFigures(figures=figures, qi_units=qi_units)


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def _int_or_none(value: Any) -> int | None:
    return None if pd.isna(value) else int(value)


def _round_list(values: Any) -> list[float | None]:
    return [_num(v) for v in np.asarray(values, dtype=float)]


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, str) or value is None:
            out[key] = value
        elif isinstance(value, (bool, np.bool_)):
            out[key] = bool(value)
        elif isinstance(value, (int, np.integer)):
            out[key] = int(value)
        elif pd.isna(value):
            out[key] = None
        else:
            out[key] = round(float(value), 6)
    return out
