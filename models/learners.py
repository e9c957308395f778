"""Candidate learners: scikit-learn pipelines built from the feature dictionary's kinds.

- ``spline_logistic``: penalised (L2) logistic regression with cubic B-splines on continuous predictors
  and missing-indicators: the interpretable reference.
- ``gradient_boosting``: HistGradientBoostingClassifier with native categorical and missing handling.
- ``flic_logistic``: Firth logistic regression with intercept correction, linear terms, for rare outcomes.

No learner weights or resamples classes: the probabilities are what the reports rest on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, SplineTransformer, StandardScaler

from features.dictionary import FeatureSpec


@dataclass(frozen=True)
class Candidate:
    """A named learner factory: ``build(features, seed)`` returns an unfitted estimator."""

    name: str
    description: str
    build: Callable[[Sequence[FeatureSpec], int], Pipeline]


def _split(features: Sequence[FeatureSpec]) -> tuple[list[str], list[str], list[str]]:
    numeric = [f.name for f in features if f.kind == "numeric"]
    binary = [f.name for f in features if f.kind == "binary"]
    categorical = [f.name for f in features if f.kind == "categorical"]
    return numeric, binary, categorical


def _categories(features: Sequence[FeatureSpec]) -> list[list[str]]:
    return [list(f.categories) for f in features if f.kind == "categorical"]


def spline_logistic(features: Sequence[FeatureSpec], seed: int, *, n_knots: int = 4, c: float = 1.0) -> Pipeline:
    """Penalised logistic regression, cubic B-splines (quantile knots) on each continuous predictor."""
    numeric, binary, categorical = _split(features)
    design = ColumnTransformer([
        ("spline", Pipeline([("impute", SimpleImputer(strategy="median")),
                             ("basis", SplineTransformer(n_knots=n_knots, degree=3, knots="quantile",
                                                         extrapolation="linear", include_bias=False))]), numeric),
        ("missing", MissingIndicator(features="missing-only", error_on_new=False), numeric),
        ("binary", "passthrough", binary),
        ("category", OneHotEncoder(categories=_categories(features), handle_unknown="ignore",
                                   sparse_output=False), categorical),
    ], verbose_feature_names_out=True)
    return Pipeline([("design", design), ("scale", StandardScaler()),
                     ("model", LogisticRegression(C=c, solver="newton-cholesky", max_iter=100, tol=1e-6))])


def gradient_boosting(features: Sequence[FeatureSpec], seed: int) -> Pipeline:
    """Histogram gradient boosting with early stopping; categories and missing values handled natively."""
    numeric, binary, categorical = _split(features)
    design = ColumnTransformer([
        ("category", OrdinalEncoder(categories=_categories(features), handle_unknown="use_encoded_value",
                                    unknown_value=np.nan, encoded_missing_value=np.nan), categorical),
        ("rest", "passthrough", numeric + binary),
    ], verbose_feature_names_out=True)
    model = HistGradientBoostingClassifier(
        learning_rate=0.08, max_iter=400, max_leaf_nodes=15, min_samples_leaf=200, l2_regularization=1.0,
        categorical_features=list(range(len(categorical))), early_stopping=True, validation_fraction=0.1,
        n_iter_no_change=20, random_state=seed)
    return Pipeline([("design", design), ("model", model)])


def flic_logistic(features: Sequence[FeatureSpec], seed: int) -> Pipeline:
    """Firth logistic regression with intercept correction (FLIC), linear terms: for rare outcomes."""
    from models.rare import FlicLogisticRegression

    numeric, binary, categorical = _split(features)
    design = ColumnTransformer([
        ("linear", SimpleImputer(strategy="median"), numeric),
        ("binary", "passthrough", binary),
        ("category", OneHotEncoder(categories=_categories(features), drop="first", handle_unknown="ignore",
                                   sparse_output=False), categorical),
    ], verbose_feature_names_out=True)
    return Pipeline([("design", design), ("scale", StandardScaler()), ("model", FlicLogisticRegression())])


def n_parameters(features: Sequence[FeatureSpec]) -> int:
    """Candidate predictor parameters of the linear (FLIC) model: one per numeric or binary feature,
    categories - 1 per categorical feature (what Riley's criteria count)."""
    return sum(len(f.categories) - 1 if f.kind == "categorical" else 1 for f in features)


SPLINE_LOGISTIC = Candidate("spline_logistic", "L2-penalised logistic regression, cubic B-splines (4 quantile "
                            "knots) on continuous predictors, missing-indicators", spline_logistic)
GRADIENT_BOOSTING = Candidate("gradient_boosting", "HistGradientBoosting (early stopping, native categories and "
                              "missing values)", gradient_boosting)
FLIC_LOGISTIC = Candidate("flic_logistic", "Firth logistic regression with intercept correction (FLIC), "
                          "linear terms", flic_logistic)

CANDIDATES_COMMON = (SPLINE_LOGISTIC, GRADIENT_BOOSTING)
CANDIDATES_RARE = (FLIC_LOGISTIC, SPLINE_LOGISTIC)
