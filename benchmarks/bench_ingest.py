"""Benchmark: read, guard, validate and register 10k, 100k and 1M procedures from Parquet.

Prints rows per second and peak resident memory per step, one table per size, and how cost grows.
Each size runs in a fresh subprocess so that peak memory is that size's own. Not part of the test suite.

    .venv/bin/python benchmarks/bench_ingest.py [--sizes 10000 100000 1000000] [--out bench-out]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


class PeakRss:
    """Samples this process's resident set size every 10 ms; reports the peak since the last reset."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(0.01)

    def reset(self) -> None:
        self._peak = self._rss()

    def peak_mb(self) -> float:
        return max(self._peak, self._rss()) / 2**20


def measure_one(source: Path, workspace: Path) -> dict:
    """Run the four ingest steps once, timing each and sampling peak memory."""
    from pipelines import ingest

    rss = PeakRss()
    rows: dict[str, float] = {}
    steps = {}
    rss.reset()
    start = time.perf_counter()
    raw = ingest.load_batch(source)
    steps["read"] = (time.perf_counter() - start, rss.peak_mb())
    rows["procedures"], rows["levels"] = len(raw.procedures), len(raw.levels)
    rss.reset()
    start = time.perf_counter()
    ingest.screen_batch(raw)
    steps["guard"] = (time.perf_counter() - start, rss.peak_mb())
    rss.reset()
    start = time.perf_counter()
    result = ingest.check_batch(raw, workspace=workspace)
    steps["validate"] = (time.perf_counter() - start, rss.peak_mb())
    rss.reset()
    start = time.perf_counter()
    registration = ingest.register(result, workspace=workspace, run_id="bench")
    steps["register"] = (time.perf_counter() - start, rss.peak_mb())
    return {"rows": rows, "steps": steps, "accepted": registration.rows_written}


def ensure_source(size: int, out: Path, seed: int) -> Path:
    from synth.generator import generate_registry, write_registry

    folder = out / f"synthetic-{size}"
    if not (folder / "levels.parquet").exists():
        write_registry(generate_registry(size, seed=seed), folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        ensure_source(args.generate, args.out, args.seed)
        return
    if args.child:
        source = args.out / f"synthetic-{args.child}"
        workspace = args.out / f"ws-{args.child}-{os.getpid()}"
        print(json.dumps(measure_one(source, workspace)))
        return
    print(f"ingest benchmark on {os.cpu_count()} cores; Parquet source made by synth.generator (seed {args.seed})\n")
    print("| procedures | level rows | step | seconds | procedures/s | peak RSS (MB) |")
    print("|---:|---:|---|---:|---:|---:|")
    totals = {}
    for size in args.sizes:
        # the source is generated in a process of its own, so that its memory is not counted
        subprocess.run([sys.executable, __file__, "--generate", str(size), "--out", str(args.out),
                        "--seed", str(args.seed)], check=True)
        done = subprocess.run([sys.executable, __file__, "--child", str(size), "--out", str(args.out),
                               "--seed", str(args.seed)], capture_output=True, text=True, check=True)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        total = sum(seconds for seconds, _ in report["steps"].values())
        peak = max(mb for _, mb in report["steps"].values())
        for step, (seconds, mb) in report["steps"].items():
            print(f"| {size:,} | {report['rows']['levels']:,} | {step} | {seconds:.2f} | "
                  f"{size / seconds:,.0f} | {mb:,.0f} |")
        print(f"| {size:,} | {report['rows']['levels']:,} | **total** | **{total:.2f}** | "
              f"**{size / total:,.0f}** | **{peak:,.0f}** |")
        totals[size] = total
    sizes = sorted(totals)
    for small, big in zip(sizes, sizes[1:]):
        print(f"\n{small:,} -> {big:,} procedures ({big / small:.0f}x): time x{totals[big] / totals[small]:.1f}")


if __name__ == "__main__":
    main()
