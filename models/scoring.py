"""Scoring new records with the champion models: calibrated risk per level and per procedure.

Planned cases carry no imaging yet: a missing ``leakage_imaging`` is scored as ``ct``, so the level
risks are the risk of a leak that CT would see. The procedure's risk of any leakage combines its levels'
risks as ``1 - prod(1 - p)``, treating levels as independent given their features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.matrices import build_level_frame, build_procedure_frame
from models import store
from models.outcomes import OUTCOMES
from models.training import TRUSTED_OURS
from records import schema as s
from records.guard import check_identifiers
from records.readers import read_source
from records.sources import resolve_source
from records.validation import validate_batch
from workspace.manifest import TableCounts
from records.validation import ValidationResult

IMAGING_FOR_PLANNING = "ct"
PROCEDURE_LEAKAGE_RISK = "leakage_any_procedure_risk"


class NoModelError(store.ModelStoreError):
    """No champion model has been published for an outcome that must be scored."""


@dataclass(frozen=True)
class Scores:
    """Scored levels and procedures, the model versions used, and notes for the person reading them."""

    levels: pd.DataFrame
    procedures: pd.DataFrame
    versions: dict[str, str | None]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Champions:
    """Every outcome's champion as loaded (None where an outcome has none), and where they were loaded from."""

    models: dict[str, store.StoredModel | None]
    where: str

    @property
    def versions(self) -> dict[str, str | None]:
        return {name: None if model is None else model.version for name, model in self.models.items()}


def load_champions(workspace: Path) -> Champions:
    """Load each outcome's champion once (no replicates: scoring needs none), to score any number of batches.

    Raises
    ------
    FeatureMismatchError, ModelIntegrityError
        A stored model's files fail their integrity manifest.
    """
    models = {}
    for spec in OUTCOMES:
        # the champion through its pointer (a pointer to a version not stored is refused as such)
        models[spec.name] = None if store.champion(workspace, spec.name) is None else store.load_model(
            workspace, outcome=spec.name, extra_trusted=TRUSTED_OURS)
    return Champions(models=models, where=str(workspace))


def score_records(procedures: pd.DataFrame, levels: pd.DataFrame, *, workspace: Path | None = None,
                  champions: Champions | None = None) -> Scores:
    """Score accepted records with every outcome's champion: ``champions`` as loaded by :func:`load_champions`
    (to score many batches with one load), or those of ``workspace``.

    Raises
    ------
    NoModelError
        A level outcome has no champion (leakage models are required; infection may be absent).
    FeatureMismatchError, ModelIntegrityError
        A stored model does not fit the records, or its file fails its SHA-256.
    """
    if champions is None:
        if workspace is None:
            raise TypeError("score_records needs the champions or the workspace they are stored in")
        champions = load_champions(workspace)
    frames = {"level": build_level_frame(procedures, levels, imaging_when_missing=IMAGING_FOR_PLANNING),
              "procedure": build_procedure_frame(procedures)}
    out = {"level": frames["level"][[s.PROCEDURE_ID, s.VERTEBRA]].copy(),
           "procedure": frames["procedure"][[s.PROCEDURE_ID]].copy()}
    versions = champions.versions
    notes: list[str] = []
    for spec in OUTCOMES:
        model = champions.models.get(spec.name)
        if model is None:
            if spec.unit == "level":
                raise NoModelError(f"no published model for {spec.name} in {champions.where}: "
                                   "run `cementrisk run` on a registry first")
            out[spec.unit][spec.risk_column] = np.nan
            notes.append(f"{spec.risk_column} is empty: no {spec.name} model is published "
                         "(see the last run's metrics.json for why)")
            continue
        store.check_features(model, frames[spec.unit].columns)
        out[spec.unit][spec.risk_column] = model.estimator.predict_proba(frames[spec.unit][spec.feature_names])[:, 1]
    no_leak = 1.0 - out["level"]["leakage_any_risk"]
    combined = 1.0 - no_leak.groupby(out["level"][s.PROCEDURE_ID]).prod()
    out["procedure"][PROCEDURE_LEAKAGE_RISK] = out["procedure"][s.PROCEDURE_ID].map(combined).to_numpy(dtype=float)
    notes.append("level risks are the risk of a leak seen on CT where the imaging was not given")
    return Scores(levels=out["level"], procedures=out["procedure"], versions=versions, notes=notes)


@dataclass(frozen=True)
class ScoredOutput:
    """What ``cementrisk score`` wrote."""

    paths: list[Path]
    counts: dict[str, TableCounts]
    versions: dict[str, str | None]
    notes: list[str]


def score_source(source: str | Path, output: Path, *, workspace: Path, fmt: str = "parquet",
                 as_of_year: int | None = None) -> ScoredOutput:
    """Read, screen and check records as ``run`` does, then score the accepted ones.

    Rows that fail the contract are not scored: they are written to ``output/quarantine/`` with their
    reasons, and counted. A batch that carries identifiers, or a whole-input problem, is refused.

    Raises
    ------
    InputError
        The input was refused as a whole.
    NoModelError, FeatureMismatchError, ModelIntegrityError
        The models cannot score these records.
    """
    raw = read_source(resolve_source(str(source)))
    check_identifiers(raw.tables())
    checked = validate_batch(raw, as_of_year=as_of_year)
    scores = score_records(checked.procedures.accepted, checked.levels.accepted, workspace=workspace)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    paths = [_write(scores.levels, output / f"levels.{fmt}", fmt),
             _write(scores.procedures, output / f"procedures.{fmt}", fmt)]
    paths += _write_quarantine(checked, output)
    counts = {name: TableCounts(rows_in=o.rows_in, rows_accepted=len(o.accepted), rows_quarantined=len(o.quarantined),
                                columns_dropped=list(o.dropped_columns))
              for name, o in checked.tables().items()}
    notes = list(scores.notes)
    if any(c.rows_quarantined for c in counts.values()):
        notes.append(f"rows that fail the contract were not scored: see {output / 'quarantine'}")
    return ScoredOutput(paths=paths, counts=counts, versions=scores.versions, notes=notes)


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> Path:
    if fmt == "csv":
        frame.to_csv(path, index=False, float_format="%.6f")
    elif fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        raise ValueError(f"format must be parquet or csv, not {fmt!r}")
    return path


def _write_quarantine(checked: ValidationResult, output: Path) -> list[Path]:
    paths = []
    for name, outcome in checked.tables().items():
        if len(outcome.quarantined):
            folder = output / "quarantine"
            folder.mkdir(exist_ok=True)
            paths.append(_write(outcome.quarantined, folder / f"{name}.parquet", "parquet"))
    return paths
