"""Drift of a new batch from the training data: feature stability (PSI), the champion's calibration, the summary.

Two kinds, kept apart: a covariate shift (a feature's PSI) is a property of the data, which no refit changes, so it
is a warning; a calibration drift (the champion's risks against the batch's outcomes) is a property of the model,
the drift a refit can remove (:mod:`models.policy` decides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from features.dictionary import FeatureSpec
from models.checks import check_integer, check_level, check_outcome_and_risk
from models.intervals import poisson_ratio_interval
from models.logistic import recalibration_intervals
from models.risk_table import risk_table
from models.suppression import SUPPRESSED, is_small

Band = Literal["stable", "moderate", "major"]
KINDS = ("numeric", "binary", "categorical")
PSI_MODERATE, PSI_MAJOR = 0.1, 0.25  # Siddiqi 2006: < 0.1 stable, 0.1 to < 0.25 moderate, >= 0.25 major shift
MISSING = "missing"
TOO_FEW_EVENTS = "too few events to judge calibration"
NOT_MEASURED = "not measured: no outcomes in the new batches or no champion to judge"
DECIMALS = 6
_NOT_ESTIMABLE = (np.nan, np.nan, np.nan)


@dataclass(frozen=True)
class PsiResult:
    """PSI, band, and per bin (``missing`` last) label, reference/current shares (before the floor), contribution."""

    psi: float
    band: Band
    bins: list[dict[str, object]]


def population_stability(reference: ArrayLike, current: ArrayLike, *, kind: str, bins: int = 10,
                         floor: float = 1e-4) -> PsiResult:
    """Population stability index (PSI) of one feature between a reference sample and a current one.

    ``PSI = sum over bins of (a - e) * ln(a / e)``, ``e`` the reference and ``a`` the current share of a
    bin, each floored at ``floor`` (a bin empty in one sample adds a finite amount; floored shares are
    not renormalised). Numeric: bins bounded by the distinct ``bins``-quantiles of the reference's
    non-missing values (deciles for 10, linear interpolation), right-closed ``(lo, hi]``, ends at -inf
    and +inf. Binary (0/1 or bool, labelled ``"0"``/``"1"``) and categorical: one bin per value seen in
    either sample, labelled by its text. Every kind adds a ``"missing"`` bin (NaN, None, pd.NA); shares
    are of all rows. Band as :func:`psi_band`. O(n) after one quantile selection.

    Parameters
    ----------
    reference, current : array-like of shape (n,)
        The feature in the reference (training) data and in the new batch.
    kind
        ``"numeric"``, ``"binary"`` or ``"categorical"``, as ``FeatureSpec.kind``.
    bins
        Number of quantile bins of a numeric feature, at least 2 (fewer when quantiles coincide).
    floor
        Smallest share used in the formula, in (0, 1).

    Raises
    ------
    ValueError
        Unknown ``kind``, ``bins`` or ``floor`` out of range, an empty or 2-D sample, or values not of ``kind``.

    References
    ----------
    Siddiqi N. Credit Risk Scorecards: Developing and Implementing Intelligent Credit Scoring. Wiley
    2006, ch. 8 (system stability report; bands 0.1 and 0.25).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    check_integer(bins, "bins", minimum=2)
    if not 0 < floor < 1:
        raise ValueError(f"floor must be within (0, 1); got {floor!r}")
    ref, cur = _as_series(reference, "reference"), _as_series(current, "current")
    labels, ref_counts, cur_counts = (_numeric_counts(ref, cur, bins) if kind == "numeric" else
                                      _binary_counts(ref, cur) if kind == "binary" else _category_counts(ref, cur))
    expected, actual = ref_counts / len(ref), cur_counts / len(cur)
    e, a = np.maximum(expected, floor), np.maximum(actual, floor)
    contribution = (a - e) * np.log(a / e)
    psi = float(contribution.sum())
    return PsiResult(psi=psi, band=psi_band(psi), bins=[
        {"label": label, "reference_share": float(es), "current_share": float(cs), "contribution": float(c)}
        for label, es, cs, c in zip(labels, expected, actual, contribution)])


def psi_band(psi: float) -> Band:
    """``"stable"`` (< 0.1), ``"moderate"`` (0.1 to < 0.25) or ``"major"`` (>= 0.25) (Siddiqi 2006)."""
    return "major" if psi >= PSI_MAJOR else "moderate" if psi >= PSI_MODERATE else "stable"


def shift_direction(result: PsiResult, *, kind: str) -> str:
    """Which way a feature moved, in words that do not depend on the reference's bin edges.

    The bin whose share changed most (largest absolute change of share; ties: the first bin): ``"more <label>"`` or
    ``"fewer <label>"``; for a numeric feature whose largest change is not its ``missing`` bin, ``"higher"``
    or ``"lower"`` by the mean bin position of the non-missing values (current against reference), so that the
    direction survives a new reference (new deciles). ``"none"`` when no share changed.

    Raises
    ------
    ValueError
        Unknown ``kind``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    reference = np.array([b["reference_share"] for b in result.bins], dtype=np.float64)
    current = np.array([b["current_share"] for b in result.bins], dtype=np.float64)
    change = current - reference
    if not np.any(change):
        return "none"
    largest = int(np.argmax(np.abs(change)))
    label = str(result.bins[largest]["label"])
    if kind == "numeric" and label != MISSING:
        position = np.arange(len(change) - 1)  # the non-missing bins, in order
        ref_mean, cur_mean = (float(position @ share[:-1] / share[:-1].sum()) if share[:-1].sum() > 0 else 0.0
                              for share in (reference, current))
        if cur_mean != ref_mean:
            return "higher" if cur_mean > ref_mean else "lower"
    return f"{'more' if change[largest] > 0 else 'fewer'} {label}"


def feature_drift(reference: pd.DataFrame, current: pd.DataFrame, *, features: Sequence[FeatureSpec],
                  bins: int = 10) -> list[dict[str, object]]:
    """PSI of every feature between the reference (training) frame and a new batch, JSON-ready.

    ``reference`` and ``current`` hold a column per feature of ``features`` (others are ignored);
    ``bins`` as :func:`population_stability`. Returns one dict per feature, ``feature``, ``kind``,
    ``psi`` (rounded to 6 decimals), ``band``, ``direction`` (:func:`shift_direction`), sorted by PSI descending
    (ties by name).

    Raises
    ------
    ValueError
        A feature's column is absent from either frame, or as :func:`population_stability`.
    """
    for name, frame in (("reference", reference), ("current", current)):
        absent = [f.name for f in features if f.name not in frame.columns]
        if absent:
            raise ValueError(f"{name} must hold a column per feature; {len(absent)} missing: {', '.join(absent)}")
    results = [(f, population_stability(reference[f.name], current[f.name], kind=f.kind, bins=bins)) for f in features]
    rows = [{"feature": f.name, "kind": f.kind, "psi": round(r.psi, DECIMALS), "band": r.band,
             "direction": shift_direction(r, kind=f.kind)} for f, r in results]
    return sorted(rows, key=lambda row: (-row["psi"], row["feature"]))


def batch_calibration(y: ArrayLike, p: ArrayLike, *, level: float = 0.95) -> dict[str, object]:
    """Calibration of a champion's risks on one new batch with outcomes, and whether it has drifted, JSON-ready.

    ``oe_ratio``: observed / expected events (expected = sum of ``p``) with the exact Poisson (Garwood)
    interval of the observed count divided by the expected (conservative when risks are large).
    ``intercept``: calibration-in-the-large, ``a`` in ``logit P(y=1) = a + logit(p)`` (offset, slope
    fixed at 1; 0 is ideal). ``slope``: ``b`` in ``logit P(y=1) = a + b logit(p)`` (1 is ideal; below 1,
    risks too extreme). Both by maximum likelihood (statsmodels GLM Binomial on rows grouped by distinct
    risk, ``p`` clipped to [1e-15, 1 - 1e-15]: :func:`models.logistic.recalibration_intervals`, method ``"irls"``)
    with Wald intervals; None when the fit does not exist (no events or non-events, separation, or one distinct
    risk for the slope).
    ``drifted``: the O/E or the slope interval excludes 1 and its estimate is beyond 1 +- :data:`OE_MARGIN`
    (O/E) or :data:`SLOPE_MARGIN` (slope): significant and material (at most the 5-10% false alarms of two 95%
    tests on a calibrated batch, fewer as the margin removes small ones); ``reason`` says why in words;
    ``directions`` names each drift found, ``"<measure>: <which way>"`` (e.g. ``"observed/expected ratio: more
    events than predicted"``), the signature by which :mod:`models.policy` knows the same drift again.
    ``judged``: whether the O/E or the slope could be estimated at all. Small counts are not published: when events
    or non-events number 1 to 10, ``events`` (and ``n`` if 1 to 10) is ``"<11"``, ratios, intervals and
    coefficients None, ``drifted`` and ``judged`` False, ``reason`` :data:`TOO_FEW_EVENTS`. Values rounded to 6
    decimals.

    Parameters
    ----------
    y, p : arrays of shape (n,)
        Outcomes of the batch (0/1 or bool) and the champion's predicted risks (in [0, 1]).
    level
        Coverage of the intervals, in (0, 1).

    Returns
    -------
    dict
        ``n``, ``events``, ``expected``, ``oe_ratio``/``intercept``/``slope`` (each ``{"estimate",
        "low", "high"}``), ``level``, ``judged``, ``drifted``, ``reason``, ``directions``.

    Raises
    ------
    ValueError
        As :func:`models.metrics.brier_score` (e.g. ``y`` not 0/1), or ``level`` outside (0, 1).

    References
    ----------
    Garwood F. Fiducial limits for the Poisson distribution. Biometrika 1936;28:437-442.
    Cox DR. Two further applications of a model for binary regression. Biometrika 1958;45:562-565.
    Van Calster B, Nieboer D, Vergouwe Y, et al. A calibration hierarchy for risk models was defined:
    from utopia to empirical data. J Clin Epidemiol 2016;74:167-176.
    """
    y01, risk = check_outcome_and_risk(y, p)
    check_level(level)
    n, events, expected = len(y01), int(y01.sum()), float(risk.sum())
    withheld = is_small(events) or is_small(n - events)  # n - events would give small non-events away
    oe = _NOT_ESTIMABLE if withheld else _garwood_ratio(events, expected, level)
    intercept, slope = (_NOT_ESTIMABLE, _NOT_ESTIMABLE) if withheld else _calibration_fits(y01, risk, level)
    directions, reason = ([], TOO_FEW_EVENTS) if withheld else _judge(oe, slope, level)
    judged = not withheld and bool(np.isfinite(oe[1]) or np.isfinite(slope[1]))
    return {"n": SUPPRESSED if is_small(n) else n, "events": SUPPRESSED if withheld else events,
            "expected": round(expected, DECIMALS), "oe_ratio": _rounded(oe), "intercept": _rounded(intercept),
            "slope": _rounded(slope), "level": level, "judged": judged, "drifted": bool(directions),
            "reason": reason, "directions": directions}


def drift_summary(features: list[dict[str, object]], calibration: dict[str, object] | None, *,
                  psi_threshold: float = PSI_MAJOR) -> dict[str, object]:
    """The drift of new batches from :func:`feature_drift` and :func:`batch_calibration` (None: no outcomes yet).

    ``drifted``: the champion's calibration has drifted on the batches, the only drift a refit can remove;
    ``reasons`` says so in words (empty when not drifted). A feature whose PSI is at least ``psi_threshold`` is a
    covariate shift: listed in ``covariate_shift`` (``feature``, ``psi``, ``band``, ``direction``), never
    ``drifted`` (a shift between new batches and training data the old batches dominate survives any refit; the
    policy words it as a warning). ``calibration_judged``: the calibration was measured and estimable;
    ``calibration_directions`` the drifts found (``"<measure>: <which way>"``); ``calibration_reason`` the
    judgement in words (:data:`NOT_MEASURED` without one). ``features_major`` and
    ``features_moderate``: names by band, in the order given.

    Raises
    ------
    ValueError
        ``psi_threshold`` not positive, or a feature or ``calibration`` dict lacks a key it needs.
    """
    if not psi_threshold > 0:
        raise ValueError(f"psi_threshold must be positive; got {psi_threshold!r}")
    checks = [("each feature", row, {"feature", "psi", "band"}) for row in features] + (
        [("calibration", calibration, {"drifted", "reason"})] if calibration is not None else [])
    for what, row, keys in checks:
        if not keys <= row.keys():
            raise ValueError(f"{what} must have keys {', '.join(sorted(keys))}; got {', '.join(sorted(row))}")
    shifted = [{"feature": row["feature"], "psi": row["psi"], "band": row["band"],
                "direction": row.get("direction", "unknown")}
               for row in features if float(row["psi"]) >= psi_threshold]
    drifted = calibration is not None and bool(calibration["drifted"])
    return {"drifted": drifted, "reasons": [f"calibration drifted: {calibration['reason']}"] if drifted else [],
            "calibration_judged": calibration is not None and bool(calibration.get("judged", True))
            and calibration["reason"] != TOO_FEW_EVENTS,
            "calibration_directions": list(calibration.get("directions") or [calibration["reason"]]) if drifted
            else [],
            "calibration_reason": calibration["reason"] if calibration is not None else NOT_MEASURED,
            "covariate_shift": shifted,
            "features_major": [row["feature"] for row in features if row["band"] == "major"],
            "features_moderate": [row["feature"] for row in features if row["band"] == "moderate"]}


def shift_signature(row: dict[str, object]) -> str:
    """How a covariate shift of :func:`drift_summary` is known again: ``"<feature>: <direction>"``."""
    return f"{row['feature']}: {row.get('direction', 'unknown')}"


# ----------------------------------------------------------------------------------- private steps
def _as_series(values: ArrayLike, name: str) -> pd.Series:
    series = values if isinstance(values, pd.Series) else pd.Series(values) if np.ndim(values) == 1 else None
    if series is None or len(series) == 0:
        raise ValueError(f"{name} must be a non-empty one-dimensional sample; got shape {np.shape(values)}")
    return series


def _as_float(series: pd.Series, name: str, rule: str) -> np.ndarray:
    try:
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold {rule}; got non-numeric values (dtype {series.dtype})") from None


def _numeric_counts(ref: pd.Series, cur: pd.Series, bins: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bin labels and counts per bin (``missing`` last) of both samples, bins from the reference's quantiles."""
    ref_x, cur_x = (_as_float(s, f"{name} of a numeric feature", "numbers") for s, name in ((ref, "reference"),
                                                                                           (cur, "current")))
    present = ref_x[~np.isnan(ref_x)]
    edges = np.unique(np.quantile(present, np.arange(1, bins) / bins)) if len(present) else np.empty(0)
    bounds = ["-inf", *(f"{e:.6g}" for e in edges), "inf"]
    labels = [f"({lo}, {hi}]" for lo, hi in zip(bounds[:-2], bounds[1:-1])] + [f"({bounds[-2]}, inf)", MISSING]
    codes = (np.where(np.isnan(x), len(edges) + 1, np.searchsorted(edges, x, side="left")) for x in (ref_x, cur_x))
    ref_counts, cur_counts = (np.bincount(c, minlength=len(edges) + 2).astype(np.float64) for c in codes)
    return labels, ref_counts, cur_counts


def _binary_counts(ref: pd.Series, cur: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Counts of 0, 1 and missing in both samples."""
    def counts(series: pd.Series, name: str) -> np.ndarray:
        values = _as_float(series, f"{name} of a binary feature", "0/1 or bool values")
        bad = ~np.isnan(values) & (values != 0) & (values != 1)
        if bad.any():
            raise ValueError(f"{name} of a binary feature must hold 0/1 or bool values; {int(bad.sum())} values "
                             f"are not (e.g. {values[bad][0]:g})")
        return np.bincount(np.where(np.isnan(values), 2, values).astype(np.intp), minlength=3).astype(np.float64)
    return ["0", "1", MISSING], counts(ref, "reference"), counts(cur, "current")


def _category_counts(ref: pd.Series, cur: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One bin per value seen in either sample (labelled by its text, sorted), then ``missing``; counts of both."""
    tallies = [counts.groupby(counts.index.astype(str)).sum() for counts in (ref.value_counts(), cur.value_counts())]
    table = pd.concat(tallies, axis=1).fillna(0).astype(np.float64)
    table = table[table.sum(axis=1) > 0].sort_index()
    ref_counts, cur_counts = np.hstack([table.to_numpy().T, [[ref.isna().sum()], [cur.isna().sum()]]])
    return [*table.index, MISSING], ref_counts, cur_counts


def _garwood_ratio(observed: int, expected: float, level: float) -> tuple[float, float, float]:
    """O/E with its exact Poisson (Garwood) interval; NaN when E = 0."""
    if expected <= 0:
        return _NOT_ESTIMABLE
    low, high = poisson_ratio_interval(observed, expected, level=level)
    return observed / expected, float(low), float(high)


def _calibration_fits(y01: np.ndarray, risk: np.ndarray, level: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(estimate, low, high) of the calibration intercept (offset logit(p)) and slope; NaN where not estimable."""
    return recalibration_intervals(risk_table(y01, risk)[0], level=level, method="irls")


OE_MARGIN = 0.1
"""O/E within 1 +- this is not material drift, however significant (10% more or fewer events than predicted)."""
SLOPE_MARGIN = 0.2
"""A calibration slope within 1 +- this is not material drift (0.8 to 1.2, the usual band of acceptable slopes)."""


def _judge(oe: tuple[float, ...], slope: tuple[float, ...], level: float) -> tuple[list[str], str]:
    """The drifts found (``"<measure>: <which way>"``; none: not drifted) and why in words. A measure has drifted
    when its interval excludes 1 *and* its estimate is outside the margin.

    Significance alone is not enough: a batch of tens of thousands of levels detects a slope of 1.04, which
    changes no decision; a margin alone would alarm on the noise of a small batch.
    """
    findings, consistent, directions = [], [], []
    for name, (estimate, low, high), above, below, margin in (
            ("observed/expected ratio", oe, "more events than predicted", "fewer events than predicted",
             OE_MARGIN),
            ("calibration slope", slope, "risks too moderate", "risks too extreme", SLOPE_MARGIN)):
        text = f"{name} {estimate:.3f} ({level:.0%} CI {low:.3f} to {high:.3f})"
        if not np.isfinite(low):
            consistent.append(f"{name} not estimable")
        elif (low > 1 or high < 1) and abs(estimate - 1) > margin:
            findings.append(f"{text} excludes 1 and is beyond 1 +- {margin:g}: {above if low > 1 else below}")
            directions.append(f"{name}: {above if low > 1 else below}")
        elif low > 1 or high < 1:
            consistent.append(f"{text} excludes 1 but is within 1 +- {margin:g} (not material)")
        else:
            consistent.append(f"{text} includes 1")
    return directions, "; ".join(findings or consistent)


def _rounded(values: tuple[float, ...]) -> dict[str, float | None]:
    return {key: round(float(v), DECIMALS) if np.isfinite(v) else None
            for key, v in zip(("estimate", "low", "high"), values)}
