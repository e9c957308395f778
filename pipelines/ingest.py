"""Ingest steps as plain functions: load, screen for identifiers, check, register, account.

The Prefect flow in ``pipelines/`` wires these same functions as tasks; :func:`run_ingest` runs them
in sequence without an orchestrator (benchmarks, tests, ``--engine local``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from records.errors import InputError
from records.guard import check_identifiers
from workspace.manifest import (
    STATUS_FAILED,
    STATUS_REFUSED,
    RunManifest,
    StepTimer,
    TableCounts,
    code_version,
    new_run_id,
    utc_now,
    write_manifest,
)
from records.readers import RawBatch, describe_source, read_source
from workspace.registry import Registration, load_state, register_batches, registered_procedure_ids
from records.validation import ValidationResult, validate_batch

@dataclass(frozen=True)
class IngestOutcome:
    """The manifest of a finished run and where it was written."""

    manifest: RunManifest
    manifest_path: Path | None


def load_batch(source: str | Path, *, workspace: Path | None = None) -> RawBatch:
    """Read both tables of a source (raises SourceError on whole-input problems).

    With a workspace, a database or Parquet-folder source returns only the rows above the registry's watermark
    (and counts the others): a night reads the new batch, not the whole history
    (:func:`records.readers.read_source`).
    """
    after = load_state(workspace).watermark if workspace is not None and Path(workspace).exists() else 0
    return read_source(source, after_batch=after)


def screen_batch(raw: RawBatch) -> None:
    """Refuse the whole batch if it carries an identifier column or identifier-looking values."""
    check_identifiers(raw.tables())


def check_batch(raw: RawBatch, *, workspace: Path | None, as_of_year: int | None = None) -> ValidationResult:
    """Validate a batch against the contract and, with a workspace, against what is registered."""
    if workspace is None:
        return validate_batch(raw, as_of_year=as_of_year)
    state = load_state(workspace)
    return validate_batch(raw, as_of_year=as_of_year, watermark=state.watermark,
                          registered_ids=lambda ids: registered_procedure_ids(workspace, state=state, among=ids))


def register(result: ValidationResult, *, workspace: Path, run_id: str) -> Registration:
    """Append accepted rows and the quarantine to the workspace; advance the watermark."""
    return register_batches(workspace, result, run_id=run_id)


def start_manifest(source: str | Path, workspace: Path, *, run_id: str | None = None) -> RunManifest:
    return RunManifest(run_id=run_id or new_run_id(), source=describe_source(source),
                       workspace=str(Path(workspace).resolve()), code_version=code_version(),
                       started_at=utc_now())


def account(manifest: RunManifest, result: ValidationResult, registration: Registration | None) -> RunManifest:
    """Fill the manifest's row accounting from a validation result and what was registered."""
    rules = result.reason_counts()
    for name, outcome in result.tables().items():
        manifest.tables[name] = TableCounts(
            rows_in=outcome.rows_in, rows_accepted=len(outcome.accepted),
            rows_quarantined=len(outcome.quarantined), rows_skipped_registered=outcome.skipped,
            columns_dropped=list(outcome.dropped_columns), quarantine_rules=rules[name])
    manifest.batches_skipped = list(result.skipped_batches)
    if registration is not None:
        manifest.batches_loaded = registration.batches_loaded
        manifest.watermark_before = registration.watermark_before
        manifest.watermark_after = registration.watermark_after
        manifest.quarantine_files = registration.quarantine_files
    return manifest


def refuse(manifest: RunManifest, error: BaseException, raw: RawBatch | None) -> RunManifest:
    """Record a run refused as a whole: its reason, and the rows read but not taken in."""
    manifest.status = STATUS_REFUSED if isinstance(error, InputError) else STATUS_FAILED
    manifest.reason = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
    if raw is not None:
        for name, frame in raw.tables().items():
            manifest.tables[name].rows_refused = len(frame)
    return manifest


def finish(manifest: RunManifest, workspace: Path, timer: StepTimer) -> Path:
    manifest.timings_seconds = dict(timer.timings)
    manifest.finished_at = utc_now()
    return write_manifest(workspace, manifest)


@dataclass(frozen=True)
class IngestSteps:
    """The four steps of an ingest; the Prefect flow passes its tasks, which call the plain functions."""

    read: Callable[..., RawBatch] = load_batch
    guard: Callable[..., None] = screen_batch
    validate: Callable[..., ValidationResult] = check_batch
    register: Callable[..., Registration] = register


PLAIN_STEPS = IngestSteps()


def run_ingest(source: str | Path, workspace: Path, *, run_id: str | None = None,
               as_of_year: int | None = None, steps: IngestSteps = PLAIN_STEPS,
               on_step: Callable[[str], None] | None = None) -> IngestOutcome:
    """Load, screen, check and register one source into a workspace, and write the manifest.

    Raises
    ------
    InputError
        The input was refused as a whole (SourceError, ContractError, IdentifierError); the manifest
        (status ``refused``) is written first and nothing is registered.
    """
    manifest = start_manifest(source, workspace, run_id=run_id)
    timer = StepTimer(on_step=on_step)
    raw: RawBatch | None = None
    try:
        with timer.step("read"):
            raw = steps.read(str(source), workspace=workspace)
        with timer.step("guard"):
            steps.guard(raw)
        with timer.step("validate"):
            result = steps.validate(raw, workspace=workspace, as_of_year=as_of_year)
        with timer.step("register"):
            registration = steps.register(result, workspace=workspace, run_id=manifest.run_id)
        account(manifest, result, registration)
    except BaseException as error:
        refuse(manifest, error, raw)
        finish(manifest, workspace, timer)
        raise
    path = finish(manifest, workspace, timer)
    return IngestOutcome(manifest=manifest, manifest_path=path)
