"""The control plane's state machine over real SQLite and real local stores.

Events are fed to ``apply_event`` directly (what ``handle_event``, the call the
embedded runner and the cloud functions make, does once an event's MAC and
sender have checked: tests/test_trust_events.py), so duplicates and reordering
are exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane import provision
from skyhop.controlplane.replication import ObjectEvent, replicate, rule_matches
from skyhop.controlplane.service import ControlPlane
from skyhop.errors import Interrupted
from skyhop.integrity import crc32c, crc_hex
from skyhop.models import (
    ChunkBatch,
    ChunkFailed,
    ChunkState,
    ChunkVerified,
    GatewayMode,
    GatewaySpec,
    JobRuntime,
    JobState,
    ObjectState,
    ReplicationRule,
    TransferOptions,
    TransferRequest,
    utcnow,
)
from skyhop.state.sqlite import SQLiteManifest
from skyhop.uri import parse_uri


@pytest.fixture
def cp(tmp_path: Path) -> ControlPlane:
    return ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())


def _tree(root: Path, n: int = 3) -> dict[str, bytes]:
    files = {f"f{i}.bin": os.urandom(100 + i) for i in range(n)}
    root.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (root / name).write_bytes(body)
    return files


def _snapshot(cp: ControlPlane, job_id: str) -> list[tuple]:
    chunks = [
        (c.chunk_id, c.state, c.crc32c, c.part_etag, c.attempts)
        for c in cp.manifest.iter_chunks(job_id)
    ]
    objects = [(o.object_id, o.state, o.crc32c) for o in cp.manifest.iter_objects(job_id)]
    return chunks + objects


def _dispatch_all(cp: ControlPlane, job_id: str) -> None:
    for chunk in list(cp.manifest.iter_chunks(job_id)):
        assert cp.manifest.transition_chunk(
            job_id,
            chunk.chunk_id,
            expect={ChunkState.PENDING},
            to=ChunkState.DISPATCHED,
            attempts=1,
        )


def _verified(job_id: str, chunk_id: int, object_id: int, body: bytes) -> ChunkVerified:
    return ChunkVerified(
        job_id=job_id,
        gateway_id="gw-test",
        chunk_id=chunk_id,
        object_id=object_id,
        crc32c=crc_hex(crc32c(body)),
        length=len(body),
        attempt=1,  # _dispatch_all's
    )


def test_duplicate_and_reordered_events_change_nothing(cp: ControlPlane, tmp_path: Path):
    files = _tree(tmp_path / "src")
    job = cp.create_job(
        TransferRequest(
            source=str(tmp_path / "src"),
            destination=str(tmp_path / "dst"),
            options=TransferOptions(recursive=True),
        )
    )
    _dispatch_all(cp, job.job_id)
    entries = {o.src_key.rsplit("/", 1)[1]: o for o in cp.manifest.iter_objects(job.job_id)}
    events = [_verified(job.job_id, e.object_id, e.object_id, files[k]) for k, e in entries.items()]
    for event in events:
        cp.apply_event(event)
    after = _snapshot(cp, job.job_id)
    assert all(o.state == ObjectState.VERIFIED for o in cp.manifest.iter_objects(job.job_id))

    # duplicates, in reverse order, and a late failure for a verified chunk
    for event in reversed(events):
        cp.apply_event(event)
    cp.apply_event(ChunkFailed(job_id=job.job_id, gateway_id="gw-test", chunk_id=0, reason="late"))
    assert _snapshot(cp, job.job_id) == after


def test_a_failure_that_retrying_cannot_fix_fails_the_object_at_once(
    cp: ControlPlane, tmp_path: Path
):
    _tree(tmp_path / "src", 1)
    job = cp.create_job(
        TransferRequest(source=str(tmp_path / "src" / "f0.bin"), destination=str(tmp_path / "o"))
    )
    _dispatch_all(cp, job.job_id)
    cp.apply_event(
        ChunkFailed(
            job_id=job.job_id, gateway_id="g", chunk_id=0, reason="access denied", retryable=False
        )
    )
    assert cp.manifest.get_chunk(job.job_id, 0).state == ChunkState.FAILED
    entry = cp.manifest.get_object(job.job_id, 0)
    assert entry.state == ObjectState.FAILED and "access denied" in (entry.error or "")


def test_retryable_failures_back_off_then_interrupt_the_job_resumably(
    cp: ControlPlane, tmp_path: Path
):
    """#21 item 3: each retryable failure sends the chunk again only after the retry
    policy's back-off; the last of ``max_attempts`` interrupts the job with the
    reason (resumable, never failed), and a resume has as many tries again."""
    _tree(tmp_path / "src", 1)
    job = cp.create_job(
        TransferRequest(source=str(tmp_path / "src" / "f0.bin"), destination=str(tmp_path / "o"))
    )
    cp.manifest.update_job(job.job_id, state=JobState.RUNNING)
    cp.limits.rng = lambda: 0.0  # the floor of each back-off: half its ceiling
    cp.limits.retry_base = 10.0  # long enough that nothing is sent again in this test
    fail = ChunkFailed(job_id=job.job_id, gateway_id="g", chunk_id=0, reason="no space left")
    last = cp.limits.max_attempts
    for attempt in range(1, last + 1):
        chunk = cp.manifest.get_chunk(job.job_id, 0)
        if attempt > 1:
            assert chunk.retry_at is not None and chunk.retry_at > utcnow()
            assert cp.take_pending(job.job_id, 10) == []  # still backing off
        cp.manifest.transition_chunk(
            job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts=attempt
        )
        before = utcnow()
        cp.apply_event(fail)
        chunk = cp.manifest.get_chunk(job.job_id, 0)
        assert chunk.state == ChunkState.PENDING and chunk.failures == attempt
        if attempt < last:
            wait = (chunk.retry_at - before).total_seconds()
            ceiling = min(cp.limits.retry_cap, cp.limits.retry_base * 2 ** (attempt - 1))
            assert ceiling / 2 - 0.05 <= wait <= ceiling / 2 + 1.0, (attempt, wait)
            assert cp.require(job.job_id).state == JobState.RUNNING
    job = cp.require(job.job_id)
    assert job.state == JobState.INTERRUPTED and "no space left (tried 5 times)" in job.error
    assert cp.manifest.get_object(job.job_id, 0).state == ObjectState.PENDING
    with pytest.raises(Interrupted, match="no space left"):
        cp.check_interrupted(job.job_id)
    # resumed: the chunk goes at once, and fails again only after backing off
    cp.resumable(job.job_id)
    cp.manifest.update_job(job.job_id, state=JobState.RUNNING)
    [work] = cp.take_pending(job.job_id, 10)
    cp.apply_event(fail.model_copy(update={"attempt": work.attempt}))
    assert cp.require(job.job_id).state == JobState.RUNNING
    assert cp.manifest.get_chunk(job.job_id, 0).retry_at is not None


def test_a_stale_or_duplicated_failure_changes_nothing(
    cp: ControlPlane, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Queues deliver at least once, and a re-sent chunk's earlier attempt may still
    report: a failure names its attempt, and only the current one counts."""
    _tree(tmp_path / "src", 1)
    job = cp.create_job(
        TransferRequest(source=str(tmp_path / "src" / "f0.bin"), destination=str(tmp_path / "o"))
    )
    # dispatch numbers the attempt it sends: the gateways echo it in chunk_failed
    sent: list[ChunkBatch] = []
    monkeypatch.setattr(provision, "submit", lambda runtime, gw, batch, queue: sent.append(batch))
    source = GatewaySpec(gateway_id="s", job_id=job.job_id, region="local", role="source")
    cp.manifest.update_job(
        job.job_id, state=JobState.RUNNING, runtime=JobRuntime(gateways=[source])
    )
    assert cp.dispatch(job.job_id) == 1
    assert [w.attempt for b in sent for w in b.chunks] == [1]
    assert cp.manifest.get_chunk(job.job_id, 0).attempts == 1
    first = ChunkFailed(job_id=job.job_id, gateway_id="g", chunk_id=0, reason="cut", attempt=1)
    cp.apply_event(first)
    assert cp.manifest.get_chunk(job.job_id, 0).state == ChunkState.PENDING
    last = cp.limits.max_attempts
    for attempt in range(2, last + 1):
        assert cp.manifest.transition_chunk(
            job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts=attempt
        )
        cp.apply_event(first)  # the same message again, each time after a re-send
        chunk = cp.manifest.get_chunk(job.job_id, 0)
        assert (chunk.state, chunk.attempts) == (ChunkState.DISPATCHED, attempt)
        if attempt < last:
            cp.apply_event(first.model_copy(update={"attempt": attempt}))  # the current one
            assert cp.manifest.get_chunk(job.job_id, 0).state == ChunkState.PENDING
    assert cp.manifest.get_object(job.job_id, 0).state == ObjectState.PENDING
    cp.apply_event(first.model_copy(update={"attempt": last}))  # the last attempt's own
    assert cp.require(job.job_id).state == JobState.INTERRUPTED  # out of tries: resumable


def test_wrong_crc_against_source_checksum_fails_object(cp: ControlPlane, tmp_path: Path):
    _tree(tmp_path / "src", 1)
    job = cp.create_job(
        TransferRequest(source=str(tmp_path / "src" / "f0.bin"), destination=str(tmp_path / "o"))
    )
    entry = cp.manifest.get_object(job.job_id, 0)
    # pretend the source store reported a CRC32C: a differing chunk CRC must fail the object
    cp.manifest.update_object(job.job_id, 0, src_checksums={"crc32c": "00000001"})
    _dispatch_all(cp, job.job_id)
    cp.apply_event(_verified(job.job_id, 0, 0, b"x" * entry.size))
    assert cp.manifest.get_object(job.job_id, 0).state == ObjectState.FAILED


def test_filters_select_keys(cp: ControlPlane, tmp_path: Path):
    src = tmp_path / "src"
    for rel in ["a.txt", "b.log", "sub/c.txt", "sub/d.tmp"]:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    job = cp.create_job(
        TransferRequest(
            source=str(src),
            destination=str(tmp_path / "dst"),
            options=TransferOptions(recursive=True, include=["*.txt", "sub/*"], exclude=["*.tmp"]),
        )
    )
    keys = sorted(o.dst_key.rsplit("dst/", 1)[1] for o in cp.manifest.iter_objects(job.job_id))
    assert keys == ["a.txt", "sub/c.txt"]


def test_explicit_keys_request(cp: ControlPlane, tmp_path: Path):
    files = _tree(tmp_path / "src", 4)
    job = cp.create_job(
        TransferRequest(
            source=str(tmp_path / "src"),
            destination=str(tmp_path / "dst") + "/",
            options=TransferOptions(recursive=True),
            keys=["f1.bin", "f3.bin", "gone.bin"],
        )
    )
    got = sorted(o.dst_key.rsplit("/", 1)[1] for o in cp.manifest.iter_objects(job.job_id))
    assert got == ["f1.bin", "f3.bin"]
    assert job.bytes_total == len(files["f1.bin"]) + len(files["f3.bin"])


# ---------------------------------------------------------------- replication


def _rule(**kw) -> ReplicationRule:
    base = {"name": "r1", "source_bucket": "", "destination": "/tmp/x/"}
    base.update(kw)
    return ReplicationRule.model_validate(base)


def test_rule_matching():
    rule = _rule(source_bucket="photos", prefix="raw/", exclude=["*.tmp"])
    assert rule_matches(rule, parse_uri("s3://photos/raw/a/b.jpg"), {}) == "a/b.jpg"
    assert rule_matches(rule, parse_uri("s3://photos/raw/a/b.tmp"), {}) is None
    assert rule_matches(rule, parse_uri("s3://photos/cooked/b.jpg"), {}) is None
    assert rule_matches(rule, parse_uri("s3://other/raw/b.jpg"), {}) is None
    tagged = _rule(source_bucket=None, bucket_tag="replicate=yes")
    assert rule_matches(tagged, parse_uri("s3://any/k"), {"replicate": "yes"}) == "k"
    assert rule_matches(tagged, parse_uri("s3://any/k"), {"replicate": "no"}) is None


def test_a_prefix_is_a_folder_on_the_inline_and_the_batched_path(tmp_path: Path):
    """'logs' means 'logs/': 'logs2/...' is not under it, and the key below it is
    kept as it is, whether the function copies the object or queues it."""
    src = tmp_path / "bucket"
    for rel, size in {"logs/a.txt": 10, "logs/big.bin": 100, "logs2/b.txt": 10}.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(os.urandom(size))
    base = parse_uri(str(src))
    rule = _rule(
        source_bucket=base.bucket,
        prefix=base.key + "/logs",
        destination=str(tmp_path / "out") + "/",
        inline_max_bytes=50,
    )
    assert rule.prefix == base.key + "/logs/"
    assert rule_matches(rule, parse_uri(f"{src}/logs2/b.txt"), {}) is None
    sent: list[TransferRequest] = []
    events = [
        ObjectEvent(kind="created", uri=f"file://{src}/{rel}", size=size)
        for rel, size in {"logs/a.txt": 10, "logs/big.bin": 100, "logs2/b.txt": 10}.items()
    ]
    outcomes = replicate([rule], events, send_request=sent.append)
    assert {(o.source.rsplit("/", 1)[1], o.action) for o in outcomes} == {
        ("a.txt", "copied"),
        ("big.bin", "queued"),
    }
    assert (tmp_path / "out" / "a.txt").read_bytes() == (src / "logs" / "a.txt").read_bytes()
    assert not (tmp_path / "out" / "2").exists()
    [request] = sent
    assert request.keys == ["big.bin"] and request.source == f"{src}/logs/"


def test_replicate_inline_queue_and_delete(tmp_path: Path):
    src = tmp_path / "bucket"
    small = os.urandom(1000)
    (src / "in").mkdir(parents=True)
    (src / "in" / "small.bin").write_bytes(small)
    (src / "in" / "big.bin").write_bytes(os.urandom(5000))
    dst = tmp_path / "replica"
    (dst / "gone.bin").parent.mkdir(parents=True)
    (dst / "gone.bin").write_bytes(b"old")
    (dst / "kept.bin").write_bytes(b"old")
    base = parse_uri(str(src))
    rules = [
        ReplicationRule(
            name="mirror",
            source_bucket=base.bucket,
            prefix=base.key + "/in/",
            destination=str(dst) + "/",
            propagate_deletes=True,
            inline_max_bytes=4096,
        ),
        ReplicationRule(
            name="nodeletes",
            source_bucket=base.bucket,
            prefix=base.key + "/keep/",
            destination=str(dst) + "/",
        ),
    ]
    sent: list[TransferRequest] = []
    events = [
        ObjectEvent(kind="created", uri=f"file://{src}/in/small.bin", size=1000),
        ObjectEvent(kind="created", uri=f"file://{src}/in/big.bin", size=5000),
        ObjectEvent(kind="deleted", uri=f"file://{src}/in/gone.bin"),
        ObjectEvent(kind="deleted", uri=f"file://{src}/keep/kept.bin"),
        ObjectEvent(kind="created", uri=f"file://{src}/elsewhere/x.bin", size=1),
    ]
    outcomes = replicate(rules, events, send_request=sent.append)
    actions = {(o.rule, o.source.rsplit("/", 1)[1]): o.action for o in outcomes}
    assert actions == {
        ("mirror", "small.bin"): "copied",
        ("mirror", "big.bin"): "queued",
        ("mirror", "gone.bin"): "deleted",
        ("nodeletes", "kept.bin"): "skipped",
    }
    assert (dst / "small.bin").read_bytes() == small
    assert not (dst / "gone.bin").exists()
    assert (dst / "kept.bin").read_bytes() == b"old"
    assert len(sent) == 1 and sent[0].keys == ["big.bin"]
    assert sent[0].destination == str(dst) + "/"


def test_planning_reuses_the_open_store_and_asks_s3_nothing_more(
    tmp_path: Path, moto, monkeypatch: pytest.MonkeyPatch
):
    """The planner's region lookup goes through the control plane's own store (no
    second S3 client) and the preflight's HeadBucket answer (no GetBucketLocation)."""
    import boto3

    from skyhop.controlplane.planning import default_planner
    from skyhop.stores.s3 import S3Store

    boto3.client("s3").create_bucket(
        Bucket="skyhop-plan-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    made: list[S3Store] = []
    calls: list[str] = []
    real = S3Store._make_client

    def counting(self: S3Store):
        client = real(self)
        made.append(self)
        client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
        return client

    monkeypatch.setattr(S3Store, "_make_client", counting)
    _tree(tmp_path / "src")
    cp = ControlPlane(
        manifest=SQLiteManifest(tmp_path / "m.db"),
        compute=LocalComputeProvider(),
        planner=default_planner,
    )
    job = cp.create_job(
        TransferRequest(
            source=str(tmp_path / "src"),
            destination="s3://skyhop-plan-eu/x/",
            options=TransferOptions(recursive=True),
        )
    )
    assert job.plan is not None and job.plan.dst_region.startswith("aws:eu-west-2")
    assert len(made) == 1
    assert "GetBucketLocation" not in calls and calls.count("HeadBucket") == 1


def test_the_direct_path_reads_pending_chunks_in_batches(tmp_path: Path, monkeypatch):
    """Each round frees a few workers; the pending chunks are read from the manifest
    once per batch of ``DirectConfig.backlog``, not a page per round (which re-read
    the same 500 rows for every couple of chunks sent)."""
    from skyhop.controlplane.direct import DirectConfig, DirectRunner

    files = _tree(tmp_path / "src", n=60)
    cp = ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())
    job = cp.create_job(
        TransferRequest(
            source=str(tmp_path / "src"),
            destination=str(tmp_path / "dst") + "/",
            options=TransferOptions(recursive=True),
        )
    )
    reads: list[object] = []
    real = cp.manifest.iter_chunks

    def counting(job_id, states=None, object_id=None):
        if states == {ChunkState.PENDING}:
            reads.append(states)
        return real(job_id, states, object_id)

    monkeypatch.setattr(cp.manifest, "iter_chunks", counting)
    report = DirectRunner(cp, config=DirectConfig(workers=2, backlog=25)).run(job.job_id)
    assert report.state == JobState.SUCCEEDED and report.objects == 60
    assert {p.name: p.read_bytes() for p in (tmp_path / "dst").iterdir()} == files
    # 60 chunks in batches of 25: three reads with work, one that finds none
    assert len(reads) <= 5, len(reads)


def _count_transactions(manifest: SQLiteManifest) -> list[int]:
    """Transactions this thread's connection commits: explicit COMMITs plus every
    write made outside a transaction (autocommit: a commit each)."""
    conn = manifest._connection()
    count = [0]

    def seen(statement: str) -> None:
        verb = statement.lstrip().split(" ", 1)[0].upper()
        if verb == "COMMIT" or (verb in ("UPDATE", "INSERT", "DELETE") and not conn.in_transaction):
            count[0] += 1

    conn.set_trace_callback(seen)
    return count


@pytest.mark.parametrize("gateways", [False, True], ids=["direct", "gateways"])
def test_rounds_of_results_are_one_manifest_commit_each(tmp_path: Path, gateways: bool):
    """Issue 21 item 13: 300 small files, on the direct path and through local
    gateways. Every byte arrives and every object is verified (CRC32C and the final
    listing), in far fewer manifest commits than the 3 writes per file that a commit
    each made (a commit, a WAL append and every thousand pages a checkpoint, was most
    of a small file's cost)."""
    from skyhop.controlplane.direct import DirectRunner
    from skyhop.controlplane.embedded import EmbeddedRunner

    src = tmp_path / "src"
    files = {}
    for i in range(300):
        rel = f"d{i % 6}/f{i:03d}"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        files[rel] = os.urandom(512 + 7 * i)
        (src / rel).write_bytes(files[rel])
    manifest = SQLiteManifest(tmp_path / "m.db")
    cp = ControlPlane(manifest=manifest, compute=LocalComputeProvider())
    options = TransferOptions(
        recursive=True, gateways=GatewayMode.LOCAL if gateways else GatewayMode.AUTO
    )
    job = cp.create_job(
        TransferRequest(source=f"{src}/", destination=f"{tmp_path / 'dst'}/", options=options)
    )
    commits = _count_transactions(manifest)
    runner = EmbeddedRunner(cp) if gateways else DirectRunner(cp)
    report = runner.run(job.job_id)
    assert report.state == JobState.SUCCEEDED and report.objects == 300
    assert report.verification is not None and report.verification.mismatches == 0
    assert report.verification.checksum_methods == {"crc32c": 300}
    got = {
        str(p.relative_to(tmp_path / "dst")): p.read_bytes() for p in (tmp_path / "dst").rglob("f*")
    }
    assert got == files
    assert manifest.progress(job.job_id).chunks == {ChunkState.VERIFIED: 300}
    assert commits[0] < 100, commits[0]  # 904 with a commit per write


def test_the_direct_path_reads_a_small_file_s_records_once(tmp_path: Path, monkeypatch):
    """Issue 21 item 13: a result on the direct path comes back with the chunk and the
    object as they were taken, so recording it and completing the object read neither
    again (they were a third of a small file's manifest work); every file still
    arrives, verified by its CRC32C and the final listing."""
    from skyhop.controlplane.direct import DirectRunner

    files = _tree(tmp_path / "src", n=80)
    cp = ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())
    job = cp.create_job(
        TransferRequest(
            source=str(tmp_path / "src"),
            destination=str(tmp_path / "dst") + "/",
            options=TransferOptions(recursive=True),
        )
    )
    reads = {"object": 0, "chunk": 0}
    real_object, real_chunk = cp.manifest.get_object, cp.manifest.get_chunk

    def get_object(job_id, object_id):
        reads["object"] += 1
        return real_object(job_id, object_id)

    def get_chunk(job_id, chunk_id):
        reads["chunk"] += 1
        return real_chunk(job_id, chunk_id)

    monkeypatch.setattr(cp.manifest, "get_object", get_object)
    monkeypatch.setattr(cp.manifest, "get_chunk", get_chunk)
    report = DirectRunner(cp).run(job.job_id)
    assert report.state == JobState.SUCCEEDED and report.objects == 80
    assert report.verification is not None and report.verification.checksum_methods == {
        "crc32c": 80
    }
    assert {p.name: p.read_bytes() for p in (tmp_path / "dst").iterdir()} == files
    assert reads == {"object": 80, "chunk": 0}, reads  # once each, when taken
