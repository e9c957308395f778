"""The retraining policy: when a night's run retrains the models, the reason in words, and the warnings.

Retrain when asked (``--retrain``), when no model was ever trained, when the models are older than their maximum
age, when enough new outcomes have arrived since the last training (at least 100 new leakage events and at least 20%
of those the models were trained on), or when the new batches drift in a way a refit can remove and the models have
not been refitted for yet:

* the champion's calibration drifted on the new batches (:func:`models.drift.batch_calibration`: the O/E or slope
  interval excludes 1 and the estimate is beyond its margin), in a direction not present when it was trained; or
* a covariate shift (a feature's PSI at least the threshold) not yet in the training data, on new batches whose
  calibration cannot be judged (too few events, no outcomes, no champion to judge it).

A covariate shift with a champion still calibrated on the new batches is no reason to refit: it is a warning.
"The same shift" is what the last training recorded (:class:`ShiftRecord`): a covariate shift, by feature and
direction, once its batches are in the training data (a property of the data: the registry is append-only, so
those batches stay in every later training, and no refit removes a shift between new batches and training data
the old batches dominate); a calibration drift, by measure and direction, when it was present on the new batches at
the last training (a property of the model: the champion was refitted with it and did not lose it; a drift that
shares one finding with it, say the same O/E direction with a slope now off too, is the same drift). The same shift
never triggers a retraining twice. Otherwise keep the champions.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from models.drift import shift_signature


@dataclass(frozen=True)
class RetrainPolicy:
    """Thresholds of the retraining policy (recorded in the manifest with each decision)."""

    min_new_events: int = 100  # new leakage events (any, per level) since the last training, at least
    new_events_fraction: float = 0.2  # ... and at least this fraction of the events the models were trained on
    max_age_days: int = 365
    psi_threshold: float = 0.25  # the usual "major shift" band of the population stability index


@dataclass(frozen=True)
class ShiftRecord:
    """The shifts the models were trained with: recorded with each training, read by the next decisions.

    ``features``: covariate shifts whose batches are in the training data, ``"<feature>: <direction>"``
    (:func:`models.drift.shift_signature`), every one seen at any training so far. ``calibration``: the champion's
    calibration drifts on the new batches at the last training, ``"<measure>: <which way>"``.
    """

    features: tuple[str, ...] = ()
    calibration: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        return {"features": list(self.features), "calibration": list(self.calibration)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any] | None) -> ShiftRecord:
        """The record of ``trained.json`` (None or absent: a training from before the record, nothing seen).

        Raises
        ------
        ValueError
            ``features`` or ``calibration`` is not a list of texts.
        """
        if not record:
            return cls()
        lists = {key: record.get(key) or [] for key in ("features", "calibration")}
        for key, values in lists.items():
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"the shift record's {key} must be a list of texts; got {values!r}")
        return cls(features=tuple(lists["features"]), calibration=tuple(lists["calibration"]))


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
    seen: ShiftRecord = ShiftRecord()  # the shifts recorded at the last training


@dataclass(frozen=True)
class PolicyDecision:
    """Whether to retrain, why (one sentence; no count from 1 to 10 in it), the warnings, and the record to keep.

    ``warnings``: covariate shifts of the new batches and calibration drifts the models were already trained with,
    in words (JSON-ready with :meth:`to_dict`). ``seen``: the :class:`ShiftRecord` a training now records (the
    previous covariate shifts and those of the new batches; the calibration drifts of the new batches, or the
    previous ones when the calibration could not be judged).
    """

    retrain: bool
    reason: str
    warnings: tuple[str, ...] = ()
    seen: ShiftRecord = field(default_factory=ShiftRecord)

    def to_dict(self) -> dict[str, object]:
        return {"retrain": self.retrain, "reason": self.reason, "warnings": list(self.warnings),
                "seen": self.seen.to_dict()}


def events_needed(inputs: RetrainInputs, policy: RetrainPolicy) -> int:
    """New leakage events that call for retraining: the floor, or a fraction of the training events if larger.

    A fixed count alone would retrain a large registry every night (a 1% batch of 1,000,000 procedures brings
    thousands of events) although so few new outcomes barely move a model fitted on hundreds of thousands.
    """
    if inputs.trained_events is None:
        return policy.min_new_events
    return max(policy.min_new_events, math.ceil(policy.new_events_fraction * inputs.trained_events))


def decide_retraining(inputs: RetrainInputs, *, policy: RetrainPolicy = RetrainPolicy()) -> PolicyDecision:
    """Whether to retrain now, why, and the warnings (see the module's docstring for the rule and its order).

    Raises
    ------
    ValueError
        A threshold or count is negative.
    """
    if (min(policy.min_new_events, policy.max_age_days, inputs.new_events, inputs.trained_events or 0) < 0
            or policy.psi_threshold <= 0 or policy.new_events_fraction < 0):
        raise ValueError("policy thresholds and the count of new events must be non-negative "
                         f"(psi_threshold positive); got {policy} and {inputs.new_events} new events")
    shift = _Shift.of(inputs.drift, inputs.seen)
    needed = events_needed(inputs, policy)
    warnings = shift.warnings(needed=needed, policy=policy)

    def decision(retrain: bool, reason: str) -> PolicyDecision:
        return PolicyDecision(retrain=retrain, reason=reason, warnings=warnings, seen=shift.record)

    if inputs.registrations == 0:
        return decision(False, "the registry is empty: nothing to train on")
    if inputs.asked:
        return decision(True, "retraining was asked for (--retrain)")
    if inputs.last_registrations is None:
        return decision(True, "no model has been trained in this workspace yet")
    age = None if inputs.trained_on is None else (inputs.today - inputs.trained_on).days
    if age is not None and age > policy.max_age_days:
        return decision(True, f"the models are {age} days old, beyond the maximum of {policy.max_age_days}")
    added = inputs.registrations - inputs.last_registrations
    if added <= 0:
        return decision(False, "the registry is unchanged since the models were trained (no batch registered since)")
    if inputs.new_events >= needed:
        return decision(True, f"{inputs.new_events:,} new leakage events since the last training "
                              f"({_batches(added)} registered since; the policy retrains from {needed:,})")
    if shift.new_calibration:
        return decision(True, "the new batches drifted: " + "; ".join(shift.drift.get("reasons", []))
                        + shift.accompanied())
    if shift.new_features and not shift.judged:
        return decision(True, "the new batches show a covariate shift not yet in the training data ("
                        + "; ".join(_psi_text(row) for row in shift.new_features)
                        + f") and the champion's calibration on them cannot be judged ({shift.why_unjudged()})")
    age_text = "" if age is None else f", and the models are {age} days old (maximum {policy.max_age_days})"
    return decision(False, f"the registry grew ({_batches(added)} registered since the last training) with fewer "
                           f"than {needed:,} new leakage events {shift.kept()}{age_text}: the champions stay")


@dataclass(frozen=True)
class _Shift:
    """The drift of the new batches set against the shifts the models were trained with."""

    drift: Mapping[str, Any]
    seen: ShiftRecord
    measured: bool

    @classmethod
    def of(cls, drift: Mapping[str, Any] | None, seen: ShiftRecord) -> _Shift:
        return cls(drift=drift or {}, seen=seen, measured=drift is not None)

    @property
    def rows(self) -> list[Mapping[str, Any]]:
        return list(self.drift.get("covariate_shift") or [])

    @property
    def new_features(self) -> list[Mapping[str, Any]]:
        return [row for row in self.rows if shift_signature(dict(row)) not in self.seen.features]

    @property
    def judged(self) -> bool:
        return bool(self.drift.get("calibration_judged"))

    @property
    def directions(self) -> list[str]:
        return list(self.drift.get("calibration_directions") or []) if self.drift.get("drifted") else []

    @property
    def new_calibration(self) -> list[str]:
        """The calibration drift of the new batches when none of its findings was there at the last training."""
        return [] if set(self.directions) & set(self.seen.calibration) else self.directions

    @property
    def record(self) -> ShiftRecord:
        features = sorted({*self.seen.features, *(shift_signature(dict(row)) for row in self.rows)})
        calibration = tuple(self.directions) if self.measured and self.judged else self.seen.calibration
        return ShiftRecord(features=tuple(features), calibration=calibration)

    def warnings(self, *, needed: int, policy: RetrainPolicy) -> tuple[str, ...]:
        calibrated = self.judged and not self.directions
        texts = [f"covariate shift, no reason to refit by itself: {_psi_text(row)}, "
                 + ("already in the training data (seen when the models were last trained)"
                    if shift_signature(dict(row)) in self.seen.features else "new since the last training")
                 + ("; the champion stays calibrated on the new batches" if calibrated else "")
                 for row in self.rows]
        if self.directions and not self.new_calibration:
            texts.append("calibration drift the champion was trained with: " + "; ".join(self.drift.get("reasons", []))
                         + "; the same drift was present on the new batches when the models were last trained, so "
                         "refitting on a registry the earlier batches dominate would not remove it; the models "
                         f"retrain at {needed:,} new leakage events, at {policy.max_age_days} days, or when asked "
                         "(--retrain)")
        return tuple(texts)

    def accompanied(self) -> str:
        """The covariate shift that comes with a calibration drift, for the reason; empty without one."""
        return "; with a covariate shift: " + "; ".join(_psi_text(row) for row in self.rows) if self.rows else ""

    def why_unjudged(self) -> str:
        refused = self.drift.get("champion_refused")
        return f"the champion was refused: {refused}" if refused else str(
            self.drift.get("calibration_reason") or "no outcomes or no champion to judge it")

    def kept(self) -> str:
        """Why a grown registry keeps its champions, as far as the drift goes (words after the event count)."""
        if self.directions:
            return ("and a calibration drift the champion was trained with (the same shift, not refitted for "
                    "again: see the warnings)")
        if self.rows and self.judged:
            return ("and no calibration drift of the champion on the new batches (a covariate shift only: see the "
                    "warnings)")
        if self.rows:
            return "and a covariate shift already in the training data (see the warnings)"
        return "and no drift beyond the thresholds"


def _psi_text(row: Mapping[str, Any]) -> str:
    return (f"PSI of {row['feature']} is {float(row['psi']):.3f} "
            f"({row['band']} shift: {row.get('direction', 'unknown')})")


def _batches(n: int) -> str:
    """'1 batch', '12 batches' (a count of batches, not of patients: never withheld)."""
    return f"{n} batch" if n == 1 else f"{n} batches"
