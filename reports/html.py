"""report.html from the run's figures: one self-contained file (inline SVG, inline CSS, no script, no fetch).

Everything the page shows comes from the figures dict that is also written as ``metrics.json``
(:func:`reports.figures.build_figures`), so the page and the machine-readable figures cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from reports import plots
from reports.forest import forest_svg
from records import schema as s
from models.suppression import SUPPRESSED
from reports import seed_outcomes as so

TEMPLATES = Path(__file__).parent / "templates"
METRIC_ROWS = (("auroc", "AUROC (C statistic)"), ("brier", "Brier score"), ("scaled_brier", "scaled Brier score"),
               ("log_loss", "log loss"), ("calibration_intercept", "calibration intercept (in the large)"),
               ("calibration_slope", "calibration slope"), ("ici", "ICI"), ("e50", "E50"), ("e90", "E90"))
METHODS = (
    "Expected risks come from each outcome's published champion model, which uses case mix only: site and "
    "operator are never predictors, so O/E compares a unit with what its own patients predict.",
    "Validated metrics are computed on out-of-fold predictions (folds by procedure) after cross-fitted "
    "recalibration; 95% CIs from a cluster bootstrap that resamples procedures. Apparent minus validated is "
    "the optimism.",
    "O/E intervals are exact Poisson (Garwood) intervals for the observed count divided by the expected. Funnel "
    "limits and one-sided p-values come from the Poisson-binomial distribution of each unit's count given its own "
    "cases' risks (exact under the model, cases independent); where the units vary more than chance allows "
    "(10%-winsorised z-scores, Spiegelhalter 2005), a gamma frailty of variance tau^2 widens them. Alert beyond the "
    "inner limit, alarm beyond the outer (HQIP); Benjamini-Hochberg q-values across the report.",
    "Shrunken odds ratios: a random-intercept logistic model per outcome with the champion's logit risk as offset, "
    "sites and operators nested in sites as random effects (Laplace maximum likelihood, checked against lme4).",
    "The risk-adjusted CUSUM (Steiner et al. 2000, odds ratio 2) of each site and operator has the limit that "
    "gives one false alarm per five years of the unit's own volume when the model is right, and restarts after a "
    "signal; the VLAD chart plots, per site, the running sum of expected minus observed leaks in registry order.",
    "Counts from 1 to 10 are withheld everywhere (<11), and a second cell is withheld where the first could be "
    "recovered from a published total. Rates, ratios and means of withheld cells are withheld with them.",
    "Observed leakage depends on the imaging used (CT finds more than radiographs); the leakage models condition "
    "on it. Internal validation only: no external validation yet.",
)


def render_report(figures: Mapping[str, Any], *, run_id: str) -> str:
    """The HTML text of report.html for one run's figures."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    context = {
        "run": {**figures["run"], "run_id": run_id}, "registry": _registry(figures["registry"]), "data": _data(figures["data"]),
        "rates": _rates(figures["trends"]), "models": [_model(m) for m in figures["outcomes"].values()],
        "qi": _qi(figures["qi"]), "monitoring": _monitoring(figures["monitoring"]),
        "attention": _attention(figures["attention"]), "completeness": _completeness(figures["completeness"]),
        "calibration": _calibration(figures["calibration"]), "internal": figures.get("audience") == "internal",
        "benefit": _benefit(figures["seed_outcomes"]), "submission": _submission(figures["submission"]),
        "methods": METHODS,
    }
    return env.get_template("report.html.j2").render(**context)


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: withheld counts stay '<11', missing is '-', floats get ``digits`` decimals, ints thousands."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def ci(low: Any, high: Any, digits: int = 3) -> str:
    if low is None or high is None:
        return "-"
    return f"{fmt(low, digits)} to {fmt(high, digits)}"


def _registry(registry: Mapping[str, Any]) -> dict[str, Any]:
    return {**registry, "procedures_text": fmt(registry["procedures"]), "levels_text": fmt(registry["levels"])}


def _data(data: Mapping[str, Any]) -> dict[str, Any]:
    tables = [{"table": name, **{k: fmt(v) for k, v in counts.items() if k != "columns_dropped"},
               "columns_dropped": ", ".join(counts.get("columns_dropped") or []) or "none"}
              for name, counts in data["tables"].items()]
    rules = [{"table": row["table"], "rule": row["rule"], "rows": fmt(row["rows"])} for row in data["rules"]]
    retraining = data.get("retraining") or {}
    drift = ("; ".join(f"{f['feature']} PSI {f['psi']:.3f} ({f['band']})" for f in retraining.get("features", []))
             or "not measured (no new batch, no reference yet, or too few new rows)")
    return {"source": data["source"], "status": data["status"], "reason": data.get("reason"), "tables": tables,
            "retraining": {"text": ("Models retrained: " if retraining.get("trained") else "Models not retrained: ")
                           + (retraining.get("reason") or "model training was not run"),
                           "drift": drift, "warnings": [str(w) for w in retraining.get("warnings") or []]},
            "rules": rules, "batches_loaded": _batches(data["batches_loaded"]),
            "batches_skipped": _batches(data["batches_skipped"])}


def _batches(batches: Sequence[int]) -> str:
    return ", ".join(str(b) for b in batches) or "none"


def _rates(trends: Mapping[str, Any]) -> dict[str, Any]:
    series, tables = {}, []
    for block in trends.values():
        rows = block["rows"]
        series[block["title"]] = {"years": [r["year"] for r in rows], "rate": [r["rate"] for r in rows],
                                  "low": [r["low"] for r in rows], "high": [r["high"] for r in rows]}
        tables.append({"title": block["title"], "rows": [
            {"year": r["year"], "n": fmt(r["n"]), "events": fmt(r["events"]), "rate": fmt(r["rate"], 4),
             "ci": ci(r["low"], r["high"], 4)} for r in rows]})
    plot = plots.rate_over_time_plot(series=series, title="Observed rate by procedure year",
                                     y_label="observed rate (%)") if series else ""
    return {"plot": plot, "tables": tables}


def _model(block: Mapping[str, Any]) -> dict[str, Any]:
    name = block["outcome"]
    out: dict[str, Any] = {"name": name, "title": block.get("title", name), "definition": block.get("definition", ""),
                           "eligibility": block.get("eligibility", ""), "unit": block.get("unit", ""),
                           "fitted": block.get("status") == "fitted"}
    follow = block.get("follow_up")
    out["follow_up"] = str(follow["statement"]) if follow else ""
    if not out["fitted"]:
        rate = block.get("crude_rate")
        out["reason"] = block.get("reason", "")
        out["crude_rate"] = None if not rate else (
            f"{fmt(rate['events'])} events among {fmt(rate['n'])}: "
            + (f"{fmt(rate['rate'], 4)} (exact 95% CI {ci(rate['low'], rate['high'], 4)})"
               if rate.get("rate") is not None else rate.get("note", "rate withheld")))
        return out
    validation = block["validation"]
    validated, apparent, optimism = validation["validated"], validation["apparent"], validation["optimism"]
    model = block.get("model", {})
    gate = block.get("gate", {})
    out.update(
        version=model.get("version", "not stored"), champion=bool(model.get("champion")),
        learner=block["selected"], calibration=block["calibration"]["method"],
        rows=fmt(block["data"]["rows"]), events=fmt(block["data"]["events"]),
        gate=_gate_text(gate),
        metrics=[{"name": label, "estimate": fmt(validated[key]["estimate"], 4),
                  "ci": ci(validated[key].get("low"), validated[key].get("high"), 4),
                  "apparent": fmt(apparent.get(key), 4), "optimism": fmt(optimism.get(key), 4)}
                 for key, label in METRIC_ROWS if key in validated],
        calibration_plot=plots.calibration_plot(
            bins=validation["calibration_bins"], curve=validation["calibration_curve"],
            histogram=validation["risk_histogram"], title=f"Calibration: {out['title']}"),
        roc_plot=plots.roc_plot(fpr=validation["roc_curve"]["fpr"], tpr=validation["roc_curve"]["tpr"],
                                auroc=validated["auroc"]["estimate"], auroc_low=validated["auroc"].get("low"),
                                auroc_high=validated["auroc"].get("high"), title=f"ROC: {out['title']}"),
        decision_plot=_decision_plot(validation["decision_curve"], out["title"]),
        subgroups=[{"name": dim, "rows": [_subgroup_row(r) for r in rows]}
                   for dim, rows in validation["subgroups"].items()],
    )
    out["candidates"] = [{"name": c["name"], "log_loss": fmt(c.get("cv_log_loss"), 5),
                          "auroc": fmt(c.get("validated_auroc"), 4), "slope": fmt(c.get("validated_calibration_slope"), 3),
                          "ici": fmt(c.get("validated_ici"), 4)} for c in block.get("candidates", [])]
    nested = block.get("nested_selection")
    out["nested"] = "" if not nested else (
        f"Selection is nested: in each of the {len(nested['chosen_by_fold'])} outer folds the candidate was chosen by "
        f"an inner cross-validation of the other folds ({', '.join(nested['chosen_by_fold'])}); the validated "
        f"figures above are those of the nested risks (log loss {fmt(nested['log_loss_nested'], 5)}, against "
        f"{fmt(nested['log_loss_not_nested'], 5)} for the published candidate's own out-of-fold risks: the cost of "
        f"choosing is {fmt(nested['cost_of_choosing'], 5)}). The published model is {block['selected']}.")
    out["transport"] = _transport(block.get("internal_external"), out["title"])
    predictors = block.get("predictors") or []
    out["predictors"] = [{"feature": p["feature"], "importance": fmt(p["importance"], 4), "direction": p["direction"]}
                         for p in predictors]
    out["predictors_plot"] = plots.predictors_plot(
        names=[p["feature"] for p in predictors], importance=[p["importance"] for p in predictors],
        directions=[_short_direction(p) for p in predictors],
        title=f"Strongest predictors: {out['title']}") if predictors else ""
    return out


FOREST_MEASURES = ("oe_ratio", "calibration_slope", "auroc")


def _transport(transport: Mapping[str, Any] | None, title: str) -> dict[str, Any] | None:
    """Forest plots of the internal-external validation (sites and years; O/E, calibration slope, AUROC)."""
    if not transport:
        return None
    figures = []
    for kind, rows_key, words in (("sites", "held_out", "held-out site"), ("temporal", "years", "held-out year")):
        part = transport.get(kind) or {}
        rows = part.get(rows_key) or []
        if not any(row.get("status") == "evaluated" for row in rows):
            continue
        for measure in FOREST_MEASURES:
            figures.append(forest_svg(rows, (part.get("pooled") or {}).get(measure), measure=measure,
                                      title=f"{title}: {measure.replace('_', ' ')} by {words}"))
    not_held = (transport.get("sites") or {}).get("not_held_out") or {}
    note = ("Each held-out site (or year) was predicted by the selected candidate refitted without it (years: "
            "refitted on the earlier years only); the pooled figure is a random-effects meta-analysis (REML, "
            "Hartung-Knapp-Sidik-Jonkman CI) and the bar below it the 95% prediction interval for a new site or "
            f"year. {not_held.get('sites', 0)} sites were not held out ({not_held.get('reason', '')}).")
    if not figures:
        note += " No site or year had enough events to be held out."
    return {"figures": figures, "note": note}


def _short_direction(predictor: Mapping[str, Any]) -> str:
    """A few words for the bar of a predictor; the table beside the figure has the full sentence."""
    kind = predictor.get("kind")
    if kind == "numeric" and predictor.get("risk_at_high") is not None and predictor.get("risk_at_low") is not None:
        return "higher -> more risk" if predictor["risk_at_high"] > predictor["risk_at_low"] else "higher -> less risk"
    if kind == "binary" and predictor.get("risk_if_true") is not None and predictor.get("risk_if_false") is not None:
        return "yes -> more risk" if predictor["risk_if_true"] > predictor["risk_if_false"] else "yes -> less risk"
    if kind == "categorical" and predictor.get("highest_category"):
        return f"highest: {predictor['highest_category']}"
    return ""


def _gate_text(gate: Mapping[str, Any]) -> str:
    if not gate:
        return "no gate decision recorded"
    verdict = "promoted to champion" if gate.get("promote") else "not promoted"
    reasons = "; ".join(str(r) for r in gate.get("reasons", []))
    return f"{verdict}. {reasons}".strip()


def _decision_plot(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    return plots.decision_curve_plot(thresholds=[r["threshold"] for r in rows],
                                     net_benefit_model=[r["net_benefit_model"] for r in rows],
                                     net_benefit_all=[r["net_benefit_treat_all"] for r in rows],
                                     title=f"Decision curve: {title}")


def _subgroup_row(row: Mapping[str, Any]) -> dict[str, str]:
    if row.get("suppressed"):
        return {"group": str(row["group"]), "n": SUPPRESSED, "events": SUPPRESSED, **{
            k: "-" for k in ("observed_rate", "expected_rate", "oe_ratio", "auroc", "calibration_intercept")}}
    return {"group": str(row["group"]), "n": fmt(row["n"]), "events": fmt(row["events"]),
            "observed_rate": fmt(row.get("observed_rate"), 4), "expected_rate": fmt(row.get("expected_rate"), 4),
            "oe_ratio": fmt(row.get("oe_ratio")), "auroc": fmt(row.get("auroc")),
            "calibration_intercept": fmt(row.get("calibration_intercept"))}


def _qi(qi: Mapping[str, Any]) -> dict[str, Any]:
    outcomes = []
    for block in qi["outcomes"].values():
        units = []
        for unit_type, unit in block["units"].items():
            listed = [_verdict_row(r) for r in unit["rows"] if r["alert"] in ("high", "low")]
            shrunk = [r for r in unit["rows"] if r.get("shrunken_or") is not None]
            caterpillar = plots.caterpillar_plot(
                labels=[r["unit_id"] for r in shrunk], estimate=[r["shrunken_or"] for r in shrunk],
                low=[r["shrunken_low"] for r in shrunk], high=[r["shrunken_high"] for r in shrunk],
                title=f"Shrunken odds ratios: {block['title']} by {unit_type}",
                x_label=("odds ratio against the average site, net of case mix" if unit_type == "site" else
                         "odds ratio against the operator's own site, net of case mix")) if shrunk else ""
            units.append({"unit_type": unit_type, "plot": _funnel_plot(unit, title=f"{block['title']} by {unit_type}"),
                          "method": unit["method"], "listed": listed, "caterpillar": caterpillar,
                          "shrunk": [{"unit_id": r["unit_id"], "site_id": r.get("site_id") or "", "n": fmt(r["n"]),
                                      "or": _with_ci(r["shrunken_or"], r["shrunken_low"], r["shrunken_high"], 2)}
                                     for r in sorted(shrunk, key=lambda r: -r["shrunken_or"])]})
        outcomes.append({"title": block["title"], "units": units})
    levels = qi.get("levels") or {"alert": 0.95, "alarm": 0.998, "fdr": 0.05}
    methods = {"funnel": "", "shrinkage": "", "cusum": "no chart: no published model", **qi.get("methods", {})}
    return {"outcomes": outcomes, "reason": qi.get("reason", ""), "methods": methods,
            "alert": f"{100 * levels['alert']:g}%", "alarm": f"{100 * levels['alarm']:g}%",
            "fdr": f"{100 * levels['fdr']:g}%"}


def _verdict_row(r: Mapping[str, Any]) -> dict[str, str]:
    verdict = f"alarm {r['alarm']}" if r["alarm"] in ("high", "low") else f"alert {r['alert']}"
    q = r["q_high"] if verdict.endswith("high") else r["q_low"]
    p = r["p_high"] if verdict.endswith("high") else r["p_low"]
    return {"unit_id": r["unit_id"], "site_id": r.get("site_id") or "", "n": fmt(r["n"]), "observed": fmt(r["observed"]),
            "expected": fmt(r["expected"], 1), "oe": f"{fmt(r['oe_ratio'], 2)} ({ci(r['oe_low'], r['oe_high'], 2)})",
            "verdict": verdict, "p": _p(p), "q": _p(q), "fdr": "yes" if r.get("alarm_survives_fdr") else "no",
            "shrunken": _with_ci(r.get("shrunken_or"), r.get("shrunken_low"), r.get("shrunken_high"), 2),
            "trend": _with_ci(r.get("trend_ratio"), r.get("trend_low"), r.get("trend_high"), 2),
            "completeness": r.get("site_completeness") or ""}


def _p(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{value:.2g}" if value >= 0.001 else "<0.001"


def _funnel_plot(unit: Mapping[str, Any], *, title: str) -> str:
    points, grid = unit["points"], np.asarray(unit["limit_grid"], dtype=float)
    limits = {label: (np.asarray(low, dtype=float), np.asarray(high, dtype=float))
              for label, (low, high) in unit["limits"].items()}
    return plots.funnel_plot(precision=np.asarray(points["expected"], dtype=float),
                             oe_ratio=np.asarray(points["oe_ratio"], dtype=float), labels=points["unit_id"],
                             flags=points["alarm"], limit_grid=grid, limits=limits, title=title,
                             x_label="expected events (E, the sum of the case-mix risks)", method=unit["method"])


def _monitoring(monitoring: Mapping[str, Any]) -> dict[str, Any]:
    signals = [{"unit": f"{r['unit_type']} {r['unit_id']}", "outcome": r["outcome"], "direction": r["direction"],
                "year": str(r["year"]), "case": fmt(int(r["case"]) + 1) if "case" in r else "-",
                "since_reset": fmt(r["since_reset"]) if "since_reset" in r else "-"}
               for r in monitoring.get("signals", [])]
    if not monitoring.get("sites"):
        return {"plot": "", "reason": monitoring.get("reason", "no site has enough assessed levels to chart"),
                "sites": [], "signals": signals}
    series = {row["site"]: np.asarray(row["vlad_path"], dtype=float) for row in monitoring["sites"]}
    plot = plots.vlad_plot(series=series, title=f"VLAD by site: {monitoring['title']}")
    rows = [{"site": row["site"], "n": fmt(row["n"]), "vlad": fmt(row["vlad_final"], 1),
             "h": fmt(row.get("cusum_h"), 2),
             "signals": f"yes, last in {row['cusum_last_signal_year']}" if row.get("cusum_last_signal_year") else "no"}
            for row in monitoring["sites"]]
    return {"plot": plot, "caption": monitoring["caption"], "sites": rows, "signals": signals}


def _attention(attention: Mapping[str, Any]) -> dict[str, Any]:
    rows = []
    for r in attention["rows"]:
        rows.append({"unit": f"{r['unit_type']} {r['unit_id']}" + (f" (site {r['site_id']})"
                                                                  if r["unit_type"] == "operator" else ""),
                     "outcome": r["outcome"], "verdict": r["verdict"], "observed": fmt(r["observed"]),
                     "expected": fmt(r["expected"], 1), "oe": fmt(r["oe_ratio"], 2), "q": _p(r["q"]),
                     "fdr": "yes" if r["survives_fdr"] else "no", "shrunken": _with_ci(*r["shrunken"], 2),
                     "cusum": r["cusum_last_signal_year"] or "none", "trend": _with_ci(*r["trend"], 2),
                     "completeness": r.get("site_completeness") or ("poor" if r["completeness_poor"] else "ok")})
    return {"sentences": attention["sentences"], "rows": rows, "more_alerts": attention.get("more_alerts", 0)}


def _completeness(completeness: Mapping[str, Any]) -> dict[str, Any]:
    return {"method": completeness.get("method", ""), "header": completeness.get("header", []),
            "rows": [[fmt(c, 3) if isinstance(c, float) else fmt(c) for c in row]
                     for row in completeness.get("rows", [])]}


def _calibration(calibration: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"outcome": r["outcome"], "years": r["years"], "n": fmt(r["n"]), "observed": fmt(r["observed"]),
             "expected": fmt(r["expected"], 1), "oe": _with_ci(r["oe_ratio"], r["oe_low"], r["oe_high"], 2)}
            for r in calibration.get("rows", [])]


def _benefit(table: Mapping[str, Any]) -> dict[str, Any]:
    """The outcomes-by-site table with readable headers: counts, then each estimate with its 95% CI."""
    header = ["site", "procedures", "levels", "with pain scores", "VAS before -> after", "VAS change (95% CI)",
              "with length of stay", "same-day discharges", "same-day % (95% CI)", "stay, days: median (IQR)",
              "levels with angles", "kyphosis correction, degrees (95% CI)", "levels assessed for leakage",
              "symptomatic leaks", "symptomatic % (95% CI)"]
    rows = []
    for r in table["rows"]:
        rows.append([
            str(r[s.SITE_ID]), fmt(r[so.PROCEDURES]), fmt(r[so.LEVELS]), fmt(r[so.PAIN_N]),
            f"{fmt(r[so.VAS_PRE_MEAN], 1)} -> {fmt(r[so.VAS_POST_MEAN], 1)}",
            _with_ci(r[so.VAS_CHANGE_MEAN], r[so.VAS_CHANGE_LOW], r[so.VAS_CHANGE_HIGH], 2),
            fmt(r[so.LOS_N]), fmt(r[so.SAME_DAY_N]),
            _with_ci(r[so.SAME_DAY_RATE], r[so.SAME_DAY_LOW], r[so.SAME_DAY_HIGH], 1, percent=True),
            f"{fmt(r[so.LOS_MEDIAN], 0)} ({fmt(r[so.LOS_Q1], 0)} to {fmt(r[so.LOS_Q3], 0)})",
            fmt(r[so.KYPHOSIS_N]), _with_ci(r[so.KYPHOSIS_MEAN], r[so.KYPHOSIS_LOW], r[so.KYPHOSIS_HIGH], 1),
            fmt(r[so.LEAKAGE_ASSESSED_N]), fmt(r[so.SYMPTOMATIC_N]),
            _with_ci(r[so.SYMPTOMATIC_RATE], r[so.SYMPTOMATIC_LOW], r[so.SYMPTOMATIC_HIGH], 2, percent=True)])
    return {"header": header, "rows": rows}


def _with_ci(estimate: Any, low: Any, high: Any, digits: int, *, percent: bool = False) -> str:
    if estimate is None or isinstance(estimate, str) or not np.isfinite(float(estimate)):
        return "-"
    scale = 100.0 if percent else 1.0
    values = [None if v is None else float(v) * scale for v in (estimate, low, high)]
    return f"{fmt(values[0], digits)} ({ci(values[1], values[2], digits)})"


def _submission(sub: Mapping[str, Any]) -> dict[str, Any]:
    files = [{"name": f["name"], "bytes": fmt(f["bytes"]), "sha256": f["sha256"]} for f in sub.get("files", [])]
    return {"files": files, "period": sub.get("period", ""), "reason": sub.get("reason", "")}
