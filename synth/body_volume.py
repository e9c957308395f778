"""The latent true vertebral body volume of a level: quadrature nodes given the records, and the cement likelihood.

The true volume enters the true leakage risk through the fill ratio (cement / true volume). The records hold the
cement volume always, the CT-segmented volume (3 % error) for about half of the levels and the height loss for
90 %. :mod:`synth.observable` integrates the risk over the volume's posterior with these nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import ndtr

from synth.model import (
    BODY_VOLUME_LOG_SD, BODY_VOLUME_MEASUREMENT_SD, BODY_VOLUME_RANGE_ML, CEMENT_RANGE_ML, FILL_TARGET_RANGE,
    FILL_TARGET_SD, HEIGHT_LOSS_BAND, HEIGHT_LOSS_NOISE_SD, KYPHOTIC_NOISE_SD, body_volume_scale,
    height_loss_factor, kyphotic_pre_mean,
)

ROUNDING_ML = 0.1  # cement and body volumes are recorded to 0.1 ml
# Gauss-Hermite nodes (height loss recorded / missing) for an unmeasured and a measured volume; Gauss-Legendre
# nodes of a missing height loss; trapezoid nodes over +-8 prior SDs where a clip is near (unmeasured, measured)
HERMITE_NODES = {(True, False): 10, (True, True): 8, (False, False): 12, (False, True): 10}
HEIGHT_LOSS_NODES = 20
EDGE_NODES = (81, 201)
EDGE_FILL_RATIO = (0.045, 0.38)  # beyond: the fill target's clips at 0.04 / 0.40 are near (exact likelihoods)


@dataclass(frozen=True)
class Nodes:
    """Quadrature nodes of the latent body volume for some level rows (arrays: rows x nodes)."""

    rows: np.ndarray  # positions in the level rows given to :func:`body_volume_nodes`
    volume: np.ndarray  # true body volume, ml
    log_weight: np.ndarray  # prior x measurement x height-loss evidence (x the m-free 1 / volume of the cement)
    cement: np.ndarray  # recorded cement volume of each row, ml
    exact: bool  # cement likelihood: exact interval probabilities, or the fill target's density with corrections

    def subset(self, chosen: np.ndarray) -> Nodes:
        return Nodes(self.rows[chosen], self.volume[chosen], self.log_weight[chosen], self.cement[chosen],
                     self.exact)

    def log_cement_likelihood(self, fill_mean: np.ndarray) -> np.ndarray:
        """log P(recorded cement | volume, fill target mean m), up to a factor free of m, per row.

        ``fill_mean``: (Q,) -> (rows, Q, nodes), or (rows, 1) -> (rows, nodes). The generator records
        clip(round(volume x clip(N(m, 0.045^2), 0.04, 0.40), 0.1 ml), 0.5, 12). Regular rows: the fill target's
        density at cement / volume times the series of the 0.1 ml interval's probability in its width
        d = 0.1 / (0.045 volume): Phi(z + d/2) - Phi(z - d/2) = phi(z) d (1 + (z^2 - 1) d^2/24 + (z^4 - 6 z^2
        + 3) d^4/1920 + O(d^6)), relative error below 1e-5 here. Edge rows: exact, the clips included.
        """
        sweep = fill_mean.ndim == 1
        volume = self.volume[:, None, :] if sweep else self.volume
        cement = self.cement[:, None, None] if sweep else self.cement[:, None]
        fill_mean = fill_mean[None, :, None] if sweep else fill_mean
        if not self.exact:
            z = (cement / volume - fill_mean) / FILL_TARGET_SD
            return -0.5 * z * z + np.log1p(_rounding_series(z, volume)[0])
        half = ROUNDING_ML / 2

        def below(ml: np.ndarray) -> np.ndarray:  # P(volume x clipped fill target < ml)
            t = ml / volume
            return np.where(t <= FILL_TARGET_RANGE[0], 0.0,
                            np.where(t > FILL_TARGET_RANGE[1], 1.0, ndtr((t - fill_mean) / FILL_TARGET_SD)))

        upper = np.where(cement >= CEMENT_RANGE_ML[1], 1.0, below(cement + half))
        lower = np.where(cement <= CEMENT_RANGE_ML[0], 0.0, below(cement - half))
        with np.errstate(divide="ignore"):
            return np.log(np.maximum(upper - lower, 0.0))

    def cement_derivatives(self, fill_mean: np.ndarray, *, step: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
        """First and second derivatives in m of :meth:`log_cement_likelihood` at ``fill_mean`` (rows, 1).

        Regular rows: analytic. Edge rows: central differences with ``step`` (infinite values set to 0).
        """
        if not self.exact:
            z = (self.cement[:, None] / self.volume - fill_mean) / FILL_TARGET_SD
            series, slope, curvature = _rounding_series(z, self.volume)
            first = (z - slope / (1 + series)) / FILL_TARGET_SD
            second = -(1 - (curvature * (1 + series) - slope ** 2) / (1 + series) ** 2) / FILL_TARGET_SD ** 2
            return first, second
        low, mid, high = (self.log_cement_likelihood(fill_mean + s) for s in (-step, 0.0, step))
        with np.errstate(invalid="ignore"):
            first = np.nan_to_num((high - low) / (2 * step), nan=0.0, posinf=0.0, neginf=0.0)
            second = np.nan_to_num((high - 2 * mid + low) / step ** 2, nan=0.0, posinf=0.0, neginf=0.0)
        return first, second


def body_volume_nodes(levels: dict[str, np.ndarray], *, female: np.ndarray, thoracic: np.ndarray,
                      fill_mean_range: tuple[float, float]) -> list[Nodes]:
    """Nodes of the true body volume per level row, from its prior, the CT measurement and the height loss.

    Parameters
    ----------
    levels
        Recorded level values: ``vertebra`` (index, t1 = 0), ``grade``, ``height_loss`` (%), ``kyphotic_pre``
        (degrees), ``body_volume`` and ``cement`` (ml); NaN where missing.
    female, thoracic
        Per row.
    fill_mean_range
        Lowest and highest fill-target mean m of any (kyphoplasty, operator): decides which rows are near a clip.

    Returns
    -------
    list of Nodes
        Every row in exactly one group. The prior of log volume is normal (SD 0.10) around
        log(scale x (1 - 0.006 x height loss)); with the height loss missing, a mixture over its nodes. Rows
        near a clip (:func:`_near_a_clip`) get trapezoid nodes and exact likelihoods, the others Gauss-Hermite
        nodes on a normal proposal (the prior's moments, times the measurement if measured) with importance
        weights.
    """
    n = len(levels["cement"])
    log_scale = np.log(body_volume_scale(levels["vertebra"], female))
    known = ~np.isnan(levels["height_loss"])
    measured = ~np.isnan(levels["body_volume"])
    groups = []
    for height_known in (True, False):
        rows = np.flatnonzero(known == height_known)
        if len(rows) == 0:
            continue
        if height_known:
            height, log_height_weight = levels["height_loss"][rows, None], np.zeros((len(rows), 1))
        else:
            height, log_height_weight = _height_loss_nodes(levels["grade"][rows], levels["kyphotic_pre"][rows],
                                                           thoracic[rows])
        prior = (log_scale[rows, None] + np.log(height_loss_factor(height)), log_height_weight)
        edge = _near_a_clip(prior, levels["cement"][rows], levels["body_volume"][rows], fill_mean_range)
        for is_edge in (False, True):
            for is_measured in (False, True):
                chosen = (edge == is_edge) & (measured[rows] == is_measured)
                if not chosen.any():
                    continue
                part = rows[chosen]
                part_prior = (prior[0][chosen], prior[1][chosen])
                volume = levels["body_volume"][part] if is_measured else None
                if is_edge:
                    groups.append(_edge_nodes(part, part_prior, volume, cement=levels["cement"][part]))
                else:
                    groups.append(_regular_nodes(part, part_prior, volume, cement=levels["cement"][part],
                                                 count=HERMITE_NODES[height_known, is_measured]))
    if sum(len(g.rows) for g in groups) != n:
        raise RuntimeError("body-volume node groups do not cover every level row once")
    return groups


def _rounding_series(z: np.ndarray, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A(z) with Phi(z + d/2) - Phi(z - d/2) = phi(z) d (1 + A), and dA/dz, d2A/dz2 (d = 0.1 / (0.045 x volume))."""
    d2 = (ROUNDING_ML / FILL_TARGET_SD / volume) ** 2
    z2 = z * z
    a2, a4 = d2 / 24, d2 * d2 / 1920
    return (a2 * (z2 - 1) + a4 * (z2 * z2 - 6 * z2 + 3), a2 * 2 * z + a4 * (4 * z2 * z - 12 * z),
            a2 * 2 + a4 * (12 * z2 - 12))


def _near_a_clip(prior: tuple[np.ndarray, np.ndarray], cement: np.ndarray, measured: np.ndarray,
                 fill_mean_range: tuple[float, float]) -> np.ndarray:
    """Rows for which the regular nodes' density shortcut, or unclipped volumes, may not hold.

    Flagged: cement at its clip (0.5 or 12 ml), a measured volume at the contract floor, a prior mass above
    1e-7 of a body volume below 5.5 ml, or (normal approximation of the posterior of the fill ratio, at the
    lowest and highest m) a mass above 1e-5 below EDGE_FILL_RATIO[0] or above EDGE_FILL_RATIO[1].
    """
    centre, log_height_weight = prior
    is_measured = ~np.isnan(measured)
    spread = np.where(is_measured, _measured_spread(), BODY_VOLUME_LOG_SD)[:, None]
    middle = np.where(is_measured[:, None], _combine_normals(centre, BODY_VOLUME_LOG_SD, np.log(measured)[:, None],
                                                             BODY_VOLUME_MEASUREMENT_SD)[0], centre)
    weight = np.exp(log_height_weight)
    ratio = cement[:, None] / np.exp(middle)
    prior_precision = (ratio * spread) ** -2.0
    likelihood_precision = FILL_TARGET_SD ** -2.0
    sd = (prior_precision + likelihood_precision) ** -0.5

    def mass(m: float, tail: str) -> np.ndarray:
        mean = (prior_precision * ratio + likelihood_precision * m) * sd ** 2
        z = (EDGE_FILL_RATIO[0] - mean) / sd if tail == "low" else (mean - EDGE_FILL_RATIO[1]) / sd
        return (weight * ndtr(z)).sum(axis=1)

    small_volume = (weight * ndtr((np.log(BODY_VOLUME_RANGE_ML[0] + 0.5) - middle) / spread)).sum(axis=1)
    return ((cement <= CEMENT_RANGE_ML[0]) | (cement >= CEMENT_RANGE_ML[1])
            | (is_measured & (measured <= BODY_VOLUME_RANGE_ML[0] + ROUNDING_ML)) | (small_volume > 1e-7)
            | (mass(fill_mean_range[0], "low") > 1e-5) | (mass(fill_mean_range[1], "high") > 1e-5))


def _regular_nodes(rows: np.ndarray, prior: tuple[np.ndarray, np.ndarray], measured: np.ndarray | None, *,
                   cement: np.ndarray, count: int) -> Nodes:
    """Gauss-Hermite nodes on a normal proposal (the prior's moments, times the measurement if measured).

    Weights: prior / proposal x the measurement's exact interval probability x the m-free factor 1 / volume
    of the cement density.
    """
    xi, w = hermite(count)
    mean, sd = _prior_moments(prior)
    if measured is not None:
        mean, sd = _combine_normals(mean, sd, np.log(measured), BODY_VOLUME_MEASUREMENT_SD)
    log_volume = mean[:, None] + np.asarray(sd)[:, None] * xi
    log_weight = np.log(w) + _log_prior_volume(log_volume, prior) + 0.5 * xi ** 2 - log_volume
    volume = np.exp(log_volume)
    if measured is not None:
        log_weight += _log_measurement(measured[:, None], volume)
    return Nodes(rows, volume, log_weight, cement, exact=False)


def _edge_nodes(rows: np.ndarray, prior: tuple[np.ndarray, np.ndarray], measured: np.ndarray | None, *,
                cement: np.ndarray) -> Nodes:
    """A trapezoid grid over +-8 prior SDs of log volume, the volume clipped as drawn, exact measurement."""
    mean, sd = _prior_moments(prior)
    log_volume = mean[:, None] + sd[:, None] * np.linspace(-8.0, 8.0, EDGE_NODES[measured is not None])
    volume = np.clip(np.exp(log_volume), *BODY_VOLUME_RANGE_ML)
    log_weight = _log_prior_volume(log_volume, prior)
    if measured is not None:
        log_weight = log_weight + _log_measurement(measured[:, None], volume)
    return Nodes(rows, volume, log_weight, cement, exact=True)


def _height_loss_nodes(grade: np.ndarray, kyphotic_pre: np.ndarray,
                       thoracic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (rows, 1 + HEIGHT_LOSS_NODES) of a missing height loss, log weights x kyphotic-angle likelihood.

    The true height loss is clip(U(band of the grade) + N(0, 4^2), 0, 100): a point mass at 0 (node 0) and a
    density, on Gauss-Legendre nodes over the band +-6 SD. The kyphotic angle, where recorded, is
    N(4 + 0.25 x height loss + 3 x thoracic, 4^2).
    """
    grade = grade.astype(np.int64)
    a, b = HEIGHT_LOSS_BAND[grade, 0], HEIGHT_LOSS_BAND[grade, 1]
    sd = HEIGHT_LOSS_NOISE_SD
    lo, hi = np.maximum(0.0, a - 6 * sd), b + 6 * sd
    x, w = np.polynomial.legendre.leggauss(HEIGHT_LOSS_NODES)
    nodes = lo[:, None] + (hi - lo)[:, None] * (x + 1) / 2
    density = (ndtr((nodes - a[:, None]) / sd) - ndtr((nodes - b[:, None]) / sd)) / (b - a)[:, None]

    def integral_of_cdf(t: np.ndarray) -> np.ndarray:
        return t * ndtr(t) + np.exp(-0.5 * t ** 2) / np.sqrt(2 * np.pi)

    at_zero = sd / (b - a) * (integral_of_cdf(-a / sd) - integral_of_cdf(-b / sd))
    height = np.concatenate([np.zeros((len(grade), 1)), nodes], axis=1)
    with np.errstate(divide="ignore"):
        log_weight = np.log(np.concatenate([at_zero[:, None], density * w * (hi - lo)[:, None] / 2], axis=1))
    pre = kyphotic_pre[:, None]
    log_weight = log_weight + np.where(np.isnan(pre), 0.0, -0.5 * (
        (pre - kyphotic_pre_mean(height, thoracic[:, None])) / KYPHOTIC_NOISE_SD) ** 2)
    top = log_weight.max(axis=1, keepdims=True)
    return height, log_weight - top - np.log(np.exp(log_weight - top).sum(axis=1, keepdims=True))


def _log_prior_volume(log_volume: np.ndarray, prior: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """log density (up to a constant) of the log body volume, (rows, nodes): normal, or a mixture over heights."""
    centre, log_height_weight = prior
    if centre.shape[1] == 1:
        return -0.5 * ((log_volume - centre) / BODY_VOLUME_LOG_SD) ** 2
    terms = log_height_weight[:, :, None] - 0.5 * ((log_volume[:, None, :] - centre[:, :, None])
                                                   / BODY_VOLUME_LOG_SD) ** 2
    top = terms.max(axis=1)
    with np.errstate(divide="ignore"):
        return top + np.log(np.exp(terms - top[:, None, :]).sum(axis=1))


def _prior_moments(prior: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD of the prior of the log body volume, per row."""
    centre, log_height_weight = prior
    weight = np.exp(log_height_weight)
    mean = (weight * centre).sum(axis=1)
    return mean, np.sqrt((weight * (centre - mean[:, None]) ** 2).sum(axis=1) + BODY_VOLUME_LOG_SD ** 2)


def _log_measurement(measured: np.ndarray, volume: np.ndarray) -> np.ndarray:
    """log P(recorded volume | true volume): round(volume x N(1, 0.03^2), 0.1 ml), floored at 5 ml."""
    half = ROUNDING_ML / 2
    upper = ((measured + half) / volume - 1) / BODY_VOLUME_MEASUREMENT_SD
    lower = np.where(measured <= BODY_VOLUME_RANGE_ML[0], -np.inf,
                     ((measured - half) / volume - 1) / BODY_VOLUME_MEASUREMENT_SD)
    flip = lower > 0  # log(Phi(upper) - Phi(lower)), accurate in both tails
    lo, hi = np.where(flip, -upper, lower), np.where(flip, -lower, upper)
    with np.errstate(divide="ignore"):
        return np.log(np.maximum(ndtr(hi) - ndtr(lo), 0.0))


def _measured_spread() -> float:
    return float(_combine_normals(0.0, BODY_VOLUME_LOG_SD, 0.0, BODY_VOLUME_MEASUREMENT_SD)[1])


def _combine_normals(mean_a: np.ndarray | float, sd_a: np.ndarray | float, mean_b: np.ndarray | float,
                     sd_b: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD of the normal proportional to N(mean_a, sd_a^2) x N(mean_b, sd_b^2)."""
    precision_a, precision_b = np.asarray(sd_a) ** -2.0, sd_b ** -2.0
    return (precision_a * mean_a + precision_b * mean_b) / (precision_a + precision_b), (
        precision_a + precision_b) ** -0.5


@lru_cache(maxsize=8)
def hermite(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite nodes and weights for a standard normal (weights sum to 1)."""
    x, w = np.polynomial.hermite_e.hermegauss(count)
    return x, w / w.sum()
