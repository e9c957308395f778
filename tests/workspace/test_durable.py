"""Durable writes: whole or not at all, no temporary file left, transient errors retried, a full disk not."""

from __future__ import annotations

import errno

import pytest

import workspace.durable as durable
import records.errors as errors
from records.errors import Retry


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    durable.write_durable(target, b"old")

    def broken_fsync(fd):
        raise OSError(errno.EIO, "input/output error")

    monkeypatch.setattr(durable.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        durable.write_durable(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_durably_retries_transient_errors_only(tmp_path, monkeypatch):
    monkeypatch.setattr(errors, "WRITE_RETRY", Retry(attempts=3, delays=(0.0,)))
    real, failures = durable.write_durable, [errno.ESTALE, errno.EIO]

    def flaky(path, data):
        if failures:
            raise OSError(failures.pop(0), "flaky share")
        return real(path, data)

    monkeypatch.setattr(durable, "write_durable", flaky)
    durable.write_durably(tmp_path / "a" / "part.csv", b"rows")
    assert (tmp_path / "a" / "part.csv").read_bytes() == b"rows" and not failures

    failures[:] = [errno.ENOSPC]
    with pytest.raises(OSError) as full:
        durable.write_durably(tmp_path / "b.csv", b"rows")
    assert full.value.errno == errno.ENOSPC and not (tmp_path / "b.csv").exists()


def test_threads_writing_one_file_never_tear_it(tmp_path):
    import threading

    target = tmp_path / "shared.bin"
    payloads = [bytes([65 + i]) * 200_000 for i in range(4)]
    failures = []

    def write(data):
        try:
            for _ in range(10):
                durable.write_durable(target, data)
        except OSError as error:  # pragma: no cover - the failure this test guards against
            failures.append(error)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]
