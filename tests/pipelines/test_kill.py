"""A run killed with SIGKILL in the middle of registering, of training and of publishing leaves the workspace as
it was: the published run, the registry (ledger, visible rows, quarantine) and the champion models;
the lock is free at once; and the next run completes and publishes, with each quarantined row kept once.

Deterministic, not timed: the run is the plain job (``pipelines.job.run_job`` with its default steps) in a
subprocess whose chosen function, once reached, touches a "ready" file and sleeps; the test then kills it.
The functions wrapped (keep their names stable):

- registering: ``workspace.registry._write_partition`` (after the first partition of the new batch is written);
- training: ``models.store.save_model`` (its 2nd call returns, i.e. the 2nd outcome's model is stored but not
  championed, and the 1st outcome's gate decision is already made);
- publishing: ``reports.submission.assemble_submission`` (or ``write_submission``) returns, i.e. the run's
  submission files are written, before report.html and before ``published.json``.

When training and publishing, ``models.training.decide`` (the gate) is wrapped too, to promote every new version:
the killed run has switched champions (staged), which must not take effect.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from threadpoolctl import threadpool_limits

from models import store
from models.training import TrainingConfig
from pipelines.job import run_job
from workspace.transaction import STAGING_DIR, workspace_lock
from workspace.ledger import load_ledger
from workspace.registry import read_quarantine, read_registry_table
from records.schema import EXTRACT_BATCH, LEVELS, PROCEDURE_ID, PROCEDURES
from synth.generator import generate_registry
from reports.publish import PUBLISHED_FILE, published_run

REPO = Path(__file__).resolve().parents[2]
FAST = TrainingConfig(seed=7, n_folds=3, repeats=1, n_boot=20, n_replicates=0, internal_external=False)  # the kill, not the models
PROCEDURES_N = 2_500
BAD_VOLUME = 40.0  # cement_volume_ml out of range: the procedure is quarantined with all its levels
READY_TIMEOUT = 150
# One BLAS/OpenMP thread: on a shared 2-core machine their spinning threads make training many times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

DRIVER = r"""
import json, os, sys, time
from pathlib import Path

repo, point, source, workspace, run_id, ready, config = sys.argv[1:8]
sys.path.insert(0, repo)


def block():
    Path(ready).write_text(json.dumps({"pid": os.getpid(), "point": point}))
    while True:
        time.sleep(60)


def block_after(module, name, nth):
    original = getattr(module, name)
    calls = []

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(name)
        if len(calls) == nth:
            block()
        return result

    setattr(module, name, wrapper)


def always_promote():
    import dataclasses
    import models.training

    gate = models.training.decide

    def promote(*args, **kwargs):
        return dataclasses.replace(gate(*args, **kwargs), promote=True)

    models.training.decide = promote


# patched before pipelines.job is imported, so names imported with 'from ... import' are the wrappers too
if point != "registering":
    always_promote()  # every new version becomes champion: the switch must still wait for the run's end
if point == "registering":
    import workspace.registry as module
    block_after(module, "_write_partition", 1)
elif point == "training":
    import models.store as module
    block_after(module, "save_model", 2)
elif point == "publishing":
    import reports.submission as module
    for name in ("assemble_submission", "write_submission"):
        if hasattr(module, name):
            block_after(module, name, 1)
else:
    raise SystemExit(f"unknown point {point}")

from models import store
from models.training import TrainingConfig
from pipelines.job import run_job

run_job(source, Path(workspace), run_id=run_id, config=TrainingConfig(**json.loads(config)),
        retrain=point != "registering")
print(f"the run finished without reaching the kill point {point}", flush=True)
sys.exit(3)
"""


def _write_source(folder: Path, procedures: pd.DataFrame, levels: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(procedures, preserve_index=False), folder / "procedures.parquet")
    pq.write_table(pa.Table.from_pandas(levels, preserve_index=False), folder / "levels.parquet")
    return folder


def _spoil(levels: pd.DataFrame, procedures: pd.DataFrame, batch: int, n: int) -> pd.DataFrame:
    """Give the first level of ``n`` procedures of ``batch`` an impossible cement volume."""
    ids = procedures.loc[procedures[EXTRACT_BATCH] == batch, PROCEDURE_ID].head(n)
    first = levels.index[levels[PROCEDURE_ID].isin(ids) & ~levels[PROCEDURE_ID].duplicated()]
    levels = levels.copy()
    levels.loc[first, "cement_volume_ml"] = BAD_VOLUME
    return levels


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A workspace after a first completed run (batches 1..N-1), and the next night's source (1..N)."""
    root = tmp_path_factory.mktemp("kill")
    registry = generate_registry(PROCEDURES_N, seed=11)
    procedures, levels = registry.procedures, registry.levels
    last = int(procedures[EXTRACT_BATCH].max())
    levels = _spoil(_spoil(levels, procedures, 1, 2), procedures, last, 3)
    old = procedures[EXTRACT_BATCH] < last
    old_levels = levels[PROCEDURE_ID].isin(procedures.loc[old, PROCEDURE_ID])
    first = _write_source(root / "night1", procedures[old], levels[old_levels])
    second = _write_source(root / "night2", procedures, levels)
    workspace = root / "ws"
    with threadpool_limits(1):
        outcome = run_job(first, workspace, run_id="night-1", config=FAST)
    assert outcome.manifest.status == "ok" and published_run(workspace) == "night-1"
    assert any(v.get("champion") for v in outcome.manifest.models["outcomes"].values())
    return {"workspace": workspace, "second": second, "last": last, "procedures": procedures}


def _snapshot(workspace: Path) -> dict[str, object]:
    """Everything a killed run must leave as it was."""
    ledger = load_ledger(workspace)
    procedures = read_registry_table(workspace, PROCEDURES, columns=[PROCEDURE_ID], ledger=ledger)
    levels = read_registry_table(workspace, LEVELS, columns=[PROCEDURE_ID, "vertebra"], ledger=ledger)
    quarantine = read_quarantine(workspace, LEVELS, ledger=ledger)
    return {
        "published": (workspace / PUBLISHED_FILE).read_bytes(),
        "ledger": (workspace / "registry" / "ledger.json").read_bytes(),
        "batches": sorted(ledger.batches),
        # what any reader of the published layout sees (pyarrow.dataset, DuckDB, Spark): the committed rows only
        "dataset_rows": {name: ds.dataset(workspace / "registry" / name, format="parquet").count_rows()
                         for name in ("procedures", "levels")},
        "procedures": frozenset(procedures[PROCEDURE_ID]),
        "levels": frozenset(zip(levels[PROCEDURE_ID], levels["vertebra"])),
        "quarantine_rows": len(quarantine),
        "champions": {str(p.relative_to(workspace)): p.read_bytes()
                      for p in sorted((workspace / "models").glob("*/champion.json"))},
    }


def _kill_at(point: str, source: Path, workspace: Path, run_id: str, tmp_path: Path) -> dict[str, object]:
    ready = tmp_path / f"ready-{point}"
    log = tmp_path / f"driver-{point}.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(REPO), point, str(source), str(workspace),
                                   run_id, str(ready), json.dumps(asdict(FAST))],
                                  cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD})
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if driver.poll() is not None:
                pytest.fail(f"the run ended (exit {driver.returncode}) before the kill point {point}:\n"
                            f"{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the kill point {point} was not reached within {READY_TIMEOUT} s")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["pid"] == driver.pid
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.wait(timeout=30) == -signal.SIGKILL
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    return info


@pytest.mark.parametrize("point", ["registering", "training", "publishing"])
def test_a_run_killed_midway_leaves_the_workspace_as_it_was_and_the_next_run_completes(night, point, tmp_path):
    workspace = tmp_path / "ws"
    shutil.copytree(night["workspace"], workspace)
    before = _snapshot(workspace)
    killed = f"killed-{point}"

    _kill_at(point, night["second"], workspace, killed, tmp_path)

    # what the killed run wrote is staged, not in place: nothing of it is visible
    staged = {str(p.relative_to(workspace / STAGING_DIR / killed))
              for p in (workspace / STAGING_DIR / killed).rglob("*") if p.is_file()}
    partition = f"registry/procedures/{EXTRACT_BATCH}={night['last']}/part-0.parquet"
    if point == "registering":
        assert any(name.startswith("quarantine/") for name in staged), staged
        assert partition in staged  # written where no reader of the registry looks
    else:
        assert {"registry/ledger.json", "models/leakage_any/champion.json", partition} <= staged, staged
        # the new version is stored, and the killed run had made it champion: neither is visible
        assert store.list_versions(workspace, "leakage_any") == ["v0001", "v0002"]
        assert store.champion(workspace, "leakage_any") == "v0001"
    assert not (workspace / partition).exists()
    assert _snapshot(workspace) == before

    # the lock is free at once (no wait); taking it discards the killed run's staged files and fails its manifest
    with workspace_lock(workspace, run_id="probe", wait_seconds=0):
        pass
    assert not (workspace / STAGING_DIR).exists()
    assert _snapshot(workspace) == before
    manifest_path = workspace / "runs" / killed / "manifest.json"
    if point != "registering":  # a run killed while registering had not written its manifest yet
        manifest = json.loads(manifest_path.read_text())
        assert manifest["status"] == "failed" and "stopped before it finished" in manifest["reason"]
    assert published_run(workspace) == "night-1"

    # the next run completes, registers the new batch once, keeps each quarantined row once, and publishes
    with threadpool_limits(1):
        outcome = run_job(night["second"], workspace, run_id=f"rerun-{point}", config=FAST)
    assert outcome.manifest.status == "ok" and outcome.manifest.batches_loaded == [night["last"]]
    assert published_run(workspace) == f"rerun-{point}"
    after = _snapshot(workspace)
    assert after["batches"] == sorted({*before["batches"], night["last"]})
    assert after["dataset_rows"]["procedures"] == len(after["procedures"])
    new_ids = set(night["procedures"].loc[night["procedures"][EXTRACT_BATCH] == night["last"], PROCEDURE_ID])
    assert after["procedures"] - before["procedures"] == new_ids - _quarantined_ids(workspace)
    quarantine = read_quarantine(workspace, LEVELS)
    assert not quarantine.duplicated(subset=[PROCEDURE_ID, "vertebra"]).any()
    assert set(quarantine["run_id"]) == {"night-1", f"rerun-{point}"}
    assert len(quarantine) > before["quarantine_rows"]


def _quarantined_ids(workspace: Path) -> set[str]:
    return set(read_quarantine(workspace, PROCEDURES)[PROCEDURE_ID])
