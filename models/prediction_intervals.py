"""The uncertainty of one prediction: a model's calibrated risk with an interval from its parameter uncertainty.

A model's parameters are estimated from a finite registry; refitted on another registry like it, the model would
predict another risk for the same case. The spread of that risk is estimated by the cluster bootstrap (Efron and
Tibshirani 1993, ch. 6; Davison and Hinkley 1997, section 3.8): resample whole procedures with replacement, refit
the full recipe (the learner and its logistic recalibration) on each resample, and take the standard deviation of
the replicates' logits as the standard error of the model's logit. The interval is a Wald interval on the logit
scale centred at the model's own calibrated risk, so the risk always lies inside it.

What it covers: the risk that the model's recipe would estimate with unlimited data like these (the risk of the
outcome given what the records hold, when the model is well specified). It is not a range for the patient's
outcome, and not the validated calibration curve (:mod:`models.uncertainty`); bias of a misspecified model is not
in it. Checked on generated registries (tests/models/test_prediction_intervals.py): a correctly specified truth is
covered at about 95%; the generator's observable-only risk, which the additive spline logistic cannot follow
exactly, at about 77-80% (3,000 procedures, leakage_any).
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import stats
from scipy.special import expit, logit
from sklearn import config_context
from sklearn.base import BaseEstimator, clone, is_classifier

from models.calibration import RecalibratedClassifier, fit_recalibration
from models import progress
from models.checks import check_level
from models.fanout import Mapper, sequential

INTERVAL_COLUMNS = ("risk", "low", "high", "se_logit")
MIN_REPLICATES = 10
METHOD = ("cluster bootstrap of procedures: the learner refitted on each resample and its logistic recalibration "
          "refitted on the same resample of its out-of-fold risks; Wald interval on the logit scale "
          "centred at the model's calibrated risk, standard error the standard deviation of the replicates' "
          "logits, Student t quantile with replicates - 1 degrees of freedom")
_EPS = 1e-12
_REDRAWS = 50


class NoReplicatesError(ValueError):
    """A model carries no parameter replicates (it was stored before they existed): no interval can be given."""


def parameter_replicates(learner: object, X: pd.DataFrame, y: ArrayLike, groups: ArrayLike, *,  # noqa: N803
                         recalibrate: ArrayLike | tuple[float, float], n_replicates: int, seed: int,
                         mapper: Mapper = sequential) -> tuple[RecalibratedClassifier, ...]:
    """The model's recipe refitted on ``n_replicates`` cluster-bootstrap resamples of its training rows.

    Each replicate draws as many procedures as there are, with replacement (all rows of a drawn procedure, as
    often as it is drawn), fits a clone of ``learner`` on those rows and recalibrates it. Given the learner's
    out-of-fold risks (what the final model's recalibration was fitted on), the replicate's recalibration is
    :func:`models.calibration.fit_recalibration` on the same resample of (outcome, out-of-fold risk): the
    calibrator is bootstrapped at the size it was fitted at, and its uncertainty is in the spread, without the
    ``n_folds`` refits per replicate that cross-fitting inside every resample would cost. Given a pair
    ``(intercept, slope)``, every replicate reuses the final model's recalibration (its uncertainty left out).
    A resample without both classes is drawn again.

    Parameters
    ----------
    learner
        The unfitted scikit-learn estimator of the final model, e.g. ``candidate.build(features, seed)``: cloned,
        never fitted itself.
    X : DataFrame of shape (n, features)
        The rows the final model was fitted on.
    y : array of shape (n,)
        Their 0/1 outcomes.
    groups : array of shape (n,)
        The procedure of each row: the unit resampled (levels of one procedure are not independent).
    recalibrate : array of shape (n,), or (intercept, slope)
        The learner's out-of-fold risks of the rows of ``X`` (not recalibrated), or the final recalibration.
    n_replicates
        Refits; at least :data:`MIN_REPLICATES`. The standard error taken from them has a relative Monte Carlo
        error of about ``1 / sqrt(2 (n_replicates - 1))`` (13% at 30, 7% at 100).
    seed
        Replicate ``i`` is drawn from ``numpy.random.default_rng([seed, i])``: the same on any mapper.
    mapper
        Runs the refits (:mod:`models.fanout`), one piece of work per replicate.

    Returns
    -------
    tuple of RecalibratedClassifier
        The fitted replicates, without replicates of their own; pass them as ``replicates=`` of the final
        :class:`models.calibration.RecalibratedClassifier`.

    Raises
    ------
    ValueError
        Inputs of different lengths, ``y`` not 0/1 with both classes, missing groups, out-of-fold risks outside
        [0, 1], a pair that is not two finite numbers, fewer than :data:`MIN_REPLICATES` replicates, or no
        resample with both classes in :data:`_REDRAWS` draws.

    References
    ----------
    Efron B, Tibshirani RJ. An Introduction to the Bootstrap. Chapman & Hall 1993, ch. 6 and 17.
    Davison AC, Hinkley DV. Bootstrap Methods and their Application. Cambridge 1997, section 3.8 (clustered data).
    """
    y01, codes = _check_training(X, y, groups)
    calibration = _check_recalibrate(recalibrate, len(y01))
    if not isinstance(n_replicates, numbers.Integral) or n_replicates < MIN_REPLICATES:
        raise ValueError(f"n_replicates must be a whole number of at least {MIN_REPLICATES}; got {n_replicates!r}")
    items = [(int(seed), i) for i in range(int(n_replicates))]
    return tuple(progress.mapped(mapper, _fit_replicate, items, (learner, X, y01, codes, calibration),
                                 label="bootstrap replicates for prediction intervals", local=mapper is sequential))


def prediction_interval(model: RecalibratedClassifier, X: pd.DataFrame, *,  # noqa: N803
                        level: float = 0.95) -> pd.DataFrame:
    """The model's calibrated risk of each row with the interval of that prediction from its parameter uncertainty.

    ``risk = model.predict_proba(X)[:, 1]``; ``se_logit`` the standard deviation (ddof 1) of the logits of the
    ``B`` replicates' risks, times the model's ``replicate_scale`` (1, or ``sqrt(m / n)`` for replicates refitted
    on a sample of ``m`` of its ``n`` procedures); ``low, high = expit(logit(risk) -/+ t * se_logit)`` with ``t``
    the Student t quantile of ``level`` with ``B - 1`` degrees of freedom (the standard error is itself estimated
    from ``B`` refits). ``low <= risk <= high`` always.

    Parameters
    ----------
    model
        A :class:`models.calibration.RecalibratedClassifier` with ``replicates``.
    X : DataFrame of shape (n, features)
        Rows to predict, with the model's features.
    level
        Coverage of the interval, in (0, 1).

    Returns
    -------
    DataFrame
        Columns :data:`INTERVAL_COLUMNS`, one row per row of ``X`` (its index).

    Raises
    ------
    NoReplicatesError
        The model carries fewer than 2 replicates (stored before replicates existed).
    ValueError
        ``level`` outside (0, 1).
    """
    level = check_level(level)
    replicates = _replicates_of(model)
    risk = np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)
    logits = np.vstack([_logit(r.predict_proba(X)[:, 1]) for r in replicates])
    se = logits.std(axis=0, ddof=1) * float(getattr(model, "replicate_scale", 1.0))
    low, high = _wald(risk, se, level=level, df=len(replicates) - 1)
    index = X.index if isinstance(X, pd.DataFrame) else None
    return pd.DataFrame(dict(zip(INTERVAL_COLUMNS, (risk, low, high, se))), index=index)


def replicate_count(model: object) -> int:
    """How many parameter replicates a model carries: 0 for a model stored without them."""
    replicates = getattr(model, "replicates", None)
    return 0 if replicates is None else len(replicates)


def describe_interval(model: object, *, level: float = 0.95) -> str:
    """What :func:`prediction_interval` gives for this model, in words for the person reading it."""
    level = check_level(level)
    scale = float(getattr(model, "replicate_scale", 1.0))
    refits = (f"{replicate_count(model)} bootstrap refits of the model and its recalibration" if scale == 1.0 else
              f"{replicate_count(model)} bootstrap refits of the model and its recalibration on a sample of the "
              f"registry, their spread scaled by {scale:.3g} to the whole registry's size")
    return (f"{level:.0%} interval of this prediction from the model's parameter uncertainty ({refits}), without any "
            "bias of the model's form; not a range for the patient's outcome, and not the calibration curve of the "
            "validation data")


# ----------------------------------------------------------------------------------- private steps
def _fit_replicate(item: tuple[int, int], learner: object, X: pd.DataFrame, y: np.ndarray,  # noqa: N803
                   codes: np.ndarray, calibration: np.ndarray | tuple[float, float]) -> RecalibratedClassifier:
    """One bootstrap refit (a piece of work for a mapper): resample procedures, fit, recalibrate."""
    seed, index = item
    rng = np.random.default_rng([seed, index])
    n_groups = int(codes.max()) + 1
    for _ in range(_REDRAWS):
        times = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)[codes]
        rows = np.repeat(np.arange(len(y)), times)
        if _both_classes(y[rows]):
            break
    else:
        raise ValueError(f"bootstrap replicate {index}: no resample of {n_groups} procedures in {_REDRAWS} draws "
                         "held both events and non-events; too few events for parameter replicates")
    fitted = _fit_resample(learner, X, y, times)
    if isinstance(calibration, np.ndarray):
        intercept, slope = fit_recalibration(y[rows], calibration[rows])
    else:
        intercept, slope = calibration
    return RecalibratedClassifier(estimator=fitted, intercept=intercept, slope=slope)


def _fit_resample(learner: object, X: pd.DataFrame, y: np.ndarray, times: np.ndarray) -> object:  # noqa: N803
    """A clone of ``learner`` fitted on a resample given as how often each row was drawn.

    When every classifier in the learner takes sample weights, the drawn rows are fitted once each, weighted by
    ``times`` (scikit-learn metadata routing; every step that takes weights gets them, such as the scaler and the
    spline knots): the same fit as on repeated rows, but a boosting model's early-stopping split holds no copy of a
    training row (on repeated rows it never stops: 600 iterations against the final model's 129). Otherwise (the
    Firth logistic) the rows are repeated. The routing requests are removed from the fitted estimator: it stores
    as the final model does.
    """
    estimator = clone(learner)
    inner = list(_estimators_in(estimator))
    classifiers = [e for e in inner if is_classifier(e) and not _routes(e)]
    if not classifiers or not all(_takes_weights(e) for e in classifiers):
        rows = np.repeat(np.arange(len(y)), times)
        return estimator.fit(_take(X, rows), y[rows])
    drawn = times > 0
    with config_context(enable_metadata_routing=True):
        for e in inner[1:]:
            if _takes_weights(e) and hasattr(e, "set_fit_request"):
                e.set_fit_request(sample_weight=True)
        estimator.fit(_take(X, drawn), y[drawn], sample_weight=times[drawn].astype(np.float64))
    for e in _estimators_in(estimator):
        vars(e).pop("_metadata_request", None)
    return estimator


def _estimators_in(obj: object, seen: set[int] | None = None) -> Iterator[BaseEstimator]:
    """``obj`` and every estimator it holds (steps, transformers, ensemble members, fitted or not), depth first."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, BaseEstimator):
        yield obj
        children = vars(obj).values()
    elif isinstance(obj, (list, tuple)):
        children = obj
    elif isinstance(obj, dict):
        children = obj.values()
    else:
        return
    for child in children:
        yield from _estimators_in(child, seen)


def _routes(estimator: BaseEstimator) -> bool:
    """A composite (pipeline, column transformer, ensemble) that passes weights on rather than using them."""
    return hasattr(estimator, "get_metadata_routing") and any(
        hasattr(estimator, name) for name in ("steps", "transformers", "estimators"))


def _takes_weights(estimator: BaseEstimator) -> bool:
    return "sample_weight" in inspect.signature(estimator.fit).parameters


def _wald(risk: np.ndarray, se: np.ndarray, *, level: float, df: int) -> tuple[np.ndarray, np.ndarray]:
    """``expit(logit(risk) -/+ t * se)``, widened to hold ``risk`` where rounding at the clip would not."""
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    centre = _logit(risk)
    return np.minimum(expit(centre - half), risk), np.maximum(expit(centre + half), risk)


def _replicates_of(model: object) -> Sequence[RecalibratedClassifier]:
    count = replicate_count(model)
    if count < 2:
        raise NoReplicatesError(f"the model carries {count} parameter replicates, at least 2 are needed for an "
                                "interval; it was stored without replicates (trained before prediction intervals)")
    return model.replicates


def _check_training(X: object, y: ArrayLike, groups: ArrayLike) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    y_values, group_values = np.asarray(y), pd.Series(np.asarray(groups, dtype=object))
    lengths = {"X": len(X), "y": len(y_values), "groups": len(group_values)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"X, y and groups must have one entry per row; got lengths {lengths}")
    try:
        bad = ~np.isin(y_values.astype(np.float64), (0.0, 1.0))
    except (TypeError, ValueError):
        bad = np.ones(len(y_values), dtype=bool)
    if bad.any():
        raise ValueError(f"y must be 0 or 1 (bool accepted); {int(bad.sum())} values are not")
    y01 = y_values.astype(np.int8)
    if not _both_classes(y01):
        raise ValueError("y must hold both events and non-events to refit a model")
    missing = group_values.isna().to_numpy()
    if missing.any():
        raise ValueError(f"groups must name the procedure of every row; {int(missing.sum())} are missing")
    codes, _ = pd.factorize(group_values, sort=True)
    return y01, codes


def _check_recalibrate(recalibrate: object, n: int) -> np.ndarray | tuple[float, float]:
    if isinstance(recalibrate, tuple) and len(recalibrate) == 2:
        if all(isinstance(v, numbers.Real) and np.isfinite(v) for v in recalibrate):
            return float(recalibrate[0]), float(recalibrate[1])
        raise ValueError(f"recalibrate as a pair must be (intercept, slope), two finite numbers; got {recalibrate!r}")
    try:
        risk = np.asarray(recalibrate, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("recalibrate must be the learner's out-of-fold risks (one per row) or a pair "
                         f"(intercept, slope); got {type(recalibrate).__name__}") from None
    if risk.shape != (n,):
        raise ValueError(f"recalibrate as out-of-fold risks must hold one risk per row ({n}); got shape {risk.shape}")
    bad = ~np.isfinite(risk) | (risk < 0) | (risk > 1)
    if bad.any():
        raise ValueError(f"out-of-fold risks must be within [0, 1]; {int(bad.sum())} values are not")
    return risk


def _both_classes(y: np.ndarray) -> bool:
    return bool(y.any() and not y.all())


def _take(X: object, rows: np.ndarray) -> object:  # noqa: N803
    """Rows of a frame by position (a boolean mask or positions, repeats allowed), or of an array."""
    return X.iloc[rows] if isinstance(X, pd.DataFrame) else np.asarray(X)[rows]


def _logit(risk: ArrayLike) -> np.ndarray:
    return logit(np.clip(np.asarray(risk, dtype=np.float64), _EPS, 1 - _EPS))
