"""PostgreSQL lost in the middle of a read: a TCP proxy between the reader and the shared server forwards the
traffic, cuts the connection after some kilobytes of the result, and then refuses new connections (the server
"down"). The reader retries, then raises SourceUnavailable naming host and port (never the password); nothing
is registered and the run's manifest says failed. The shared server itself is never stopped."""

from __future__ import annotations

import json
import socket
import threading
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.job import run_job
from records import readers
from records.errors import Retry, SourceUnavailable
from pipelines.ingest import run_ingest
from records.readers import read_source
from workspace.ledger import load_ledger
from workspace.registry import read_registry_table, registry_root
from records.schema import PROCEDURES
from tests.conftest import AS_OF_YEAR, make_batch

ROWS = 50_000
CUT_AFTER_BYTES = 256 * 1024  # well into the ~5 MB of the procedures table, far past start-up and the table list
FAST = Retry(attempts=3, delays=(0.05, 0.1))
PASSWORD = "s3cret-not-shown"


class CuttingProxy:
    """Forwards 127.0.0.1:<port> to the PostgreSQL server; after ``cut_after`` bytes server -> client it closes
    both sides and stops listening, so later connections are refused."""

    def __init__(self, upstream: tuple[str, int], *, cut_after: int | None) -> None:
        self.upstream, self.cut_after = upstream, cut_after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.forwarded = 0
        self.cut = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut.is_set():
                client.close()
                return
            server = socket.create_connection(self.upstream)
            with self._lock:
                self.accepted += 1
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                if to_client and self.cut_after is not None:
                    with self._lock:
                        room = self.cut_after - self.forwarded
                        self.forwarded += len(data)
                    if room <= len(data):
                        dst.sendall(data[:max(room, 0)])
                        self.down()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        """Cut every connection and stop listening: the server is gone."""
        self.cut.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(): the port refuses from now on
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def url(self, base_url, schema: str) -> str:
        proxied = base_url.set(host="127.0.0.1", port=self.port, password=PASSWORD)
        return f"{proxied.render_as_string(hide_password=False)}?options=-csearch_path%3D{schema}"


@pytest.fixture(scope="module")
def big_source(request):
    """A schema of the shared server holding ``procedures`` (ROWS rows, ~5 MB, batch 2: above the first night's
    watermark, so a night reads them all) and ``levels``; dropped after."""
    import os

    import sqlalchemy as sa

    url = os.environ.get("CEMENTRISK_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must set CEMENTRISK_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("no PostgreSQL: set CEMENTRISK_TEST_POSTGRES_URL to run this test")
    schema = f"t_outage_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
        connection.execute(sa.text(
            f"CREATE TABLE {schema}.procedures AS SELECT 'P' || lpad(g::text, 6, '0') AS procedure_id, "
            f"2 AS extract_batch, repeat('x', 80) AS padding FROM generate_series(1, {ROWS}) AS g"))
        connection.execute(sa.text(
            f"CREATE TABLE {schema}.levels AS SELECT procedure_id, 'l1' AS vertebra FROM {schema}.procedures"))
    yield sa.engine.make_url(url), schema
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def _upstream(base_url) -> tuple[str, int]:
    return base_url.host or "127.0.0.1", base_url.port or 5432


def test_the_proxy_forwards_a_whole_read(big_source):
    base_url, schema = big_source
    proxy = CuttingProxy(_upstream(base_url), cut_after=None)
    try:
        raw = read_source(proxy.url(base_url, schema), retry=FAST)
    finally:
        proxy.down()
    assert len(raw.procedures) == ROWS and len(raw.levels) == ROWS and proxy.accepted == 1


def test_a_connection_cut_mid_transfer_then_refused_is_source_unavailable_after_the_retries(big_source):
    base_url, schema = big_source
    proxy = CuttingProxy(_upstream(base_url), cut_after=CUT_AFTER_BYTES)
    with pytest.raises(SourceUnavailable) as caught:
        read_source(proxy.url(base_url, schema), retry=FAST)
    message = str(caught.value)
    assert proxy.cut.is_set() and proxy.accepted == 1  # cut mid-read; the two retries were refused
    assert f"host 127.0.0.1, port {proxy.port}" in message
    assert "gave up after 3 attempts" in message
    assert "attempt 1: the connection was lost while reading table procedures" in message
    assert "attempts 2, 3: could not connect" in message and "refused" in message.lower()
    assert PASSWORD not in message and "***" in message


def test_a_read_cut_mid_transfer_is_never_returned_in_part(big_source):
    """One attempt: the cut itself surfaces, as the connection lost while reading the table."""
    base_url, schema = big_source
    proxy = CuttingProxy(_upstream(base_url), cut_after=CUT_AFTER_BYTES)
    with pytest.raises(SourceUnavailable, match="connection was lost while reading table procedures") as caught:
        read_source(proxy.url(base_url, schema), retry=Retry(attempts=1))
    assert PASSWORD not in str(caught.value) and proxy.forwarded >= CUT_AFTER_BYTES


def test_a_run_whose_database_goes_down_mid_read_registers_nothing_and_fails(big_source, tmp_path,
                                                                             monkeypatch):
    base_url, schema = big_source
    monkeypatch.setattr(readers, "SOURCE_RETRY", FAST)  # the plain job's read uses the default policy
    workspace = tmp_path / "ws"
    first = tmp_path / "night1"
    first.mkdir()
    for name, frame in make_batch(4).tables().items():
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), first / f"{name}.parquet")
    run_ingest(first, workspace, run_id="night-1", as_of_year=AS_OF_YEAR)
    state_before = (registry_root(workspace) / "ledger.json").read_bytes()
    rows_before = read_registry_table(workspace, PROCEDURES)

    proxy = CuttingProxy(_upstream(base_url), cut_after=CUT_AFTER_BYTES)
    with pytest.raises(SourceUnavailable, match="cannot reach database"):
        run_job(proxy.url(base_url, schema), workspace, run_id="night-2", train=False, as_of_year=AS_OF_YEAR)

    assert (registry_root(workspace) / "ledger.json").read_bytes() == state_before
    assert sorted(load_ledger(workspace).batches) == [1]
    assert read_registry_table(workspace, PROCEDURES).equals(rows_before)
    manifest = json.loads((workspace / "runs" / "night-2" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["reason"].startswith("SourceUnavailable: cannot reach database")
    assert f"port {proxy.port}" in manifest["reason"] and "gave up after 3 attempts" in manifest["reason"]
    assert PASSWORD not in json.dumps(manifest)
    assert manifest["batches_loaded"] == [] and manifest["tables"]["procedures"]["rows_in"] == 0
    assert not (workspace / ".staging").exists()
    assert sorted(p.name for p in (registry_root(workspace) / "procedures").iterdir()) == ["extract_batch=1"]
