"""Soak benchmark: a year of nights on one workspace, with and without retention.

Night 0 registers a generated registry (``--procedures``, default 20,000) and trains the models (3 folds, 1 repeat,
50 bootstrap replicates, as bench_nightly.py). Each night after it receives a new extract batch of
``--batch-fraction`` of the registry (default 0.3%), drawn at random from the same population, and runs the local
engine (``pipelines.job.run_job``; the retraining policy decides, or ``--retrain-every K`` forces it), then, unless
``--no-prune``, ``workspace.retention.prune_workspace`` keeps the last ``--keep-runs`` runs (called after the run,
under a lock of its own, until ``run_job`` calls it at its end). Every ``--every`` nights (and on each retraining
night and the last) it prints the night's seconds, the prune's seconds, the workspace's size on disk by folder (a
hard-linked file counted once, in the first folder of registry, quarantine, scored, models, runs, other) and the
process's memory. At the end: the time-per-night slope, the size at nights 1, 100 and 365, the files
of the last night's run folder, and what a retraining night added.

``--prefect-nights M`` adds a leg of M nights through the Prefect flow (each night a fresh process on the embedded
API, as ``cementrisk run``) on a copy of the workspace after night 0, measuring Prefect's home (``.prefect/``) and
its database by table; with ``--prefect-keep-runs K`` each night also deletes all but the K latest flow runs (and
their artifacts) through the Prefect client, and ``--prefect-event-retention SECONDS`` shortens Prefect's own event
retention (7 days) to what a few nights are here, where nights are seconds apart.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_soak.py [--nights 365] [--procedures 20000] [--every 10]
        [--keep-runs 30 | --no-prune] [--prefect-nights 0] [--prefect-keep-runs K] [--prefect-event-retention S]
        [--retrain-every K] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FOLDERS = ("registry", "quarantine", "scored", "models", "runs")
MB = 2**20
FLOW_NAME = "cementrisk-run"


def split_nights(procedures: int, *, nights: int, fraction: float, seed: int):
    """The base registry and one batch per night, numbered from one above the base's highest batch; each night's
    procedures a random draw from the same population (a batch of the latest procedures only would drift, and the
    policy would retrain every night)."""
    from records import schema as s
    from synth.generator import generate_registry

    per_night = max(round(procedures * fraction), 11)
    everything = generate_registry(procedures + nights * per_night, seed=seed)
    ids = everything.procedures[s.PROCEDURE_ID].sample(n=nights * per_night, random_state=seed).to_numpy()
    night_of = dict(zip(ids, np.repeat(np.arange(1, nights + 1), per_night)))
    night = everything.procedures[s.PROCEDURE_ID].map(night_of).fillna(0).astype(int)
    level_night = everything.levels[s.PROCEDURE_ID].map(night_of).fillna(0).astype(int)
    watermark = int(everything.procedures.loc[night == 0, s.EXTRACT_BATCH].max())
    procedures_frame = everything.procedures.assign(**{s.EXTRACT_BATCH: np.where(
        night == 0, everything.procedures[s.EXTRACT_BATCH], watermark + night)})
    return procedures_frame, everything.levels, night, level_night, per_night


def write_source(procedures, levels, folder: Path) -> Path:
    """A source folder in the contract: procedures.parquet and levels.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from records.schema import LEVELS, PROCEDURES

    folder.mkdir(parents=True, exist_ok=True)
    for table, frame in ((PROCEDURES, procedures), (LEVELS, levels)):
        pq.write_table(pa.Table.from_pandas(frame.reset_index(drop=True), schema=table.arrow_schema(),
                                            preserve_index=False), folder / f"{table.name}.parquet")
    return folder


def disk_usage(workspace: Path) -> dict[str, int]:
    """Bytes on disk by top folder (each inode once, in the first of FOLDERS that holds a link to it; then 'other'),
    ``.prefect`` apart and not in ``total``."""
    seen: set[tuple[int, int]] = set()
    usage = dict.fromkeys((*FOLDERS, "other", "prefect"), 0)
    tops = sorted((p for p in workspace.iterdir()),
                  key=lambda p: FOLDERS.index(p.name) if p.name in FOLDERS else len(FOLDERS))
    for top in tops:
        key = top.name if top.name in FOLDERS else ("prefect" if top.name == ".prefect" else "other")
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            info = path.lstat()
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                usage[key] += info.st_blocks * 512
    usage["total"] = sum(v for k, v in usage.items() if k != "prefect")
    return usage


def prefect_db(workspace: Path) -> tuple[int, int, dict[str, int]]:
    """Prefect's database file and its write-ahead log (bytes), and its largest tables and indexes by bytes with their
    rows (SQLite's dbstat; read-only)."""
    db = workspace / ".prefect" / "prefect.db"
    wal = db.with_name("prefect.db-wal")
    tables: dict[str, int] = {}
    if db.is_file():
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
            rows = connection.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
            tables = {name: int(size) for name, size in rows}
            for name in ("flow_run", "task_run", "artifact", "events", "log"):
                tables[f"rows:{name}"] = connection.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
    return (db.stat().st_size if db.is_file() else 0), (wal.stat().st_size if wal.is_file() else 0), tables


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def run_folder_files(folder: Path) -> list[tuple[str, int, bool]]:
    """(file, bytes, hard-linked elsewhere) of one run folder."""
    return sorted(((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_nlink > 1)
                   for p in folder.rglob("*") if p.is_file()), key=lambda row: -row[1])


def local_leg(args, root: Path, frames) -> tuple[list[dict], Path]:
    from models.training import TrainingConfig
    from pipelines.job import run_job
    from workspace.retention import RetentionPolicy, prune_workspace

    procedures, levels, night, level_night, _ = frames
    config = TrainingConfig(seed=args.seed, n_folds=3, repeats=1, n_boot=50)
    policy = None if args.no_prune else RetentionPolicy(keep_runs=args.keep_runs)
    workspace = root / "ws"
    rows = []
    for k in range(args.nights + 1):
        source = write_source(procedures[night == k], levels[level_night == k], root / "sources" / f"{k}")
        retrain = bool(args.retrain_every) and k > 0 and k % args.retrain_every == 0
        start = time.perf_counter()
        outcome = run_job(source, workspace, run_id=f"night-{k:04d}", config=config, retrain=retrain)
        seconds = time.perf_counter() - start
        shutil.rmtree(source)
        pruned, prune_seconds = None, 0.0
        if policy is not None:
            pruned = prune_workspace(workspace, policy)
            prune_seconds = pruned.seconds
        if k == 0 and args.prefect_nights:
            subprocess.run(["cp", "-a", str(workspace), str(root / "ws-prefect")], check=True)  # keeps hard links
        usage = disk_usage(workspace)
        row = {"night": k, "seconds": round(seconds, 2), "prune_seconds": round(prune_seconds, 3),
               "retrained": bool(outcome.manifest.models.get("trained")), "usage": usage, "rss_mb": round(rss_mb()),
               "runs": len(list((workspace / "runs").iterdir())),
               "freed": pruned.bytes_freed if pruned else 0}
        rows.append(row)
        if k % args.every == 0 or row["retrained"] or k == args.nights:
            print_local_row(row)
    return rows, workspace


def print_local_header() -> None:
    print("| night | run (s) | prune (s) | retrained | workspace (MB) | registry | quarantine | scored | models | runs "
          "| other | run folders | freed (MB) | RSS (MB) |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def print_local_row(row: dict) -> None:
    u = {k: v / MB for k, v in row["usage"].items()}
    print(f"| {row['night']} | {row['seconds']:.2f} | {row['prune_seconds']:.3f} | {'yes' if row['retrained'] else ''}"
          f" | {u['total']:.1f} | {u['registry']:.1f} | {u['quarantine']:.1f} | {u['scored']:.1f} | {u['models']:.1f}"
          f" | {u['runs']:.1f} | {u['other']:.2f} | {row['runs']} | {row['freed'] / MB:.1f} | {row['rss_mb']} |",
          flush=True)


def summarise_local(rows: list[dict], workspace: Path, *, nights: int, keep_runs: int | None) -> None:
    quiet = [r for r in rows[1:] if not r["retrained"]]
    print()
    if len(quiet) >= 2:
        x = np.array([r["night"] for r in quiet], dtype=float)
        y = np.array([r["seconds"] for r in quiet])
        slope, intercept = np.polyfit(x, y, 1)
        print(f"- time per night (nights without retraining): {intercept:.2f} s + {slope * 1000:.1f} ms x night "
              f"({slope * 100:.2f} s per 100 nights); mean {y.mean():.2f} s, median {np.median(y):.2f} s")
        linear = sum(intercept + slope * n for n in range(1, 366)) + rows[0]["seconds"]
        flat = 365 * y.mean() + rows[0]["seconds"]
        print(f"- projected 365 nights: {flat / 3600:.2f} h at the mean night, {linear / 3600:.2f} h on the fitted "
              f"line, plus retraining nights (night 0 with training took {rows[0]['seconds']:.0f} s)")
    sizes = {r["night"]: r["usage"]["total"] for r in rows}
    shown = [n for n in (1, 100, 365) if n in sizes] + ([nights] if nights not in (1, 100, 365) else [])
    print("- workspace size: " + ", ".join(f"night {n}: {sizes[n] / MB:.1f} MB" for n in shown))
    first = 1 if keep_runs is None else min(max(keep_runs, 1), nights - 1)  # once the kept window is full
    if nights >= 2:
        growth = (sizes[nights] - sizes[first]) / (nights - first)
        runs_growth = (rows[nights]["usage"]["runs"] - rows[first]["usage"]["runs"]) / (nights - first)
        print(f"- growth: {growth / MB:.2f} MB per night from night {first} to {nights} (runs/ {runs_growth / MB:.2f} "
              f"MB per night); at that rate night 365 would be {(sizes[nights] + growth * (365 - nights)) / MB:.0f} MB")
    retrained = [r for r in rows[1:] if r["retrained"]]
    for r in retrained:
        before = rows[r["night"] - 1]["usage"]
        added = {k: (r["usage"][k] - before[k]) / MB for k in (*FOLDERS, "total")}
        print(f"- retraining night {r['night']} added " + ", ".join(f"{k} {v:+.1f}" for k, v in added.items()) + " MB")
    last = workspace / "runs" / f"night-{nights:04d}"
    if last.is_dir():
        files = run_folder_files(last)
        own = sum(size for _, size, linked in files if not linked)
        linked = sum(size for _, size, linked in files if linked)
        print(f"- the last night's run folder: {own / MB:.2f} MB of its own, {linked / MB:.2f} MB hard-linked from "
              "the scored store (no extra disk):")
        for name, size, is_linked in [f for f in files if not f[2]][:12]:
            print(f"    {name}: {size / 1024:.0f} KB")


PREFECT_NIGHT = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from pipelines.prefect_env import configure_prefect
workspace = Path({workspace!r})
configure_prefect(workspace)
from pipelines.flows import run_flow
start = time.perf_counter()
outcome = run_flow({source!r}, workspace, run_id={run_id!r}, seed={seed}, n_folds=3, repeats=1, n_boot=50)
wall = time.perf_counter() - start
steps = sum(outcome.manifest.timings_seconds.values())
prune = 0.0
if {keep_runs} >= 0:
    from workspace.retention import RetentionPolicy, prune_workspace
    prune = prune_workspace(workspace, RetentionPolicy(keep_runs={keep_runs})).seconds
deleted = 0
if {prefect_keep} >= 0:  # all but the latest flow runs of the flow, with their artifacts (task runs and states cascade)
    from prefect import get_client
    from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter,
                                                FlowFilterName)
    from prefect.client.schemas.sorting import FlowRunSort
    with get_client(sync_client=True) as client:
        while old := client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[{flow!r}])),
                                           sort=FlowRunSort.START_TIME_DESC, offset={prefect_keep}, limit=200):
            for flow_run in old:
                for artifact in client.read_artifacts(artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))):
                    client.delete_artifact(artifact.id)
                client.delete_flow_run(flow_run.id)
                deleted += 1
print(json.dumps({{"wall": wall, "steps": steps, "prune": prune, "deleted": deleted}}))
"""


def prefect_leg(args, root: Path, frames) -> None:
    procedures, levels, night, level_night, _ = frames
    workspace = root / "ws-prefect"
    print("\nPrefect leg (each night a fresh process through the flow on the embedded API)\n")
    print("| night | flow wall (s) | steps (s) | Prefect overhead (s) | prune (s) | flow runs deleted | .prefect (MB) "
          "| database (MB) | its WAL (MB) | flow runs | artifacts | events | workspace (MB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sizes = [prefect_db(workspace)[0]]
    for k in range(1, args.prefect_nights + 1):
        source = write_source(procedures[night == k], levels[level_night == k], root / "sources" / f"p{k}")
        code = PREFECT_NIGHT.format(repo=str(REPO), workspace=str(workspace), source=str(source),
                                    run_id=f"flow-{k:04d}", seed=args.seed, flow=FLOW_NAME,
                                    keep_runs=-1 if args.no_prune else args.keep_runs,
                                    prefect_keep=-1 if args.prefect_keep_runs is None else args.prefect_keep_runs)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        if args.prefect_event_retention is not None:  # Prefect's own event vacuum, in simulated time
            env["PREFECT_SERVER_EVENTS_RETENTION_PERIOD"] = f"PT{args.prefect_event_retention}S"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        shutil.rmtree(source)
        if out.returncode != 0:
            raise SystemExit(f"Prefect night {k} failed:\n{out.stderr[-3000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        db_bytes, wal_bytes, tables = prefect_db(workspace)
        sizes.append(db_bytes)
        usage = disk_usage(workspace)
        print(f"| {k} | {result['wall']:.1f} | {result['steps']:.1f} | {result['wall'] - result['steps']:.1f} "
              f"| {result['prune']:.3f} | {result['deleted']} | {usage['prefect'] / MB:.2f} | {db_bytes / MB:.2f} "
              f"| {wal_bytes / MB:.2f} | {tables['rows:flow_run']} | {tables['rows:artifact']} "
              f"| {tables['rows:events']} | {usage['total'] / MB:.1f} |", flush=True)
    tables = {name: size for name, size in prefect_db(workspace)[2].items() if not name.startswith("rows:")}
    if len(sizes) > 2:
        print(f"\n- Prefect database file: {sizes[1] / MB:.2f} MB after the first flow night, {sizes[-1] / MB:.2f} MB "
              f"after {args.prefect_nights}; {(sizes[-1] - sizes[1]) / (len(sizes) - 2) / 1024:.0f} KB per night")
    print("- largest tables (KB): " + ", ".join(f"{name} {size / 1024:.0f}" for name, size in list(tables.items())[:10]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=365)
    parser.add_argument("--procedures", type=int, default=20_000)
    parser.add_argument("--batch-fraction", type=float, default=0.003)
    parser.add_argument("--every", type=int, default=10, help="print every k-th night")
    parser.add_argument("--keep-runs", type=int, default=30)
    parser.add_argument("--no-prune", action="store_true", help="no retention: the baseline")
    parser.add_argument("--retrain-every", type=int, default=0, help="force retraining every K nights (0: policy)")
    parser.add_argument("--prefect-nights", type=int, default=0)
    parser.add_argument("--prefect-keep-runs", type=int, help="delete all but the K latest Prefect flow runs")
    parser.add_argument("--prefect-event-retention", type=int, metavar="SECONDS",
                        help="Prefect's event retention (default its own, 7 days; nights here are seconds apart)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (workspaces to inspect)")
    args = parser.parse_args()
    if args.nights < 1 or args.every < 1 or args.prefect_nights > args.nights:
        parser.error("--nights and --every must be at least 1, and --prefect-nights at most --nights")
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} must be a new or empty folder")
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-soak-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        start = time.perf_counter()
        frames = split_nights(args.procedures, nights=args.nights, fraction=args.batch_fraction, seed=args.seed)
        print(f"{args.procedures:,} procedures, {args.nights} nights of {frames[4]} procedures, "
              + ("no pruning" if args.no_prune else f"keeping the last {args.keep_runs} runs") + "\n")
        print_local_header()
        rows, workspace = local_leg(args, root, frames)
        summarise_local(rows, workspace, nights=args.nights, keep_runs=None if args.no_prune else args.keep_runs)
        if args.prefect_nights:
            prefect_leg(args, root, frames)
        print(f"\n- benchmark wall time: {(time.perf_counter() - start) / 60:.1f} min; workspaces in {root}"
              + ("" if args.keep else " (removed)"))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
