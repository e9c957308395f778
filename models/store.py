"""The model store: what a stored model is (estimator, model card, feature list), skops serialisation with an
explicit list of trusted types, and the store's API; every file it keeps is read and written by
:mod:`workspace.model_files`.

Each version of an outcome is a folder of ``models/<outcome>/`` holding ``model.skops``, ``model.sha256``,
``card.json``, ``card.md``, ``features.json`` and ``integrity.json`` (the SHA-256 and size of the four others); the
champion is named by ``champion.json``. A version is written into a hidden folder, loaded back, and only then
renamed into place, so a killed run leaves no half-written version. A stored version that is not the champion
is never loaded unless asked for by name: a version saved by a run that was then killed is harmless. Within a
run (the workspace lock held, :mod:`workspace.transaction`) a new champion pointer is staged and takes effect
when the run commits, all outcomes together: a run killed or failed after promoting leaves every champion as it
was. On every load every file is checked against ``integrity.json`` before a byte is deserialised or any JSON
trusted (the calibration band the case planner prints lives in ``card.json``), and skops rebuilds only the types
of :func:`trusted_types`. The manifest guards against corruption and edits, not against someone who can rewrite
it too.
"""

from __future__ import annotations

import copy
import functools
import json
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from models.card import sections_markdown
from workspace import model_files
from workspace.manifest import code_version, utc_now
from workspace.model_files import (CARD_JSON, CARD_MD, CHAMPION_FILE, FEATURES_FILE, INTEGRITY_FILE,  # noqa: F401
                                   MODEL_FILE, MODELS_DIR, REPLICATES_FILE, REQUIRED_FILES,  # the store's names,
                                   SHA_FILE,  # kept public
                                   VersionFiles)

# Every type our pipelines contain beyond what skops always trusts (builtins, containers, numpy arrays,
# numpy scalars, bit generators). Listed explicitly even where skops also trusts it by default, so this
# list alone says what a stored model may contain. To extend it:
#   - a class of our own (e.g. models.calibration.RecalibratedClassifier): pass its name through
#     ``extra_trusted=`` at save and load (models.training.TRUSTED_OURS);
#   - a new scikit-learn component in models.learners: find its names with
#     ``skops.io.get_untrusted_types(data=skops.io.dumps(fitted_model))``, review them, add them here.
# Never trusted=True, never pickle.
BASE_TRUSTED_TYPES: tuple[str, ...] = (
    # estimators and transformers
    "sklearn.pipeline.Pipeline",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.preprocessing._polynomial.SplineTransformer",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.preprocessing._encoders.OrdinalEncoder",
    "sklearn.preprocessing._function_transformer.FunctionTransformer",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.impute._base.MissingIndicator",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._voting.VotingClassifier",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn.utils._bunch.Bunch",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.isotonic.IsotonicRegression",
    # scikit-learn internals of the above
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    # node indices used without bounds checks: trusted because we wrote the file and its SHA-256 matches
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    # functions and helper types (HistGradientBoosting keeps partial(check_array, ...); the partial's
    # function is audited on its own)
    "functools.partial",
    "sklearn.utils.validation.check_array",
    "scipy.interpolate._bsplines.BSpline",
    "numpy.dtype",
)


class ModelStoreError(Exception):
    """A model cannot be stored, found or loaded; the message says which and why."""


class ModelIntegrityError(ModelStoreError):
    """A stored model's files are missing, inconsistent, or do not match its integrity manifest."""


class UntrustedTypeError(ModelStoreError):
    """A model contains a type outside :func:`trusted_types`."""


class FeatureMismatchError(ModelStoreError):
    """Records do not carry the features a model needs."""


@dataclass(frozen=True)
class ModelCard:
    """What a model is for, what it was trained on, how it was built and validated, and its limits."""

    outcome: str
    version: str
    created_at: str
    code_version: str
    intended_use: str
    outcome_definition: str
    unit_of_analysis: str
    training_data: dict
    features: list[str]
    learner: str
    calibration: str
    selection: str
    metrics: dict
    limitations: list[str]
    tripod_ai: dict[str, str]
    seed: int
    sections: list = field(default_factory=list)  # TRIPOD+AI sections (models.card); absent from older cards

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ModelCard:
        """Rebuild a card from :meth:`to_dict` output (as read from ``card.json``).

        Raises
        ------
        ModelStoreError
            Fields are missing or unknown.
        """
        names = [f.name for f in fields(cls)]
        optional = {f.name for f in fields(cls) if f.default_factory is not MISSING}
        missing = [n for n in names if n not in data and n not in optional]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ModelStoreError(f"not a model card: missing fields {missing or 'none'}, "
                                  f"unknown fields {unknown or 'none'}")
        return cls(**{n: data[n] for n in names if n in data})

    def to_markdown(self) -> str:
        """The model card for people: intended use, outcome, data, features, model, validation, limits, TRIPOD+AI."""
        lines = [f"# Model card: {self.outcome} {self.version}", "",
                 f"Created {self.created_at} by cementrisk {self.code_version}; seed {self.seed}.", "",
                 "## Intended use", "", self.intended_use, "",
                 "## Outcome", "", f"- Definition: {self.outcome_definition}",
                 f"- Unit of analysis: {self.unit_of_analysis}", "",
                 "## Training data", "", *_table(("item", "value"), _flatten(self.training_data)), "",
                 "## Features", "", *[f"- `{name}`" for name in self.features], "",
                 "## Model", "", f"- Learner: {self.learner}", f"- Calibration: {self.calibration}",
                 f"- Selection: {self.selection}", "",
                 "## Validated performance", "", *_table(("metric", "value"), _flatten(self.metrics)), "",
                 *(sections_markdown(self.sections) if self.sections else
                   ["## Limitations", "", *[f"- {item}" for item in self.limitations], ""]),
                 "## TRIPOD+AI", "",
                 "Where each reporting item of TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) is covered.", "",
                 *_table(("item", "where / how"), list(self.tripod_ai.items())), ""]
        return "\n".join(lines)


@dataclass(frozen=True)
class StoredModel:
    """A model as stored: the rebuilt estimator, its card, its ordered input features and its folder."""

    outcome: str
    version: str
    estimator: object
    card: ModelCard
    features: list[dict]
    path: Path

    @property
    def feature_names(self) -> list[str]:
        return [str(f["name"]) for f in self.features]


def default_tripod_ai_items() -> dict[str, str]:
    """The TRIPOD+AI items a stored model's card answers, and where; callers may amend the copy they get.

    References
    ----------
    Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement: updated guidance for reporting clinical
    prediction models that use regression or machine learning methods. BMJ 2024;385:e078378.
    """
    return {
        "1 Title": "n/a: a model card, not a manuscript; the heading names outcome and model version",
        "2 Abstract": "n/a",
        "3b Target population and intended users": "card: Intended use",
        "5a Source of data": "de-identified quality-improvement registry in the records contract; card: Training data",
        "5b Dates of data": "card: Training data (procedure years and extract batches)",
        "6a Setting and centres": "card: Training data (number of sites)",
        "6b Eligibility": "card: Outcome (eligible rows)",
        "8a Outcome definition": "card: Outcome",
        "9 Predictors": "card: Features; definitions, units and missing-value handling in docs/features.md",
        "10 Sample size": "card: Training data (rows, events, procedures); Riley's minimum sample size for "
                          "rare outcomes in the run's metrics.json",
        "11 Missing data": "docs/features.md: per feature, imputed with a missing-indicator or handled natively",
        "12c Model type, building, internal validation": "card: Model (learner, selection); cross-validation "
                                                         "grouped by procedure, optimism-corrected metrics",
        "12e Performance measures": "card: Validated performance (discrimination, calibration, overall)",
        "12f Calibration and recalibration": "card: Model (calibration)",
        "13 Class imbalance": "no resampling or class weights: predicted risks stay on the natural scale",
        "14 Fairness": "subgroup calibration and discrimination in the run's metrics.json and report; "
                       "cells under 11 suppressed",
        "15 Model output": "a calibrated risk (probability) per unit of analysis; no decision threshold applied",
        "18f Code availability": "card: code version",
        "21 Model development (participants, events)": "card: Training data",
        "22 Model specification": "model.skops (the full fitted pipeline) and features.json",
        "23a Model performance with confidence intervals": "card: Validated performance",
        "23b Heterogeneity across clusters and subgroups": "the run's metrics.json (subgroups)",
        "24 Model updating": "retrained as new batches arrive; promoted only through the gate, each decision "
                             "kept in champion.json",
        "26 Limitations": "card: Limitations",
        "27 Usability in current care": "card: Intended use; scoring refuses records without the model's features",
    }


def trusted_types(extra_trusted: Sequence[str] = ()) -> list[str]:
    """The allow-list given to ``skops.io.loads(..., trusted=...)``: :data:`BASE_TRUSTED_TYPES` and ``extra_trusted``.

    Parameters
    ----------
    extra_trusted
        Fully qualified names of further types to trust (the caller's own classes), e.g.
        ``["models.calibration.RecalibratedClassifier"]``.

    Raises
    ------
    TypeError
        ``extra_trusted`` is a single string or holds something other than dotted names.
    """
    if isinstance(extra_trusted, str):
        raise TypeError(f"extra_trusted must be a list of type names, not the single string {extra_trusted!r}")
    bad = [name for name in extra_trusted if not isinstance(name, str) or "." not in name]
    if bad:
        raise TypeError(f"extra_trusted must hold fully qualified type names such as 'package.module.Class'; "
                        f"got {bad!r}")
    names = [*BASE_TRUSTED_TYPES, *_scipy_bspline_asarray(), *extra_trusted]
    return list(dict.fromkeys(names))


def save_model(workspace: Path, *, outcome: str, estimator: object, card: ModelCard,
               features: Sequence[Mapping[str, str]], extra_trusted: Sequence[str] = ()) -> StoredModel:
    """Store a fitted estimator as the next version of ``outcome`` and return it as loaded back.

    The card's ``version`` is set to the version assigned; an empty ``created_at`` or ``code_version`` is
    filled in. The files are written to a hidden folder (``integrity.json`` last), loaded back with the trusted
    list, and the folder is then renamed into place (:func:`workspace.model_files.save_version`).

    Parameters
    ----------
    workspace
        The workspace folder.
    outcome
        Outcome name (lower case letters, digits, ``_`` and ``-``); must equal ``card.outcome``.
    estimator
        A fitted estimator.
    card
        Its model card; ``card.features`` must list the names of ``features`` in the same order.
    features
        Ordered input features, each a mapping with at least ``"name"`` (e.g. ``{"name": ..., "kind": ...}``).
    extra_trusted
        Further type names to trust (see :func:`trusted_types`).

    Raises
    ------
    ModelStoreError
        The arguments disagree, or the estimator cannot be serialised or rebuilt.
    UntrustedTypeError
        The estimator contains a type outside the trusted list (named in the message).
    """
    if card.outcome not in ("", outcome):
        raise ModelStoreError(f"the card is for outcome {card.outcome!r}, not {outcome!r}")
    feature_list = _check_feature_list(features, card, estimator)
    trusted = trusted_types(extra_trusted)
    # the bootstrap replicates (20 refits, many times the model's size) go to a file of their own, which only
    # the planner reads: scoring loads the model alone
    replicates = getattr(estimator, "replicates", None)
    alone = copy.copy(estimator)
    if replicates:
        alone.replicates = None
    try:
        data = sio.dumps(alone, compression=zipfile.ZIP_DEFLATED)
        replicate_data = sio.dumps(list(replicates), compression=zipfile.ZIP_DEFLATED) if replicates else None
    except (TypeError, ValueError) as error:
        raise ModelStoreError(f"model {outcome} cannot be saved in the skops format: {error}") from error
    _refuse_untrusted(data, trusted, what=f"the new model of {outcome}")
    if replicate_data is not None:
        _refuse_untrusted(replicate_data, trusted, what=f"the replicates of the new model of {outcome}")
    card = replace(card, outcome=outcome, created_at=card.created_at or utc_now(),
                   code_version=card.code_version or code_version())

    def card_for(version: str) -> tuple[dict, str]:
        versioned = replace(card, version=version)
        return _json_ready(versioned.to_dict(), "the model card"), versioned.to_markdown()

    with _file_errors():
        folder, stored = model_files.save_version(
            workspace, outcome=outcome, model=data, features=_json_ready(feature_list, "features"),
            card_for=card_for, check=lambda files: _rebuild(files, trusted=trusted), replicates=replicate_data)
    return replace(stored, path=folder)


def load_model(workspace: Path, *, outcome: str, version: str | None = None,
               extra_trusted: Sequence[str] = (), replicates: bool = False) -> StoredModel:
    """Load a stored model, the champion when ``version`` is None, checking every file of the version against its
    integrity manifest before a byte is deserialised or any JSON trusted.

    With ``replicates`` the model's bootstrap refits (the planner's prediction intervals) are read too and put back
    in ``estimator.replicates``; without, a model stored with its replicates in a file of their own loads without
    them (scoring needs none, and they are most of the load's cost).

    Raises
    ------
    ModelStoreError
        No such version, or no champion.
    ModelIntegrityError
        The version has no ``integrity.json`` (it predates the manifest), a file is missing, a file differs from its
        manifest entry (the model, the card with its calibration band, the card for people, the feature list; the
        message names the file and says to retrain), or card and folder disagree.
    UntrustedTypeError
        The file contains a type outside :func:`trusted_types` (named in the message).
    """
    from_pointer = version is None
    if version is None:
        version = champion(workspace, outcome)
        if version is None:
            raise ModelStoreError(f"no champion model for {outcome} in {_outcome_folder(workspace, outcome)}; "
                                  f"stored versions: {', '.join(list_versions(workspace, outcome)) or 'none'}")
    with _file_errors():
        if not model_files.has_version(workspace, outcome=outcome, version=version):
            folder = model_files.outcome_folder(workspace, outcome)
            if from_pointer:
                raise ModelIntegrityError(f"{folder / CHAMPION_FILE} points to {version}, which is not stored")
            raise ModelStoreError(f"no version {version} of model {outcome} in {folder}; stored versions: "
                                  f"{', '.join(list_versions(workspace, outcome)) or 'none'}")
        files = model_files.read_version(workspace, outcome=outcome, version=version, replicates=replicates)
    return _rebuild(files, trusted=trusted_types(extra_trusted))


def list_versions(workspace: Path, outcome: str) -> list[str]:
    """Stored versions of ``outcome``, oldest first (``[]`` when there are none)."""
    with _file_errors():
        return model_files.list_versions(workspace, outcome)


def champion(workspace: Path, outcome: str) -> str | None:
    """The champion version of ``outcome``, or None when none has been set.

    Raises
    ------
    ModelStoreError
        ``champion.json`` exists but cannot be read.
    """
    with _file_errors():
        pointer = model_files.read_champion(workspace, outcome)
    return None if pointer is None else str(pointer["version"])


def set_champion(workspace: Path, *, outcome: str, version: str, decision: Mapping[str, object]) -> None:
    """Point ``champion.json`` at a stored version, atomically, keeping the earlier pointers in ``history``.

    Within a run (this process holds the workspace lock) the new pointer is staged: the run sees it at once,
    everyone else when the run commits (:mod:`workspace.transaction`).

    Parameters
    ----------
    decision
        Why (the gate's decision); JSON-serialisable.

    Raises
    ------
    ModelStoreError
        The version is not stored, or ``decision`` is not JSON-serialisable.
    """
    with _file_errors():
        model_files.check_version_name(version)
        stored = model_files.list_versions(workspace, outcome)
        if version not in stored:
            raise ModelStoreError(f"cannot make {version} the champion of {outcome}: not stored in "
                                  f"{model_files.outcome_folder(workspace, outcome)}; stored versions: "
                                  f"{', '.join(stored) or 'none'}")
        previous = model_files.read_champion(workspace, outcome)
        history = [] if previous is None else [*previous.get("history", []),
                                               {k: v for k, v in previous.items() if k != "history"}]
        pointer = {"version": version, "since": utc_now(), "decision": dict(decision), "history": history}
        model_files.write_champion(workspace, outcome=outcome,
                                   pointer=_json_ready(pointer, "the champion decision"))


def check_features(stored: StoredModel, columns: Iterable[str]) -> None:
    """Refuse records that lack any of the model's input features (extra columns are fine).

    Raises
    ------
    FeatureMismatchError
        Naming every missing feature.
    """
    present = set(columns)
    missing = [name for name in stored.feature_names if name not in present]
    if missing:
        raise FeatureMismatchError(f"model {stored.outcome} {stored.version} needs features absent from the "
                                   f"records: {', '.join(missing)}")


# --- private steps -------------------------------------------------------------------------------------

@contextmanager
def _file_errors() -> Iterator[None]:
    """The file layer's errors as the store's: an integrity failure as :class:`ModelIntegrityError`, any other as
    :class:`ModelStoreError`, with the same message."""
    try:
        yield
    except model_files.ModelFilesIntegrityError as error:
        raise ModelIntegrityError(str(error)) from error
    except model_files.ModelFilesError as error:
        raise ModelStoreError(str(error)) from error


def _outcome_folder(workspace: Path, outcome: str) -> Path:
    with _file_errors():
        return model_files.outcome_folder(workspace, outcome)


def _check_feature_list(features: Sequence[Mapping[str, str]], card: ModelCard,
                        estimator: object) -> list[dict]:
    feature_list = [dict(f) for f in features]
    unnamed = [i for i, f in enumerate(feature_list) if not isinstance(f.get("name"), str) or not f["name"]]
    if not feature_list or unnamed:
        raise ModelStoreError(f"features must be a non-empty list of mappings with a 'name'; "
                              f"entries without one: {unnamed}")
    names = [f["name"] for f in feature_list]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ModelStoreError(f"feature names must be unique; repeated: {', '.join(duplicated)}")
    if list(card.features) != names:
        raise ModelStoreError(f"card.features must list the features in order; card: {list(card.features)}, "
                              f"features: {names}")
    fitted_on = getattr(estimator, "feature_names_in_", None)
    if fitted_on is not None and list(fitted_on) != names:
        raise ModelStoreError(f"the estimator was fitted on columns {list(fitted_on)}, not the features "
                              f"given {names}")
    return feature_list


def _refuse_untrusted(data: bytes, trusted: list[str], *, what: str) -> None:
    try:
        found = sio.get_untrusted_types(data=data)
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ModelIntegrityError(f"{what} is not a readable skops file: {error}") from error
    untrusted = sorted(set(found) - set(trusted))
    if untrusted:
        raise UntrustedTypeError(
            f"{what} contains types outside the trusted list: {', '.join(untrusted)}. Review them; trust a class "
            "of ours with extra_trusted=[...], a scikit-learn component by adding it to "
            "models.store.BASE_TRUSTED_TYPES")


def _rebuild(files: VersionFiles, *, trusted: list[str]) -> StoredModel:
    """The model of a version whose files matched their integrity manifest: card and feature list checked against
    the folder, then the estimator rebuilt from the trusted types only."""
    label = f"model {files.outcome} {files.version}"
    try:
        card = ModelCard.from_dict(files.card if isinstance(files.card, dict) else {})
    except ModelStoreError as error:
        raise ModelIntegrityError(f"{files.shown_file(CARD_JSON)}: {error}") from error
    if (card.outcome, card.version) != (files.outcome, files.version):
        raise ModelIntegrityError(f"{files.shown_file(CARD_JSON)} describes {card.outcome} {card.version}, "
                                  f"not {label}")
    features = files.features
    if (not isinstance(features, list) or not all(isinstance(f, dict) for f in features)
            or [f.get("name") for f in features] != list(card.features)):
        raise ModelIntegrityError(f"{files.shown_file(FEATURES_FILE)} does not list the card's features of {label}")
    estimator = _trusted_loads(files.model, trusted, label=label, shown=files.shown_file(MODEL_FILE))
    if files.replicates is not None:
        what = f"the replicates of {label}"
        replicates = _trusted_loads(files.replicates, trusted, label=what, shown=files.shown_file(REPLICATES_FILE))
        if not isinstance(replicates, list):
            raise ModelIntegrityError(f"{what} ({files.shown_file(REPLICATES_FILE)}) is not a list of refits")
        estimator.replicates = tuple(replicates)
    return StoredModel(outcome=files.outcome, version=files.version, estimator=estimator, card=card,
                       features=features, path=files.folder)


def _trusted_loads(data: bytes, trusted: list[str], *, label: str, shown: str) -> object:
    """A skops file rebuilt from the trusted types only (the model's, or its replicates')."""
    _refuse_untrusted(data, trusted, what=f"{label} ({shown})")
    try:
        return sio.loads(data, trusted=trusted)
    except UntrustedTypesFoundException as error:
        raise UntrustedTypeError(f"{label}: {error}") from error
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise ModelStoreError(f"{label} cannot be rebuilt with this code: {type(error).__name__}: {error}") from error


def _json_ready(value: object, what: str) -> object:
    """``value`` with numpy scalars and arrays as plain numbers and lists: what the file layer writes as JSON."""
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as error:
        raise ModelStoreError(f"{what} is not JSON-serialisable: {error}") from error


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


@functools.cache
def _scipy_bspline_asarray() -> tuple[str, ...]:
    """scipy attaches its array-namespace ``asarray`` to every BSpline (SplineTransformer keeps BSplines);
    the function's module is private to scipy and moves between releases, so its name is read from the
    installed scipy rather than written here."""
    from scipy.interpolate import BSpline

    function = getattr(BSpline(np.arange(8.0), np.zeros(4), 3), "_asarray", None)
    return () if function is None else (f"{function.__module__}.{function.__name__}",)


def _flatten(values: Mapping[str, object], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and "estimate" in value:
            rows.append((name, _with_interval(value)))
        elif isinstance(value, Mapping):
            rows.extend(_flatten(value, prefix=f"{name} / "))
        else:
            rows.append((name, value if isinstance(value, str) else json.dumps(value, default=_json_default)))
    return rows


def _with_interval(value: Mapping[str, object]) -> str:
    low = next((value[k] for k in ("low", "ci_low", "lower") if k in value), None)
    high = next((value[k] for k in ("high", "ci_high", "upper") if k in value), None)
    text = str(value["estimate"])
    return text if low is None or high is None else f"{text} ({low} to {high})"


def _table(header: tuple[str, str], rows: Sequence[tuple[str, str]]) -> list[str]:
    def cell(text: object) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    return [f"| {header[0]} | {header[1]} |", "|---|---|", *[f"| {cell(a)} | {cell(b)} |" for a, b in rows]]
