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
from reports import qi
from reports import seed_outcomes as so
from models.suppression import SUPPRESSED, is_small, suppress_table
from reports.trends import observed_rates_by_year

UNIT_TYPES = {"site": s.SITE_ID, "operator": s.OPERATOR_ID}
MONITORED = "leakage_any"
VLAD_POINTS = 200
FUNNEL_GRID = 120
CUSUM_ODDS_RATIO, CUSUM_H = 2.0, 4.5
QI_COLUMNS = ("unit_type", "unit_id", "outcome", "n", "observed", "expected", "oe_ratio", "oe_low", "oe_high",
              "risk_adjusted_rate", "flag", "lower_998", "upper_998")
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


def qi_units_table(frames: Mapping[str, pd.DataFrame], published: Mapping[str, bool]) -> tuple[pd.DataFrame, dict]:
    """qi_units.csv and the QI figures: O/E and funnel per unit type and outcome with a published model."""
    tables, blocks = [], {}
    for spec in OUTCOMES:
        frame = frames[spec.name]
        if not published.get(spec.name) or frame["p"].isna().any() or frame.empty:
            continue
        units = {}
        for unit_type, column in UNIT_TYPES.items():
            table, block = _unit_block(frame, unit_type=unit_type, column=column, outcome=spec.name)
            tables.append(table)
            units[unit_type] = block
        blocks[spec.name] = {"title": TITLES.get(spec.name, spec.name), "units": units}
    qi_units = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(QI_COLUMNS))
    return qi_units, blocks


def _unit_block(frame: pd.DataFrame, *, unit_type: str, column: str, outcome: str) -> tuple[pd.DataFrame, dict]:
    table = qi.observed_expected(frame, unit=column, observed="y", expected="p")
    result = qi.funnel_assessment(table)
    t = result.table
    out = pd.DataFrame({"unit_type": unit_type, "unit_id": t[qi.UNIT].astype(str), "outcome": outcome,
                        "n": t[qi.N_CASES].astype(int), "observed": t[qi.OBSERVED].astype(int),
                        "expected": t[qi.EXPECTED].round(3), "oe_ratio": t[qi.OE_RATIO].round(4),
                        "oe_low": t[qi.OE_LOW].round(4), "oe_high": t[qi.OE_HIGH].round(4),
                        "risk_adjusted_rate": t[qi.RISK_ADJUSTED_RATE].round(5), "flag": t[qi.FLAG],
                        "lower_998": t["lower_998"].round(4), "upper_998": t["upper_998"].round(4),
                        "precision": t[qi.PRECISION]})
    withheld = suppress_table(out, count_columns=["n", "observed"], complements={"observed": "n"}, row_total="n",
                              unprotectable="withhold",
                              derived={"oe_ratio": ["observed"], "oe_low": ["observed"], "oe_high": ["observed"],
                                       "risk_adjusted_rate": ["observed"], "precision": ["observed"]})
    shown = withheld[withheld["observed"] != SUPPRESSED]
    top = float(max(out["precision"].max(), 1.0)) * 1.1
    grid = np.geomspace(max(float(out["precision"].min()) * 0.8, 0.05), top, FUNNEL_GRID)
    limits = {label: [_round_list(x) for x in qi.funnel_limits(grid, tau2=result.tau2, level=level)]
              for label, level in (("95%", 0.95), ("99.8%", 0.998))}
    hidden = len(out) - len(shown)
    method = result.method + (f" {hidden} {unit_type}s with 1 to 10 events or cases are not plotted (withheld)."
                              if hidden else "")
    block = {"method": method, "phi": _num(result.phi), "tau2": _num(result.tau2),
             "overdispersed": bool(result.overdispersed),
             "points": {"precision": _round_list(shown["precision"]), "oe_ratio": _round_list(shown["oe_ratio"]),
                        "unit_id": shown["unit_id"].tolist(), "flag": shown["flag"].tolist()},
             "limit_grid": _round_list(grid), "limits": limits,
             "rows": [_jsonable(r) for r in withheld[list(QI_COLUMNS)].to_dict(orient="records")]}
    return withheld[list(QI_COLUMNS)], block


def monitoring_figures(frame: pd.DataFrame | None) -> dict[str, Any]:
    """VLAD path and risk-adjusted CUSUM signals per site for any leakage, in registry order."""
    title = TITLES[MONITORED]
    if frame is None or frame.empty or frame["p"].isna().any():
        return {"title": title, "sites": [], "reason": "no published leakage model: nothing to monitor"}
    ordered = frame.sort_values([s.SITE_ID, s.PROCEDURE_YEAR, s.EXTRACT_BATCH, s.PROCEDURE_ID, s.VERTEBRA],
                                kind="stable")
    sites, withheld = [], 0
    for site, part in ordered.groupby(s.SITE_ID, sort=True, observed=True):
        y, p = part["y"].to_numpy(dtype=float), part["p"].to_numpy(dtype=float)
        events = int(y.sum())
        if is_small(len(y)) or is_small(events) or is_small(len(y) - events):
            withheld += 1
            continue
        path = qi.vlad(y, p)
        cusum = qi.risk_adjusted_cusum(y, p, odds_ratio=CUSUM_ODDS_RATIO, h=CUSUM_H)
        at = np.unique(np.linspace(0, len(path) - 1, min(VLAD_POINTS, len(path))).round().astype(int))
        sites.append({"site": str(site), "n": len(y), "vlad_final": round(float(path[-1]), 2),
                      "vlad_path": _round_list(path[at]), "vlad_case": at.tolist(),
                      "cusum_signals": len(cusum.signals)})
    caption = (f"Running sum of expected minus observed leaks per site (up: fewer leaks than the case mix "
               f"predicts). Levels in registry order (procedure year, extract batch, procedure). Risk-adjusted "
               f"CUSUM for doubled odds (Steiner et al. 2000), threshold h = {CUSUM_H}.")
    if withheld:
        caption += f" {withheld} sites with 1 to 10 levels, leaks or non-leaks are not charted (withheld)."
    return {"title": title, "caption": caption, "sites": sites, "odds_ratio": CUSUM_ODDS_RATIO, "h": CUSUM_H}


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
                  "features": list(drift.get("features", []))[:5]}
    return {"source": manifest["source"], "status": manifest["status"], "reason": manifest.get("reason"),
            "retraining": retraining,
            "tables": tables, "rules": [_jsonable(r) for r in rules.to_dict(orient="records")],
            "batches_loaded": list(manifest.get("batches_loaded", [])),
            "batches_skipped": list(manifest.get("batches_skipped", []))}


def build_figures(*, run: Mapping[str, Any], manifest: Mapping[str, Any], procedures: pd.DataFrame,
                  levels: pd.DataFrame, scores: Scores | None, model_metrics: Mapping[str, dict],
                  submission: Mapping[str, Any], watermark: int,
                  frames: Mapping[str, pd.DataFrame] | None = None,
                  versions: Mapping[str, str | None] | None = None) -> ReportFigures:
    """All figures of one run; ``scores`` is None when no leakage model is published.

    ``frames`` (each outcome's labelled, scored rows, as :func:`outcome_frames` gives them) and ``versions`` (each
    outcome's champion) may come from the scored store instead of ``scores``; ``procedures`` and ``levels`` then need
    only the columns of the registry summary and the seed outcomes.
    """
    if frames is None:
        frames = outcome_frames(procedures, levels, scores)
    if versions is None:
        versions = dict(scores.versions) if scores is not None else {}
    if not versions.get(MONITORED):
        versions = {}
    published = {spec.name: bool(versions.get(spec.name)) for spec in OUTCOMES}
    qi_units, qi_blocks = qi_units_table(frames, published)
    models = {name: {**block, "title": TITLES.get(name, name)} for name, block in model_metrics.items()}
    figures = {
        "run": dict(run),
        "registry": {"watermark": watermark, "procedures": len(procedures), "levels": len(levels),
                     "year_min": _int_or_none(procedures[s.PROCEDURE_YEAR].min()) if len(procedures) else None,
                     "year_max": _int_or_none(procedures[s.PROCEDURE_YEAR].max()) if len(procedures) else None},
        "data": data_figures(manifest),
        "trends": trends_figures(frames),
        "outcomes": models,
        "qi": {"outcomes": qi_blocks,
               "reason": "" if qi_blocks else "no published model: sites and operators cannot be compared yet",
               "model_versions": dict(versions)},
        "monitoring": monitoring_figures(frames.get(MONITORED) if published.get(MONITORED) else None),
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
