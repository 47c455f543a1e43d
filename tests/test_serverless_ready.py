"""Readiness of queue-controlled gateways in the control plane: concurrent
gateway_ready handlers, duplicates, restarts, teardown and the reaper.

The manifest is SQLite or DynamoDB (moto, one request at a time so that its
transactions are isolated as DynamoDB's are); control queues are in-process;
the compute provider is the local one with no process launched (its firewall
is a record of the admitted peers).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from skyhop import crypto, eventauth
from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane.serverless import reap
from skyhop.controlplane.service import ControlPlane
from skyhop.errors import UsageError
from skyhop.models import (
    Chunk,
    ChunksMessage,
    GatewayReady,
    GatewayRole,
    GatewaySpec,
    Job,
    JobRuntime,
    JobState,
    ObjectEntry,
    PeersMessage,
    ShutdownMessage,
    TransferRequest,
    utcnow,
)
from skyhop.queues.base import Message
from skyhop.queues.memory import MemoryControlQueues, MemoryQueue
from skyhop.state.base import ManifestStore
from skyhop.state.dynamodb import DynamoDBManifest, create_table
from skyhop.state.sqlite import SQLiteManifest
from tests.fixtures import moto_serial as serial

moto_serial_server = serial.moto_serial_server
moto_serial = serial.moto_serial


class RacingManifest:
    """Delegates to a manifest; the first ``writers`` compare-and-swap writes wait for
    each other, so every writer has read the same version before any of them writes."""

    def __init__(self, inner: ManifestStore, writers: int = 2) -> None:
        self.inner = inner
        self.barrier = threading.Barrier(writers, timeout=30)
        self.waiting = writers
        self.conflicts = 0
        self.lock = threading.Lock()

    def update_job(self, job_id: str, **kwargs: Any) -> Job:
        if kwargs.get("expect_updated_at") is not None:
            with self.lock:
                wait = self.waiting > 0
                self.waiting -= 1
            if wait:
                self.barrier.wait()
        try:
            return self.inner.update_job(job_id, **kwargs)
        except Exception:
            with self.lock:
                self.conflicts += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(params=["sqlite", "dynamodb"])
def manifest(request: pytest.FixtureRequest, tmp_path: Path) -> ManifestStore:
    if request.param == "sqlite":
        return SQLiteManifest(tmp_path / "manifest.db")
    request.getfixturevalue("moto_serial")
    create_table("skyhop-ready")
    return DynamoDBManifest("skyhop-ready")


@pytest.fixture
def queues() -> Iterator[MemoryControlQueues]:
    factory = MemoryControlQueues(f"memory://ctl-{uuid.uuid4().hex[:8]}")
    yield factory
    for job_id in factory.jobs():
        factory.delete_job(job_id)


def provisioning_job(
    manifest: ManifestStore, queues: MemoryControlQueues, tmp_path: Path, chunks: int = 3
) -> Job:
    """A PROVISIONING job: a source (ready) and two destinations (not yet), a
    control queue each, and ``chunks`` one-chunk objects waiting to be sent."""
    job = Job(
        request=TransferRequest(source=f"{tmp_path}/src/", destination=f"{tmp_path}/dst/"),
        objects_total=chunks,
        chunks_total=chunks,
    )

    def spec(name: str, role: GatewayRole, **fields: Any) -> GatewaySpec:
        gateway_id = f"gw-{job.job_id}-a1-{name}"
        return GatewaySpec(
            gateway_id=gateway_id,
            job_id=job.job_id,
            region="local",
            role=role,
            host="",
            control_queue=queues.create(job.job_id, gateway_id),
            ready=False,
            **fields,
        )

    destinations = [spec(f"h1-{n}", GatewayRole.DESTINATION) for n in range(2)]
    source = spec(
        "h0-0",
        GatewayRole.SOURCE,
        next_hops=[d.gateway_id for d in destinations],
    ).model_copy(update={"ready": True, "ready_at": utcnow(), "host": "127.0.0.1"})
    job = job.model_copy(
        update={
            "state": JobState.PROVISIONING,
            "runtime": JobRuntime(
                gateways=[source, *destinations],
                attempt=1,
                launched_at=utcnow(),
                control_token=MASTER,
            ),
        }
    )
    manifest.create_job(job)
    manifest.put_objects(
        ObjectEntry(
            job_id=job.job_id,
            object_id=i,
            src_key=f"src/f{i}",
            dst_key=f"dst/f{i}",
            size=10,
            chunk_size=10,
            n_chunks=1,
        )
        for i in range(chunks)
    )
    manifest.put_chunks(
        Chunk(job_id=job.job_id, chunk_id=i, object_id=i, index=0, offset=0, length=10)
        for i in range(chunks)
    )
    return job


MASTER = "master-token-of-the-test-jobs"


def ready(job: Job, gateway: GatewaySpec, host: str, port: int, **fields: Any) -> GatewayReady:
    """A gateway_ready as the gateway sends it: signed with its own event key."""
    event = GatewayReady(
        job_id=job.job_id,
        gateway_id=gateway.gateway_id,
        host=host,
        data_port=port,
        control_port=port + 1,
        **fields,
    )
    return eventauth.sign(event, crypto.gateway_event_key(MASTER, gateway.gateway_id))


def drain(uri: str) -> list[Any]:
    from pydantic import TypeAdapter

    from skyhop.models import ControlMessage

    adapter: TypeAdapter[Any] = TypeAdapter(ControlMessage)
    queue = MemoryQueue(uri)
    out: list[Message] = queue.receive(max_messages=1000)
    for message in out:
        queue.ack(message)
    return [adapter.validate_json(m.body) for m in out]


FIREWALL = LocalComputeProvider()  # one "cloud": every control plane programs the same rules


def control_plane(manifest: ManifestStore, queues: MemoryControlQueues) -> ControlPlane:
    return ControlPlane(
        manifest=manifest,
        compute=FIREWALL,
        event_sink="memory://events",
        control_queues=queues,
    )


def test_two_simultaneous_gateway_ready_handlers_lose_no_update(
    manifest: ManifestStore, queues: MemoryControlQueues, tmp_path: Path
) -> None:
    job = provisioning_job(manifest, queues, tmp_path)
    assert job.runtime is not None
    source, d0, d1 = job.runtime.gateways
    racing = RacingManifest(manifest)
    events = [ready(job, d0, "127.0.0.2", 7400), ready(job, d1, "127.0.0.3", 7410)]
    errors: list[BaseException] = []

    def handle(event: GatewayReady) -> None:
        try:
            # one function invocation per event: each has its own control plane
            control_plane(racing, queues).handle_event(event)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=handle, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert racing.conflicts >= 1  # both read the same version; one write lost and retried

    done = manifest.get_job(job.job_id)
    assert done is not None and done.state == JobState.RUNNING and done.runtime is not None
    by_id = {g.gateway_id: g for g in done.runtime.gateways}
    assert (by_id[d0.gateway_id].host, by_id[d0.gateway_id].data_port) == ("127.0.0.2", 7400)
    assert (by_id[d1.gateway_id].host, by_id[d1.gateway_id].data_port) == ("127.0.0.3", 7410)
    assert all(g.ready for g in done.runtime.gateways)

    # wired exactly once: the firewall admits the three, the source got its next hops
    # once, then the pending chunks
    assert set(FIREWALL.allowed(job.job_id).values()) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}
    messages = drain(source.control_queue or "")
    peers = [m for m in messages if isinstance(m, PeersMessage)]
    assert [[(p.gateway_id, p.host, p.data_port) for p in m.peers] for m in peers] == [
        [(d0.gateway_id, "127.0.0.2", 7400), (d1.gateway_id, "127.0.0.3", 7410)]
    ]
    sent = [c.chunk_id for m in messages if isinstance(m, ChunksMessage) for c in m.batch.chunks]
    assert sorted(sent) == [0, 1, 2]
    assert drain(d0.control_queue or "") == drain(d1.control_queue or "") == []


def test_duplicates_change_nothing_and_a_restarted_gateway_is_rewired(
    manifest: ManifestStore, queues: MemoryControlQueues, tmp_path: Path
) -> None:
    job = provisioning_job(manifest, queues, tmp_path, chunks=0)
    assert job.runtime is not None
    source, d0, d1 = job.runtime.gateways
    cp = control_plane(manifest, queues)
    first = ready(job, d0, "127.0.0.2", 7400)
    cp.handle_event(first)
    cp.handle_event(first)  # redelivered
    assert manifest.get_job(job.job_id).state == JobState.PROVISIONING
    cp.handle_event(ready(job, d1, "127.0.0.3", 7410))
    assert manifest.get_job(job.job_id).state == JobState.RUNNING
    assert len(drain(source.control_queue or "")) == 1
    before = manifest.get_job(job.job_id)
    cp.handle_event(first)  # late duplicate while running: nothing
    assert manifest.get_job(job.job_id) == before and drain(source.control_queue or "") == []

    # d0 came back (its gateway restarted on its VM): the source is sent its next hops again
    restarted = ready(job, d0, "127.0.0.2", 7400, at=first.at + timedelta(seconds=30))
    cp.handle_event(restarted)
    [peers] = drain(source.control_queue or "")
    assert isinstance(peers, PeersMessage)
    assert [(p.host, p.data_port) for p in peers.peers] == [
        ("127.0.0.2", 7400),
        ("127.0.0.3", 7410),
    ]
    # but a ready gateway is never moved, not even by its own later gateway_ready
    moved = ready(job, d0, "127.0.0.9", 7500, at=first.at + timedelta(seconds=60))
    cp.handle_event(moved)
    assert drain(source.control_queue or "") == []
    assert "127.0.0.9" not in FIREWALL.allowed(job.job_id).values()

    # events of other jobs, unknown gateways or embedded (HTTPS) jobs are ignored
    cp.handle_event(ready(job, d0.model_copy(update={"gateway_id": "gw-nope"}), "10.0.0.1", 1))
    cp.handle_event(
        GatewayReady(job_id="j-none", gateway_id="g", host="h", data_port=1, control_port=2)
    )


def test_teardown_shuts_gateways_down_then_deletes_their_queues(
    manifest: ManifestStore, queues: MemoryControlQueues, tmp_path: Path
) -> None:
    job = provisioning_job(manifest, queues, tmp_path, chunks=0)
    assert job.runtime is not None
    held = {g.gateway_id: MemoryQueue(g.control_queue or "") for g in job.runtime.gateways}
    cp = control_plane(manifest, queues)
    cp.interrupt(job.job_id, "test")
    assert queues.jobs() == set()
    for queue in held.values():
        [message] = queue.receive(10)
        assert message.body == ShutdownMessage().model_dump_json()
    assert manifest.get_job(job.job_id).state == JobState.INTERRUPTED


def test_reaper_wires_jobs_whose_last_handler_was_lost_and_interrupts_the_late(
    manifest: ManifestStore, queues: MemoryControlQueues, tmp_path: Path
) -> None:
    cp = control_plane(manifest, queues)
    cp.limits.ready_within = timedelta(minutes=5)
    # every gateway ready, but the handler that should have wired it died
    wired = provisioning_job(manifest, queues, tmp_path, chunks=1)
    assert wired.runtime is not None
    gateways = [
        g.model_copy(update={"ready": True, "host": "127.0.0.1", "data_port": 7400})
        for g in wired.runtime.gateways
    ]
    manifest.update_job(
        wired.job_id, runtime=wired.runtime.model_copy(update={"gateways": gateways})
    )
    # launched long ago, one destination never reported
    late = provisioning_job(manifest, queues, tmp_path, chunks=1)
    assert late.runtime is not None
    manifest.update_job(
        late.job_id,
        runtime=late.runtime.model_copy(update={"launched_at": utcnow() - timedelta(minutes=6)}),
    )
    report = reap(cp, resume=False)
    assert report.errors == []
    assert report.connected == [wired.job_id]
    assert manifest.get_job(wired.job_id).state == JobState.RUNNING
    assert report.interrupted == [late.job_id]
    settled = manifest.get_job(late.job_id)
    assert settled.state == JobState.INTERRUPTED and "not ready within" in (settled.error or "")
    assert queues.jobs() == {wired.job_id}  # the interrupted job's queues are gone


def test_cloud_providers_need_control_queues_and_an_events_queue(
    manifest: ManifestStore, tmp_path: Path
) -> None:
    class Cloudy(LocalComputeProvider):
        ready_via_events = True

    job = Job(
        request=TransferRequest(source=f"{tmp_path}/", destination=f"{tmp_path}-d/"),
        state=JobState.PLANNED,
    )
    manifest.create_job(job)
    cp = ControlPlane(manifest=manifest, compute=Cloudy(), event_sink="memory://e")
    with pytest.raises(UsageError, match="control queues") as info:
        cp.start(job.job_id)
    assert "\n" not in str(info.value)
    cp = ControlPlane(
        manifest=manifest, compute=Cloudy(), control_queues=MemoryControlQueues("memory://c")
    )
    with pytest.raises(UsageError, match="events queue"):
        cp.start(job.job_id)
    assert manifest.get_job(job.job_id).state == JobState.PLANNED  # nothing launched
