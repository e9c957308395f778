"""The scored store: every registered batch scored once by the champion models and kept in the workspace.

A nightly run adds one batch; re-scoring and re-rendering the whole registry each night would make its cost follow
the registry. Instead each batch is scored when it first appears (or when the champions change) and kept:

    scored/state.json                                   generation, model versions, the batches kept
    scored/<generation>/<outcome>/extract_batch=<n>/part-0.parquet
                                                        eligible rows of an outcome: keys, site, operator, year,
                                                        batch, label ``y`` and expected risk ``p``
    scored/<generation>/submission/extract_batch=<n>.csv
                                                        the batch's submission data file, checked when rendered

A generation is one set of champion versions. When a champion changes, every batch is scored again into a new
generation and the state switches to it only when it is complete, so a reader never mixes two models' risks. A batch
is kept with the run that registered it: a batch registered again (its first run failed and was rolled back) is scored
again. The state is written like the registry's (staged with the run until it commits, :mod:`workspace.transaction`), so a run
that fails or is killed leaves the state of the last finished run, and the next run finishes the work.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa

from models import progress, store
from models.outcomes import OUTCOMES
from models.scoring import Champions, NoModelError, load_champions, score_records
from workspace import scored_files
from records import schema as s
from workspace.ledger import Ledger
from workspace.registry import read_registry_table
from reports.figures import outcome_frames
from reports.submission import Part, render_part

SCORED_DIR = scored_files.SCORED_DIR
STATE_FILE = scored_files.STATE_FILE
FORMAT = 1
"""Bump when the kept rows change meaning: every batch is then scored again."""
CHUNK_PROCEDURES = 250_000
"""Batches are scored together up to about this many procedures (bounds memory when a generation is rebuilt)."""


@dataclass(frozen=True)
class ScoredState:
    """The generation kept, its model versions, and per batch its submission data file (None: not rendered)."""

    generation: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)
    batches: dict[int, dict] = field(default_factory=dict)
    """Per batch: ``run_id`` (the run that registered it) and ``part`` (its submission file, None: not rendered)."""

    def to_json(self) -> str:
        payload = {"format": FORMAT, "generation": self.generation, "versions": self.versions,
                   "batches": {str(b): part for b, part in sorted(self.batches.items())}}
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class ScoredUpdate:
    """What :func:`update_scored` did: the generation now kept, the batches it scored, and why."""

    generation: str
    versions: dict[str, str | None]
    scored_batches: list[int]
    rescored_all: bool
    notes: list[str]

    def to_dict(self) -> dict[str, object]:
        return {"generation": self.generation, "versions": dict(self.versions),
                "scored_batches": list(self.scored_batches), "rescored_all": self.rescored_all,
                "notes": list(self.notes)}


def champion_versions(workspace: Path) -> dict[str, str | None]:
    """The champion version of every outcome (None: no model published)."""
    return {spec.name: store.champion(workspace, spec.name) for spec in OUTCOMES}


def generation_of(versions: dict[str, str | None]) -> str:
    """A short stable name for one set of champion versions and this store's format."""
    text = json.dumps({"format": FORMAT, "versions": versions}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def load_scored_state(workspace: Path) -> ScoredState:
    """The kept state; an empty one before anything was scored or after a format change."""
    content = scored_files.read_state(workspace)
    if content is None:
        return ScoredState()
    payload = json.loads(content.decode("utf-8"))
    if payload.get("format") != FORMAT:  # kept rows of another format: none usable, its files still in place
        return ScoredState(generation=str(payload.get("generation", "")))
    return ScoredState(generation=payload["generation"], versions=dict(payload["versions"]),
                       batches={int(b): part for b, part in payload["batches"].items()})


def update_scored(workspace: Path, registry: Ledger, *,
                  on_chunk: Callable[[list[int]], None] | None = None) -> ScoredUpdate:
    """Score the registered batches not yet kept under the current champions, and keep them.

    Raises
    ------
    FeatureMismatchError, ModelIntegrityError
        A champion does not fit the registry, or its file fails its SHA-256.
    """
    workspace = Path(workspace)
    versions = champion_versions(workspace)
    generation = generation_of(versions)
    current = load_scored_state(workspace)
    rescored = current.generation != generation
    scored_files.remove_unused_generations(workspace, keep={current.generation, generation})
    kept = {} if rescored else {b: info for b, info in current.batches.items()
                                if info.get("run_id") == registry.batches.get(b, {}).get("run_id")}
    todo = sorted(b for b in registry.batches if b not in kept)
    notes = []
    if rescored and current.generation:
        notes.append(f"the champions changed: all {len(todo)} batches scored again with {_describe(versions)}")
    champions = load_champions(workspace) if todo else None  # once, for every chunk
    with progress.task("scoring and rendering batches", len(todo)) as work:
        for chunk in _chunks(todo, registry):
            parts = _score_chunk(workspace, generation, registry, chunk, versions, notes, champions)
            kept.update(parts)
            work.advance(len(chunk))
            if on_chunk is not None:
                on_chunk(chunk)
            if not rescored or len(kept) == len(registry.batches):
                _keep_state(workspace, ScoredState(generation=generation, versions=versions, batches=kept))
    if rescored and not todo:
        _keep_state(workspace, ScoredState(generation=generation, versions=versions, batches=kept))
    return ScoredUpdate(generation=generation, versions=versions, scored_batches=todo, rescored_all=rescored,
                        notes=notes)


def read_outcome_frames(workspace: Path, registry: Ledger) -> dict[str, pd.DataFrame]:
    """Each outcome's kept rows for the registered batches (what the QI figures need, nothing more).

    Raises
    ------
    RuntimeError
        A registered batch is not kept: :func:`update_scored` was not run after registering.
    """
    state = load_scored_state(workspace)
    missing = sorted(set(registry.batches) - set(state.batches))
    if missing:
        raise RuntimeError(f"batches {missing[:5]} are registered but not scored; run update_scored first")
    frames = {}
    for spec in OUTCOMES:
        table = scored_files.read_kept_rows(workspace, generation=state.generation, outcome=spec.name,
                                            batches=registry.batches)
        if table is None:
            frames[spec.name] = _empty_frame(spec.unit)
            continue
        frames[spec.name] = table.to_pandas()[_frame_columns(spec.unit)].sort_values(
            [s.EXTRACT_BATCH, *_keys(spec.unit)], kind="stable", ignore_index=True)
    return frames


def submission_parts(workspace: Path, registry: Ledger) -> list[tuple[Path, Part]] | None:
    """The kept submission data file of every registered batch, or None when they were not rendered (no model)."""
    state = load_scored_state(workspace)
    parts = []
    for batch in sorted(registry.batches):
        info = (state.batches.get(batch) or {}).get("part")
        if not info:
            return None
        part = Part.from_dict(info)
        parts.append((scored_files.kept_submission_path(workspace, generation=state.generation, name=part.name), part))
    return parts


# --- internals ---------------------------------------------------------------------------------------------
def _score_chunk(workspace: Path, generation: str, registry: Ledger, chunk: list[int],
                 versions: dict[str, str | None], notes: list[str], champions: Champions | None) -> dict[int, dict]:
    subset = registry.subset(chunk)
    procedures = read_registry_table(workspace, s.PROCEDURES, ledger=subset)
    levels = read_registry_table(workspace, s.LEVELS, ledger=subset)
    try:
        scores = score_records(procedures, levels, champions=champions) if len(procedures) else None
    except NoModelError as error:
        scores = None
        if str(error) not in notes:
            notes.append(f"no expected risks: {error}")
    frames = outcome_frames(procedures, levels, scores)
    by_batch = {spec.name: dict(tuple(frames[spec.name].groupby(s.EXTRACT_BATCH, sort=True)))
                for spec in OUTCOMES}
    parts: dict[int, dict] = {}
    level_batch = levels[s.PROCEDURE_ID].map(procedures.set_index(s.PROCEDURE_ID)[s.EXTRACT_BATCH])
    for batch in chunk:
        for spec in OUTCOMES:
            rows = by_batch[spec.name].get(batch, _empty_frame(spec.unit))
            frame = rows[_frame_columns(spec.unit)].reset_index(drop=True).drop(columns=[s.EXTRACT_BATCH])
            scored_files.write_kept_rows(workspace, generation=generation, outcome=spec.name, batch=batch,
                                         table=pa.Table.from_pandas(frame, preserve_index=False))
        parts[batch] = {"run_id": registry.batches[batch].get("run_id"), "part": None}
        batch_procedures = procedures[procedures[s.EXTRACT_BATCH] == batch]
        if scores is None or batch_procedures.empty:
            continue
        ids = batch_procedures[s.PROCEDURE_ID]
        content, part = render_part(
            procedures=batch_procedures, levels=levels[level_batch == batch],
            level_risks=scores.levels[scores.levels[s.PROCEDURE_ID].isin(ids)],
            procedure_risks=scores.procedures[scores.procedures[s.PROCEDURE_ID].isin(ids)], model_versions=versions)
        scored_files.write_kept_submission(workspace, generation=generation, name=part.name, content=content)
        parts[batch]["part"] = part.to_dict()
    return parts


def _chunks(batches: list[int], registry: Ledger) -> Iterator[list[int]]:
    chunk: list[int] = []
    size = 0
    for batch in batches:
        n = int(registry.batches[batch].get("procedures", 0))
        if chunk and size + n > CHUNK_PROCEDURES:
            yield chunk
            chunk, size = [], 0
        chunk.append(batch)
        size += n
    if chunk:
        yield chunk


def _keys(unit: str) -> list[str]:
    return [s.PROCEDURE_ID, s.VERTEBRA] if unit == "level" else [s.PROCEDURE_ID]


def _frame_columns(unit: str) -> list[str]:
    return [*_keys(unit), s.SITE_ID, s.OPERATOR_ID, s.PROCEDURE_YEAR, s.EXTRACT_BATCH, "y", "p"]


def _empty_frame(unit: str) -> pd.DataFrame:
    types = {"y": "int64", "p": "float64", s.PROCEDURE_YEAR: "Int64", s.EXTRACT_BATCH: "Int64"}
    return pd.DataFrame({c: pd.Series(dtype=types.get(c, s.TEXT_DTYPE)) for c in _frame_columns(unit)})


def _keep_state(workspace: Path, state: ScoredState) -> None:
    """The state is part of the workspace's state: staged with the run, so a run that fails or is killed leaves the
    state of the last finished run."""
    scored_files.write_state(workspace, state.to_json())


def _describe(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{name} {version or '(none)'}" for name, version in versions.items())
