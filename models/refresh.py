"""Refresh the models of a workspace from its registry; keep each outcome's figures in the workspace's model state.

Models are retrained as the retraining policy (:mod:`models.policy`) says: when asked (``retrain``), when
no model was ever trained, when enough new outcomes arrived, when the champion's calibration drifts on the new
batches (or a covariate shift arrives that the calibration cannot judge) for a shift not yet trained with, or when
the models are too old; a covariate shift alone is a warning. Each training records the shifts it was trained with
(``trained.json``, ``shift``), so the same shift never triggers twice.

The run's ``metrics.json`` is written once, by the report step (:mod:`reports.publish`): it carries the published
models' figures (each with the training configuration that made it), which this step keeps per outcome and version
(:mod:`workspace.model_state`). The figures hold no time stamp and no run id, so the same registry, code and seed
give the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import json
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.matrices import build_level_frame
from models import store
from models.drift import batch_calibration, drift_summary, feature_drift
from models.outcomes import OUTCOMES, OUTCOMES_BY_NAME
from models.policy import RetrainInputs, RetrainPolicy, ShiftRecord, decide_retraining
from models.training import TRUSTED_OURS, OutcomeResult, TrainingConfig, model_frames, train_outcome_from
from records import schema as s
from workspace import model_state, runs
from workspace.ledger import load_ledger
from workspace.registry import read_registry_table
from records.schema import LEVELS, PROCEDURES

METRICS_FILE = "metrics.json"
REFERENCE_ROWS = 100_000
MONITORED_OUTCOME = "leakage_any"
MIN_DRIFT_ROWS = 500  # PSI of fewer new level rows is mostly sampling noise (empty bins)


@dataclass(frozen=True)
class ModelsSummary:
    """What the models step did, for the manifest."""

    trained: bool
    reason: str
    outcomes: dict[str, dict[str, object]] = field(default_factory=dict)
    drift: dict[str, object] | None = None
    policy: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # covariate shifts and known drifts, for the report and UI

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class RetrainDecision:
    """Whether the models are retrained this run, why, the drift of the new batches (when measured), the warnings
    (covariate shifts, calibration drifts already trained with) and the shift record a training now keeps."""

    retrain: bool
    reason: str
    drift: dict[str, object] | None = None
    policy: dict[str, object] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seen: dict[str, list[str]] = field(default_factory=dict)


def should_retrain(workspace: Path, *, retrain: bool, policy: RetrainPolicy = RetrainPolicy(),
                   today: _dt.date | None = None) -> tuple[bool, str]:
    """Whether to train now, and the reason in words (see :func:`retrain_decision`)."""
    decision = retrain_decision(workspace, retrain=retrain, policy=policy, today=today)
    return decision.retrain, decision.reason


def retrain_decision(workspace: Path, *, retrain: bool, policy: RetrainPolicy = RetrainPolicy(),
                     today: _dt.date | None = None) -> RetrainDecision:
    """Apply the retraining policy (:mod:`models.policy`) to the workspace as it stands.

    Reads only the batches registered since the last training: new leakage events, and the drift of
    their features against the training reference sample and of the champion's calibration on them; and the
    shifts the last training recorded.
    """
    ledger = load_ledger(workspace)
    trained = _read_trained(workspace)
    last = _trained_sequence(trained, ledger)
    new_batches = ledger.since(last) if last is not None else []
    drift, new_events = None, 0
    if new_batches:
        new = ledger.subset(new_batches)
        procedures = read_registry_table(workspace, PROCEDURES, ledger=new)
        levels = read_registry_table(workspace, LEVELS, ledger=new)
        new_events = int(levels[s.LEAKAGE].fillna(False).astype(bool).sum())
        drift = measure_drift(workspace, procedures, levels, psi_threshold=policy.psi_threshold)
    inputs = RetrainInputs(asked=retrain, registrations=ledger.sequence if ledger.batches else 0,
                           last_registrations=last,
                           trained_on=_dt.date.fromisoformat(trained["trained_on"]) if trained.get("trained_on")
                           else None, today=today or _dt.date.today(), new_events=new_events, drift=drift,
                           trained_events=int(trained["events"]) if trained.get("events") is not None else None,
                           seen=ShiftRecord.from_dict(trained.get("shift")))  # type: ignore[arg-type]
    decision = decide_retraining(inputs, policy=policy)
    return RetrainDecision(retrain=decision.retrain, reason=decision.reason, drift=drift, policy=asdict(policy),
                           warnings=list(decision.warnings), seen=decision.seen.to_dict())


def measure_drift(workspace: Path, procedures: pd.DataFrame, levels: pd.DataFrame, *,
                  psi_threshold: float) -> dict[str, object] | None:
    """Feature PSI of new level rows against the training reference, and the any-leakage champion's calibration
    on the new rows with outcomes; None when no reference sample was stored or the new batches hold fewer
    than :data:`MIN_DRIFT_ROWS` level rows (too few to tell drift from chance)."""
    stored = model_state.read_reference(workspace)
    if stored is None or len(levels) < MIN_DRIFT_ROWS:
        return None
    spec = OUTCOMES_BY_NAME[MONITORED_OUTCOME]
    reference = pd.read_parquet(io.BytesIO(stored))
    frame = build_level_frame(procedures, levels)
    predict, refused = None, None
    if store.champion(workspace, spec.name) is not None and spec.labels(frame)[0].any():
        try:
            model = store.load_model(workspace, outcome=spec.name, extra_trusted=TRUSTED_OURS)
        except store.ModelIntegrityError as error:  # never used, not even to measure drift; training replaces it
            refused = str(error)
        else:
            predict = model.estimator.predict_proba
    summary = drift_of_batches(reference, frame, predict_proba=predict, psi_threshold=psi_threshold)
    if refused is not None:
        summary["champion_refused"] = refused
    return summary


def drift_of_batches(reference: pd.DataFrame, frame: pd.DataFrame, *,
                     predict_proba: Callable[[pd.DataFrame], np.ndarray] | None,
                     psi_threshold: float) -> dict[str, object]:
    """The drift of new batches, JSON-ready: feature PSI of their level frame against the training reference, and
    the monitored champion's calibration on their rows with outcomes.

    Parameters
    ----------
    reference
        The training reference sample (a column per feature of the monitored outcome).
    frame
        The level frame of the new batches (:func:`features.matrices.build_level_frame`).
    predict_proba
        The champion's ``predict_proba`` (features -> array of shape (n, 2)); None: no champion to judge.
    psi_threshold
        As :func:`models.drift.drift_summary`.

    Returns
    -------
    dict
        ``features`` (:func:`models.drift.feature_drift`), ``calibration`` (:func:`models.drift.batch_calibration`,
        None without a champion or outcomes) and the keys of :func:`models.drift.drift_summary`.
    """
    spec = OUTCOMES_BY_NAME[MONITORED_OUTCOME]
    features = feature_drift(reference, frame, features=spec.features)
    calibration = None
    eligible, y = spec.labels(frame)
    if predict_proba is not None and eligible.any():
        calibration = batch_calibration(y, predict_proba(frame.loc[eligible, spec.feature_names])[:, 1])
    return {"features": features, "calibration": calibration,
            **drift_summary(features, calibration, psi_threshold=psi_threshold)}


def _trained_sequence(trained: dict[str, object], ledger: object) -> int | None:
    """The ledger's registration number at the last training (None: never trained). A ``trained.json`` from before
    the ledger holds the highest batch then registered: the registrations of the batches up to it."""
    if trained.get("sequence") is not None:
        return int(trained["sequence"])
    if trained.get("watermark") is None:
        return None
    old = int(trained["watermark"])
    return max((int(e.get("sequence", 0)) for b, e in ledger.batches.items() if b <= old), default=0)


def _read_trained(workspace: Path) -> dict[str, object]:
    return model_state.read_trained(workspace)


def _save_reference(workspace: Path, procedures: pd.DataFrame, levels: pd.DataFrame, *, seed: int) -> None:
    """A seeded sample of the training level rows' features: the reference of the drift checks."""
    spec = OUTCOMES_BY_NAME[MONITORED_OUTCOME]
    frame = build_level_frame(procedures, levels)[spec.feature_names]
    if len(frame) > REFERENCE_ROWS:
        frame = frame.sample(n=REFERENCE_ROWS, random_state=seed)
    buffer = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buffer, index=False)
    model_state.write_reference(workspace, buffer.getvalue())


FitOutcomes = Callable[[Path, Path, TrainingConfig], dict[str, OutcomeResult]]
"""``fit(workspace, frames_dir, config)`` -> each outcome's result, in :data:`OUTCOMES` order."""


def fit_here(workspace: Path, frames_dir: Path, config: TrainingConfig) -> dict[str, OutcomeResult]:
    """Fit the outcomes one after the other in this process (the default; the Prefect flow fans them out)."""
    return {spec.name: train_outcome_from(spec.name, frames_dir, config=config, workspace=workspace)
            for spec in OUTCOMES}


def refresh_models(workspace: Path, *, run_id: str, config: TrainingConfig, retrain: bool = False,
                   policy: RetrainPolicy = RetrainPolicy(), fit: FitOutcomes = fit_here) -> ModelsSummary:
    """Train every outcome when the retraining policy says so; keep each one's figures (its latest, and its
    version's) for the report step, which publishes the champions' figures in the run's metrics.json.

    The model frames are written once to ``<workspace>/scratch/<run_id>/`` and ``fit`` trains each outcome from
    them (here, or as separate tasks on a cluster); the folder is removed afterwards.
    """
    decision = retrain_decision(workspace, retrain=retrain, policy=policy)
    if not decision.retrain:
        return ModelsSummary(trained=False, reason=decision.reason, drift=decision.drift, policy=decision.policy,
                             warnings=decision.warnings)
    ledger = load_ledger(workspace)
    procedures = read_registry_table(workspace, PROCEDURES, ledger=ledger)
    levels = read_registry_table(workspace, LEVELS, ledger=ledger)
    with runs.scratch_frames(workspace, run_id, model_frames(procedures, levels)) as frames_dir:
        results = fit(Path(workspace), frames_dir, config)
    for name, result in results.items():  # the workspace's state: staged with the run, kept only if it commits
        model_state.write_outcome_metrics(workspace, outcome=name, version=result.version,
                                          text=metrics_json(result.metrics))
    seen = dict(decision.seen)
    judged = results.get(MONITORED_OUTCOME)
    if judged is None or not judged.champion:  # the drifting champion was kept: its drift is not "trained with"
        seen["calibration"] = list((_read_trained(workspace).get("shift") or {}).get("calibration") or [])
    _save_reference(workspace, procedures, levels, seed=config.seed)
    model_state.write_trained(workspace, {"sequence": ledger.sequence, "trained_on": _dt.date.today().isoformat(),
                                          "events": int(levels[s.LEAKAGE].fillna(False).astype(bool).sum()),
                                          "shift": seen})
    outcomes = {name: {"fitted": r.fitted, "version": r.version, "champion": r.champion}
                for name, r in results.items()}
    return ModelsSummary(trained=True, reason=decision.reason, outcomes=outcomes,
                         drift=decision.drift, policy=decision.policy, warnings=decision.warnings)


def published_model_metrics(workspace: Path) -> dict[str, dict[str, object]]:
    """Each outcome's figures as the report shows them: those of its champion, else of its latest training.

    An outcome never trained in this workspace is reported as such.
    """
    out: dict[str, dict[str, object]] = {}
    for spec in OUTCOMES:
        figures = model_state.read_outcome_metrics(workspace, outcome=spec.name,
                                                   version=store.champion(workspace, spec.name))
        out[spec.name] = figures if figures is not None else {
            "outcome": spec.name, "status": "not_trained",
            "reason": "no model has been trained for this outcome in this workspace"}
    return out


def metrics_json(metrics: dict[str, object]) -> str:
    """Stable JSON text: fixed key order as built, two-space indent, no NaN."""
    return json.dumps(metrics, indent=2, allow_nan=False) + "\n"
