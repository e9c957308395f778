"""The retraining policy: each reason to retrain, each reason not to, in the order the policy applies them."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from models.policy import RetrainInputs, RetrainPolicy, decide_retraining, events_needed

TODAY = dt.date(2026, 11, 25)
QUIET = RetrainInputs(asked=False, registrations=12, last_registrations=11, trained_on=dt.date(2026, 10, 1), today=TODAY,
                      new_events=40, drift={"drifted": False, "reasons": []})


def test_a_quiet_night_keeps_the_champions_and_says_why():
    go, reason = decide_retraining(QUIET)
    assert not go
    assert "fewer than 100 new leakage events" in reason and "55 days old" in reason and "40" not in reason


@pytest.mark.parametrize(("change", "expected"), [
    ({"asked": True}, "asked for"),
    ({"last_registrations": None, "trained_on": None}, "no model has been trained"),
    ({"new_events": 100}, "100 new leakage events"),
    ({"drift": {"drifted": True, "reasons": ["cement_volume_ml PSI 0.31 (major)"]}}, "cement_volume_ml PSI 0.31"),
    ({"trained_on": dt.date(2025, 11, 1)}, "389 days old, beyond the maximum of 365"),
])
def test_each_reason_to_retrain(change, expected):
    go, reason = decide_retraining(replace(QUIET, **change))
    assert go and expected in reason


def test_nothing_new_means_no_retraining_and_an_empty_registry_nothing_to_train():
    assert decide_retraining(replace(QUIET, last_registrations=12, new_events=0)) == (
        False, "the registry is unchanged since the models were trained (no batch registered since)")
    go, reason = decide_retraining(replace(QUIET, registrations=0, asked=True))
    assert not go and "empty" in reason


def test_thresholds_come_from_the_policy():
    strict = RetrainPolicy(min_new_events=30, max_age_days=30)
    assert decide_retraining(QUIET, policy=strict)[1].startswith("the models are 55 days old")
    assert decide_retraining(replace(QUIET, trained_on=TODAY), policy=strict)[1].startswith("40 new leakage")
    with pytest.raises(ValueError, match="non-negative"):
        decide_retraining(QUIET, policy=RetrainPolicy(min_new_events=-1))


def test_a_large_registry_retrains_on_a_fraction_of_its_training_events_not_on_the_floor():
    trained_on_many = replace(QUIET, trained_events=500_000, new_events=5_000)
    go, reason = decide_retraining(trained_on_many)
    assert not go and "fewer than 100,000 new leakage events" in reason
    go, reason = decide_retraining(replace(trained_on_many, new_events=100_000))
    assert go and "retrains from 100,000" in reason
    small = replace(QUIET, trained_events=200, new_events=100)
    assert decide_retraining(small)[0]  # 20% of 200 is below the floor of 100: the floor decides
    assert events_needed(small, RetrainPolicy()) == 100
    with pytest.raises(ValueError):
        decide_retraining(replace(QUIET, trained_events=-1))
