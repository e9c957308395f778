"""The model store: round trips, versions, the champion pointer, integrity, trusted types, features, the card."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, SplineTransformer, StandardScaler

from models import store
from models.store import (FeatureMismatchError, ModelCard, ModelIntegrityError, ModelStoreError,
                          UntrustedTypeError)
from workspace import model_files

FEATURES = [{"name": "cement_volume_ml", "kind": "numeric"}, {"name": "age_years", "kind": "numeric"},
            {"name": "cement_viscosity", "kind": "categorical"}]
NAMES = [f["name"] for f in FEATURES]


class UnreviewedClassifier(ClassifierMixin, BaseEstimator):
    """A class no trusted list names."""

    def __init__(self, estimator: object = None) -> None:
        self.estimator = estimator

    def fit(self, X, y):  # noqa: N803
        self.estimator.fit(X, y)
        self.classes_ = self.estimator.classes_
        return self

    def predict_proba(self, X):  # noqa: N803
        return self.estimator.predict_proba(X)


UNREVIEWED = f"{UnreviewedClassifier.__module__}.{UnreviewedClassifier.__name__}"


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 240
    frame = pd.DataFrame({"cement_volume_ml": rng.uniform(1, 8, n), "age_years": rng.normal(75, 8, n),
                          "cement_viscosity": rng.choice(["low", "medium", "high"], n).astype(object)})
    frame.loc[::13, "cement_volume_ml"] = np.nan
    risk = 1 / (1 + np.exp(-(np.nan_to_num(frame["cement_volume_ml"], nan=4.0) - 4.5)))
    return frame, (rng.random(n) < risk).astype(int)


def spline_logistic() -> Pipeline:
    design = ColumnTransformer([
        ("spline", Pipeline([("impute", SimpleImputer(strategy="median")),
                             ("basis", SplineTransformer(n_knots=4, knots="quantile"))]), NAMES[:2]),
        ("category", OneHotEncoder(handle_unknown="ignore", sparse_output=False), NAMES[2:]),
    ])
    return Pipeline([("design", design), ("scale", StandardScaler()), ("model", LogisticRegression())])


def boosting() -> Pipeline:
    design = ColumnTransformer([
        ("category", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), NAMES[2:]),
        ("rest", "passthrough", NAMES[:2]),
    ])
    model = HistGradientBoostingClassifier(max_iter=20, min_samples_leaf=10, categorical_features=[0],
                                           random_state=0)
    return Pipeline([("design", design), ("model", model)])


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, object]:
    X, y = data  # noqa: N806
    return {"spline_logistic": spline_logistic().fit(X, y), "boosting": boosting().fit(X, y),
            "calibrated_boosting": CalibratedClassifierCV(boosting(), method="sigmoid", cv=3).fit(X, y),
            "isotonic_spline": CalibratedClassifierCV(spline_logistic(), method="isotonic", cv=3).fit(X, y)}


def make_card(outcome: str = "leakage_any") -> ModelCard:
    return ModelCard(
        outcome=outcome, version="", created_at="", code_version="0.1.0+test",
        intended_use="Case-mix adjusted expected risk for QI comparison.",
        outcome_definition="any cement outside the vertebral body",
        unit_of_analysis="level",
        training_data={"procedure_year_min": 2019, "procedure_year_max": 2024, "extract_batch_min": 1,
                       "extract_batch_max": 6, "rows": 240, "events": 97, "procedures": 180, "sites": 3},
        features=list(NAMES), learner="spline_logistic", calibration="logistic recalibration",
        selection="lowest cross-validated log loss",
        metrics={"auroc": {"estimate": 0.74, "low": 0.69, "high": 0.79}, "calibration_slope":
                 {"estimate": 0.97, "low": 0.81, "high": 1.12}, "n_boot": np.int64(200)},
        limitations=["Internal validation only.", "Site is not a predictor."],
        tripod_ai=store.default_tripod_ai_items(), seed=20261125)


def save(workspace: Path, estimator: object, **kwargs) -> store.StoredModel:
    kwargs.setdefault("outcome", "leakage_any")
    return store.save_model(workspace, estimator=estimator, card=make_card(kwargs["outcome"]),
                            features=FEATURES, **kwargs)


@pytest.mark.parametrize("name", ["spline_logistic", "boosting", "calibrated_boosting", "isotonic_spline"])
def test_round_trip_gives_identical_predicted_risks(tmp_path, data, fitted, name):
    X, _ = data  # noqa: N806
    saved = save(tmp_path, fitted[name])
    loaded = store.load_model(tmp_path, outcome="leakage_any", version=saved.version)
    expected = fitted[name].predict_proba(X)
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X), expected)
    np.testing.assert_array_equal(saved.estimator.predict_proba(X), expected)
    assert loaded.features == FEATURES and loaded.path == tmp_path / "models" / "leakage_any" / saved.version


def test_files_are_laid_out_and_checksummed(tmp_path, fitted):
    saved = save(tmp_path, fitted["spline_logistic"])
    folder = tmp_path / "models" / "leakage_any" / "v0001"
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "card.md", "features.json", "integrity.json",
                                                        "model.sha256", "model.skops"]
    digest = (folder / "model.sha256").read_text().split()[0]
    assert digest == hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()
    manifest = json.loads((folder / "integrity.json").read_text())
    assert (manifest["outcome"], manifest["version"]) == ("leakage_any", "v0001")
    for name in ("model.skops", "card.json", "card.md", "features.json"):
        content = (folder / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(content).hexdigest(), "bytes": len(content)}
    assert sorted(manifest["files"]) == ["card.json", "card.md", "features.json", "model.skops"]
    assert json.loads((folder / "features.json").read_text()) == FEATURES
    assert saved.card.version == "v0001" and saved.card.created_at  # filled in by the store
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_versions_increment_and_are_listed_in_order(tmp_path, fitted):
    assert store.list_versions(tmp_path, "leakage_any") == []
    versions = [save(tmp_path, fitted["spline_logistic"]).version for _ in range(3)]
    assert versions == ["v0001", "v0002", "v0003"]
    (tmp_path / "models" / "leakage_any" / "v0010").mkdir()  # numbers, not text, decide the order
    assert store.list_versions(tmp_path, "leakage_any") == ["v0001", "v0002", "v0003", "v0010"]
    assert save(tmp_path, fitted["spline_logistic"]).version == "v0011"
    assert store.list_versions(tmp_path, "leakage_canal") == []


def test_champion_pointer_is_set_read_and_keeps_its_history(tmp_path, fitted):
    save(tmp_path, fitted["spline_logistic"])
    save(tmp_path, fitted["boosting"])
    assert store.champion(tmp_path, "leakage_any") is None
    with pytest.raises(ModelStoreError, match="no champion model for leakage_any"):
        store.load_model(tmp_path, outcome="leakage_any")
    store.set_champion(tmp_path, outcome="leakage_any", version="v0001", decision={"promote": True, "reason": "first"})
    store.set_champion(tmp_path, outcome="leakage_any", version="v0002", decision={"promote": True, "reason": "better"})
    assert store.champion(tmp_path, "leakage_any") == "v0002"
    assert store.load_model(tmp_path, outcome="leakage_any").version == "v0002"
    pointer = json.loads((tmp_path / "models" / "leakage_any" / "champion.json").read_text())
    assert pointer["decision"]["reason"] == "better" and pointer["since"]
    assert [(h["version"], h["decision"]["reason"]) for h in pointer["history"]] == [("v0001", "first")]
    with pytest.raises(ModelStoreError, match="cannot make v0007 the champion of leakage_any: not stored"):
        store.set_champion(tmp_path, outcome="leakage_any", version="v0007", decision={})
    assert store.champion(tmp_path, "leakage_any") == "v0002"


def test_tampered_model_file_is_refused_before_deserialising(tmp_path, fitted, monkeypatch):
    saved = save(tmp_path, fitted["spline_logistic"])
    model_file = saved.path / "model.skops"
    content = bytearray(model_file.read_bytes())
    content[len(content) // 2] ^= 0x01
    model_file.write_bytes(bytes(content))

    def must_not_run(*args, **kwargs):
        pytest.fail("skops deserialised a file whose SHA-256 does not match")

    for name in ("load", "loads", "get_untrusted_types"):
        monkeypatch.setattr(skops.io, name, must_not_run)
    with pytest.raises(ModelIntegrityError, match=r"model file .*model.skops does not match its SHA-256; "
                                                  r"refusing to load"):
        store.load_model(tmp_path, outcome="leakage_any", version=saved.version)


def test_unreadable_checksum_or_dangling_champion_is_refused(tmp_path, fitted):
    saved = save(tmp_path, fitted["spline_logistic"])
    (saved.path / "model.sha256").write_text("not a digest\n")
    with pytest.raises(ModelIntegrityError, match="holds no SHA-256 hex digest; refusing to load"):
        store.load_model(tmp_path, outcome="leakage_any", version="v0001")
    pointer = tmp_path / "models" / "leakage_any" / "champion.json"
    pointer.write_text(json.dumps({"version": "v0009", "since": "", "decision": {}, "history": []}))
    with pytest.raises(ModelIntegrityError, match="champion.json points to v0009, which is not stored"):
        store.load_model(tmp_path, outcome="leakage_any")


def test_a_version_taken_meanwhile_by_another_run_is_not_overwritten(tmp_path, fitted, monkeypatch):
    first = save(tmp_path, fitted["spline_logistic"])
    claims = iter(["v0001", "v0002"])  # a racing run saw no v0001 and then took it
    monkeypatch.setattr(model_files, "_next_version", lambda outcome_dir: next(claims))
    second = save(tmp_path, fitted["boosting"])
    assert (first.version, second.version) == ("v0001", "v0002")
    assert store.load_model(tmp_path, outcome="leakage_any", version="v0001").card.version == "v0001"
    assert json.loads((second.path / "card.json").read_text())["version"] == "v0002"
    assert type(store.load_model(tmp_path, outcome="leakage_any", version="v0002").estimator.steps[-1][1]) \
        is HistGradientBoostingClassifier


@pytest.mark.parametrize("removed", ["model.sha256", "model.skops", "card.json", "card.md", "features.json"])
def test_missing_file_is_refused(tmp_path, fitted, removed):
    saved = save(tmp_path, fitted["spline_logistic"])
    (saved.path / removed).unlink()
    with pytest.raises(ModelIntegrityError, match=f"leakage_any v0001 is incomplete: {removed} missing "
                                                  rf"\(models/leakage_any/v0001/{removed}\).*cementrisk run --retrain"):
        store.load_model(tmp_path, outcome="leakage_any", version="v0001")


def _refuse_deserialising(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(*args, **kwargs):
        pytest.fail("skops read a model whose files do not match their integrity manifest")

    for name in ("load", "loads", "get_untrusted_types"):
        monkeypatch.setattr(skops.io, name, must_not_run)


def _edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value, indent=2) + "\n")


BAND = {"predicted": [0.05, 0.2, 0.5], "observed": [0.05, 0.2, 0.5], "low": [0.03, 0.15, 0.42],
        "high": [0.08, 0.26, 0.58], "level": 0.95, "method": "test"}


def _narrow_band(card: dict) -> None:
    card["metrics"]["calibration_band"]["high"] = card["metrics"]["calibration_band"]["predicted"]


def _drop_a_feature(features: list) -> None:
    del features[-1]


def _change_a_feature_kind(features: list) -> None:
    features[0]["kind"] = "categorical"


TAMPERING = {
    "an edited calibration band in card.json": ("card.json", lambda p: _edit_json(p, _narrow_band)),
    "an edited features.json (one dropped)": ("features.json", lambda p: _edit_json(p, _drop_a_feature)),
    "an edited features.json (a kind changed)": ("features.json", lambda p: _edit_json(p, _change_a_feature_kind)),
    "an edited card.json of the same size": ("card.json",
                                             lambda p: p.write_text(p.read_text().replace("0.74", "0.94"))),
    "an edited card.md": ("card.md", lambda p: p.write_text(p.read_text().replace("Internal", "External"))),
    "a changed model.skops": ("model.skops", lambda p: p.write_bytes(p.read_bytes() + b"\0")),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_any_changed_file_is_refused_naming_it_before_anything_is_read(tmp_path, fitted, monkeypatch, case):
    name, tamper = TAMPERING[case]
    card = replace(make_card(), metrics=make_card().metrics | {"calibration_band": BAND})
    saved = store.save_model(tmp_path, outcome="leakage_any", estimator=fitted["spline_logistic"], card=card,
                             features=FEATURES)
    store.set_champion(tmp_path, outcome="leakage_any", version=saved.version, decision={"reason": "first"})
    assert store.load_model(tmp_path, outcome="leakage_any").card.metrics["calibration_band"] == BAND
    tamper(saved.path / name)
    _refuse_deserialising(monkeypatch)
    expected = (rf"models/leakage_any/v0001/{name.replace('.', r'[.]')} .*the version's files do not match its "
                r"integrity manifest .*the fix is to retrain \(`cementrisk run --retrain`\)")
    for version in (None, "v0001"):  # the champion, or the version by name
        with pytest.raises(ModelIntegrityError, match=expected):
            store.load_model(tmp_path, outcome="leakage_any", version=version)


def test_a_version_without_an_integrity_manifest_is_refused_as_predating_it(tmp_path, fitted, monkeypatch):
    saved = save(tmp_path, fitted["spline_logistic"])
    (saved.path / "integrity.json").unlink()  # as a version stored before the manifest existed
    _refuse_deserialising(monkeypatch)
    with pytest.raises(ModelIntegrityError, match=r"model leakage_any v0001 has no integrity manifest "
                                                  r"\(models/leakage_any/v0001/integrity.json missing\): it predates "
                                                  r"the integrity manifest.*cementrisk run --retrain"):
        store.load_model(tmp_path, outcome="leakage_any", version="v0001")


def test_an_untouched_version_loads_with_its_card_and_features(tmp_path, data, fitted):
    X, _ = data  # noqa: N806
    saved = save(tmp_path, fitted["boosting"])
    store.set_champion(tmp_path, outcome="leakage_any", version=saved.version, decision={})
    loaded = store.load_model(tmp_path, outcome="leakage_any")
    assert loaded.card == saved.card and loaded.features == FEATURES and loaded.version == "v0001"
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X), fitted["boosting"].predict_proba(X))


def test_untrusted_type_is_refused_and_named(tmp_path, data, fitted):
    X, y = data  # noqa: N806
    wrapped = UnreviewedClassifier(LogisticRegression()).fit(X[NAMES[:2]].fillna(0), y)
    features = FEATURES[:2]
    card = replace(make_card(), features=NAMES[:2])
    with pytest.raises(UntrustedTypeError, match=UNREVIEWED.replace(".", r"\.")):
        store.save_model(tmp_path, outcome="leakage_any", estimator=wrapped, card=card, features=features)
    assert store.list_versions(tmp_path, "leakage_any") == []  # nothing left behind

    saved = store.save_model(tmp_path, outcome="leakage_any", estimator=wrapped, card=card, features=features,
                             extra_trusted=[UNREVIEWED])
    with pytest.raises(UntrustedTypeError, match=f"types outside the trusted list: {UNREVIEWED}"):
        store.load_model(tmp_path, outcome="leakage_any", version=saved.version)
    loaded = store.load_model(tmp_path, outcome="leakage_any", version=saved.version, extra_trusted=[UNREVIEWED])
    np.testing.assert_array_equal(loaded.estimator.predict_proba(X[NAMES[:2]].fillna(0)),
                                  wrapped.predict_proba(X[NAMES[:2]].fillna(0)))


def test_trusted_list_is_explicit_and_never_everything():
    names = store.trusted_types(["models.calibration.RecalibratedClassifier"])
    assert "sklearn.pipeline.Pipeline" in names and "models.calibration.RecalibratedClassifier" in names
    assert len(names) == len(set(names)) and all(isinstance(n, str) and "." in n for n in names)
    with pytest.raises(TypeError, match="single string"):
        store.trusted_types("models.calibration.RecalibratedClassifier")
    with pytest.raises(TypeError, match="fully qualified type names"):
        store.trusted_types([True])


def test_trusted_names_resolve_in_the_installed_libraries():
    import importlib

    for name in store.trusted_types():
        module, _, attribute = name.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), name


def test_feature_mismatch_names_the_missing_features(tmp_path, data, fitted):
    X, _ = data  # noqa: N806
    saved = save(tmp_path, fitted["spline_logistic"])
    store.check_features(saved, [*X.columns, "site_id"])  # extra columns are fine
    with pytest.raises(FeatureMismatchError, match="model leakage_any v0001 needs features absent from the "
                                                   "records: cement_volume_ml, cement_viscosity$"):
        store.check_features(saved, pd.Index(["age_years", "site_id"]))


def test_card_and_feature_list_must_agree_with_the_estimator(tmp_path, fitted):
    with pytest.raises(ModelStoreError, match="card.features must list the features in order"):
        store.save_model(tmp_path, outcome="leakage_any", estimator=fitted["boosting"],
                         card=replace(make_card(), features=NAMES[::-1]), features=FEATURES)
    with pytest.raises(ModelStoreError, match="the estimator was fitted on columns"):
        store.save_model(tmp_path, outcome="leakage_any", estimator=fitted["boosting"],
                         card=replace(make_card(), features=NAMES[:2]), features=FEATURES[:2])
    with pytest.raises(ModelStoreError, match="the card is for outcome 'leakage_any', not 'leakage_canal'"):
        store.save_model(tmp_path, outcome="leakage_canal", estimator=fitted["boosting"], card=make_card(),
                         features=FEATURES)
    with pytest.raises(ModelStoreError, match="outcome must be lower case"):
        store.list_versions(tmp_path, "../elsewhere")


def test_card_markdown_carries_what_a_reader_needs(tmp_path, fitted):
    saved = save(tmp_path, fitted["spline_logistic"])
    markdown = (saved.path / "card.md").read_text()
    assert markdown == saved.card.to_markdown()
    assert markdown.startswith("# Model card: leakage_any v0001")
    for text in ("## Intended use", "Case-mix adjusted expected risk", "any cement outside the vertebral body",
                 "## Limitations", "- Internal validation only.", "## TRIPOD+AI", "| 11 Missing data |",
                 "| auroc | 0.74 (0.69 to 0.79) |", "- `cement_volume_ml`"):
        assert text in markdown


def test_card_json_round_trips(tmp_path, fitted):
    saved = save(tmp_path, fitted["spline_logistic"])
    text = (saved.path / "card.json").read_text()
    card = ModelCard.from_dict(json.loads(text))
    assert card == saved.card
    assert json.dumps(card.to_dict(), indent=2) + "\n" == text
    assert card.metrics["n_boot"] == 200 and card.version == "v0001"
    with pytest.raises(ModelStoreError, match=r"missing fields \['seed'\]"):
        ModelCard.from_dict({k: v for k, v in card.to_dict().items() if k != "seed"})


def test_default_tripod_items_cover_the_key_items():
    items = store.default_tripod_ai_items()
    for key in ("5a Source of data", "6b Eligibility", "8a Outcome definition", "9 Predictors", "10 Sample size",
                "11 Missing data", "14 Fairness", "23a Model performance with confidence intervals",
                "24 Model updating", "26 Limitations"):
        assert items[key]
    items["1 Title"] = "changed"
    assert store.default_tripod_ai_items()["1 Title"] != "changed"  # a fresh copy each call


def test_inside_a_run_the_champion_switch_waits_for_the_run_to_end(tmp_path, fitted):
    """A run sees its new champion at once; the pointer file changes only when the run commits, and not at all
    when it fails: a run that promotes one outcome and then dies leaves every champion as it was."""
    from workspace.transaction import workspace_lock

    save(tmp_path, fitted["spline_logistic"])
    store.set_champion(tmp_path, outcome="leakage_any", version="v0001", decision={"reason": "first"})
    pointer = tmp_path / "models" / "leakage_any" / "champion.json"
    before = pointer.read_bytes()
    with pytest.raises(RuntimeError, match="killed"):
        with workspace_lock(tmp_path, run_id="night-2"):
            save(tmp_path, fitted["boosting"])
            store.set_champion(tmp_path, outcome="leakage_any", version="v0002", decision={"reason": "better"})
            assert store.champion(tmp_path, "leakage_any") == "v0002"
            assert store.load_model(tmp_path, outcome="leakage_any").version == "v0002"
            assert pointer.read_bytes() == before
            raise RuntimeError("killed while training the next outcome")
    assert pointer.read_bytes() == before and store.champion(tmp_path, "leakage_any") == "v0001"
    assert store.load_model(tmp_path, outcome="leakage_any").version == "v0001"  # v0002 stored, harmless

    with workspace_lock(tmp_path, run_id="night-3"):
        store.set_champion(tmp_path, outcome="leakage_any", version="v0002", decision={"reason": "better"})
        assert pointer.read_bytes() == before
    assert store.champion(tmp_path, "leakage_any") == "v0002"
    history = json.loads(pointer.read_text())["history"]
    assert [h["version"] for h in history] == ["v0001"]


def test_half_written_versions_of_killed_runs_are_removed_under_the_lock(tmp_path, fitted):
    from workspace.transaction import workspace_lock

    save(tmp_path, fitted["spline_logistic"])
    outcome_dir = tmp_path / "models" / "leakage_any"
    leftover = outcome_dir / ".incomplete-deadbeef"
    leftover.mkdir()
    (leftover / "model.skops").write_bytes(b"half")
    (outcome_dir / ".champion.json.0badc0de.tmp").write_text("{")
    save(tmp_path, fitted["spline_logistic"])  # without the lock another run may be writing it: kept
    assert leftover.is_dir()
    with workspace_lock(tmp_path, run_id="r"):
        assert save(tmp_path, fitted["spline_logistic"]).version == "v0003"
    assert not [p.name for p in outcome_dir.iterdir() if p.name.startswith(".")]
