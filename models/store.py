"""The model store of a workspace: versioned, checksummed skops files with their model cards and feature lists.

Layout, one folder per outcome and version, never rewritten once in place::

    <workspace>/models/<outcome>/v0001/model.skops      the fitted estimator (skops format, never pickle)
                                      /model.sha256     its SHA-256 (``sha256sum -c model.sha256`` checks it)
                                      /card.json        the model card, machine-readable
                                      /card.md          the model card for people
                                      /features.json    ordered input features as the caller described them
    <workspace>/models/<outcome>/champion.json          {"version", "since", "decision", "history"}

A version is written into a hidden temporary folder, loaded back, and only then renamed into place, so a
killed run leaves no half-written version (the next run that saves a version of the outcome while holding the
workspace lock removes such leftovers). A stored version that is not the champion is never loaded unless asked
for by name: a version saved by a run that was then killed is harmless. ``champion.json`` is replaced whole
(write, fsync, rename); within a run (the workspace lock held, :mod:`workspace.transaction`) it is staged and takes
effect when the run commits, all outcomes together: a run killed or failed after promoting leaves every
champion as it was. The SHA-256 is checked before a byte is deserialised, and
skops rebuilds only the types of :func:`trusted_types`. The checksum guards against corruption and
accidental edits, not against someone who can rewrite both files.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import skops.io as sio
from skops.io.exceptions import UntrustedTypesFoundException

from workspace import transaction as lock
from workspace.manifest import code_version, utc_now

MODELS_DIR = "models"
MODEL_FILE = "model.skops"
SHA_FILE = "model.sha256"
CARD_JSON = "card.json"
CARD_MD = "card.md"
FEATURES_FILE = "features.json"
CHAMPION_FILE = "champion.json"
REQUIRED_FILES = (MODEL_FILE, SHA_FILE, CARD_JSON, FEATURES_FILE)

_OUTCOME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_VERSION = re.compile(r"^v(\d{4,})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RENAME_ATTEMPTS = 5
_STAGING_PREFIX = ".incomplete-"

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
    """A stored model's files are missing, inconsistent, or fail their SHA-256."""


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
        missing = [n for n in names if n not in data]
        unknown = sorted(set(data) - set(names))
        if missing or unknown:
            raise ModelStoreError(f"not a model card: missing fields {missing or 'none'}, "
                                  f"unknown fields {unknown or 'none'}")
        return cls(**{n: data[n] for n in names})

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
                 "## Limitations", "", *[f"- {item}" for item in self.limitations], "",
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
    filled in. The files are written to a hidden folder, loaded back with the trusted list, and the
    folder is then renamed into place.

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
    outcome_dir = _outcome_dir(workspace, outcome)
    if card.outcome not in ("", outcome):
        raise ModelStoreError(f"the card is for outcome {card.outcome!r}, not {outcome!r}")
    feature_list = _check_feature_list(features, card, estimator)
    trusted = trusted_types(extra_trusted)
    try:
        data = sio.dumps(estimator)
    except (TypeError, ValueError) as error:
        raise ModelStoreError(f"model {outcome} cannot be saved in the skops format: {error}") from error
    _refuse_untrusted(data, trusted, what=f"the new model of {outcome}")
    card = replace(card, outcome=outcome, created_at=card.created_at or utc_now(),
                   code_version=card.code_version or code_version())
    outcome_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(workspace, outcome_dir)
    staging = outcome_dir / f"{_STAGING_PREFIX}{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        _write_bytes(staging / MODEL_FILE, data)
        _write_bytes(staging / SHA_FILE, f"{hashlib.sha256(data).hexdigest()}  {MODEL_FILE}\n".encode())
        _write_bytes(staging / FEATURES_FILE, _to_json(feature_list, "features").encode())
        for _ in range(_RENAME_ATTEMPTS):
            version = _next_version(outcome_dir)
            versioned = replace(card, version=version)
            _write_bytes(staging / CARD_JSON, _to_json(versioned.to_dict(), "the model card").encode())
            _write_bytes(staging / CARD_MD, versioned.to_markdown().encode())
            stored = _read_version(staging, outcome=outcome, version=version, trusted=trusted)
            try:
                os.rename(staging, outcome_dir / version)
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # another run took this version meanwhile: take the next
                raise
            return replace(stored, path=outcome_dir / version)
        raise ModelStoreError(f"could not claim a new version of {outcome} in {outcome_dir} after "
                              f"{_RENAME_ATTEMPTS} attempts: other runs keep saving concurrently")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_model(workspace: Path, *, outcome: str, version: str | None = None,
               extra_trusted: Sequence[str] = ()) -> StoredModel:
    """Load a stored model, the champion when ``version`` is None, checking its SHA-256 before deserialising.

    Raises
    ------
    ModelStoreError
        No such version, or no champion.
    ModelIntegrityError
        A file is missing, the model file does not match its SHA-256, or card and folder disagree.
    UntrustedTypeError
        The file contains a type outside :func:`trusted_types` (named in the message).
    """
    outcome_dir = _outcome_dir(workspace, outcome)
    from_pointer = version is None
    if version is None:
        version = champion(workspace, outcome)
        if version is None:
            raise ModelStoreError(f"no champion model for {outcome} in {outcome_dir}; stored versions: "
                                  f"{', '.join(list_versions(workspace, outcome)) or 'none'}")
    _check_version_name(version)
    if not (outcome_dir / version).is_dir():
        if from_pointer:
            raise ModelIntegrityError(f"{outcome_dir / CHAMPION_FILE} points to {version}, which is not stored")
        raise ModelStoreError(f"no version {version} of model {outcome} in {outcome_dir}; stored versions: "
                              f"{', '.join(list_versions(workspace, outcome)) or 'none'}")
    return _read_version(outcome_dir / version, outcome=outcome, version=version,
                         trusted=trusted_types(extra_trusted))


def list_versions(workspace: Path, outcome: str) -> list[str]:
    """Stored versions of ``outcome``, oldest first (``[]`` when there are none)."""
    outcome_dir = _outcome_dir(workspace, outcome)
    if not outcome_dir.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in outcome_dir.iterdir()
             if p.is_dir() and (m := _VERSION.match(p.name))]
    return [name for _, name in sorted(found)]


def champion(workspace: Path, outcome: str) -> str | None:
    """The champion version of ``outcome``, or None when none has been set.

    Raises
    ------
    ModelStoreError
        ``champion.json`` exists but cannot be read.
    """
    pointer = _read_champion(workspace, outcome)
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
    outcome_dir = _outcome_dir(workspace, outcome)
    _check_version_name(version)
    if version not in list_versions(workspace, outcome):
        raise ModelStoreError(f"cannot make {version} the champion of {outcome}: not stored in {outcome_dir}; "
                              f"stored versions: {', '.join(list_versions(workspace, outcome)) or 'none'}")
    previous = _read_champion(workspace, outcome)
    history = [] if previous is None else [*previous.get("history", []),
                                           {k: v for k, v in previous.items() if k != "history"}]
    pointer = {"version": version, "since": utc_now(), "decision": dict(decision), "history": history}
    text = _to_json(pointer, "the champion decision")
    lock.write_file(workspace, outcome_dir / CHAMPION_FILE, text.encode())


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

def _outcome_dir(workspace: Path, outcome: str) -> Path:
    if not isinstance(outcome, str) or not _OUTCOME.match(outcome):
        raise ModelStoreError(f"outcome must be lower case letters, digits, '_' or '-'; got {outcome!r}")
    return Path(workspace) / MODELS_DIR / outcome


def _check_version_name(version: str) -> None:
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ModelStoreError(f"a version is 'v' and at least 4 digits, such as 'v0001'; got {version!r}")


def _next_version(outcome_dir: Path) -> str:
    numbers = [int(m.group(1)) for p in outcome_dir.iterdir() if (m := _VERSION.match(p.name))]
    return f"v{max(numbers, default=0) + 1:04d}"


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


def _read_version(folder: Path, *, outcome: str, version: str, trusted: list[str]) -> StoredModel:
    label = f"model {outcome} {version}"
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelIntegrityError(f"{label} is incomplete: {', '.join(missing)} missing from {folder}; "
                                  "refusing to load")
    data = (folder / MODEL_FILE).read_bytes()
    recorded = (folder / SHA_FILE).read_bytes().decode("ascii", errors="replace").split()
    expected = recorded[0].lower() if recorded else ""
    if not _SHA256.match(expected):
        raise ModelIntegrityError(f"{folder / SHA_FILE} holds no SHA-256 hex digest; refusing to load {label}")
    if hashlib.sha256(data).hexdigest() != expected:
        raise ModelIntegrityError(f"model file {folder / MODEL_FILE} does not match its SHA-256; refusing to load")
    card_data = _read_json(folder / CARD_JSON, label)
    try:
        card = ModelCard.from_dict(card_data if isinstance(card_data, dict) else {})
    except ModelStoreError as error:
        raise ModelIntegrityError(f"{folder / CARD_JSON}: {error}") from error
    if (card.outcome, card.version) != (outcome, version):
        raise ModelIntegrityError(f"{folder / CARD_JSON} describes {card.outcome} {card.version}, not {label}")
    features = _read_json(folder / FEATURES_FILE, label)
    if (not isinstance(features, list) or not all(isinstance(f, dict) for f in features)
            or [f.get("name") for f in features] != list(card.features)):
        raise ModelIntegrityError(f"{folder / FEATURES_FILE} does not list the card's features of {label}")
    _refuse_untrusted(data, trusted, what=f"{label} ({folder / MODEL_FILE})")
    try:
        estimator = sio.loads(data, trusted=trusted)
    except UntrustedTypesFoundException as error:
        raise UntrustedTypeError(f"{label}: {error}") from error
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise ModelStoreError(f"{label} cannot be rebuilt with this code: {type(error).__name__}: {error}") from error
    return StoredModel(outcome=outcome, version=version, estimator=estimator, card=card, features=features,
                       path=folder)


def _read_champion(workspace: Path, outcome: str) -> dict | None:
    """The champion pointer as this process sees it (a run's own staged pointer; else the committed one)."""
    path = _outcome_dir(workspace, outcome) / CHAMPION_FILE
    try:
        data = lock.read_bytes(workspace, path)
    except OSError as error:
        raise ModelIntegrityError(f"{path} of the champion pointer cannot be read: {error}") from error
    if data is None:
        return None
    try:
        pointer = json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise ModelIntegrityError(f"{path} of the champion pointer cannot be read: {error}") from error
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise ModelStoreError(f"{path} names no champion version")
    return pointer


def _remove_leftovers(workspace: Path, outcome_dir: Path) -> None:
    """Half-written versions of killed runs: removed only while this process holds the workspace lock (no other
    run can be writing one then)."""
    if lock.held_run(workspace) is None:
        return
    for path in outcome_dir.iterdir():
        if path.name.startswith(_STAGING_PREFIX) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(f".{CHAMPION_FILE}.") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelIntegrityError(f"{path} of {what} cannot be read: {error}") from error


def _to_json(value: object, what: str) -> str:
    try:
        return json.dumps(value, indent=2, default=_json_default) + "\n"
    except (TypeError, ValueError) as error:
        raise ModelStoreError(f"{what} is not JSON-serialisable: {error}") from error


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


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
