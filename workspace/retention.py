"""Retention: what a workspace keeps of its past runs and model versions, and the crash-safe prune of the rest.

A night adds a run folder (report.html, metrics.json, qi_units.csv, submission/) and, when it retrains, a model
version per outcome. :func:`plan_retention` decides, from an :class:`Inventory` of the workspace and a
:class:`RetentionPolicy`, what is kept and why and what goes; :func:`apply_plan` removes it; :func:`prune_workspace`
does both under the workspace lock (the run's, at its end, or a lock of its own).

Kept whole: the run the lock holder is making, the published run (as committed and as the lock holder sees it), pinned
runs (:func:`pin_run`: a run a submission was delivered from; the workspace records no delivery itself), the last
``keep_runs`` runs by start time and the runs started within ``keep_days``, and a run without a readable manifest (not
known to be one of ours). Of every other run the outputs go (report.html, metrics.json, qi_units.csv, submission/, its
on-demand reports in ``internal/`` and ``reports/``); its manifest stays, with ``pruned.json`` saying what went when
(``keep_manifests=False``: the whole folder goes). Model versions kept: each outcome's champion and previous champion
(committed and staged), its newest version (a number is never given twice: the next training takes the highest plus
one), the versions the scored store uses and every version a kept run names. Other versions' folders go; their
validation figures (``models/metrics/``) stay. Leftovers of killed runs go too: ``scratch/<run_id>/``, half-written
versions (``models/<outcome>/.incomplete-*``) and a killed prune's ``.trash/``.

Never removed, whatever the plan says (:func:`apply_plan` refuses it): ``registry/`` (partitions, the batch ledger,
``history/`` of corrections), ``quarantine/``, ``scored/``, ``published.json``, champion pointers, ``models/metrics/``,
``trained.json``, the drift reference, ``.staging/``, ``.lock``, Prefect's ``.prefect/``, the published run, a
champion or previous champion, and the lock holder's run.

Crash safety: each removal is one rename into ``.trash/<prune_id>/`` (a run's output file or folder, a version folder:
each is in place whole or gone whole), then the trash is deleted. A prune killed in the middle leaves a consistent
workspace and some trash; the next prune deletes that trash and plans again, which lists what is still to go.

Pruning is maintenance, not part of a run's staged state: inside a run it removes only what neither the committed
state nor the run's staged state needs, so a run that then rolls back has lost nothing it needs.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from workspace import model_files, transaction
from workspace.durable import fsync_dir, write_durably
from workspace.manifest import MANIFEST_FILE, RUNS_DIR
from workspace.model_state import METRICS_DIR
from workspace.runs import INTERNAL_DIR, PUBLISHED_FILE, REPORTS_DIR, SCRATCH_DIR
from workspace.scored_files import SCORED_DIR, STATE_FILE

TRASH_DIR = ".trash"
PIN_FILE = "keep.json"
PRUNED_FILE = "pruned.json"
SUBMISSION_MANIFEST = "submission/manifest.json"
METRICS_FILE = "metrics.json"
KEPT_IN_A_THINNED_RUN = (MANIFEST_FILE, PIN_FILE, PRUNED_FILE)
Kind = Literal["run", "run_output", "audience", "model_version", "leftover"]

_VERSION = re.compile(r"^v\d{4,}$")
_NAME = re.compile(r"^[^/\\]+$")


class RetentionError(Exception):
    """A plan would remove something the workspace never loses, or a path outside what retention may touch."""


@dataclass(frozen=True)
class RetentionPolicy:
    """What a workspace keeps.

    Attributes
    ----------
    keep_runs
        The most recent runs (by start time, whatever their status) kept whole; 0 keeps only the published,
        pinned and current runs.
    keep_days
        Also keep whole every run started within this many days before ``now`` (0: none by age).
    keep_manifests
        Keep the manifest of a pruned run (its audit record: counts, batches, refusals; ~3 KB), removing only its
        outputs; False removes the whole folder.
    prune_models
        Remove model versions no champion, scored store or kept run needs (never the newest of an outcome).
    pinned_runs
        Run ids kept whole besides those pinned in the workspace (:func:`pin_run`).
    """

    keep_runs: int = 30
    keep_days: float = 0.0
    keep_manifests: bool = True
    prune_models: bool = True
    pinned_runs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.keep_runs, bool) or not isinstance(self.keep_runs, int) or self.keep_runs < 0:
            problems.append(f"keep_runs must be a whole number >= 0; got {self.keep_runs!r}")
        if (isinstance(self.keep_days, bool) or not isinstance(self.keep_days, (int, float))
                or not math.isfinite(self.keep_days) or self.keep_days < 0):
            problems.append(f"keep_days must be a finite number of days >= 0; got {self.keep_days!r}")
        if isinstance(self.pinned_runs, str) or not all(isinstance(r, str) for r in self.pinned_runs):
            problems.append(f"pinned_runs must be a set of run ids; got {self.pinned_runs!r}")
        if problems:
            raise ValueError("; ".join(problems))
        object.__setattr__(self, "pinned_runs", frozenset(self.pinned_runs))


@dataclass(frozen=True)
class RunEntry:
    """One folder of ``runs/``: its manifest's ``started_at`` and ``status`` (None when unreadable), its top-level
    entries, whether it is pinned, the model versions it names (``(outcome, version)``) and its on-demand report
    folders (``internal``, ``reports``)."""

    run_id: str
    started_at: str | None
    status: str | None = None
    contents: tuple[str, ...] = (MANIFEST_FILE,)
    pinned: bool = False
    model_versions: tuple[tuple[str, str], ...] = ()
    audiences: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inventory:
    """What a workspace holds, as far as retention is concerned (:func:`read_inventory`). Model versions are
    ``(outcome, version)`` pairs; ``leftovers`` are workspace-relative paths of what killed runs or prunes left."""

    runs: tuple[RunEntry, ...] = ()
    models: tuple[tuple[str, str], ...] = ()
    champions: tuple[tuple[str, str], ...] = ()
    previous_champions: tuple[tuple[str, str], ...] = ()
    in_use: tuple[tuple[str, str], ...] = ()
    unreadable_pointers: tuple[str, ...] = ()
    """Outcomes whose champion pointer cannot be read: every version of theirs is kept."""
    published: tuple[str, ...] = ()
    current_run: str | None = None
    leftovers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kept:
    subject: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Removal:
    path: str
    """Workspace-relative, POSIX separators."""
    kind: Kind
    subject: str
    reason: str


@dataclass(frozen=True)
class RetentionPlan:
    """What a prune keeps (each subject with its reasons) and removes (each path with its reason)."""

    kept: tuple[Kept, ...]
    removals: tuple[Removal, ...]

    def to_dict(self) -> dict[str, object]:
        return {"kept": [asdict(k) for k in self.kept], "removals": [asdict(r) for r in self.removals]}


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune_workspace` did: the plan, the paths removed, the disk freed (bytes; hard-linked files count
    when their last link goes) and the seconds it took."""

    policy: RetentionPolicy
    plan: RetentionPlan
    removed: tuple[str, ...] = ()
    bytes_freed: int = 0
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        """A summary for the manifest: counts and subjects, not every path."""
        pruned = sorted({r.subject for r in self.plan.removals if r.kind in ("run", "run_output", "audience")})
        models = sorted({r.subject for r in self.plan.removals if r.kind == "model_version"})
        policy = {**asdict(self.policy), "pinned_runs": sorted(self.policy.pinned_runs)}
        return {"policy": policy, "runs_kept": sum(k.subject.startswith("run ") for k in self.plan.kept),
                "runs_pruned": pruned, "models_pruned": models, "paths_removed": len(self.removed),
                "bytes_freed": self.bytes_freed, "seconds": round(self.seconds, 3), "notes": list(self.notes)}


def plan_retention(inventory: Inventory, policy: RetentionPolicy, *, now: _dt.datetime) -> RetentionPlan:
    """Decide what a workspace keeps and removes; pure (reads nothing, writes nothing).

    Parameters
    ----------
    inventory
        The workspace as :func:`read_inventory` saw it (or built in code).
    policy
        What to keep.
    now
        Timezone-aware; the reference for ``policy.keep_days``.

    Returns
    -------
    RetentionPlan
        Every run and model version kept, with its reasons, and every path to remove, with its reason.

    Raises
    ------
    ValueError
        ``now`` is naive.
    """
    now = _check_now(now)
    run_reasons = _run_reasons(inventory, policy, now=now)
    kept_runs = [run for run in inventory.runs if run_reasons[run.run_id]]
    removals = [r for run in inventory.runs if not run_reasons[run.run_id] for r in _run_removals(run, policy)]
    model_reasons = _model_reasons(inventory, kept_runs)
    if policy.prune_models:
        removals += [Removal(path=f"{model_files.MODELS_DIR}/{o}/{v}", kind="model_version", subject=f"model {o} {v}",
                             reason="no champion, previous champion, scored store or kept run uses it and a newer "
                                    "version exists") for (o, v) in inventory.models if not model_reasons[(o, v)]]
    else:
        model_reasons = {key: reasons or ["models are not pruned (prune_models=False)"]
                         for key, reasons in model_reasons.items()}
    removals += [Removal(path=path, kind="leftover", subject=path, reason="left by a run or prune that was killed")
                 for path in inventory.leftovers]
    kept = [Kept(f"run {run.run_id}", tuple(run_reasons[run.run_id])) for run in kept_runs]
    kept += [Kept(f"model {o} {v}", tuple(reasons)) for (o, v), reasons in model_reasons.items() if reasons]
    return RetentionPlan(kept=tuple(kept), removals=tuple(removals))


def read_inventory(root: Path, *, current_run: str | None = None) -> Inventory:
    """What ``root`` holds: its runs (with their manifests' start and status), model versions, champion and previous
    champion pointers (committed and as this process sees them), the scored store's versions, the published run and
    the leftovers of killed runs. Reads only; call with the workspace lock held for a plan that is still true when
    it is applied."""
    root = Path(root)
    runs_root = root / RUNS_DIR
    runs = tuple(_run_entry(root, folder) for folder in _folders(runs_root, hidden=False))
    run_ids = {run.run_id for run in runs}
    models, champions, previous, unreadable, leftovers = [], set(), set(), [], []
    for folder in _folders(root / model_files.MODELS_DIR, hidden=False):
        if folder.name == METRICS_DIR:
            continue
        outcome = folder.name
        try:
            versions = model_files.list_versions(root, outcome)
        except model_files.ModelFilesError:
            continue  # not an outcome folder of the store
        models += [(outcome, v) for v in versions]
        leftovers += [_relative(root, p) for p in folder.iterdir()
                      if p.is_dir() and p.name.startswith(model_files.STAGING_PREFIX)]
        pointers = _pointers(root, folder / model_files.CHAMPION_FILE)
        if pointers is None:
            unreadable.append(outcome)
            continue
        champions |= {(outcome, pointer["version"]) for pointer in pointers}
        previous |= {(outcome, version) for pointer in pointers for version in _previous_champion(pointer)}
    in_use = {(o, v) for state in _payloads(root, root / SCORED_DIR / STATE_FILE)
              for o, v in (state.get("versions") or {}).items() if isinstance(v, str)}
    published = {p["run_id"] for p in _payloads(root, root / PUBLISHED_FILE) if isinstance(p.get("run_id"), str)}
    leftovers += [_relative(root, p) for p in _folders(root / TRASH_DIR)]
    leftovers += [_relative(root, p) for p in _folders(root / SCRATCH_DIR) if p.name != current_run]
    leftovers += [f"{audience}/{p.name}" for audience in (INTERNAL_DIR, REPORTS_DIR) for p in _folders(root / audience)
                  if p.name not in run_ids and p.name != current_run]
    return Inventory(runs=runs, models=tuple(models), champions=tuple(sorted(champions)),
                     previous_champions=tuple(sorted(previous)), in_use=tuple(sorted(in_use)),
                     unreadable_pointers=tuple(unreadable), published=tuple(sorted(published)),
                     current_run=current_run, leftovers=tuple(sorted(leftovers)))


def apply_plan(root: Path, plan: RetentionPlan, *, now: _dt.datetime | None = None) -> tuple[tuple[str, ...], int]:
    """Remove what ``plan`` lists, crash-safely: each path renamed into ``.trash/<prune_id>/`` (fsynced), then the
    trash deleted. A pruned run gets ``pruned.json`` (what went, when, why) before its first output goes. Paths already
    gone are skipped, so applying a plan twice is applying it once. Call with the workspace lock held.

    Returns
    -------
    tuple[tuple[str, ...], int]
        The paths removed, and the bytes freed on disk.

    Raises
    ------
    RetentionError
        A removal is not one retention may make (outside runs' outputs, on-demand reports, model versions and
        leftovers), or touches the published run, the lock holder's run or a champion; nothing is removed then.
    """
    root = Path(root)
    now = _check_now(now or _dt.datetime.now(_dt.timezone.utc))
    _check_removals(root, plan.removals)
    trash = root / TRASH_DIR / f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    removed: list[str] = []
    marked: set[str] = set()
    for index, removal in enumerate(plan.removals):
        source = root / removal.path
        if not os.path.lexists(source):
            continue
        if removal.kind == "leftover" and removal.path.startswith(f"{TRASH_DIR}/"):
            shutil.rmtree(source, ignore_errors=True)  # already out of the workspace: only the disk to free
        else:
            if removal.kind == "run_output" and removal.subject not in marked:
                _mark_pruned(root, removal.path.split("/")[1], plan, now=now)
                marked.add(removal.subject)
            trash.mkdir(parents=True, exist_ok=True)
            _move_to_trash(source, trash / f"{index:05d}-{source.name}")
        removed.append(removal.path)
    freed = _freed_bytes(trash) if trash.is_dir() else 0
    shutil.rmtree(trash, ignore_errors=True)
    for folder in (root / TRASH_DIR, root / SCRATCH_DIR, root / INTERNAL_DIR, root / REPORTS_DIR):
        _remove_if_empty(folder)
    return tuple(removed), freed


def prune_workspace(root: Path, policy: RetentionPolicy = RetentionPolicy(), *, now: _dt.datetime | None = None,
                    wait_seconds: float = 0.0) -> PruneReport:
    """Plan and apply retention on a workspace, under its lock: the lock this process holds for a run (call it at the
    run's end: the run is kept), or a lock of its own taken for the prune.

    Parameters
    ----------
    root
        The workspace folder; it must exist.
    policy
        What to keep.
    now
        Timezone-aware (default: the current UTC time).
    wait_seconds
        How long to wait for a run that holds the workspace (only when this process does not hold it).

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    WorkspaceBusy
        Another run holds the workspace after ``wait_seconds``.
    RetentionError
        See :func:`apply_plan` (a plan from :func:`plan_retention` never raises it).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"the workspace {root} is not a folder: nothing to prune")
    now = _check_now(now or _dt.datetime.now(_dt.timezone.utc))
    current = transaction.held_run(root)
    if current is not None:
        return _prune_locked(root, policy, now=now, current_run=current)
    with transaction.workspace_lock(root, run_id=f"prune-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}",
                                    wait_seconds=wait_seconds):
        return _prune_locked(root, policy, now=now, current_run=None)


def pin_run(root: Path, run_id: str, *, reason: str, now: _dt.datetime | None = None) -> Path:
    """Keep run ``run_id`` whole for as long as the workspace lives (e.g. a submission was delivered from it):
    ``runs/<run_id>/keep.json`` with the reason. Remove that file to unpin.

    Raises
    ------
    FileNotFoundError
        The run has no folder, or its outputs were pruned already.
    """
    folder = Path(root) / RUNS_DIR / run_id
    if not _NAME.match(run_id) or run_id in (".", "..") or not (folder / MANIFEST_FILE).is_file():
        raise FileNotFoundError(f"no run {run_id!r} in {Path(root) / RUNS_DIR}")
    if (folder / PRUNED_FILE).is_file():
        raise FileNotFoundError(f"the outputs of run {run_id} were pruned already: only its manifest is left")
    at = _check_now(now or _dt.datetime.now(_dt.timezone.utc)).isoformat(timespec="seconds")
    write_durably(folder / PIN_FILE, (json.dumps({"pinned_at": at, "reason": reason}, indent=2) + "\n").encode())
    return folder / PIN_FILE


# --- private steps -------------------------------------------------------------------------------------

def _prune_locked(root: Path, policy: RetentionPolicy, *, now: _dt.datetime, current_run: str | None) -> PruneReport:
    start = time.perf_counter()
    inventory = read_inventory(root, current_run=current_run)
    plan = plan_retention(inventory, policy, now=now)
    removed, freed = apply_plan(root, plan, now=now)
    notes = tuple(f"champion pointer of {o} unreadable: all its versions kept" for o in inventory.unreadable_pointers)
    return PruneReport(policy=policy, plan=plan, removed=removed, bytes_freed=freed,
                       seconds=time.perf_counter() - start, notes=notes)


def _run_reasons(inventory: Inventory, policy: RetentionPolicy, *, now: _dt.datetime) -> dict[str, list[str]]:
    reasons: dict[str, list[str]] = {run.run_id: [] for run in inventory.runs}
    dated = sorted(((started, run.run_id) for run in inventory.runs
                    if (started := _parse_time(run.started_at)) is not None), reverse=True)
    recent = {run_id for _, run_id in dated[:policy.keep_runs]}
    cutoff = now - _dt.timedelta(days=policy.keep_days)
    young = {run_id for started, run_id in dated if policy.keep_days > 0 and started >= cutoff}
    for run in inventory.runs:
        why = reasons[run.run_id]
        if run.run_id == inventory.current_run:
            why.append("the run in progress")
        if run.run_id in inventory.published:
            why.append("published")
        if run.pinned or run.run_id in policy.pinned_runs:
            why.append("pinned")
        if run.run_id in recent:
            why.append(f"one of the last {policy.keep_runs} runs")
        if run.run_id in young:
            why.append(f"started within {policy.keep_days:g} days")
        if _parse_time(run.started_at) is None:
            why.append("no readable manifest with a start time: not known to be a run, left alone")
    return reasons


def _run_removals(run: RunEntry, policy: RetentionPolicy) -> list[Removal]:
    reason = (f"not published, pinned, in progress or among the last {policy.keep_runs} runs"
              + (f" or started within {policy.keep_days:g} days" if policy.keep_days else ""))
    subject = f"run {run.run_id}"
    audiences = [Removal(path=f"{a}/{run.run_id}", kind="audience", subject=subject, reason=reason)
                 for a in run.audiences]
    if not policy.keep_manifests:
        return [Removal(path=f"{RUNS_DIR}/{run.run_id}", kind="run", subject=subject, reason=reason), *audiences]
    outputs = [Removal(path=f"{RUNS_DIR}/{run.run_id}/{name}", kind="run_output", subject=subject,
                       reason=f"{reason}; its manifest stays") for name in run.contents
               if name not in KEPT_IN_A_THINNED_RUN]
    return outputs + audiences


def _model_reasons(inventory: Inventory, kept_runs: Iterable[RunEntry]) -> dict[tuple[str, str], list[str]]:
    newest: dict[str, tuple[int, str]] = {}
    for outcome, version in inventory.models:
        newest[outcome] = max(newest.get(outcome, (-1, "")), (int(version[1:]), version))
    named: dict[tuple[str, str], list[str]] = {}
    for run in kept_runs:
        for key in run.model_versions:
            named.setdefault(tuple(key), []).append(run.run_id)
    reasons = {}
    for key in inventory.models:
        outcome, version = key
        why = []
        if outcome in inventory.unreadable_pointers:
            why.append("its outcome's champion pointer cannot be read")
        if key in inventory.champions:
            why.append("champion")
        if key in inventory.previous_champions:
            why.append("previous champion")
        if newest[outcome][1] == version:
            why.append("the newest version of its outcome (a version number is never given twice)")
        if key in inventory.in_use:
            why.append("used by the scored store")
        if key in named:
            why.append("named by kept run " + ", ".join(sorted(named[key])))
        reasons[key] = why
    return reasons


def _run_entry(root: Path, folder: Path) -> RunEntry:
    manifest = _json_file(folder / MANIFEST_FILE)
    versions: set[tuple[str, str]] = set()
    outcomes = ((manifest.get("models") or {}).get("outcomes") or {}) if manifest else {}
    versions |= {(o, e["version"]) for o, e in outcomes.items() if isinstance(e, dict) and isinstance(e.get("version"),
                                                                                                       str)}
    named = (_json_file(folder / SUBMISSION_MANIFEST) or {}).get("model_versions")
    if named is None and (folder / METRICS_FILE).is_file():  # no submission: the report's own record
        named = ((_json_file(folder / METRICS_FILE) or {}).get("qi") or {}).get("model_versions")
    versions |= {(o, v) for o, v in (named or {}).items() if isinstance(v, str)}
    started = manifest.get("started_at") if manifest else None
    return RunEntry(run_id=folder.name, started_at=started if isinstance(started, str) else None,
                    status=manifest.get("status") if manifest else None,
                    contents=tuple(sorted(p.name for p in folder.iterdir())), pinned=(folder / PIN_FILE).is_file(),
                    model_versions=tuple(sorted(versions)),
                    audiences=tuple(a for a in (INTERNAL_DIR, REPORTS_DIR) if (root / a / folder.name).is_dir()))


def _check_removals(root: Path, removals: Iterable[Removal]) -> None:
    """Refuse, before anything moves, a removal outside what retention may touch or of what is never lost."""
    protected_runs = {p["run_id"] for p in _payloads(root, root / PUBLISHED_FILE) if isinstance(p.get("run_id"), str)}
    if (holder := transaction.held_run(root)) is not None:
        protected_runs.add(holder)
    protected_models, unreadable = set(), set()
    for folder in _folders(root / model_files.MODELS_DIR, hidden=False):
        pointers = _pointers(root, folder / model_files.CHAMPION_FILE)
        if pointers is None:
            unreadable.add(folder.name)
        for pointer in pointers or []:
            protected_models |= {(folder.name, v) for v in (pointer["version"], *_previous_champion(pointer))}
    for removal in removals:
        parts = removal.path.split("/")
        allowed = (
            (parts[0] == RUNS_DIR and len(parts) in (2, 3) and parts[1] not in protected_runs
             and (len(parts) == 2 or parts[2] not in (MANIFEST_FILE, PIN_FILE)))
            or (parts[0] in (INTERNAL_DIR, REPORTS_DIR, SCRATCH_DIR, TRASH_DIR) and len(parts) == 2
                and parts[1] not in protected_runs)
            or (parts[0] == model_files.MODELS_DIR and len(parts) == 3 and parts[1] != METRICS_DIR
                and (parts[2].startswith(model_files.STAGING_PREFIX)
                     or (_VERSION.match(parts[2]) and parts[1] not in unreadable
                         and (parts[1], parts[2]) not in protected_models))))
        if not allowed or not all(_NAME.match(p) and p not in (".", "..") for p in parts):
            raise RetentionError(f"retention never removes {removal.path}: only the outputs of runs that are not "
                                 "published or in progress, their on-demand reports, model versions that are not a "
                                 "champion or previous champion, and leftovers of killed runs; nothing was removed")


def _mark_pruned(root: Path, run_id: str, plan: RetentionPlan, *, now: _dt.datetime) -> None:
    """``runs/<run_id>/pruned.json``: the outputs removed (with those of earlier prunes), when and why."""
    path = root / RUNS_DIR / run_id / PRUNED_FILE
    earlier = (_json_file(path) or {}).get("removed") or []
    mine = [r for r in plan.removals if r.kind in ("run_output", "audience") and r.subject == f"run {run_id}"]
    record = {"pruned_at": now.isoformat(timespec="seconds"), "reason": mine[0].reason,
              "removed": sorted({*earlier, *(r.path for r in mine)})}
    write_durably(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))


def _move_to_trash(source: Path, target: Path) -> None:
    """One atomic rename out of the workspace into the trash, made durable (both folders fsynced)."""
    os.rename(source, target)
    fsync_dir(source.parent)
    fsync_dir(target.parent)


def _freed_bytes(folder: Path) -> int:
    """Disk that deleting ``folder`` frees: each file's blocks once, and only when all its hard links are inside."""
    seen: dict[tuple[int, int], list[int]] = {}
    for path in folder.rglob("*"):
        info = path.lstat()
        if path.is_file() and not path.is_symlink():
            entry = seen.setdefault((info.st_dev, info.st_ino), [info.st_blocks * 512, info.st_nlink, 0])
            entry[2] += 1
    return sum(size for size, links, found in seen.values() if found >= links)


def _pointers(root: Path, path: Path) -> list[dict] | None:
    """The champion pointer as committed and as this process sees it (its run's staged one); None when unreadable."""
    try:
        found = [pointer for pointer in _payloads(root, path, strict=True) if pointer]
    except (OSError, ValueError):
        return None
    if not all(isinstance(p.get("version"), str) for p in found):
        return None
    return found


def _previous_champion(pointer: Mapping[str, object]) -> list[str]:
    """The version a champion pointer replaced (the last entry of its history), as a list of none or one."""
    history = [h["version"] for h in pointer.get("history") or [] if isinstance(h, dict)
               and isinstance(h.get("version"), str)]
    return history[-1:]


def _payloads(root: Path, path: Path, *, strict: bool = False) -> list[dict]:
    """A JSON state file as committed and as this process sees it (one or two dicts; none when missing)."""
    found = []
    for data in (_read(path), transaction.read_bytes(root, path)):
        if data is None:
            continue
        try:
            payload = json.loads(data.decode("utf-8"))
        except ValueError:
            if strict:
                raise
            continue
        if isinstance(payload, dict):
            found.append(payload)
        elif strict:
            raise ValueError(f"{path} is not a JSON object")
    return found


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _json_file(path: Path) -> dict | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def _folders(folder: Path, *, hidden: bool = True) -> list[Path]:
    """Sub-folders of ``folder`` (none when it is missing); names starting with a dot only with ``hidden``."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()
                      and (hidden or not p.name.startswith(".")))
    except OSError:
        return []


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=_dt.timezone.utc)


def _check_now(now: _dt.datetime) -> _dt.datetime:
    if not isinstance(now, _dt.datetime) or now.tzinfo is None:
        raise ValueError(f"now must be a timezone-aware datetime; got {now!r}")
    return now


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
