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
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from models import store
from models.outcomes import OUTCOMES
from models.scoring import NoModelError, score_records
from workspace import transaction as lock
from workspace.durable import write_durably
from records import schema as s
from workspace.registry import RegistryState, read_registry_table
from reports.figures import outcome_frames
from reports.submission import Part, render_part

SCORED_DIR = "scored"
STATE_FILE = "state.json"
SUBMISSION_DIR = "submission"
FORMAT = 1
"""Bump when the kept rows change meaning: every batch is then scored again."""
CHUNK_PROCEDURES = 250_000
"""Batches are scored together up to about this many procedures (bounds memory when a generation is rebuilt)."""
_PARTITIONING = ds.partitioning(pa.schema([(s.EXTRACT_BATCH, pa.int64())]), flavor="hive")


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
    content = lock.read_bytes(workspace, Path(workspace) / SCORED_DIR / STATE_FILE)
    if content is None:
        return ScoredState()
    payload = json.loads(content.decode("utf-8"))
    if payload.get("format") != FORMAT:  # kept rows of another format: none usable, its files still in place
        return ScoredState(generation=str(payload.get("generation", "")))
    return ScoredState(generation=payload["generation"], versions=dict(payload["versions"]),
                       batches={int(b): part for b, part in payload["batches"].items()})


def update_scored(workspace: Path, registry: RegistryState, *,
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
    _remove_unused_generations(workspace, keep={current.generation, generation})
    kept = {} if rescored else {b: info for b, info in current.batches.items()
                                if info.get("run_id") == registry.batches.get(b, {}).get("run_id")}
    todo = sorted(b for b in registry.batches if b not in kept)
    notes = []
    if rescored and current.generation:
        notes.append(f"the champions changed: all {len(todo)} batches scored again with {_describe(versions)}")
    for chunk in _chunks(todo, registry):
        parts = _score_chunk(workspace, generation, registry, chunk, versions, notes)
        kept.update(parts)
        if on_chunk is not None:
            on_chunk(chunk)
        if not rescored or len(kept) == len(registry.batches):
            _write_state(workspace, ScoredState(generation=generation, versions=versions, batches=kept))
    if rescored and not todo:
        _write_state(workspace, ScoredState(generation=generation, versions=versions, batches=kept))
    return ScoredUpdate(generation=generation, versions=versions, scored_batches=todo, rescored_all=rescored,
                        notes=notes)


def read_outcome_frames(workspace: Path, registry: RegistryState) -> dict[str, pd.DataFrame]:
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
    wanted = pa.array(sorted(registry.batches), type=pa.int64())
    frames = {}
    for spec in OUTCOMES:
        root = _generation_dir(workspace, state.generation) / spec.name
        if not wanted or not root.exists():
            frames[spec.name] = _empty_frame(spec.unit)
            continue
        dataset = ds.dataset(root, format="parquet", partitioning=_PARTITIONING)
        table = dataset.to_table(filter=ds.field(s.EXTRACT_BATCH).isin(wanted))
        frame = table.to_pandas()
        frames[spec.name] = frame[_frame_columns(spec.unit)].sort_values(
            [s.EXTRACT_BATCH, *_keys(spec.unit)], kind="stable", ignore_index=True)
    return frames


def submission_parts(workspace: Path, registry: RegistryState) -> list[tuple[Path, Part]] | None:
    """The kept submission data file of every registered batch, or None when they were not rendered (no model)."""
    state = load_scored_state(workspace)
    parts = []
    for batch in sorted(registry.batches):
        info = (state.batches.get(batch) or {}).get("part")
        if not info:
            return None
        part = Part.from_dict(info)
        parts.append((_generation_dir(workspace, state.generation) / SUBMISSION_DIR / f"{part.name.split('/')[-1]}",
                      part))
    return parts


# --- internals ---------------------------------------------------------------------------------------------
def _score_chunk(workspace: Path, generation: str, registry: RegistryState, chunk: list[int],
                 versions: dict[str, str | None], notes: list[str]) -> dict[int, dict]:
    subset = RegistryState(watermark=registry.watermark, batches={b: registry.batches[b] for b in chunk})
    procedures = read_registry_table(workspace, s.PROCEDURES, state=subset)
    levels = read_registry_table(workspace, s.LEVELS, state=subset)
    try:
        scores = score_records(procedures, levels, workspace=workspace) if len(procedures) else None
    except NoModelError as error:
        scores = None
        if str(error) not in notes:
            notes.append(f"no expected risks: {error}")
    frames = outcome_frames(procedures, levels, scores)
    folder = _generation_dir(workspace, generation)
    by_batch = {spec.name: dict(tuple(frames[spec.name].groupby(s.EXTRACT_BATCH, sort=True)))
                for spec in OUTCOMES}
    parts: dict[int, dict] = {}
    level_batch = levels[s.PROCEDURE_ID].map(procedures.set_index(s.PROCEDURE_ID)[s.EXTRACT_BATCH])
    for batch in chunk:
        for spec in OUTCOMES:
            rows = by_batch[spec.name].get(batch, _empty_frame(spec.unit))
            _write_parquet(folder / spec.name / f"{s.EXTRACT_BATCH}={batch}" / "part-0.parquet",
                           rows[_frame_columns(spec.unit)].reset_index(drop=True))
        parts[batch] = {"run_id": registry.batches[batch].get("run_id"), "part": None}
        batch_procedures = procedures[procedures[s.EXTRACT_BATCH] == batch]
        if scores is None or batch_procedures.empty:
            continue
        ids = batch_procedures[s.PROCEDURE_ID]
        content, part = render_part(
            procedures=batch_procedures, levels=levels[level_batch == batch],
            level_risks=scores.levels[scores.levels[s.PROCEDURE_ID].isin(ids)],
            procedure_risks=scores.procedures[scores.procedures[s.PROCEDURE_ID].isin(ids)], model_versions=versions)
        _write_bytes(folder / SUBMISSION_DIR / part.name.split("/")[-1], content)
        parts[batch]["part"] = part.to_dict()
    return parts


def _chunks(batches: list[int], registry: RegistryState) -> Iterator[list[int]]:
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


def _generation_dir(workspace: Path, generation: str) -> Path:
    return Path(workspace) / SCORED_DIR / generation


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    table = pa.Table.from_pandas(frame.drop(columns=[s.EXTRACT_BATCH]), preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_durably(path, sink.getvalue().to_pybytes())


def _write_bytes(path: Path, content: bytes) -> None:
    write_durably(path, content)


def _write_state(workspace: Path, state: ScoredState) -> None:
    """The state is part of the workspace's state: staged with the run that holds the lock (workspace.transaction), so a run
    that fails or is killed leaves the state of the last finished run."""
    lock.write_file(workspace, Path(workspace) / SCORED_DIR / STATE_FILE, state.to_json().encode("utf-8"))


def _remove_unused_generations(workspace: Path, keep: set[str]) -> None:
    """Generations neither the visible state nor this run uses are never read again; runs that published their
    files keep them through hard links."""
    root = Path(workspace) / SCORED_DIR
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _describe(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{name} {version or '(none)'}" for name, version in versions.items())
