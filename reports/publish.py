"""The report step of a run: score the registry, then write metrics.json, qi_units.csv, submission/ and report.html.

Reads the workspace (registry, published models, the models' figures) and writes into ``runs/<run_id>/``.
metrics.json holds no run id and no time stamp, so the same registry, models and seed give the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from models.refresh import METRICS_FILE, metrics_json, published_model_metrics
from models.scoring import NoModelError, Scores, score_records
from records.manifest import RUNS_DIR, code_version
from records.registry import load_state, read_registry_table
from records.schema import LEVELS, PROCEDURES
from reports.figures import build_figures
from reports.html import render_report
from reports.submission import MANIFEST_FILE as SUBMISSION_MANIFEST
from reports.submission import SubmissionWithheld, validate_submission, write_submission

PUBLISHED_FILE = "published.json"
REPORT_FILE = "report.html"
QI_UNITS_FILE = "qi_units.csv"
SUBMISSION_DIR = "submission"


@dataclass(frozen=True)
class ReportSummary:
    """What the report step wrote, for the manifest and the terminal."""

    report: str
    metrics: str
    qi_units: str
    submission: str | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"report": self.report, "metrics": self.metrics, "qi_units": self.qi_units,
                "submission": self.submission, "notes": list(self.notes)}


def publish_reports(workspace: Path, *, run_id: str, manifest: dict[str, Any]) -> ReportSummary:
    """Write the run's published files from the workspace as it now stands.

    Raises
    ------
    FeatureMismatchError, ModelIntegrityError
        A published model does not fit the registry or fails its SHA-256 check.
    """
    workspace = Path(workspace)
    run_dir = workspace / RUNS_DIR / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(workspace)
    procedures = read_registry_table(workspace, PROCEDURES, state=state)
    levels = read_registry_table(workspace, LEVELS, state=state)
    notes: list[str] = []
    scores = _scores(procedures, levels, workspace, notes)
    submission = _submission(run_dir / SUBMISSION_DIR, procedures, levels, scores, state.watermark, notes)
    built = build_figures(run={"code_version": code_version()}, manifest=manifest, procedures=procedures,
                          levels=levels, scores=scores, model_metrics=published_model_metrics(workspace),
                          submission=submission, watermark=state.watermark)
    metrics_path = _write_text(run_dir / METRICS_FILE, metrics_json(built.figures))
    qi_path = run_dir / QI_UNITS_FILE
    _write_text(qi_path, built.qi_units.to_csv(index=False, lineterminator="\n"))
    report_path = _write_text(run_dir / REPORT_FILE, render_report(built.figures, run_id=run_id))
    return ReportSummary(report=str(report_path), metrics=str(metrics_path), qi_units=str(qi_path),
                         submission=str(run_dir / SUBMISSION_DIR) if submission.get("files") else None, notes=notes)


def publish_run(workspace: Path, *, run_id: str) -> Path:
    """Point ``<workspace>/published.json`` at a finished run, after checking that its files are all there.

    The pointer is replaced atomically (write, then rename), so a reader sees the previous run or this one,
    never a mixture; a run that failed before this call is never published.

    Raises
    ------
    FileNotFoundError
        A file the run must have published is missing.
    """
    run_dir = Path(workspace) / RUNS_DIR / run_id
    needed = [run_dir / name for name in ("manifest.json", METRICS_FILE, QI_UNITS_FILE, REPORT_FILE)]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"run {run_id} cannot be published: missing {', '.join(missing)}")
    submission = run_dir / SUBMISSION_DIR  # checked against its own schema when it was written (publish_reports)
    if submission.exists() and not (submission / SUBMISSION_MANIFEST).is_file():
        raise FileNotFoundError(f"run {run_id} cannot be published: its submission package has no manifest")
    payload = {"run_id": run_id, "run_dir": str(run_dir), "report": str(run_dir / REPORT_FILE),
               "submission": str(submission) if submission.exists() else None}
    return _write_text(Path(workspace) / PUBLISHED_FILE, json.dumps(payload, indent=2) + "\n")


def published_run(workspace: Path) -> str | None:
    """The run id that ``published.json`` points at, or None before the first published run."""
    path = Path(workspace) / PUBLISHED_FILE
    return json.loads(path.read_text(encoding="utf-8"))["run_id"] if path.exists() else None


def _scores(procedures: pd.DataFrame, levels: pd.DataFrame, workspace: Path, notes: list[str]) -> Scores | None:
    if procedures.empty:
        notes.append("the registry is empty: nothing to score")
        return None
    try:
        return score_records(procedures, levels, workspace=workspace)
    except NoModelError as error:
        notes.append(f"no expected risks: {error}")
        return None


def _submission(out_dir: Path, procedures: pd.DataFrame, levels: pd.DataFrame, scores: Scores | None,
                watermark: int, notes: list[str]) -> dict[str, Any]:
    if scores is None:
        shutil.rmtree(out_dir, ignore_errors=True)
        return {"reason": "no submission: no published leakage model, so no expected risks to submit"}
    try:
        result = write_submission(out_dir, procedures=procedures, levels=levels, level_risks=scores.levels,
                                  procedure_risks=scores.procedures, model_versions=scores.versions,
                                  code_version=code_version(), watermark=watermark)
    except SubmissionWithheld as error:
        notes.append(str(error))
        return {"reason": f"no submission: {error}"}
    problems = validate_submission(out_dir)
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


def _write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
