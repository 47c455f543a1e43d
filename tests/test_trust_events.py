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
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from functions.aws import gateway_events, submit
from skyhop import crypto, eventauth
from skyhop.models import (
    ChunkState,
    ChunkVerified,
    EventEnvelope,
    GatewayErrorEvent,
    GatewayReady,
    GatewayRole,
    JobState,
    TransferOptions,
    TransferRequest,
    utcnow,
)
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

    def verify(gateway_id: str, mac: str | None = None) -> list[ChunkVerified]:
        return [
            ChunkVerified(
                job_id=job_id,
                gateway_id=gateway_id,
                chunk_id=c.chunk_id,
                object_id=c.object_id,
                crc32c="00000000",
                length=c.length,
                attempt=c.attempts,
                mac=mac,
            )
            for c in chunks
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
    _send(
        *verify("gw-forged"),
        *verify(dest.gateway_id),
        *verify(dest.gateway_id, mac="00" * 32),
        *[eventauth.sign(e, source_key) for e in verify(source.gateway_id)],
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
