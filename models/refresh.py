"""Refresh the models of a workspace from its registry and write ``runs/<run_id>/metrics.json``.

Models are retrained when the registry has changed since they were last trained (its watermark moved),
when no model was ever trained, or when asked (``retrain``). metrics.json holds no time stamp and no run
id, so the same registry, code and seed give the same bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from models import store
from models.outcomes import OUTCOMES
from models.training import TrainingConfig, train_all
from records.manifest import RUNS_DIR, code_version
from records.registry import load_state, read_registry_table
from records.schema import LEVELS, PROCEDURES

METRICS_FILE = "metrics.json"
TRAINED_FILE = "trained.json"
METRICS_DIR = "metrics"  # workspace/models/metrics/<outcome>/<version>.json and latest.json
LATEST = "latest"


@dataclass(frozen=True)
class ModelsSummary:
    """What the models step did, for the manifest."""

    trained: bool
    reason: str
    metrics_path: str | None = None
    outcomes: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def should_retrain(workspace: Path, *, retrain: bool) -> tuple[bool, str]:
    """Whether to train now, and the reason in words."""
    watermark = load_state(workspace).watermark
    if watermark == 0:
        return False, "the registry is empty: nothing to train on"
    if retrain:
        return True, "retraining was asked for (--retrain)"
    trained = Path(workspace) / "models" / TRAINED_FILE
    if not trained.exists():
        return True, "no model has been trained in this workspace yet"
    last = json.loads(trained.read_text(encoding="utf-8"))["watermark"]
    if last != watermark:
        return True, f"the registry grew since the models were trained (watermark {last} -> {watermark})"
    return False, f"the registry is unchanged since the models were trained (watermark {watermark})"


def refresh_models(workspace: Path, *, run_id: str, config: TrainingConfig, retrain: bool = False) -> ModelsSummary:
    """Train every outcome when :func:`should_retrain` says so; write metrics.json into the run folder."""
    go, reason = should_retrain(workspace, retrain=retrain)
    if not go:
        return ModelsSummary(trained=False, reason=reason)
    state = load_state(workspace)
    procedures = read_registry_table(workspace, PROCEDURES, state=state)
    levels = read_registry_table(workspace, LEVELS, state=state)
    results = train_all(procedures, levels, config=config, workspace=workspace)
    metrics = {
        "code_version": code_version(),
        "config": asdict(config),
        "registry": {"watermark": state.watermark, "procedures": len(procedures), "levels": len(levels)},
        "outcomes": {name: result.metrics for name, result in results.items()},
    }
    path = Path(workspace) / RUNS_DIR / run_id / METRICS_FILE
    _write_json(path, metrics)
    for name, result in results.items():
        folder = Path(workspace) / store.MODELS_DIR / METRICS_DIR / name
        if result.version is not None:
            _write_json(folder / f"{result.version}.json", result.metrics)
        _write_json(folder / f"{LATEST}.json", result.metrics)
    _write_json(Path(workspace) / "models" / TRAINED_FILE, {"watermark": state.watermark})
    outcomes = {name: {"fitted": r.fitted, "version": r.version, "champion": r.champion}
                for name, r in results.items()}
    return ModelsSummary(trained=True, reason=reason, metrics_path=str(path), outcomes=outcomes)


def published_model_metrics(workspace: Path) -> dict[str, dict[str, object]]:
    """Each outcome's figures as the report shows them: those of its champion, else of its latest training.

    An outcome never trained in this workspace is reported as such.
    """
    out: dict[str, dict[str, object]] = {}
    for spec in OUTCOMES:
        folder = Path(workspace) / store.MODELS_DIR / METRICS_DIR / spec.name
        version = store.champion(workspace, spec.name)
        paths = [folder / f"{version}.json"] if version else []
        path = next((p for p in [*paths, folder / f"{LATEST}.json"] if p.exists()), None)
        if path is not None:
            out[spec.name] = json.loads(path.read_text(encoding="utf-8"))
        else:
            out[spec.name] = {"outcome": spec.name, "status": "not_trained",
                              "reason": "no model has been trained for this outcome in this workspace"}
    return out


def metrics_json(metrics: dict[str, object]) -> str:
    """Stable JSON text: fixed key order as built, two-space indent, no NaN."""
    return json.dumps(metrics, indent=2, allow_nan=False) + "\n"


def _write_json(path: Path, payload: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(metrics_json(payload), encoding="utf-8")
    os.replace(tmp, path)
