"""Strongest predictors of a fitted risk model: permutation importance on log loss and the direction of each effect.

Model-agnostic: anything with ``predict_proba`` on the raw feature frame (the spline logistic, the gradient
boosting, the recalibrated wrapper). Importance is the mean increase in log loss when a feature's column is
permuted (Breiman 2001; Fisher, Rudin & Dominici 2019, "model reliance"); direction is the partial dependence
(Friedman 2001): the predicted risk averaged over the same rows with the feature set to one value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance

from features.dictionary import FeatureSpec

SCORING = "neg_log_loss"
LOW_QUANTILE, HIGH_QUANTILE = 0.10, 0.90
KINDS = ("numeric", "binary", "categorical")
_MAX_SEED = 2**32 - 1  # what numpy.random.RandomState (used by scikit-learn) accepts

Risk = Callable[[object], float]


def strongest_predictors(model: object, X: pd.DataFrame, y: np.ndarray, *,  # noqa: N803
                         features: Sequence[FeatureSpec], seed: int, max_rows: int = 5000,
                         n_repeats: int = 5, top: int = 10) -> list[dict[str, object]]:
    """The ``top`` features by permutation importance, each with the direction of its effect on risk.

    Parameters
    ----------
    model
        A fitted classifier with ``predict_proba`` taking ``X``'s columns (column 1 = risk of the event).
    X
        Raw feature frame, shape (n_rows, n_columns); holds every feature of ``features``. Not modified.
    y
        0/1 outcome of each row, shape (n_rows,); both classes present.
    features
        The features to rank (a subset of ``X``'s columns), kinds as in :mod:`features.dictionary`.
    seed
        Seed of the stratified subsample and of the permutations (0 to 2**32 - 1).
    max_rows
        At most this many rows are used, drawn stratified by outcome; all rows (in order) when fewer.
    n_repeats
        Permutations per feature.
    top
        How many features to return.

    Returns
    -------
    list of dict
        Sorted by importance, descending; JSON-ready (floats rounded to 6 decimals, undefined -> None).
        Every dict: ``feature``, ``kind``, ``importance`` (mean increase in log loss, nats per row),
        ``importance_sd`` (SD over the repeats), ``direction`` (plain words), ``risk_if_missing`` (mean
        predicted risk with the feature set to missing; None when ``X`` has no missing value of it). Then,
        numeric: ``value_low``, ``value_high`` (10th and 90th percentiles of the non-missing values),
        ``risk_at_low``, ``risk_at_high``; binary: ``risk_if_true``, ``risk_if_false``; categorical:
        ``risk_by_category``, ``highest_category``, ``risk_highest``, ``lowest_category``, ``risk_lowest``.
        Risks are mean predicted probabilities (0-1) over the subsample.

    Raises
    ------
    TypeError
        ``X`` is not a DataFrame, or ``model`` has no ``predict_proba``.
    ValueError
        A feature is not a column of ``X`` or has an unknown kind; ``y`` is not one 0/1 label per row with
        both classes; a binary feature holds values other than 0/1; an option is out of range.
    """
    labels = _check_inputs(model, X, y, features=features, seed=seed, max_rows=max_rows, n_repeats=n_repeats,
                           top=top)
    rows = _stratified_rows(labels, max_rows=max_rows, seed=seed)
    sample = X.iloc[rows].reset_index(drop=True)
    result = permutation_importance(model, sample, labels[rows], scoring=SCORING, n_repeats=n_repeats,
                                    random_state=seed, n_jobs=1)
    column = {name: i for i, name in enumerate(X.columns)}
    means = np.array([result.importances_mean[column[f.name]] for f in features])
    order = np.argsort(-means, kind="stable")[:top]
    summaries = []
    for i in order:
        spec = features[i]
        summary: dict[str, object] = {"feature": spec.name, "kind": spec.kind, "importance": _number(means[i]),
                                      "importance_sd": _number(result.importances_std[column[spec.name]])}
        summaries.append(summary | _effect(spec, X[spec.name], _risk_setter(model, sample, spec.name)))
    return summaries


def _check_inputs(model: object, X: object, y: object, *, features: Sequence[FeatureSpec], seed: int,  # noqa: N803
                  max_rows: int, n_repeats: int, top: int) -> np.ndarray:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"X must be a pandas DataFrame of raw features; got {type(X).__name__}")
    if not callable(getattr(model, "predict_proba", None)):
        raise TypeError(f"model must be a fitted classifier with predict_proba; got {type(model).__name__}")
    if not features:
        raise ValueError("features must name at least one feature")
    names = [f.name for f in features]
    absent = [n for n in names if n not in X.columns]
    if absent:
        raise ValueError(f"every feature must be a column of X; not in X: {', '.join(absent)}")
    if len(set(names)) < len(names) or not X.columns.is_unique:
        raise ValueError("feature names and the columns of X must be unique")
    unknown = [f"{f.name} ({f.kind})" for f in features if f.kind not in KINDS]
    if unknown:
        raise ValueError(f"feature kind must be one of {', '.join(KINDS)}; got {', '.join(unknown)}")
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != len(X):
        raise ValueError(f"y must hold one label per row of X; got shape {labels.shape} for {len(X)} rows")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("y must hold 0/1 labels; found " + ", ".join(map(str, pd.unique(labels)[:5])))
    labels = labels.astype(np.int8)
    if labels.min() == labels.max():
        raise ValueError(f"y must hold both classes; all {len(labels)} labels are {labels[0]}")
    for name, value, low in (("max_rows", max_rows, 2), ("n_repeats", n_repeats, 1), ("top", top, 1)):
        if not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed <= _MAX_SEED:
        raise ValueError(f"seed must be an integer between 0 and {_MAX_SEED}; got {seed!r}")
    return labels


def _stratified_rows(labels: np.ndarray, *, max_rows: int, seed: int) -> np.ndarray:
    """Row positions of a subsample of at most ``max_rows`` with the outcome's prevalence, in row order."""
    n = len(labels)
    if n <= max_rows:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    events, non_events = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    n_events = min(int(np.clip(round(max_rows * len(events) / n), 1, max_rows - 1)), len(events))
    n_non_events = min(max_rows - n_events, len(non_events))
    chosen = np.concatenate([rng.choice(events, n_events, replace=False),
                             rng.choice(non_events, n_non_events, replace=False)])
    return np.sort(chosen)


def _risk_setter(model: object, sample: pd.DataFrame, name: str) -> Risk:
    """Partial dependence at one value: mean predicted risk over ``sample`` with ``name`` set to it."""
    def risk(value: object) -> float:
        frame = sample.copy()
        frame[name] = pd.Series([value] * len(frame), index=frame.index, dtype=sample[name].dtype)
        return float(np.mean(model.predict_proba(frame)[:, 1]))
    return risk


def _effect(spec: FeatureSpec, values: pd.Series, risk: Risk) -> dict[str, object]:
    missing = values.isna()
    observed = values[~missing]
    if spec.kind == "numeric":
        effect, text = _numeric_effect(spec.name, observed, risk)
    elif spec.kind == "binary":
        effect, text = _binary_effect(spec.name, observed, risk)
    else:
        effect, text = _categorical_effect(spec, observed, risk)
    risk_missing = _number(risk(values[missing].iloc[0])) if missing.any() else None
    if risk_missing is not None:
        text += f"; {_percent(risk_missing)} when missing"
    return {"direction": text, "risk_if_missing": risk_missing} | effect


def _numeric_effect(name: str, observed: pd.Series, risk: Risk) -> tuple[dict[str, object], str]:
    if observed.empty:
        return {"value_low": None, "value_high": None, "risk_at_low": None, "risk_at_high": None}, \
            f"{name} has no non-missing values: no direction"
    numbers = observed.to_numpy(dtype=float)
    low, high = (float(q) for q in np.quantile(numbers, (LOW_QUANTILE, HIGH_QUANTILE), method="inverted_cdf"))
    at_low, at_high = _number(risk(low)), _number(risk(high))
    effect = {"value_low": _number(low), "value_high": _number(high), "risk_at_low": at_low, "risk_at_high": at_high}
    if low == high:
        return effect, f"{name} is {low:.4g} at both its 10th and 90th percentiles: no direction"
    return effect, (f"higher {name} -> {_trend(at_high, at_low)} risk ({_percent(at_low)} at {low:.4g}, "
                    f"10th percentile; {_percent(at_high)} at {high:.4g}, 90th percentile)")


def _binary_effect(name: str, observed: pd.Series, risk: Risk) -> tuple[dict[str, object], str]:
    if not observed.isin((0, 1)).all():
        shown = ", ".join(map(str, pd.unique(observed[~observed.isin((0, 1))])[:5]))
        raise ValueError(f"binary feature {name} must hold 0/1 (or true/false) values; found {shown}")
    true, false = (True, False) if pd.api.types.is_bool_dtype(observed) else (1, 0)
    if_true, if_false = _number(risk(true)), _number(risk(false))
    return {"risk_if_true": if_true, "risk_if_false": if_false}, \
        f"{name} -> {_trend(if_true, if_false)} risk ({_percent(if_true)} if true vs {_percent(if_false)} if false)"


def _categorical_effect(spec: FeatureSpec, observed: pd.Series, risk: Risk) -> tuple[dict[str, object], str]:
    seen = {str(v): v for v in pd.unique(observed)}  # shown as text, set as found in X
    categories = [c for c in spec.categories if c in seen] + sorted(set(seen) - set(spec.categories))
    by_category = {c: _number(risk(seen[c])) for c in categories}
    defined = [c for c in categories if by_category[c] is not None]
    if not defined:
        return {"risk_by_category": by_category, "highest_category": None, "risk_highest": None,
                "lowest_category": None, "risk_lowest": None}, f"{spec.name} has no non-missing values: no direction"
    highest = max(defined, key=lambda c: by_category[c])  # the first listed wins a tie
    lowest = min(defined, key=lambda c: by_category[c])
    effect = {"risk_by_category": by_category, "highest_category": highest, "risk_highest": by_category[highest],
              "lowest_category": lowest, "risk_lowest": by_category[lowest]}
    return effect, (f"{spec.name}: highest with {highest} ({_percent(by_category[highest])}), "
                    f"lowest with {lowest} ({_percent(by_category[lowest])})")


def _trend(risk: float | None, reference: float | None) -> str:
    if risk is None or reference is None:
        return "undefined"
    return "higher" if risk > reference else "lower" if risk < reference else "unchanged"


def _number(value: float) -> float | None:
    """Rounded to 6 decimals; NaN or infinite (undefined) -> None."""
    value = float(value)
    return round(value, 6) if np.isfinite(value) else None


def _percent(risk: float | None) -> str:
    if risk is None:
        return "undefined"
    return f"{risk:.1%}" if risk >= 0.01 else f"{risk:.2%}"
