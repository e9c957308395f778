"""The report step of a run: score new batches, then write metrics.json, qi_units.csv, submission/ and report.html.

Reads the workspace (registry, published models, the models' figures) and writes into ``runs/<run_id>/``.
metrics.json holds no run id and no time stamp, so the same registry, models and seed give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from models.refresh import METRICS_FILE, metrics_json, published_model_metrics
from records import schema as s
from workspace.manifest import code_version, read_manifest
from workspace import runs
from workspace.ledger import load_ledger
from workspace.registry import read_registry_table
from records.schema import LEVELS, PROCEDURES
from reports.figures import (COMPLETENESS_LEVEL_COLUMNS, COMPLETENESS_PROCEDURE_COLUMNS, INTERNAL, MONITORED,
                             build_figures)
from reports.verdicts import ALARM, ALERT
from reports.html import render_report
from reports.scored import (champion_versions, generation_of, read_outcome_frames, submission_parts,
                            update_scored)
from reports.seed_outcomes import LEVEL_COLUMNS, PROCEDURE_COLUMNS
from reports.submission import MANIFEST_FILE as SUBMISSION_MANIFEST
from reports.submission import SubmissionWithheld, assemble_submission, validate_submission

PUBLISHED_FILE = runs.PUBLISHED_FILE
REPORT_FILE = "report.html"
QI_UNITS_FILE = "qi_units.csv"
SUBMISSION_DIR = "submission"
_SUMMARY_PROCEDURE_COLUMNS = dict.fromkeys([*PROCEDURE_COLUMNS, *COMPLETENESS_PROCEDURE_COLUMNS, s.PROCEDURE_YEAR])
_SUMMARY_LEVEL_COLUMNS = dict.fromkeys([*LEVEL_COLUMNS, *COMPLETENESS_LEVEL_COLUMNS])
"""The registry columns the report reads besides the scored store: the registry summary, the data completeness and
the seed outcomes."""
INTERNAL_MARK = "internal: not for release"


@dataclass(frozen=True)
class ReportSummary:
    """What the report step wrote, for the manifest and the terminal."""

    report: str
    metrics: str
    qi_units: str
    submission: str | None
    notes: list[str] = field(default_factory=list)
    scored: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"report": self.report, "metrics": self.metrics, "qi_units": self.qi_units,
                "submission": self.submission, "notes": list(self.notes), "scored": dict(self.scored)}


def publish_reports(workspace: Path, *, run_id: str, manifest: dict[str, Any]) -> ReportSummary:
    """Write the run's published files from the workspace as it now stands.

    New batches are scored and their submission files rendered once, into the scored store
    (:mod:`reports.scored`); the figures read the kept rows, and the submission links the kept files. So a nightly
    run costs its new batch plus narrow column reads of the registry, not a re-scoring of it.

    Raises
    ------
    FeatureMismatchError, ModelIntegrityError
        A published model does not fit the registry or fails its SHA-256 check.
    """
    workspace = Path(workspace)
    run_dir = runs.run_dir(workspace, run_id)
    state, update, frames, procedures, levels, versions = _report_inputs(workspace)
    notes = list(update.notes)
    if procedures.empty:
        notes.append("the registry is empty: nothing to score")
    elif not versions:
        notes.append(f"no expected risks: no published model for {MONITORED}")
    else:
        notes.append("level risks are the risk of a leak seen on CT where the imaging was not given")
    submission = _submission(workspace, run_id, state, versions, notes)
    built = build_figures(run={"code_version": code_version()}, manifest=manifest, procedures=procedures,
                          levels=levels, scores=None, frames=frames, versions=versions,
                          model_metrics=published_model_metrics(workspace), submission=submission,
                          watermark=state.watermark)
    metrics_path = _write_text(workspace, run_id, METRICS_FILE, metrics_json(built.figures))
    qi_path = _write_text(workspace, run_id, QI_UNITS_FILE, built.qi_units.to_csv(index=False, lineterminator="\n"))
    report_path = _write_text(workspace, run_id, REPORT_FILE, render_report(built.figures, run_id=run_id))
    return ReportSummary(report=str(report_path), metrics=str(metrics_path), qi_units=str(qi_path),
                         submission=str(run_dir / SUBMISSION_DIR) if submission.get("files") else None, notes=notes,
                         scored=update.to_dict())


def report_for_audience(workspace: Path, *, audience: str = INTERNAL,
                        limits: tuple[float, float] = (ALERT, ALARM)) -> ReportSummary:
    """The published run's report, QI table and figures again for ``audience`` and ``limits``, in a folder of its own.

    ``internal``: exact counts and every verdict, each page and file marked "internal: not for release", written to
    ``internal/<run_id>/`` (never published, never part of a submission). ``published``: suppressed like the run's
    own report, with other alert and alarm levels, written to ``reports/<run_id>/``. Scores what the scored store
    lacks first (the caller holds the workspace's lock).

    Raises
    ------
    FileNotFoundError
        No run is published yet.
    """
    workspace = Path(workspace)
    payload = runs.read_published(workspace)
    if payload is None:
        raise FileNotFoundError("no run is published yet: run `cementrisk run` first")
    run_id = payload["run_id"]
    manifest = read_manifest(workspace, run_id)
    state, update, frames, procedures, levels, versions = _report_inputs(workspace)
    built = build_figures(run={"code_version": code_version()}, manifest=manifest, procedures=procedures,
                          levels=levels, scores=None, frames=frames, versions=versions,
                          model_metrics=published_model_metrics(workspace),
                          submission={"reason": "an on-demand report has no submission: see the published run's"},
                          watermark=state.watermark, audience=audience, limits=limits)
    figures, table = built.figures, built.qi_units
    if audience == INTERNAL:
        figures = {"marking": INTERNAL_MARK, **figures}
        table = table.assign(marking=INTERNAL_MARK)
    write = lambda name, text: runs.write_audience_file(workspace, audience, run_id, name,  # noqa: E731
                                                        text.encode("utf-8"))
    metrics_path = write(METRICS_FILE, metrics_json(figures))
    qi_path = write(QI_UNITS_FILE, table.to_csv(index=False, lineterminator="\n"))
    report_path = write(REPORT_FILE, render_report(figures, run_id=run_id))
    return ReportSummary(report=str(report_path), metrics=str(metrics_path), qi_units=str(qi_path), submission=None,
                         notes=list(update.notes))


def _report_inputs(workspace: Path) -> tuple[Any, Any, dict, Any, Any, dict[str, str | None]]:
    """(ledger, scored-store update, outcome frames, procedures, levels, champion versions) a report is built from;
    new batches are scored into the store first. No expected risks (empty versions) without a leakage champion."""
    state = load_ledger(workspace)
    update = update_scored(workspace, state)
    frames = read_outcome_frames(workspace, state)
    procedures = read_registry_table(workspace, PROCEDURES, columns=list(_SUMMARY_PROCEDURE_COLUMNS), ledger=state)
    levels = read_registry_table(workspace, LEVELS, columns=list(_SUMMARY_LEVEL_COLUMNS), ledger=state)
    versions = update.versions if update.versions.get(MONITORED) else {}
    return state, update, frames, procedures, levels, versions


def publish_run(workspace: Path, *, run_id: str) -> Path:
    """Point ``<workspace>/published.json`` at a finished run, after checking that its files are all there.

    The pointer is replaced atomically (write, then rename), so a reader sees the previous run or this one,
    never a mixture; a run that failed before this call is never published.

    Raises
    ------
    FileNotFoundError
        A file the run must have published is missing.
    """
    run_dir = runs.run_dir(workspace, run_id)
    needed = [run_dir / name for name in ("manifest.json", METRICS_FILE, QI_UNITS_FILE, REPORT_FILE)]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"run {run_id} cannot be published: missing {', '.join(missing)}")
    submission = run_dir / SUBMISSION_DIR  # checked against its own schema when it was written (publish_reports)
    if submission.exists() and not (submission / SUBMISSION_MANIFEST).is_file():
        raise FileNotFoundError(f"run {run_id} cannot be published: its submission package has no manifest")
    payload = {"run_id": run_id, "run_dir": str(run_dir), "report": str(run_dir / REPORT_FILE),
               "submission": str(submission) if submission.exists() else None, **_published_basis(workspace)}
    return runs.write_published(workspace, payload)


def published_run(workspace: Path) -> str | None:
    """The run id that ``published.json`` points at, or None before the first published run."""
    payload = runs.read_published(workspace)
    return None if payload is None else payload["run_id"]


def current_published_run(workspace: Path) -> str | None:
    """The published run id when it was made from this registry, these champions and this code.

    A run that loads nothing new and trains nothing then has nothing new to publish (None: it must publish).
    """
    payload = runs.read_published(workspace)
    if payload is None:
        return None
    basis = _published_basis(workspace)
    return payload["run_id"] if all(payload.get(key) == value for key, value in basis.items()) else None


def _published_basis(workspace: Path) -> dict[str, Any]:
    """What a published run was made from: the registry (its batches, their contents and registering runs), the
    champion generation and the code version."""
    ledger = load_ledger(workspace)
    return {"registry": ledger.digest(), "batches": len(ledger.batches),
            "models": generation_of(champion_versions(workspace)), "code_version": code_version()}


def _submission(workspace: Path, run_id: str, state: Any, versions: dict[str, str | None],
                notes: list[str]) -> dict[str, Any]:
    out_dir = runs.run_dir(workspace, run_id) / SUBMISSION_DIR
    parts = submission_parts(workspace, state) if versions else None
    if not parts:
        runs.remove_run_folder(workspace, run_id, SUBMISSION_DIR)
        return {"reason": "no submission: no published leakage model, so no expected risks to submit"}
    try:
        result = assemble_submission(out_dir, parts=parts, model_versions=versions, code_version=code_version(),
                                     watermark=state.watermark)
    except SubmissionWithheld as error:
        notes.append(str(error))
        return {"reason": f"no submission: {error}"}
    # every data file was checked against the schema when it was rendered: here each is hashed, the rest re-read
    problems = validate_submission(out_dir, checked={part.name: part for _, part in parts})
    if problems:
        raise RuntimeError("the submission package failed its own checks: " + "; ".join(problems))
    return _submission_summary(result)


def _submission_summary(result: Any) -> dict[str, Any]:
    manifest = result.manifest
    files = [{"name": f["name"], "bytes": f["bytes"], "sha256": f["sha256"]} for f in manifest["files"]]
    period = manifest["period"]
    text = (f"procedure years {period['procedure_year_min']} to {period['procedure_year_max']}, extract batches "
            f"{period['extract_batch_min']} to {period['extract_batch_max']}")
    return {"files": files, "period": text, "rows": manifest["rows"], "model_versions": manifest["model_versions"]}


def _write_text(workspace: Path, run_id: str, name: str, text: str) -> Path:
    return runs.write_run_file(workspace, run_id, name, text.encode("utf-8"))
