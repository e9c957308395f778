"""Internal validation of one outcome's model: every figure metrics.json carries, from validated predictions.

Validated (out-of-fold, cross-fitted-calibrated) predictions give the optimism-corrected metrics with
cluster-bootstrap 95% CIs (procedures resampled); the apparent metrics of the final model on its own
training rows are reported beside them, and their difference is the optimism. Subgroup tables suppress
every cell whose rows or events are between 1 and 10.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from models import metrics as m
from models.fanout import Mapper, sequential
from models.suppression import SUPPRESSED, suppress_table

DEFAULT_THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.01, 0.51, 0.01))
ROC_POINTS = 201
HISTOGRAM_BINS = 40


def _r(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def apparent_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """Metrics of the final model on the rows it was fitted on (optimistic by construction)."""
    intercept, slope = m.calibration_intercept_slope(y, p)
    return {"auroc": _r(m.auroc(y, p)), "brier": _r(m.brier_score(y, p)),
            "scaled_brier": _r(m.scaled_brier_score(y, p)), "log_loss": _r(m.log_loss(y, p)),
            "calibration_intercept": _r(intercept), "calibration_slope": _r(slope)}


def subgroup_table(y: np.ndarray, p: np.ndarray, labels: np.ndarray) -> list[dict[str, object]]:
    """Observed, expected, O/E, AUROC and calibration-in-the-large per subgroup; small cells withheld.

    A group whose rows, events or non-events number 1 to 10 is withheld, and so is a second group where
    the first could be recovered from the published totals (:func:`models.suppression.suppress_table`).
    """
    rows: list[dict[str, object]] = []
    frame = pd.DataFrame({"g": pd.Series(labels).astype(str).to_numpy(), "y": y, "p": p})
    for group, part in frame.groupby("g", sort=True):
        n, events = len(part), int(part["y"].sum())
        observed, expected = events / n, float(part["p"].mean())
        row: dict[str, object] = {"group": group, "n": n, "events": events, "observed_rate": _r(observed),
                                  "expected_rate": _r(expected), "oe_ratio": _r(observed / expected),
                                  "auroc": None, "calibration_intercept": None}
        if events and n - events:
            intercept, _ = m.calibration_intercept_slope(part["y"].to_numpy(), part["p"].to_numpy())
            row.update(auroc=_r(m.auroc(part["y"].to_numpy(), part["p"].to_numpy())),
                       calibration_intercept=_r(intercept))
        rows.append(row)
    withheld = _withhold(pd.DataFrame(rows), ["n", "events"])
    out = []
    for row in rows:
        if withheld.get(row["group"]):
            out.append({"group": row["group"], "suppressed": True,
                        "reason": "fewer than 11 rows, events or non-events, or withheld so that such a "
                                  "group cannot be recovered from the totals"})
        else:
            out.append({k: v for k, v in row.items() if v is not None or k in ("auroc", "calibration_intercept")})
    return out


def _withhold(table: pd.DataFrame, counts: list[str], *, key: str = "group") -> dict[object, bool]:
    """Which rows of a table with a total (``counts[0]``) and events (``counts[1]``) must be withheld."""
    if table.empty:
        return {}
    total, events = counts
    done = suppress_table(table[[key, total, events]], count_columns=[total, events], complements={events: total},
                          row_total=total, unprotectable="withhold")
    hidden = (done[total] == SUPPRESSED) | (done[events] == SUPPRESSED)
    return dict(zip(done[key], hidden.to_numpy(dtype=bool), strict=True))


def assess(y: np.ndarray, p_validated: np.ndarray, *, p_apparent: np.ndarray, groups: np.ndarray,
           subgroups: dict[str, np.ndarray], n_boot: int, seed: int,
           thresholds: Sequence[float] = DEFAULT_THRESHOLDS, mapper: Mapper = sequential) -> dict[str, object]:
    """Every validation figure of one model, JSON-ready and stable (rounded, ordered).

    Parameters
    ----------
    y
        0/1 labels of the eligible rows.
    p_validated
        Validated predictions (out-of-fold, cross-fitted calibration).
    p_apparent
        The final model's predictions on the same rows (it was fitted on them).
    groups
        Procedure id per row: the bootstrap resamples procedures.
    subgroups
        Dimension name -> label per row (site, etiology, imaging modality, year).
    mapper
        Where the bootstrap replicates run (:mod:`models.fanout`); any mapper gives the same figures.
    """
    performance = m.summarise_performance(y, p_validated, n_boot=n_boot, seed=seed, groups=groups, mapper=mapper)
    apparent = apparent_metrics(y, p_apparent)
    optimism = {k: _r(apparent[k] - performance[k]["estimate"]) for k in apparent
                if apparent[k] is not None and isinstance(performance.get(k), dict)
                and performance[k]["estimate"] is not None}
    curve = m.flexible_calibration(y, p_validated)
    binned = m.binned_calibration(y, p_validated, bins=10)
    decision = m.net_benefit(y, p_validated, np.asarray(thresholds, dtype=float))
    return {
        "validated": performance,
        "apparent": apparent,
        "optimism": optimism,
        "calibration_curve": {"method": "logistic regression of the outcome on a restricted cubic spline of "
                                        "logit(validated risk), 4 knots",
                              "predicted": [_r(x) for x in curve.grid], "observed": [_r(x) for x in curve.observed]},
        "calibration_bins": _suppress_bins(_records(binned)),
        "decision_curve": _records(decision),
        "roc_curve": roc_points(y, p_validated),
        "risk_histogram": risk_histogram(p_validated),
        "subgroups": {name: subgroup_table(y, p_validated, labels) for name, labels in subgroups.items()},
    }


def roc_points(y: np.ndarray, p: np.ndarray, *, points: int = ROC_POINTS) -> dict[str, list[float | None]]:
    """The ROC curve (scikit-learn's) read off at ``points`` evenly spaced false-positive rates.

    The curve is a step function; the true-positive rate at each grid point is the highest one reached
    at that false-positive rate, so the figure stays small whatever the number of rows.
    """
    fpr, tpr, _ = roc_curve(y, p)
    grid = np.linspace(0.0, 1.0, points)
    at = np.searchsorted(fpr, grid, side="right") - 1
    return {"fpr": [_r(x) for x in grid], "tpr": [_r(x) for x in tpr[np.clip(at, 0, len(tpr) - 1)]]}


def risk_histogram(p: np.ndarray, *, bins: int = HISTOGRAM_BINS) -> dict[str, list[float | int | None]]:
    """Counts of validated risk in equal-width bins from 0 to the largest risk; counts 1 to 10 withheld."""
    top = float(np.max(p)) if len(p) else 1.0
    counts, edges = np.histogram(p, bins=bins, range=(0.0, max(top, 1e-6)))
    table = pd.DataFrame({"bin": np.arange(len(counts)), "count": counts})
    shown = suppress_table(table, count_columns=["count"], unprotectable="withhold")["count"].tolist()
    return {"edges": [_r(x) for x in edges],
            "counts": [None if c == SUPPRESSED else int(c) for c in shown]}


def _suppress_bins(bins: list[dict[str, object]]) -> list[dict[str, object]]:
    """Calibration bins whose events or non-events number 1 to 10 (or that would reveal one) lose their counts."""
    table = pd.DataFrame([{"group": row["bin"], "n": int(row["n"]), "events": int(row["events"])} for row in bins])
    withheld = _withhold(table, ["n", "events"])
    return [{**row, "events": None, "observed": None, "observed_low": None, "observed_high": None,
             "suppressed": True} if withheld.get(row["bin"]) else row for row in bins]


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (_r(v) if isinstance(v, (float, np.floating)) else
                        int(v) if isinstance(v, (np.integer,)) else v) for k, v in row.items()})
    return out
