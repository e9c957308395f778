"""The case planner end to end on models trained on a slice of the sample: the case is checked by the
contract, every grid point is scored, each risk's interval is that of its prediction from the model's parameter
replicates (absent with a note for a model stored without them) and always holds the risk, the card's calibration
band only adds notes, and the text and HTML outputs are complete, self-contained and reproducible."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from models import store
from models.calibration import RecalibratedClassifier
from models.scoring import NoModelError
from records import schema as s
from records.errors import InputError
from reports.planner import (
    BAND_KEY,
    CaseError,
    load_case,
    parse_case,
    plan_case,
    plan_text,
    render_plan_html,
)

T_975_9DF = 2.262157  # Student t, 97.5% quantile, 9 degrees of freedom (any statistical table)
SHIFTS = np.linspace(-0.45, 0.45, 10)  # the fake replicates' logit shifts: standard error np.std(SHIFTS, ddof=1)
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"
EXAMPLE = SAMPLE / "planned_case.json"
OUTCOMES = ("leakage_any", "leakage_canal", "leakage_venous")
NOT_CAUSAL = ("This is a prediction from registry data, not a causal effect: it says how often leakage was seen in "
              "similar past cases with this planned volume, viscosity and approach, not what changing them would do "
              "for this patient.")


@pytest.fixture(scope="module")
def workspace(shared_nights) -> Path:
    """The shared workspace after its first night: every outcome trained, with parameter replicates (read only)."""
    return shared_nights.after_night_1


@pytest.fixture
def case_data() -> dict:
    return json.loads(EXAMPLE.read_text())


def with_card_metrics(monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Every model loaded gets card.metrics = change(card.metrics)."""
    load = store.load_model

    def patched(*args, **kwargs):
        model = load(*args, **kwargs)
        card = dataclasses.replace(model.card, metrics=change(dict(model.card.metrics)))
        return dataclasses.replace(model, card=card)

    monkeypatch.setattr(store, "load_model", patched)


def with_estimators(monkeypatch: pytest.MonkeyPatch, change) -> None:
    """Every model loaded gets estimator = change(estimator)."""
    load = store.load_model

    def patched(*args, **kwargs):
        model = load(*args, **kwargs)
        return dataclasses.replace(model, estimator=change(model.estimator))

    monkeypatch.setattr(store, "load_model", patched)


def without_replicates(model: RecalibratedClassifier) -> RecalibratedClassifier:
    return RecalibratedClassifier(model.estimator, model.intercept, model.slope)


def shifted_replicates(model: RecalibratedClassifier) -> RecalibratedClassifier:
    """Replicates that are the model with its recalibration intercept shifted by SHIFTS: a known spread of logits
    (the statistics of real replicates are tested in tests/models/test_prediction_intervals.py)."""
    replicates = tuple(RecalibratedClassifier(model.estimator, model.intercept + shift, model.slope)
                       for shift in SHIFTS)
    return RecalibratedClassifier(model.estimator, model.intercept, model.slope, replicates=replicates)


def diagonal_band(low: float = 0.001, high: float = 0.999) -> dict:
    """A band around a perfectly calibrated curve: logit(p) -/+ 0.3."""
    return shifted_band(0.0, low, high)


def shifted_band(shift: float, low: float = 0.001, high: float = 0.999) -> dict:
    """A band around a curve ``shift`` above the diagonal on the logit scale: logit(p) + shift -/+ 0.3."""
    grid = expit(np.linspace(logit(low), logit(high), 50))
    return {"predicted": grid.tolist(), "observed": expit(logit(grid) + shift).tolist(),
            "low": expit(logit(grid) + shift - 0.3).tolist(), "high": expit(logit(grid) + shift + 0.3).tolist(),
            "level": 0.95, "method": "test"}


def test_every_grid_point_is_scored_and_without_replicates_intervals_are_absent_with_a_note(workspace, monkeypatch):
    with_estimators(monkeypatch, without_replicates)
    case = load_case(EXAMPLE)
    plan = plan_case(case, workspace=workspace)
    risks = plan.risks
    assert list(risks.columns) == [s.VERTEBRA, s.APPROACH, s.CEMENT_VISCOSITY, s.CEMENT_VOLUME_ML, "outcome",
                                   "risk", "low", "high"]
    assert ((risks["risk"] > 0) & (risks["risk"] < 1)).all()
    expected = pd.MultiIndex.from_product([case.vertebrae, s.APPROACHES, s.VISCOSITIES, plan.volumes_ml, OUTCOMES])
    got = pd.MultiIndex.from_frame(risks[[s.VERTEBRA, s.APPROACH, s.CEMENT_VISCOSITY, s.CEMENT_VOLUME_ML, "outcome"]])
    assert len(got) == len(expected) and set(got) == set(expected)
    assert plan.volumes_ml[0] == 1.0 and plan.volumes_ml[-1] == 8.0 and 3.5 in plan.volumes_ml  # the planned L1 volume
    assert case.typical_volumes_ml == {"t12": 3.0, "l1": 3.5}
    assert risks[["low", "high"]].isna().all().all() and plan.interval_level is None and plan.interval_methods == {}
    assert sum("no interval: model" in note and "without parameter replicates" in note for note in plan.notes) == 3
    assert plan.versions == {o: store.champion(workspace, o) for o in OUTCOMES}
    assert "interval" not in plan_text(plan).split("\n- ")[0]  # no interval label over the tables
    assert "no interval is shaded" in render_plan_html(plan)


def test_every_interval_is_that_of_its_prediction_and_holds_its_risk_whatever_the_band_says(workspace, monkeypatch):
    """The reported problem: the calibration band at a risk is not the uncertainty of that prediction and may
    exclude it (canal leakage 3.6% [3.7-4.4]). Here the band excludes every risk; the intervals still hold them."""
    with_estimators(monkeypatch, shifted_replicates)
    with_card_metrics(monkeypatch, lambda m: m | {BAND_KEY: shifted_band(1.0)})
    plan = plan_case(load_case(EXAMPLE), workspace=workspace, volumes_ml=[2.0, 4.0, 6.0])
    risks = plan.risks
    assert risks[["low", "high"]].notna().all().all()
    assert ((risks["low"] <= risks["risk"]) & (risks["risk"] <= risks["high"])).all()
    se = np.std(SHIFTS, ddof=1)
    np.testing.assert_allclose(risks["low"], expit(logit(risks["risk"]) - T_975_9DF * se), rtol=1e-6)
    np.testing.assert_allclose(risks["high"], expit(logit(risks["risk"]) + T_975_9DF * se), rtol=1e-6)
    assert plan.interval_level == 0.95 and plan.volumes_ml == (2.0, 3.0, 3.5, 4.0, 6.0)  # plus the typical volumes
    assert sum("the validation data's calibration band excludes the risk" in note for note in plan.notes) == 3
    text = plan_text(plan)
    assert "[95% interval]" in text
    assert ("[low-high]: 95% interval of this prediction from the model's parameter uncertainty (10 bootstrap refits "
            "of the model and its recalibration), without any bias of the model's form; not a range for the "
            "patient's outcome, and not the calibration curve of the validation data") in text


def test_the_level_of_the_interval_is_an_option(workspace, monkeypatch):
    with_estimators(monkeypatch, shifted_replicates)
    wide = plan_case(load_case(EXAMPLE), workspace=workspace, volumes_ml=[3.0])
    narrow = plan_case(load_case(EXAMPLE), workspace=workspace, volumes_ml=[3.0], level=0.5)
    assert narrow.interval_level == 0.5 and "[50% interval]" in plan_text(narrow)
    assert ((narrow.risks["high"] - narrow.risks["low"]) < (wide.risks["high"] - wide.risks["low"])).all()
    with pytest.raises(ValueError, match="level must be a probability strictly between 0 and 1"):
        plan_case(load_case(EXAMPLE), workspace=workspace, volumes_ml=[3.0], level=95)


def test_risks_beyond_the_validated_range_are_said_so_and_their_intervals_are_not_clipped(workspace, monkeypatch):
    with_estimators(monkeypatch, shifted_replicates)
    with_card_metrics(monkeypatch, lambda m: m | {BAND_KEY: diagonal_band(0.2, 0.3)})
    plan = plan_case(load_case(EXAMPLE), workspace=workspace, volumes_ml=[1.0, 8.0])
    assert any("beyond the risks the model was validated at (20.0% to 30.0%)" in note for note in plan.notes)
    assert ((plan.risks["low"] <= plan.risks["risk"]) & (plan.risks["risk"] <= plan.risks["high"])).all()


def test_an_unreadable_band_gives_a_note_and_leaves_the_intervals(workspace, monkeypatch):
    with_estimators(monkeypatch, shifted_replicates)
    with_card_metrics(monkeypatch, lambda m: m | {BAND_KEY: {"predicted": [0.1]}})
    plan = plan_case(load_case(EXAMPLE), workspace=workspace, volumes_ml=[3.0])
    assert plan.risks["low"].notna().all()
    assert sum("unreadable" in note for note in plan.notes) == 3


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d.update(age_years=300), "age_years"),
    (lambda d: d.update(age_years=17), "age_years"),
    (lambda d: d["levels"][0].update(cement_viscosity="runny"), "cement_viscosity"),
    (lambda d: d.update(patient_name="Jane Roe"), "patient_name"),
    (lambda d: d["levels"][1].pop("vertebra"), "levels\\[1\\]: vertebra"),
    (lambda d: d.pop("sex"), "sex is required"),
    (lambda d: d.update(asa_class="two"), "asa_class must be a whole number"),
    (lambda d: d.update(approach="lateral"), "approach must be one of"),
    (lambda d: d["levels"][0].update(leakage=True), "leakage is an outcome"),
    (lambda d: d.update(procedure_id="P1"), "procedure_id is filled by the planner"),
    (lambda d: d.update(vertebra="t5"), "vertebra is not a procedure field: give it in each entry of levels"),
    (lambda d: d.update(favourite_colour="blue"), "'favourite_colour' is not a field"),
    (lambda d: d.update(n_levels=3), "n_levels must equal"),
    (lambda d: d.update(asa_class=[2]), "asa_class must be a single value .* not a list"),
    (lambda d: d["levels"][0].update(cement_volume_ml=20), "levels\\[0\\]: cement_volume_ml must be between 0 and 15"),
    (lambda d: d["levels"][1].update(vertebra="t12"), "vertebra must be unique"),
])
def test_an_invalid_case_is_refused_naming_the_field(case_data, change, field):
    change(case_data)
    with pytest.raises(CaseError, match=field) as caught:
        parse_case(case_data)
    assert isinstance(caught.value, InputError)


def test_an_identifier_value_is_refused_without_echoing_it(case_data):
    case_data["levels"][0]["morphology"] = "jane.roe@example.org"
    with pytest.raises(CaseError, match="morphology: e-mail address") as caught:
        parse_case(case_data)
    assert "jane" not in str(caught.value)


def test_missing_optional_fields_are_allowed(case_data, workspace):
    for name in (s.BMI, s.BMD_T_SCORE, s.PAIN_VAS_PRE):
        case_data.pop(name)
    for name in (s.VERTEBRAL_BODY_VOLUME_ML, s.FRACTURE_AGE_DAYS, s.BASIVERTEBRAL_FORAMEN, s.HEIGHT_LOSS_PCT):
        case_data["levels"][0].pop(name)
    case = parse_case(case_data)
    assert s.BMI not in case.procedure_fields and case.procedures[s.BMI].isna().all()
    plan = plan_case(case, workspace=workspace, volumes_ml=[3.0])
    assert plan.risks["risk"].between(0, 1, inclusive="neither").all()


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "cannot read the case file .* as JSON"),
    ('{"sex": "f", "sex": "m", "levels": []}', "sex is given more than once"),
    ('{"bmi_kg_m2": NaN, "levels": []}', "finite"),
    ("[]", "must be a JSON object"),
    ('{"sex": "f", "levels": []}', "non-empty list"),
])
def test_a_malformed_case_file_is_refused(tmp_path, text, message):
    path = tmp_path / "case.json"
    path.write_text(text)
    with pytest.raises(CaseError, match=message):
        load_case(path)


def test_volumes_outside_the_contract_are_refused(workspace):
    with pytest.raises(CaseError, match="cement_volume_ml must be between 0 and 15"):
        plan_case(load_case(EXAMPLE), workspace=workspace, volumes_ml=[2.0, 20.0])


def test_no_published_model_is_a_clear_error(tmp_path):
    with pytest.raises(NoModelError, match="no published model for leakage_any"):
        plan_case(load_case(EXAMPLE), workspace=tmp_path)


def test_text_and_html_outputs(workspace, monkeypatch):
    with_estimators(monkeypatch, shifted_replicates)
    with_card_metrics(monkeypatch, lambda m: m | {BAND_KEY: diagonal_band()})
    case = load_case(EXAMPLE)
    plan = plan_case(case, workspace=workspace)
    text = plan_text(plan)
    assert "Level T12: risk at 3 ml" in text and "Level L1: risk at 3.5 ml" in text
    assert all(o in text for o in OUTCOMES) and all(a in text for a in s.APPROACHES)
    page = render_plan_html(plan)
    assert set(re.findall(r"https?://[^\s\"'<>]*", page)) == {"http://www.w3.org/2000/svg"}
    assert "<script" not in page.lower() and "<link" not in page.lower() and "src=" not in page
    assert NOT_CAUSAL in page
    assert "shaded: the 95% interval of each prediction from its model&#x27;s parameter uncertainty" in page
    assert "not a range for the patient&#x27;s outcome" in page and "not the calibration curve" in page
    assert not any("band" in note for note in plan.notes)  # a calibrated model's band raises no caution
    assert page.count("<svg") == len(case.vertebrae)
    assert "glucocorticoid_use" in page and "vertebral_body_volume_ml" in page  # the case's fields are echoed
    again = plan_case(load_case(EXAMPLE), workspace=workspace)
    assert render_plan_html(again).encode() == page.encode()


def test_the_example_case_echoes_its_fields_and_its_input_is_not_modified(case_data):
    given = copy.deepcopy(case_data)
    case = parse_case(case_data)
    assert case_data == given
    assert case.procedure_fields == {k: v for k, v in given.items() if k != "levels"}
    assert list(case.level_fields) == given["levels"]
    assert case.vertebrae == ("t12", "l1")
