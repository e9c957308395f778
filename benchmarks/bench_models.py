"""Benchmark the risk models on generator data whose true probabilities are known.

Quality (default at 20,000 and 100,000 procedures, both leakage structures of the generator: "literature",
log-linear, and "nonlinear", with a fill-ratio threshold and viscosity interactions): per outcome and
candidate, the validated AUROC against the AUROC of the observable-only truth (the truth's risk given what
the records hold: the fair ceiling) and of the full truth on the same rows, calibration slope and ICI, the
nested figure and what nesting cost, and the internal-external (leave-one-site-out, by period) pooled figures
with their 95% prediction intervals. Speed: per-candidate fit time, training of all four outcomes at each
size with peak memory, and scoring throughput. Each size runs in a fresh process. Not part of the suite.

    .venv/bin/python benchmarks/bench_models.py [--quality 20000 100000] [--sizes 10000 100000 1000000]
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
OBSERVABLE = "_observable"


def run_size(size: int, *, seed: int, n_boot: int, folds: int, structure: str = "literature",
             outcomes: tuple[str, ...] = ()) -> dict:

    from features.matrices import build_level_frame, build_procedure_frame
    from models.metrics import auroc
    from models.outcomes import OUTCOMES
    from models.scoring import score_records
    from models.training import TrainingConfig, train_outcome
    from synth.generator import generate_registry

    rss = PeakRss()
    registry = generate_registry(size, seed=seed, leak_structure=structure)
    frames = {"level": build_level_frame(registry.procedures, registry.levels),
              "procedure": build_procedure_frame(registry.procedures)}
    truth = {"level": registry.truth_levels, "procedure": registry.truth_procedures}
    config = TrainingConfig(seed=seed, n_folds=folds, n_boot=n_boot)
    report: dict = {"size": size, "structure": structure, "levels": len(registry.levels), "outcomes": {}}
    workspace = Path(tempfile.mkdtemp(prefix="bench-models-"))
    rss.reset()
    for spec in [o for o in OUTCOMES if not outcomes or o.name in outcomes]:
        start = time.perf_counter()
        result = train_outcome(spec, frames[spec.unit], config=config, workspace=workspace)
        seconds = time.perf_counter() - start
        eligible, y = spec.labels(frames[spec.unit])
        p_true = truth[spec.unit][TRUTH[spec.name]].to_numpy()[eligible]
        p_seen = truth[spec.unit][TRUTH[spec.name] + OBSERVABLE].to_numpy()[eligible]
        row = {"seconds": round(seconds, 1), "peak_mb": round(rss.peak_mb()), "rows": int(len(y)),
               "events": int(y.sum()), "fitted": result.fitted, "auroc_truth": round(auroc(y, p_true), 4),
               "auroc_observable": round(auroc(y, p_seen), 4)}
        if result.fitted:
            m = result.metrics
            v = m["validation"]["validated"]
            row.update(selected=m["selected"], auroc=v["auroc"]["estimate"],
                       slope=v["calibration_slope"]["estimate"], ici=v["ici"]["estimate"],
                       nested=m["nested_selection"], timings=result.timings or {},
                       candidates=[{k: c.get(k) for k in ("name", "validated_auroc", "validated_calibration_slope",
                                                          "validated_ici", "cv_log_loss")} for c in m["candidates"]],
                       internal_external=_pooled(m.get("internal_external") or {}))
        report["outcomes"][spec.name] = row
    report["peak_mb_training"] = round(rss.peak_mb())
    report["score_levels_per_second"] = None
    if not outcomes:  # scoring needs every outcome's model
        start = time.perf_counter()
        score_records(registry.procedures, registry.levels, workspace=workspace)
        report["score_levels_per_second"] = round(len(registry.levels) / (time.perf_counter() - start))
    report["peak_mb"] = round(rss.peak_mb())
    return report


def _pooled(transport: dict) -> dict:
    """The pooled internal-external figures: kind -> measure -> estimate, CI, prediction interval, tau^2, k."""
    out: dict = {}
    for kind in ("sites", "temporal"):
        pooled = (transport.get(kind) or {}).get("pooled") or {}
        out[kind] = {measure: {"estimate": v.get("estimate"), "low": v.get("low"), "high": v.get("high"),
                               "prediction_interval": [v.get("prediction_low"), v.get("prediction_high")],
                               "tau2": v.get("tau2"), "k": v.get("k")}
                     for measure, v in pooled.items() if isinstance(v, dict)}
    return out


def _quality_tables(quality: dict) -> None:
    print(f"\n### {quality['size']:,} procedures ({quality['levels']:,} levels), structure {quality['structure']}\n")
    print("| outcome | candidate | validated AUROC | gap to observable-only truth | gap to full truth | "
          "calibration slope | ICI | fit time (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, row in quality["outcomes"].items():
        if not row["fitted"]:
            print(f"| {name} | not fitted (sample size) | - | ceiling {row['auroc_observable']:.3f} | "
                  f"truth {row['auroc_truth']:.3f} | - | - | - |")
            continue
        for c in row["candidates"]:
            a = c["validated_auroc"]
            print(f"| {name} | {c['name']} | {a:.4f} | {a - row['auroc_observable']:+.4f} | "
                  f"{a - row['auroc_truth']:+.4f} | {c['validated_calibration_slope']:.3f} | {c['validated_ici']:.4f} "
                  f"| {row['timings'].get(c['name'], 0):.1f} |")
        n = row["nested"]
        print(f"| {name} | **nested (selected: {row['selected']}; per fold {', '.join(n['chosen_by_fold'])})** | "
              f"{row['auroc']:.4f} | {row['auroc'] - row['auroc_observable']:+.4f} | "
              f"{row['auroc'] - row['auroc_truth']:+.4f} | {row['slope']:.3f} | {row['ici']:.4f} | "
              f"{row['timings'].get('final_fit', 0):.1f} (final fit) |")
    print("\nNested selection (log loss of nested validated risks vs the selected candidate's, not nested):\n")
    print("| outcome | nested log loss | not nested | cost of choosing | agreement across folds |")
    print("|---|---:|---:|---:|---:|")
    for name, row in quality["outcomes"].items():
        if row["fitted"]:
            n = row["nested"]
            print(f"| {name} | {n['log_loss_nested']:.5f} | {n['log_loss_not_nested']:.5f} | "
                  f"{n['cost_of_choosing']:+.5f} | {n['agreement']:.2f} |")
    print("\nInternal-external validation, random-effects pooled (95% CI; 95% prediction interval; tau^2; units):\n")
    print("| outcome | held out by | measure | pooled | 95% CI | 95% prediction interval | tau^2 | k |")
    print("|---|---|---|---:|---|---|---:|---:|")
    for name, row in quality["outcomes"].items():
        for kind, measures in (row.get("internal_external") or {}).items():
            for measure, v in measures.items():
                if v.get("estimate") is None:
                    continue
                pi = v.get("prediction_interval") or [None, None]
                print(f"| {name} | {kind} | {measure} | {v['estimate']:.3f} | {_pair(v.get('low'), v.get('high'))} | "
                      f"{_pair(*pi)} | {_num(v.get('tau2'), 4)} | {v.get('k', '-')} |")


def _thousands(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _pair(low: float | None, high: float | None) -> str:
    return "-" if low is None or high is None else f"{low:.3f} to {high:.3f}"


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument("--structures", nargs="*", default=["literature", "nonlinear"])
    parser.add_argument("--structure", default="literature", help=argparse.SUPPRESS)
    parser.add_argument("--outcomes", nargs="*", default=[], help="only these outcomes (default: all four)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_size(args.child, seed=args.seed, n_boot=args.n_boot, folds=args.folds,
                                  structure=args.structure, outcomes=tuple(args.outcomes))))
        return

    def child(size: int, structure: str) -> dict:
        done = subprocess.run([sys.executable, __file__, "--child", str(size), "--seed", str(args.seed),
                               "--n-boot", str(args.n_boot), "--folds", str(args.folds), "--structure", structure,
                               "--outcomes", *args.outcomes],
                              capture_output=True, text=True, check=True, env={**os.environ})
        return json.loads(done.stdout.strip().splitlines()[-1])

    reports = {}
    print(f"Quality, seed {args.seed}, {args.folds}-fold nested CV by procedure:")
    for size in args.quality:
        for structure in args.structures:
            report = child(size, structure)
            _quality_tables(report)
            if structure == "literature":
                reports[size] = report
    for size in args.sizes:
        if size not in reports:
            reports[size] = child(size, "literature")
    print("\nSpeed (nested development, calibration, validation, internal-external validation, gate and store of "
          "each outcome; one process per size):\n")
    print("| procedures | level rows | " + " | ".join(f"{n} (s)" for n in TRUTH) + " | total (s) | peak RSS (MB) "
          "| scoring (level rows/s) |")
    print("|---:|---:|" + "---:|" * (len(TRUTH) + 3))
    for size in sorted(reports):
        r = reports[size]
        total = sum(o["seconds"] for o in r["outcomes"].values())
        print(f"| {size:,} | {r['levels']:,} | " + " | ".join(str(r["outcomes"].get(n, {}).get("seconds", "-"))
                                                             for n in TRUTH)
              + f" | {total:.1f} | {r['peak_mb']:,} | {_thousands(r['score_levels_per_second'])} |")


if __name__ == "__main__":
    main()
