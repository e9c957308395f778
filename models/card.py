"""The TRIPOD+AI sections of a model card: what a reviewer needs, each section naming the items it answers.

Built from an outcome's metrics (JSON-ready, as metrics.json carries them) and its spec; pure, no file. The
sections go into ``card.json`` (``sections``) and ``card.md`` (:meth:`models.store.ModelCard.to_markdown`).

References
----------
Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for reporting clinical
prediction models that use regression or machine learning methods. BMJ 2024;385:e078378.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from features.dictionary import FeatureSpec

INTENDED_USERS = ("quality-improvement analysts of spine surgery and interventional radiology (risk-adjusted "
                  "comparison of sites and operators), registry submissions, and clinicians counselling a "
                  "planned case (`cementrisk plan`)")
UPDATING = ("retrained when asked, when none exists, when enough new outcomes arrived (at least 100 new "
            "leakage events and 20% of those trained on), when the champion's calibration on the new batches "
            "drifts (confidence interval and materiality), or at 365 days; covariate shift alone (population "
            "stability index) is a warning, not a reason; a new version becomes champion only through the gate "
            "(validated calibration slope, log loss and AUROC against the champion on rows it never saw, and "
            "no worse on the latest year of the temporal validation)")


def _figure(metric: Mapping[str, Any] | None, digits: int = 3) -> str:
    if not metric or metric.get("estimate") is None:
        return "not estimable"
    text = f"{metric['estimate']:.{digits}f}"
    if metric.get("low") is not None and metric.get("high") is not None:
        text += f" (95% CI {metric['low']:.{digits}f} to {metric['high']:.{digits}f})"
    return text


def _count(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _subgroup_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if row.get("suppressed"):
            lines.append(f"{row['group']}: withheld (small cell)")
            continue
        auroc = "n/a" if row.get("auroc") is None else f"{row['auroc']:.3f}"
        lines.append(f"{row['group']}: n {row['n']:,}, O/E {row['oe_ratio']:.2f}, AUROC {auroc}")
    return lines


def tripod_sections(metrics: Mapping[str, Any], *, features: Sequence[FeatureSpec],
                    limitations: Sequence[str], intended_use: str) -> list[dict[str, object]]:
    """The card's sections, in TRIPOD+AI order: ``{"title", "items", "lines"}`` each (JSON-ready).

    ``metrics`` is a fitted outcome's block of metrics.json (data, parameters, candidates, selection,
    calibration, validation, internal_external when present, follow_up when present).
    """
    data = metrics["data"]
    validation = metrics["validation"]
    validated = validation["validated"]
    subgroups = validation.get("subgroups", {})
    parameters = metrics.get("parameters", {})
    transport = metrics.get("internal_external") or {}
    sections: list[dict[str, object]] = []

    def add(title: str, items: str, lines: Sequence[str]) -> None:
        sections.append({"title": title, "items": items, "lines": [str(line) for line in lines]})

    add("Intended use and users", "3b, 3c, 27", [intended_use, f"Users: {INTENDED_USERS}."])
    add("Data sources and dates", "5a, 5b, 6a", [
        "De-identified procedure and level records in the records contract v1, from the sites' registry exports.",
        f"Eligible rows: {data['rows']:,} ({metrics['unit']}s) from {data['procedures']:,} procedures; "
        f"{_count(data.get('not_eligible', 0))} rows not eligible."])
    add("Representativeness", "5c, 6b, 14", [
        "All consecutive procedures a site exports; no sampling. Eligibility: " + str(metrics["eligibility"]) + ".",
        "Calibration and discrimination by site, etiology, imaging, year, sex and age band below; cells of 1 "
        "to 10 rows or events are withheld."])
    add("Outcome and its timing", "8a, 8b", [
        f"{metrics['definition']}.", "Leakage is read from the post-procedural imaging report (X-ray or CT; "
        "the modality is a predictor because X-ray misses leaks); infection within 90 days of the procedure."])
    add("Predictors and their timing", "9a, 9b", [
        "All predictors are known at or before the end of the procedure (cement volume and viscosity, fill "
        "ratio, morphology, approach, patient factors); site and operator are deliberately not predictors.",
        *[f"`{f.name}` ({f.kind}{', ' + f.unit if f.unit else ''}): {f.description}" for f in features]])
    add("Sample size and events", "10", [
        f"Events: {data['events']}; prevalence {data.get('prevalence')}.",
        f"Predictor parameters as fitted: {parameters.get('by_candidate', {})} ({parameters.get('counted', '')}).",
        *([metrics["sample_size"]["reason"]] if "sample_size" in metrics else [])])
    follow = metrics.get("follow_up")
    add("Missing data", "11", [
        "Numeric predictors: median imputation with a missing-indicator in the logistic candidates; native "
        "missing-value splits in boosting. Rows without the outcome are not eligible (not imputed).",
        *([follow["statement"]] if follow else [])])
    add("Model specification", "12c, 12d, 12f, 22", [
        f"Selected: {metrics['selected']}; candidates: "
        + "; ".join(f"{c['name']} (CV log loss {c['cv_log_loss']:.5f}): {c['description']}"
                    for c in metrics["candidates"]),
        f"Selection: {metrics['selection']}.",
        f"Recalibration: {metrics['calibration']['method']}; intercept {metrics['calibration']['intercept']:.4f}, "
        f"slope {metrics['calibration']['slope']:.4f}.",
        "The full fitted pipeline is model.skops; its inputs features.json."])
    nested = metrics.get("nested_selection", {})
    add("Internal validation", "12e, 23a", [
        f"Nested cross-validation grouped by procedure; validated AUROC {_figure(validated.get('auroc'))}, "
        f"calibration slope {_figure(validated.get('calibration_slope'))}, intercept "
        f"{_figure(validated.get('calibration_intercept'))}, ICI {_figure(validated.get('ici'), 4)}, Brier "
        f"{_figure(validated.get('brier'), 4)}.",
        f"Cost of choosing (nested minus not nested log loss): {nested.get('cost_of_choosing')}; candidate per "
        f"fold: {nested.get('chosen_by_fold')}."])
    ie_lines = []
    for kind, words in (("sites", "leave-one-site-out"), ("temporal", "by period")):
        part = transport.get(kind) or {}
        for measure, values in (part.get("pooled") or {}).items():
            if not isinstance(values, Mapping):
                continue
            if values.get("estimate") is None:
                if values.get("note"):
                    ie_lines.append(f"{words} {measure}: {values['note']}")
                continue
            line = f"{words} {measure}: pooled {values['estimate']:.3f} (k = {values['k']})"
            if values.get("low") is not None:
                line += f", 95% CI {values['low']:.3f} to {values['high']:.3f}"
            if values.get("prediction_low") is not None:
                line += f", 95% prediction interval {values['prediction_low']:.3f} to {values['prediction_high']:.3f}"
            if values.get("tau2") is not None:
                line += f", tau^2 {values['tau2']:.4f}"
            ie_lines.append(line)
    if transport.get("sites", {}).get("not_held_out", {}).get("sites"):
        not_held = transport["sites"]["not_held_out"]
        ie_lines.append(f"{not_held['sites']} sites not held out ({not_held['reason']})")
    if transport.get("refit"):
        ie_lines.append(f"Refit: {transport['refit']}.")
    add("Internal-external validation", "12e, 23b", ie_lines or ["not computed for this outcome"])
    add("Calibration by site and subgroup", "12e, 23b", [
        f"{name}: " + "; ".join(_subgroup_lines(rows)) for name, rows in subgroups.items()
        if name not in ("sex", "age_band")])
    add("Performance by sex and age band", "14, 23b", [
        f"{name}: " + "; ".join(_subgroup_lines(subgroups.get(name, []))) for name in ("sex", "age_band")])
    add("Thresholds and uncertainty", "12g, 15", [
        "No decision threshold is applied: the output is a calibrated risk; the decision curve is in the report.",
        "Each validated figure has a cluster-bootstrap 95% CI; a planned case's risk has a 95% interval from the "
        "model's parameter uncertainty (`cementrisk plan`): "
        + str((metrics.get("prediction_interval") or {}).get("method", "not recorded")) + "."])
    add("Updating policy", "24", [UPDATING])
    add("Limitations", "26", list(limitations))
    return sections


def sections_markdown(sections: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown lines of the sections: a heading with its TRIPOD+AI items, then one bullet per line."""
    lines: list[str] = []
    for section in sections:
        lines += [f"## {section['title']} (TRIPOD+AI {section['items']})", ""]
        lines += [f"- {line}" for line in section["lines"]] + [""]
    return lines
