"""Percentile bootstrap intervals of the validation metrics: row or cluster resamples, drawn as frequency weights.

A resample is a frequency weight per row (or per cluster of rows). :func:`summarise_performance` evaluates every
standard metric of a replicate on the reweighted table of distinct risks
(:meth:`models.risk_table.RiskTable.reweighted`: O(n), no sort), so an estimate and its replicates are computed
by the same code; its replicates can be cut into blocks drawn anywhere (:mod:`models.fanout`) and still be the
resamples of one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from models.checks import check_groups, check_integer, check_level, check_outcome_and_risk
from models.fanout import Mapper, pieces_for, sequential
from models.logistic import calibration_errors_of, recalibration_fits
from models.risk_table import RiskTable, auroc_of, brier_of, log_loss_of, risk_table, scaled_brier_of


def _replicate_weights(n: int, groups: ArrayLike | None, *, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Frequency weight of each row in each of ``n_boot`` resamples (rows, or whole clusters, with replacement).

    A resample of m units is ``m`` draws of ``rng.integers(0, m)``; their counts (a multinomial draw) are
    the weights, O(n) per replicate; a row's weight is its cluster's count.
    """
    codes, units, blocks = _replicate_blocks(n, groups, n_boot=n_boot, seed=seed, pieces=1)
    return _block_weights(blocks[0], codes, units)


@dataclass(frozen=True)
class _Block:
    """``size`` consecutive bootstrap replicates, drawn from a generator in ``state`` (PCG64)."""

    size: int
    state: dict


def _replicate_blocks(n: int, groups: ArrayLike | None, *, n_boot: int, seed: int,
                      pieces: int) -> tuple[np.ndarray | None, int, list[_Block]]:
    """The replicates of :func:`_replicate_weights` cut into ``pieces`` blocks that can be drawn anywhere.

    One generator draws every replicate in turn; a block carries the generator's state at its first
    replicate, so drawing the blocks apart gives exactly the resamples of one pass (the state is recorded by
    drawing through the earlier blocks once here). Returns the row -> cluster codes (None: rows), the number
    of units resampled and the blocks.
    """
    check_integer(n_boot, "n_boot", minimum=1)
    codes, units = (None, n) if groups is None else check_groups(groups, n)
    sizes = np.diff(np.linspace(0, n_boot, min(max(int(pieces), 1), int(n_boot)) + 1).round().astype(np.int64))
    rng = np.random.default_rng(seed)
    blocks = []
    for i, size in enumerate(sizes):
        blocks.append(_Block(int(size), rng.bit_generator.state))
        if i + 1 < len(sizes):
            for _ in range(size):
                rng.integers(0, units, units)
    return codes, units, blocks


def _block_weights(block: _Block, codes: np.ndarray | None, units: int) -> Iterator[np.ndarray]:
    bits = np.random.PCG64()
    bits.state = block.state
    rng = np.random.Generator(bits)
    for _ in range(block.size):
        counts = np.bincount(rng.integers(0, units, units), minlength=units).astype(np.float64)
        yield counts if codes is None else counts[codes]


def _interval(estimate: float, replicates: list[float], level: float) -> tuple[float, float, float]:
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if len(finite) == 0:
        return float(estimate), np.nan, np.nan
    low, high = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return float(estimate), float(low), float(high)


def bootstrap_intervals(y: ArrayLike, p: ArrayLike, metrics: Mapping[str, Callable[[np.ndarray, np.ndarray], float]],
                        *, n_boot: int = 200, seed: int, level: float = 0.95,
                        groups: ArrayLike | None = None) -> dict[str, tuple[float, float, float]]:
    """Estimate and percentile bootstrap interval of each metric; clusters resampled when ``groups`` is given.

    Each replicate resamples rows with replacement, or, with ``groups``, whole clusters (e.g. the levels
    of one procedure, which are correlated); the metric is evaluated on the resample (rows in index
    order, each repeated by its frequency weight). A replicate where a metric is undefined (NaN, or the
    metric raises ValueError, e.g. no event drawn) is left out of that metric's interval. The same
    ``seed`` gives the same resamples, here and in :func:`summarise_performance`. Cost: ``n_boot`` times
    each metric on n rows; :func:`summarise_performance` gets the standard metrics faster from weights.

    Parameters
    ----------
    y, p
        As :func:`models.metrics.brier_score`.
    metrics
        Name -> function of ``(y, p)`` returning a float.
    n_boot
        Number of bootstrap replicates.
    seed
        Seed of ``numpy.random.default_rng``.
    level
        Coverage of the interval.
    groups : array of shape (n,), optional
        Cluster of each row.

    Returns
    -------
    dict
        Name -> ``(estimate, low, high)``; ``low``/``high`` NaN when no replicate was defined.

    References
    ----------
    Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall 1993, ch. 13 (percentile
    interval). Field CA, Welsh AH. Bootstrapping clustered data. J R Stat Soc B 2007;69:369-390.
    """
    y01, risk = check_outcome_and_risk(y, p)
    check_level(level)
    estimates = {name: float(metric(y01, risk)) for name, metric in metrics.items()}
    replicates: dict[str, list[float]] = {name: [] for name in metrics}
    for weights in _replicate_weights(len(risk), groups, n_boot=n_boot, seed=seed):
        rows = np.repeat(np.arange(len(risk)), weights.astype(np.int64))
        for name, metric in metrics.items():
            replicates[name].append(_defined(metric, y01[rows], risk[rows]))
    return {name: _interval(estimates[name], replicates[name], level) for name in metrics}


def _defined(metric: Callable[[np.ndarray, np.ndarray], float], y: np.ndarray, p: np.ndarray) -> float:
    try:
        return float(metric(y, p))
    except ValueError:
        return np.nan


_SUMMARY = ("auroc", "brier", "scaled_brier", "log_loss", "calibration_intercept", "calibration_slope",
            "ici", "e50", "e90", "prevalence")


def _summary_of(t: RiskTable, *, start: _Summary | None = None) -> _Summary:
    """Every summary metric of a table; logistic fits start from ``start`` (the full-data fits for a replicate)."""
    fits = recalibration_fits(t, start=None if start is None else start.calibration_fits)
    errors = (calibration_errors_of(t, 4, start=None if start is None else start.spline)
              if 0 < t.n_events < t.n else dict.fromkeys(("ici", "e50", "e90", "beta"), np.nan))
    values = {"auroc": auroc_of(t), "brier": brier_of(t), "scaled_brier": scaled_brier_of(t),
              "log_loss": log_loss_of(t), "calibration_intercept": float(fits[0]),
              "calibration_slope": float(fits[2]), "ici": errors["ici"], "e50": errors["e50"], "e90": errors["e90"],
              "prevalence": t.n_events / t.n}
    return _Summary(values=values, calibration_fits=fits, spline=np.atleast_1d(errors["beta"]))


@dataclass(frozen=True)
class _Summary:
    """Summary metrics of one table, with the fitted coefficients (Newton starting values for replicates).

    Starting a replicate's fits from the full-data estimates reaches the same maximum (the likelihoods
    are concave) in fewer steps.
    """

    values: dict[str, float]
    calibration_fits: np.ndarray
    spline: np.ndarray


def summarise_performance(y: ArrayLike, p: ArrayLike, *, n_boot: int, seed: int, groups: ArrayLike | None = None,
                          level: float = 0.95, mapper: Mapper = sequential) -> dict[str, dict[str, float | int | None]]:
    """Every validation metric with its percentile bootstrap interval, JSON-ready and stable.

    The metrics of :mod:`models.metrics` (``auroc``, ``brier_score``, ``scaled_brier_score``, ``log_loss``,
    ``calibration_intercept_slope``, ``calibration_errors`` with 4 knots) and the prevalence, each as
    ``{"estimate", "low", "high"}``; ``n`` as ``{"rows", "clusters"}``; ``events`` as ``{"rows",
    "clusters"}`` (clusters with at least one event); ``bootstrap`` as ``{"replicates", "defined",
    "level"}`` (``defined``: fewest replicates in which a metric was defined). Floats are rounded to 6
    decimals; undefined values are None.

    Replicates are the resamples of :func:`bootstrap_intervals` with the same ``seed`` and ``groups``
    (identical intervals), computed as frequency weights on the table of distinct risks: O(n) per
    replicate plus the logistic fits, instead of a sort of every resample. With a ``mapper`` other than
    :func:`models.fanout.sequential` the replicates go out in blocks (:func:`models.fanout.pieces_for`),
    each drawn from the generator's state at its start: the same resamples, so the same intervals.

    Raises
    ------
    ValueError
        As :func:`models.metrics.auroc`, or ``groups`` of another length or with missing values.
    """
    y01, risk = check_outcome_and_risk(y, p, both_classes_for="summarise_performance")
    check_level(level)
    table, codes = risk_table(y01, risk)
    estimate = _summary_of(table)
    clusters_of, units, blocks = _replicate_blocks(len(risk), groups, n_boot=n_boot, seed=seed,
                                                   pieces=pieces_for(mapper, n_boot))
    replicates: dict[str, list[float]] = {name: [] for name in _SUMMARY}
    for block in mapper(_summary_block, blocks, shared=(table, codes, y01, estimate, clusters_of, units)):
        for name in _SUMMARY:
            replicates[name].extend(block[name])
    out: dict[str, dict[str, float | int | None]] = {}
    for name in _SUMMARY:
        value, low, high = _interval(estimate.values[name], replicates[name], level)
        out[name] = {"estimate": _rounded(value), "low": _rounded(low), "high": _rounded(high)}
    cluster, clusters = (np.arange(len(risk)), len(risk)) if groups is None else check_groups(groups, len(risk))
    out["n"] = {"rows": len(risk), "clusters": clusters}
    out["events"] = {"rows": int(y01.sum()), "clusters": len(np.unique(cluster[y01 == 1]))}
    out["bootstrap"] = {"replicates": int(n_boot), "level": level,
                        "defined": min(int(np.isfinite(v).sum()) for v in replicates.values())}
    return out


def _summary_block(block: _Block, table: RiskTable, codes: np.ndarray, y01: np.ndarray, estimate: _Summary,
                   clusters_of: np.ndarray | None, units: int) -> dict[str, list[float]]:
    """Every summary metric of each replicate of one block (a piece of work for a mapper)."""
    values: dict[str, list[float]] = {name: [] for name in _SUMMARY}
    for weights in _block_weights(block, clusters_of, units):
        for name, value in _summary_of(table.reweighted(codes, y01, weights), start=estimate).values.items():
            values[name].append(value)
    return values


def _rounded(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None
