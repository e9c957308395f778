"""The run as a transaction: files written under the workspace lock are staged, seen by the run at once and by
everyone else only when the run ends normally; a failed or killed run changes nothing; a committed run whose
renames were cut short is finished by the next one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from workspace import transaction as lock
from workspace.transaction import COMMIT_MARK, STAGING_DIR, read_bytes, recover, workspace_lock, write_file

REPO = Path(__file__).resolve().parents[2]
KILLED = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from workspace.transaction import workspace_lock, write_file
workspace = Path({workspace!r})
with workspace_lock(workspace, run_id="killed-run"):
    write_file(workspace, workspace / "registry" / "state.json", b"from the killed run")
    print("staged", flush=True)
    time.sleep(120)
"""


def _reader(workspace: Path, target: Path) -> str:
    """What another process sees."""
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; "
            f"from workspace.transaction import read_bytes; print(read_bytes(Path({str(workspace)!r}), "
            f"Path({str(target)!r})))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_without_the_lock_a_file_is_replaced_at_once(tmp_path):
    target = tmp_path / "registry" / "state.json"
    assert read_bytes(tmp_path, target) is None
    assert write_file(tmp_path, target, b"one") == target
    assert target.read_bytes() == b"one" and read_bytes(tmp_path, target) == b"one"
    assert not (tmp_path / STAGING_DIR).exists()
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]  # no temporary file left


def test_a_run_sees_its_staged_files_others_see_them_when_it_commits(tmp_path):
    target = tmp_path / "registry" / "state.json"
    write_file(tmp_path, target, b"before")
    with workspace_lock(tmp_path, run_id="r1"):
        assert lock.held_run(tmp_path) == "r1"
        staged = write_file(tmp_path, target, b"after")
        assert staged == tmp_path / STAGING_DIR / "r1" / "registry" / "state.json"
        assert read_bytes(tmp_path, target) == b"after"
        assert target.read_bytes() == b"before" and _reader(tmp_path, target) == "b'before'"
    assert lock.held_run(tmp_path) is None
    assert target.read_bytes() == b"after" and _reader(tmp_path, target) == "b'after'"
    assert not (tmp_path / STAGING_DIR).exists()


def test_a_run_that_raises_changes_nothing(tmp_path):
    target = tmp_path / "models" / "leakage_any" / "champion.json"
    write_file(tmp_path, target, b"v0001")
    with pytest.raises(RuntimeError, match="report failed"):
        with workspace_lock(tmp_path, run_id="r1"):
            write_file(tmp_path, target, b"v0002")
            write_file(tmp_path, tmp_path / "quarantine" / "extract_batch=2" / "levels-r1.parquet", b"rows")
            raise RuntimeError("report failed")
    assert target.read_bytes() == b"v0001" and not (tmp_path / "quarantine").exists()
    assert not (tmp_path / STAGING_DIR).exists()


def test_a_killed_run_is_discarded_by_the_next_and_its_manifest_says_failed(tmp_path):
    target = tmp_path / "registry" / "state.json"
    write_file(tmp_path, target, b"before")
    manifest = tmp_path / "runs" / "killed-run" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"run_id": "killed-run", "status": "ok", "reason": None}))
    holder = subprocess.Popen([sys.executable, "-c", KILLED.format(repo=str(REPO), workspace=str(tmp_path))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "staged"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / STAGING_DIR / "killed-run" / "registry" / "state.json").is_file()
    assert read_bytes(tmp_path, target) == b"before"
    # a temporary the killed run's writer left behind (workspace.durable), and one of Prefect's that is not ours
    stray = tmp_path / "registry" / "procedures" / "extract_batch=2" / ".part-0.parquet.4242.0123456789ab.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half")
    prefects = tmp_path / ".prefect" / ".prefect.db.tmp"
    prefects.parent.mkdir()
    prefects.write_bytes(b"theirs")
    with workspace_lock(tmp_path, run_id="next", wait_seconds=0):
        assert not stray.exists() and prefects.exists()
        assert not (tmp_path / STAGING_DIR / "killed-run").exists()
        assert read_bytes(tmp_path, target) == b"before"
    assert target.read_bytes() == b"before"
    after = json.loads(manifest.read_text())
    assert after["status"] == "failed" and "found by run next" in after["reason"]


def test_a_committed_run_cut_short_is_seen_by_readers_and_finished_by_the_next_run(tmp_path):
    target = tmp_path / "registry" / "state.json"
    write_file(tmp_path, target, b"before")
    folder = tmp_path / STAGING_DIR / "r1"
    (folder / "registry").mkdir(parents=True)
    (folder / "registry" / "state.json").write_bytes(b"committed")
    (folder / COMMIT_MARK).write_text(json.dumps({"run_id": "r1", "files": ["registry/state.json"]}))
    assert read_bytes(tmp_path, target) == b"committed"  # the commit mark is the commit point
    assert recover(tmp_path, by_run="r2") == []
    assert target.read_bytes() == b"committed" and not (tmp_path / STAGING_DIR).exists()


def test_a_run_killed_after_it_published_is_committed(tmp_path):
    target = tmp_path / "registry" / "state.json"
    write_file(tmp_path, target, b"before")
    folder = tmp_path / STAGING_DIR / "r1" / "registry"
    folder.mkdir(parents=True)
    (folder / "state.json").write_bytes(b"published")
    (tmp_path / "published.json").write_text(json.dumps({"run_id": "r1"}))
    assert read_bytes(tmp_path, target) == b"published"
    with workspace_lock(tmp_path, run_id="r2"):
        pass
    assert target.read_bytes() == b"published"


def test_files_outside_the_workspace_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not a file of the workspace"):
        write_file(tmp_path / "ws", tmp_path / "elsewhere.json", b"x")


def test_a_worker_process_of_the_run_writes_into_the_run(tmp_path):
    """A piece of the run's work done in another process (an outcome's fit on a Dask worker) is staged with
    the run: it takes effect when the run commits."""
    target = tmp_path / "models" / "leakage_any" / "champion.json"
    write_file(tmp_path, target, b"v0001")
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from pathlib import Path; "
            f"from workspace.transaction import write_file; "
            f"print(write_file(Path({str(tmp_path)!r}), Path({str(target)!r}), b'v0002'))")
    with workspace_lock(tmp_path, run_id="r1"):
        written = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert Path(written.strip()) == tmp_path / STAGING_DIR / "r1" / "models" / "leakage_any" / "champion.json"
        assert target.read_bytes() == b"v0001" and read_bytes(tmp_path, target) == b"v0002"
    assert target.read_bytes() == b"v0002"
    # with the lock free, a process writes in place
    subprocess.run([sys.executable, "-c", code.replace("v0002", "v0003")], check=True, capture_output=True)
    assert target.read_bytes() == b"v0003"
