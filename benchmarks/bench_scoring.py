"""Benchmark scoring: level rows per second at 10k, 100k and 1M procedures, and where the time goes.

Set-up (not timed): champion models trained on a registry of 5,000 procedures (the default candidates and their
selection; 3 folds), or those of ``--workspace``. Then, per size, a registry of the generator is scored:

- ``load``: loading the four champions (once per scoring update or `cementrisk score`);
- ``features``: building the level and procedure model frames (:mod:`features.matrices`);
- one column per outcome: its ``predict_proba`` on all rows at once;
- ``score_records``: the whole pure scoring function with the champions loaded (features, predicts, the
  procedure's combined leakage risk), and its level rows per second.

    .venv/bin/python benchmarks/bench_scoring.py [--sizes 10000 100000 1000000] [--workspace DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def trained_workspace(folder: Path, seed: int) -> Path:
    from models.training import TrainingConfig, train_all
    from records.readers import RawBatch
    from records.validation import validate_batch
    from synth.generator import generate_registry

    registry = generate_registry(5_000, seed=seed)
    checked = validate_batch(RawBatch(procedures=registry.procedures, levels=registry.levels, source="bench"))
    train_all(checked.procedures.accepted, checked.levels.accepted, workspace=folder,
              config=TrainingConfig(seed=seed, n_folds=3, n_boot=20, n_replicates=0, internal_external=False))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    from features.matrices import build_level_frame, build_procedure_frame
    from models.outcomes import OUTCOMES
    from models.scoring import IMAGING_FOR_PLANNING, load_champions, score_records
    from synth.generator import generate_registry

    with tempfile.TemporaryDirectory() as tmp:
        workspace = args.workspace or trained_workspace(Path(tmp) / "ws", args.seed)
        start = time.perf_counter()
        champions = load_champions(workspace)
        load = time.perf_counter() - start
        selected = {name: (m.card.to_dict().get("model", {}) or {}).get("selected", "?") if m else "-"
                    for name, m in champions.models.items()}
        print(f"champions: {selected}; loaded in {load:.2f} s")
        names = [spec.name for spec in OUTCOMES]
        print("| procedures | level rows | features s | " + " | ".join(f"{n} s" for n in names)
              + " | score_records s | level rows/s |")
        print("|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|")
        for size in args.sizes:
            registry = generate_registry(size, seed=args.seed + 1)
            procedures, levels = registry.procedures, registry.levels
            start = time.perf_counter()
            frames = {"level": build_level_frame(procedures, levels, imaging_when_missing=IMAGING_FOR_PLANNING),
                      "procedure": build_procedure_frame(procedures)}
            features = time.perf_counter() - start
            predicts = []
            for spec in OUTCOMES:
                model = champions.models[spec.name]
                if model is None:
                    predicts.append(float("nan"))
                    continue
                start = time.perf_counter()
                model.estimator.predict_proba(frames[spec.unit][spec.feature_names])
                predicts.append(time.perf_counter() - start)
            start = time.perf_counter()
            score_records(procedures, levels, champions=champions)
            whole = time.perf_counter() - start
            print(f"| {size:,} | {len(levels):,} | {features:.2f} | " + " | ".join(f"{p:.2f}" for p in predicts)
                  + f" | {whole:.2f} | {len(levels) / whole:,.0f} |")


if __name__ == "__main__":
    main()
