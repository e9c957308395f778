"""Ingest steps as plain functions: load, screen for identifiers, check, register, account.

The Prefect flow in ``pipelines/`` wires these same functions as tasks; :func:`run_ingest` runs them in sequence
without an orchestrator (benchmarks, tests, ``--engine local``). The registry's side of each step is the batch ledger
(:mod:`workspace.ledger`): what the source may leave out, what validation compares, what registering records.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from records.batches import batch_numbers
from records.errors import InputError, SourceUnavailable
from records.guard import check_identifiers
from records.readers import RawBatch, read_source
from records.sources import display_source, resolve_source
from records.validation import Registered, ValidationResult, validate_batch
from workspace.ledger import Ledger, load_ledger, record_refusal, write_ledger
from workspace.manifest import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_REFUSED,
    RunManifest,
    StepTimer,
    TableCounts,
    code_version,
    new_run_id,
    utc_now,
    write_manifest,
)
from workspace.registry import Registration, register_batches, registered_batch_rows, registered_procedure_ids


@dataclass(frozen=True)
class IngestOutcome:
    """The manifest of a finished run, where it was written, and the refusal that ended it (if any)."""

    manifest: RunManifest
    manifest_path: Path | None
    refusal: InputError | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Refused:
    """A step's refusal carried as a value (a Prefect task returns it instead of raising, so that a refused input is
    an outcome of the run, not a crashed task with a traceback in the log)."""

    error: InputError | SourceUnavailable


def raise_if_refused(value: object) -> object:
    """``value``, unless it carries a refusal: then its error is raised here."""
    if isinstance(value, Refused):
        raise value.error
    return value


def load_batch(source: str | Path, *, workspace: Path | None = None, replacing: Collection[int] = (),
               verify_registered: bool = False) -> RawBatch:
    """Read both tables of a source (raises SourceError on whole-input problems).

    ``source`` may be a reference (``env:NAME``, :func:`records.sources.resolve_source`), resolved here, in the
    process that reads. With a workspace, a database or Parquet-folder source leaves out the registered batches it
    holds with their recorded row counts (but never one being replaced), so a night reads the new batches, not the
    whole history (:func:`records.readers.read_source`). A registered batch changed without changing its row counts
    is then not seen; ``verify_registered`` reads every row, so that validation compares every registered batch the
    source holds with its recorded content.
    """
    registered = None
    if workspace is not None and Path(workspace).exists() and not verify_registered:
        rows = load_ledger(workspace).rows_in()
        registered = {b: r for b, r in rows.items() if b not in set(replacing)}
    return read_source(resolve_source(str(source)), registered=registered)


def screen_batch(raw: RawBatch) -> None:
    """Refuse the whole batch if it carries an identifier column or identifier-looking values."""
    check_identifiers(raw.tables())


def check_batch(raw: RawBatch, *, workspace: Path | None, as_of_year: int | None = None,
                replacing: Collection[int] = ()) -> ValidationResult:
    """Validate a batch against the contract and, with a workspace, against what its ledger and registry hold."""
    if workspace is None or not Path(workspace).exists():
        return validate_batch(raw, as_of_year=as_of_year, replacing=replacing)
    ledger = load_ledger(workspace)
    replaced = set(replacing)
    registered = Registered(
        contents=ledger.contents(), run_ids=ledger.run_ids(),
        ids=lambda ids: registered_procedure_ids(workspace, ledger=ledger, among=ids, excluding=replaced),
        rows=lambda batch: registered_batch_rows(workspace, batch, ledger=ledger))
    return validate_batch(raw, as_of_year=as_of_year, registered=registered, replacing=replacing)


def register(result: ValidationResult, *, workspace: Path, run_id: str) -> Registration:
    """Append accepted rows and the quarantine to the workspace; record every batch in the ledger."""
    return register_batches(workspace, result, run_id=run_id)


def shown_source(source: str | Path) -> str:
    """The source as every output names it: a reference resolved, and any password masked."""
    try:
        return display_source(resolve_source(str(source)))
    except InputError:
        return display_source(source)


def start_manifest(source: str | Path, workspace: Path, *, run_id: str | None = None) -> RunManifest:
    return RunManifest(run_id=run_id or new_run_id(), source=shown_source(source),
                       workspace=str(Path(workspace).resolve()), code_version=code_version(),
                       started_at=utc_now())


def account(manifest: RunManifest, result: ValidationResult, registration: Registration | None,
            ledger_before: Ledger) -> RunManifest:
    """Fill the manifest's row accounting from a validation result and what was registered."""
    rules = result.reason_counts()
    for name, outcome in result.tables().items():
        manifest.tables[name] = TableCounts(
            rows_in=outcome.rows_in, rows_accepted=len(outcome.accepted),
            rows_quarantined=len(outcome.quarantined), rows_skipped_registered=outcome.skipped,
            rows_refused=outcome.refused, columns_dropped=list(outcome.dropped_columns),
            quarantine_rules=rules[name])
    manifest.batches_skipped = list(result.skipped_batches)
    manifest.batches_refused = [{"batch": b, "reason": change.describe()} for b, change in result.conflicts.items()]
    if registration is not None:
        manifest.batches_loaded = registration.batches_loaded
        manifest.batches_replaced = registration.batches_replaced
        manifest.quarantine_files = registration.quarantine_files
        manifest.registry = {"batches_before": registration.registered_before,
                             "batches_after": registration.registered_after,
                             "highest_batch": max([ledger_before.watermark, *registration.batches_loaded])}
    return manifest


def refuse(manifest: RunManifest, error: BaseException, raw: RawBatch | None) -> RunManifest:
    """Record a run refused as a whole: its reason, and the rows read but not taken in."""
    manifest.status = STATUS_REFUSED if isinstance(error, InputError) else STATUS_FAILED
    manifest.reason = str(error) if isinstance(error, InputError) else f"{type(error).__name__}: {error}"
    if raw is not None:
        for name, frame in raw.tables().items():
            manifest.tables[name].rows_refused = len(frame)
    return manifest


def record_refused_input(workspace: Path, raw: RawBatch | None, error: InputError, *, run_id: str) -> list[int]:
    """Note in the ledger that the batches of an input refused as a whole were refused (staged with the run)."""
    batches = batch_numbers(raw.procedures) if raw is not None else []
    if batches:
        ledger = load_ledger(workspace)
        write_ledger(workspace, record_refusal(ledger, batches, reason=str(error), run_id=run_id, at=utc_now()))
    return batches


def finish(manifest: RunManifest, workspace: Path, timer: StepTimer, *, with_commit: bool = False) -> Path:
    manifest.timings_seconds = dict(timer.timings)
    manifest.finished_at = utc_now()
    return write_manifest(workspace, manifest, with_commit=with_commit)


@dataclass(frozen=True)
class IngestSteps:
    """The four steps of an ingest; the Prefect flow passes its tasks, which call the plain functions (and return a
    :class:`Refused` instead of raising a refusal)."""

    read: Callable[..., RawBatch] = load_batch
    guard: Callable[..., None] = screen_batch
    validate: Callable[..., ValidationResult] = check_batch
    register: Callable[..., Registration] = register


PLAIN_STEPS = IngestSteps()


def run_ingest(source: str | Path, workspace: Path, *, run_id: str | None = None,
               as_of_year: int | None = None, steps: IngestSteps = PLAIN_STEPS,
               on_step: Callable[[str], None] | None = None, replacing: Collection[int] = (),
               manifest: RunManifest | None = None, last_step: bool = True,
               verify_registered: bool = False) -> IngestOutcome:
    """Load, screen, check and register one source into a workspace, and write the manifest.

    A refused input (SourceError, ContractError, IdentifierError, BatchError) is an outcome, not an error: the
    manifest says ``refused`` with the reason, the ledger notes the refusal of the input's batches, nothing is
    registered, and the returned outcome carries the refusal. With ``last_step`` the manifest then says ``ok``;
    without (a run that goes on to its models and reports) it says ``running`` and the caller writes its end.

    Raises
    ------
    Exception
        Anything else that went wrong (the manifest says ``failed`` first, when it can be written).
    """
    manifest = manifest or start_manifest(source, workspace, run_id=run_id)
    timer = StepTimer(on_step=on_step)
    raw: RawBatch | None = None
    ledger_before = load_ledger(workspace) if Path(workspace).exists() else Ledger()
    try:
        with timer.step("read"):
            raw = raise_if_refused(steps.read(str(source), workspace=workspace, replacing=tuple(replacing),
                                              verify_registered=verify_registered))
        with timer.step("guard"):
            raise_if_refused(steps.guard(raw))
        with timer.step("validate"):
            result = raise_if_refused(steps.validate(raw, workspace=workspace, as_of_year=as_of_year,
                                                     replacing=tuple(replacing)))
        with timer.step("register"):
            registration = raise_if_refused(steps.register(result, workspace=workspace, run_id=manifest.run_id))
        account(manifest, result, registration, ledger_before)
        if last_step:
            manifest.status = STATUS_OK
    except InputError as error:
        refuse(manifest, error, raw)
        record_refused_input(workspace, raw, error, run_id=manifest.run_id)
        path = finish(manifest, workspace, timer, with_commit=True)
        return IngestOutcome(manifest=manifest, manifest_path=path, refusal=error)
    except BaseException as error:
        refuse(manifest, error, raw)
        _write_if_possible(manifest, workspace, timer)
        raise
    path = finish(manifest, workspace, timer)
    return IngestOutcome(manifest=manifest, manifest_path=path)


def _write_if_possible(manifest: RunManifest, workspace: Path, timer: StepTimer) -> None:
    """The manifest of a failing run; when even that cannot be written (a full disk), the next run marks it failed."""
    try:
        finish(manifest, workspace, timer)
    except OSError:
        pass
