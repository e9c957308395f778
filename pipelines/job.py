"""The run as one sequence of steps, the same with or without Prefect: ingest, then models.

``pipelines.flows`` passes Prefect tasks as the steps; the CLI's ``--engine local`` passes the plain
functions. Nothing here imports Prefect.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from models.refresh import ModelsSummary, refresh_models
from models.training import TrainingConfig
from records import ingest
from records.manifest import STATUS_FAILED, utc_now, write_manifest


@dataclass(frozen=True)
class JobSteps:
    """The ingest steps and the models step."""

    ingest: ingest.IngestSteps = ingest.PLAIN_STEPS
    models: Callable[..., ModelsSummary] = refresh_models


PLAIN = JobSteps()


def run_job(source: str | Path, workspace: Path, *, run_id: str, steps: JobSteps = PLAIN,
            config: TrainingConfig = TrainingConfig(), retrain: bool = False, train: bool = True,
            as_of_year: int | None = None,
            on_step: Callable[[str], None] | None = None) -> ingest.IngestOutcome:
    """Ingest a source, then refresh the models; the manifest records both.

    Raises
    ------
    InputError
        The input was refused (manifest written, nothing registered, no model trained).
    """
    outcome = ingest.run_ingest(source, workspace, run_id=run_id, as_of_year=as_of_year, steps=steps.ingest,
                                on_step=on_step)
    manifest = outcome.manifest
    if not train:
        manifest.models = {"trained": False, "reason": "model training was switched off (--no-models)"}
        return ingest.IngestOutcome(manifest=manifest, manifest_path=write_manifest(workspace, manifest))
    if on_step is not None:
        on_step("models")
    start = time.perf_counter()
    try:
        summary = steps.models(workspace, run_id=run_id, config=config, retrain=retrain)
    except Exception as error:
        manifest.status = STATUS_FAILED
        manifest.reason = f"models: {type(error).__name__}: {error}"
        manifest.timings_seconds["models"] = round(time.perf_counter() - start, 4)
        manifest.finished_at = utc_now()
        write_manifest(workspace, manifest)
        raise
    manifest.models = summary.to_dict()
    manifest.timings_seconds["models"] = round(time.perf_counter() - start, 4)
    manifest.finished_at = utc_now()
    return ingest.IngestOutcome(manifest=manifest, manifest_path=write_manifest(workspace, manifest))
