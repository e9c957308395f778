"""The run flow: Prefect tasks that call the plain functions of ``records`` and ``models``; nothing else.

Call ``pipelines.prefect_env.configure_prefect`` before importing this module.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models.refresh import refresh_models
from models.training import TrainingConfig
from pipelines.job import JobSteps, run_job
from records import ingest
from records.errors import SourceUnavailable
from reports.publish import publish_reports
from reports.summary import run_summary_markdown


def _retry_when_unavailable(task_obj: object, task_run: object, state: object) -> bool:
    """Retry reading only when the source could not be reached; a bad input is final."""
    try:
        error = state.result(raise_on_failure=False)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an unreadable state is treated as transient
        return True
    return isinstance(error, SourceUnavailable)


read_task = task(ingest.load_batch, name="read source", retries=2, retry_delay_seconds=[2, 8],
                 retry_condition_fn=_retry_when_unavailable, cache_policy=NO_CACHE)
guard_task = task(ingest.screen_batch, name="refuse identifiers", cache_policy=NO_CACHE)
validate_task = task(ingest.check_batch, name="check contract", cache_policy=NO_CACHE)
register_task = task(ingest.register, name="register", cache_policy=NO_CACHE)
models_task = task(refresh_models, name="refresh models", cache_policy=NO_CACHE)
reports_task = task(publish_reports, name="publish reports", cache_policy=NO_CACHE)
PREFECT_STEPS = JobSteps(
    ingest=ingest.IngestSteps(read=read_task, guard=guard_task, validate=validate_task, register=register_task),
    models=models_task, reports=reports_task)


@task(name="summarise the run", cache_policy=NO_CACHE)
def summarise_task(manifest: dict) -> None:
    """The night's story as a markdown artifact in the Prefect UI."""
    create_markdown_artifact(key="cementrisk-run-summary", markdown=run_summary_markdown(manifest),
                             description=f"cementrisk run {manifest['run_id']}")


@flow(name="cementrisk-run", validate_parameters=False)
def run_flow(source: str, workspace: Path, run_id: str, retrain: bool = False, train: bool = True,
             seed: int = TrainingConfig.seed, lock_wait_seconds: float = 0.0) -> ingest.IngestOutcome:
    """Load, screen, check and register one source; refresh the models; publish; summarise for the UI."""
    outcome = run_job(source, workspace, run_id=run_id, steps=PREFECT_STEPS, config=TrainingConfig(seed=seed),
                      retrain=retrain, train=train, lock_wait_seconds=lock_wait_seconds)
    summarise_task(asdict(outcome.manifest))
    return outcome
