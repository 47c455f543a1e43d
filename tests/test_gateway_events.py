"""Gateway events reach a queue when ``event_sink`` is a queue URI (SQS on a
moto server on 127.0.0.1), wrapped as EventEnvelope, and stay readable from
the control API's outbox with a cursor that acknowledges what was read."""

from __future__ import annotations

import os
import time
from pathlib import Path

from skyhop.models import ChunkVerified, EventEnvelope, GatewayReady, GatewayRole
from skyhop.queues.sqs import SQSQueue, create_queue
from tests.fixtures.gateways import GatewayJob, MiB, gateway_job_fixture, provider_fixture  # noqa: F401 - pytest fixtures, registered by importing them
from tests.fixtures.services import MotoServer


def test_events_go_to_the_queue_sink(
    moto: MotoServer, gateway_job: GatewayJob, tmp_path: Path
) -> None:
    job = gateway_job
    sink = create_queue("skyhop-gateway-events")
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = os.urandom(2 * MiB + 1)
    (src / "obj").write_bytes(data)
    job.launch(
        job.config("src-0", GatewayRole.SOURCE, source_uri=str(src), event_sink=sink),
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(dst), event_sink=sink),
    )
    job.chain("src-0", "dst-0")
    chunks = job.chunks_for(src / "obj", dst / "obj", MiB)
    job.submit("src-0", chunks)
    queue = SQSQueue(sink)
    seen: list[object] = []
    deadline = time.monotonic() + 60
    while sum(isinstance(e, ChunkVerified) for e in seen) < len(chunks):
        assert time.monotonic() < deadline, seen
        for message in queue.receive(10, wait_seconds=1):
            seen.append(EventEnvelope.model_validate_json(message.body).event)
            queue.ack(message)
    ready = {e.gateway_id for e in seen if isinstance(e, GatewayReady)}
    assert ready == {"src-0", "dst-0"}
    verified = {e.chunk_id: e for e in seen if isinstance(e, ChunkVerified)}
    assert sorted(verified) == [c.chunk_id for c in chunks]
    job.complete(chunks, verified)  # type: ignore[arg-type]
    assert (dst / "obj").read_bytes() == data


def test_outbox_cursor_acknowledges(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    job.launch(job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path)))
    client = job.clients["dst-0"]
    events, cursor = client.events(after=0)
    assert [e.type for e in events] == ["gateway_ready"] and cursor == 1
    again, same = client.events(after=0)  # not acknowledged yet: still there
    assert [e.type for e in again] == ["gateway_ready"] and same == 1
    nothing, still = client.events(after=cursor, wait=0.5)  # long-poll times out empty
    assert nothing == [] and still == 1
    gone, _ = client.events(after=0)  # acknowledged by the read after=1
    assert gone == []
