"""The exact (Clopper-Pearson) interval of a binomial proportion, shared by the metrics, rare rates and reports."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from models.checks import check_level, positions


def exact_binomial_interval(events: ArrayLike, n: ArrayLike, *, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson exact limits of the proportions ``events / n``, elementwise.

    ``low`` is the ``(1 - level) / 2`` quantile of Beta(events, n - events + 1), 0 with no events; ``high``
    the ``(1 - level) / 2`` upper quantile of Beta(events + 1, n - events), 1 when every case had the event
    (with no events ``high = 1 - ((1 - level) / 2) ** (1 / n)``). The same figures as statsmodels'
    ``proportion_confint(events, n, alpha=1 - level, method="beta")`` and, to about 1e-12, as scipy's
    ``binomtest(events, n).proportion_ci(level, method="exact")``.

    Parameters
    ----------
    events : int or array of ints
        Cases with the event, ``0 <= events <= n``.
    n : int or array of ints
        Cases, at least 1; broadcast against ``events``.
    level : float, default 0.95
        Confidence level, strictly between 0 and 1.

    Returns
    -------
    (low, high)
        float64 arrays of the broadcast shape of ``events`` and ``n`` (0-d for scalars).

    Raises
    ------
    ValueError
        ``level`` outside (0, 1), or counts that are not whole, ``n`` below 1, or ``events`` outside
        ``[0, n]`` (with how many and where).

    References
    ----------
    Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the case of the
    binomial. Biometrika 1934;26:404-413.
    """
    level = check_level(level)
    k, m = np.broadcast_arrays(np.asarray(events, dtype=np.float64), np.asarray(n, dtype=np.float64))
    bad = ~np.isfinite(m) | (m < 1) | (m != np.floor(m))
    if bad.any():
        raise ValueError(f"n must be whole numbers of at least 1; {int(bad.sum())} values are not "
                         f"({positions(bad.ravel())})")
    bad = ~np.isfinite(k) | (k < 0) | (k > m) | (k != np.floor(k))
    if bad.any():
        raise ValueError(f"events must be whole numbers between 0 and n; {int(bad.sum())} values are not "
                         f"({positions(bad.ravel())})")
    tail = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore"):  # Beta(0, .) at no events and Beta(., 0) at all events: replaced below
        low = np.where(k == 0, 0.0, stats.beta.ppf(tail, k, m - k + 1))
        high = np.where(k == m, 1.0, stats.beta.isf(tail, k + 1, m - k))
    return low, high
