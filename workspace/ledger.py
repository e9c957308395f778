"""The batch ledger: what became of every extract batch the workspace received.

``registry/ledger.json`` records, per batch number, that it was

- **registered**: by which run, in which order (``sequence``), the rows it brought per table (``rows_in``), how many
  were accepted and quarantined, and the SHA-256 of its content (:func:`records.batches.batch_contents`);
- **replaced**: a registered batch corrected with ``--replace-batch``: its earlier versions are listed under
  ``corrections`` (their run, content hash, counts and where their rows are kept in ``registry/history/``);
- **refused**: a batch whose input was refused as a whole (an identifier, say), or one sent again with other content
  than registered; each refusal is listed under ``refusals`` with its run and reason. A refused batch that was never
  registered is tried again when it comes again.

A batch is loaded when the ledger does not hold it, whatever its number: there is no watermark. The ledger is the
registry's state: only the batches it lists as registered are part of the registry, and it is written last, staged
with its run (:mod:`workspace.transaction`), so it takes effect when the run commits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from records.batches import level_batches
from records.schema import EXTRACT_BATCH, LEVELS, PROCEDURES
from records.validation import ValidationResult
from workspace import transaction

REGISTRY_DIR = "registry"
LEDGER_FILE = "ledger.json"
LEGACY_STATE_FILE = "state.json"
"""The registry state of workspaces made before the ledger (a watermark and the batches); read, never written."""
FORMAT = 1
REFUSALS_KEPT = 20
"""Refusals kept per batch (the latest): a batch refused every night must not grow the ledger without bound."""


@dataclass(frozen=True)
class Ledger:
    """The ledger of one workspace.

    Attributes
    ----------
    batches
        The registered batches: number -> entry (``procedures`` and ``levels``: accepted rows in the registry;
        ``rows_in``, ``rows_quarantined``, ``content_sha256``, ``run_id``, ``sequence``, ``registered_at``,
        ``corrections``, ``refusals``).
    refused
        Batches refused and never registered: number -> ``{"refusals": [...]}``.
    quarantine
        The quarantine files that belong to the quarantine store (workspace-relative); None for a legacy state,
        whose quarantine is every file in the folder.
    sequence
        Registrations so far (each registered or replaced batch takes the next number).
    """

    batches: Mapping[int, dict] = field(default_factory=dict)
    refused: Mapping[int, dict] = field(default_factory=dict)
    quarantine: tuple[str, ...] | None = None
    sequence: int = 0

    @property
    def watermark(self) -> int:
        """The highest registered batch number (0 when none): shown in reports; it decides nothing."""
        return max(self.batches, default=0)

    def contents(self) -> dict[int, str | None]:
        """Each registered batch's content SHA-256 (None: registered before contents were recorded)."""
        return {b: e.get("content_sha256") for b, e in self.batches.items()}

    def run_ids(self) -> dict[int, str]:
        return {b: str(e.get("run_id", "unknown")) for b, e in self.batches.items()}

    def rows_in(self) -> dict[int, dict[str, int] | None]:
        """Each registered batch's rows per table as it came (None: not recorded)."""
        return {b: (dict(e["rows_in"]) if e.get("rows_in") else None) for b, e in self.batches.items()}

    def digest(self) -> str:
        """A short name for what the registry holds: its batches, their contents and the runs that registered them."""
        text = json.dumps(sorted((b, e.get("content_sha256"), e.get("run_id")) for b, e in self.batches.items()))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def since(self, sequence: int) -> list[int]:
        """The batches registered (or replaced) after registration number ``sequence``."""
        return sorted(b for b, e in self.batches.items() if int(e.get("sequence", 0)) > sequence)

    def subset(self, batches: Iterable[int]) -> Ledger:
        """The same ledger holding only ``batches`` of its registered batches (to read part of the registry)."""
        wanted = set(batches)
        return replace(self, batches={b: e for b, e in self.batches.items() if b in wanted})

    def to_json(self) -> str:
        payload: dict[str, object] = {
            "format": FORMAT, "sequence": self.sequence,
            "batches": {str(b): e for b, e in sorted(self.batches.items())},
            "refused": {str(b): e for b, e in sorted(self.refused.items())}}
        if self.quarantine is not None:
            payload["quarantine"] = sorted(self.quarantine)
        return json.dumps(payload, indent=2, sort_keys=True) + "\n"


class LedgerError(RuntimeError):
    """The ledger cannot be read: the message names the file and says what is wrong."""


def ledger_path(workspace: Path) -> Path:
    return Path(workspace) / REGISTRY_DIR / LEDGER_FILE


def load_ledger(workspace: Path) -> Ledger:
    """The ledger of a workspace; an empty one when nothing was received yet.

    Inside a run, the run's own staged ledger (:mod:`workspace.transaction`); elsewhere the committed one. A workspace
    made before the ledger is read from its ``state.json``: its batches count as registered, with no recorded content
    (sent again, they are taken to be the same).

    Raises
    ------
    LedgerError
        The file is not a ledger this code can read.
    """
    path = ledger_path(workspace)
    data = transaction.read_bytes(workspace, path)
    if data is None:
        return _legacy(workspace)
    try:
        payload = json.loads(data.decode("utf-8"))
        if payload.get("format") != FORMAT:
            raise LedgerError(f"{path} is ledger format {payload.get('format')!r}; this code reads format {FORMAT}")
        quarantine = payload.get("quarantine")
        return Ledger(batches={int(b): dict(e) for b, e in payload["batches"].items()},
                      refused={int(b): dict(e) for b, e in payload.get("refused", {}).items()},
                      quarantine=None if quarantine is None else tuple(str(q) for q in quarantine),
                      sequence=int(payload["sequence"]))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise LedgerError(f"{path} cannot be read as the batch ledger: {type(error).__name__}: {error}") from None


def write_ledger(workspace: Path, ledger: Ledger) -> None:
    """Replace the ledger whole (staged with the run that holds the workspace's lock)."""
    transaction.write_file(workspace, ledger_path(workspace), ledger.to_json().encode("utf-8"))


def record_registration(ledger: Ledger, result: ValidationResult, *, run_id: str, at: str,
                        quarantine_files: Iterable[str], history: Mapping[int, Mapping[str, str]]) -> Ledger:
    """The ledger after a run registered the batches of ``result`` and refused its conflicting batches.

    Parameters
    ----------
    history
        Per replaced batch, where its registered rows are kept (table -> workspace-relative path).
    """
    batches = {b: dict(e) for b, e in ledger.batches.items()}
    refused = {b: dict(e) for b, e in ledger.refused.items()}
    accepted = _rows_by_batch(result, "accepted")
    quarantined = _rows_by_batch(result, "quarantined")
    sequence = ledger.sequence
    for batch, content in sorted(result.contents.items()):
        sequence += 1
        earlier = batches.get(batch)
        corrections = list(earlier.get("corrections", [])) if earlier else []
        if earlier is not None:
            corrections.append({"run_id": earlier.get("run_id"), "content_sha256": earlier.get("content_sha256"),
                                "rows_in": earlier.get("rows_in"), "procedures": earlier.get("procedures"),
                                "levels": earlier.get("levels"), "registered_at": earlier.get("registered_at"),
                                "history": dict(history.get(batch, {})), "replaced_by": run_id, "replaced_at": at})
        refusals = list((earlier or refused.pop(batch, {})).get("refusals", []))
        batches[batch] = {
            "procedures": accepted[PROCEDURES.name].get(batch, 0), "levels": accepted[LEVELS.name].get(batch, 0),
            "rows_in": content.rows(),
            "rows_quarantined": {t: quarantined[t].get(batch, 0) for t in (PROCEDURES.name, LEVELS.name)},
            "content_sha256": content.sha256, "run_id": run_id, "sequence": sequence, "registered_at": at,
            "corrections": corrections, "refusals": refusals[-REFUSALS_KEPT:]}
    for batch, change in result.conflicts.items():
        entry = batches[batch]
        entry["refusals"] = [*entry.get("refusals", []),
                             {"run_id": run_id, "at": at, "reason": change.describe()}][-REFUSALS_KEPT:]
    recorded = set(ledger.quarantine or ())
    return Ledger(batches=batches, refused=refused, quarantine=tuple(sorted(recorded | set(quarantine_files))),
                  sequence=sequence)


def record_refusal(ledger: Ledger, batches: Iterable[int], *, reason: str, run_id: str, at: str) -> Ledger:
    """The ledger after an input holding ``batches`` was refused as a whole. Registered batches keep their state and
    gain the refusal in their history; the others are listed as refused (and are tried again when they come again)."""
    registered = {b: dict(e) for b, e in ledger.batches.items()}
    refused = {b: dict(e) for b, e in ledger.refused.items()}
    event = {"run_id": run_id, "at": at, "reason": reason}
    for batch in sorted(set(batches)):
        if batch in registered:
            continue  # the input was refused before its batches were compared: nothing is known of this one
        entry = refused.setdefault(batch, {"refusals": []})
        entry["refusals"] = [*entry.get("refusals", []), event][-REFUSALS_KEPT:]
    return Ledger(batches=registered, refused=refused, quarantine=ledger.quarantine, sequence=ledger.sequence)


def _rows_by_batch(result: ValidationResult, part: str) -> dict[str, dict[int, int]]:
    """Rows per batch of each table's accepted or quarantined rows (levels by their procedure's batch)."""
    out: dict[str, dict[int, int]] = {}
    procedures = result.procedures.accepted
    for name, outcome in result.tables().items():
        frame = getattr(outcome, part)
        if part == "quarantined" or name == PROCEDURES.name:
            batch = frame[EXTRACT_BATCH] if EXTRACT_BATCH in frame.columns else None
        else:
            batch = level_batches(procedures, frame)
        if batch is None or frame.empty:
            out[name] = {}
            continue
        counts = batch.dropna().astype("int64").value_counts()
        out[name] = {int(b): int(n) for b, n in counts.items()}
    return out


def _legacy(workspace: Path) -> Ledger:
    """A workspace's registry state from before the ledger (``state.json``), as a ledger."""
    data = transaction.read_bytes(workspace, Path(workspace) / REGISTRY_DIR / LEGACY_STATE_FILE)
    if data is None:
        return Ledger()
    payload = json.loads(data.decode("utf-8"))
    batches = {}
    for sequence, (batch, info) in enumerate(sorted(((int(b), i) for b, i in payload["batches"].items())), start=1):
        batches[batch] = {"procedures": int(info.get("procedures", 0)), "levels": int(info.get("levels", 0)),
                          "rows_in": None, "content_sha256": None, "run_id": info.get("run_id"),
                          "sequence": sequence, "corrections": [], "refusals": []}
    quarantine = payload.get("quarantine")
    return Ledger(batches=batches, quarantine=None if quarantine is None else tuple(str(q) for q in quarantine),
                  sequence=len(batches))
