"""Exact interval of an observed-to-expected ratio, shared by the QI tables and the drift checks."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats


def poisson_ratio_interval(observed: ArrayLike, expected: ArrayLike, *, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact Poisson (Garwood) limits of O divided by E, elementwise.

    ``low = chi2.ppf(a/2, 2 O) / 2 / E`` (0 when O = 0) and ``high = chi2.ppf(1 - a/2, 2 O + 2) / 2 / E``
    with ``a = 1 - level``. Inputs are assumed checked by the caller (O whole and >= 0, E > 0).

    References
    ----------
    Garwood F. Fiducial limits for the Poisson distribution. Biometrika 1936;28:437-442.
    """
    o, e = np.asarray(observed, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    alpha = 1.0 - level
    low = np.where(o > 0, stats.chi2.ppf(alpha / 2, np.maximum(2 * o, 1)) / 2, 0.0) / e
    high = stats.chi2.ppf(1 - alpha / 2, 2 * o + 2) / 2 / e
    return low, high
