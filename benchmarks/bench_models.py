"""Benchmark the risk models on generator data whose true probabilities are known.

Quality (default 20,000 procedures): per outcome, the validated AUROC against the AUROC of the true
probabilities on the same rows, the validated calibration slope and ICI. Speed: training, calibration
and validation of all four outcomes at each size, with peak memory, and scoring throughput.
Each size runs in a fresh process. Not part of the test suite.

    .venv/bin/python benchmarks/bench_models.py [--quality 20000] [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_ingest import PeakRss  # noqa: E402

TRUTH = {"leakage_any": "p_leakage_any", "leakage_canal": "p_leakage_canal",
         "leakage_venous": "p_leakage_venous", "infection_90d": "p_infection_90d"}


def run_size(size: int, *, seed: int, n_boot: int, folds: int) -> dict:

    from features.matrices import build_level_frame, build_procedure_frame
    from models.metrics import auroc
    from models.outcomes import OUTCOMES
    from models.scoring import score_records
    from models.training import TrainingConfig, train_outcome
    from synth.generator import generate_registry

    rss = PeakRss()
    registry = generate_registry(size, seed=seed)
    frames = {"level": build_level_frame(registry.procedures, registry.levels),
              "procedure": build_procedure_frame(registry.procedures)}
    truth = {"level": registry.truth_levels, "procedure": registry.truth_procedures}
    config = TrainingConfig(seed=seed, n_folds=folds, n_boot=n_boot)
    report: dict = {"size": size, "levels": len(registry.levels), "outcomes": {}}
    workspace = Path(tempfile.mkdtemp(prefix="bench-models-"))
    rss.reset()
    for spec in OUTCOMES:
        start = time.perf_counter()
        result = train_outcome(spec, frames[spec.unit], config=config, workspace=workspace)
        seconds = time.perf_counter() - start
        eligible, y = spec.labels(frames[spec.unit])
        p_true = truth[spec.unit][TRUTH[spec.name]].to_numpy()[eligible]
        row = {"seconds": round(seconds, 1), "peak_mb": round(rss.peak_mb()), "rows": int(len(y)),
               "events": int(y.sum()), "fitted": result.fitted, "auroc_truth": round(auroc(y, p_true), 4)}
        if result.fitted:
            v = result.metrics["validation"]["validated"]
            row.update(selected=result.metrics["selected"], auroc=v["auroc"]["estimate"],
                       slope=v["calibration_slope"]["estimate"], ici=v["ici"]["estimate"])
        report["outcomes"][spec.name] = row
    start = time.perf_counter()
    score_records(registry.procedures, registry.levels, workspace=workspace)
    report["score_levels_per_second"] = round(len(registry.levels) / (time.perf_counter() - start))
    report["peak_mb"] = round(rss.peak_mb())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", type=int, default=20_000)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_size(args.child, seed=args.seed, n_boot=args.n_boot, folds=args.folds)))
        return
    reports = {}
    for size in sorted({args.quality, *args.sizes}):
        done = subprocess.run([sys.executable, __file__, "--child", str(size), "--seed", str(args.seed),
                               "--n-boot", str(args.n_boot), "--folds", str(args.folds)],
                              capture_output=True, text=True, check=True, env={**os.environ})
        reports[size] = json.loads(done.stdout.strip().splitlines()[-1])
    quality = reports[args.quality]
    print(f"Quality at {args.quality:,} procedures ({quality['levels']:,} levels), seed {args.seed}, "
          f"{args.folds}-fold CV by procedure:\n")
    print("| outcome | rows | events | selected | validated AUROC | AUROC of true p | difference | "
          "calibration slope | ICI |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for name, row in quality["outcomes"].items():
        if row["fitted"]:
            print(f"| {name} | {row['rows']:,} | {row['events']:,} | {row['selected']} | {row['auroc']:.3f} | "
                  f"{row['auroc_truth']:.3f} | {row['auroc'] - row['auroc_truth']:+.3f} | {row['slope']:.3f} | "
                  f"{row['ici']:.4f} |")
        else:
            print(f"| {name} | {row['rows']:,} | {row['events']:,} | not fitted (sample size) | - | "
                  f"{row['auroc_truth']:.3f} | - | - | - |")
    print("\nSpeed (training, calibration, validation, gate and store of each outcome; one process per size):\n")
    print("| procedures | level rows | " + " | ".join(f"{n} (s)" for n in TRUTH) + " | total (s) | peak RSS (MB) "
          "| scoring (level rows/s) |")
    print("|---:|---:|" + "---:|" * (len(TRUTH) + 3))
    for size in sorted(reports):
        r = reports[size]
        total = sum(o["seconds"] for o in r["outcomes"].values())
        print(f"| {size:,} | {r['levels']:,} | " + " | ".join(str(r["outcomes"][n]["seconds"]) for n in TRUTH)
              + f" | {total:.1f} | {r['peak_mb']:,} | {r['score_levels_per_second']:,} |")


if __name__ == "__main__":
    main()
