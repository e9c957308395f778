"""How often a unit that is in control is flagged: the funnel's false-flag rate under the null, over n and p.

A unit of ``n`` procedures whose true risk is ``p`` for every case (so its expected count is ``E = n p``, exactly
what the model predicts: the unit is in control) is flagged ``high`` when its O/E lies above the upper 99.8% limit
of :func:`reports.qi.funnel_limits` (the method the report uses, no overdispersion: ``tau2 = 0``), ``low`` below
the lower. The nominal one-sided rate is 0.001.

For each (n, p) the rate is computed twice: exactly, summing the binomial probabilities of the observed counts
that flag; and by simulation (``--draws`` units drawn in control), which must agree within Monte Carlo error.
A rate above the nominal is a false alarm the method adds; a rate far below it is power it wastes. This is the
baseline the QI verdicts issue (exact limits) has to bring to at most 0.001 at every expected count from 0.1 to
1,000.

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

from reports.qi import funnel_limits  # noqa: E402

LEVEL = 0.998
NOMINAL = (1 - LEVEL) / 2
GRID = [(n, p) for p in (0.003, 0.01, 0.03, 0.1, 0.26) for n in (8, 40, 200, 1000, 5000)
        if 0.1 <= n * p <= 1000]


def exact_rates(n: int, p: float) -> tuple[float, float]:
    """P(high flag) and P(low flag) of an in-control unit, from the binomial distribution of its count."""
    e, v = n * p, n * p * (1 - p)
    lower, upper = funnel_limits(np.array([e**2 / v]), tau2=0.0, level=LEVEL)
    counts = np.arange(n + 1)
    pmf = stats.binom.pmf(counts, n, p)
    oe = counts / e
    return float(pmf[oe > upper[0]].sum()), float(pmf[oe < lower[0]].sum())


def simulated_rates(n: int, p: float, *, draws: int, rng: np.random.Generator) -> tuple[float, float]:
    e, v = n * p, n * p * (1 - p)
    lower, upper = funnel_limits(np.array([e**2 / v]), tau2=0.0, level=LEVEL)
    oe = rng.binomial(n, p, size=draws) / e
    return float(np.mean(oe > upper[0])), float(np.mean(oe < lower[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=200_000, help="Simulated in-control units per (n, p).")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"funnel limits at {LEVEL:.1%} (normal approximation, tau2 = 0); nominal one-sided rate {NOMINAL:.4g}; "
          f"{args.draws:,} simulated units per row\n")
    print("| n | p | expected E | P(high) exact | P(high) simulated | x nominal | P(low) exact | P(low) simulated |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, p in GRID:
        high, low = exact_rates(n, p)
        sim_high, sim_low = simulated_rates(n, p, draws=args.draws, rng=rng)
        se = np.sqrt(max(high, 1e-12) * (1 - high) / args.draws)
        if abs(sim_high - high) > 5 * se + 1e-9:
            raise SystemExit(f"simulation disagrees with the exact rate at n={n}, p={p}: {sim_high} vs {high}")
        print(f"| {n:,} | {p:g} | {n * p:.3g} | {high:.5f} | {sim_high:.5f} | {high / NOMINAL:.1f} | {low:.5f} | "
              f"{sim_low:.5f} |")


if __name__ == "__main__":
    main()
