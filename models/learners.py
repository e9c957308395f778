"""Candidate learners: scikit-learn pipelines built from the feature dictionary's kinds.

- ``spline_logistic``: penalised (L2) logistic regression with cubic B-splines on continuous predictors
  and missing-indicators: the interpretable reference.
- ``spline_logistic_interactions``: the same with more knots (thresholds such as the fill ratio's) and the
  clinically motivated interactions of :data:`INTERACTIONS` (viscosity x cortical breach, viscosity x fill
  ratio, basivertebral foramen x viscosity).
- ``gradient_boosting``: HistGradientBoostingClassifier with native categorical and missing handling, a
  slower learning rate and more leaves than the defaults, iterations chosen by early stopping.
- ``average``: the mean of the predicted risks of the interaction spline logistic and the boosting (soft
  voting); in cross-validation it costs no fit of its own (:data:`ENSEMBLES`).
- ``flic_logistic``: Firth logistic regression with intercept correction, linear terms, for rare outcomes.

No learner weights or resamples classes: the probabilities are what the reports rest on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, VotingClassifier
from sklearn.impute import MissingIndicator, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, SplineTransformer, StandardScaler

from features import dictionary as d
from features.dictionary import FeatureSpec
from records import schema as s


@dataclass(frozen=True)
class Candidate:
    """A named learner factory: ``build(features, seed)`` returns an unfitted estimator."""

    name: str
    description: str
    build: Callable[[Sequence[FeatureSpec], int], Pipeline]
    members: tuple[str, ...] = ()  # an ensemble: the candidates whose risks it averages (no fit of its own in CV)
    regression: bool = True  # a fixed design whose columns are its parameters (Riley's count applies)

    @property
    def ensemble(self) -> bool:
        return bool(self.members)


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


INTERACTIONS: tuple[tuple[tuple[str, str | None], tuple[str, str | None]], ...] = (
    ((s.CEMENT_VISCOSITY, "low"), (s.CORTICAL_DISRUPTION, None)),
    ((s.CEMENT_VISCOSITY, "high"), (s.CORTICAL_DISRUPTION, None)),
    ((s.CEMENT_VISCOSITY, "low"), (d.CEMENT_FILL_RATIO, None)),
    ((s.CEMENT_VISCOSITY, "high"), (d.CEMENT_FILL_RATIO, None)),
    ((d.BASIVERTEBRAL, "yes"), (s.CEMENT_VISCOSITY, "low")),
    ((d.BASIVERTEBRAL, "yes"), (s.CEMENT_VISCOSITY, "high")),
)
"""Product terms of the interaction spline logistic: (column, category) is the indicator of that category,
(column, None) the value itself (median-imputed, centred at the median). Reported in the literature: low
viscosity leaks through a breached cortex and a patent basivertebral foramen more than its main effects add
up to (Zhan et al. 2017; Zhu et al. 2016; docs/synthetic-registry.md)."""


class ProductTerms(TransformerMixin, BaseEstimator):
    """Products of pairs of terms of a raw feature frame: category indicators or (imputed, centred) values.

    ``pairs`` as :data:`INTERACTIONS`; pairs naming a column absent from the frame are skipped at ``fit``.
    A missing value counts 0 in an indicator and the training median in a value (its missing-indicator is
    a main effect of the model).
    """

    def __init__(self, pairs: tuple = INTERACTIONS) -> None:
        self.pairs = pairs

    def fit(self, X: pd.DataFrame, y: object = None) -> ProductTerms:  # noqa: N803
        if not isinstance(X, pd.DataFrame):
            raise ValueError(f"ProductTerms needs a data frame of raw features; got {type(X).__name__}")
        self.pairs_ = tuple(pair for pair in self.pairs if all(column in X.columns for column, _ in pair))
        self.medians_ = {}
        for pair in self.pairs_:
            for column, level in pair:
                if level is None and column not in self.medians_:
                    values = pd.to_numeric(X[column], errors="coerce").astype("float64")
                    median = float(np.nanmedian(values)) if values.notna().any() else 0.0
                    self.medians_[column] = median
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def _term(self, X: pd.DataFrame, column: str, level: str | None) -> np.ndarray:  # noqa: N803
        if level is not None:
            return (X[column].astype("object") == level).to_numpy(dtype=np.float64)
        values = pd.to_numeric(X[column], errors="coerce").astype("float64").to_numpy()
        return np.where(np.isnan(values), 0.0, values - self.medians_[column])

    def transform(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803
        columns = [self._term(X, *a) * self._term(X, *b) for a, b in self.pairs_]
        return np.column_stack(columns) if columns else np.empty((len(X), 0))

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        def word(column: str, level: str | None) -> str:
            return column if level is None else f"{column}={level}"
        return np.asarray([f"{word(*a)} x {word(*b)}" for a, b in self.pairs_], dtype=object)


def spline_logistic_interactions(features: Sequence[FeatureSpec], seed: int, *, n_knots: int = 6,
                                 c: float = 1.0) -> Pipeline:
    """Penalised logistic regression: cubic B-splines with ``n_knots`` quantile knots on each continuous
    predictor (a threshold such as the fill ratio's can be followed) and the product terms of
    :data:`INTERACTIONS`; missing-indicators and categories as :func:`spline_logistic`."""
    numeric, binary, categorical = _split(features)
    names = {f.name for f in features}
    pairs = tuple(pair for pair in INTERACTIONS if all(column in names for column, _ in pair))
    raw = sorted({column for pair in pairs for column, _ in pair})
    design = ColumnTransformer([
        ("spline", Pipeline([("impute", SimpleImputer(strategy="median")),
                             ("basis", SplineTransformer(n_knots=n_knots, degree=3, knots="quantile",
                                                         extrapolation="linear", include_bias=False))]),
         [n for n in numeric if n not in _DISCRETE]),
        ("discrete", SimpleImputer(strategy="median"), [n for n in numeric if n in _DISCRETE]),
        ("missing", MissingIndicator(features="missing-only", error_on_new=False), numeric),
        ("binary", "passthrough", binary),
        ("category", OneHotEncoder(categories=_categories(features), handle_unknown="ignore",
                                   sparse_output=False), categorical),
        ("interaction", ProductTerms(pairs), raw),
    ], verbose_feature_names_out=True)
    return Pipeline([("design", design), ("scale", StandardScaler()),
                     ("model", LogisticRegression(C=c, solver="newton-cholesky", max_iter=100, tol=1e-6))])


_DISCRETE = frozenset({s.GENANT_GRADE, d.LEVELS_IN_PROCEDURE, s.ASA_CLASS})
"""Numeric predictors with a handful of values: linear terms (quantile knots would coincide)."""


def gradient_boosting(features: Sequence[FeatureSpec], seed: int) -> Pipeline:
    """Histogram gradient boosting with early stopping; categories and missing values handled natively."""
    numeric, binary, categorical = _split(features)
    design = ColumnTransformer([
        ("category", OrdinalEncoder(categories=_categories(features), handle_unknown="use_encoded_value",
                                    unknown_value=np.nan, encoded_missing_value=np.nan), categorical),
        ("rest", "passthrough", numeric + binary),
    ], verbose_feature_names_out=True)
    model = HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=600, max_leaf_nodes=15, min_samples_leaf=100, l2_regularization=3.0,
        categorical_features=list(range(len(categorical))), early_stopping=True, validation_fraction=0.15,
        n_iter_no_change=30, random_state=seed)
    return Pipeline([("design", design), ("model", model)])


def average(features: Sequence[FeatureSpec], seed: int) -> VotingClassifier:
    """Soft vote (mean predicted risk) of the interaction spline logistic and the gradient boosting."""
    return VotingClassifier([("spline_logistic_interactions", spline_logistic_interactions(features, seed)),
                             ("gradient_boosting", gradient_boosting(features, seed))], voting="soft")


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
    """Predictor parameters of a linear model without missing-indicators: one per numeric or binary
    feature, categories - 1 per categorical feature (a lower bound; :func:`fitted_parameters` counts what a
    candidate fits)."""
    return sum(len(f.categories) - 1 if f.kind == "categorical" else 1 for f in features)


def fitted_parameters(candidate: Candidate, features: Sequence[FeatureSpec], X: pd.DataFrame) -> int | None:  # noqa: N803
    """Predictor parameters the candidate fits on ``X``: the columns of its design after encoding, splines,
    missing-indicators and interactions (its ``design`` step fitted on ``X``), less one per categorical
    feature when the design one-hot encodes every category beside an intercept (those columns sum to one).
    None for a candidate without a fixed design (boosting, ensembles): Riley's criteria do not apply to it.
    """
    if not candidate.regression or candidate.ensemble:
        return None
    pipeline = candidate.build(features, 0)
    design = pipeline.named_steps["design"]
    columns = design.fit(X).transform(X.iloc[:1]).shape[1]
    one_hot = design.named_transformers_.get("category")
    redundant = 0
    if isinstance(one_hot, OneHotEncoder) and one_hot.drop is None:
        redundant = len(one_hot.categories_)
    return int(columns - redundant)


SPLINE_LOGISTIC = Candidate("spline_logistic", "L2-penalised logistic regression, cubic B-splines (4 quantile "
                            "knots) on continuous predictors, missing-indicators", spline_logistic)
SPLINE_LOGISTIC_INTERACTIONS = Candidate(
    "spline_logistic_interactions", "L2-penalised logistic regression, cubic B-splines (6 quantile knots) on "
    "continuous predictors, missing-indicators, interactions viscosity x cortical breach, viscosity x fill "
    "ratio and basivertebral foramen x viscosity", spline_logistic_interactions)
GRADIENT_BOOSTING = Candidate("gradient_boosting", "HistGradientBoosting (learning rate 0.05, 15 leaves, at "
                              "least 100 rows a leaf, L2 3, iterations by early stopping; native categories "
                              "and missing values)", gradient_boosting, regression=False)
AVERAGE = Candidate("average", "mean predicted risk of the interaction spline logistic and the gradient "
                    "boosting (soft vote)", average,
                    members=("spline_logistic_interactions", "gradient_boosting"), regression=False)
FLIC_LOGISTIC = Candidate("flic_logistic", "Firth logistic regression with intercept correction (FLIC), "
                          "linear terms", flic_logistic)

CANDIDATES_COMMON = (SPLINE_LOGISTIC, SPLINE_LOGISTIC_INTERACTIONS, GRADIENT_BOOSTING, AVERAGE)
CANDIDATES_RARE = (FLIC_LOGISTIC, SPLINE_LOGISTIC)
