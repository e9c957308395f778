"""The run manifest: what one run read, accepted, quarantined, refused and registered, and how long each step took."""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from workspace.durable import write_durably
from records.schema import CONTRACT_VERSION, LEVELS, PROCEDURES

RUNS_DIR = "runs"
MANIFEST_FILE = "manifest.json"
STATUS_RUNNING = "running"
STATUS_OK = "ok"
STATUS_REFUSED = "refused"
STATUS_FAILED = "failed"


@dataclass
class TableCounts:
    """Row accounting of one table: rows_in = rows_accepted + rows_quarantined, always; rows of registered batches sent
    again unchanged are ``rows_skipped_registered``, rows of refused batches (or of an input refused whole)
    ``rows_refused``."""

    rows_in: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    rows_skipped_registered: int = 0
    rows_refused: int = 0
    columns_dropped: list[str] = field(default_factory=list)
    quarantine_rules: dict[str, int] = field(default_factory=dict)


@dataclass
class RunManifest:
    """Everything a person or a registry needs to audit one run."""

    run_id: str
    source: str
    workspace: str
    status: str = STATUS_RUNNING
    reason: str | None = None
    code_version: str = ""
    contract_version: str = CONTRACT_VERSION
    started_at: str = ""
    finished_at: str = ""
    tables: dict[str, TableCounts] = field(
        default_factory=lambda: {PROCEDURES.name: TableCounts(), LEVELS.name: TableCounts()})
    batches_loaded: list[int] = field(default_factory=list)
    batches_skipped: list[int] = field(default_factory=list)
    batches_replaced: list[int] = field(default_factory=list)
    batches_refused: list[dict[str, object]] = field(default_factory=list)
    """``{"batch": n, "reason": ...}`` per batch refused (sent again with other content than registered)."""
    registry: dict[str, object] = field(default_factory=dict)
    """``batches_before``, ``batches_after`` (registered batches) and ``highest_batch`` (informational: batches are
    loaded by the ledger, whatever their number)."""
    quarantine_files: list[str] = field(default_factory=list)
    models: dict[str, object] = field(default_factory=dict)
    outputs: dict[str, object] = field(default_factory=dict)
    timings_seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


def new_run_id(now: _dt.datetime | None = None) -> str:
    """A sortable, unique run id: UTC time to the second and 6 random hex digits."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def code_version() -> str:
    """The package version and, where the code is a git checkout, its commit (with '+dirty')."""
    try:
        version = metadata.version("cementrisk")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}" if commit else version


def manifest_path(workspace: Path, run_id: str) -> Path:
    return Path(workspace) / RUNS_DIR / run_id / MANIFEST_FILE


def write_manifest(workspace: Path, manifest: RunManifest, *, with_commit: bool = False) -> Path:
    """Write ``runs/<run_id>/manifest.json`` atomically and return its path.

    With ``with_commit`` the manifest is staged with the run that holds the workspace's lock
    (:func:`workspace.transaction.write_file`): it replaces the visible one only if the run commits, so a run whose
    commit fails (a full disk, a kill) never shows a manifest that says ``ok``.
    """
    path = manifest_path(workspace, manifest.run_id)
    data = manifest.to_json().encode("utf-8")
    if with_commit:
        from workspace import transaction  # noqa: PLC0415 - transaction reads manifests when it recovers

        transaction.write_file(workspace, path, data)
    else:
        write_durably(path, data)
    return path


def read_manifest(workspace: Path, run_id: str) -> dict:
    """A run's visible manifest as a dict (FileNotFoundError when it has none)."""
    return json.loads(manifest_path(workspace, run_id).read_text(encoding="utf-8"))


def read_manifest_status(workspace: Path, run_id: str) -> str | None:
    """The status a run's visible manifest holds, or None when it has none."""
    try:
        return json.loads(manifest_path(workspace, run_id).read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


@dataclass
class StepTimer:
    """Wall time per named step, in seconds; ``on_step`` hears each step's name as it starts (progress)."""

    timings: dict[str, float] = field(default_factory=dict)
    on_step: Callable[[str], None] | None = None

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.on_step is not None:
            self.on_step(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)


def mark_failed(workspace: Path, run_id: str, *, reason: str) -> bool:
    """Make a run's visible manifest say ``failed`` with ``reason`` when it still says ``running`` or ``ok`` and the run
    did not commit (a commit that stopped half way is finished by the next run: then nothing is changed). Best
    effort: False when the manifest could not be written (a full disk; the next run marks it then).
    """
    from workspace import transaction  # noqa: PLC0415

    if transaction.committed_but_unapplied(workspace, run_id):
        return False
    path = manifest_path(workspace, run_id)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or manifest.get("status") not in (STATUS_RUNNING, STATUS_OK):
        return False
    manifest["status"] = STATUS_FAILED
    manifest["reason"] = reason
    manifest["finished_at"] = utc_now()
    try:
        write_durably(path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    except OSError:
        return False
    return True
