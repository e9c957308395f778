"""Benchmark the whole job end to end at 10k, 100k and 1M procedures: ingest, the four outcomes trained, calibrated
and validated, the report and the submission, as `cementrisk run --engine local` runs it (default training
configuration), on a registry of the synthetic generator written as Parquet.

Each size runs in a fresh process (so peak memory is that size's own). Prints, per size, the seconds and peak
resident memory of each step of the run (the steps the manifest times: the ingest steps, ``models``, ``report``),
the seconds per 1,000 procedures, and how cost grows from one size to the next (the exponent b of
time ~ size^b between neighbouring sizes: 1 is linear). Also prints how long `cementrisk --help` takes to start.

    .venv/bin/python benchmarks/bench_end_to_end.py [--sizes 10000 100000 1000000] [--seed 7] [--development-rows N]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_ingest import PeakRss  # noqa: E402
from models import DEFAULT_DEVELOPMENT_ROWS  # noqa: E402


def measure(size: int, seed: int, development_rows: int | None) -> dict:
    """One size in this process: generate (not timed), then run the job, peak memory sampled per step."""
    from models import progress
    from models.training import TrainingConfig
    from pipelines.job import run_job
    from synth.generator import generate_registry, write_registry
    from workspace.manifest import new_run_id

    class Tasks:  # the profile: every progress task of the run with its count and seconds
        def __init__(self) -> None:
            self.open: dict[int, tuple[str, int]] = {}
            self.done: list[tuple[str, int, float]] = []

        def start(self, key: int, label: str, total: int) -> None:
            self.open[key] = (label, total)

        def advance(self, key: int, done: int) -> None:
            pass

        def finish(self, key: int, seconds: float) -> None:
            label, total = self.open.pop(key)
            self.done.append((label, total, round(seconds, 1)))

    with tempfile.TemporaryDirectory() as tmp:
        source, workspace = Path(tmp) / "src", Path(tmp) / "ws"
        write_registry(generate_registry(size, seed=seed), source)
        rss = PeakRss()
        peaks: dict[str, float] = {}
        current = ["ingest"]

        def on_step(step: str) -> None:
            peaks[current[0]] = max(peaks.get(current[0], 0.0), rss.peak_mb())
            rss.reset()
            current[0] = step

        tasks = Tasks()
        start = time.perf_counter()
        with progress.reporting(tasks):
            outcome = run_job(source, workspace, run_id=new_run_id(), on_step=on_step,
                              config=TrainingConfig(development_rows=development_rows))
        total = time.perf_counter() - start
        peaks[current[0]] = max(peaks.get(current[0], 0.0), rss.peak_mb())
        timings = dict(outcome.manifest.timings_seconds)
        return {"size": size, "development_rows": development_rows, "total_seconds": round(total, 1),
                "timings": timings,
                "peak_mb": {k: round(v) for k, v in peaks.items()}, "peak_mb_run": round(max(peaks.values())),
                "tasks": sorted(tasks.done, key=lambda t: -t[2])}


def help_seconds() -> float:
    """Wall time of `cementrisk --help` in a fresh interpreter (best of three)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], cwd=REPO, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--development-rows", type=int, default=DEFAULT_DEVELOPMENT_ROWS,
                        help="TrainingConfig.development_rows (0: every row)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size, JSON out
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.seed, args.development_rows or None)))
        return
    print(f"`cementrisk --help`: {help_seconds():.2f} s")
    results = []
    for size in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--one", str(size), "--seed", str(args.seed),
                               "--development-rows", str(args.development_rows)],
                              capture_output=True, text=True, cwd=REPO)
        if done.returncode != 0:
            print(f"{size:>9,}: failed\n{done.stderr[-2000:]}")
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print_result(results[-1])
    print_growth(results)


def print_result(result: dict) -> None:
    size = result["size"]
    sample = result.get("development_rows")
    print(f"\n{size:,} procedures (development_rows {sample or 'every row'}): "
          f"{result['total_seconds']:.1f} s end to end "
          f"({1000 * result['total_seconds'] / size:.2f} s per 1,000), peak {result['peak_mb_run']:,} MB")
    print(f"| step | seconds | peak MB |\n|---|---:|---:|")
    for step, seconds in result["timings"].items():
        print(f"| {step} | {seconds:.1f} | {result['peak_mb'].get(step, float('nan')):,} |")
    print("\nthe ten longest tasks:\n| task | pieces | seconds |\n|---|---:|---:|")
    for label, pieces, seconds in result["tasks"][:10]:
        print(f"| {label} | {pieces:,} | {seconds:.1f} |")


def print_growth(results: list[dict]) -> None:
    if len(results) < 2:
        return
    print("\n| from | to | time exponent b (time ~ size^b) | models b | report b |\n|---|---|---:|---:|---:|")
    for a, b in zip(results, results[1:]):
        ratio = math.log(b["size"] / a["size"])

        def exponent(x: float, y: float) -> str:
            return f"{math.log(y / x) / ratio:.2f}" if x > 0 and y > 0 else "-"

        print(f"| {a['size']:,} | {b['size']:,} | {exponent(a['total_seconds'], b['total_seconds'])} | "
              f"{exponent(a['timings'].get('models', 0), b['timings'].get('models', 0))} | "
              f"{exponent(a['timings'].get('report', 0), b['timings'].get('report', 0))} |")


if __name__ == "__main__":
    main()
