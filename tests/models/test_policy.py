"""The retraining policy: each reason to retrain, each reason not to, in the order the policy applies them."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace

import pytest

from models.drift import TOO_FEW_EVENTS, drift_summary
from models.policy import RetrainInputs, RetrainPolicy, ShiftRecord, decide_retraining, events_needed

TODAY = dt.date(2026, 11, 25)
QUIET = RetrainInputs(asked=False, registrations=12, last_registrations=11, trained_on=dt.date(2026, 10, 1),
                      today=TODAY, new_events=40, drift=drift_summary([], {"drifted": False, "reason": "includes 1"}))

FORAMEN = {"feature": "basivertebral_foramen_seen", "kind": "categorical", "psi": 4.4, "band": "major",
           "direction": "fewer unknown"}
VOLUME = {"feature": "cement_volume_ml", "kind": "numeric", "psi": 0.31, "band": "major", "direction": "higher"}
CALIBRATED = {"drifted": False, "judged": True, "directions": [],
              "reason": "observed/expected ratio 1.020 (95% CI 0.9 to 1.1) includes 1"}
MORE_EVENTS = {"drifted": True, "judged": True, "directions": ["observed/expected ratio: more events than predicted"],
               "reason": "observed/expected ratio 1.600 (95% CI 1.4 to 1.8) excludes 1 and is beyond 1 +- 0.1: "
                         "more events than predicted"}
FEWER_EVENTS = {**MORE_EVENTS, "directions": ["observed/expected ratio: fewer events than predicted"],
                "reason": "observed/expected ratio 0.600 (95% CI 0.5 to 0.7) excludes 1 and is beyond 1 +- 0.1: "
                          "fewer events than predicted"}
TOO_FEW = {"drifted": False, "judged": False, "reason": TOO_FEW_EVENTS, "directions": []}


def _night(features: list[dict], calibration: dict | None, seen: ShiftRecord = ShiftRecord()) -> RetrainInputs:
    return replace(QUIET, drift=drift_summary(features, calibration), seen=seen)


def test_a_quiet_night_keeps_the_champions_and_says_why():
    decision = decide_retraining(QUIET)
    assert not decision.retrain and decision.warnings == ()
    assert "fewer than 100 new leakage events" in decision.reason and "55 days old" in decision.reason
    assert "40" not in decision.reason


@pytest.mark.parametrize(("change", "expected"), [
    ({"asked": True}, "asked for"),
    ({"last_registrations": None, "trained_on": None}, "no model has been trained"),
    ({"new_events": 100}, "100 new leakage events"),
    ({"drift": drift_summary([VOLUME], MORE_EVENTS)}, "calibration drifted: observed/expected ratio 1.600"),
    ({"trained_on": dt.date(2025, 11, 1)}, "389 days old, beyond the maximum of 365"),
])
def test_each_reason_to_retrain(change, expected):
    decision = decide_retraining(replace(QUIET, **change))
    assert decision.retrain and expected in decision.reason


def test_nothing_new_means_no_retraining_and_an_empty_registry_nothing_to_train():
    decision = decide_retraining(replace(QUIET, last_registrations=12, new_events=0))
    assert (decision.retrain, decision.reason) == (
        False, "the registry is unchanged since the models were trained (no batch registered since)")
    decision = decide_retraining(replace(QUIET, registrations=0, asked=True))
    assert not decision.retrain and "empty" in decision.reason


def test_thresholds_come_from_the_policy():
    strict = RetrainPolicy(min_new_events=30, max_age_days=30)
    assert decide_retraining(QUIET, policy=strict).reason.startswith("the models are 55 days old")
    assert decide_retraining(replace(QUIET, trained_on=TODAY), policy=strict).reason.startswith("40 new leakage")
    with pytest.raises(ValueError, match="non-negative"):
        decide_retraining(QUIET, policy=RetrainPolicy(min_new_events=-1))


def test_a_large_registry_retrains_on_a_fraction_of_its_training_events_not_on_the_floor():
    trained_on_many = replace(QUIET, trained_events=500_000, new_events=5_000)
    decision = decide_retraining(trained_on_many)
    assert not decision.retrain and "fewer than 100,000 new leakage events" in decision.reason
    decision = decide_retraining(replace(trained_on_many, new_events=100_000))
    assert decision.retrain and "retrains from 100,000" in decision.reason
    small = replace(QUIET, trained_events=200, new_events=100)
    assert decide_retraining(small).retrain  # 20% of 200 is below the floor of 100: the floor decides
    assert events_needed(small, RetrainPolicy()) == 100
    with pytest.raises(ValueError):
        decide_retraining(replace(QUIET, trained_events=-1))


# ----------------------------------------------------------------------------------- shift against drift
def test_a_covariate_shift_with_a_calibrated_champion_is_a_warning_not_a_reason_to_refit():
    decision = decide_retraining(_night([FORAMEN, VOLUME], CALIBRATED))
    assert not decision.retrain
    assert "no calibration drift of the champion" in decision.reason and "covariate shift only" in decision.reason
    assert len(decision.warnings) == 2
    assert decision.warnings[0] == (
        "covariate shift, no reason to refit by itself: PSI of basivertebral_foramen_seen is 4.400 "
        "(major shift: fewer unknown), new since the last training; the champion stays calibrated on the new batches")
    # what a training now would record: the shifts of these batches, no calibration drift
    assert decision.seen == ShiftRecord(features=("basivertebral_foramen_seen: fewer unknown",
                                                  "cement_volume_ml: higher"))
    assert json.loads(json.dumps(decision.to_dict())) == decision.to_dict()


def test_a_calibration_drift_retrains_once_and_the_same_drift_never_again():
    first = decide_retraining(_night([FORAMEN], MORE_EVENTS))
    assert first.retrain and first.reason.startswith("the new batches drifted: calibration drifted")
    assert "with a covariate shift: PSI of basivertebral_foramen_seen" in first.reason
    assert first.seen.calibration == ("observed/expected ratio: more events than predicted",)
    again = decide_retraining(_night([FORAMEN], MORE_EVENTS, seen=first.seen))  # the retrained champion, still off
    assert not again.retrain and "the same shift, not refitted for again" in again.reason
    assert any(w.startswith("calibration drift the champion was trained with") and "at 100 new leakage events" in w
               for w in again.warnings)
    assert "already in the training data" in again.warnings[0]
    assert again.seen == first.seen
    # sharing a finding with the drift trained with, it is the same drift; the opposite drift is another: it retrains
    both = {**MORE_EVENTS, "directions": [*MORE_EVENTS["directions"], "calibration slope: risks too moderate"]}
    assert not decide_retraining(_night([FORAMEN], both, seen=first.seen)).retrain
    assert decide_retraining(_night([FORAMEN], FEWER_EVENTS, seen=first.seen)).retrain
    # other triggers stay: enough new events retrain whatever the shift
    assert decide_retraining(replace(_night([FORAMEN], MORE_EVENTS, seen=first.seen), new_events=100)).retrain


def test_a_calibrated_training_forgets_the_calibration_drift_but_never_the_covariate_shift():
    seen = ShiftRecord(features=("basivertebral_foramen_seen: fewer unknown",),
                       calibration=("observed/expected ratio: more events than predicted",))
    calibrated = decide_retraining(_night([VOLUME], CALIBRATED, seen=seen)).seen
    assert calibrated == ShiftRecord(features=("basivertebral_foramen_seen: fewer unknown", "cement_volume_ml: higher"))
    assert decide_retraining(_night([], MORE_EVENTS, seen=calibrated)).retrain  # drifts again: a new episode
    # not judged (too few events) or not measured: the record is carried over as it is
    assert decide_retraining(_night([], TOO_FEW, seen=seen)).seen == seen
    assert decide_retraining(replace(QUIET, drift=None, seen=seen)).seen == seen


@pytest.mark.parametrize("calibration", [TOO_FEW, None])
def test_a_new_shift_that_calibration_cannot_judge_retrains_once(calibration):
    first = decide_retraining(_night([FORAMEN], calibration))
    assert first.retrain and "covariate shift not yet in the training data (PSI of basivertebral_foramen_seen" \
        in first.reason and "cannot be judged" in first.reason
    again = decide_retraining(_night([FORAMEN], calibration, seen=first.seen))
    assert not again.retrain and "covariate shift already in the training data" in again.reason
    other_way = {**FORAMEN, "direction": "more unknown"}
    assert decide_retraining(_night([other_way], calibration, seen=first.seen)).retrain


def test_the_shift_record_round_trips_and_refuses_what_it_cannot_read():
    record = ShiftRecord(features=("a: higher",), calibration=("calibration slope: risks too extreme",))
    assert ShiftRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    assert ShiftRecord.from_dict(None) == ShiftRecord() == ShiftRecord.from_dict({})
    with pytest.raises(ValueError, match="the shift record's features must be a list of texts; got 'a: higher'"):
        ShiftRecord.from_dict({"features": "a: higher"})
