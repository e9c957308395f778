"""How often a unit that is in control is flagged: the funnel's false-alarm rate under the null, over n and p.

A unit of ``n`` cases whose true risks are what the model predicts (so it is in control) is in *alarm high* when its
count lies above the upper 99.8% limit; the nominal one-sided rate is 0.001. Two methods are compared:

* **normal**: the limits the report used before the QI verdicts issue, ``1 + z sqrt(V)/E`` on the O/E scale
  (Spiegelhalter 2005's normal approximation, tau2 = 0);
* **exact**: today's limits (:func:`reports.qi.count_limits` of :func:`reports.null_counts.null_count_distribution`):
  the Poisson-binomial distribution of the unit's count from its own risks.

Each row gives P(alarm high) computed exactly from the binomial (equal risks) for both methods, the exact method's
rate by simulation (``--draws`` in-control units), and the *tightest* rate a count limit allows, P(X >= u) where u
is the exact limit: the exact method is not wasteful when its rate is the largest one at or below 0.001 (the next
count down would exceed it). A second table draws mixed risks (beta-distributed around p) and simulates each case,
so the Poisson-binomial itself is checked against data it did not compute.

    .venv/bin/python benchmarks/bench_funnel_null.py [--draws 200000] [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reports.null_counts import null_count_distribution  # noqa: E402
from reports.qi import count_limits  # noqa: E402

LEVEL = 0.998
NOMINAL = (1 - LEVEL) / 2
GRID = [(n, p) for p in (0.003, 0.01, 0.03, 0.1, 0.2, 0.26) for n in (8, 40, 200, 1000, 5000)
        if 0.1 <= n * p <= 1000]


def normal_upper_count(n: int, p: float) -> float:
    e, v = n * p, n * p * (1 - p)
    return e * (1 + stats.norm.ppf(1 - NOMINAL) * np.sqrt(v) / e)  # alarm when the count exceeds this


def exact_row(n: int, p: float, *, draws: int, rng: np.random.Generator) -> dict[str, float]:
    counts = np.arange(n + 1)
    pmf = stats.binom.pmf(counts, n, p)
    _, u = count_limits(null_count_distribution(np.full(n, p)), LEVEL)
    simulated = rng.binomial(n, p, size=draws)
    return {"normal": float(pmf[counts > normal_upper_count(n, p)].sum()), "exact": float(stats.binom.sf(u, n, p)),
            "simulated": float(np.mean(simulated > u)), "tightest": float(stats.binom.sf(u - 1, n, p)), "u": u}


def mixed_row(n: int, p: float, *, draws: int, rng: np.random.Generator) -> dict[str, float]:
    risks = np.clip(rng.beta(2.0, 2.0 * (1 - p) / p, size=n), 1e-6, 1 - 1e-6)
    _, u = count_limits(null_count_distribution(risks), LEVEL)
    over, chunk = 0, max(1, 20_000_000 // n)
    for start in range(0, draws, chunk):
        size = min(chunk, draws - start)
        over += int(((rng.random((size, n)) < risks).sum(axis=1) > u).sum())
    return {"e": float(risks.sum()), "u": u, "simulated": over / draws}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200_000, help="Simulated in-control units per row.")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"P(alarm high) of an in-control unit at the {LEVEL:.1%} limit; nominal {NOMINAL:.4g}; "
          f"{args.draws:,} simulated units per row\n")
    print("| n | p | E | normal approx. | x nominal | exact | exact, simulated | x nominal | tightest above |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    worst = 0.0
    for n, p in GRID:
        row = exact_row(n, p, draws=args.draws, rng=rng)
        se = np.sqrt(max(row["exact"], 1e-12) * (1 - row["exact"]) / args.draws)
        if abs(row["simulated"] - row["exact"]) > 5 * se + 1e-9:
            raise SystemExit(f"simulation disagrees with the exact rate at n={n}, p={p}")
        worst = max(worst, row["exact"])
        print(f"| {n:,} | {p:g} | {n * p:.3g} | {row['normal']:.5f} | {row['normal'] / NOMINAL:.1f} | "
              f"{row['exact']:.5f} | {row['simulated']:.5f} | {row['exact'] / NOMINAL:.2f} | {row['tightest']:.5f} |")
    print(f"\nlargest exact P(alarm high): {worst:.5f} (nominal {NOMINAL:g})\n")
    print("Mixed risks (beta around p, each case simulated): the Poisson-binomial limit against data\n")
    print("| n | mean p | E | upper count u | P(count > u) simulated | x nominal |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, p in [(8, 0.26), (40, 0.03), (40, 0.26), (200, 0.01), (1000, 0.003), (1000, 0.1)]:
        row = mixed_row(n, p, draws=args.draws, rng=rng)
        print(f"| {n:,} | {p:g} | {row['e']:.3g} | {row['u']} | {row['simulated']:.5f} | "
              f"{row['simulated'] / NOMINAL:.2f} |")


if __name__ == "__main__":
    main()
