"""The Cloud Functions entry points (functions/gcp/main.py) through functions-framework.

Each function is served by ``functions_framework.create_app`` and called with
a real HTTP CloudEvent (binary mode, ``ce-*`` headers), as Eventarc delivers
it: Cloud Storage events carry the object resource the GCS emulator returns
for the object, Pub/Sub events the push envelope (base64 ``message.data``).
A 200 answer acks the event, a 500 nacks it (Eventarc delivers it again).

The end-to-end transfer: GCS ``finalized`` -> replication -> a TransferRequest
on the requests queue -> ``on_request`` starts real local gateway processes ->
their events -> ``on_gateway_event`` until the job succeeds, bytes compared at
the destination bucket. With the Pub/Sub emulator installed both queues are
Pub/Sub topics and the test pulls from them; without it, requests go through
an in-process queue and gateway events are read from the gateways' outboxes
(``event_sink`` ``pull``), so the adapter is exercised on every machine.
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from pathlib import Path

import functions_framework
import pytest
from cloudevents.http import CloudEvent
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from functions import common
from functions.gcp import main as gcp_main
from skyhop.controlplane import provision
from skyhop.models import EventEnvelope, JobState, ReplicationConfig, ReplicationRule
from skyhop.queues.base import open_queue
from tests.fixtures import events

MAIN = Path(__file__).resolve().parents[1] / "functions" / "gcp" / "main.py"
PROJECT = "skyhop-test"


# ---------------------------------------------------------------- CloudEvents


class Functions:
    """The four entry points, each behind its own functions-framework app."""

    def __init__(self) -> None:
        self.clients = {
            name: functions_framework.create_app(name, str(MAIN)).test_client()
            for name in ("on_gcs_object", "on_request", "on_gateway_event", "reaper")
        }

    def post(self, target: str, ce_type: str, source: str, data: dict, subject: str | None = None):
        headers = {
            "ce-specversion": "1.0",
            "ce-id": uuid.uuid4().hex,
            "ce-source": source,
            "ce-type": ce_type,
            "ce-time": "2026-11-01T10:00:00.000Z",
            "Content-Type": "application/json",
        }
        if subject:
            headers["ce-subject"] = subject
        return self.clients[target].post("/", headers=headers, data=json.dumps(data))

    def gcs(self, kind: str, resource: dict):
        return self.post(
            "on_gcs_object",
            f"google.cloud.storage.object.v1.{kind}",
            f"//storage.googleapis.com/projects/_/buckets/{resource['bucket']}",
            resource,
            subject=f"objects/{resource['name']}",
        )

    def pubsub(self, target: str, topic: str, body: str | bytes, delivery: int = 0):
        raw = body.encode() if isinstance(body, str) else body
        data = {
            "message": {
                "data": base64.b64encode(raw).decode(),
                "attributes": {},
                "messageId": str(uuid.uuid4().int)[:16],
                "publishTime": "2026-11-01T10:00:00.123Z",
            },
            "subscription": f"projects/{PROJECT}/subscriptions/eventarc-{topic}-sub",
        }
        if delivery:
            data["deliveryAttempt"] = delivery
        return self.post(
            target,
            "google.cloud.pubsub.topic.v1.messagePublished",
            f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{topic}",
            data,
        )


@pytest.fixture(scope="module")
def fns() -> Functions:
    return Functions()


@pytest.fixture
def gcs(gcs_server):
    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())


def _bucket(gcs) -> str:
    name = "b" + uuid.uuid4().hex[:16]
    gcs.create_bucket(name)
    return name


def _upload(gcs, bucket: str, key: str, body: bytes) -> dict:
    """Write an object and return its resource: the data of its CloudEvents."""
    blob = gcs.bucket(bucket).blob(key)
    blob.upload_from_string(body)
    blob.reload()
    return dict(blob._properties)


@pytest.fixture
def env(gcs_server, tmp_path, monkeypatch):
    monkeypatch.setenv("SKYHOP_MANIFEST", f"sqlite:///{tmp_path / 'manifest.db'}")
    monkeypatch.setenv("SKYHOP_COMPUTE", "local")
    monkeypatch.setenv("SKYHOP_REQUESTS_QUEUE", f"memory://requests-{uuid.uuid4().hex[:8]}")
    monkeypatch.delenv("SKYHOP_EVENTS_QUEUE", raising=False)
    common.reset()
    yield monkeypatch
    common.reset()
    try:
        cp = common.control_plane()
    except common.ConfigError:
        return
    for job_id in {g.job_id for g in cp.compute.list_gateways()}:
        cp.teardown(job_id)
    common.reset()


def _rules(monkeypatch, **rule) -> None:
    config = ReplicationConfig(rules=[ReplicationRule(name="r1", **rule)])
    monkeypatch.setenv("SKYHOP_RULES", config.model_dump_json())
    common.reset()


def _job(job_id: str):
    return common.control_plane().manifest.get_job(job_id)


# ---------------------------------------------------------------- the transfer


@pytest.fixture(params=["outbox", "pubsub"])
def transport(request, env):
    """Where requests and gateway events travel: Pub/Sub topics (emulator), or an
    in-process queue and the gateways' outboxes."""
    if request.param == "pubsub":
        server = request.getfixturevalue("pubsub_server")
        tag = uuid.uuid4().hex[:8]
        requests_uri = f"pubsub://{server.project}/requests-{tag}"
        events_uri = f"pubsub://{server.project}/events-{tag}"
        env.setenv("SKYHOP_REQUESTS_QUEUE", requests_uri)
        env.setenv("SKYHOP_EVENTS_QUEUE", events_uri)
        common.reset()
        # the pull subscriptions must exist before anything is published
        open_queue(requests_uri).receive(wait_seconds=0)
        open_queue(events_uri).receive(wait_seconds=0)
    return request.param


def _pull(uri: str, wait: float) -> list[str]:
    queue = open_queue(uri)
    out = []
    for message in queue.receive(max_messages=100, wait_seconds=wait):
        out.append(message.body)
        queue.ack(message)
    return out


class OutboxPump:
    """Reads the job's gateways' outboxes (``event_sink`` ``pull``), as queue bodies."""

    def __init__(self, job_id: str) -> None:
        job = _job(job_id)
        self.clients = [provision.gateway_client(job.runtime, g) for g in job.runtime.gateways]
        self.cursors = [0] * len(self.clients)

    def __call__(self) -> list[str]:
        out = []
        for n, client in enumerate(self.clients):
            events, self.cursors[n] = client.events(after=self.cursors[n], wait=0.2)
            out += [EventEnvelope(event=e).model_dump_json() for e in events]
        return out


def test_gcs_finalized_drives_a_transfer_through_gateways(fns, env, gcs, transport):
    src, dst = _bucket(gcs), _bucket(gcs)
    small, large = os.urandom(2000), os.urandom(250_000)
    _rules(
        env,
        source_bucket=src,
        prefix="data/",
        destination=f"gs://{dst}/copy/",
        inline_max_bytes=10_000,
    )
    settings = common.settings()

    small_obj = _upload(gcs, src, "data/small.bin", small)
    assert int(small_obj["size"]) == len(small) and small_obj["generation"]
    assert fns.gcs("finalized", small_obj).status_code == 200
    assert gcs.bucket(dst).blob("copy/small.bin").download_as_bytes() == small

    large_obj = _upload(gcs, src, "data/sub/large.bin", large)
    assert fns.gcs("finalized", large_obj).status_code == 200
    if transport == "pubsub":
        (request_body,) = _pull(settings.requests_queue, wait=10)
    else:
        (message,) = open_queue(settings.requests_queue).receive(max_messages=10)
        request_body = message.body
    assert json.loads(request_body)["keys"] == ["sub/large.bin"]

    assert fns.pubsub("on_request", "requests", request_body).status_code == 200
    (job,) = common.control_plane().manifest.list_jobs()
    assert job.state == JobState.RUNNING
    pump = (
        (lambda: _pull(settings.events_queue, wait=0.5))
        if transport == "pubsub"
        else OutboxPump(job.job_id)
    )

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not _job(job.job_id).state.finished:
        for body in pump():
            assert fns.pubsub("on_gateway_event", "events", body).status_code == 200
    job = _job(job.job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert gcs.bucket(dst).blob("copy/sub/large.bin").download_as_bytes() == large
    assert common.control_plane().compute.list_gateways(job.job_id) == []

    # a redelivered request does not start the job again
    assert fns.pubsub("on_request", "requests", request_body, delivery=2).status_code == 200
    assert [j.job_id for j in common.control_plane().manifest.list_jobs()] == [job.job_id]


# ---------------------------------------------------------------- bucket events


def test_deleted_archived_and_overwritten_objects(fns, env, gcs):
    src, dst = _bucket(gcs), _bucket(gcs)
    _rules(env, source_bucket=src, destination=f"gs://{dst}/", propagate_deletes=True)
    gone = _upload(gcs, src, "gone.txt", b"v1")
    assert fns.gcs("finalized", gone).status_code == 200
    assert gcs.bucket(dst).blob("gone.txt").exists()
    gcs.bucket(src).blob("gone.txt").delete()
    assert fns.gcs("deleted", gone).status_code == 200
    assert not gcs.bucket(dst).blob("gone.txt").exists()

    # an overwrite sends `deleted` for the replaced generation: the copy must stay
    old = _upload(gcs, src, "kept.txt", b"v1")
    fns.gcs("finalized", old)
    new = _upload(gcs, src, "kept.txt", b"v2")
    assert fns.gcs("deleted", old).status_code == 200
    assert fns.gcs("finalized", new).status_code == 200
    assert gcs.bucket(dst).blob("kept.txt").download_as_bytes() == b"v2"

    # metadata updates are not replicated
    assert fns.gcs("metadataUpdated", new).status_code == 200


def test_published_storage_object_data_with_a_numeric_generation(fns, env, gcs, capsys):
    """#21 item 8: int64 fields as JSON numbers, as proto3 JSON allows and
    google-cloudevents' StorageObjectData-complex.json has them (the fields naming
    the object replaced, the rest as published): the object is copied, not dropped."""
    src, dst = _bucket(gcs), _bucket(gcs)
    _rules(env, source_bucket=src, destination=f"gs://{dst}/")
    written = _upload(gcs, src, "MyFile", b"numbers")
    data = events.load("StorageObjectData-complex.json")
    assert isinstance(data["generation"], int) and isinstance(data["size"], int)
    data.update(bucket=src, name="MyFile", size=7, generation=int(written["generation"]))
    capsys.readouterr()
    assert fns.gcs("finalized", data).status_code == 200
    assert gcs.bucket(dst).blob("MyFile").download_as_bytes() == b"numbers"
    assert _error_lines(capsys) == []
    # both published samples read the same: generation as text, whatever its JSON type
    for name, generation in (
        ("StorageObjectData-complex.json", "96883251"),
        ("StorageObjectDataWorkflows-simple.json", "1637874272256630"),
    ):
        sample = events.load(name)
        event = CloudEvent(
            {"type": "google.cloud.storage.object.v1.finalized", "source": "//storage"}, sample
        )
        found = gcp_main.object_event(event)
        assert found is not None and found.etag == generation and found.size == int(sample["size"])


def test_event_for_an_object_changed_since_is_skipped(fns, env, gcs):
    src, dst = _bucket(gcs), _bucket(gcs)
    _rules(env, source_bucket=src, destination=f"gs://{dst}/")
    first = _upload(gcs, src, "k.txt", b"first")
    _upload(gcs, src, "k.txt", b"second")
    assert fns.gcs("finalized", first).status_code == 200  # its own event copies "second"
    assert not gcs.bucket(dst).blob("k.txt").exists()


# ---------------------------------------------------------------- ack / nack


def _error_lines(capsys) -> list[dict]:
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    return [line for line in lines if line["severity"] == "ERROR"]


def test_bad_messages_are_acked_with_one_error_line(fns, env, capsys):
    capsys.readouterr()
    cases = [
        ("on_request", b"not json"),
        ("on_request", json.dumps({"source": "/tmp/x"})),
        ("on_request", json.dumps({"source": "nope://x", "destination": "/tmp/y"})),
        ("on_gateway_event", b'{"event": {"type": "chunk_verified", "job_id": "j"}}'),
    ]
    for target, body in cases:
        assert fns.pubsub(target, "t", body).status_code == 200, (target, body)
    errors = _error_lines(capsys)
    assert len(errors) == len(cases)
    assert "invalid request: destination: Field required" in errors[1]["message"]
    assert "source" in errors[2]["message"]
    assert common.control_plane().manifest.list_jobs() == []

    # not base64, no message at all
    assert (
        fns.post(
            "on_request",
            "google.cloud.pubsub.topic.v1.messagePublished",
            "//pubsub",
            {"message": {"data": "%%%"}},
        ).status_code
        == 200
    )
    assert (
        fns.post(
            "on_request", "google.cloud.pubsub.topic.v1.messagePublished", "//pubsub", {"x": 1}
        ).status_code
        == 200
    )
    errors = _error_lines(capsys)
    assert len(errors) == 2
    assert (
        "not base64" in errors[0]["message"] and "message: Field required" in errors[1]["message"]
    )


def test_plain_pubsub_push_envelope_is_understood(fns, env, tmp_path, capsys):
    """A push subscription posting straight to the function (no CloudEvent headers):
    functions-framework converts the envelope, the body is decoded and validated."""
    missing = tmp_path / "no-such-dir"
    body = json.dumps({"source": f"{missing}/", "destination": f"{tmp_path}/out/"})
    envelope = {
        "message": {
            "data": base64.b64encode(body.encode()).decode(),
            "messageId": "1234567890",
            "publishTime": "2026-11-01T10:00:00.123Z",
            "attributes": {},
        },
        "subscription": f"projects/{PROJECT}/subscriptions/push-sub",
    }
    capsys.readouterr()
    response = fns.clients["on_request"].post("/", json=envelope)
    assert response.status_code == 200
    (error,) = _error_lines(capsys)
    assert error["message"].startswith("request: dropped:") and str(missing) in error["message"]
    # no request_id in the body: the request is known by its Pub/Sub message id
    assert error["request_id"] == "msg-1234567890"


def test_missing_bucket_field_is_dropped(fns, env, capsys):
    _rules(env, source_bucket="bkt1", destination="gs://bkt2/")
    capsys.readouterr()
    response = fns.post(
        "on_gcs_object",
        "google.cloud.storage.object.v1.finalized",
        "//storage.googleapis.com/projects/_/buckets/bkt1",
        {"name": "k", "size": "3"},
    )
    assert response.status_code == 200
    (error,) = _error_lines(capsys)
    assert "bucket: Field required" in error["message"]


def test_transient_errors_nack_until_the_delivery_cap(fns, env, capsys):
    """No rules configured (a deployment error): the event is nacked (500) so it
    comes again; on the fifth delivery attempt it is acked with an error line."""
    env.setenv("SKYHOP_MANIFEST", "bogus://x")
    common.reset()
    body = '{"source": "/tmp/a/", "destination": "/tmp/b/"}'
    assert fns.pubsub("on_request", "t", body, delivery=1).status_code == 500
    capsys.readouterr()
    assert fns.pubsub("on_request", "t", body, delivery=5).status_code == 200
    (error,) = _error_lines(capsys)
    assert (
        "gave up after 5 deliveries" in error["message"] and "SKYHOP_MANIFEST" in error["message"]
    )


def test_reaper_over_http(fns, env):
    response = fns.clients["reaper"].get("/")
    assert response.status_code == 200
    body = response.get_json()
    assert body["redispatched"] == 0
    # every list of the sweep (jobs failed, finished, interrupted, resumed, orphans...) empty
    assert {k: v for k, v in body.items() if k != "redispatched"} == {
        k: [] for k in body if k != "redispatched"
    }
    assert {"jobs_failed", "orphans_terminated", "jobs_finished", "interrupted"} <= body.keys()


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("SKYHOP_COMPUTE", "mainframe", "environment variable SKYHOP_COMPUTE: Input should be"),
        ("SKYHOP_RULES", "{not json", "environment variable SKYHOP_RULES: Value error, not JSON"),
        ("SKYHOP_RULES", '{"rules": [{"name": "r"}]}', "environment variable SKYHOP_RULES: Field"),
        (
            "SKYHOP_MAX_DELIVERIES",
            "0",
            "environment variable SKYHOP_MAX_DELIVERIES: Input should be",
        ),
        ("SKYHOP_COMPUTE_OPTIONS", "[1]", "environment variable SKYHOP_COMPUTE_OPTIONS"),
        ("SKYHOP_MANIFEST", "sqlite://relative.db", "expected sqlite:///ABSOLUTE/PATH"),
    ],
)
def test_bad_environment_is_one_line_naming_the_variable(env, name, value, message):
    env.setenv(name, value)
    common.reset()
    with pytest.raises(common.ConfigError) as info:
        common.control_plane()
    assert message in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- storage notifications

NOTIFICATION = Path(__file__).resolve().parent / "events" / "gcs_notification_finalize_push.json"


def _notification(bucket: str, resource: dict, event_type: str = "OBJECT_FINALIZE", **attrs):
    """tests/events/gcs_notification_finalize_push.json (a Cloud Storage notification
    as fake-gcs-server publishes it to the Pub/Sub emulator, in the push envelope the
    emulator POSTs; format: Cloud Storage "Pub/Sub notifications", JSON_API_V1),
    re-aimed at ``resource`` in ``bucket``."""
    envelope = json.loads(NOTIFICATION.read_text())
    message = envelope["message"]
    message["attributes"].update(
        bucketId=bucket,
        objectId=resource["name"],
        objectGeneration=str(resource["generation"]),
        eventType=event_type,
        **attrs,
    )
    data = json.loads(base64.b64decode(message["data"]))
    data.update({k: resource[k] for k in ("bucket", "name", "generation", "size", "md5Hash")})
    message["data"] = base64.b64encode(json.dumps(data).encode()).decode()
    return envelope


def test_storage_notifications_pushed_by_pubsub_replicate(fns, env, gcs, capsys):
    src, dst = _bucket(gcs), _bucket(gcs)
    _rules(env, source_bucket=src, prefix="data/", destination=f"gs://{dst}/copy/")
    resource = _upload(gcs, src, "data/report.csv", b"a,b\n1,2\n")
    push = fns.clients["on_gcs_object"].post("/", json=_notification(src, resource))
    assert push.status_code == 200
    assert gcs.bucket(dst).blob("copy/report.csv").download_as_bytes() == b"a,b\n1,2\n"

    # metadata updates are not replicated; a notification without its object is dropped
    capsys.readouterr()
    meta = _notification(src, resource, "OBJECT_METADATA_UPDATE")
    assert fns.clients["on_gcs_object"].post("/", json=meta).status_code == 200
    bare = _notification(src, resource, payloadFormat="NONE")
    assert fns.clients["on_gcs_object"].post("/", json=bare).status_code == 200
    (error,) = _error_lines(capsys)
    assert "payloadFormat NONE" in error["message"]

    gcs.bucket(src).blob("data/report.csv").delete()
    _rules(
        env,
        source_bucket=src,
        prefix="data/",
        destination=f"gs://{dst}/copy/",
        propagate_deletes=True,
    )
    gone = _notification(src, resource, "OBJECT_DELETE")
    assert fns.clients["on_gcs_object"].post("/", json=gone).status_code == 200
    assert gcs.bucket(dst).get_blob("copy/report.csv") is None
