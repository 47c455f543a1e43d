"""The DynamoDB manifest against moto in server mode: the shared ManifestStore suite,
then conditional writes, counters, the two GSIs, TTL, and errors that never leak
botocore. moto serves one request at a time here (see tests/fixtures/moto_serial.py)."""

from __future__ import annotations

import time
from typing import Any

import boto3
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
    TransferRequest,
)
from skyhop.state.base import ManifestStore
from skyhop.state.dynamodb import (
    GSI_BY_STATE_PK,
    TTL_ATTRIBUTE,
    DynamoDBManifest,
    create_table,
)
from tests.fixtures import moto_serial as serial
from tests.suites.manifest_suite import ManifestSuite

TABLE = "skyhop-test-manifest"

moto_serial_server = serial.moto_serial_server
moto_serial = serial.moto_serial


class TestDynamoDBManifestSuite(ManifestSuite):
    """The shared ManifestStore suite; small pages so that paging is exercised."""

    many_chunks = 120  # moto copies the table per transaction; 5 pages of 25 still page

    @pytest.fixture
    def manifest(self, moto_serial) -> DynamoDBManifest:
        create_table(TABLE)
        return DynamoDBManifest(TABLE, page_size=25)


@pytest.fixture
def manifest(moto_serial) -> DynamoDBManifest:
    create_table(TABLE)
    return DynamoDBManifest(TABLE)


def _raw() -> Any:
    return boto3.client("dynamodb")


def _snapshot() -> list[dict[str, Any]]:
    """Every item of the table (a test may scan; the store never does)."""
    items = _raw().scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda i: (i["pk"]["S"], i["sk"]["S"]))


def _job(**kw: Any) -> Job:
    return Job(
        request=TransferRequest(source="s3://src-bucket/x", destination="s3://dst-bucket/y"), **kw
    )


def _layout(
    job_id: str, objects: int = 3, chunks_per: int = 2
) -> tuple[list[ObjectEntry], list[Chunk]]:
    entries, chunks = [], []
    cid = 0
    for oid in range(objects):
        entries.append(
            ObjectEntry(
                job_id=job_id,
                object_id=oid,
                src_key=f"k{oid}",
                dst_key=f"d{oid}",
                size=100 * chunks_per,
                chunk_size=100,
                n_chunks=chunks_per,
                multipart=chunks_per > 1,
            )
        )
        for index in range(chunks_per):
            chunks.append(
                Chunk(
                    job_id=job_id,
                    chunk_id=cid,
                    object_id=oid,
                    index=index,
                    offset=index * 100,
                    length=100,
                )
            )
            cid += 1
    return entries, chunks


def _seeded(manifest: DynamoDBManifest, **kw: Any) -> tuple[Job, list[ObjectEntry], list[Chunk]]:
    job = _job()
    manifest.create_job(job)
    entries, chunks = _layout(job.job_id, **kw)
    manifest.put_objects(entries)
    manifest.put_chunks(chunks)
    return job, entries, chunks


def test_is_a_manifest_store(manifest: DynamoDBManifest) -> None:
    assert isinstance(manifest, ManifestStore)


def test_jobs_round_trip_with_plan_and_floats(manifest: DynamoDBManifest) -> None:
    plan = RoutePlan(
        planner="direct",
        src_region="aws:us-east-1",
        dst_region="aws:eu-west-1",
        gateways=[Gateway(region="aws:us-east-1", count=2, role="source")],
        edges=[Edge(src="aws:us-east-1", dst="aws:eu-west-1", gbps=4.75, connections=16)],
        path=["aws:us-east-1", "aws:eu-west-1"],
        throughput_gbps=4.75,
        seconds=12.5,
        cost=CostEstimate(egress_usd=0.02, vm_usd=1.0),
    )
    job = _job(plan=plan, objects_total=3)
    manifest.create_job(job)
    assert manifest.get_job(job.job_id) == job
    assert manifest.get_job("j-missing") is None
    with pytest.raises(ConflictError, match="already exists"):
        manifest.create_job(job)


def test_list_jobs_newest_first(manifest: DynamoDBManifest) -> None:
    ids = []
    for _ in range(3):
        job = _job()
        manifest.create_job(job)
        ids.append(job.job_id)
        time.sleep(0.002)  # distinct created_at; ordering, not timing, is asserted
    assert [j.job_id for j in manifest.list_jobs()] == ids[::-1]
    assert [j.job_id for j in manifest.list_jobs(limit=2)] == ids[::-1][:2]
    assert manifest.list_jobs(limit=0) == []


def test_jobs_by_state(manifest: DynamoDBManifest) -> None:
    jobs = [_job() for _ in range(3)]
    for job in jobs:
        manifest.create_job(job)
    manifest.update_job(jobs[1].job_id, state=JobState.RUNNING)
    manifest.update_job(jobs[2].job_id, state=JobState.SUCCEEDED)
    assert [j.job_id for j in manifest.iter_jobs({JobState.RUNNING})] == [jobs[1].job_id]
    found = {j.job_id for j in manifest.iter_jobs({JobState.CREATED, JobState.SUCCEEDED})}
    assert found == {jobs[0].job_id, jobs[2].job_id}


def test_update_job_is_conditional(manifest: DynamoDBManifest) -> None:
    job = _job()
    manifest.create_job(job)
    updated = manifest.update_job(job.job_id, expect={JobState.CREATED}, state=JobState.PLANNED)
    assert updated.state == JobState.PLANNED and updated.updated_at >= job.updated_at
    assert manifest.get_job(job.job_id) == updated
    before = _snapshot()
    with pytest.raises(ConflictError, match="planned, not created"):
        manifest.update_job(job.job_id, expect={JobState.CREATED}, state=JobState.RUNNING)
    assert _snapshot() == before
    with pytest.raises(NotFoundError, match="j-nope"):
        manifest.update_job("j-nope", state=JobState.RUNNING)
    with pytest.raises(UsageError, match="created_at"):
        manifest.update_job(job.job_id, created_at="yesterday")
    with pytest.raises(UsageError, match="unknown Job field"):
        manifest.update_job(job.job_id, colour="blue")
    with pytest.raises(UsageError, match="state"):
        manifest.update_job(job.job_id, state="sideways")
    assert _snapshot() == before


def test_finished_jobs_get_a_ttl_and_lose_it_when_resumed(manifest: DynamoDBManifest) -> None:
    job = _job()
    manifest.create_job(job)
    key = {"pk": {"S": f"JOB#{job.job_id}"}, "sk": {"S": "JOB"}}
    assert TTL_ATTRIBUTE not in _raw().get_item(TableName=TABLE, Key=key)["Item"]
    manifest.update_job(job.job_id, state=JobState.FAILED, error="boom")
    expires = int(_raw().get_item(TableName=TABLE, Key=key)["Item"][TTL_ATTRIBUTE]["N"])
    assert expires > time.time() + manifest.retention.total_seconds() - 3600
    manifest.update_job(job.job_id, state=JobState.INTERRUPTED)
    assert TTL_ATTRIBUTE not in _raw().get_item(TableName=TABLE, Key=key)["Item"]
    description = _raw().describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert description["AttributeName"] == TTL_ATTRIBUTE
    assert description["TimeToLiveStatus"] == "ENABLED"


def test_puts_are_idempotent_and_keep_existing_records(manifest: DynamoDBManifest) -> None:
    job, entries, chunks = _seeded(manifest)
    assert manifest.transition_chunk(
        job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.VERIFIED, crc32c="abcd0123"
    )
    manifest.put_objects(entries)
    manifest.put_chunks(chunks + chunks[:1])  # duplicates within one call, too
    assert manifest.get_chunk(job.job_id, 0).state == ChunkState.VERIFIED
    progress = manifest.progress(job.job_id)
    assert progress.objects_total == 3
    assert progress.bytes_total == 600
    assert progress.chunks == {ChunkState.PENDING: 5, ChunkState.VERIFIED: 1}
    assert progress.bytes_verified == 100


def test_duplicate_and_reordered_transitions_change_nothing(manifest: DynamoDBManifest) -> None:
    job, _, _ = _seeded(manifest)
    jid = job.job_id
    assert manifest.transition_chunk(
        jid, 2, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts=1
    )
    assert manifest.transition_chunk(
        jid,
        2,
        expect={ChunkState.DISPATCHED, ChunkState.PENDING},
        to=ChunkState.VERIFIED,
        crc32c="0badf00d",
        part_etag='"etag"',
    )
    before = _snapshot()
    # the same chunk_verified event again, a late dispatch, a late failure, a stale retry
    assert not manifest.transition_chunk(
        jid,
        2,
        expect={ChunkState.DISPATCHED, ChunkState.PENDING},
        to=ChunkState.VERIFIED,
        crc32c="ffffffff",
    )
    assert not manifest.transition_chunk(
        jid, 2, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts=2
    )
    assert not manifest.transition_chunk(
        jid, 2, expect={ChunkState.DISPATCHED}, to=ChunkState.FAILED, error="late"
    )
    assert not manifest.transition_chunk(
        jid, 2, expect={ChunkState.DISPATCHED}, to=ChunkState.PENDING, error="stuck"
    )
    assert not manifest.transition_chunk(
        jid, 999, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED
    )
    assert not manifest.transition_chunk(
        "j-other", 2, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED
    )
    assert _snapshot() == before
    chunk = manifest.get_chunk(jid, 2)
    assert (chunk.state, chunk.crc32c, chunk.part_etag, chunk.attempts) == (
        ChunkState.VERIFIED,
        "0badf00d",
        '"etag"',
        1,
    )


def test_a_lost_race_rereads_and_decides_again(manifest: DynamoDBManifest) -> None:
    """Another writer moves the chunk between our read and our conditional write:
    the write's condition fails, the store re-reads, and the transition is refused.

    (Deterministic on purpose: the suite's threaded race may or may not hit the
    window between read and write; this always does.)"""
    job, _, _ = _seeded(manifest, objects=1, chunks_per=1)
    rival = DynamoDBManifest(TABLE)

    class Slow(DynamoDBManifest):
        reads = 0

        def _get(self, pk: str, sk: str, what: str) -> dict[str, Any] | None:
            item = super()._get(pk, sk, what)
            Slow.reads += 1
            if Slow.reads == 1:
                assert rival.transition_chunk(
                    job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts=1
                )
            return item

    slow = Slow(TABLE)
    assert not slow.transition_chunk(
        job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts=9
    )
    assert Slow.reads == 2
    assert manifest.get_chunk(job.job_id, 0).attempts == 1
    assert manifest.progress(job.job_id).chunks == {ChunkState.DISPATCHED: 1}

    # a rival that changes the record but leaves it in an expected state: we apply on top
    Slow.reads = 0
    rival_fields = {"error": "rival"}

    class Slow2(DynamoDBManifest):
        def _get(self, pk: str, sk: str, what: str) -> dict[str, Any] | None:
            item = super()._get(pk, sk, what)
            Slow.reads += 1
            if Slow.reads == 1:
                assert rival.transition_chunk(
                    job.job_id,
                    0,
                    expect={ChunkState.DISPATCHED},
                    to=ChunkState.DISPATCHED,
                    **rival_fields,
                )
            return item

    assert Slow2(TABLE).transition_chunk(
        job.job_id, 0, expect={ChunkState.DISPATCHED}, to=ChunkState.VERIFIED, crc32c="00000001"
    )
    chunk = manifest.get_chunk(job.job_id, 0)
    assert (chunk.state, chunk.error, chunk.crc32c) == (ChunkState.VERIFIED, "rival", "00000001")
    assert manifest.progress(job.job_id).chunks == {ChunkState.VERIFIED: 1}


def test_transition_rejects_bad_fields_without_writing(manifest: DynamoDBManifest) -> None:
    job, _, _ = _seeded(manifest, objects=1, chunks_per=1)
    before = _snapshot()
    with pytest.raises(UsageError, match="unknown Chunk field"):
        manifest.transition_chunk(
            job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, colour=1
        )
    with pytest.raises(UsageError, match="object_id"):
        manifest.transition_chunk(
            job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, object_id=7
        )
    with pytest.raises(UsageError, match="attempts"):
        manifest.transition_chunk(
            job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts="x"
        )
    assert _snapshot() == before


def test_iterating_by_job_state_and_object(manifest: DynamoDBManifest) -> None:
    job, entries, chunks = _seeded(manifest, objects=3, chunks_per=4)
    other, _, _ = _seeded(manifest, objects=2, chunks_per=2)
    jid = job.job_id
    for cid in (1, 5, 9):
        manifest.transition_chunk(jid, cid, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED)
    manifest.transition_chunk(jid, 5, expect={ChunkState.DISPATCHED}, to=ChunkState.VERIFIED)
    manifest.transition_chunk(jid, 10, expect={ChunkState.PENDING}, to=ChunkState.FAILED)

    assert [c.chunk_id for c in manifest.iter_chunks(jid)] == list(range(12))
    assert [c.chunk_id for c in manifest.iter_chunks(jid, {ChunkState.DISPATCHED})] == [1, 9]
    assert [
        c.chunk_id
        for c in manifest.iter_chunks(
            jid, {ChunkState.DISPATCHED, ChunkState.FAILED, ChunkState.VERIFIED}
        )
    ] == [1, 5, 9, 10]
    assert [c.chunk_id for c in manifest.iter_chunks(jid, object_id=1)] == [4, 5, 6, 7]
    assert [c.chunk_id for c in manifest.iter_chunks(jid, {ChunkState.PENDING}, object_id=2)] == [
        8,
        11,
    ]
    assert list(manifest.iter_chunks(jid, {ChunkState.VERIFIED}, object_id=0)) == []
    assert len(list(manifest.iter_chunks(other.job_id))) == 4

    assert manifest.update_object(
        jid, 1, expect={ObjectState.PENDING}, state=ObjectState.VERIFIED, crc32c="01020304"
    )
    assert manifest.update_object(jid, 2, state=ObjectState.FAILED, error="x")
    assert not manifest.update_object(
        jid, 1, expect={ObjectState.PENDING}, state=ObjectState.FAILED
    )
    assert not manifest.update_object(jid, 99, state=ObjectState.FAILED)
    assert [o.object_id for o in manifest.iter_objects(jid)] == [0, 1, 2]
    assert [o.object_id for o in manifest.iter_objects(jid, {ObjectState.PENDING})] == [0]
    assert [
        o.object_id for o in manifest.iter_objects(jid, {ObjectState.FAILED, ObjectState.VERIFIED})
    ] == [1, 2]
    assert manifest.get_object(jid, 1).crc32c == "01020304"
    assert manifest.get_object(jid, 7) is None

    progress = manifest.progress(jid)
    assert (progress.objects_total, progress.objects_verified, progress.objects_failed) == (3, 1, 1)
    assert (progress.bytes_total, progress.bytes_verified) == (1200, 100)
    assert progress.chunks == {
        ChunkState.PENDING: 8,
        ChunkState.DISPATCHED: 2,
        ChunkState.VERIFIED: 1,
        ChunkState.FAILED: 1,
    }


def test_records_the_index_has_not_caught_up_with_are_still_found(
    manifest: DynamoDBManifest,
) -> None:
    """A GSI is eventually consistent; simulate a lagging entry by pointing one
    record's index key at its old state, as the index would briefly show it."""
    job, _, _ = _seeded(manifest, objects=3, chunks_per=1)
    manifest.update_object(job.job_id, 2, state=ObjectState.FAILED, error="checksum differs")
    _raw().update_item(
        TableName=TABLE,
        Key={"pk": {"S": f"JOB#{job.job_id}"}, "sk": {"S": "OBJ#000000000002"}},
        UpdateExpression="SET #g = :old",
        ExpressionAttributeNames={"#g": GSI_BY_STATE_PK},
        ExpressionAttributeValues={":old": {"S": f"JOB#{job.job_id}#OBJ#pending"}},
    )
    failed = list(manifest.iter_objects(job.job_id, {ObjectState.FAILED}))
    assert [(o.object_id, o.error) for o in failed] == [(2, "checksum differs")]


def test_delete_job_removes_every_record(manifest: DynamoDBManifest) -> None:
    job, _, _ = _seeded(manifest, objects=40, chunks_per=1)
    other, _, _ = _seeded(manifest, objects=1, chunks_per=1)
    manifest.delete_job(job.job_id)
    manifest.delete_job(job.job_id)  # idempotent
    assert manifest.get_job(job.job_id) is None
    assert list(manifest.iter_chunks(job.job_id)) == []
    assert manifest.progress(job.job_id).objects_total == 0
    assert {i["pk"]["S"] for i in _snapshot()} == {f"JOB#{other.job_id}"}


def test_missing_table_is_one_line_not_botocore(moto_serial) -> None:
    store = DynamoDBManifest("no-such-table")
    with pytest.raises(NotFoundError) as info:
        store.get_job("j-1")
    assert "no-such-table" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SkyhopError):
        store.create_job(_job())


def test_create_table_is_idempotent(moto_serial) -> None:
    create_table(TABLE)
    create_table(TABLE)
    table = _raw().describe_table(TableName=TABLE)["Table"]
    assert {g["IndexName"] for g in table["GlobalSecondaryIndexes"]} == {"by_state", "by_parent"}
