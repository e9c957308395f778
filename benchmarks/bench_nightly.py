"""Benchmark the nightly run: one new batch of 1% added to a registry of 10k, 100k and 1M procedures.

Set-up (not timed): the registry is registered and scored once, with champion models trained on a 20,000-procedure
registry of the same generator (training at 1M is measured in bench_models.py) and recorded as trained at the
registry's watermark. Then a new extract batch of 1% of the registry arrives:

- ``plain``: ``pipelines.job.run_job`` (no orchestrator): ingest, the retraining decision with its drift checks,
  the report step (score the new batch, figures, submission) and the switch of ``published.json``;
- ``prefect``: the same night on a copy of the workspace through the Prefect flow ``run_flow`` (embedded API),
  to measure the orchestration's own cost: the flow's wall time minus the time of its steps.

Each size runs in a fresh process. Prints seconds per step, the retraining decision and peak memory.

    .venv/bin/python benchmarks/bench_nightly.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_ingest import PeakRss  # noqa: E402

MODEL_PROCEDURES = 20_000


def train_models(models_dir: Path, seed: int) -> None:
    """Champions trained on a 20k registry, kept as a models folder to copy into each workspace."""
    from models.training import TrainingConfig
    from pipelines.job import run_job
    from synth.generator import generate_registry, write_registry

    with tempfile.TemporaryDirectory() as tmp:
        source, workspace = Path(tmp) / "src", Path(tmp) / "ws"
        write_registry(generate_registry(MODEL_PROCEDURES, seed=seed), source)
        run_job(source, workspace, run_id="models", config=TrainingConfig(seed=seed, n_folds=3, repeats=1, n_boot=50))
        shutil.copytree(workspace / "models", models_dir)


def split_night(size: int, *, seed: int):
    """A registry of ``size`` procedures and a night's batch of 1% more drawn at random from the same population
    (same sites, operators, case mix and years), numbered one above the registry's watermark."""
    from dataclasses import replace

    from records import schema as s
    from synth.generator import generate_registry

    new = max(size // 100, 11)
    everything = generate_registry(size + new, seed=seed)
    procedures = everything.procedures
    # a random 1%, not the latest procedures: the registry spans 2015-2025 with time trends, and a batch of the
    # latest year alone drifts from the models' training reference (the policy then retrains, as it should;
    # that path is measured in bench_models.py)
    night_ids = procedures[s.PROCEDURE_ID].sample(n=new, random_state=seed)
    is_night = procedures[s.PROCEDURE_ID].isin(night_ids)
    base_procedures = procedures[~is_night]
    watermark = int(base_procedures[s.EXTRACT_BATCH].max())
    night_procedures = procedures[is_night].assign(**{s.EXTRACT_BATCH: watermark + 1})
    level_is_night = everything.levels[s.PROCEDURE_ID].isin(night_ids)
    base = replace(everything, procedures=base_procedures.reset_index(drop=True),
                   levels=everything.levels[~level_is_night].reset_index(drop=True))
    night = replace(everything, procedures=night_procedures.reset_index(drop=True),
                    levels=everything.levels[level_is_night].reset_index(drop=True))
    return base, night, watermark


def run_size(size: int, *, seed: int, models_dir: Path, root: Path) -> dict:
    import datetime as dt

    from records import schema as s
    from synth.generator import write_registry

    base, night, watermark = split_night(size, seed=seed)
    write_registry(base, root / "base")
    write_registry(night, root / "night")
    workspace = root / "ws"
    shutil.copytree(models_dir, workspace / "models")
    events = int(base.levels[s.LEAKAGE].fillna(False).astype(bool).sum())
    (workspace / "models" / "trained.json").write_text(json.dumps(
        {"watermark": watermark, "trained_on": dt.date.today().isoformat(), "events": events}))
    del base, night

    from pipelines.job import run_job

    start = time.perf_counter()
    run_job(root / "base", workspace, run_id="base")  # registers and scores the whole registry once
    setup = time.perf_counter() - start
    shutil.copytree(workspace, root / "ws-flow")

    peak = PeakRss()
    peak.reset()
    start = time.perf_counter()
    outcome = run_job(root / "night", workspace, run_id="night")
    plain = time.perf_counter() - start
    manifest = outcome.manifest

    from pipelines.prefect_env import configure_prefect

    configure_prefect(root / "ws-flow")
    from pipelines.flows import run_flow

    start = time.perf_counter()
    flowed = run_flow(str(root / "night"), root / "ws-flow", run_id="night-flow")
    flow_wall = time.perf_counter() - start
    flow_steps = sum(flowed.manifest.timings_seconds.values())
    return {"procedures": size, "new": max(size // 100, 11), "setup_s": round(setup, 1),
            "steps": {k: round(v, 2) for k, v in manifest.timings_seconds.items()},
            "plain_s": round(plain, 2), "flow_s": round(flow_wall, 2),
            "flow_overhead_s": round(flow_wall - flow_steps, 2),
            "retrained": bool(manifest.models.get("trained")), "decision": manifest.models.get("reason", ""),
            "scored_batches": manifest.outputs.get("scored", {}).get("scored_batches"),
            "published": json.loads((workspace / "published.json").read_text())["run_id"],
            "peak_mb": round(peak.peak_mb())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help="a models folder from an earlier run of this script (kept)")
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run_size(args.one, seed=args.seed, models_dir=args.models, root=Path(tmp))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models or Path(tmp) / "models"
        if not models_dir.exists():
            train_models(models_dir, args.seed)
        for size in args.sizes:
            out = subprocess.run([sys.executable, __file__, "--one", str(size), "--seed", str(args.seed),
                                  "--models", str(models_dir)], stdout=subprocess.PIPE, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    steps = list(rows[0]["steps"])
    print("| registry | new batch | " + " | ".join(f"{k} (s)" for k in steps)
          + " | nightly, plain (s) | nightly, Prefect flow (s) | Prefect overhead (s) | retrained | peak RSS (MB) |")
    print("|" + "---:|" * (len(steps) + 7))
    for r in rows:
        print(f"| {r['procedures']:,} | {r['new']:,} | " + " | ".join(str(r["steps"].get(k, "")) for k in steps)
              + f" | {r['plain_s']} | {r['flow_s']} | {r['flow_overhead_s']} | {'yes' if r['retrained'] else 'no'}"
              + f" | {r['peak_mb']:,} |")
    for r in rows:
        print(f"- {r['procedures']:,}: {r['decision']}; scored batches {r['scored_batches']}; published {r['published']}")


if __name__ == "__main__":
    main()
