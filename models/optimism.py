"""Validation figures as R package rms defines them: val.prob's statistics and validate's optimism bootstrap.

:func:`val_prob_summary` gives the statistics of ``rms::val.prob(p, y)``; :func:`bootstrap_optimism` gives
the table of ``rms::validate(fit, B)`` (Harrell's bootstrap estimate of optimism) for any learner refitted
by a callable. Both reuse :mod:`models.metrics` for C and Brier and :func:`models.calibration.fit_recalibration`
(Newton) for the logistic recalibration, and are checked against R in ``tests/models/test_rms_reference.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import expit, logit
from statsmodels.nonparametric.smoothers_lowess import lowess

from models import metrics as m
from models.calibration import fit_recalibration
from models.risk_table import clipped_logit

LOWESS_FRAC = 2 / 3        # R's lowess(f = 2/3), as val.prob calls it (iter = 0, delta = 1% of the range)
EMAX_GRID = np.linspace(0.0, 1.0, 2001)  # validate.lrm's Emax: p = 0, 0.0005, ..., 1
OPTIMISM_INDEXES = ("Dxy", "C", "R2", "Intercept", "Slope", "Emax", "D", "U", "Q", "B", "g", "gp")
OPTIMISM_COLUMNS = ("index_orig", "training", "test", "optimism", "index_corrected", "n")

Model = object  # what ``fit`` returns: has ``predict_proba(X)`` (column 1 is the risk), or is ``risk(X)`` itself
Fit = Callable[[object, np.ndarray], Model]


# ------------------------------------------------------------------------------------------ val.prob
def val_prob_summary(y: ArrayLike, p: ArrayLike) -> dict[str, float]:
    """The statistics of ``rms::val.prob(p, y)``: discrimination, calibration and the lowess calibration errors.

    Keys are val.prob's names: ``Dxy`` and ``C (ROC)`` (``C = (Dxy + 1) / 2``, the exact Mann-Whitney
    C of :func:`models.metrics.auroc`); ``R2`` (Nagelkerke), ``D`` (discrimination index), ``D:Chi-sq``,
    ``U`` (unreliability index), ``U:Chi-sq``, ``U:p``, ``Q = D - U`` (quality index); ``Brier``;
    ``Intercept`` and ``Slope`` of the logistic recalibration ``logit P(y=1) = a + b logit(p)`` (not the
    calibration-in-the-large of :func:`models.metrics.calibration_intercept_slope`, whose slope is the
    same); ``Eavg``, ``E90``, ``Emax``: mean, 90th percentile (linear, R's type 7) and maximum of
    ``|p - smoothed observed risk|`` with R's ``lowess(p, y, iter = 0)`` as the smoother; ``S:z``, ``S:p``
    (Spiegelhalter's z test of calibration).

    Two figures differ from val.prob by design. val.prob's ``C (ROC)`` and ``Dxy`` come from lrm.fit's
    rank table, which puts ``p`` into 5,000 cells of width 0.0002 (risks within a cell count as ties):
    here they are exact (equal to Hmisc ``somers2(p, y)``). val.prob's ``D:p`` is NA and is left out.
    ``p`` is clipped to ``[1e-15, 1 - 1e-15]`` before the logit (val.prob drops risks of 0 and 1 from
    the recalibration instead).

    Parameters
    ----------
    y : array of shape (n,)
        Outcome, 0/1 or bool; at least one event and one non-event.
    p : array of shape (n,)
        Predicted risk in [0, 1].

    Returns
    -------
    dict
        Statistic name -> value (risk differences for the E figures; NaN where undefined).

    Raises
    ------
    ValueError
        As :func:`models.metrics.auroc`, or if every ``p`` is the same (no recalibration slope, no smoother).

    References
    ----------
    Harrell FE. rms: Regression Modeling Strategies, R package, function ``val.prob``. Harrell FE, Lee KL,
    Mark DB. Multivariable prognostic models. Stat Med 1996;15:361-387 (D, U, Q). Spiegelhalter DJ.
    Probabilistic prediction in patient management and clinical trials. Stat Med 1986;5:421-433.
    Austin PC, Steyerberg EW. The Integrated Calibration Index (ICI) and related metrics. Stat Med
    2019;38:4051-4065.
    """
    c = m.auroc(y, p)  # checks y and p once, with the standard messages
    y01, risk = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    if risk.min() == risk.max():
        raise ValueError(f"p must take at least two distinct values for val_prob_summary; all are {risk[0]:.6g}")
    n, lp = len(y01), clipped_logit(risk)
    intercept, slope = fit_recalibration(y01, risk, method="newton")
    null, as_is = _null_deviance(y01), _deviance(y01, lp)
    lr, unreliability = null - as_is, as_is - _deviance(y01, intercept + slope * lp)
    error = np.abs(risk - _lowess_calibration(y01, risk))
    spiegelhalter = float(np.sum((y01 - risk) * (1 - 2 * risk))
                          / np.sqrt(np.sum((1 - 2 * risk) ** 2 * risk * (1 - risk))))
    d, u = (lr - 1) / n, (unreliability - 2) / n
    return {"Dxy": 2 * c - 1, "C (ROC)": c, "R2": _nagelkerke(lr, null, n), "D": d, "D:Chi-sq": lr,
            "U": u, "U:Chi-sq": unreliability, "U:p": float(stats.chi2.sf(unreliability, 2)), "Q": d - u,
            "Brier": m.brier_score(y01, risk), "Intercept": intercept, "Slope": slope,
            "Emax": float(error.max()), "E90": float(np.quantile(error, 0.9)), "Eavg": float(error.mean()),
            "S:z": spiegelhalter, "S:p": float(2 * stats.norm.sf(abs(spiegelhalter)))}


def _lowess_calibration(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Smoothed observed risk at each ``p``: ``approx(lowess(p, y, iter = 0), xout = p, ties = mean)$y`` of R.

    statsmodels' lowess with R's defaults (span 2/3, ``delta`` 1% of the range of ``p``), no robustness
    iterations; tied risks get the mean of their fitted values (which lowess makes equal). Agrees with R's
    C ``clowess`` to about 1e-9: clowess gives weight 1 to neighbours within 0.1% of the span's radius and
    0 beyond 99.9% of it, statsmodels the exact tricube weight there (Cleveland 1979, JASA 74:829-836).
    """
    fitted = lowess(y, p, frac=LOWESS_FRAC, it=0, delta=0.01 * float(np.ptp(p)), return_sorted=False)
    return pd.Series(fitted).groupby(p).transform("mean").to_numpy()


# ------------------------------------------------------------------------------- optimism bootstrap
def bootstrap_optimism(fit: Fit, X: object, y: ArrayLike, *, n_boot: int | None = None,  # noqa: N803
                       seed: int | None = None, indices: Sequence[ArrayLike] | None = None,
                       groups: ArrayLike | None = None) -> dict[str, dict[str, float]]:
    """Harrell's bootstrap estimate of optimism, as the table of ``rms::validate(fit, B = n_boot)``.

    The learner is fitted on all rows (``index_orig``: its apparent performance) and on each resample; a
    resample's model is evaluated on the resample (``training``) and on the original rows (``test``).
    ``optimism`` is the mean over resamples of training minus test, ``index_corrected = index_orig -
    optimism`` (the performance to expect in new data from the same population), ``n`` the number of
    resamples in which the index was defined.

    Indexes (rows, named as validate names them, plus ``C``): ``Dxy`` (Somers' rank correlation of risk
    and outcome, exact) and ``C = (Dxy + 1) / 2``; ``R2`` (Nagelkerke, of ``a + b lp``); ``Intercept``
    and ``Slope`` of the logistic recalibration ``logit P(y=1) = a + b lp`` of ``lp = logit(risk)``;
    ``Emax``, the largest ``|p - expit(a + b logit(p))|`` over ``p`` in 0, 0.0005, ..., 1 for the corrected
    ``a`` and ``b`` (in every column, as validate: 0, 0, then that value three times); ``D``, ``U``, ``Q``
    (discrimination, unreliability and quality indexes); ``B`` (Brier score); ``g`` (Gini's mean
    difference of ``b lp``) and ``gp`` (of the recalibrated risk). Every sample is evaluated by the same
    code: validate sets the apparent intercept and slope to 0 and 1 instead of fitting them, which is what
    the fit gives for an unpenalised maximum likelihood logistic model (any other learner gets its own).

    Parameters
    ----------
    fit
        ``fit(X_b, y_b)`` returns a fitted model: an object with ``predict_proba`` (column 1 is taken as
        the risk) or a callable ``risk(X)``. A resample where it raises ValueError or LinAlgError (e.g.
        separation), or with a single outcome class, is left out (as validate leaves out failed fits).
    X : DataFrame or array of shape (n, k)
        Predictors, rows taken by position.
    y : array of shape (n,)
        Outcome, 0/1 or bool.
    n_boot, seed
        Number of resamples and seed of ``numpy.random.default_rng``: each resample is ``n`` draws of
        ``rng.integers(0, n)`` (rows), or with ``groups`` as many draws of whole clusters as there are
        clusters. Not with ``indices``.
    indices : sequence of integer arrays, optional
        The resamples themselves: 0-based row positions of each (e.g. an R run's ``sample()`` minus 1).
    groups : array of shape (n,), optional
        Cluster of each row (e.g. the procedure of a vertebral level): clusters are resampled whole, as
        ``validate(fit, B, cluster = groups)``.

    Returns
    -------
    dict
        Index name -> ``{"index_orig", "training", "test", "optimism", "index_corrected", "n"}``.

    Raises
    ------
    ValueError
        If ``y`` is not 0/1 with both classes, lengths differ, neither or both of ``indices`` and
        ``n_boot``/``seed`` are given, an index is out of range, or a model returns risks that are not
        one finite value in [0, 1] per row.

    References
    ----------
    Efron B, Gong G. A leisurely look at the bootstrap, the jackknife, and cross-validation. Am Stat
    1983;37:36-48. Harrell FE, Lee KL, Mark DB. Multivariable prognostic models. Stat Med
    1996;15:361-387. Harrell FE. Regression Modeling Strategies, 2nd ed. Springer 2015, section 5.3.
    """
    y01 = _check_outcome(y, _rows_of(X))
    resamples = _resamples(len(y01), n_boot=n_boot, seed=seed, indices=indices, groups=groups)
    labels = y01.astype(np.int64)  # what ``fit`` is given; the indexes use the float copy
    original = fit(X, labels)
    apparent = _indexes(y01, _risk_of(original, X, len(y01)))
    training, test = [], []
    for rows in resamples:
        if y01[rows].min() == y01[rows].max():
            continue
        try:
            model = fit(_take(X, rows), labels[rows])
        except (ValueError, np.linalg.LinAlgError):
            continue
        risk = _risk_of(model, X, len(y01))
        training.append(_indexes(y01[rows], risk[rows]))
        test.append(_indexes(y01, risk))
    return _optimism_table(apparent, np.array(training).reshape(-1, len(_INDEXES)),
                           np.array(test).reshape(-1, len(_INDEXES)))


_INDEXES = ("Dxy", "R2", "Intercept", "Slope", "D", "U", "Q", "B", "g", "gp")  # computed per sample


def _indexes(y: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """validate's indexes of risks ``risk`` for outcomes ``y`` (both classes present), in ``_INDEXES`` order."""
    n, lp = len(y), clipped_logit(risk)
    a, b = fit_recalibration(y, risk, method="newton")
    null, recalibrated = _null_deviance(y), _deviance(y, a + b * lp)
    lr = null - recalibrated
    d, u = (lr - 1) / n, (_deviance(y, lp) - recalibrated - 2) / n
    return np.array([2 * m.auroc(y, risk) - 1, _nagelkerke(lr, null, n), a, b, d, u, d - u,
                     m.brier_score(y, risk), _gini_mean_difference(b * lp), _gini_mean_difference(expit(a + b * lp))])


def _optimism_table(apparent: np.ndarray, training: np.ndarray, test: np.ndarray) -> dict[str, dict[str, float]]:
    """validate's table from the apparent indexes and those of each resample (one row per resample)."""
    defined = np.isfinite(training) & np.isfinite(test)
    n = defined.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_training = np.where(defined, training, 0.0).sum(axis=0) / n
        mean_test = np.where(defined, test, 0.0).sum(axis=0) / n
    optimism = mean_training - mean_test
    corrected = apparent - optimism
    columns = np.column_stack([apparent, mean_training, mean_test, optimism, corrected, n])
    table = {name: dict(zip(OPTIMISM_COLUMNS, map(float, row), strict=True))
             for name, row in zip(_INDEXES, columns, strict=True)}
    dxy = table["Dxy"]  # C = (Dxy + 1) / 2, so its optimism is half that of Dxy
    table["C"] = {name: dxy[name] / 2 + 0.5 for name in ("index_orig", "training", "test")}
    table["C"] |= {"optimism": dxy["optimism"] / 2, "index_corrected": dxy["index_corrected"] / 2 + 0.5, "n": dxy["n"]}
    emax = _emax(table["Intercept"]["index_corrected"], table["Slope"]["index_corrected"])
    table["Emax"] = dict(zip(OPTIMISM_COLUMNS, (0.0, 0.0, emax, emax, emax, table["Dxy"]["n"]), strict=True))
    return {name: table[name] for name in OPTIMISM_INDEXES}


def _emax(intercept: float, slope: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(EMAX_GRID - expit(intercept + slope * logit(EMAX_GRID)))
    return float(np.nanmax(gap)) if np.isfinite(gap).any() else np.nan


# ---------------------------------------------------------------------------------- small pieces
def _deviance(y: np.ndarray, eta: np.ndarray) -> float:
    """``-2 * sum(y eta - log(1 + e^eta))``, the binomial deviance of linear predictor ``eta``."""
    return float(-2 * (y @ eta - np.logaddexp(0.0, eta).sum()))


def _null_deviance(y: np.ndarray) -> float:
    events, n = float(y.sum()), len(y)
    return float(-2 * (events * np.log(events / n) + (n - events) * np.log1p(-events / n)))


def _nagelkerke(lr: float, null: float, n: int) -> float:
    """Nagelkerke's R2 from the likelihood ratio chi-square ``lr`` and the null deviance, as lrm reports it."""
    return float(-np.expm1(-lr / n) / -np.expm1(-null / n))


def _gini_mean_difference(x: np.ndarray) -> float:
    """Mean of ``|x_i - x_j|`` over pairs ``i < j`` (Hmisc ``GiniMd``); NaN below 2 values or for NaN input."""
    n = len(x)
    if n < 2 or not np.all(np.isfinite(x)):
        return np.nan
    ordered = np.sort(x - x.mean())
    return float(2 * np.dot(2 * np.arange(1, n + 1) - n - 1, ordered) / (n * (n - 1)))


def _check_outcome(y: ArrayLike, rows: int) -> np.ndarray:
    y_arr = np.asarray(y)
    if y_arr.ndim != 1 or len(y_arr) != rows:
        raise ValueError(f"y must be one-dimensional with one value per row of X ({rows}); got shape {y_arr.shape}")
    y_num = y_arr.astype(np.float64) if y_arr.dtype.kind in "biuf" else np.full(len(y_arr), np.nan)
    bad = (y_num != 0) & (y_num != 1)
    if bad.any():
        raise ValueError(f"y must be 0 or 1 (bool accepted); {int(bad.sum())} values are not "
                         f"(positions {', '.join(map(str, np.flatnonzero(bad)[:3]))})")
    if y_num.min() == y_num.max():
        raise ValueError(f"y must contain at least one event (1) and one non-event (0) for bootstrap_optimism; "
                         f"got {int(y_num.sum())} events in {rows} rows")
    return y_num


def _rows_of(X: object) -> int:  # noqa: N803
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        raise ValueError(f"X must be two-dimensional (a DataFrame or an array of shape (n, k)); got {type(X).__name__}")
    return int(shape[0])


def _take(X: object, rows: np.ndarray) -> object:  # noqa: N803
    return X.iloc[rows] if isinstance(X, (pd.DataFrame, pd.Series)) else np.asarray(X)[rows]


def _risk_of(model: Model, X: object, rows: int) -> np.ndarray:  # noqa: N803
    if hasattr(model, "predict_proba"):
        risk = np.asarray(model.predict_proba(X), dtype=np.float64)
        risk = risk[:, 1] if risk.ndim == 2 else risk
    elif callable(model):
        risk = np.asarray(model(X), dtype=np.float64)
    else:
        raise ValueError(f"fit must return a model with predict_proba or a callable returning risks; "
                         f"got {type(model).__name__}")
    if risk.shape != (rows,) or not np.all(np.isfinite(risk)) or risk.min() < 0 or risk.max() > 1:
        raise ValueError(f"a fitted model must return one finite risk in [0, 1] per row ({rows}); got shape "
                         f"{risk.shape}, range [{np.nanmin(risk):.6g}, {np.nanmax(risk):.6g}]")
    return risk


def _resamples(n: int, *, n_boot: int | None, seed: int | None, indices: Sequence[ArrayLike] | None,
               groups: ArrayLike | None) -> list[np.ndarray]:
    """Row positions of each resample: the given ``indices``, or drawn (rows, or whole clusters)."""
    if indices is not None:
        if n_boot is not None or seed is not None or groups is not None:
            raise ValueError("give either indices, or n_boot and seed (with groups for clusters); got both")
        resamples = [np.asarray(rows) for rows in indices]
        for i, rows in enumerate(resamples):
            if rows.ndim != 1 or rows.dtype.kind not in "iu" or len(rows) == 0 or rows.min() < 0 or rows.max() >= n:
                raise ValueError(f"indices must be non-empty 1-D integer row positions in [0, {n}); "
                                 f"resample {i} is not")
        if not resamples:
            raise ValueError("indices must hold at least one resample; got none")
        return resamples
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1 or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"give n_boot (a positive integer) and seed (an integer), or indices; "
                         f"got n_boot={n_boot!r}, seed={seed!r}")
    rng = np.random.default_rng(seed)
    if groups is None:
        return [rng.integers(0, n, n) for _ in range(n_boot)]
    codes, _ = pd.factorize(np.asarray(groups), sort=True)
    if len(codes) != n or (codes < 0).any():
        raise ValueError(f"groups must have one non-missing value per row ({n}); got {len(codes)} values, "
                         f"{int((codes < 0).sum())} missing")
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.cumsum(sizes) - sizes
    resamples = []
    for _ in range(n_boot):
        drawn = rng.integers(0, len(sizes), len(sizes))
        lengths = sizes[drawn]
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        resamples.append(order[np.repeat(starts[drawn], lengths) + within])
    return resamples
