"""The run as one sequence of steps, the same with or without Prefect: ingest, models, reports.

``pipelines.flows`` passes Prefect tasks as the steps; the CLI's ``--engine local`` passes the plain
functions. Nothing here imports Prefect.

The manifest tells the truth at every moment: ``running`` from the start, ``refused`` or ``failed`` with the reason
when the run ends so, and ``ok`` only through the run's commit (the final manifest is staged with the run's other
state, :func:`workspace.manifest.write_manifest`), so a run that rolls back (a full disk, a kill) never shows ``ok``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path

from models.refresh import ModelsSummary, refresh_models
from models.training import TrainingConfig
from pipelines import ingest
from reports.publish import ReportSummary, current_published_run, publish_reports, publish_run
from workspace.manifest import STATUS_FAILED, STATUS_OK, RunManifest, mark_failed, utc_now, write_manifest
from workspace.retention import RetentionError, RetentionPolicy, prune_workspace
from workspace.transaction import CommitIncomplete, WorkspaceBusy, workspace_lock


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
            on_step: Callable[[str], None] | None = None, replacing: Collection[int] = (),
            verify_registered: bool = False, retention: RetentionPolicy | None = None) -> ingest.IngestOutcome:
    """Ingest a source, refresh the models, publish the reports; the manifest records every step.

    The whole run holds the workspace's lock; ``published.json`` switches to this run only after every
    file of the run is written and checked, so a run that fails leaves the previous one published.

    Parameters
    ----------
    replacing
        Registered batches the source corrects (``--replace-batch``): their registered rows go to the registry's
        history, the source's rows take their place, and the run re-scores and republishes.
    verify_registered
        Read every row of a database or Parquet-folder source (not only the unregistered batches), so that every
        registered batch it holds is compared with its recorded content, not only its row counts.
    retention
        Prune the workspace at the run's end, inside its lock (:func:`workspace.retention.prune_workspace`); None
        keeps everything.

    Raises
    ------
    InputError
        The input was refused as a whole (manifest ``refused``, the refusal noted in the ledger, nothing registered,
        no model trained). A batch refused alone (sent again with other content) does not raise: the outcome's
        manifest lists it in ``batches_refused``.
    WorkspaceBusy
        Another run holds the workspace (nothing written).
    """
    try:
        with workspace_lock(workspace, run_id=run_id, wait_seconds=lock_wait_seconds):
            outcome = _run_locked(source, workspace, run_id=run_id, steps=steps, config=config, retrain=retrain,
                                  train=train, as_of_year=as_of_year, on_step=on_step, replacing=replacing,
                                  verify_registered=verify_registered, retention=retention)
    except (WorkspaceBusy, CommitIncomplete):  # nothing of this run was written, or all of it was committed
        raise
    except BaseException as error:  # the run rolled back: its visible manifest must not say running (or ok)
        mark_failed(workspace, run_id, reason=_reason("run", error))
        raise
    if outcome.refusal is not None:
        raise outcome.refusal
    return outcome


def _run_locked(source: str | Path, workspace: Path, *, run_id: str, steps: JobSteps, config: TrainingConfig,
                retrain: bool, train: bool, as_of_year: int | None, on_step: Callable[[str], None] | None,
                replacing: Collection[int], verify_registered: bool,
                retention: RetentionPolicy | None = None) -> ingest.IngestOutcome:
    manifest = ingest.start_manifest(source, workspace, run_id=run_id)
    write_manifest(workspace, manifest)  # status running: a run that dies leaves a record the next run can close
    outcome = ingest.run_ingest(source, workspace, run_id=run_id, as_of_year=as_of_year, steps=steps.ingest,
                                on_step=on_step, replacing=replacing, manifest=manifest, last_step=False,
                                verify_registered=verify_registered)
    if outcome.refusal is not None:
        return outcome
    if not train:
        manifest.models = {"trained": False, "reason": "model training was switched off (--no-models)"}
    else:
        _step(manifest, workspace, "models", on_step, lambda: _models(steps, workspace, run_id, config, retrain,
                                                                        manifest))
    standing = current_published_run(workspace)
    if standing is not None and not manifest.batches_loaded and not _champion_changed(manifest):
        manifest.status = STATUS_OK
        manifest.outputs = {"published": standing,
                            "notes": [f"nothing new: no batch loaded, no model changed; the report of run {standing} "
                                      "still stands and stays published"]}
        _prune(manifest, workspace, retention, on_step)
        manifest.finished_at = utc_now()
        return ingest.IngestOutcome(manifest=manifest,
                                    manifest_path=write_manifest(workspace, manifest, with_commit=True))
    _step(manifest, workspace, "report", on_step, lambda: _reports(steps, workspace, run_id, manifest))
    _prune(manifest, workspace, retention, on_step)
    manifest.status = STATUS_OK
    manifest.finished_at = utc_now()
    path = write_manifest(workspace, manifest, with_commit=True)
    publish_run(workspace, run_id=run_id)
    return ingest.IngestOutcome(manifest=manifest, manifest_path=path)


def _champion_changed(manifest: RunManifest) -> bool:
    """Whether the models step promoted a new champion (a retraining on an unchanged registry can): the published
    report then no longer shows the models that score, and the run must publish its own."""
    models = manifest.models or {}
    return bool(models.get("trained")) and any(isinstance(o, dict) and o.get("champion")
                                               for o in (models.get("outcomes") or {}).values())


def _models(steps: JobSteps, workspace: Path, run_id: str, config: TrainingConfig, retrain: bool,
            manifest: RunManifest) -> None:
    manifest.models = steps.models(workspace, run_id=run_id, config=config, retrain=retrain).to_dict()


def _reports(steps: JobSteps, workspace: Path, run_id: str, manifest: RunManifest) -> None:
    """The report describes the run as it is published: a run whose report is written and checked ends ``ok``."""
    described = {**asdict(manifest), "status": STATUS_OK}
    manifest.outputs = steps.reports(workspace, run_id=run_id, manifest=described).to_dict()


def _prune(manifest: RunManifest, workspace: Path, retention: RetentionPolicy | None,
           on_step: Callable[[str], None] | None) -> None:
    """Retention at the run's end, inside its lock: a prune that cannot finish is a note in the manifest, never the
    run's failure (a half-done prune is consistent; the next one completes it)."""
    if retention is None:
        return
    if on_step is not None:
        on_step("retention")
    start = time.perf_counter()
    try:
        summary = prune_workspace(workspace, retention).to_dict()
    except (OSError, RetentionError) as error:
        summary = {"error": _reason("retention", error)}
    manifest.outputs = {**(manifest.outputs or {}), "retention": summary}
    manifest.timings_seconds["retention"] = round(time.perf_counter() - start, 4)


def _reason(name: str, error: BaseException) -> str:
    return f"{name}: {type(error).__name__}: {error}"


def _step(manifest: RunManifest, workspace: Path, name: str, on_step: Callable[[str], None] | None,
          action: Callable[[], None]) -> None:
    """Run one step, timing it; a failure is written to the manifest before it propagates (when it can be)."""
    if on_step is not None:
        on_step(name)
    start = time.perf_counter()
    try:
        action()
    except Exception as error:
        manifest.status = STATUS_FAILED
        manifest.reason = _reason(name, error)
        manifest.timings_seconds[name] = round(time.perf_counter() - start, 4)
        manifest.finished_at = utc_now()
        try:
            write_manifest(workspace, manifest)
        except OSError:
            pass  # the disk is full, say: run_job marks it failed when it can, or the next run does
        raise
    manifest.timings_seconds[name] = round(time.perf_counter() - start, 4)
