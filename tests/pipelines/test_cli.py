"""The CLI end to end, as a user runs it: the sample, the bad sample, exit codes, the Prefect flow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
SAMPLE_BAD = REPO / "data" / "sample_bad"


def cementrisk(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=full_env, timeout=timeout)


def _manifest(workspace: Path) -> dict:
    (run_dir,) = sorted((workspace / "runs").iterdir())
    return json.loads((run_dir / "manifest.json").read_text())


def test_sample_is_in_the_contract_and_about_20k_procedures():
    procedures = pq.read_metadata(SAMPLE / "procedures.parquet").num_rows
    levels = pq.read_metadata(SAMPLE / "levels.parquet").num_rows
    assert 18_000 <= procedures <= 22_000
    assert 1.3 * procedures < levels < 2.0 * procedures


@pytest.mark.slow
def test_run_on_the_sample_registers_everything_then_nothing(tmp_path):
    workspace = tmp_path / "ws"
    first = cementrisk("run", "--source", str(SAMPLE), "--workspace", str(workspace), "--engine", "local",
                       "--no-models")
    assert first.returncode == 0, first.stderr
    assert "manifest:" in first.stdout and "registry:" in first.stdout
    manifest = _manifest(workspace)
    procedures = pq.read_metadata(SAMPLE / "procedures.parquet").num_rows
    assert manifest["tables"]["procedures"]["rows_in"] == procedures
    assert manifest["tables"]["procedures"]["rows_accepted"] == procedures
    assert manifest["tables"]["levels"]["rows_quarantined"] == 0
    assert len(manifest["batches_loaded"]) > 10
    second = cementrisk("run", "--source", str(SAMPLE), "--workspace", str(workspace), "--engine", "local",
                        "--no-models")
    assert second.returncode == 0, second.stderr
    assert "nothing new" in second.stdout


def test_validate_is_a_dry_run_that_explains_quarantine(tmp_path):
    result = cementrisk("validate", "--source", str(SAMPLE_BAD / "quarantine"))
    assert result.returncode == 0, result.stderr
    assert "dry run, nothing written" in result.stdout
    assert "cement_volume_ml must be between 0 and 15" in result.stdout
    assert "n_levels_equals_level_rows" in result.stdout
    assert not (REPO / "data" / "sample_bad" / "quarantine" / "runs").exists()


def test_bad_sample_is_quarantined_row_by_row(tmp_path):
    workspace = tmp_path / "ws"
    result = cementrisk("run", "--source", str(SAMPLE_BAD / "quarantine"), "--workspace", str(workspace),
                        "--engine", "local")
    assert result.returncode == 0, result.stderr
    manifest = _manifest(workspace)
    for counts in manifest["tables"].values():
        assert counts["rows_in"] == counts["rows_accepted"] + counts["rows_quarantined"]
        assert counts["rows_quarantined"] > 0
    assert manifest["tables"]["procedures"]["columns_dropped"] == ["ward"]


def test_identifier_batch_is_refused_with_exit_2_and_no_value_shown(tmp_path):
    workspace = tmp_path / "ws"
    result = cementrisk("run", "--source", str(SAMPLE_BAD / "identifiers"), "--workspace", str(workspace),
                        "--engine", "local")
    assert result.returncode == 2
    assert "refused" in result.stderr and "Traceback" not in result.stderr
    raw = (SAMPLE_BAD / "identifiers" / "procedures.csv").read_text()
    email = next(tok for tok in raw.replace("\n", ",").split(",") if "@" in tok)
    assert email not in result.stderr + result.stdout
    assert _manifest(workspace)["status"] == "refused"
    assert not (workspace / "registry" / "procedures").exists() and not (workspace / "quarantine").exists()
    ledger = json.loads((workspace / "registry" / "ledger.json").read_text())
    assert ledger["batches"] == {} and ledger["refused"]  # the batch's refusal is on record, nothing registered
    assert email not in json.dumps(ledger)


def test_missing_source_exits_2_without_traceback(tmp_path):
    result = cementrisk("run", "--source", str(tmp_path / "nope"), "--workspace", str(tmp_path / "ws"),
                        "--engine", "local")
    assert result.returncode == 2
    assert "source not found" in result.stderr and "Traceback" not in result.stderr


def test_synth_writes_a_registry_in_the_contract(tmp_path):
    out = tmp_path / "synthetic"
    result = cementrisk("synth", "--procedures", "500", "--seed", "7", "--out", str(out))
    assert result.returncode == 0, result.stderr
    check = cementrisk("validate", "--source", str(out))
    assert check.returncode == 0, check.stderr
    assert pq.read_metadata(out / "procedures.parquet").num_rows == 500


@pytest.mark.slow
def test_run_as_a_prefect_flow_on_the_embedded_api(tmp_path):
    workspace = tmp_path / "ws"
    result = cementrisk("run", "--source", str(SAMPLE_BAD / "quarantine"), "--workspace", str(workspace),
                        env={"PREFECT_HOME": str(tmp_path / "prefect-home")})
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = _manifest(workspace)
    assert manifest["status"] == "ok"
    assert set(manifest["timings_seconds"]) == {"read", "guard", "validate", "register", "models", "report"}
    # three accepted procedures are too few to fit any model: each outcome says why, none is published
    metrics = json.loads((workspace / "runs" / manifest["run_id"] / "metrics.json").read_text())
    assert {o["status"] for o in metrics["outcomes"].values()} == {"not_fitted"}
    assert (workspace / "registry" / "ledger.json").exists()
    # the flow ran on the embedded API whose home is where we said, with analytics off
    assert (tmp_path / "prefect-home").exists()
    # and left the night's summary as a markdown artifact, so the Prefect UI alone tells the story
    import sqlite3

    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        artifacts = db.execute("SELECT key, type, data FROM artifact").fetchall()
    kinds = {key: kind for key, kind, _ in artifacts}
    assert kinds["cementrisk-run-summary"] == "markdown" and kinds["cementrisk-models"] == "table"
    summary = next(data for key, _, data in artifacts if key == "cementrisk-run-summary")
    assert manifest["run_id"] in summary and "<11" in summary
    assert "cementrisk-drift-flag" not in kinds  # no drift: no flag


def test_prefect_settings_keep_the_api_on_this_machine(tmp_path, monkeypatch):
    from pipelines.prefect_env import PrefectConfigError, configure_prefect

    for key in ("PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_ENABLED", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    monkeypatch.setenv("PREFECT_API_URL", "http://prefect.example.org:4200/api")
    with pytest.raises(PrefectConfigError, match="on this machine"):
        configure_prefect(tmp_path)
    monkeypatch.delenv("PREFECT_API_URL")
    applied = configure_prefect(tmp_path)
    assert applied["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert applied["PREFECT_SERVER_EPHEMERAL_ENABLED"] == "true"
    assert applied["PREFECT_HOME"] == str(tmp_path.resolve() / ".prefect")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert configure_prefect(tmp_path)["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


@pytest.mark.slow
def test_run_trains_models_and_score_uses_them(tmp_path):
    import pandas as pd

    source, workspace = tmp_path / "synthetic", tmp_path / "ws"
    assert cementrisk("synth", "--procedures", "1000", "--seed", "5", "--out", str(source)).returncode == 0
    result = cementrisk("run", "--source", str(source), "--workspace", str(workspace), "--engine", "local")
    assert result.returncode == 0, result.stderr
    assert "metrics:" in result.stdout and "leakage_any: v0001 (champion)" in result.stdout
    metrics = json.loads(next((workspace / "runs").glob("*/metrics.json")).read_text())
    assert metrics["outcomes"]["leakage_any"]["status"] == "fitted"
    manifest = _manifest(workspace)
    assert manifest["models"]["trained"] and "models" in manifest["timings_seconds"]

    new = tmp_path / "new"
    new.mkdir()
    procedures = pd.read_parquet(source / "procedures.parquet").head(40)
    levels = pd.read_parquet(source / "levels.parquet")
    levels = levels[levels["procedure_id"].isin(procedures["procedure_id"])]
    outcomes = ["leakage", "leakage_sites", "leakage_symptomatic", "leakage_imaging"]
    procedures.drop(columns=["infection_90d"]).to_csv(new / "procedures.csv", index=False)
    levels.drop(columns=outcomes).to_csv(new / "levels.csv", index=False)
    scored = cementrisk("score", "--input", str(new), "--output", str(tmp_path / "out"), "--workspace",
                        str(workspace), "--format", "csv")
    assert scored.returncode == 0, scored.stderr
    out_levels = pd.read_csv(tmp_path / "out" / "levels.csv")
    out_procedures = pd.read_csv(tmp_path / "out" / "procedures.csv")
    assert list(out_levels.columns) == ["procedure_id", "vertebra", "leakage_any_risk", "leakage_canal_risk",
                                        "leakage_venous_risk"]
    assert len(out_levels) == len(levels) and out_levels["leakage_any_risk"].between(0, 1).all()
    assert list(out_procedures.columns) == ["procedure_id", "infection_risk", "leakage_any_procedure_risk"]
    assert len(out_procedures) == 40

    # the run published its report, QI table and submission, and the CLI says where
    for label in ("report:", "qi units:", "submission:"):
        assert label in result.stdout

    # the case planner uses the published models; each risk's interval is that prediction's parameter uncertainty
    page = tmp_path / "plan.html"
    planned = cementrisk("plan", "--case", str(SAMPLE / "planned_case.json"), "--workspace", str(workspace),
                         "--out", str(page))
    assert planned.returncode == 0, planned.stderr
    assert "not a causal effect" in planned.stdout and "T12" in planned.stdout
    assert "95%" in page.read_text() and "<script" not in page.read_text()
    assert "parameter uncertainty" in planned.stdout and "stored without parameter replicates" not in planned.stdout
    bad = tmp_path / "bad_case.json"
    bad.write_text(json.dumps({**json.loads((SAMPLE / "planned_case.json").read_text()), "age_years": 17}))
    refused = cementrisk("plan", "--case", str(bad), "--workspace", str(workspace))
    assert refused.returncode == 2 and "age_years" in refused.stderr and "Traceback" not in refused.stderr

    # the QI team's internal report of the published run: exact counts, every verdict, its own folder
    internal = cementrisk("report", "--workspace", str(workspace))
    assert internal.returncode == 0, internal.stderr
    assert "internal: not for release" in internal.stdout
    (run_dir,) = [p for p in (workspace / "internal").iterdir()]
    assert {p.name for p in run_dir.iterdir()} == {"report.html", "qi_units.csv", "metrics.json"}
    assert "internal: not for release" in (run_dir / "report.html").read_text()
    other = cementrisk("report", "--workspace", str(workspace), "--audience", "published", "--alert", "0.9",
                       "--alarm", "0.99")
    assert other.returncode == 0, other.stderr
    assert json.loads(next((workspace / "reports").glob("*/metrics.json")).read_text())["qi"]["levels"] == {
        "alert": 0.9, "alarm": 0.99, "fdr": 0.05}

    # a second run on the same source trains nothing new
    again = cementrisk("run", "--source", str(source), "--workspace", str(workspace), "--engine", "local")
    assert again.returncode == 0 and "registry is unchanged" in again.stdout


def test_report_is_refused_with_exit_2_before_a_published_run_or_with_bad_levels(tmp_path):
    result = cementrisk("report", "--workspace", str(tmp_path / "empty"))
    assert result.returncode == 2 and "no run is published yet" in result.stderr and "Traceback" not in result.stderr
    levels = cementrisk("report", "--workspace", str(tmp_path / "empty"), "--alert", "0.999", "--alarm", "0.99")
    assert levels.returncode == 2 and "0 < alert < alarm < 1" in levels.stderr


def test_score_without_models_is_refused_with_exit_2(tmp_path):
    result = cementrisk("score", "--input", str(SAMPLE_BAD / "quarantine"), "--output", str(tmp_path / "out"),
                        "--workspace", str(tmp_path / "empty"))
    assert result.returncode == 2
    assert "no published model for leakage_any" in result.stderr


def test_an_unreachable_database_exits_3_after_its_retries_and_registers_nothing(tmp_path):
    workspace = tmp_path / "ws"
    result = cementrisk("run", "--source", "postgresql+psycopg://postgres:secret@127.0.0.1:9/test",
                        "--workspace", str(workspace), "--engine", "local")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "source unavailable" in result.stderr and "127.0.0.1" in result.stderr and "secret" not in result.stderr
    assert "Traceback" not in result.stderr and not (workspace / "registry" / "ledger.json").exists()
    assert _manifest(workspace)["status"] == "failed"


def test_help_starts_without_the_heavy_libraries():
    """`cementrisk --help` must answer in well under a second: importing the command line loads no pandas,
    scikit-learn, skops, pyarrow, scipy or Prefect (each command imports what it needs)."""
    heavy = ("pandas", "numpy", "sklearn", "skops", "pyarrow", "scipy", "prefect", "matplotlib")
    probe = ("import sys, pipelines.cli; "
             f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == ""
    shown = cementrisk("--help", timeout=60)
    assert shown.returncode == 0
    for command in ("run", "serve", "score", "plan", "report", "validate", "synth"):
        assert command in shown.stdout


def test_the_command_line_default_seed_is_the_training_default():
    from models import DEFAULT_SEED
    from models.training import TrainingConfig

    assert TrainingConfig().seed == DEFAULT_SEED


def test_a_development_sample_too_small_to_trust_is_refused_before_anything_runs(tmp_path):
    result = cementrisk("run", "--workspace", str(tmp_path / "ws"), "--engine", "local", "--development-rows", "500")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--development-rows must be 0 (every row) or at least 10,000; got 500" in result.stderr
    assert not (tmp_path / "ws" / "registry").exists()
