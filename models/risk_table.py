"""The table of distinct predicted risks that every validation metric is computed from, and the metrics of a table.

A metric depends on the data only through the distinct predicted risks with, for each, its number of rows
and of events (:class:`RiskTable`). The table of data is built once (one sort, O(n log n)); a bootstrap
replicate rebuilds it from frequency weights in O(n) without sorting again (:meth:`RiskTable.reweighted`), so
an estimate and its bootstrap replicates are computed by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logit

EPS = 1e-15  # predicted risks are clipped to [EPS, 1 - EPS] before log() and logit()


@dataclass(frozen=True)
class RiskTable:
    """Distinct predicted risks (ascending) with their logit, and the (weighted) number of rows and events."""

    risk: np.ndarray
    logit: np.ndarray
    rows: np.ndarray
    events: np.ndarray

    @property
    def n(self) -> float:
        return float(self.rows.sum())

    @property
    def n_events(self) -> float:
        return float(self.events.sum())

    def reweighted(self, codes: np.ndarray, y: np.ndarray, weights: np.ndarray) -> RiskTable:
        """The table of a resample given by integer frequency ``weights`` per row (O(n), no sort)."""
        rows = np.bincount(codes, weights=weights, minlength=len(self.risk))
        events = np.bincount(codes, weights=weights * y, minlength=len(self.risk))
        keep = rows > 0
        return RiskTable(self.risk[keep], self.logit[keep], rows[keep], events[keep])


def risk_table(y: np.ndarray, p: np.ndarray) -> tuple[RiskTable, np.ndarray]:
    """The table of checked data and, per row, the index of its risk in the table.

    Parameters
    ----------
    y, p : arrays of shape (n,)
        Outcomes (0/1) and predicted risks, as :func:`models.checks.check_outcome_and_risk` returns them.

    Returns
    -------
    (RiskTable, codes)
        The table, and an integer array of shape (n,) giving each row's position in it.
    """
    risk, codes, rows = np.unique(p, return_inverse=True, return_counts=True)
    events = np.bincount(codes, weights=y, minlength=len(risk))
    return RiskTable(risk, clipped_logit(risk), rows.astype(np.float64), events), codes


def clipped_logit(risk: np.ndarray) -> np.ndarray:
    """``logit(p)`` of risks clipped to ``[EPS, 1 - EPS]`` (finite at 0 and 1)."""
    return logit(np.clip(risk, EPS, 1 - EPS))


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: ArrayLike) -> np.ndarray:
    """``np.quantile(expanded, q)`` (linear method) of ``values`` (ascending) repeated ``weights`` (integer) times."""
    cum = np.cumsum(weights)
    h = (cum[-1] - 1) * np.asarray(q, dtype=np.float64)
    lo = np.floor(h)
    below = values[np.searchsorted(cum, lo, side="right")]
    above = values[np.searchsorted(cum, np.minimum(lo + 1, cum[-1] - 1), side="right")]
    return below + (h - lo) * (above - below)


# ------------------------------------------------------------------------------- metrics of a table
def auroc_of(t: RiskTable) -> float:
    """Mann-Whitney AUROC of a table (ties count 1/2); NaN without both classes."""
    non_events = t.rows - t.events
    below = np.cumsum(non_events) - non_events  # non-events with a strictly lower risk
    pairs = t.n_events * float(non_events.sum())
    return float(np.dot(t.events, below + 0.5 * non_events) / pairs) if pairs > 0 else np.nan


def brier_of(t: RiskTable) -> float:
    """Mean squared difference of risk and outcome."""
    return float((np.dot(t.events, (1 - t.risk) ** 2) + np.dot(t.rows - t.events, t.risk ** 2)) / t.n)


def scaled_brier_of(t: RiskTable) -> float:
    """``1 - Brier / (prevalence * (1 - prevalence))``; NaN without both classes."""
    prevalence = t.n_events / t.n
    worst = prevalence * (1 - prevalence)
    return 1 - brier_of(t) / worst if worst > 0 else np.nan


def log_loss_of(t: RiskTable) -> float:
    """Mean negative log-likelihood in nats, risks clipped to ``[EPS, 1 - EPS]``."""
    risk = np.clip(t.risk, EPS, 1 - EPS)
    return float(-(np.dot(t.events, np.log(risk)) + np.dot(t.rows - t.events, np.log1p(-risk))) / t.n)
