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
from numpy.typing import ArrayLike

from models.outcomes import OUTCOMES
from models.suppression import SUPPRESSED, suppress_table
from records import schema as s
from reports import qi
from reports import cusum
from reports.cusum import unit_cusums
from reports.shrinkage import shrunken_effects
from reports import unit_trends
from reports.unit_trends import oe_slopes

PAIR, KEY = "_operator_at_site", "_key"  # an operator's unit: the (operator, site) pair
_SEP = "\x1f"  # the unit separator: the contract refuses control characters in ids, so it cannot occur in one
WITHHELD = "withheld"
FDR_LEVEL = 0.05
ALERT, ALARM = 0.95, 0.998
COUNTS = ("n", "observed")
VERDICT_TEXT = ("alert", "alarm", "cusum_last_signal_year")
"""Text columns that are verdicts: withheld with the unit's observed count."""
STATISTICS = ("oe_ratio", "oe_low", "oe_high", "risk_adjusted_rate", "p_high", "p_low", "q_high", "q_low",
              "shrunken_or", "shrunken_low", "shrunken_high", "trend_ratio", "trend_low", "trend_high",
              "cusum_signals", "cusum_h")
COLUMNS = ("unit_type", "unit_id", "site_id", "outcome", "n", "observed", "expected", "oe_ratio", "oe_low",
           "oe_high", "risk_adjusted_rate", "alert_lower", "alert_upper", "alarm_lower", "alarm_upper", "p_high",
           "p_low", "q_high", "q_low", "alert", "alarm", "alarm_survives_fdr", "shrunken_or", "shrunken_low", "shrunken_high", "trend_ratio",
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
    """All verdicts for the outcomes with a published model (``frames``: :func:`reports.figures.outcome_frames`).

    Operators are nested in sites: an operator who works at two sites is two units (one per site), as in the
    shrinkage model, so that every operator row sums into its site row.
    """
    tables, funnels, signals, methods = [], {}, [], {"funnel": [], "shrinkage": [], "cusum": []}
    for spec in OUTCOMES:
        frame = frames.get(spec.name)
        if frame is None or not published.get(spec.name) or frame.empty or frame["p"].isna().any():
            continue
        frame = frame.assign(**{PAIR: frame[s.OPERATOR_ID].astype(str) + _SEP + frame[s.SITE_ID].astype(str)})
        in_time = frame[[s.SITE_ID, PAIR, "y", "p", s.PROCEDURE_YEAR]].take(_time_order(frame)).reset_index(
            drop=True)  # sorted once per outcome: the CUSUMs group the rows by unit themselves, keeping this order
        try:
            effects = shrunken_effects(frame, y="y", p="p", site=s.SITE_ID, operator=s.OPERATOR_ID)
            methods["shrinkage"].append(f"{spec.name}: {effects.method}" + "".join(f" {n}" for n in effects.notes))
            shrunk = effects.units
        except ValueError as error:  # no events (or only events): no intercept, no shrinkage
            methods["shrinkage"].append(f"{spec.name}: no shrunken estimates ({error})")
            shrunk = pd.DataFrame(columns=["unit_type", "unit_id", "site_id", "odds_ratio", "or_low", "or_high"])
        for unit_type, column in (("site", s.SITE_ID), ("operator", PAIR)):
            result = qi.funnel_assessment(frame, unit=column, observed="y", expected="p", alert=alert, alarm=alarm)
            funnels[(spec.name, unit_type)] = result
            table = _funnel_rows(result, unit_type=unit_type, outcome=spec.name, alert=alert, alarm=alarm)
            table = _with_shrinkage(table, shrunk, unit_type)
            table = _with_trend(table, oe_slopes(frame, unit=column, y="y", p="p", year=s.PROCEDURE_YEAR))
            cusums = unit_cusums(in_time, unit=column, y="y", p="p", year=s.PROCEDURE_YEAR,
                                 improvement_odds_ratio=None)  # deterioration only: see UnitVerdicts.signals
            table = _with_cusum(table, cusums.units, cusums.signals)
            tables.append(table.drop(columns=[KEY]))
            worse = cusums.signals[cusums.signals[cusum.DIRECTION] == cusum.DETERIORATION]
            signals.append(_signal_rows(worse, unit_type, spec.name))
            if unit_type == "operator":
                methods["cusum"].append(f"{spec.name}: {cusums.method}")
        methods["funnel"].append(f"{spec.name}: {result.method}")
    units = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=list(COLUMNS))
    units = with_q_values(units, fdr=fdr)
    signal_table = (pd.concat(signals, ignore_index=True) if signals
                    else pd.DataFrame(columns=["unit_type", "unit_id", "site_id", "outcome", "direction", "case",
                                               "year", "since_reset", "value", "h"]))
    return UnitVerdicts(units=units[[c for c in COLUMNS if c in units.columns]], funnels=funnels,
                        signals=signal_table, alert=alert, alarm=alarm,
                        methods={k: " ".join(v) for k, v in methods.items()})


def with_q_values(units: pd.DataFrame, *, fdr: float = FDR_LEVEL) -> pd.DataFrame:
    """``q_high``, ``q_low`` and ``alarm_survives_fdr`` over the units' one-sided p-values of both directions, as one
    family (Benjamini-Hochberg over 2m tests: the alarms that survive, high or low, have a false discovery rate of
    at most ``fdr``). Units without a p-value (withheld) are not in the family."""
    out = units.copy()
    if not len(out):
        return out.assign(q_high=pd.Series(dtype=float), q_low=pd.Series(dtype=float),
                          alarm_survives_fdr=pd.Series(dtype=bool))
    q = qi.fdr_q_values(np.concatenate([out["p_high"].to_numpy(dtype=float), out["p_low"].to_numpy(dtype=float)]))
    out["q_high"], out["q_low"] = _significant(q[:len(out)]), _significant(q[len(out):])
    out["alarm_survives_fdr"] = (((out["alarm"] == qi.FLAG_HIGH) & (out["q_high"] <= fdr))
                                 | ((out["alarm"] == qi.FLAG_LOW) & (out["q_low"] <= fdr)))
    return out


def _funnel_rows(result: qi.FunnelResult, *, unit_type: str, outcome: str, alert: float,
                 alarm: float) -> pd.DataFrame:
    t = result.table
    key = t[qi.UNIT].astype(str)
    if unit_type == "site":
        unit_id, site_id = key, key
    else:
        parts = key.str.split(_SEP, n=1, expand=True, regex=False)
        unit_id, site_id = parts[0], parts[1]
    out = pd.DataFrame({KEY: key, "unit_type": unit_type, "unit_id": unit_id, "site_id": site_id, "outcome": outcome,
                        "n": t[qi.N_CASES].astype(np.int64), "observed": t[qi.OBSERVED].astype(np.int64),
                        "expected": t[qi.EXPECTED].round(3), "oe_ratio": t[qi.OE_RATIO].round(4),
                        "oe_low": t[qi.OE_LOW].round(4), "oe_high": t[qi.OE_HIGH].round(4),
                        "risk_adjusted_rate": t[qi.RISK_ADJUSTED_RATE].round(5)})
    for level, names in ((alert, ("alert_lower", "alert_upper")), (alarm, ("alarm_lower", "alarm_upper"))):
        for mine, theirs in zip(names, qi.limit_columns(level)):
            out[mine] = t[theirs].round(4)
    out["p_high"], out["p_low"] = (_significant(t[c].to_numpy(dtype=float)) for c in (qi.P_HIGH, qi.P_LOW))
    out["alert"], out["alarm"], out["null"] = t[qi.ALERT].to_numpy(), t[qi.ALARM].to_numpy(), t[qi.NULL].to_numpy()
    return out


def _significant(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """Rounded to ``digits`` significant digits: no figure claims more, and the bytes do not depend on summation
    order."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(values > 0, 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(values)))), 1.0)
    return np.where(values > 0, np.round(values * scale) / scale, values)


def _with_shrinkage(table: pd.DataFrame, effects: pd.DataFrame, unit_type: str) -> pd.DataFrame:
    mine = effects[effects["unit_type"] == unit_type]
    keys = (mine["unit_id"].astype(str) if unit_type == "site"
            else mine["unit_id"].astype(str) + _SEP + mine["site_id"].astype(str))
    mine = mine.set_index(keys)
    for column, theirs in (("shrunken_or", "odds_ratio"), ("shrunken_low", "or_low"), ("shrunken_high", "or_high")):
        table[column] = table[KEY].map(mine[theirs]).astype(float).round(4).to_numpy()
    return table


def _with_trend(table: pd.DataFrame, slopes: pd.DataFrame) -> pd.DataFrame:
    slopes = slopes.set_index(slopes[qi.UNIT].astype(str))
    for mine, theirs in (("trend_ratio", unit_trends.OE_TREND), ("trend_low", unit_trends.OE_TREND_LOW),
                         ("trend_high", unit_trends.OE_TREND_HIGH)):
        table[mine] = table[KEY].map(slopes[theirs]).astype(float).round(4).to_numpy()
    return table


def _time_order(frame: pd.DataFrame) -> np.ndarray:
    """The positions of ``frame``'s rows in the order the cases happened, as far as the records tell: by year,
    batch, procedure and level (pandas' stable sort by these keys).

    A NumPy lexsort (a pandas sort by the Arrow-string procedure ids of a million rows cost seconds); keys with a
    missing value fall back to pandas' sort, which puts them last."""
    keys = [s.PROCEDURE_YEAR, s.EXTRACT_BATCH, s.PROCEDURE_ID] + ([s.VERTEBRA] if s.VERTEBRA in frame else [])
    if frame[keys].isna().any().any():
        return frame[keys].reset_index(drop=True).sort_values(keys, kind="stable").index.to_numpy()
    # text as NumPy strings (code-point order, as pandas sorts them); any other key as codes in its sorted order
    # (numbers by value, a categorical in its own order)
    arrays = [frame[k].to_numpy(dtype="U") if _is_text(frame[k]) else pd.factorize(frame[k], sort=True)[0]
              for k in keys]
    return np.lexsort(arrays[::-1])  # the last key is lexsort's primary one


def _is_text(column: pd.Series) -> bool:
    """Strings, of a string dtype or as objects (numbers held as objects are not text; nor is a categorical)."""
    return not isinstance(column.dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(column)


def _with_cusum(table: pd.DataFrame, units: pd.DataFrame, signals: pd.DataFrame) -> pd.DataFrame:
    units = units.set_index(units[cusum.UNIT].astype(str))
    h = cusum.direction_column(cusum.LIMIT, cusum.DETERIORATION)
    count = cusum.direction_column(cusum.SIGNALS, cusum.DETERIORATION)
    table["cusum_h"] = table[KEY].map(units[h]).astype(float).round(3).to_numpy()
    table["cusum_signals"] = table[KEY].map(units[count]).astype(float).to_numpy()
    worse = signals[signals[cusum.DIRECTION] == cusum.DETERIORATION]
    last = worse.groupby(worse[cusum.UNIT].astype(str))[cusum.YEAR].max()
    table["cusum_last_signal_year"] = table[KEY].map(last).map(
        lambda y: "" if pd.isna(y) else str(int(y))).to_numpy()
    return table


def _signal_rows(signals: pd.DataFrame, unit_type: str, outcome: str) -> pd.DataFrame:
    key = signals[cusum.UNIT].astype(str)
    parts = key.str.split(_SEP, n=1, expand=True, regex=False) if unit_type == "operator" and len(key) else None
    unit_id, site_id = (key, key) if parts is None else (parts[0], parts[1])
    return pd.DataFrame({"unit_type": unit_type, "unit_id": unit_id, "site_id": site_id, "outcome": outcome,
                         "direction": signals[cusum.DIRECTION], "case": signals[cusum.CASE_INDEX],
                         "year": signals[cusum.YEAR], "since_reset": signals[cusum.CASES_SINCE_RESET],
                         "value": signals[cusum.VALUE].round(3), "h": signals[cusum.LIMIT].round(3)})


def publishable(units: pd.DataFrame, *, withheld_n: ArrayLike | None = None, fdr: float = FDR_LEVEL) -> pd.DataFrame:
    """The verdict table as it may leave: counts 1..10 withheld and, with a unit's observed count, every verdict.

    Counts (``n`` and ``observed``, a pair) are protected as a hierarchy, per outcome: sites against the outcome's
    published total, each site's operators against their site's row (which may be withheld in turn, and then is
    protected among the sites), repeated until neither level withholds anything new
    (:func:`models.suppression.suppress_table` with ``already``). ``withheld_n`` marks ``n`` cells another published
    table withholds (a site's assessed levels are its levels minus those not assessed, which the completeness table
    may withhold). Statistics and verdicts of a withheld observed count are withheld (NaN, ``"withheld"`` for text);
    q-values and ``alarm_survives_fdr`` are recomputed over the published verdicts only, since a q-value carries the
    p-values of its family.
    """
    if units.empty:
        return units.assign(verdict_withheld=pd.Series(dtype=bool))
    hidden = {c: np.zeros(len(units), dtype=bool) for c in COUNTS}
    if withheld_n is not None:
        hidden["n"] |= np.asarray(withheld_n, dtype=bool)
    # the same unit's n in two outcomes is one cell (the leakage outcomes share their assessed levels): withheld in one,
    # withheld in all, and each outcome protected again, until nothing changes
    same_n = units.groupby(["unit_type", "unit_id", "site_id", "n"], sort=False).ngroup().to_numpy()
    for _ in range(20):
        before = hidden["n"].copy()
        for outcome in units["outcome"].unique():
            rows = np.flatnonzero((units["outcome"] == outcome).to_numpy())
            part = {c: h[rows] for c, h in hidden.items()}
            part = _protect_hierarchy(units.iloc[rows].reset_index(drop=True), part)
            for c in COUNTS:
                hidden[c][rows] = part[c]
        hidden["n"] = np.isin(same_n, same_n[hidden["n"]])
        if (hidden["n"] == before).all():
            break
    else:
        raise RuntimeError("the suppression of the QI table did not settle across outcomes in 20 rounds")
    out = units.copy()
    for c in COUNTS:
        out[c] = pd.Series([SUPPRESSED if h else int(v) for v, h in zip(units[c], hidden[c])], index=units.index,
                           dtype=object)
    withheld = hidden["observed"]
    for column in STATISTICS:
        if column in out:
            out.loc[withheld, column] = np.nan
    for column in VERDICT_TEXT:
        out[column] = np.where(withheld, WITHHELD, units[column].to_numpy())
    out["verdict_withheld"] = withheld
    shown = with_q_values(out.loc[~withheld], fdr=fdr)
    out.loc[~withheld, ["q_high", "q_low", "alarm_survives_fdr"]] = shown[["q_high", "q_low", "alarm_survives_fdr"]]
    out["alarm_survives_fdr"] = out["alarm_survives_fdr"].where(~withheld, False).astype(bool)
    return out


def _protect_hierarchy(part: pd.DataFrame, hidden: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Withhold until neither the sites (against the outcome total) nor any site's operators (against the site row)
    let a withheld count be worked out; ``hidden`` holds the cells withheld already."""
    counts = part[list(COUNTS)].astype(np.int64)
    site = (part["unit_type"] == "site").to_numpy()
    operators = ~site
    # the operators of each site under their site's row (site rows first, one group per site); fixed across rounds
    labelled = counts.assign(site_id=part["site_id"].to_numpy(), total=site)
    nested = pd.concat([labelled[site], labelled[operators]])
    order = np.concatenate([np.flatnonzero(site), np.flatnonzero(operators)])
    nested_ok = _nested_sums_match(nested)
    for _ in range(100):
        before = {c: h.copy() for c, h in hidden.items()}
        sites = suppress_table(counts[site], count_columns=list(COUNTS), complements={"observed": "n"}, row_total="n",
                               unprotectable="withhold", already={c: h[site] for c, h in hidden.items()})
        for c in COUNTS:
            hidden[c][site] = (sites[c] == SUPPRESSED).to_numpy()
        if nested_ok:
            result = suppress_table(nested, count_columns=list(COUNTS), group_by=["site_id"],
                                    complements={"observed": "n"}, row_total="n", unprotectable="withhold",
                                    total_rows=nested["total"].to_numpy(),
                                    already={c: h[order] for c, h in hidden.items()})
            for c in COUNTS:
                hidden[c][order] = (result[c] == SUPPRESSED).to_numpy()
        if all((before[c] == hidden[c]).all() for c in COUNTS):
            return hidden
    raise RuntimeError("the suppression of the QI table did not settle in 100 rounds")


def _nested_sums_match(nested: pd.DataFrame) -> bool:
    """Whether every site row is the sum of its operators (always, when each operator unit is a site:operator pair
    and both unit types cover the same cases)."""
    totals = nested[nested["total"]].set_index("site_id")[list(COUNTS)]
    sums = nested[~nested["total"]].groupby("site_id")[list(COUNTS)].sum()
    return totals.sort_index().equals(sums.reindex(totals.index).sort_index().astype(totals.dtypes.to_dict()))


def signals_publishable(signals: pd.DataFrame, published_units: pd.DataFrame) -> pd.DataFrame:
    """CUSUM signals of the units whose verdicts are published."""
    shown = published_units.loc[~published_units["verdict_withheld"], ["unit_type", "unit_id", "outcome"]]
    return signals.merge(shown, on=["unit_type", "unit_id", "outcome"], how="inner")
