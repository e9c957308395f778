"""What needs attention, in sentences and one table: the first screen of the report.

Pure functions of the (already suppressed, for the published audience) verdict table, the CUSUM signals, the
models' calibration on the registry and the data completeness. Nothing here withholds: what it is given is what
may be shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.intervals import poisson_ratio_interval
from models.outcomes import OUTCOMES
from models.suppression import SUPPRESSED
from records import schema as s

ALERT_ROWS = 15
"""Alerts listed on the first screen beyond every alarm; the rest are in qi_units.csv."""
CALIBRATION_MARGIN = 0.2
"""An outcome's O/E in the latest year outside 1 +- this, with a CI excluding 1, reads 'no longer calibrated'."""


def calibration_figures(frames: Mapping[str, pd.DataFrame], published: Mapping[str, bool],
                        manifest: Mapping[str, Any], trends: Mapping[str, Any]) -> dict[str, Any]:
    """Per published outcome, O/E over all registered rows and in the latest procedure year, with exact 95% CIs.

    The counts are the observed-rates table's (``trends``, already suppressed): the same cells, withheld where it
    withholds them, so this table cannot undo its suppression. The latest year's O/E is the model's
    calibration-in-the-large on the newest cases; the new batches' drift check is added as the model step decided it.
    """
    rows = []
    for spec in OUTCOMES:
        frame = frames.get(spec.name)
        if frame is None or not published.get(spec.name) or frame.empty or frame["p"].isna().any():
            continue
        latest = int(frame[s.PROCEDURE_YEAR].max())
        by_year = {r["year"]: r for r in trends[spec.name]["rows"]}
        for label, cells, part in (("all years", trends[spec.name]["all_years"], frame),
                                   (str(latest), by_year.get(latest), frame[frame[s.PROCEDURE_YEAR] == latest])):
            cells = cells or {"n": SUPPRESSED, "events": SUPPRESSED}
            e = float(part["p"].sum())
            o = cells["events"]
            shown = not isinstance(o, str) and not isinstance(cells["n"], str)
            low, high = poisson_ratio_interval(np.array([o if shown else 0]), np.array([e]), level=0.95)
            rows.append({"outcome": spec.name, "years": label, "n": cells["n"], "observed": o,
                         "expected": round(e, 2), "oe_ratio": round(o / e, 4) if shown else None,
                         "oe_low": round(float(low[0]), 4) if shown else None,
                         "oe_high": round(float(high[0]), 4) if shown else None})
    drift = ((manifest.get("models") or {}).get("drift") or {}).get("calibration") or {}
    return {"rows": rows, "new_batches": {"drifted": drift.get("drifted"), "reason": drift.get("reason", "")}}


def _calibration_sentence(calibration: Mapping[str, Any]) -> str:
    off, unknown = [], []
    for row in calibration["rows"]:
        if row["years"] == "all years":
            continue
        if row["oe_ratio"] is None:
            unknown.append(row["outcome"])
            continue
        outside = row["oe_low"] > 1 or row["oe_high"] < 1
        if outside and abs(row["oe_ratio"] - 1) > CALIBRATION_MARGIN:
            off.append(f"{row['outcome']} (O/E {row['oe_ratio']:.2f} in {row['years']}, 95% CI "
                       f"{row['oe_low']:.2f} to {row['oe_high']:.2f})")
    drift = calibration["new_batches"]
    if not calibration["rows"]:
        return "No model is published, so calibration cannot be checked."
    judged = len([r for r in calibration["rows"] if r["years"] != "all years"]) - len(unknown)
    if off:
        text = ("The models are no longer calibrated on the latest year for " + "; ".join(off) + ": O/E verdicts of "
                "that year lean on a model that is off.")
    elif judged:
        text = (f"The models are still calibrated on the latest procedure year ({judged} outcome"
                f"{'s' * (judged != 1)} judged): none has an O/E off by more than {100 * CALIBRATION_MARGIN:.0f}% "
                "with a CI excluding 1.")
    else:
        text = "Calibration on the latest procedure year cannot be judged from the published counts."
    if unknown:
        text += (" Not judged for " + ", ".join(unknown) + ": its latest-year count is withheld (1 to 10, or to "
                 "protect one).")
    if drift.get("drifted"):
        text += f" The new batches' calibration check says drift: {drift.get('reason')}."
    elif drift.get("drifted") is False:
        text += " The new batches' calibration check finds no drift."
    return text


def attention(units: pd.DataFrame, signals: Sequence[Mapping[str, Any]], calibration: Mapping[str, Any],
              completeness: Mapping[str, Any], levels: Mapping[str, float], *, latest_year: int | None = None,
              years_per_false_alarm: float = 5.0) -> dict[str, Any]:
    """Sentences and one table (alarms first, then the strongest alerts) for the first screen."""
    alert, alarm, fdr = (f"{100 * levels['alert']:g}%", f"{100 * levels['alarm']:g}%", f"{100 * levels['fdr']:g}%")
    shown = units[~units["verdict_withheld"]] if len(units) else units
    in_alarm = shown[shown["alarm"].isin(["high", "low"])] if len(shown) else shown
    in_alert = shown[shown["alert"].isin(["high", "low"]) & ~shown["alarm"].isin(["high", "low"])] if len(shown) \
        else shown
    sentences = []
    poor = [row["site_id"] for row in completeness.get("sites", []) if row.get("poor")]
    unjudged = [row["site_id"] for row in completeness.get("sites", []) if row.get("verdict") == "withheld"]
    if not completeness.get("assessed", True):
        sentences.append("Data completeness was not assessed (no procedures).")
    elif poor:
        sentences.append(f"Data completeness first: {len(poor)} site{'s' * (len(poor) != 1)} "
                         f"({', '.join(poor[:8])}{', ...' if len(poor) > 8 else ''}) have poor completeness; their "
                         "verdicts are marked and should wait for the site to check its data.")
    else:
        sentences.append("Data completeness: no site is marked poor (leakage assessment, imaging, infection "
                         "follow-up and volume against its own previous years)"
                         + (f"; {len(unjudged)} site{'s' * (len(unjudged) != 1)} cannot be judged from the published "
                            "counts." if unjudged else "."))
    if len(units) == 0:
        sentences.append("No unit can be compared with its case mix yet: no published model.")
    else:
        high = in_alarm[in_alarm["alarm"] == "high"]
        survive = int(high["alarm_survives_fdr"].sum())
        sentences.append(
            f"{len(high)} unit-outcome{'s' * (len(high) != 1)} in alarm high (more events than the case mix "
            f"predicts, beyond the {alarm} limit), {survive} of them surviving the false discovery rate of {fdr} "
            f"across the {len(shown)} unit-outcomes whose verdicts this report shows; "
            f"{int((in_alarm['alarm'] == 'low').sum())} in "
            f"alarm low; {int((in_alert['alert'] == 'high').sum())} more in alert high and "
            f"{int((in_alert['alert'] == 'low').sum())} in alert low (beyond {alert}).")
        withheld = int(units["verdict_withheld"].sum())
        if withheld:
            sentences.append(f"{withheld} unit-outcomes have an observed count that is withheld (1 to 10, or withheld so "
                             "that one cannot be worked out from a total), so their verdicts are withheld too.")
    worse = [r for r in signals if r.get("direction") == "deterioration"]
    charts = int(shown["cusum_h"].notna().sum()) if len(shown) else 0
    latest = latest_year if latest_year is not None else max((int(r["year"]) for r in worse), default=None)
    recent = [r for r in worse if latest is not None and int(r["year"]) == latest]
    if recent:
        named = sorted({f"{r['unit_type']} {r['unit_id']} ({r['outcome']})" for r in recent})
        sentences.append(
            f"Risk-adjusted CUSUM: {len(recent)} signal{'s' * (len(recent) != 1)} of deterioration in {latest} "
            f"across {charts} charts, where about {charts / years_per_false_alarm:.0f} false signals a year are "
            f"expected by design (one per chart per {years_per_false_alarm:g} years): "
            + ", ".join(named[:5]) + (f" and {len(named) - 5} more (Monitoring, below)" if len(named) > 5 else "")
            + ". A signal asks for a look at the "
            "unit's recent cases; on its own it is not a verdict.")
    else:
        sentences.append(f"No risk-adjusted CUSUM signals deterioration in {latest} ({charts} charts; "
                         f"{len(worse)} signals in earlier years, listed under Monitoring)." if latest is not None else
                         f"No risk-adjusted CUSUM signals deterioration ({charts} charts).")
    rising = shown[(shown["trend_low"] > 1)] if len(shown) else shown
    if len(rising):
        sentences.append(f"{len(rising)} unit-outcomes have O/E rising year on year (log-linear trend with a 95% "
                         "CI above 1).")
    sentences.append(_calibration_sentence(calibration))
    strongest = in_alert.assign(_p=np.minimum(in_alert["p_high"], in_alert["p_low"])).sort_values("_p")
    listed = pd.concat([in_alarm.sort_values(["alarm", "q_high"]),
                        strongest.drop(columns="_p").head(ALERT_ROWS)]) if len(shown) else shown
    rows = [_row(r, poor, levels["fdr"]) for r in listed.to_dict(orient="records")]
    more = max(0, len(in_alert) - ALERT_ROWS)
    return {"sentences": sentences, "rows": rows, "more_alerts": more}


def _row(r: Mapping[str, Any], poor: Sequence[str], fdr: float) -> dict[str, Any]:
    verdict = f"alarm {r['alarm']}" if r["alarm"] in ("high", "low") else f"alert {r['alert']}"
    q = r["q_high"] if "high" in verdict else r["q_low"]
    return {"unit_type": r["unit_type"], "unit_id": r["unit_id"], "site_id": r["site_id"], "outcome": r["outcome"],
            "observed": r["observed"] if isinstance(r["observed"], str) else int(r["observed"]),
            "expected": _number(r["expected"]), "oe_ratio": _number(r["oe_ratio"]), "verdict": verdict,
            "q": _number(q),
            "survives_fdr": bool(_number(q) is not None and _number(q) <= fdr),
            "shrunken": [_number(r[c]) for c in ("shrunken_or", "shrunken_low", "shrunken_high")],
            "cusum_last_signal_year": r["cusum_last_signal_year"],
            "trend": [_number(r[c]) for c in ("trend_ratio", "trend_low", "trend_high")],
            "completeness_poor": r["site_id"] in poor, "site_completeness": r.get("site_completeness", "")}


def _number(value: Any) -> float | None:
    """A float for JSON, None for missing (NaN is not JSON)."""
    return None if value is None or isinstance(value, str) or pd.isna(value) else round(float(value), 6)
