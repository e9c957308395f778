"""The run as one sequence of steps, the same with or without Prefect: ingest, models, reports.

``pipelines.flows`` passes Prefect tasks as the steps; the CLI's ``--engine local`` passes the plain
functions. Nothing here imports Prefect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from models.refresh import ModelsSummary, refresh_models
from models.training import TrainingConfig
from pipelines import ingest
from workspace.manifest import STATUS_FAILED, RunManifest, utc_now, write_manifest
from workspace.transaction import workspace_lock
from reports.publish import ReportSummary, current_published_run, publish_reports, publish_run


@dataclass(frozen=True)
class JobSteps:
    """The ingest steps, the models step and the reports step."""

    ingest: ingest.IngestSteps = ingest.PLAIN_STEPS
    models: Callable[..., ModelsSummary] = refresh_models
    reports: Callable[..., ReportSummary] = publish_reports


PLAIN = JobSteps()


def run_job(source: str | Path, workspace: Path, *, run_id: str, steps: JobSteps = PLAIN,
            config: TrainingConfig = TrainingConfig(), retrain: bool = False, train: bool = True,
            as_of_year: int | None = None, lock_wait_seconds: float = 0.0,
            on_step: Callable[[str], None] | None = None) -> ingest.IngestOutcome:
    """Ingest a source, refresh the models, publish the reports; the manifest records every step.

    The whole run holds the workspace's lock; ``published.json`` switches to this run only after every
    file of the run is written and checked, so a run that fails leaves the previous one published.

    Raises
    ------
    InputError
        The input was refused (manifest written, nothing registered, no model trained).
    WorkspaceBusy
        Another run holds the workspace (nothing written).
    """
    with workspace_lock(workspace, run_id=run_id, wait_seconds=lock_wait_seconds):
        return _run_locked(source, workspace, run_id=run_id, steps=steps, config=config, retrain=retrain,
                           train=train, as_of_year=as_of_year, on_step=on_step)


def _run_locked(source: str | Path, workspace: Path, *, run_id: str, steps: JobSteps, config: TrainingConfig,
                retrain: bool, train: bool, as_of_year: int | None,
                on_step: Callable[[str], None] | None) -> ingest.IngestOutcome:
    outcome = ingest.run_ingest(source, workspace, run_id=run_id, as_of_year=as_of_year, steps=steps.ingest,
                                on_step=on_step)
    manifest = outcome.manifest
    if not train:
        manifest.models = {"trained": False, "reason": "model training was switched off (--no-models)"}
    else:
        _step(manifest, workspace, "models", on_step, lambda: _models(steps, workspace, run_id, config, retrain,
                                                                        manifest))
    standing = current_published_run(workspace)
    if standing is not None and not manifest.batches_loaded:
        manifest.outputs = {"published": standing,
                            "notes": [f"nothing new: no batch loaded, no model changed; the report of run {standing} "
                                      "still stands and stays published"]}
        manifest.finished_at = utc_now()
        return ingest.IngestOutcome(manifest=manifest, manifest_path=write_manifest(workspace, manifest))
    _step(manifest, workspace, "report", on_step, lambda: _reports(steps, workspace, run_id, manifest))
    manifest.finished_at = utc_now()
    path = write_manifest(workspace, manifest)
    publish_run(workspace, run_id=run_id)
    return ingest.IngestOutcome(manifest=manifest, manifest_path=path)


def _models(steps: JobSteps, workspace: Path, run_id: str, config: TrainingConfig, retrain: bool,
            manifest: RunManifest) -> None:
    manifest.models = steps.models(workspace, run_id=run_id, config=config, retrain=retrain).to_dict()


def _reports(steps: JobSteps, workspace: Path, run_id: str, manifest: RunManifest) -> None:
    manifest.outputs = steps.reports(workspace, run_id=run_id, manifest=asdict(manifest)).to_dict()


def _step(manifest: RunManifest, workspace: Path, name: str, on_step: Callable[[str], None] | None,
          action: Callable[[], None]) -> None:
    """Run one step, timing it; a failure is written to the manifest before it propagates."""
    if on_step is not None:
        on_step(name)
    start = time.perf_counter()
    try:
        action()
    except Exception as error:
        manifest.status = STATUS_FAILED
        manifest.reason = f"{name}: {type(error).__name__}: {error}"
        manifest.timings_seconds[name] = round(time.perf_counter() - start, 4)
        manifest.finished_at = utc_now()
        write_manifest(workspace, manifest)
        raise
    manifest.timings_seconds[name] = round(time.perf_counter() - start, 4)
