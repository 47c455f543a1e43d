"""SQLiteManifest: the shared manifest suite (on a file and in memory) plus SQLite
specifics: schema versioning, WAL, file mode, query plans, errors."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from skyhop.errors import StoreError
from skyhop.models import ChunkState, ObjectState
from skyhop.state.sqlite import SCHEMA_VERSION, SQLiteManifest
from tests.suites.manifest_suite import ManifestSuite, layout, make_job


class TestSQLiteManifestSuite(ManifestSuite):
    @pytest.fixture
    def manifest(self, tmp_path: Path):
        # a small page size so that every iterator crosses page boundaries
        with SQLiteManifest(tmp_path / "manifest.db", page_size=7, batch_size=50) as store:
            yield store


class TestSQLiteMemoryManifestSuite(ManifestSuite):
    many_chunks = 300

    @pytest.fixture
    def manifest(self):
        with SQLiteManifest(":memory:", page_size=7) as store:
            yield store


def test_default_path_is_the_skyhop_home_manifest(skyhop_home: Path):
    with SQLiteManifest() as store:
        assert Path(store.path) == skyhop_home / "manifest.db"
        store.create_job(make_job("j-home"))
    with SQLiteManifest() as store:
        assert store.get_job("j-home") is not None


def test_new_file_is_private_and_in_wal_mode(tmp_path: Path):
    path = tmp_path / "sub" / "m.db"
    with SQLiteManifest(path) as store:
        store.create_job(make_job("j-1"))
        assert store.schema_version == SCHEMA_VERSION
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_reopening_keeps_records(tmp_path: Path):
    path = tmp_path / "m.db"
    with SQLiteManifest(path) as store:
        store.create_job(make_job("j-keep"))
        entries, chunks = layout("j-keep")
        store.put_objects(entries)
        store.put_chunks(chunks)
        store.transition_chunk("j-keep", 3, expect={ChunkState.PENDING}, to=ChunkState.VERIFIED)
    with SQLiteManifest(path) as store:
        assert store.get_chunk("j-keep", 3).state == ChunkState.VERIFIED
        assert store.progress("j-keep").bytes_verified == 100


def test_newer_schema_is_refused(tmp_path: Path):
    path = tmp_path / "future.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="schema version 2.*upgrade skyhop"):
        SQLiteManifest(path)


def test_a_file_that_is_not_a_database_is_one_line_store_error(tmp_path: Path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError) as info:
        SQLiteManifest(path)
    assert str(info.value).startswith(f"manifest {path}")
    assert "\n" not in str(info.value)


def test_unwritable_location_is_a_store_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create manifest"):
        SQLiteManifest(blocker / "m.db")


def test_reads_of_one_job_use_its_index_ranges_never_a_scan(tmp_path: Path):
    """Capture the statements the store really runs and ask SQLite how it plans them."""
    path = tmp_path / "plan.db"
    with SQLiteManifest(path, page_size=10) as store:
        for j in range(3):
            store.create_job(make_job(f"j-{j}"))
            entries, chunks = layout(f"j-{j}", objects=50, chunks_per=4)
            store.put_objects(entries)
            store.put_chunks(chunks)
        for cid in range(0, 150):
            store.transition_chunk("j-1", cid, expect={ChunkState.PENDING}, to=ChunkState.VERIFIED)
        statements: list[str] = []
        store._connection().set_trace_callback(statements.append)
        assert len(list(store.iter_chunks("j-1", {ChunkState.PENDING}))) == 50
        assert len(list(store.iter_chunks("j-1", {ChunkState.PENDING, ChunkState.FAILED}))) == 50
        assert len(list(store.iter_chunks("j-1", object_id=3))) == 4
        assert len(list(store.iter_objects("j-1", {ObjectState.PENDING}))) == 50
        assert len(list(store.iter_chunks("j-1"))) == 200
        store.progress("j-1")
        store._connection().set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) >= 6
    raw = sqlite3.connect(path)
    for sql in selects:
        plan = " | ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN" not in plan, (sql, plan)
        assert "job_id=?" in plan.replace(" ", ""), (sql, plan)
    raw.close()


def test_each_thread_gets_its_own_connection(tmp_path: Path):
    with SQLiteManifest(tmp_path / "m.db") as store:
        store.create_job(make_job("j-t"))
        connections: set[int] = set()
        lock = threading.Lock()

        def work() -> None:
            store.get_job("j-t")
            with lock:
                connections.add(id(store._local.conn))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(connections) == 4


def test_closed_manifest_reopens_on_use(tmp_path: Path):
    store = SQLiteManifest(tmp_path / "m.db")
    store.create_job(make_job("j-c"))
    store.close()
    assert store.get_job("j-c") is not None
    store.close()


# ---------------------------------------------------------------- batches (issue 21 item 13)


def _other_sees(path: Path, job_id: str, chunk_id: int) -> str:
    raw = sqlite3.connect(path)
    try:
        row = raw.execute(
            "SELECT state FROM chunks WHERE job_id = ? AND chunk_id = ?", (job_id, chunk_id)
        ).fetchone()
        return row[0]
    finally:
        raw.close()


def test_a_batch_is_one_transaction_whose_writes_keep_their_conditions(tmp_path: Path):
    path = tmp_path / "m.db"
    with SQLiteManifest(path) as store:
        store.create_job(make_job("j-b"))
        entries, chunks = layout("j-b")
        store.put_objects(entries)
        store.put_chunks(chunks)
        with store.batch():
            assert store.transition_chunk(
                "j-b", 3, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED
            )
            # the batch's own writes are seen inside it: a duplicate does not apply
            assert not store.transition_chunk(
                "j-b", 3, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED
            )
            assert store.transition_chunk(
                "j-b", 3, expect={ChunkState.DISPATCHED}, to=ChunkState.VERIFIED
            )
            with store.batch():  # nested: joins the outer one
                store.put_chunks(chunks)  # batched inserts join it too (idempotent)
            assert store.get_chunk("j-b", 3).state == ChunkState.VERIFIED
            # nothing is committed yet: another connection still sees it pending
            assert _other_sees(path, "j-b", 3) == "pending"
        assert _other_sees(path, "j-b", 3) == "verified"
        assert store.progress("j-b").bytes_verified == 100


def test_a_batch_ended_by_an_exception_keeps_what_it_applied(tmp_path: Path):
    """Ctrl-C while a round of results is recorded: the results applied stay (a
    resume does not send those chunks again)."""
    path = tmp_path / "m.db"
    with SQLiteManifest(path) as store:
        store.create_job(make_job("j-x"))
        entries, chunks = layout("j-x")
        store.put_objects(entries)
        store.put_chunks(chunks)
        with pytest.raises(KeyboardInterrupt), store.batch():
            store.transition_chunk("j-x", 3, expect={ChunkState.PENDING}, to=ChunkState.VERIFIED)
            raise KeyboardInterrupt
        assert _other_sees(path, "j-x", 3) == "verified"
        # the connection is usable again, outside any transaction
        assert store.transition_chunk(
            "j-x", 4, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED
        )
        assert _other_sees(path, "j-x", 4) == "dispatched"


def test_scrub_inside_a_batch_runs_when_it_commits_and_leaves_no_copy(tmp_path: Path):
    """Blanking a job's credentials inside a round's batch then scrubbing failed with
    "database table is locked" (a WAL checkpoint cannot run in a transaction), which
    ended a full-disk job with that error instead of its reason (CI)."""
    from skyhop.models import JobRuntime
    from skyhop.state.base import Scrubs

    path = tmp_path / "m.db"
    secret = "control-token-" + "9f3a" * 8
    with SQLiteManifest(path) as store:
        assert isinstance(store, Scrubs)
        store.create_job(make_job("j-s"))
        runtime = JobRuntime(control_token=secret, client_key_pem="PRIVATE " + secret)
        store.update_job("j-s", runtime=runtime)
        with store.batch():
            store.update_job("j-s", runtime=runtime.without_secrets())
            store.scrub()  # inside the transaction: deferred, not an error
            assert path.with_name("m.db-wal").stat().st_size > 0
        assert path.with_name("m.db-wal").stat().st_size == 0  # ran at the commit
        assert not store.get_job("j-s").runtime.has_secrets
        for name in ("m.db", "m.db-wal"):
            assert secret.encode() not in path.with_name(name).read_bytes()
