"""Forged gateway events change nothing (#19 item 2).

A job runs through the AWS Lambda handlers (moto: DynamoDB, SQS, KMS) with
queue-controlled local gateway processes, as in tests/test_serverless_queues.py.
While it runs, whoever can send to the events queue sends what the security
review sent: a chunk_verified for every chunk (a gateway id of no gateway of the
job, CRC32C 00000000; and the same with a real destination's id but no MAC), a
fatal gateway_error, and a gateway_ready moving a destination to another host
with a far-future time. Every event must carry the MAC of its own gateway, and
is checked before anything else: the job still copies every byte, is never
interrupted, and neither the firewall nor the source's next hops move.

Only the job's own destination may verify, and only a chunk in flight at its
current attempt: the destination's correctly MACed chunk_verified for another
attempt (an earlier dispatch's, one not sent yet), for a chunk never sent, or for
one verified already changes nothing, through the Lambda handler and on the
control plane over SQLite.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from functions.aws import gateway_events, submit
from skyhop import crypto, eventauth
from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane.service import ControlPlane
from skyhop.integrity import crc32c, crc_hex
from skyhop.models import (
    ChunkState,
    ChunkVerified,
    EventEnvelope,
    GatewayErrorEvent,
    GatewayReady,
    GatewayRole,
    GatewaySpec,
    JobRuntime,
    JobState,
    ObjectState,
    TransferOptions,
    TransferRequest,
    utcnow,
)
from skyhop.state.sqlite import SQLiteManifest
from tests import test_serverless_queues as queued
from tests.test_functions_aws import Context, sqs_event
from tests.test_serverless_queues import Cloud, _pump, _results

cloud = queued.cloud
no_https_control = queued.no_https_control

MIB = 1024 * 1024


def _send(*events: object) -> None:
    bodies = [EventEnvelope(event=e).model_dump_json() for e in events]  # type: ignore[arg-type]
    assert gateway_events.handler(sqs_event(bodies), Context()) == {"batchItemFailures": []}


def _pump_events(cloud: Cloud, until: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the job did not get there in time"
        messages = cloud.events.receive(max_messages=10, wait_seconds=1)
        if messages:
            _send_raw([m.body for m in messages])
            for message in messages:
                cloud.events.ack(message)


def _send_raw(bodies: list[str]) -> None:
    assert gateway_events.handler(sqs_event(bodies), Context()) == {"batchItemFailures": []}


def test_forged_events_change_nothing(
    cloud: Cloud, no_https_control: list[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "source:sleep_per_chunk=0.3")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    files = {f"f{i}.bin": bytes([i]) * (MIB + i) for i in range(6)}
    for name, data in files.items():
        (src / name).write_bytes(data)
        (dst / name).write_bytes(b"stale " * 10)  # what a forged verify would leave
    request = TransferRequest(
        source=f"{src}/", destination=f"{dst}/", options=TransferOptions(recursive=True)
    )
    submit.handler(sqs_event([request.model_dump_json()]), Context())
    [started] = _results(cloud.results, wait=5)
    job_id = started["job_id"]

    def running() -> bool:
        job = cloud.manifest.get_job(job_id)
        return job is not None and job.state == JobState.RUNNING

    _pump_events(cloud, running)
    job = cloud.manifest.get_job(job_id)
    assert job is not None and job.runtime is not None
    dest = next(g for g in job.runtime.gateways if g.role == GatewayRole.DESTINATION)
    source = next(g for g in job.runtime.gateways if g.role == GatewayRole.SOURCE)
    chunks = list(cloud.manifest.iter_chunks(job_id))
    assert any(c.state != ChunkState.VERIFIED for c in chunks)

    def verify(gateway_id: str, mac: str | None = None, shift: int = 0) -> list[ChunkVerified]:
        return [
            ChunkVerified(
                job_id=job_id,
                gateway_id=gateway_id,
                chunk_id=c.chunk_id,
                object_id=c.object_id,
                crc32c="00000000",
                length=c.length,
                attempt=c.attempts + shift,
                mac=mac,
            )
            for c in chunks
            if c.attempts + shift >= 0
        ]

    far = utcnow() + timedelta(days=3650)
    moved = GatewayReady(
        job_id=job_id,
        gateway_id=dest.gateway_id,
        host="10.66.66.66",
        data_port=dest.data_port + 1,
        control_port=dest.control_port,
        at=far,
    )
    # the source's own key is no destination's: a source cannot verify either
    source_key = crypto.gateway_event_key("not-the-master", source.gateway_id)
    # the destination's own key, but an attempt that is not the chunk's current one
    # (an earlier dispatch's, attempt 0 here, or one not sent yet): each changes nothing
    dest_key = crypto.gateway_event_key(job.runtime.control_token, dest.gateway_id)
    in_flight = {c.chunk_id for c in chunks if c.state == ChunkState.DISPATCHED}
    assert in_flight
    other_attempts = [
        eventauth.sign(e, dest_key)
        for shift in (-1, 1)
        for e in verify(dest.gateway_id, shift=shift)
    ]
    _send(
        *verify("gw-forged"),
        *verify(dest.gateway_id),
        *verify(dest.gateway_id, mac="00" * 32),
        *[eventauth.sign(e, source_key) for e in verify(source.gateway_id)],
        *other_attempts,
        GatewayErrorEvent(job_id=job_id, gateway_id=dest.gateway_id, message="boom", fatal=True),
        GatewayErrorEvent(job_id=job_id, gateway_id="gw-forged", message="boom", fatal=True),
        moved,
        moved.model_copy(update={"mac": "11" * 32}),
    )
    after = cloud.manifest.get_job(job_id)
    assert after is not None and after.state == JobState.RUNNING
    assert after.runtime is not None
    spec = next(g for g in after.runtime.gateways if g.gateway_id == dest.gateway_id)
    assert (spec.host, spec.data_port, spec.ready_at) == (dest.host, dest.data_port, dest.ready_at)
    assert "10.66.66.66" not in cloud_firewall(job_id).values()
    assert not any(c.crc32c == "00000000" for c in cloud.manifest.iter_chunks(job_id))
    for chunk in cloud.manifest.iter_chunks(job_id):
        if chunk.chunk_id in in_flight:  # still in flight, or verified by its own gateway
            assert chunk.state in (ChunkState.DISPATCHED, ChunkState.VERIFIED), chunk

    report = _pump(cloud, job_id)
    assert report.state == JobState.SUCCEEDED, report.failures
    for name, data in files.items():
        assert (dst / name).read_bytes() == data
    assert not any(c.crc32c == "00000000" for c in cloud.manifest.iter_chunks(job_id))


def cloud_firewall(job_id: str) -> dict[str, str]:
    from functions import common as shared

    compute = shared.control_plane().compute
    allowed = getattr(compute, "allowed", None)
    return allowed(job_id) if allowed else {}


# ---------------------------------------------------------------- the control plane, on SQLite

MASTER = "the-job-master-token"


def _signed_plane(tmp_path: Path) -> tuple[ControlPlane, str, str, dict[int, bytes]]:
    """A running job of three one-chunk objects whose runtime names a source and a
    destination gateway: events go through ``handle_event`` (MAC, sender, role)."""
    src = tmp_path / "src"
    src.mkdir()
    bodies = {i: bytes([65 + i]) * (100 + i) for i in range(3)}
    for i, body in bodies.items():
        (src / f"f{i}.bin").write_bytes(body)
    cp = ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())
    job = cp.create_job(
        TransferRequest(
            source=f"{src}/",
            destination=f"{tmp_path / 'dst'}/",
            options=TransferOptions(recursive=True),
        )
    )
    gateways = [
        GatewaySpec(gateway_id="gw-src", job_id=job.job_id, region="local", role="source"),
        GatewaySpec(gateway_id="gw-dst", job_id=job.job_id, region="local", role="destination"),
    ]
    cp.manifest.update_job(
        job.job_id,
        state=JobState.RUNNING,
        runtime=JobRuntime(gateways=gateways, control_token=MASTER),
    )
    by_key = {
        o.src_key.rsplit("/", 1)[1]: o.object_id for o in cp.manifest.iter_objects(job.job_id)
    }
    return cp, job.job_id, "gw-dst", {by_key[f"f{i}.bin"]: b for i, b in bodies.items()}


def _signed_verify(
    cp: ControlPlane, job_id: str, object_id: int, body: bytes, attempt: int, crc: str | None = None
) -> ChunkVerified:
    [chunk] = [c for c in cp.manifest.iter_chunks(job_id) if c.object_id == object_id]
    event = ChunkVerified(
        job_id=job_id,
        gateway_id="gw-dst",
        chunk_id=chunk.chunk_id,
        object_id=object_id,
        crc32c=crc or crc_hex(crc32c(body)),
        length=len(body),
        attempt=attempt,
    )
    return eventauth.sign(event, crypto.gateway_event_key(MASTER, "gw-dst"))


def _state(cp: ControlPlane, job_id: str, object_id: int) -> tuple[object, ...]:
    [chunk] = [c for c in cp.manifest.iter_chunks(job_id) if c.object_id == object_id]
    entry = cp.manifest.get_object(job_id, object_id)
    assert entry is not None
    return (chunk.state, chunk.attempts, chunk.crc32c, entry.state, entry.crc32c)


def _send_to(cp: ControlPlane, job_id: str, object_id: int, *, attempts: int) -> None:
    [chunk] = [c for c in cp.manifest.iter_chunks(job_id) if c.object_id == object_id]
    assert cp.manifest.transition_chunk(
        job_id,
        chunk.chunk_id,
        expect={ChunkState.PENDING},
        to=ChunkState.DISPATCHED,
        attempts=attempts,
    )


def test_a_destination_verifies_only_a_chunk_in_flight_at_its_current_attempt(tmp_path: Path):
    """Item 2: a correctly MACed chunk_verified from the job's own destination, but
    for an attempt that is not the chunk's current one (an earlier dispatch's,
    replayed, or one not sent yet), or for a chunk never sent or verified already,
    changes nothing: the chunk stays as it was, its object is not verified, the job
    does not finish. The current attempt's own verification then counts."""
    cp, job_id, _, bodies = _signed_plane(tmp_path)
    sent, never, done = sorted(bodies)
    _send_to(cp, job_id, sent, attempts=2)  # sent a second time: attempt 2 is in flight
    _send_to(cp, job_id, done, attempts=1)
    cp.handle_event(_signed_verify(cp, job_id, done, bodies[done], attempt=1))
    assert _state(cp, job_id, done)[0] == ChunkState.VERIFIED
    before = {o: _state(cp, job_id, o) for o in bodies}
    assert before[sent][:3] == (ChunkState.DISPATCHED, 2, None)
    assert before[never][:3] == (ChunkState.PENDING, 0, None)

    for event in (
        _signed_verify(cp, job_id, sent, bodies[sent], attempt=1),  # stale: the first dispatch's
        _signed_verify(cp, job_id, sent, bodies[sent], attempt=3),  # future: not sent yet
        _signed_verify(cp, job_id, never, bodies[never], attempt=0),  # never sent
        _signed_verify(cp, job_id, never, bodies[never], attempt=1),
        _signed_verify(cp, job_id, done, b"x" * len(bodies[done]), attempt=1),  # verified already
        _signed_verify(cp, job_id, done, b"x" * len(bodies[done]), attempt=2),
    ):
        cp.handle_event(event)
        assert {o: _state(cp, job_id, o) for o in bodies} == before, event
    assert cp.manifest.get_object(job_id, sent).state == ObjectState.PENDING  # type: ignore[union-attr]
    assert not cp.transfer_done(job_id)
    assert cp.require(job_id).state == JobState.RUNNING

    # the MACs above were good: the current attempt's own verification counts
    cp.handle_event(_signed_verify(cp, job_id, sent, bodies[sent], attempt=2))
    assert _state(cp, job_id, sent)[0::3] == (ChunkState.VERIFIED, ObjectState.VERIFIED)
