"""Every verdict on every unit of one report: exact funnel, alert and alarm, FDR q-values, shrinkage, CUSUM, trend.

One row per unit type (site, operator), unit and outcome with a published model. :func:`unit_verdicts` gives the
exact table (the internal audience's); :func:`publishable` withholds, like a count, every verdict of a unit whose
observed count is withheld (a flag beside ``<11`` narrows the range a reader learns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.outcomes import OUTCOMES
from models.suppression import SUPPRESSED, suppress_table
from records import schema as s
from reports import qi
from reports import cusum
from reports.cusum import unit_cusums
from reports.shrinkage import shrunken_effects
from reports import unit_trends
from reports.unit_trends import oe_slopes

UNIT_TYPES = {"site": s.SITE_ID, "operator": s.OPERATOR_ID}
WITHHELD = "withheld"
FDR_LEVEL = 0.05
ALERT, ALARM = 0.95, 0.998
COUNTS = ("n", "observed")
VERDICT_TEXT = ("alert", "alarm", "cusum_last_signal_year")
"""Text columns that are verdicts: withheld with the unit's observed count."""
STATISTICS = ("oe_ratio", "oe_low", "oe_high", "risk_adjusted_rate", "p_high", "p_low", "q_high", "q_low",
              "shrunken_or", "shrunken_low", "shrunken_high", "trend_ratio", "trend_low", "trend_high",
              "cusum_signals", "cusum_h")
COLUMNS = ("unit_type", "unit_id", "site_id", "outcome", "n", "observed", "expected", "oe_ratio", "oe_low", "oe_high",
           "risk_adjusted_rate", "alert_lower", "alert_upper", "alarm_lower", "alarm_upper", "p_high", "p_low", "q_high", "q_low",
           "alert", "alarm", "alarm_survives_fdr", "shrunken_or", "shrunken_low", "shrunken_high", "trend_ratio",
           "trend_low", "trend_high", "cusum_h", "cusum_signals", "cusum_last_signal_year", "null")
"""Columns of the verdict table (qi_units.csv adds verdict_withheld and site_completeness)."""


@dataclass(frozen=True)
class UnitVerdicts:
    """The exact verdict table, each funnel's assessment and the methods in words."""

    units: pd.DataFrame
    funnels: dict[tuple[str, str], qi.FunnelResult]
    signals: pd.DataFrame  # CUSUM signals of deterioration: unit_type, unit_id, outcome, direction, case, year,
    #                        since_reset, value, h (improvement charts are not listed: a rare outcome's improvement
    #                        chart signals after every long run of non-events and says little)
    alert: float = ALERT
    alarm: float = ALARM
    methods: dict[str, str] = field(default_factory=dict)


def unit_verdicts(frames: Mapping[str, pd.DataFrame], published: Mapping[str, bool], *, alert: float = ALERT,
                  alarm: float = ALARM, fdr: float = FDR_LEVEL) -> UnitVerdicts:
    """All verdicts for the outcomes with a published model (``frames``: :func:`reports.figures.outcome_frames`)."""
    tables, funnels, signals, methods = [], {}, [], {}
    for spec in OUTCOMES:
        frame = frames.get(spec.name)
        if frame is None or not published.get(spec.name) or frame.empty or frame["p"].isna().any():
            continue
        try:
            effects = shrunken_effects(frame, y="y", p="p", site=s.SITE_ID, operator=s.OPERATOR_ID)
            methods["shrinkage"] = effects.method
            shrunk = effects.units
        except ValueError as error:  # no events (or only events): no intercept, no shrinkage
            methods.setdefault("shrinkage", f"no shrunken estimates for {spec.name}: {error}")
            shrunk = pd.DataFrame(columns=["unit_type", "unit_id", "odds_ratio", "or_low", "or_high"])
        sites_of = frame.groupby(s.OPERATOR_ID, observed=True)[s.SITE_ID].first()
        for unit_type, column in UNIT_TYPES.items():
            result = qi.funnel_assessment(frame, unit=column, observed="y", expected="p", alert=alert, alarm=alarm)
            funnels[(spec.name, unit_type)] = result
            table = _funnel_rows(result, unit_type=unit_type, outcome=spec.name, alert=alert, alarm=alarm)
            table["site_id"] = (table["unit_id"] if unit_type == "site"
                                else table["unit_id"].map(sites_of.astype(str).rename(index=str)))
            table = _with_shrinkage(table, shrunk, unit_type)
            table = _with_trend(table, oe_slopes(frame, unit=column, y="y", p="p", year=s.PROCEDURE_YEAR))
            cusums = unit_cusums(_in_time_order(frame, column), unit=column, y="y", p="p", year=s.PROCEDURE_YEAR)
            methods["cusum"] = cusums.method
            table = _with_cusum(table, cusums.units, cusums.signals)
            tables.append(table)
            worse = cusums.signals[cusums.signals[cusum.DIRECTION] == cusum.DETERIORATION]
            signals.append(_signal_rows(worse, column, unit_type, spec.name))
        methods["funnel"] = result.method
    units = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(COLUMNS))
    units["q_high"] = qi.fdr_q_values(units["p_high"]) if len(units) else []
    units["q_low"] = qi.fdr_q_values(units["p_low"]) if len(units) else []
    units["alarm_survives_fdr"] = (((units["alarm"] == qi.FLAG_HIGH) & (units["q_high"] <= fdr))
                                   | ((units["alarm"] == qi.FLAG_LOW) & (units["q_low"] <= fdr)))
    signal_table = (pd.concat(signals, ignore_index=True) if signals
                    else pd.DataFrame(columns=["unit_type", "unit_id", "outcome", "direction", "case", "year",
                                               "since_reset", "value", "h"]))
    return UnitVerdicts(units=units[[c for c in COLUMNS if c in units.columns]], funnels=funnels,
                        signals=signal_table, alert=alert, alarm=alarm, methods=methods)


def _funnel_rows(result: qi.FunnelResult, *, unit_type: str, outcome: str, alert: float,
                 alarm: float) -> pd.DataFrame:
    t = result.table
    out = pd.DataFrame({"unit_type": unit_type, "unit_id": t[qi.UNIT].astype(str), "outcome": outcome,
                        "n": t[qi.N_CASES].astype(np.int64), "observed": t[qi.OBSERVED].astype(np.int64),
                        "expected": t[qi.EXPECTED].round(3), "oe_ratio": t[qi.OE_RATIO].round(4),
                        "oe_low": t[qi.OE_LOW].round(4), "oe_high": t[qi.OE_HIGH].round(4),
                        "risk_adjusted_rate": t[qi.RISK_ADJUSTED_RATE].round(5)})
    for level, names in ((alert, ("alert_lower", "alert_upper")), (alarm, ("alarm_lower", "alarm_upper"))):
        for mine, theirs in zip(names, qi.limit_columns(level)):
            out[mine] = t[theirs].round(4)
    out["p_high"], out["p_low"] = t[qi.P_HIGH].to_numpy(), t[qi.P_LOW].to_numpy()
    out["alert"], out["alarm"], out["null"] = t[qi.ALERT].to_numpy(), t[qi.ALARM].to_numpy(), t[qi.NULL].to_numpy()
    return out


def _with_shrinkage(table: pd.DataFrame, effects: pd.DataFrame, unit_type: str) -> pd.DataFrame:
    mine = effects[effects["unit_type"] == unit_type]
    mine = mine.set_index(mine["unit_id"].astype(str))
    table["shrunken_or"] = table["unit_id"].map(mine["odds_ratio"]).round(4).to_numpy()
    table["shrunken_low"] = table["unit_id"].map(mine["or_low"]).round(4).to_numpy()
    table["shrunken_high"] = table["unit_id"].map(mine["or_high"]).round(4).to_numpy()
    return table


def _with_trend(table: pd.DataFrame, slopes: pd.DataFrame) -> pd.DataFrame:
    slopes = slopes.set_index(slopes[qi.UNIT].astype(str))
    for mine, theirs in (("trend_ratio", unit_trends.OE_TREND), ("trend_low", unit_trends.OE_TREND_LOW),
                         ("trend_high", unit_trends.OE_TREND_HIGH)):
        table[mine] = table["unit_id"].map(slopes[theirs]).astype(float).round(4).to_numpy()
    return table


def _in_time_order(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    keys = [column, s.PROCEDURE_YEAR, s.EXTRACT_BATCH, s.PROCEDURE_ID] + ([s.VERTEBRA] if s.VERTEBRA in frame else [])
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)


def _with_cusum(table: pd.DataFrame, units: pd.DataFrame, signals: pd.DataFrame) -> pd.DataFrame:
    units = units.set_index(units[cusum.UNIT].astype(str))
    h = cusum.direction_column(cusum.LIMIT, cusum.DETERIORATION)
    count = cusum.direction_column(cusum.SIGNALS, cusum.DETERIORATION)
    table["cusum_h"] = table["unit_id"].map(units[h]).astype(float).round(3).to_numpy()
    table["cusum_signals"] = table["unit_id"].map(units[count]).astype(float).to_numpy()
    worse = signals[signals[cusum.DIRECTION] == cusum.DETERIORATION]
    last = worse.groupby(worse[cusum.UNIT].astype(str))[cusum.YEAR].max()
    table["cusum_last_signal_year"] = table["unit_id"].map(last).map(
        lambda y: "" if pd.isna(y) else str(int(y))).to_numpy()
    return table


def _signal_rows(signals: pd.DataFrame, column: str, unit_type: str, outcome: str) -> pd.DataFrame:
    return pd.DataFrame({"unit_type": unit_type, "unit_id": signals[cusum.UNIT].astype(str), "outcome": outcome,
                         "direction": signals[cusum.DIRECTION], "case": signals[cusum.CASE_INDEX],
                         "year": signals[cusum.YEAR], "since_reset": signals[cusum.CASES_SINCE_RESET],
                         "value": signals[cusum.VALUE].round(3), "h": signals[cusum.LIMIT].round(3)})


def publishable(units: pd.DataFrame) -> pd.DataFrame:
    """The verdict table as it may leave: counts 1..10 withheld and, with a unit's observed count, every verdict.

    Counts are suppressed per outcome and unit type (the outcome's total is published), observed and n as a pair
    (:func:`models.suppression.suppress_table`); statistics and verdicts of a withheld observed count are withheld
    (NaN, or ``"withheld"`` for text verdicts). ``alarm_survives_fdr`` is withheld as False with the text.
    """
    if units.empty:
        return units.assign(verdict_withheld=pd.Series(dtype=bool))
    derived = {c: ["observed"] for c in (*STATISTICS, *VERDICT_TEXT, "alarm_survives_fdr") if c in units.columns}
    out = suppress_table(units, count_columns=list(COUNTS), group_by=["outcome", "unit_type"],
                         complements={"observed": "n"}, row_total="n", unprotectable="withhold", derived=derived)
    hidden = (out["observed"] == SUPPRESSED).to_numpy()
    for column in VERDICT_TEXT:
        out[column] = np.where(hidden, WITHHELD, units[column].to_numpy())
    out["alarm_survives_fdr"] = np.where(hidden, False, units["alarm_survives_fdr"].to_numpy())
    out["verdict_withheld"] = hidden
    return out


def signals_publishable(signals: pd.DataFrame, published_units: pd.DataFrame) -> pd.DataFrame:
    """CUSUM signals of the units whose verdicts are published."""
    shown = published_units.loc[~published_units["verdict_withheld"], ["unit_type", "unit_id", "outcome"]]
    return signals.merge(shown, on=["unit_type", "unit_id", "outcome"], how="inner")
