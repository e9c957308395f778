"""The retraining policy: when a night's run retrains the models, and the reason in words.

Retrain when asked (``--retrain``), when no model was ever trained, when enough new outcomes have arrived
since the last training (at least 100 new leakage events and at least 20% of those the models were trained on), when the new batches drift beyond the threshold (feature PSI or the champion's
calibration on them), or when the models are older than their maximum age. Otherwise keep the champions.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RetrainPolicy:
    """Thresholds of the retraining policy (recorded in the manifest with each decision)."""

    min_new_events: int = 100  # new leakage events (any, per level) since the last training, at least
    new_events_fraction: float = 0.2  # ... and at least this fraction of the events the models were trained on
    max_age_days: int = 365
    psi_threshold: float = 0.25  # the usual "major shift" band of the population stability index


@dataclass(frozen=True)
class RetrainInputs:
    """What the decision looks at; gathered from the workspace by :mod:`models.refresh`."""

    asked: bool
    registrations: int  # batches registered (or replaced) so far, the ledger's sequence; 0: the registry is empty
    last_registrations: int | None  # the same at the last training; None: never trained
    trained_on: _dt.date | None
    today: _dt.date
    new_events: int  # leakage events in the batches registered since the last training
    drift: dict[str, Any] | None = None  # models.drift.drift_summary of the new batches, if computed
    trained_events: int | None = None  # leakage events the champions were trained on; None: not recorded


def events_needed(inputs: RetrainInputs, policy: RetrainPolicy) -> int:
    """New leakage events that call for retraining: the floor, or a fraction of the training events if larger.

    A fixed count alone would retrain a large registry every night (a 1% batch of 1,000,000 procedures brings
    thousands of events) although so few new outcomes barely move a model fitted on hundreds of thousands.
    """
    if inputs.trained_events is None:
        return policy.min_new_events
    return max(policy.min_new_events, math.ceil(policy.new_events_fraction * inputs.trained_events))


def decide_retraining(inputs: RetrainInputs, *, policy: RetrainPolicy = RetrainPolicy()) -> tuple[bool, str]:
    """Whether to retrain now, and why (one sentence; no count from 1 to 10 in it).

    Raises
    ------
    ValueError
        A threshold or count is negative.
    """
    if (min(policy.min_new_events, policy.max_age_days, inputs.new_events, inputs.trained_events or 0) < 0
            or policy.psi_threshold <= 0 or policy.new_events_fraction < 0):
        raise ValueError("policy thresholds and the count of new events must be non-negative "
                         f"(psi_threshold positive); got {policy} and {inputs.new_events} new events")
    if inputs.registrations == 0:
        return False, "the registry is empty: nothing to train on"
    if inputs.asked:
        return True, "retraining was asked for (--retrain)"
    if inputs.last_registrations is None:
        return True, "no model has been trained in this workspace yet"
    age = None if inputs.trained_on is None else (inputs.today - inputs.trained_on).days
    if age is not None and age > policy.max_age_days:
        return True, f"the models are {age} days old, beyond the maximum of {policy.max_age_days}"
    added = inputs.registrations - inputs.last_registrations
    if added <= 0:
        return False, "the registry is unchanged since the models were trained (no batch registered since)"
    needed = events_needed(inputs, policy)
    if inputs.new_events >= needed:
        return True, (f"{inputs.new_events:,} new leakage events since the last training "
                      f"({_batches(added)} registered since; the policy retrains from {needed:,})")
    if inputs.drift and inputs.drift.get("drifted"):
        return True, "the new batches drifted: " + "; ".join(inputs.drift.get("reasons", []))
    age_text = "" if age is None else f", and the models are {age} days old (maximum {policy.max_age_days})"
    return False, (f"the registry grew ({_batches(added)} registered since the last training) with fewer than "
                   f"{needed:,} new leakage events and no drift beyond the thresholds{age_text}: "
                   "the champions stay")


def _batches(n: int) -> str:
    """'1 batch', '12 batches' (a count of batches, not of patients: never withheld)."""
    return f"{n} batch" if n == 1 else f"{n} batches"
