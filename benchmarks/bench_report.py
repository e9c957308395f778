"""Benchmark the report step at 10k, 100k and 1M procedures: figures, report.html, qi_units.csv, submission.

The expected risks are the generator's true probabilities (scoring is measured in bench_models.py), and
the models' figures come from one small training run reused at every size (their size does not grow with
the registry). Each size runs in a fresh process. Prints seconds per step, report.html size and peak memory.

    .venv/bin/python benchmarks/bench_report.py [--sizes 10000 100000 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_ingest import PeakRss  # noqa: E402


def model_figures(path: Path, seed: int) -> None:
    """Train once on 5,000 procedures and keep the models' figures as the report shows them."""
    from models.refresh import published_model_metrics, refresh_models
    from models.training import TrainingConfig
    from pipelines.ingest import run_ingest
    from synth.generator import generate_registry, write_registry

    with tempfile.TemporaryDirectory() as tmp:
        source, workspace = Path(tmp) / "src", Path(tmp) / "ws"
        write_registry(generate_registry(5_000, seed=seed), source)
        run_ingest(source, workspace)
        refresh_models(workspace, run_id="bench", config=TrainingConfig(seed=seed, n_folds=3, n_boot=50))
        path.write_text(json.dumps(published_model_metrics(workspace)))


def run_size(size: int, *, seed: int, models_path: Path) -> dict:
    import pandas as pd

    from models.scoring import PROCEDURE_LEAKAGE_RISK, Scores
    from synth.generator import generate_registry
    from reports.figures import build_figures
    from reports.html import render_report
    from reports.submission import validate_submission, write_submission

    registry = generate_registry(size, seed=seed)
    procedures, levels = registry.procedures, registry.levels
    truth_levels = registry.truth_levels.rename(columns={f"p_{n}": f"{n}_risk" for n in
                                                         ("leakage_any", "leakage_canal", "leakage_venous")})
    no_leak = (1 - truth_levels["leakage_any_risk"]).groupby(truth_levels["procedure_id"]).prod()
    truth_procedures = registry.truth_procedures.rename(columns={"p_infection_90d": "infection_risk"})
    truth_procedures[PROCEDURE_LEAKAGE_RISK] = 1 - truth_procedures["procedure_id"].map(no_leak).to_numpy()
    versions = {"leakage_any": "v0001", "leakage_canal": "v0001", "leakage_venous": "v0001", "infection_90d": "v0001"}
    scores = Scores(levels=truth_levels, procedures=truth_procedures, versions=versions)
    manifest = {"source": "benchmark", "status": "ok", "batches_loaded": [1], "batches_skipped": [],
                "tables": {name: {"rows_in": len(t), "rows_accepted": len(t), "rows_quarantined": 0,
                                  "rows_skipped_registered": 0, "columns_dropped": [], "quarantine_rules": {}}
                           for name, t in (("procedures", procedures), ("levels", levels))}}
    model_metrics = json.loads(models_path.read_text())
    rss = PeakRss()
    rss.reset()
    steps: dict[str, float] = {}
    out = Path(tempfile.mkdtemp(prefix="bench-report-"))

    start = time.perf_counter()
    written = write_submission(out / "submission", procedures=procedures, levels=levels, level_risks=scores.levels,
                               procedure_risks=scores.procedures, model_versions=versions, code_version="bench",
                               watermark=int(procedures["extract_batch"].max()))
    steps["submission"] = time.perf_counter() - start
    start = time.perf_counter()
    problems = validate_submission(out / "submission")
    steps["submission check"] = time.perf_counter() - start
    assert not problems, problems
    start = time.perf_counter()
    built = build_figures(run={"code_version": "bench"}, manifest=manifest, procedures=procedures, levels=levels,
                          scores=scores, model_metrics=model_metrics,
                          submission={"files": written.manifest["files"], "period": "all"},
                          watermark=int(procedures["extract_batch"].max()))
    steps["figures (QI, trends, monitoring, outcomes)"] = time.perf_counter() - start
    start = time.perf_counter()
    html = render_report(built.figures, run_id="bench")
    (out / "report.html").write_text(html, encoding="utf-8")
    built.qi_units.to_csv(out / "qi_units.csv", index=False)
    steps["render report.html and qi_units.csv"] = time.perf_counter() - start
    return {"size": size, "levels": len(levels), "steps": {k: round(v, 2) for k, v in steps.items()},
            "report_mb": round(len(html.encode()) / 1e6, 2), "peak_mb": round(rss.peak_mb()),
            "data_csv_mb": round(sum(f.stat().st_size for f in (out / "submission" / "data").glob("*.csv")) / 1e6, 1),
            "units": int(len(pd.unique(built.qi_units["unit_id"])))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_size(args.child, seed=args.seed, models_path=args.models)))
        return
    models_path = Path(tempfile.mkdtemp(prefix="bench-models-")) / "model_metrics.json"
    model_figures(models_path, args.seed)
    reports = []
    for size in sorted(args.sizes):
        done = subprocess.run([sys.executable, __file__, "--child", str(size), "--seed", str(args.seed),
                               "--models", str(models_path)], capture_output=True, text=True, check=True)
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    steps = list(reports[0]["steps"])
    print("| procedures | level rows | " + " | ".join(f"{s} (s)" for s in steps)
          + " | report.html (MB) | data files (MB) | peak RSS (MB) |")
    print("|---:|---:|" + "---:|" * (len(steps) + 3))
    for r in reports:
        print(f"| {r['size']:,} | {r['levels']:,} | " + " | ".join(str(r["steps"][s]) for s in steps)
              + f" | {r['report_mb']} | {r['data_csv_mb']} | {r['peak_mb']:,} |")


if __name__ == "__main__":
    main()
