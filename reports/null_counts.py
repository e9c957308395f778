"""The exact distribution of a unit's observed count when the unit performs as its case mix predicts.

A unit with cases ``i = 1..n`` and model risks ``p_i`` has, under the null that the model is right for it,
``O = sum y_i`` with independent ``y_i ~ Bernoulli(p_i)``: a Poisson-binomial count. Its distribution is
computed exactly (to double precision) by convolution, so funnel limits and p-values hold at every expected
count, where the normal approximation of Spiegelhalter (2005) lets P(flag) run to several times its nominal
rate at expected counts below about 10.

When the units vary more than chance allows (additive overdispersion ``tau^2`` on the O/E scale), the null
becomes a mixture: ``O | theta ~ PoissonBinomial(theta p_i)`` with a unit frailty ``theta ~ Gamma(mean 1,
variance tau^2)``, risks ``theta p_i`` capped just below 1 (variance ``V + tau^2 (E^2 - sum p_i^2)``, a little
less than ``V + tau^2 E^2``). Where the frailty adds no more variance than chance (``tau E <= sd``) the mixture is
integrated over ``theta`` (24-node Gauss quadrature for the gamma); where it dominates, a count of ``n`` cases
follows the beta-binomial on 0..n with mean ``E`` and variance ``V + tau^2 E^2`` (the frailty on the unit's
rate, bounded by its number of cases), or the mixture when that variance is within the binomial's.

Every distribution is returned as a pmf on a window of counts ``[offset, offset + len(pmf))`` outside which the
probability is below 1e-25.

References
----------
Hong Y. On computing the distribution function for the Poisson binomial distribution. Comput Stat Data
Anal 2013;59:41-51.
Spiegelhalter DJ. Funnel plots for comparing institutional performance. Stat Med 2005;24:1185-1202.
Spiegelhalter DJ. Handling over-dispersion of performance indicators. Qual Saf Health Care 2005;14:347-351.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, stats

_BLOCK = 64  # rows whose pmf is built by the vectorised recursion before blocks are convolved
_TAIL_SD, _TAIL_ADD = 12.0, 40.0  # window half-width: 12 sd + 40 counts (Bernstein: mass outside < 1e-25)
_NODES = 24  # Gauss nodes of the gamma frailty
_MAX_RISK = 1.0 - 1e-12
NEGLIGIBLE = 1e-3  # a frailty adding less than this share of the binomial variance is left out


@dataclass(frozen=True)
class CountDistribution:
    """A count's pmf on ``offset .. offset + len(pmf) - 1``; zero outside (below 1e-25)."""

    offset: int
    pmf: np.ndarray
    method: str  # 'poisson-binomial', 'poisson-binomial-gamma mixture' or 'beta-binomial'

    def sf(self, k: np.ndarray | int) -> np.ndarray:
        """P(X >= k), elementwise for whole numbers ``k``."""
        tail = np.concatenate([np.cumsum(self.pmf[::-1])[::-1], [0.0]])  # tail[j] = P(X >= offset + j)
        index = np.clip(np.asarray(k, dtype=np.int64) - self.offset, 0, len(self.pmf))
        return np.minimum(tail[index], 1.0)

    def cdf(self, k: np.ndarray | int) -> np.ndarray:
        """P(X <= k), elementwise for whole numbers ``k``."""
        head = np.concatenate([[0.0], np.cumsum(self.pmf)])  # head[j] = P(X < offset + j)
        index = np.clip(np.asarray(k, dtype=np.int64) + 1 - self.offset, 0, len(self.pmf))
        return np.minimum(head[index], 1.0)

    def upper_count(self, alpha: float) -> int:
        """The smallest ``u`` with ``P(X > u) <= alpha``: a count above ``u`` is beyond the upper limit."""
        tail = np.cumsum(self.pmf[::-1])[::-1]  # P(X >= offset + j)
        above = np.concatenate([tail[1:], [0.0]])  # P(X > offset + j)
        return int(self.offset + np.argmax(above <= alpha))

    def lower_count(self, alpha: float) -> int:
        """The largest ``l`` with ``P(X < l) <= alpha``: a count below ``l`` is beyond the lower limit."""
        below = np.concatenate([[0.0], np.cumsum(self.pmf)])  # below[j] = P(X < offset + j)
        return int(self.offset + np.flatnonzero(below <= alpha)[-1])


def _window(mean: float, var: float, n: int) -> tuple[int, int]:
    half = _TAIL_SD * np.sqrt(var) + _TAIL_ADD
    return max(0, int(np.floor(mean - half))), min(n, int(np.ceil(mean + half)))


def _block_pmfs(p: np.ndarray) -> np.ndarray:
    """pmf of each block of ``_BLOCK`` consecutive risks (zero-padded), shape (blocks, _BLOCK + 1)."""
    blocks = np.zeros(((len(p) + _BLOCK - 1) // _BLOCK) * _BLOCK)
    blocks[:len(p)] = p
    blocks = blocks.reshape(-1, _BLOCK)
    pmf = np.zeros((len(blocks), _BLOCK + 1))
    pmf[:, 0] = 1.0
    for j in range(_BLOCK):
        q = blocks[:, j:j + 1]
        shifted = pmf[:, :-1] * q
        pmf *= 1.0 - q
        pmf[:, 1:] += shifted
    return pmf


def poisson_binomial(p: np.ndarray) -> CountDistribution:
    """The exact distribution of a sum of independent Bernoulli(p_i) (risks assumed checked, in (0, 1)).

    Blocks of 64 risks get their pmf by the textbook recursion (vectorised over blocks); the blocks are then
    convolved in turn, each partial sum kept on the window its remaining rows can still bring into the final
    window (12 sd + 40 counts around the mean, Bernstein's bound puts less than 1e-25 outside).
    """
    p = np.asarray(p, dtype=np.float64)
    n = len(p)
    lo, hi = _window(float(p.sum()), float(np.sum(p * (1 - p))), n)
    if n and np.ptp(p) == 0:  # equal risks: the binomial
        k = np.arange(lo, hi + 1)
        return CountDistribution(offset=lo, pmf=stats.binom.pmf(k, n, p[0]), method="poisson-binomial")
    blocks = _block_pmfs(p)
    padded = np.zeros(len(blocks) * _BLOCK)
    padded[:n] = p
    by_block = padded.reshape(-1, _BLOCK)
    rest_mean = np.maximum(padded.sum() - np.cumsum(by_block.sum(axis=1)), 0.0)  # rows after block b
    rest_var = np.maximum(np.sum(padded * (1 - padded)) - np.cumsum((by_block * (1 - by_block)).sum(axis=1)), 0.0)
    offset, current = 0, blocks[0]
    for b in range(len(blocks)):
        if b:
            current = np.convolve(current, blocks[b])
        reach = rest_mean[b] + _TAIL_SD * np.sqrt(rest_var[b]) + _TAIL_ADD  # what the remaining rows can add
        keep_lo = max(offset, int(np.floor(lo - reach)))
        keep_hi = min(offset + len(current) - 1, hi)
        current = current[keep_lo - offset:keep_hi - offset + 1]
        offset = keep_lo
    start = max(lo, offset)
    pmf = current[start - offset:hi - offset + 1]
    return CountDistribution(offset=start, pmf=np.clip(pmf, 0.0, None), method="poisson-binomial")


def _gamma_nodes(tau2: float) -> tuple[np.ndarray, np.ndarray]:
    """Frailty values and weights: Gauss quadrature for Gamma(shape 1/tau2, scale tau2), i.e. generalised
    Gauss-Laguerre with alpha = 1/tau2 - 1, by Golub-Welsch (eigen-decomposition of the Jacobi matrix of the
    Laguerre recurrence: stable for any shape, where scipy's roots_genlaguerre weights overflow)."""
    alpha, k = 1 / tau2 - 1, np.arange(_NODES, dtype=np.float64)
    x, vectors = linalg.eigh_tridiagonal(2 * k + alpha + 1, np.sqrt(k[1:] * (k[1:] + alpha)))
    weights = vectors[0] ** 2
    return x * tau2, weights / weights.sum()


def _mixture(p: np.ndarray, tau2: float) -> CountDistribution:
    thetas, weights = _gamma_nodes(tau2)
    parts = [poisson_binomial(np.minimum(theta * p, _MAX_RISK)) for theta in thetas]
    lo = min(d.offset for d in parts)
    hi = max(d.offset + len(d.pmf) for d in parts)
    pmf = np.zeros(hi - lo)
    for weight, d in zip(weights, parts):
        pmf[d.offset - lo:d.offset - lo + len(d.pmf)] += weight * d.pmf
    return CountDistribution(offset=lo, pmf=pmf / pmf.sum(), method="poisson-binomial-gamma mixture")


def _beta_binomial(n: int, mean: float, var: float) -> CountDistribution | None:
    """The beta-binomial on 0..n with this mean and variance, or None when the variance is within the binomial's."""
    rate = mean / n
    binomial = n * rate * (1 - rate)
    if n < 2 or var <= binomial * (1 + 1e-9):
        return None
    rho = min((var / binomial - 1) / (n - 1), 1 - 1e-9)  # intra-unit correlation
    size = 1 / rho - 1
    lo, hi = _window(mean, var, n)
    k = np.arange(lo, hi + 1)
    return CountDistribution(offset=lo, pmf=stats.betabinom.pmf(k, n, rate * size, (1 - rate) * size),
                             method="beta-binomial")


def null_count_distribution(p: np.ndarray, *, tau2: float = 0.0) -> CountDistribution:
    """The null distribution of a unit's observed count from its cases' risks, with optional overdispersion.

    ``tau2 = 0``, or a frailty that adds less than 0.1% to the variance (``tau2 E^2 <= 0.001 V``): Poisson-binomial
    (:func:`poisson_binomial`). Otherwise the Poisson-binomial-gamma frailty mixture where ``tau * E <= sd``
    (integrated over the frailty), else the beta-binomial on 0..n with mean ``E`` and variance ``V + tau2 E^2``
    (bounded: no count above n; see the module docstring).
    """
    p = np.asarray(p, dtype=np.float64)
    mean, var = float(p.sum()), float(np.sum(p * (1 - p)))
    if tau2 <= 0 or tau2 * mean**2 <= NEGLIGIBLE * var:
        return poisson_binomial(p)
    if tau2 * mean**2 > var:
        bounded = _beta_binomial(len(p), mean, var + tau2 * mean**2)
        if bounded is not None:
            return bounded
    return _mixture(p, tau2)
