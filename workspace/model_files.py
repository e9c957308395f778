"""The model store's files: version folders with their integrity manifests, the champion pointers, the staging sweep.

Layout, one folder per outcome and version, never rewritten once in place::

    <workspace>/models/<outcome>/v0001/model.skops      the serialised estimator (bytes here; skops in models.store)
                                      /model.sha256     its SHA-256 (``sha256sum -c model.sha256`` checks it)
                                      /card.json        the model card, machine-readable
                                      /card.md          the model card for people
                                      /features.json    ordered input features
                                      /replicates.skops the model's bootstrap refits (optional; the planner's)
                                      /integrity.json   SHA-256 and size of the files above, outcome, version
    <workspace>/models/<outcome>/champion.json          {"version", "since", "decision", "history"}

A version is written into a hidden ``.incomplete-*`` folder, ``integrity.json`` last, read back through the same
checks as any load (and the caller's own), and only then renamed into place as the next free version: a killed run
leaves no half-written version, and a leftover staging folder is swept by the next save of the outcome made while
holding the workspace lock. Every read checks every file against ``integrity.json`` before its bytes are handed on;
a version without one (written before the manifest existed) is refused. The manifest guards against corruption and
edits (a changed calibration band in ``card.json``, a changed feature list), not against someone who can rewrite
the manifest too. ``champion.json`` goes through :mod:`workspace.transaction`: staged with the run that holds the
lock, replaced at once without it.

This module deals in bytes and JSON-ready values only; what a model, a card or a feature list is belongs to
:mod:`models.store`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from workspace import transaction
from workspace.durable import fsync_dir

MODELS_DIR = "models"
MODEL_FILE = "model.skops"
SHA_FILE = "model.sha256"
CARD_JSON = "card.json"
CARD_MD = "card.md"
FEATURES_FILE = "features.json"
INTEGRITY_FILE = "integrity.json"
CHAMPION_FILE = "champion.json"
REPLICATES_FILE = "replicates.skops"
COVERED_FILES = (MODEL_FILE, CARD_JSON, CARD_MD, FEATURES_FILE)  # what integrity.json lists, always
OPTIONAL_FILES = (REPLICATES_FILE,)  # what it lists when the version has it
REQUIRED_FILES = (*COVERED_FILES, SHA_FILE, INTEGRITY_FILE)
INTEGRITY_FORMAT = 1
STAGING_PREFIX = ".incomplete-"
RETRAIN_HINT = "the fix is to retrain (`cementrisk run --retrain`), which stores a new, complete version"

_OUTCOME = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")
_VERSION = re.compile(r"^v(\d{4,})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_RENAME_ATTEMPTS = 5
_KIND = {MODEL_FILE: "model file", CARD_JSON: "model card", CARD_MD: "model card", FEATURES_FILE: "feature list",
         REPLICATES_FILE: "replicates file"}

T = TypeVar("T")


class ModelFilesError(Exception):
    """A model store file cannot be written or found as asked; the message says which and why."""


class ModelFilesIntegrityError(ModelFilesError):
    """A stored version's files are missing, unreadable, or do not match its integrity manifest."""


@dataclass(frozen=True)
class VersionFiles:
    """One stored version as read: every file checked against ``integrity.json``, not yet trusted as a model.

    Attributes
    ----------
    folder
        The version folder (absolute; the staging folder while a save reads its version back).
    shown
        ``folder`` relative to the workspace (``models/<outcome>/v0001``), for messages.
    model
        The bytes of ``model.skops``.
    card, features
        ``card.json`` and ``features.json`` as parsed JSON (their shape is the caller's to check).
    card_markdown
        ``card.md``.
    replicates
        The bytes of ``replicates.skops`` when they were asked for and the version has them, else None.
    has_replicates
        Whether the version has a replicates file (listed in its manifest), read or not.
    """

    outcome: str
    version: str
    folder: Path
    shown: str
    model: bytes
    card: object
    card_markdown: str
    features: object
    replicates: bytes | None = None
    has_replicates: bool = False

    def shown_file(self, name: str) -> str:
        """A file of the version, relative to the workspace (``models/<outcome>/v0001/card.json``)."""
        return f"{self.shown}/{name}"


def outcome_folder(workspace: Path, outcome: str) -> Path:
    """``<workspace>/models/<outcome>``.

    Raises
    ------
    ModelFilesError
        ``outcome`` is not lower case letters, digits, ``_`` and ``-`` (it names a folder).
    """
    if not isinstance(outcome, str) or not _OUTCOME.match(outcome):
        raise ModelFilesError(f"outcome must be lower case letters, digits, '_' or '-'; got {outcome!r}")
    return Path(workspace) / MODELS_DIR / outcome


def check_version_name(version: str) -> None:
    """Refuse a version name that is not ``v`` and at least 4 digits.

    Raises
    ------
    ModelFilesError
        Naming the value given.
    """
    if not isinstance(version, str) or not _VERSION.match(version):
        raise ModelFilesError(f"a version is 'v' and at least 4 digits, such as 'v0001'; got {version!r}")


def list_versions(workspace: Path, outcome: str) -> list[str]:
    """Stored versions of ``outcome``, oldest first by number (``[]`` when there are none)."""
    folder = outcome_folder(workspace, outcome)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in folder.iterdir() if p.is_dir() and (m := _VERSION.match(p.name))]
    return [name for _, name in sorted(found)]


def has_version(workspace: Path, *, outcome: str, version: str) -> bool:
    """Whether ``version`` of ``outcome`` has a folder (complete or not: :func:`read_version` tells)."""
    check_version_name(version)
    return (outcome_folder(workspace, outcome) / version).is_dir()


def read_version(workspace: Path, *, outcome: str, version: str, replicates: bool = False) -> VersionFiles:
    """Read a stored version, checking every file against its integrity manifest before handing any byte on.

    The replicates file (many times the model's size) is read only with ``replicates``: scoring never needs it.

    Raises
    ------
    ModelFilesError
        No such version.
    ModelFilesIntegrityError
        ``integrity.json`` is missing (the version predates it) or unreadable, a file is missing, or a file's size
        or SHA-256 differs from the manifest; the message names the file.
    """
    check_version_name(version)
    folder = outcome_folder(workspace, outcome) / version
    if not folder.is_dir():
        raise ModelFilesError(f"no version {version} of model {outcome} in {folder}")
    return _read_folder(workspace, folder, outcome=outcome, version=version, replicates=replicates)


def save_version(workspace: Path, *, outcome: str, model: bytes, features: Sequence[Mapping[str, object]],
                 card_for: Callable[[str], tuple[Mapping[str, object], str]],
                 check: Callable[[VersionFiles], T], replicates: bytes | None = None) -> tuple[Path, T]:
    """Store the next version of ``outcome``: written into a hidden folder, ``integrity.json`` last, read back and
    checked, then renamed into place (taking the next number when another writer took this one meanwhile).

    Parameters
    ----------
    model
        The bytes of ``model.skops``.
    features
        The ordered feature list, JSON-ready.
    card_for
        ``card_for(version)`` -> (the card as a JSON-ready dict, the card in Markdown) for the version assigned.
    check
        Called with the staged version as read back (integrity checked, replicates included); raises to abandon
        the save. What it returns is returned.
    replicates
        The bytes of ``replicates.skops``, or None for a version without.

    Returns
    -------
    tuple[Path, T]
        The version folder in place, and what ``check`` returned.

    Raises
    ------
    ModelFilesError
        A value is not JSON-serialisable, or no version could be claimed.
    """
    folder = outcome_folder(workspace, outcome)
    feature_bytes = _json_bytes(list(features), "the feature list")
    folder.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(workspace, folder)
    staging = folder / f"{STAGING_PREFIX}{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        _write_staged(staging / MODEL_FILE, model)
        _write_staged(staging / SHA_FILE, f"{hashlib.sha256(model).hexdigest()}  {MODEL_FILE}\n".encode())
        _write_staged(staging / FEATURES_FILE, feature_bytes)
        optional = {} if replicates is None else {REPLICATES_FILE: replicates}
        for name, data in optional.items():
            _write_staged(staging / name, data)
        for _ in range(_RENAME_ATTEMPTS):
            version = _next_version(folder)
            card, markdown = card_for(version)
            (staging / INTEGRITY_FILE).unlink(missing_ok=True)  # a staged version is never whole before its manifest
            contents = {MODEL_FILE: model, CARD_JSON: _json_bytes(dict(card), "the model card"),
                        CARD_MD: markdown.encode("utf-8"), FEATURES_FILE: feature_bytes, **optional}
            for name in (CARD_JSON, CARD_MD):
                _write_staged(staging / name, contents[name])
            _write_staged(staging / INTEGRITY_FILE, _json_bytes(integrity_manifest(contents, outcome=outcome,
                                                                                version=version), "the manifest"))
            fsync_dir(staging)
            checked = check(_read_folder(workspace, staging, outcome=outcome, version=version, replicates=True))
            try:
                os.rename(staging, folder / version)
            except OSError as error:
                if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # another run took this version meanwhile: take the next
                raise
            fsync_dir(folder)
            return folder / version, checked
        raise ModelFilesError(f"could not claim a new version of {outcome} in {folder} after {_RENAME_ATTEMPTS} "
                              "attempts: other runs keep saving concurrently")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def integrity_manifest(contents: Mapping[str, bytes], *, outcome: str, version: str) -> dict[str, object]:
    """The content of ``integrity.json`` for the files ``contents`` (name -> bytes) of a version.

    Raises
    ------
    ModelFilesError
        ``contents`` does not hold :data:`COVERED_FILES`, or holds a file neither they nor
        :data:`OPTIONAL_FILES` name.
    """
    if not _listable(contents):
        raise ModelFilesError(f"an integrity manifest covers exactly {', '.join(COVERED_FILES)} (and optionally "
                              f"{', '.join(OPTIONAL_FILES)}); got {', '.join(sorted(contents)) or 'nothing'}")
    return {"format": INTEGRITY_FORMAT, "outcome": outcome, "version": version, "algorithm": "sha256",
            "files": {name: {"sha256": hashlib.sha256(contents[name]).hexdigest(), "bytes": len(contents[name])}
                      for name in sorted(contents)}}


def _listable(names: object) -> bool:
    """Whether a manifest may list ``names``: every covered file, and optional ones only."""
    return set(COVERED_FILES) <= set(names) <= {*COVERED_FILES, *OPTIONAL_FILES}  # type: ignore[arg-type]


def read_champion(workspace: Path, outcome: str) -> dict[str, object] | None:
    """The champion pointer of ``outcome`` as this process sees it (its run's staged pointer, else the committed
    one), or None when none has been set.

    Raises
    ------
    ModelFilesIntegrityError
        ``champion.json`` cannot be read or is not JSON.
    ModelFilesError
        It names no version.
    """
    path = outcome_folder(workspace, outcome) / CHAMPION_FILE
    try:
        data = transaction.read_bytes(workspace, path)
    except OSError as error:
        raise ModelFilesIntegrityError(f"{path} of the champion pointer cannot be read: {error}") from error
    if data is None:
        return None
    try:
        pointer = json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise ModelFilesIntegrityError(f"{path} of the champion pointer cannot be read: {error}") from error
    if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
        raise ModelFilesError(f"{path} names no champion version")
    return pointer


def write_champion(workspace: Path, *, outcome: str, pointer: Mapping[str, object]) -> Path:
    """Replace ``champion.json`` of ``outcome`` whole: staged with the run holding the workspace lock
    (:func:`workspace.transaction.write_file`), at once without it.

    Returns
    -------
    Path
        Where the bytes were written (the staged copy or the pointer itself).

    Raises
    ------
    ModelFilesError
        ``pointer`` is not JSON-serialisable or names no version.
    """
    if not isinstance(pointer.get("version"), str):
        raise ModelFilesError(f"a champion pointer names its version; got {pointer.get('version')!r}")
    check_version_name(str(pointer["version"]))
    path = outcome_folder(workspace, outcome) / CHAMPION_FILE
    return transaction.write_file(workspace, path, _json_bytes(dict(pointer), "the champion pointer"))


# --- private steps -------------------------------------------------------------------------------------

def _read_folder(workspace: Path, folder: Path, *, outcome: str, version: str,
                 replicates: bool = False) -> VersionFiles:
    shown = _shown(workspace, folder)
    label = f"model {outcome} {version}"
    manifest = _read_manifest(folder, shown=shown, label=label, outcome=outcome, version=version)
    contents: dict[str, bytes] = {}
    for name in COVERED_FILES:
        contents[name] = _read_covered(folder / name, f"{shown}/{name}", manifest[name], name=name, label=label,
                                       manifest_shown=f"{shown}/{INTEGRITY_FILE}")
    has_replicates = REPLICATES_FILE in manifest
    if replicates and has_replicates:
        contents[REPLICATES_FILE] = _read_covered(folder / REPLICATES_FILE, f"{shown}/{REPLICATES_FILE}",
                                                  manifest[REPLICATES_FILE], name=REPLICATES_FILE, label=label,
                                                  manifest_shown=f"{shown}/{INTEGRITY_FILE}")
    _check_sha_file(folder / SHA_FILE, f"{shown}/{SHA_FILE}", manifest[MODEL_FILE]["sha256"], label=label,
                    manifest_shown=f"{shown}/{INTEGRITY_FILE}")
    return VersionFiles(replicates=contents.get(REPLICATES_FILE), has_replicates=has_replicates,
                        outcome=outcome, version=version, folder=folder, shown=shown, model=contents[MODEL_FILE],
                        card=_parse_json(contents[CARD_JSON], f"{shown}/{CARD_JSON}", label),
                        card_markdown=_decode(contents[CARD_MD], f"{shown}/{CARD_MD}", label),
                        features=_parse_json(contents[FEATURES_FILE], f"{shown}/{FEATURES_FILE}", label))


def _read_manifest(folder: Path, *, shown: str, label: str, outcome: str, version: str) -> dict[str, dict]:
    """The files entry of ``integrity.json``, each with a hex ``sha256`` and an integer ``bytes``."""
    where = f"{shown}/{INTEGRITY_FILE}"
    try:
        data = (folder / INTEGRITY_FILE).read_bytes()
    except FileNotFoundError:
        raise ModelFilesIntegrityError(
            f"{label} has no integrity manifest ({where} missing): it predates the integrity manifest, or the "
            "manifest was removed, so its files cannot be shown to match its integrity manifest; refusing to load "
            f"it; {RETRAIN_HINT}") from None
    except OSError as error:
        raise ModelFilesIntegrityError(f"{where} of {label} cannot be read: {error}; refusing to load it; "
                                       f"{RETRAIN_HINT}") from error
    problem = None
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as error:
        manifest, problem = None, f"it is not JSON ({error})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if problem is None and not isinstance(files, dict):
        problem = "it lists no files"
    elif problem is None and not _listable(files):
        problem = f"it lists {', '.join(sorted(files)) or 'nothing'}, not {', '.join(COVERED_FILES)}"
    elif problem is None and not all(isinstance(e, dict) and isinstance(e.get("sha256"), str)
                                     and _SHA256.match(e["sha256"]) and type(e.get("bytes")) is int
                                     for e in files.values()):
        problem = "an entry lacks a SHA-256 hex digest or a size in bytes"
    elif problem is None and (manifest.get("outcome"), manifest.get("version")) != (outcome, version):
        problem = f"it describes {manifest.get('outcome')} {manifest.get('version')}, not {outcome} {version}"
    if problem is not None:
        raise ModelFilesIntegrityError(f"{where} is not the integrity manifest of {label}: {problem}; the version's "
                                       f"files do not match its integrity manifest; refusing to load it; "
                                       f"{RETRAIN_HINT}")
    return files


def _read_covered(path: Path, shown: str, entry: Mapping[str, object], *, name: str, label: str,
                  manifest_shown: str) -> bytes:
    refusal = (f"refusing to load {label}: the version's files do not match its integrity manifest "
               f"({manifest_shown}); {RETRAIN_HINT}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFilesIntegrityError(f"{label} is incomplete: {name} missing ({shown}); {refusal}") from None
    except OSError as error:
        raise ModelFilesIntegrityError(f"{_KIND[name]} {shown} cannot be read: {error}; {refusal}") from error
    if len(data) != entry["bytes"]:
        raise ModelFilesIntegrityError(f"{_KIND[name]} {shown} has changed: {len(data)} bytes, not the "
                                       f"{entry['bytes']} recorded; {refusal}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ModelFilesIntegrityError(f"{_KIND[name]} {shown} does not match its SHA-256; {refusal}")
    return data


def _check_sha_file(path: Path, shown: str, expected: str, *, label: str, manifest_shown: str) -> None:
    """``model.sha256`` (kept for ``sha256sum -c``) must agree with the integrity manifest."""
    refusal = f"refusing to load {label}; {RETRAIN_HINT}"
    try:
        recorded = path.read_bytes().decode("ascii", errors="replace").split()
    except FileNotFoundError:
        raise ModelFilesIntegrityError(f"{label} is incomplete: {SHA_FILE} missing ({shown}); {refusal}") from None
    except OSError as error:
        raise ModelFilesIntegrityError(f"{shown} cannot be read: {error}; {refusal}") from error
    digest = recorded[0].lower() if recorded else ""
    if not _SHA256.match(digest):
        raise ModelFilesIntegrityError(f"{shown} holds no SHA-256 hex digest; {refusal}")
    if digest != expected:
        raise ModelFilesIntegrityError(f"{shown} disagrees with the integrity manifest ({manifest_shown}): the "
                                       f"version's files do not match its integrity manifest; {refusal}")


def _parse_json(data: bytes, shown: str, label: str) -> object:
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise ModelFilesIntegrityError(f"{shown} of {label} cannot be read: {error}") from error


def _decode(data: bytes, shown: str, label: str) -> str:
    try:
        return data.decode("utf-8")
    except ValueError as error:
        raise ModelFilesIntegrityError(f"{shown} of {label} cannot be read: {error}") from error


def _shown(workspace: Path, path: Path) -> str:
    try:
        return Path(path).relative_to(Path(workspace)).as_posix()
    except ValueError:
        return str(path)


def _next_version(outcome_dir: Path) -> str:
    numbers = [int(m.group(1)) for p in outcome_dir.iterdir() if (m := _VERSION.match(p.name))]
    return f"v{max(numbers, default=0) + 1:04d}"


def _remove_leftovers(workspace: Path, outcome_dir: Path) -> None:
    """Half-written versions of killed runs: removed only while this process holds the workspace lock (no other
    run can be writing one then)."""
    if transaction.held_run(workspace) is None:
        return
    for path in outcome_dir.iterdir():
        if path.name.startswith(STAGING_PREFIX) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(f".{CHAMPION_FILE}.") and path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)


def _json_bytes(value: object, what: str) -> bytes:
    try:
        return (json.dumps(value, indent=2) + "\n").encode("utf-8")
    except (TypeError, ValueError) as error:
        raise ModelFilesError(f"{what} is not JSON-serialisable: {error}") from error


def _write_staged(path: Path, data: bytes) -> None:
    """A file of the staging folder, written whole and fsynced; rewritten when a save takes the next version
    (the folder, not the file, is renamed into place)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
