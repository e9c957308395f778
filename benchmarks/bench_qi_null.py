"""QI verdicts through the whole pipeline: false alarms when no unit differs, and power when some do.

Three registries from the generator, each run end to end (ingest, models, report) with the local engine:

* **shuffled**: the (site, operator) pair of every procedure is shuffled across procedures, so the generator's site
  and operator effects are spread at random and no unit truly differs from its case mix. Every published alarm
  high is a false alarm; at 99.8% limits the nominal rate is 0.001 per unit-outcome (0.025 for alerts at 95%).
* **outliers**: the shuffled registry with planted excesses: two sites and three operators get odds ratio
  ``--odds-ratio`` (default 2) of any leakage on their levels (new leaks are paravertebral, so only any leakage
  changes; the label is redrawn exactly as Bernoulli(expit(logit p + log OR)) from the generator's true risk).
* **generator**: the generator's own registry (its two clearly worse sites at odds ratio 2 and random site and
  operator effects), for reference.

Printed: per registry, unit-outcomes with a published verdict, alarms and alerts high against their nominal
expectation, alarms surviving FDR 5%, and for the planted units whether each is in alarm (published and internal).

    .venv/bin/python benchmarks/bench_qi_null.py [--procedures 20000] [--seed 11] [--odds-ratio 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from models.training import TrainingConfig  # noqa: E402
from pipelines.job import run_job  # noqa: E402
from records import schema as s  # noqa: E402
from reports.publish import QI_UNITS_FILE, report_for_audience  # noqa: E402
from synth.generator import P_LEAKAGE_ANY, SyntheticRegistry, generate_registry, write_registry  # noqa: E402
from workspace.transaction import workspace_lock  # noqa: E402

CONFIG = TrainingConfig(seed=7, n_folds=3, repeats=1, n_boot=30)


def shuffled(registry: SyntheticRegistry, rng: np.random.Generator) -> SyntheticRegistry:
    procedures = registry.procedures.copy()
    order = rng.permutation(len(procedures))
    for column in (s.SITE_ID, s.OPERATOR_ID):
        procedures[column] = procedures[column].to_numpy()[order]
    return SyntheticRegistry(procedures=procedures, levels=registry.levels, truth_levels=registry.truth_levels,
                             truth_procedures=registry.truth_procedures)


def planted(registry: SyntheticRegistry, rng: np.random.Generator, odds_ratio: float) -> tuple[SyntheticRegistry,
                                                                                               list[tuple[str, str]]]:
    procedures, levels = registry.procedures, registry.levels.copy()
    sizes = procedures.groupby(s.SITE_ID, observed=True).size().sort_values()
    sites = list(sizes.index[len(sizes) // 2: len(sizes) // 2 + 2].astype(str))  # two mid-volume sites
    operators_sizes = procedures[~procedures[s.SITE_ID].astype(str).isin(sites)].groupby(
        s.OPERATOR_ID, observed=True).size().sort_values()
    operators = list(operators_sizes.index[-10::3][:3].astype(str))  # three busy operators elsewhere
    owner = levels[[s.PROCEDURE_ID]].merge(procedures[[s.PROCEDURE_ID, s.SITE_ID, s.OPERATOR_ID]], how="left",
                                           on=s.PROCEDURE_ID)
    chosen = (owner[s.SITE_ID].astype(str).isin(sites) | owner[s.OPERATOR_ID].astype(str).isin(operators)).to_numpy()
    p = registry.truth_levels[P_LEAKAGE_ANY].to_numpy(dtype=float)
    raised = expit(logit(p) + np.log(odds_ratio))
    leak = levels[s.LEAKAGE].astype("boolean")
    flip = chosen & (leak == False).fillna(False).to_numpy() & (rng.random(len(p)) < (raised - p) / (1 - p))  # noqa: E712
    levels.loc[flip, s.LEAKAGE] = True
    levels.loc[flip, s.LEAKAGE_SITES] = "paravertebral"
    units = [("site", u) for u in sites] + [("operator", u) for u in operators]
    return SyntheticRegistry(procedures=procedures, levels=levels, truth_levels=registry.truth_levels,
                             truth_procedures=registry.truth_procedures), units


def run(registry: SyntheticRegistry, name: str, root: Path) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    source, workspace = root / name / "source", root / name / "workspace"
    write_registry(registry, source)
    start = time.perf_counter()
    run_job(source, workspace, run_id="run-1", config=CONFIG)
    with workspace_lock(workspace, run_id="internal"):
        internal = report_for_audience(workspace, audience="internal")
    seconds = time.perf_counter() - start
    published = pd.read_csv(workspace / "runs" / "run-1" / QI_UNITS_FILE, dtype={"unit_id": str})
    return published, pd.read_csv(internal.qi_units, dtype={"unit_id": str}), seconds


def summary_row(name: str, published: pd.DataFrame, internal: pd.DataFrame, seconds: float) -> str:
    shown = published[~published["verdict_withheld"]]
    alarms, alerts = (shown["alarm"] == "high").sum(), (shown["alert"] == "high").sum()
    fdr = (shown["alarm_survives_fdr"] & (shown["alarm"] == "high")).sum()
    internal_alarms = (internal["alarm"] == "high").sum()
    return (f"| {name} | {len(published)} | {len(shown)} | {alarms} | {0.001 * len(shown):.2f} | {alerts} | "
            f"{0.025 * len(shown):.1f} | {fdr} | {internal_alarms} | {0.001 * len(internal):.2f} | {seconds:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procedures", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--odds-ratio", type=float, default=2.0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    base = generate_registry(args.procedures, seed=args.seed)
    null = shuffled(base, rng)
    outliers, units = planted(null, rng, args.odds_ratio)
    print(f"{args.procedures:,} procedures, seed {args.seed}; high verdicts across all units and outcomes\n")
    print("| registry | unit-outcomes | with a published verdict | alarm high | expected (0.1%) | alert high | "
          "expected (2.5%) | alarms surviving FDR 5% | alarm high, internal | expected | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, registry in (("shuffled", null), ("outliers", outliers), ("generator", base)):
            results[name] = run(registry, name, Path(tmp))
            print(summary_row(name, *results[name]))
    published, internal, _ = results["outliers"]
    print(f"\nPlanted units (odds ratio {args.odds_ratio:g} on any leakage)\n")
    print("| unit | n | O | E | O/E | p high | q high | alarm | survives FDR | shrunken OR (95%) | internal alarm |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|---|")
    for unit_type, unit in units:
        key = ((published["unit_type"] == unit_type) & (published["unit_id"] == unit)
               & (published["outcome"] == "leakage_any"))
        row = published[key].iloc[0]
        exact = internal[(internal["unit_type"] == unit_type) & (internal["unit_id"] == unit)
                         & (internal["outcome"] == "leakage_any")].iloc[0]
        print(f"| {unit_type} {unit} | {row['n']} | {row['observed']} | {row['expected']:.1f} | {row['oe_ratio']} | "
              f"{row['p_high']:.2g} | {row['q_high']:.2g} | {row['alarm'] or 'none'} | {row['alarm_survives_fdr']} | "
              f"{row['shrunken_or']} ({row['shrunken_low']} to {row['shrunken_high']}) | {exact['alarm'] or 'none'} |")


if __name__ == "__main__":
    main()
