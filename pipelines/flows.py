"""The run flow: Prefect tasks that call the plain functions of ``records``, ``models`` and ``reports``; nothing else.

Each outcome's fit is its own task; with ``task_runner="dask"`` the fits run instead on the Dask cluster of the flow's
prefect-dask task runner (a local one by default, or the scheduler at ``dask_address``), and each fit's
cross-validation fits are spread over the same cluster (:mod:`pipelines.dask_fanout`). Tasks that write files retry on
transient I/O errors; the reader itself tries an unreachable source again. Call
``pipelines.prefect_env.configure_prefect`` before importing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.states import Failed, State

from models.outcomes import OUTCOMES
from models.refresh import ModelsSummary, refresh_models
from models.training import OutcomeResult, TrainingConfig, train_outcome_from
from pipelines.job import JobSteps, run_job
from pipelines import ingest
from records.errors import InputError, SourceUnavailable, is_transient_write_error
from workspace.retention import RetentionPolicy
from workspace.manifest import new_run_id
from reports.publish import publish_reports
from reports.summary import run_summary_markdown, run_summary_tables

TASK_RUNNERS = ("default", "dask")


def _retry_on_transient_io(task_obj: object, task_run: object, state: object) -> bool:
    """A Prefect ``retry_condition_fn`` for the file-writing tasks: retry on an I/O error that may pass
    (records.errors.TRANSIENT_WRITE_ERRNOS), never when the failed state's error cannot be read. Safe because the
    writing steps are idempotent (the registry and the scored store record their work last, atomically, and a run's
    files are replaced whole)."""
    try:
        error = state.result(raise_on_failure=False)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an unreadable state is not known to be transient
        return False
    return is_transient_write_error(error)


_WRITES = dict(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_retry_on_transient_io)


def _refusal_as_value(step: Callable[..., Any], *,
                      outcomes: tuple[type[Exception], ...] = (InputError,)) -> Callable[..., Any]:
    """``step``, returning a refusal (:class:`pipelines.ingest.Refused`) instead of raising it: a refused input is an
    outcome of the run, so its task completes (no failed task, no traceback in the log) and the flow ends in a
    failed state whose message is the reason (:func:`run_flow`). ``outcomes``: the errors carried so."""
    @functools.wraps(step)
    def refusing(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        except outcomes as error:
            return ingest.Refused(error)

    return refusing


# The reader tries an unreachable source again itself (records.readers.SOURCE_RETRY: 3 attempts); when it gives up,
# "source unavailable" is an outcome like a refusal (the flow fails with that message, the CLI exits 3), with no
# task retries on top and no traceback in the log.
read_task = task(_refusal_as_value(ingest.load_batch, outcomes=(InputError, SourceUnavailable)), name="read source",
                 cache_policy=NO_CACHE)
guard_task = task(_refusal_as_value(ingest.screen_batch), name="refuse identifiers", cache_policy=NO_CACHE)
validate_task = task(_refusal_as_value(ingest.check_batch), name="check contract", cache_policy=NO_CACHE)
register_task = task(_refusal_as_value(ingest.register), name="register", cache_policy=NO_CACHE, **_WRITES)
reports_task = task(publish_reports, name="publish reports", cache_policy=NO_CACHE, **_WRITES)


@task(name="fit outcome", cache_policy=NO_CACHE)
def fit_outcome_task(outcome: str, frames_dir: str, config: TrainingConfig, workspace: str) -> OutcomeResult:
    """One outcome's development, validation, gate and store; reads the model frame from its Parquet file."""
    return train_outcome_from(outcome, Path(frames_dir), config=config, workspace=Path(workspace))


def _models_step(on_dask: bool) -> Callable[..., ModelsSummary]:
    """The models step: the retraining decision here; each outcome's fit a task here, or a piece of work on the
    flow's Dask cluster (whose workers need no Prefect API)."""
    def fit(workspace: Path, frames_dir: Path, config: TrainingConfig) -> dict[str, OutcomeResult]:
        if on_dask:
            from prefect.context import FlowRunContext

            from pipelines.dask_fanout import fit_outcomes

            context = FlowRunContext.get()
            if context is None or not hasattr(context.task_runner, "client"):
                raise RuntimeError("the Dask fan-out runs inside the flow on a DaskTaskRunner (flow_with_runner)")
            return fit_outcomes(context.task_runner.client, workspace, frames_dir, config)
        return {spec.name: fit_outcome_task(spec.name, str(frames_dir), config, str(workspace)) for spec in OUTCOMES}

    def step(workspace: Path, *, run_id: str, config: TrainingConfig, retrain: bool) -> ModelsSummary:
        return refresh_models(workspace, run_id=run_id, config=config, retrain=retrain, fit=fit)

    return step


def prefect_steps(*, on_dask: bool = False) -> JobSteps:
    """The run's steps as Prefect tasks."""
    return JobSteps(
        ingest=ingest.IngestSteps(read=read_task, guard=guard_task, validate=validate_task, register=register_task),
        models=_models_step(on_dask), reports=reports_task)


PREFECT_STEPS = prefect_steps()


@task(name="summarise the run", cache_policy=NO_CACHE)
def summarise_task(manifest: dict) -> None:
    """The night's story in the Prefect UI: a markdown summary, the key tables, and a drift event when drifted."""
    run_id = manifest["run_id"]
    create_markdown_artifact(key="cementrisk-run-summary", markdown=run_summary_markdown(manifest),
                             description=f"cementrisk run {run_id}")
    qi_path = (manifest.get("outputs") or {}).get("qi_units")
    qi_units = pd.read_csv(qi_path, dtype={"unit_id": str}) if qi_path and Path(qi_path).is_file() else None
    for key, rows in run_summary_tables(manifest, qi_units).items():
        if rows:
            create_table_artifact(key=f"cementrisk-{key.replace('_', '-')}", table=rows,
                                  description=f"cementrisk run {run_id}: {key.replace('_', ' ')}")
    models = manifest.get("models") or {}
    drift = models.get("drift") or {}
    if drift.get("drifted"):
        emit_event(event="cementrisk.drift.detected", resource={"prefect.resource.id": f"cementrisk.run.{run_id}"},
                   payload={"reasons": list(drift.get("reasons", []))})
        create_markdown_artifact(key="cementrisk-drift-flag", markdown="## DRIFT DETECTED\n\n" + "\n".join(
            f"- {reason}" for reason in drift.get("reasons", [])), description=f"cementrisk run {run_id}: drift")
    if models.get("warnings"):  # covariate shifts and drifts already trained with: shown, no reason to refit
        create_markdown_artifact(key="cementrisk-drift-warning", markdown="## Drift warnings\n\n" + "\n".join(
            f"- {warning}" for warning in models["warnings"]), description=f"cementrisk run {run_id}: drift warnings")


@flow(name="cementrisk-run", validate_parameters=False)
def run_flow(source: str, workspace: str | Path, run_id: str | None = None, retrain: bool = False,
             train: bool = True, seed: int = TrainingConfig.seed, lock_wait_seconds: float = 0.0,
             n_folds: int = TrainingConfig.n_folds, repeats: int = TrainingConfig.repeats,
             n_boot: int = TrainingConfig.n_boot, on_dask: bool = False,
             replace_batches: list[int] | None = None,
             verify_registered: bool = False, keep_runs: int | None = None,
             development_rows: int | None = TrainingConfig.development_rows) -> ingest.IngestOutcome | State:
    """Load, screen, check and register one source; refresh the models; publish; summarise for the UI.

    ``source`` is a path, a URL without a password, or a reference such as ``env:CEMENTRISK_SOURCE_URL`` (resolved
    where the source is read, :func:`records.sources.resolve_source`): a password never is a flow parameter, which
    Prefect would store in its database. A scheduled (deployed) run passes no ``run_id``: each run gets a fresh one.
    Use :func:`flow_with_runner` to run the fits on Dask (``on_dask`` is then set for you).

    Returns
    -------
    IngestOutcome or State
        The outcome; or a Failed state whose message is the reason when the input was refused or the source could
        not be reached (its ``data`` the error) or when batches were refused (its ``data`` the outcome: the other
        batches were registered and published). None logs a traceback.
    """
    try:
        outcome = run_job(source, Path(workspace), run_id=run_id or new_run_id(),
                          steps=prefect_steps(on_dask=on_dask),
                          config=TrainingConfig(seed=seed, n_folds=n_folds, repeats=repeats, n_boot=n_boot,
                                                development_rows=development_rows),
                          retrain=retrain, train=train, lock_wait_seconds=lock_wait_seconds,
                          replacing=tuple(replace_batches or ()), verify_registered=verify_registered,
                          retention=None if keep_runs is None else RetentionPolicy(keep_runs=keep_runs))
    except InputError as error:
        return Failed(message=f"refused: {error}", data=error)
    except SourceUnavailable as error:
        return Failed(message=f"source unavailable: {error}", data=error)
    summarise_task(asdict(outcome.manifest))
    if outcome.manifest.batches_refused:
        reasons = "; ".join(f"batch {r['batch']} refused: {r['reason']}" for r in outcome.manifest.batches_refused)
        return Failed(message=reasons, data=outcome)
    return outcome


def flow_with_runner(task_runner: str = "default", dask_address: str | None = None,
                     dask_workers: int | None = None) -> Callable[..., ingest.IngestOutcome]:
    """``run_flow`` on the chosen task runner: Prefect's default (threads, here) or Dask.

    Dask: a local cluster of ``dask_workers`` processes (default: one per core) for the length of the run, or the
    existing scheduler at ``dask_address`` (``tcp://host:8786``), whose workers must have cementrisk installed and
    see the workspace at the same path.

    Raises
    ------
    ValueError
        An unknown task runner.
    """
    if task_runner not in TASK_RUNNERS:
        raise ValueError(f"task runner must be one of {', '.join(TASK_RUNNERS)}; got {task_runner!r}")
    if task_runner == "default":
        return run_flow
    from prefect_dask import DaskTaskRunner

    if dask_address:
        runner = DaskTaskRunner(address=dask_address)
    else:
        logging.getLogger("distributed").setLevel(logging.WARNING)
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1,
                                                "processes": True, "host": "127.0.0.1",
                                                "dashboard_address": "127.0.0.1:0"})
    configured = run_flow.with_options(task_runner=runner)

    def run_on_dask(*args: Any, **kwargs: Any) -> ingest.IngestOutcome:
        return configured(*args, on_dask=True, **kwargs)

    return run_on_dask
