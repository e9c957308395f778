"""Model frames: one row per level / procedure, features as the dictionary says, no case-mix use of site or operator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features import dictionary as d
from features.matrices import build_level_frame, build_procedure_frame, vertebral_region
from models.outcomes import OUTCOMES, OUTCOMES_BY_NAME
from tests.conftest import make_batch


def test_level_frame_has_one_row_per_level_and_every_feature():
    batch = make_batch(5)
    frame = build_level_frame(batch.procedures, batch.levels)
    assert len(frame) == len(batch.levels)
    assert set(d.feature_names(d.LEVEL_FEATURES)) <= set(frame.columns)
    for spec in d.LEVEL_FEATURES:
        values = frame[spec.name]
        if spec.kind in ("numeric", "binary"):
            assert values.dtype == np.float64, spec.name
        else:
            assert set(values.dropna()) <= set(spec.categories), spec.name


def test_site_and_operator_are_context_not_features():
    names = set(d.feature_names(d.LEVEL_FEATURES)) | set(d.feature_names(d.PROCEDURE_FEATURES))
    assert "site_id" not in names and "operator_id" not in names
    for spec in OUTCOMES:
        assert "site_id" not in spec.feature_names and "operator_id" not in spec.feature_names


def test_fill_ratio_is_cement_over_body_volume_and_missing_stays_missing():
    batch = make_batch(2)
    batch.levels.loc[0, "cement_volume_ml"] = 6.0
    batch.levels.loc[0, "vertebral_body_volume_ml"] = 24.0
    batch.levels.loc[1, "vertebral_body_volume_ml"] = pd.NA
    frame = build_level_frame(batch.procedures, batch.levels)
    assert frame.loc[0, d.CEMENT_FILL_RATIO] == pytest.approx(0.25)
    assert np.isnan(frame.loc[1, d.CEMENT_FILL_RATIO])
    assert len(frame) == len(batch.levels)  # rows with missing volume are kept, not dropped


def test_regions_and_basivertebral_states():
    assert vertebral_region(pd.Series(["t4", "t10", "t11", "l2", "l3", "l5"])).tolist() == [
        "upper_thoracic", "upper_thoracic", "thoracolumbar", "thoracolumbar", "lumbar", "lumbar"]
    batch = make_batch(2)
    batch.levels["basivertebral_foramen"] = pd.array([True, False, None], dtype="boolean")
    frame = build_level_frame(batch.procedures, batch.levels)
    assert frame[d.BASIVERTEBRAL].tolist() == ["yes", "no", "unknown"]


def test_missing_imaging_is_kept_for_training_and_set_for_planning():
    batch = make_batch(2)
    batch.levels["leakage_imaging"] = pd.array([None, "ct", "xray"], dtype="string")
    assert pd.isna(build_level_frame(batch.procedures, batch.levels)[d.IMAGING][0])
    planned = build_level_frame(batch.procedures, batch.levels, imaging_when_missing="ct")
    assert planned[d.IMAGING].tolist() == ["ct", "ct", "xray"]


def test_level_without_procedure_is_an_error():
    batch = make_batch(2)
    with pytest.raises(ValueError, match="have no procedure"):
        build_level_frame(batch.procedures.iloc[:1], batch.levels)


def test_outcome_labels_and_eligibility():
    batch = make_batch(3)
    levels = batch.levels.copy()
    levels["leakage"] = pd.array([True, False, True, None, True], dtype="boolean")
    levels["leakage_sites"] = pd.array(["intradiscal;venous", None, "epidural", None, "foraminal;venous"],
                                       dtype="string")
    frame = build_level_frame(batch.procedures, levels)
    expected = {"leakage_any": [1, 0, 1, 1], "leakage_canal": [0, 0, 1, 1], "leakage_venous": [1, 0, 0, 1]}
    for name, labels in expected.items():
        eligible, y = OUTCOMES_BY_NAME[name].labels(frame)
        assert eligible.tolist() == [True, True, True, False, True]
        assert y.tolist() == labels, name


def test_infection_label_missing_follow_up_is_not_eligible():
    batch = make_batch(3)
    procedures = batch.procedures.copy()
    procedures["infection_90d"] = pd.array([True, None, False], dtype="boolean")
    eligible, y = OUTCOMES_BY_NAME["infection_90d"].labels(build_procedure_frame(procedures))
    assert eligible.tolist() == [True, False, True] and y.tolist() == [1, 0]


def test_feature_dictionary_doc_is_current():
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "features.md"
    assert doc.read_text() == d.render_markdown(), "regenerate: python -m features.dictionary > docs/features.md"
