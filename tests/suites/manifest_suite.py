"""The ManifestStore protocol suite: every manifest implementation runs it.

Subclass :class:`ManifestSuite` and supply a ``manifest`` fixture returning an
empty store::

    class TestSQLiteManifest(ManifestSuite):
        @pytest.fixture
        def manifest(self, tmp_path):
            return SQLiteManifest(tmp_path / "manifest.db")

The suite checks outcomes only (records, states, counts), never timings or a
backend's layout; backend-specific checks belong in the implementation's own
test module.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from skyhop.errors import ConflictError, NotFoundError, SkyhopError, UsageError
from skyhop.models import (
    Chunk,
    ChunkState,
    CostEstimate,
    Edge,
    Gateway,
    Job,
    JobState,
    ObjectEntry,
    ObjectState,
    RoutePlan,
    TransferOptions,
    TransferRequest,
)
from skyhop.state.base import JobProgress, ManifestStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

PENDING = ChunkState.PENDING
DISPATCHED = ChunkState.DISPATCHED
VERIFIED = ChunkState.VERIFIED
FAILED = ChunkState.FAILED


def make_job(job_id: str | None = None, **fields: Any) -> Job:
    request = TransferRequest(
        source="s3://src-bucket/data/",
        destination="gs://dst-bucket/copy/",
        options=TransferOptions(recursive=True, connections=16, relays=["aws:us-west-2"]),
    )
    if job_id is not None:
        fields["job_id"] = job_id
    return Job(request=request, **fields)


def make_plan() -> RoutePlan:
    return RoutePlan(
        planner="direct",
        src_region="aws:us-east-1",
        dst_region="gcp:us-central1",
        gateways=[
            Gateway(region="aws:us-east-1", count=2, role="source"),
            Gateway(region="gcp:us-central1", count=2, role="destination"),
        ],
        edges=[Edge(src="aws:us-east-1", dst="gcp:us-central1", gbps=4.25, connections=32)],
        path=["aws:us-east-1", "gcp:us-central1"],
        throughput_gbps=4.25,
        bytes=10**12,
        seconds=1882.35,
        cost=CostEstimate(egress_usd=90.0, vm_usd=1.5, requests_usd=0.04),
        notes=["a note"],
    )


def layout(
    job_id: str, objects: int = 3, chunks_per: int = 2, length: int = 100
) -> tuple[list[ObjectEntry], list[Chunk]]:
    """``objects`` objects of ``chunks_per`` chunks of ``length`` bytes; dense ids."""
    entries: list[ObjectEntry] = []
    chunks: list[Chunk] = []
    for o in range(objects):
        entries.append(
            ObjectEntry(
                job_id=job_id,
                object_id=o,
                src_key=f"data/file-{o:04d}",
                dst_key=f"copy/file-{o:04d}",
                size=chunks_per * length,
                src_etag=f"etag-{o}",
                mtime=1_700_000_000.5 + o,
                chunk_size=length,
                n_chunks=chunks_per,
                multipart=chunks_per > 1,
            )
        )
        for i in range(chunks_per):
            chunks.append(
                Chunk(
                    job_id=job_id,
                    chunk_id=o * chunks_per + i,
                    object_id=o,
                    index=i,
                    offset=i * length,
                    length=length,
                )
            )
    return entries, chunks


def nonzero(progress: JobProgress) -> dict[ChunkState, int]:
    return {state: n for state, n in progress.chunks.items() if n}


class ManifestSuite:
    """Tests every ManifestStore must pass. Needs a ``manifest`` fixture."""

    #: records written by the paging tests (more than one page of any backend);
    #: lower it, together with a small page size, for slow emulators
    many_chunks: ClassVar[int] = 1234
    #: run the race test (threads contending for the same transitions). Set False
    #: only for an emulator whose conditional writes are not atomic across
    #: concurrent requests (moto's DynamoDB is not), never for a real backend.
    race_test: ClassVar[bool] = True

    @pytest.fixture
    def job(self, manifest) -> Job:
        """A created job with 3 objects of 2 chunks of 100 bytes."""
        job = make_job("j-suite", objects_total=3, bytes_total=600, chunks_total=6)
        manifest.create_job(job)
        entries, chunks = layout(job.job_id)
        manifest.put_objects(entries)
        manifest.put_chunks(chunks)
        return job

    # ------------------------------------------------------------ jobs

    def test_is_a_manifest_store(self, manifest):
        assert isinstance(manifest, ManifestStore)

    def test_job_round_trip(self, manifest):
        job = make_job("j-round", plan=make_plan(), created_at=T0, updated_at=T0, error=None)
        manifest.create_job(job)
        got = manifest.get_job("j-round")
        assert got == job
        assert got.request.options.relays == ["aws:us-west-2"]
        assert got.plan.cost.total_usd == pytest.approx(91.54)

    def test_missing_job_is_none(self, manifest):
        assert manifest.get_job("j-nope") is None

    def test_duplicate_job_conflicts_and_keeps_the_first(self, manifest):
        manifest.create_job(make_job("j-dup", objects_total=1))
        with pytest.raises(ConflictError):
            manifest.create_job(make_job("j-dup", objects_total=99))
        assert manifest.get_job("j-dup").objects_total == 1

    def test_list_jobs_newest_first(self, manifest):
        for i in range(4):
            manifest.create_job(make_job(f"j-{i}", created_at=T0 + timedelta(seconds=i)))
        assert [j.job_id for j in manifest.list_jobs()] == ["j-3", "j-2", "j-1", "j-0"]
        assert [j.job_id for j in manifest.list_jobs(limit=2)] == ["j-3", "j-2"]
        assert manifest.list_jobs(limit=0) == []

    def test_update_job_sets_fields(self, manifest):
        manifest.create_job(make_job("j-up", created_at=T0, updated_at=T0))
        plan = make_plan()
        out = manifest.update_job(
            "j-up", state=JobState.PLANNED, plan=plan, objects_total=7, bytes_total=700
        )
        assert out.state == JobState.PLANNED
        assert out.plan == plan
        assert (out.objects_total, out.bytes_total) == (7, 700)
        assert out.updated_at > T0
        assert out.created_at == T0
        assert manifest.get_job("j-up") == out

    def test_update_job_accepts_plain_values(self, manifest):
        manifest.create_job(make_job("j-plain"))
        out = manifest.update_job("j-plain", state="running", plan=make_plan().model_dump())
        assert out.state == JobState.RUNNING
        assert out.plan == make_plan()

    def test_update_job_is_conditional(self, manifest):
        manifest.create_job(make_job("j-cond"))
        manifest.update_job("j-cond", expect={JobState.CREATED}, state=JobState.PLANNED)
        with pytest.raises(ConflictError):
            manifest.update_job(
                "j-cond", expect={JobState.CREATED}, state=JobState.RUNNING, error="x"
            )
        got = manifest.get_job("j-cond")
        assert got.state == JobState.PLANNED and got.error is None
        out = manifest.update_job(
            "j-cond", expect={JobState.PLANNED, JobState.INTERRUPTED}, state=JobState.RUNNING
        )
        assert out.state == JobState.RUNNING

    def test_update_job_compare_and_swap(self, manifest):
        manifest.create_job(make_job("j-cas", created_at=T0, updated_at=T0))
        read = manifest.get_job("j-cas")
        out = manifest.update_job("j-cas", expect_updated_at=read.updated_at, objects_total=1)
        assert out.objects_total == 1 and out.updated_at > read.updated_at
        # a second writer that read the same version loses, and writes nothing
        with pytest.raises(ConflictError):
            manifest.update_job("j-cas", expect_updated_at=read.updated_at, objects_total=2)
        assert manifest.get_job("j-cas") == out
        # state and version conditions together
        with pytest.raises(ConflictError):
            manifest.update_job(
                "j-cas", expect={JobState.RUNNING}, expect_updated_at=out.updated_at, error="x"
            )
        assert manifest.get_job("j-cas") == out
        with pytest.raises(NotFoundError):
            manifest.update_job("j-ghost", expect_updated_at=T0, objects_total=1)

    def test_concurrent_read_modify_writes_lose_no_update(self, manifest):
        if not self.race_test:
            pytest.skip("the emulator does not make concurrent conditional writes atomic")
        manifest.create_job(make_job("j-rmw"))
        rounds, workers = 5, 4

        def bump(_worker: int) -> int:
            conflicts = 0
            for _ in range(rounds):
                while True:
                    job = manifest.get_job("j-rmw")
                    try:
                        manifest.update_job(
                            "j-rmw",
                            expect_updated_at=job.updated_at,
                            objects_total=job.objects_total + 1,
                        )
                        break
                    except ConflictError:
                        conflicts += 1
            return conflicts

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(bump, range(workers)))
        assert manifest.get_job("j-rmw").objects_total == rounds * workers

    def test_update_missing_job_is_not_found(self, manifest):
        with pytest.raises(NotFoundError):
            manifest.update_job("j-ghost", state=JobState.RUNNING)
        with pytest.raises(NotFoundError):
            manifest.update_job("j-ghost", expect={JobState.CREATED}, state=JobState.RUNNING)

    def test_update_job_rejects_bad_fields_without_writing(self, manifest):
        job = make_job("j-bad", created_at=T0, updated_at=T0)
        manifest.create_job(job)
        for fields in (
            {"no_such_field": 1},
            {"created_at": "not a time"},
            {"state": "bogus"},
            {"objects_total": "many"},
        ):
            with pytest.raises(SkyhopError):
                manifest.update_job("j-bad", **fields)
        assert manifest.get_job("j-bad") == job

    # ------------------------------------------------------------ objects and chunks

    def test_objects_and_chunks_round_trip(self, manifest, job):
        entries, chunks = layout(job.job_id)
        for entry in entries:
            assert manifest.get_object(job.job_id, entry.object_id) == entry
        for chunk in chunks:
            assert manifest.get_chunk(job.job_id, chunk.chunk_id) == chunk
        assert manifest.get_object(job.job_id, 99) is None
        assert manifest.get_chunk(job.job_id, 99) is None
        assert manifest.get_object("j-other", 0) is None
        assert manifest.get_chunk("j-other", 0) is None

    def test_puts_are_idempotent_and_keep_existing_records(self, manifest, job):
        assert manifest.transition_chunk(job.job_id, 0, expect={PENDING}, to=DISPATCHED)
        assert manifest.update_object(job.job_id, 0, upload_id="up-1")
        entries, chunks = layout(job.job_id)
        manifest.put_objects(entries)  # a resumed listing writes the same records again
        manifest.put_chunks(chunks)
        assert manifest.get_chunk(job.job_id, 0).state == DISPATCHED
        assert manifest.get_object(job.job_id, 0).upload_id == "up-1"
        assert len(list(manifest.iter_chunks(job.job_id))) == 6
        progress = manifest.progress(job.job_id)
        assert progress.objects_total == 3
        assert nonzero(progress) == {PENDING: 5, DISPATCHED: 1}

    def test_puts_accept_generators_and_empty_input(self, manifest):
        manifest.create_job(make_job("j-gen"))
        entries, chunks = layout("j-gen", objects=2)
        manifest.put_objects(e for e in entries)
        manifest.put_chunks(c for c in chunks)
        manifest.put_objects([])
        manifest.put_chunks(iter(()))
        assert [o.object_id for o in manifest.iter_objects("j-gen")] == [0, 1]
        assert [c.chunk_id for c in manifest.iter_chunks("j-gen")] == [0, 1, 2, 3]

    # ------------------------------------------------------------ transitions

    def test_transition_applies_once(self, manifest, job):
        jid = job.job_id
        at = T0 + timedelta(minutes=5)
        assert manifest.transition_chunk(
            jid, 2, expect={PENDING}, to=DISPATCHED, attempts=1, dispatched_at=at
        )
        assert not manifest.transition_chunk(jid, 2, expect={PENDING}, to=DISPATCHED, attempts=2)
        assert manifest.transition_chunk(
            jid, 2, expect={DISPATCHED}, to=VERIFIED, crc32c="0a1b2c3d", part_etag="pe-2"
        )
        # the same verification event delivered twice
        assert not manifest.transition_chunk(
            jid, 2, expect={DISPATCHED}, to=VERIFIED, crc32c="ffffffff"
        )
        # a late failure of an earlier attempt
        assert not manifest.transition_chunk(
            jid, 2, expect={PENDING, DISPATCHED}, to=FAILED, error="timeout"
        )
        chunk = manifest.get_chunk(jid, 2)
        assert chunk.state == VERIFIED
        assert (chunk.crc32c, chunk.part_etag, chunk.attempts) == ("0a1b2c3d", "pe-2", 1)
        assert chunk.dispatched_at == at
        assert chunk.error is None
        # the chunk's identity and range never change
        assert (chunk.object_id, chunk.index, chunk.offset, chunk.length) == (1, 0, 0, 100)

    def test_reordered_events_change_nothing(self, manifest, job):
        jid = job.job_id
        # the verification overtakes the dispatch record
        assert manifest.transition_chunk(
            jid, 3, expect={PENDING, DISPATCHED}, to=VERIFIED, crc32c="00000001"
        )
        assert not manifest.transition_chunk(jid, 3, expect={PENDING}, to=DISPATCHED, attempts=1)
        chunk = manifest.get_chunk(jid, 3)
        assert chunk.state == VERIFIED and chunk.attempts == 0 and chunk.crc32c == "00000001"

    def test_failed_chunks_can_be_retried(self, manifest, job):
        jid = job.job_id
        assert manifest.transition_chunk(jid, 0, expect={PENDING}, to=DISPATCHED, attempts=1)
        assert manifest.transition_chunk(jid, 0, expect={DISPATCHED}, to=FAILED, error="reset")
        assert manifest.transition_chunk(
            jid, 0, expect={FAILED}, to=PENDING, error=None, attempts=1
        )
        chunk = manifest.get_chunk(jid, 0)
        assert chunk.state == PENDING and chunk.error is None and chunk.attempts == 1

    def test_a_verified_chunk_is_final(self, manifest, job):
        """The write rules (skyhop.state.rules) hold in every store: no transition
        leaves verified (asking for one is a bug of the caller), and nothing is written."""
        jid = job.job_id
        assert manifest.transition_chunk(
            jid, 1, expect={PENDING}, to=VERIFIED, crc32c="0a1b2c3d", part_etag="pe-1"
        )
        for to in (PENDING, DISPATCHED, FAILED):
            with pytest.raises(UsageError, match="may not go from verified"):
                manifest.transition_chunk(jid, 1, expect={VERIFIED}, to=to, error="x")
        chunk = manifest.get_chunk(jid, 1)
        assert chunk.state == VERIFIED and chunk.error is None
        assert (chunk.crc32c, chunk.part_etag) == ("0a1b2c3d", "pe-1")

    def test_transition_of_missing_chunk_is_false(self, manifest, job):
        assert not manifest.transition_chunk(job.job_id, 999, expect={PENDING}, to=DISPATCHED)
        assert not manifest.transition_chunk("j-ghost", 0, expect={PENDING}, to=DISPATCHED)

    def test_transition_rejects_bad_fields_without_writing(self, manifest, job):
        jid = job.job_id
        before = manifest.get_chunk(jid, 1)
        for fields in (
            {"state": VERIFIED},
            {"no_such_field": 1},
            {"object_id": 7},
            {"attempts": "many"},
            {"offset": -5},
        ):
            with pytest.raises(SkyhopError):
                manifest.transition_chunk(jid, 1, expect={PENDING}, to=DISPATCHED, **fields)
        assert manifest.get_chunk(jid, 1) == before

    def test_update_object_is_conditional(self, manifest, job):
        jid = job.job_id
        assert manifest.update_object(jid, 1, upload_id="up-1")
        assert manifest.update_object(
            jid, 1, expect={ObjectState.PENDING}, state=ObjectState.VERIFIED, crc32c="deadbeef"
        )
        assert not manifest.update_object(
            jid, 1, expect={ObjectState.PENDING}, state=ObjectState.FAILED, error="late"
        )
        entry = manifest.get_object(jid, 1)
        assert entry.state == ObjectState.VERIFIED
        assert (entry.upload_id, entry.crc32c, entry.error) == ("up-1", "deadbeef", None)
        assert entry.src_key == "data/file-0001" and entry.size == 200
        assert not manifest.update_object(jid, 42, state=ObjectState.FAILED)
        assert not manifest.update_object("j-ghost", 1, state=ObjectState.FAILED)

    def test_update_object_rejects_bad_fields_without_writing(self, manifest, job):
        before = manifest.get_object(job.job_id, 0)
        for fields in ({"nope": 1}, {"size": -1}, {"state": "lost"}):
            with pytest.raises(SkyhopError):
                manifest.update_object(job.job_id, 0, **fields)
        assert manifest.get_object(job.job_id, 0) == before

    def test_concurrent_transitions_apply_exactly_once(self, manifest):
        if not self.race_test:
            pytest.skip("the emulator does not make concurrent conditional writes atomic")
        manifest.create_job(make_job("j-race"))
        entries, chunks = layout("j-race", objects=10, chunks_per=4)
        manifest.put_objects(entries)
        manifest.put_chunks(chunks)
        wins: list[int] = []
        lock = threading.Lock()

        def contend(worker: int) -> None:
            for chunk in chunks:
                if manifest.transition_chunk(
                    "j-race", chunk.chunk_id, expect={PENDING}, to=DISPATCHED, attempts=worker
                ):
                    with lock:
                        wins.append(chunk.chunk_id)

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(contend, range(1, 7)))
        assert sorted(wins) == [c.chunk_id for c in chunks]
        assert nonzero(manifest.progress("j-race")) == {DISPATCHED: 40}

    # ------------------------------------------------------------ iteration

    def test_iter_objects_in_id_order_with_state_filter(self, manifest):
        manifest.create_job(make_job("j-it"))
        entries, _ = layout("j-it", objects=12, chunks_per=1)
        manifest.put_objects(reversed(entries))
        for oid in (1, 4, 7):
            manifest.update_object("j-it", oid, state=ObjectState.VERIFIED)
        for oid in (2, 7, 11):
            manifest.update_object("j-it", oid, state=ObjectState.FAILED)

        def ids(states: set[ObjectState] | None = None) -> list[int]:
            return [o.object_id for o in manifest.iter_objects("j-it", states)]

        assert ids() == list(range(12))
        assert ids({ObjectState.VERIFIED}) == [1, 4]
        assert ids({ObjectState.FAILED}) == [2, 7, 11]
        assert ids({ObjectState.VERIFIED, ObjectState.FAILED}) == [1, 2, 4, 7, 11]
        assert ids({ObjectState.PENDING}) == [0, 3, 5, 6, 8, 9, 10]

    def test_iter_chunks_by_state_and_object(self, manifest, job):
        jid = job.job_id
        manifest.transition_chunk(jid, 1, expect={PENDING}, to=DISPATCHED)
        manifest.transition_chunk(jid, 4, expect={PENDING}, to=VERIFIED)
        manifest.transition_chunk(jid, 5, expect={PENDING}, to=FAILED)

        def ids(states: set[ChunkState] | None = None, object_id: int | None = None) -> list[int]:
            return [c.chunk_id for c in manifest.iter_chunks(jid, states, object_id)]

        assert ids() == [0, 1, 2, 3, 4, 5]
        assert ids({PENDING}) == [0, 2, 3]
        assert ids({PENDING, DISPATCHED, FAILED}) == [0, 1, 2, 3, 5]
        assert ids(object_id=2) == [4, 5]
        assert ids({VERIFIED}, object_id=2) == [4]
        assert ids({PENDING}, object_id=2) == []
        assert ids(object_id=9) == []
        assert [c.index for c in manifest.iter_chunks(jid, object_id=1)] == [0, 1]

    def test_iteration_pages_through_many_records(self, manifest):
        n = self.many_chunks
        manifest.create_job(make_job("j-many"))
        entries, chunks = layout("j-many", objects=n, chunks_per=1, length=10)
        manifest.put_objects(entries)
        manifest.put_chunks(chunks)
        for cid in range(0, n, 3):
            manifest.transition_chunk("j-many", cid, expect={PENDING}, to=VERIFIED)
        assert [o.object_id for o in manifest.iter_objects("j-many")] == list(range(n))
        assert [c.chunk_id for c in manifest.iter_chunks("j-many")] == list(range(n))
        verified = [c.chunk_id for c in manifest.iter_chunks("j-many", {VERIFIED})]
        assert verified == list(range(0, n, 3))
        pending = [c.chunk_id for c in manifest.iter_chunks("j-many", {PENDING})]
        assert pending == [i for i in range(n) if i % 3]
        progress = manifest.progress("j-many")
        assert progress.bytes_verified == 10 * len(verified)
        assert nonzero(progress) == {VERIFIED: len(verified), PENDING: len(pending)}

    def test_iterating_pending_while_dispatching_sees_each_chunk_once(self, manifest):
        n = self.many_chunks
        manifest.create_job(make_job("j-live"))
        _, chunks = layout("j-live", objects=n, chunks_per=1, length=10)
        manifest.put_chunks(chunks)
        seen: list[int] = []
        for chunk in manifest.iter_chunks("j-live", {PENDING}):
            seen.append(chunk.chunk_id)
            assert manifest.transition_chunk(
                "j-live", chunk.chunk_id, expect={PENDING}, to=DISPATCHED
            )
        assert seen == list(range(n))
        assert list(manifest.iter_chunks("j-live", {PENDING})) == []

    # ------------------------------------------------------------ progress

    def test_progress_counts(self, manifest, job):
        jid = job.job_id
        progress = manifest.progress(jid)
        assert (progress.objects_total, progress.bytes_total) == (3, 600)
        assert (progress.objects_verified, progress.objects_failed) == (0, 0)
        assert progress.bytes_verified == 0
        assert nonzero(progress) == {PENDING: 6}

        for cid in (0, 1, 2):
            manifest.transition_chunk(jid, cid, expect={PENDING}, to=DISPATCHED)
        for cid in (0, 1):
            manifest.transition_chunk(jid, cid, expect={DISPATCHED}, to=VERIFIED)
        manifest.transition_chunk(jid, 0, expect={DISPATCHED}, to=VERIFIED)  # duplicate
        manifest.update_object(jid, 0, expect={ObjectState.PENDING}, state=ObjectState.VERIFIED)
        manifest.update_object(jid, 2, expect={ObjectState.PENDING}, state=ObjectState.FAILED)

        progress = manifest.progress(jid)
        assert (progress.objects_total, progress.bytes_total) == (3, 600)
        assert (progress.objects_verified, progress.objects_failed) == (1, 1)
        assert progress.bytes_verified == 200
        assert nonzero(progress) == {PENDING: 3, DISPATCHED: 1, VERIFIED: 2}

    def test_progress_of_an_empty_job(self, manifest):
        manifest.create_job(make_job("j-empty"))
        progress = manifest.progress("j-empty")
        assert progress.objects_total == progress.bytes_total == progress.bytes_verified == 0
        assert nonzero(progress) == {}

    # ------------------------------------------------------------ isolation and deletion

    def test_two_jobs_are_isolated(self, manifest, job):
        other = make_job("j-other")
        manifest.create_job(other)
        entries, chunks = layout("j-other", objects=2, chunks_per=1, length=7)
        manifest.put_objects(entries)
        manifest.put_chunks(chunks)
        # the same ids exist in both jobs
        assert manifest.transition_chunk("j-other", 0, expect={PENDING}, to=VERIFIED)
        assert manifest.get_chunk(job.job_id, 0).state == PENDING
        assert manifest.update_object("j-other", 0, state=ObjectState.FAILED)
        assert manifest.get_object(job.job_id, 0).state == ObjectState.PENDING
        assert [c.chunk_id for c in manifest.iter_chunks("j-other")] == [0, 1]
        assert [c.job_id for c in manifest.iter_chunks(job.job_id)] == [job.job_id] * 6
        assert manifest.progress("j-other").bytes_total == 14
        assert manifest.progress(job.job_id).bytes_total == 600

        manifest.delete_job("j-other")
        assert manifest.get_job(job.job_id) == job
        assert len(list(manifest.iter_chunks(job.job_id))) == 6
        assert len(list(manifest.iter_objects(job.job_id))) == 3

    def test_delete_job_removes_every_record_and_is_idempotent(self, manifest, job):
        jid = job.job_id
        manifest.delete_job(jid)
        assert manifest.get_job(jid) is None
        assert manifest.get_object(jid, 0) is None
        assert manifest.get_chunk(jid, 0) is None
        assert list(manifest.iter_objects(jid)) == []
        assert list(manifest.iter_chunks(jid)) == []
        assert manifest.progress(jid).objects_total == 0
        assert jid not in [j.job_id for j in manifest.list_jobs()]
        manifest.delete_job(jid)
        manifest.delete_job("j-never-existed")
        # the id can be used again
        manifest.create_job(make_job(jid))
        assert manifest.get_job(jid).state == JobState.CREATED
