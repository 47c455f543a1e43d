"""The control plane's state machine over real SQLite and real local stores.

Events are fed to ``handle_event`` directly (the same call the embedded runner
and the cloud functions make), so duplicates and reordering are exact.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane import provision
from skyhop.controlplane.replication import ObjectEvent, replicate, rule_matches
from skyhop.controlplane.service import ControlPlane
from skyhop.integrity import crc32c, crc_hex
from skyhop.models import (
    ChunkBatch,
    ChunkFailed,
    ChunkState,
    ChunkVerified,
    GatewaySpec,
    JobRuntime,
    JobState,
    ObjectState,
    ReplicationRule,
    TransferOptions,
    TransferRequest,
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
        cp.handle_event(event)
    after = _snapshot(cp, job.job_id)
    assert all(o.state == ObjectState.VERIFIED for o in cp.manifest.iter_objects(job.job_id))

    # duplicates, in reverse order, and a late failure for a verified chunk
    for event in reversed(events):
        cp.handle_event(event)
    cp.handle_event(ChunkFailed(job_id=job.job_id, gateway_id="gw-test", chunk_id=0, reason="late"))
    assert _snapshot(cp, job.job_id) == after


def test_failed_chunk_goes_back_to_pending_then_fails_after_max_attempts(
    cp: ControlPlane, tmp_path: Path
):
    _tree(tmp_path / "src", 1)
    job = cp.create_job(
        TransferRequest(source=str(tmp_path / "src" / "f0.bin"), destination=str(tmp_path / "o"))
    )
    _dispatch_all(cp, job.job_id)
    fail = ChunkFailed(job_id=job.job_id, gateway_id="g", chunk_id=0, reason="crc mismatch")
    cp.handle_event(fail)
    assert cp.manifest.get_chunk(job.job_id, 0).state == ChunkState.PENDING
    for attempt in range(2, cp.limits.max_attempts + 1):
        assert cp.manifest.transition_chunk(
            job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts=attempt
        )
        cp.handle_event(fail)
    assert cp.manifest.get_chunk(job.job_id, 0).state == ChunkState.FAILED
    entry = cp.manifest.get_object(job.job_id, 0)
    assert entry.state == ObjectState.FAILED and "crc mismatch" in (entry.error or "")


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
    cp.handle_event(first)
    assert cp.manifest.get_chunk(job.job_id, 0).state == ChunkState.PENDING
    last = cp.limits.max_attempts
    for attempt in range(2, last + 1):
        assert cp.manifest.transition_chunk(
            job.job_id, 0, expect={ChunkState.PENDING}, to=ChunkState.DISPATCHED, attempts=attempt
        )
        cp.handle_event(first)  # the same message again, each time after a re-send
        chunk = cp.manifest.get_chunk(job.job_id, 0)
        assert (chunk.state, chunk.attempts) == (ChunkState.DISPATCHED, attempt)
        if attempt < last:
            cp.handle_event(first.model_copy(update={"attempt": attempt}))  # the current one
            assert cp.manifest.get_chunk(job.job_id, 0).state == ChunkState.PENDING
    assert cp.manifest.get_object(job.job_id, 0).state == ObjectState.PENDING
    cp.handle_event(first.model_copy(update={"attempt": last}))  # the last attempt's own
    assert cp.manifest.get_object(job.job_id, 0).state == ObjectState.FAILED


def test_wrong_crc_against_source_checksum_fails_object(cp: ControlPlane, tmp_path: Path):
    _tree(tmp_path / "src", 1)
    job = cp.create_job(
        TransferRequest(source=str(tmp_path / "src" / "f0.bin"), destination=str(tmp_path / "o"))
    )
    entry = cp.manifest.get_object(job.job_id, 0)
    # pretend the source store reported a CRC32C: a differing chunk CRC must fail the object
    cp.manifest.update_object(job.job_id, 0, src_checksums={"crc32c": "00000001"})
    _dispatch_all(cp, job.job_id)
    cp.handle_event(_verified(job.job_id, 0, 0, b"x" * entry.size))
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
