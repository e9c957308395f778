"""Internal-external validation: how the model transports to a site or a year it was not developed on.

Leave-one-site-out (every site with enough events and non-events is held out once; the model is refitted on
all other sites) and temporal validation (for each of the last years, refitted on the earlier years and
tested on that year), each refit done as development does (the injected ``fit``). Per held-out unit:
discrimination and calibration with their standard errors on the pooling scale; across units, a
random-effects meta-analysis with a prediction interval (:mod:`models.meta_analysis`). Counts of cases 1 to
10 are never published (:mod:`models.suppression`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from scipy.optimize import brentq
from scipy.special import expit, logit

from models import progress
from models.checks import check_level
from models.fanout import Mapper, sequential
from models.meta_analysis import SCALES, Method, Prediction, check_options, pool_measure
from models.metrics import EPS, auroc, calibration_intercept_slope
from models.suppression import SMALL_CELL, SUPPRESSED, is_small

Fit = Callable[[Any, np.ndarray, np.ndarray], Any]
"""``fit(X_train, y_train, groups_train)`` -> a model: an estimator with ``predict_proba``, or ``X -> risks``."""
Status = Literal["evaluated", "too_few", "no_training", "too_few_training", "refit_failed", "withheld"]

MEASURES = tuple(SCALES)
DECIMALS = 6
METHODS: dict[str, str] = {
    "design": "internal-external cross-validation (Steyerberg & Harrell 2016): each site with enough events and "
              "non-events is held out in turn and the model refitted, as in development, on all other sites; "
              "temporal: for each of the last years, refitted on earlier years only and tested on that year",
    "auroc": "AUROC (models.metrics.auroc) with DeLong's variance; CI and pooling on the logit scale "
             "(SE of logit AUROC = SE / (AUROC (1 - AUROC)), delta method), taken back with expit",
    "oe_ratio": "observed events / sum of predicted risks; CI exp(log O/E +- z SE) with SE of log O/E = "
                "sqrt((1 - O/n) / O) (binomial approximation of O; Debray et al. 2017)",
    "calibration_intercept": "a in logit P(y=1) = a + logit(p), slope fixed at 1 by an offset (0 ideal); "
                             "maximum likelihood (models.metrics), Wald CI from the observed information",
    "calibration_slope": "b in logit P(y=1) = a + b logit(p) (1 ideal); maximum likelihood (models.metrics), "
                         "Wald CI from the observed information of (a, b)",
    "independence": "rows of a held-out unit are treated as independent; with level rows, the levels of one "
                    "procedure are correlated, so these standard errors are somewhat too small",
}
_FEW = "fewer than {events} events or fewer than {non_events} non-events"


@dataclass(frozen=True)
class _Split:
    """One refit: train on rows ``train`` (positions), predict rows ``test``."""

    kind: Literal["site", "year"]
    unit: str | int
    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class _Estimate:
    """One measure of one unit: natural-scale estimate and CI, and the pooling-scale ``theta`` with its SE."""

    estimate: float
    low: float
    high: float
    theta: float
    se: float

    def as_dict(self) -> dict[str, float | None]:
        return {name: _rounded(getattr(self, name)) for name in ("estimate", "low", "high", "theta", "se")}


def internal_external(fit: Fit, X: Any, y: ArrayLike, *, groups: ArrayLike, sites: ArrayLike,  # noqa: N803
                      years: ArrayLike, min_events: int = 100, min_non_events: int = 100, last_years: int = 3,
                      mapper: Mapper = sequential, level: float = 0.95, method: Method = "hksj",
                      prediction: Prediction = "t_k-2", site_folds: int | None = None) -> dict[str, object]:
    """Leave-one-site-out and temporal validation of refitted models, with a meta-analysis of each, JSON-ready.

    Sites: every site with at least ``min_events`` events and ``min_non_events`` non-events is held out
    once, the model refitted on all other rows (every other site, all years). Sites below either threshold
    are never held out: their rows are always in training, and only how many such sites there are is
    stated. Temporal: for each of the last ``last_years`` distinct years Y of ``years``, the model is
    refitted on the rows of years before Y (all sites) and tested on year Y; a year is not evaluated
    (``status`` says why) when its rows fall below either threshold or no earlier year exists.

    Every refit is one piece of work for ``mapper`` (:mod:`models.fanout`): ``fit`` and ``X`` must be
    picklable for a mapper that leaves the process. Performance of each held-out unit is computed by
    :func:`validation_performance`; each measure is pooled across units by
    :func:`models.meta_analysis.pool_measure` (sites and years separately), from the published (rounded)
    per-unit values, so that a reader can reproduce the pooled figures from the table.

    Parameters
    ----------
    fit
        ``fit(X_train, y_train, groups_train)`` returning a fitted model that gives calibrated risks: an
        estimator with ``predict_proba`` (column 1 is used) or a callable ``model(X) -> risks``. It is
        called with ``X`` rows selected by position (``X.iloc`` for pandas, keeping the index).
    X
        Predictors, n rows: a DataFrame or an array.
    y : array of shape (n,)
        Outcome, 0/1 or bool.
    groups : array of shape (n,)
        Cluster of each row (procedure), passed on to ``fit`` for its grouped cross-validation.
    sites, years : arrays of shape (n,)
        Site and year (whole number) of each row; no missing values.
    min_events, min_non_events
        Least events and non-events (rows) for a site to be held out or a year tested; whole numbers of at
        least 11 (:data:`models.suppression.SMALL_CELL`), so that no evaluated unit has a count to withhold.
    last_years
        How many of the latest years are tested in turn; 0 for none.
    mapper
        Where the refits run (:func:`models.fanout.sequential` by default).
    level
        Coverage of every interval, in (0, 1).
    method, prediction
        Meta-analysis options, as :func:`models.meta_analysis.random_effects`.
    site_folds
        With more eligible sites than this, the eligible sites are dealt (in sorted order, in turn) into
        ``site_folds`` groups and each refit holds out one whole group: every site is still predicted by a
        model that never saw it, at ``site_folds`` refits instead of one per site. None: one refit per site.

    Returns
    -------
    dict
        ``level``, ``criteria`` (the thresholds), ``methods`` (how each figure was computed, in words),
        ``sites`` with ``held_out`` (one unit row per held-out site), ``not_held_out`` (``{"sites": count,
        "reason"}``) and ``pooled`` (measure -> meta-analysis), and ``temporal`` with ``years`` (one unit
        row per tested year, evaluated or not) and ``pooled``. A unit row has ``unit``, ``kind``,
        ``status`` (``evaluated``; ``too_few`` or ``no_training``: a tested year not evaluated), ``reason``
        (None when evaluated), ``n``, ``events``, ``expected`` (sum of risks; None when not evaluated),
        ``train`` (``n``, ``events``, ``sites``, ``first_year``, ``last_year``; None without training rows)
        and one entry per measure of :data:`MEASURES` as :func:`validation_performance` (None when not
        evaluated). Counts 1 to 10 are shown as ``"<11"`` (``events`` also when the non-events are 1 to 10);
        the thresholds being at least 11, every evaluated unit's counts can be published.

    Raises
    ------
    ValueError
        Lengths differ, ``y`` is not 0/1, a site, year or group is missing, a year is not a whole number, a
        threshold is not a whole number of at least 11, ``last_years`` is negative, ``level`` is outside
        (0, 1), ``method`` or ``prediction`` is unknown (all checked before any refit), or ``fit``'s model
        does not give one risk in [0, 1] per row.

    References
    ----------
    Steyerberg EW, Harrell FE. Prediction models need appropriate internal, internal-external, and
    external validation. J Clin Epidemiol 2016;69:245-247.
    Debray TPA, Damen JAAG, Snell KIE, et al. A guide to systematic review and meta-analysis of prediction
    model performance. BMJ 2017;356:i6460.
    Riley RD, Ensor J, Snell KIE, et al. External validation of clinical prediction models using big
    datasets from e-health records or IPD meta-analysis: opportunities and challenges. BMJ 2016;353:i3140.
    """
    if not callable(fit):
        raise ValueError(f"fit must be a callable fit(X_train, y_train, groups_train); got {type(fit).__name__}")
    y01, group, site, year = _check_rows(X, y, groups, sites, years)
    for name, value in (("min_events", min_events), ("min_non_events", min_non_events)):
        if not _whole(value) or value < SMALL_CELL:
            raise ValueError(f"{name} must be a whole number of at least {SMALL_CELL} (a held-out unit's performance "
                             f"is published only when its counts can be); got {value!r}")
    if not _whole(last_years) or last_years < 0:
        raise ValueError(f"last_years must be a whole number >= 0; got {last_years!r}")
    level = check_level(level)
    check_options(method=method, prediction=prediction)  # before the refits, not after
    enough = _Enough(int(min_events), int(min_non_events))
    if site_folds is not None and (not _whole(site_folds) or site_folds < 2):
        raise ValueError(f"site_folds must be None or a whole number of at least 2; got {site_folds!r}")
    site_splits, not_held_out = _site_splits(y01, site, enough)
    refits = _grouped(site_splits, site_folds, len(y01))
    year_splits, year_status = _year_splits(y01, year, int(last_years), enough)
    splits = refits + year_splits
    risks = progress.mapped(mapper, _refit, splits, (fit, X, y01, group), label="internal-external refits (sites, years)",
                            local=mapper is sequential)
    by_site = _per_site(site_splits, refits, risks[:len(refits)])
    rows = {(s.kind, s.unit): _unit_row(s, y01, site, year, p, level)
            for s, p in [*by_site, *zip(year_splits, risks[len(refits):])]}
    site_rows = [rows[("site", s.unit)] for s in site_splits]
    year_rows = [rows.get(("year", target)) or _unevaluated_row(target, y01, site, year, status, enough)
                 for target, status in year_status]
    options = {"level": level, "method": method, "prediction": prediction}
    return {
        "level": level,
        "options": {"method": method, "prediction": prediction},
        "criteria": {"min_events": int(min_events), "min_non_events": int(min_non_events),
                     "last_years": int(last_years), "site_refits": len(refits)},
        "methods": dict(METHODS),
        "sites": {"held_out": site_rows,
                  "not_held_out": {"sites": not_held_out,
                                   "reason": f"{_FEW.format(**enough.words())} (in the site, or in the other sites): "
                                             "never held out, always in training"},
                  "pooled": _pooled(site_rows, options)},
        "temporal": {"years": year_rows, "pooled": _pooled(year_rows, options)},
    }


def validation_performance(y: ArrayLike, p: ArrayLike, *, level: float = 0.95) -> dict[str, dict[str, float | None]]:
    """AUROC, O/E, calibration intercept and slope of risks ``p`` on one held-out unit, with CIs and SEs.

    Each measure is ``{"estimate", "low", "high", "theta", "se"}``: the estimate and its ``level`` CI on
    the natural scale, and ``theta`` with its standard error ``se`` on the pooling scale of
    :data:`models.meta_analysis.SCALES` (logit AUROC, log O/E, intercept, slope). Methods as
    :data:`METHODS`: DeLong's variance for the AUROC with the CI on the logit scale; O/E with the binomial
    approximation ``SE(log O/E) = sqrt((1 - O/n) / O)``; intercept (offset ``logit(p)``) and slope by
    maximum likelihood with Wald CIs from the observed information. A value that does not exist (an AUROC
    of 0 or 1 on the logit scale, separation in the calibration fits) is None. Rounded to 6 decimals.

    Parameters
    ----------
    y, p : arrays of shape (n,)
        Outcome (0/1 or bool) with at least one event and one non-event, and predicted risk in [0, 1].
    level
        Coverage of the intervals, in (0, 1).

    Raises
    ------
    ValueError
        As :func:`models.metrics.auroc`, or ``level`` outside (0, 1).

    References
    ----------
    DeLong ER, DeLong DM, Clarke-Pearson DL. Comparing the areas under two or more correlated receiver
    operating characteristic curves: a nonparametric approach. Biometrics 1988;44:837-845.
    Debray TPA, et al. BMJ 2017;356:i6460 (scales and standard errors for pooling).
    Cox DR. Two further applications of a model for binary regression. Biometrika 1958;45:562-565.
    """
    return {name: estimate.as_dict() for name, estimate in _performance(y, p, check_level(level)).items()}


# --------------------------------------------------------------------------------------- inputs, plan
@dataclass(frozen=True)
class _Enough:
    events: int
    non_events: int

    def met(self, events: int, n: int) -> bool:
        return events >= self.events and n - events >= self.non_events

    def words(self) -> dict[str, int]:
        return {"events": self.events, "non_events": self.non_events}


def _check_rows(X: Any, y: ArrayLike, groups: ArrayLike, sites: ArrayLike,  # noqa: N803
                years: ArrayLike) -> tuple[np.ndarray, ...]:
    """``y`` as 0/1, groups, sites and years as arrays, after checking lengths and missing values."""
    n = len(X)
    arrays = {"y": np.asarray(y), "groups": np.asarray(groups), "sites": np.asarray(sites),
              "years": np.asarray(years)}
    for name, arr in arrays.items():
        if arr.ndim != 1 or len(arr) != n:
            raise ValueError(f"{name} must have one value per row of X ({n}); got shape {arr.shape}")
    if n == 0:
        raise ValueError("X must have rows; got 0")
    y_arr = pd.to_numeric(pd.Series(arrays["y"]), errors="coerce").to_numpy(dtype=np.float64)
    if (bad := ~np.isin(y_arr, (0.0, 1.0))).any():
        raise ValueError(f"y must be 0 or 1 (bool accepted); {int(bad.sum())} values are not")
    for name in ("groups", "sites", "years"):
        if (missing := pd.isna(arrays[name])).any():
            raise ValueError(f"{name} must not be missing; {int(missing.sum())} of {n} values are")
    year = pd.to_numeric(pd.Series(arrays["years"]), errors="coerce").to_numpy(dtype=np.float64)
    if (bad := ~np.isfinite(year) | (year != np.round(year))).any():
        raise ValueError(f"years must be whole numbers; {int(bad.sum())} of {n} values are not")
    return y_arr.astype(np.int8), arrays["groups"], arrays["sites"], year.astype(np.int64)


def _site_splits(y: np.ndarray, site: np.ndarray, enough: _Enough) -> tuple[list[_Split], int]:
    """A split per site meeting the thresholds (sites in sorted order), and how many sites do not."""
    splits, below = [], 0
    for label in sorted(pd.unique(site), key=str):
        test = site == label
        if enough.met(int(y[test].sum()), int(test.sum())) and enough.met(int(y[~test].sum()), int((~test).sum())):
            splits.append(_Split("site", label, np.flatnonzero(~test), np.flatnonzero(test)))
        else:
            below += 1
    return splits, below


def _grouped(site_splits: list[_Split], site_folds: int | None, n: int) -> list[_Split]:
    """The refits of the site validation: one per site, or one per group of sites (dealt in turn)."""
    if site_folds is None or len(site_splits) <= site_folds:
        return site_splits
    refits = []
    for g in range(int(site_folds)):
        members = site_splits[g::int(site_folds)]
        test = np.sort(np.concatenate([s.test for s in members]))
        train = np.setdiff1d(np.arange(n), test, assume_unique=True)
        refits.append(_Split("site", f"group {g + 1}", train, test))
    return refits


def _per_site(site_splits: list[_Split], refits: list[_Split],
              risks: Sequence[np.ndarray]) -> list[tuple[_Split, np.ndarray]]:
    """Each held-out site with the risks of the refit that held it out (its training rows those of the refit)."""
    if refits is site_splits:
        return list(zip(site_splits, risks))
    out = []
    for s in site_splits:
        refit, p = next((r, p) for r, p in zip(refits, risks) if np.isin(s.test[:1], r.test).all())
        position = np.searchsorted(refit.test, s.test)
        out.append((_Split("site", s.unit, refit.train, s.test), p if isinstance(p, str) else p[position]))
    return out


def _year_splits(y: np.ndarray, year: np.ndarray, last_years: int,
                 enough: _Enough) -> tuple[list[_Split], list[tuple[int, Status]]]:
    """A split per tested year that can be evaluated, and every tested year with its status (ascending)."""
    present = np.unique(year)
    tested = present[max(len(present) - last_years, 0):] if last_years else present[:0]
    splits, statuses = [], []
    for target in (int(t) for t in tested):
        test, train = year == target, year < target
        events, n = int(y[test].sum()), int(test.sum())
        status: Status = ("no_training" if not train.any() else "too_few" if not enough.met(events, n)
                          else "too_few_training" if not enough.met(int(y[train].sum()), int(train.sum()))
                          else "evaluated")
        if status == "evaluated":
            splits.append(_Split("year", target, np.flatnonzero(train), np.flatnonzero(test)))
        statuses.append((target, status))
    return splits, statuses


# ------------------------------------------------------------------------------------- refit, rows
def _refit(split: _Split, fit: Fit, X: Any, y: np.ndarray, groups: np.ndarray) -> np.ndarray:  # noqa: N803
    """One piece of work: ``fit`` on the training rows of ``split``; its risks on the test rows, or the reason
    (a string) when the fit refuses its rows (ValueError: e.g. a class too rare for an early-stopping split)."""
    try:
        model = fit(_take(X, split.train), y[split.train], groups[split.train])
    except ValueError as error:
        return f"the refit failed: {error}"
    test = _take(X, split.test)
    raw = model.predict_proba(test)[:, 1] if hasattr(model, "predict_proba") else model(test)
    risk = np.asarray(raw, dtype=np.float64).reshape(-1)
    if len(risk) != len(split.test) or not np.all((risk >= 0) & (risk <= 1)):
        raise ValueError(f"fit's model must give one risk in [0, 1] per row; for {split.kind} {split.unit} it gave "
                         f"{len(risk)} values for {len(split.test)} rows, {int((~((risk >= 0) & (risk <= 1))).sum())} "
                         f"outside [0, 1] or NaN")
    return risk


def _take(X: Any, positions: np.ndarray) -> Any:  # noqa: N803
    return X.iloc[positions] if isinstance(X, (pd.DataFrame, pd.Series)) else np.asarray(X)[positions]


def _unit_row(split: _Split, y: np.ndarray, site: np.ndarray, year: np.ndarray, p: np.ndarray,
              level: float) -> dict[str, object]:
    """The published row of an evaluated unit: counts, training summary and every measure (a unit whose refit
    failed: the reason, no counts and no measure)."""
    y_test = y[split.test]
    if isinstance(p, str):
        row = _counts_row(split.kind, split.unit, y_test, "refit_failed", f"not evaluated: {p}")
        row.update(n=None, events=None, expected=None, train=None)
        row.update(dict.fromkeys(MEASURES))
        return row
    row = _counts_row(split.kind, split.unit, y_test, "evaluated", None)
    row["expected"] = _rounded(float(p.sum()))
    row["train"] = _train_summary(y[split.train], site[split.train], year[split.train])
    row.update({name: estimate.as_dict() for name, estimate in _performance(y_test, p, level).items()})
    return row


def _unevaluated_row(target: int, y: np.ndarray, site: np.ndarray, year: np.ndarray, status: Status,
                     enough: _Enough) -> dict[str, object]:
    """The row of a tested year that was not evaluated, saying why; counts 1 to 10 withheld."""
    test, train = year == target, year < target
    reason = {"no_training": "not evaluated: no earlier year to train on",
              "too_few_training": f"not evaluated: the earlier years have {_FEW.format(**enough.words())}",
              "refit_failed": "not evaluated: the refit failed"}.get(status, f"not evaluated: {_FEW.format(**enough.words())}")
    row = _counts_row("year", target, y[test], status, reason)
    row.update(n=None, events=None)  # not evaluated: its counts are in the year subgroup table, suppressed there
    row["expected"] = None
    row["train"] = _train_summary(y[train], site[train], year[train]) if train.any() else None
    row.update(dict.fromkeys(MEASURES))
    return row


def _counts_row(kind: str, unit: Hashable, y_unit: np.ndarray, status: Status,
                reason: str | None) -> dict[str, object]:
    n, events = int(len(y_unit)), int(y_unit.sum())
    withheld = is_small(events) or is_small(n - events)
    return {"unit": unit if kind == "year" else str(unit), "kind": kind, "status": status, "reason": reason,
            "n": SUPPRESSED if is_small(n) else n, "events": SUPPRESSED if withheld else events}


def _train_summary(y: np.ndarray, site: np.ndarray, year: np.ndarray) -> dict[str, object]:
    """What a refit was trained on: sites and years, no counts (the training counts of successive years would
    give each year's count by subtraction; counts are in the validation's subgroup tables, suppressed there)."""
    return {"sites": int(len(pd.unique(site))), "first_year": int(year.min()), "last_year": int(year.max())}


def withhold_units(result: dict[str, object], withheld: dict[str, set[str]], *, reason: str) -> dict[str, object]:
    """``result`` of :func:`internal_external` with the named units withheld and the pooling redone without them.

    ``withheld`` maps ``"sites"`` / ``"temporal"`` to unit labels (as strings): a unit whose counts another
    table of the same report withholds (e.g. as the complement of a small cell) must not publish counts, an
    O/E and an expected count that would give them back. Its row keeps only ``unit``, ``kind``, ``status``
    ("withheld") and ``reason``.
    """
    out = dict(result)
    options = {"level": result["level"], **result.get("options", {})}
    for kind, key in (("sites", "held_out"), ("temporal", "years")):
        names = {str(u) for u in withheld.get(kind, set())}
        part = dict(result[kind])
        rows = []
        for row in part[key]:
            if str(row["unit"]) in names and row["status"] == "evaluated":
                row = {"unit": row["unit"], "kind": row["kind"], "status": "withheld", "reason": reason,
                       "n": None, "events": None, "expected": None, "train": row.get("train"),
                       **dict.fromkeys(MEASURES)}
            rows.append(row)
        part[key] = rows
        part["pooled"] = _pooled(rows, options)
        out[kind] = part
    return out


def _pooled(rows: Sequence[dict[str, object]], options: dict[str, Any]) -> dict[str, dict[str, object]]:
    """Meta-analysis of each measure across the unit rows (rows without an estimate are left out, named)."""
    units = [str(r["unit"]) for r in rows]
    pooled = {}
    for name in MEASURES:
        entries = [r[name] if isinstance(r[name], dict) else {} for r in rows]
        pooled[name] = pool_measure(units, [e.get("theta") for e in entries], [e.get("se") for e in entries],
                                    measure=name, **options)
    return pooled


# ---------------------------------------------------------------------------------------- performance
def _performance(y: ArrayLike, p: ArrayLike, level: float) -> dict[str, _Estimate]:
    """Every measure of one unit, unrounded."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    y01, risk = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    c = auroc(y01, risk)  # checks y and p
    intercept, slope = calibration_intercept_slope(y01, risk)
    x = logit(np.clip(risk, EPS, 1 - EPS))
    return {"auroc": _auroc_estimate(c, _delong_se(y01, risk), z), "oe_ratio": _oe_estimate(y01, risk, z),
            "calibration_intercept": _wald(intercept, _intercept_se(y01, x, intercept), z),
            "calibration_slope": _wald(slope, _slope_se(y01, x, slope), z)}


def _delong_se(y: np.ndarray, p: np.ndarray) -> float:
    """DeLong's standard error of the AUROC from the placement values (midranks; ties count 1/2)."""
    events = y == 1
    m, n = int(events.sum()), int((~events).sum())
    if m < 2 or n < 2:
        return np.nan
    ranks = stats.rankdata(p)
    v10 = (ranks[events] - stats.rankdata(p[events])) / n  # per event: share of non-events below it
    v01 = 1 - (ranks[~events] - stats.rankdata(p[~events])) / m  # per non-event: share of events above it
    return float(np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n))


def _auroc_estimate(c: float, se: float, z: float) -> _Estimate:
    if not 0 < c < 1 or not np.isfinite(se):
        return _Estimate(c, np.nan, np.nan, np.nan, np.nan)
    theta, se_logit = float(logit(c)), se / (c * (1 - c))
    return _Estimate(c, float(expit(theta - z * se_logit)), float(expit(theta + z * se_logit)), theta, se_logit)


def _oe_estimate(y: np.ndarray, p: np.ndarray, z: float) -> _Estimate:
    observed, expected, n = float(y.sum()), float(p.sum()), len(y)
    if observed == 0 or expected <= 0:
        return _Estimate(observed / expected if expected > 0 else np.nan, np.nan, np.nan, np.nan, np.nan)
    theta, se = float(np.log(observed / expected)), float(np.sqrt((1 - observed / n) / observed))
    if se == 0:  # every row an event: no binomial variation left
        return _Estimate(observed / expected, np.nan, np.nan, np.nan, np.nan)
    return _Estimate(observed / expected, float(np.exp(theta - z * se)), float(np.exp(theta + z * se)), theta, se)


def _intercept_se(y: np.ndarray, x: np.ndarray, intercept: float) -> float:
    """Wald SE of ``a`` in ``logit P = a + x`` (offset ``x``): ``1 / sqrt(sum p(1 - p))`` at the estimate."""
    if not np.isfinite(intercept):
        return np.nan
    fitted = expit(x + intercept)
    return float(1 / np.sqrt(np.sum(fitted * (1 - fitted))))


def _slope_se(y: np.ndarray, x: np.ndarray, slope: float) -> float:
    """Wald SE of ``b`` in ``logit P = a + b x``: ``a`` solves its score equation at ``b``, then the information."""
    observed = float(y.sum())
    if not np.isfinite(slope) or np.ptp(x) == 0:
        return np.nan
    def score(a: float) -> float:
        return float(expit(a + slope * x).sum() - observed)
    low, high = -1.0, 1.0
    while score(low) > 0:
        low *= 2
    while score(high) < 0:
        high *= 2
    a = brentq(score, low, high, xtol=1e-14, rtol=1e-14)
    fitted = expit(a + slope * x)
    w = fitted * (1 - fitted)
    information = np.array([[w.sum(), w @ x], [w @ x, w @ x ** 2]])
    determinant = np.linalg.det(information)
    return float(np.sqrt(information[0, 0] / determinant)) if determinant > 0 else np.nan


def _wald(estimate: float, se: float, z: float) -> _Estimate:
    if not np.isfinite(estimate) or not np.isfinite(se):
        return _Estimate(estimate, np.nan, np.nan, np.nan, np.nan)
    return _Estimate(estimate, estimate - z * se, estimate + z * se, estimate, se)


# ------------------------------------------------------------------------------------------- helpers
def _whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _rounded(value: float) -> float | None:
    return round(float(value), DECIMALS) if value is not None and np.isfinite(value) else None
