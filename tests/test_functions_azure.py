"""The Azure Functions app (functions/azure/function_app.py) with real payloads.

Queue messages and Event Grid events are built by the azure-functions library's
own trigger converters, from the same data the Functions host hands the Python
worker (the queue text after the host's base64 decoding, the Event Grid JSON).
Storage and queues are Azurite; gateways are real local processes posting
their events to an Azurite queue, which the test feeds, message by message, to
the gateway-events function, deleting each one the function settles, as the
host does.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
import uuid
from pathlib import Path

import azure.functions as func
import pytest
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.meta import Datum
from azure.functions.queue import QueueMessageInConverter
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from functions import common
from functions.azure import function_app as fa
from skyhop.models import (
    EventEnvelope,
    GatewayReady,
    JobState,
    ReplicationConfig,
    ReplicationRule,
    TransferRequest,
)
from skyhop.queues.azure_queue import AzureQueue
from tests.fixtures import events

ACCOUNT = "devstoreaccount1"
HOST_JSON = Path(fa.__file__).with_name("host.json")


# ---------------------------------------------------------------- payload builders


def queue_message(text: str, *, dequeue_count: int = 1, msg_id: str | None = None):
    """A QueueMessage exactly as the Python worker builds it from the host's invocation."""
    meta = {
        "Id": Datum(msg_id or uuid.uuid4().hex, "string"),
        "DequeueCount": Datum(dequeue_count, "int"),
        "PopReceipt": Datum("pop", "string"),
        "InsertionTime": Datum("2026-11-01T10:00:00+00:00", "string"),
        "ExpirationTime": Datum("2026-11-08T10:00:00+00:00", "string"),
        "NextVisibleTime": Datum("2026-11-01T10:00:10+00:00", "string"),
    }
    return QueueMessageInConverter.decode(Datum(text, "string"), trigger_metadata=meta)


def blob_event(kind: str, container: str, blob: str, *, size: int = 0, etag: str = "", **data):
    """An Event Grid ``Microsoft.Storage.Blob*`` event, as the worker decodes it."""
    body = {
        "topic": (
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg"
            f"/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
        ),
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
        "eventType": f"Microsoft.Storage.{kind}",
        "eventTime": "2026-11-01T10:00:00.9584103Z",
        "id": str(uuid.uuid4()),
        "data": {
            "api": "PutBlob" if kind == "BlobCreated" else "DeleteBlob",
            "clientRequestId": str(uuid.uuid4()),
            "requestId": str(uuid.uuid4()),
            "eTag": etag,
            "contentType": "application/octet-stream",
            "contentLength": size,
            "blobType": "BlockBlob",
            "url": f"https://{ACCOUNT}.blob.core.windows.net/{container}/{blob}",
            "sequencer": "00000000000004420000000000028963",
            "storageDiagnostics": {"batchId": str(uuid.uuid4())},
            **data,
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }
    return EventGridEventInConverter.decode(Datum(json.dumps(body), "json"), trigger_metadata={})


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def blobs(azurite_server):
    return BlobServiceClient.from_connection_string(azurite_server.connection_string)


def _container(blobs) -> str:
    name = "c" + uuid.uuid4().hex[:16]
    blobs.create_container(name)
    return name


class Queues:
    def __init__(self, conn: str) -> None:
        self.conn = conn
        self.names = {k: f"{k}-{uuid.uuid4().hex[:10]}" for k in ("req", "evt", "res")}
        for name in self.names.values():
            QueueClient.from_connection_string(conn, name).create_queue()

    def uri(self, key: str) -> str:
        return f"azq://{ACCOUNT}/{self.names[key]}"

    def raw(self, key: str) -> QueueClient:
        """The queue without a decode policy: message text as stored (base64)."""
        return QueueClient.from_connection_string(self.conn, self.names[key])

    def feed(self, key: str, process, *, max_messages: int = 32) -> list[common.Handled]:
        """Hand each visible message to ``process`` as the host would: decoded, then
        deleted when the function returns (left for redelivery when it raises)."""
        client = self.raw(key)
        out = []
        for m in client.receive_messages(max_messages=max_messages, visibility_timeout=30):
            text = base64.b64decode(m.content).decode("utf-8")
            result = process(queue_message(text, dequeue_count=m.dequeue_count, msg_id=m.id))
            client.delete_message(m.id, m.pop_receipt)
            out.append(result)
        return out


@pytest.fixture
def env(azurite_server, tmp_path, monkeypatch):
    queues = Queues(azurite_server.connection_string)
    monkeypatch.setenv("SKYHOP_MANIFEST", f"sqlite:///{tmp_path / 'manifest.db'}")
    monkeypatch.setenv("SKYHOP_COMPUTE", "local")
    monkeypatch.setenv("SKYHOP_EVENTS_QUEUE", queues.uri("evt"))
    monkeypatch.setenv("SKYHOP_REQUESTS_QUEUE", queues.uri("req"))
    monkeypatch.setenv("SKYHOP_RESULTS_QUEUE", queues.uri("res"))
    monkeypatch.setenv("SKYHOP_REQUESTS_QUEUE_NAME", queues.names["req"])
    monkeypatch.setenv("SKYHOP_EVENTS_QUEUE_NAME", queues.names["evt"])
    # requests may use the test's directory (and what a test allows besides)
    monkeypatch.setenv("SKYHOP_TRANSFER_LOCATIONS", f"file://{tmp_path}/")
    common.reset()
    yield queues
    common.reset()
    try:
        cp = common.control_plane()
    except common.ConfigError:
        return  # the test broke the environment on purpose
    for job_id in {g.job_id for g in cp.compute.list_gateways()}:
        cp.teardown(job_id)
    common.reset()


def _allow(monkeypatch, *uris: str) -> None:
    """Let requests use ``uris`` besides the test's directory."""
    monkeypatch.setenv(
        "SKYHOP_TRANSFER_LOCATIONS", ",".join([os.environ["SKYHOP_TRANSFER_LOCATIONS"], *uris])
    )
    common.reset()


def _rules(monkeypatch, **rule) -> None:
    config = ReplicationConfig(rules=[ReplicationRule(name="r1", **rule)])
    monkeypatch.setenv("SKYHOP_RULES", config.model_dump_json())
    common.reset()


def _results(queues: Queues) -> list[dict]:
    q = AzureQueue(queues.uri("res"), create=False)
    out = []
    for m in q.receive(max_messages=32):
        out.append(json.loads(m.body))
        q.ack(m)
    return out


def _jobs() -> list:
    return common.control_plane().manifest.list_jobs(limit=10)


# ---------------------------------------------------------------- the app


def test_app_indexes_the_four_functions_with_their_triggers():
    functions = {
        f.get_function_name(): f.get_bindings_dict()["bindings"] for f in fa.app.get_functions()
    }
    assert set(functions) == {"on_request", "on_gateway_event", "on_blob_event", "reaper"}
    (req,) = functions["on_request"]
    assert (req["type"], req["queueName"], req["connection"]) == (
        "queueTrigger",
        "%SKYHOP_REQUESTS_QUEUE_NAME%",
        "AzureWebJobsStorage",
    )
    (evt,) = functions["on_gateway_event"]
    assert (evt["type"], evt["queueName"]) == ("queueTrigger", "%SKYHOP_EVENTS_QUEUE_NAME%")
    assert functions["on_blob_event"][0]["type"] == "eventGridTrigger"
    assert functions["reaper"][0]["type"] == "timerTrigger"
    host = json.loads(HOST_JSON.read_text())
    queues = host["extensions"]["queues"]
    # the host gives up exactly when the functions do: nothing reaches the poison queue unlogged
    assert queues["maxDequeueCount"] == common.Settings().max_deliveries
    assert queues["messageEncoding"] == "base64"


# ---------------------------------------------------------------- one transfer, end to end


def test_blob_event_request_and_gateway_events_drive_a_transfer(env, blobs, monkeypatch):
    """BlobCreated -> replication: the small blob is copied by the function, the
    large one becomes a TransferRequest on the requests queue -> on_request starts
    gateways (local processes) posting to the events queue -> on_gateway_event,
    fed message by message, verifies every chunk and finishes the job."""
    src, dst = _container(blobs), _container(blobs)
    small, large = os.urandom(3000), os.urandom(300_000)
    etags = {}
    for key, body in (("in/small.bin", small), ("in/deep/large.bin", large)):
        etags[key] = blobs.get_blob_client(src, key).upload_blob(body)["etag"]
    _rules(
        monkeypatch,
        source_bucket=src,
        prefix="in/",
        destination=f"az://{ACCOUNT}/{dst}/out/",
        inline_max_bytes=64 * 1024,
    )

    done = fa.process_blob_event(
        blob_event("BlobCreated", src, "in/small.bin", size=len(small), etag=etags["in/small.bin"])
    )
    assert done.action == "done" and [o.action for o in done.outcomes] == ["copied"]
    assert blobs.get_blob_client(dst, "out/small.bin").download_blob().readall() == small

    queued = fa.process_blob_event(
        blob_event(
            "BlobCreated",
            src,
            "in/deep/large.bin",
            size=len(large),
            etag=etags["in/deep/large.bin"],
        )
    )
    assert [o.action for o in queued.outcomes] == ["queued"]

    started = env.feed("req", fa.process_request)
    assert [h.action for h in started] == ["done"], started
    job_id = started[0].job_id
    job = common.control_plane().manifest.get_job(job_id)
    assert job.state == JobState.RUNNING and job.request.keys == ["deep/large.bin"]

    settled = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        settled += env.feed("evt", fa.process_gateway_event)
        if common.control_plane().manifest.get_job(job_id).state.finished:
            break
        time.sleep(0.2)
    job = common.control_plane().manifest.get_job(job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    assert all(h.action == "done" for h in settled)
    assert blobs.get_blob_client(dst, "out/deep/large.bin").download_blob().readall() == large
    assert common.control_plane().compute.list_gateways(job_id) == []

    results = _results(env)
    assert {
        "type": "job_started",
        "request_id": job.request.request_id,
        "job_id": job_id,
    } in results
    (report,) = [r for r in results if r.get("job_id") == job_id and "state" in r]
    assert report["state"] == "succeeded" and report["bytes"] == len(large)


# ---------------------------------------------------------------- bad input and retries


def test_malformed_request_is_dropped_with_one_error_line_and_nothing_started(env, caplog):
    caplog.set_level(logging.ERROR, logger=common.LOGGER_NAME)
    handled = fa.process_request(queue_message('{"source": "az://x", "destination": 3'))
    assert handled.action == "dropped"
    handled = fa.process_request(
        queue_message(json.dumps({"source": "/tmp/a", "request_id": "r9"}))
    )
    assert handled.action == "dropped" and "destination" in handled.detail
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("\n" not in line for line in lines)
    assert "request: dropped: invalid request: destination: Field required" in lines[1]
    assert _jobs() == []
    rejected = _results(env)
    assert [r["type"] for r in rejected] == ["request_rejected", "request_rejected"]
    assert rejected[1]["request_id"] == "r9"


def test_request_for_a_missing_container_is_rejected_not_retried(env, blobs, tmp_path, monkeypatch):
    dst = _container(blobs)
    _allow(monkeypatch, f"az://{ACCOUNT}/nosuchcontainer1/", f"az://{ACCOUNT}/{dst}/")
    request = TransferRequest(
        source=f"az://{ACCOUNT}/nosuchcontainer1/",
        destination=f"az://{ACCOUNT}/{dst}/",
        reply_to=env.uri("res"),
    )
    handled = fa.process_request(queue_message(request.model_dump_json()))
    assert handled.action == "dropped" and "nosuchcontainer1" in handled.detail
    (rejected,) = _results(env)
    assert rejected["type"] == "request_rejected" and rejected["request_id"] == request.request_id
    assert common.control_plane().compute.list_gateways() == []


def test_request_without_an_id_is_known_by_its_queue_message_id(env, blobs, monkeypatch):
    """Azure keeps a message's id across deliveries: a request that came without a
    request_id takes it, so its rejection (or its job) names that id."""
    dst = _container(blobs)
    _allow(monkeypatch, f"az://{ACCOUNT}/nosuchcontainer2/", f"az://{ACCOUNT}/{dst}/")
    body = json.dumps(
        {
            "source": f"az://{ACCOUNT}/nosuchcontainer2/",
            "destination": f"az://{ACCOUNT}/{dst}/",
            "reply_to": env.uri("res"),
        }
    )
    handled = fa.process_request(queue_message(body, msg_id="4f1c-az-msg"))
    assert handled.action == "dropped" and "nosuchcontainer2" in handled.detail
    (rejected,) = _results(env)
    assert rejected["type"] == "request_rejected" and rejected["request_id"] == "msg-4f1c-az-msg"


def test_parked_request_body_is_fetched_and_its_blob_deleted(env, blobs, tmp_path):
    """A request over 64 KiB travels as a claim check; the function reads the parked body."""
    src = tmp_path / "src"
    src.mkdir()
    request = TransferRequest(
        source=str(src) + "/",
        destination=str(tmp_path / "dst") + "/",
        keys=[f"missing/key-{n:05d}.bin" for n in range(4000)],
    )
    AzureQueue(env.uri("req")).send(request.model_dump_json())
    (raw,) = env.raw("req").peek_messages()
    assert base64.b64decode(raw.content).startswith(b"skyhop-payload:v1:")
    (handled,) = env.feed("req", fa.process_request)
    # the body was resolved and validated: the request failed on its keys, not on the message
    assert handled.action == "dropped" and "none of the 4000 keys exist" in handled.detail
    container = blobs.get_container_client("skyhop-queue-payloads")
    assert [b.name for b in container.list_blobs(name_starts_with=env.names["req"])] == []


def test_malformed_gateway_events_are_dropped(env, caplog):
    caplog.set_level(logging.ERROR, logger=common.LOGGER_NAME)
    for text in ("not json", '{"event": {"type": "chunk_verified"}}', '{"type": "nope"}'):
        assert fa.process_gateway_event(queue_message(text)).action == "dropped"
    assert len(caplog.records) == 3
    assert all(
        r.getMessage().startswith("gateway event: dropped: invalid gateway event")
        for r in caplog.records
    )


def test_transient_errors_raise_until_the_delivery_cap(env, monkeypatch, caplog):
    """A broken environment is transient (fix the deployment, the message comes
    again); on the fifth delivery the message is dropped with an error line."""
    monkeypatch.setenv("SKYHOP_MANIFEST", "bogus://nowhere")
    common.reset()
    body = EventEnvelope(
        event=GatewayReady(
            job_id="j1", gateway_id="g1", host="127.0.0.1", data_port=1, control_port=2
        )
    ).model_dump_json()
    with pytest.raises(common.ConfigError, match="SKYHOP_MANIFEST"):
        fa.process_gateway_event(queue_message(body, dequeue_count=1))
    caplog.set_level(logging.ERROR, logger=common.LOGGER_NAME)
    handled = fa.process_gateway_event(queue_message(body, dequeue_count=5))
    assert handled.action == "dropped" and "gave up after 5 deliveries" in handled.detail


def test_blob_events_ignored_deleted_and_bad(env, blobs, monkeypatch, caplog):
    src, dst = _container(blobs), _container(blobs)
    _rules(
        monkeypatch, source_bucket=src, destination=f"az://{ACCOUNT}/{dst}/", propagate_deletes=True
    )
    blobs.get_blob_client(dst, "gone.txt").upload_blob(b"old copy")
    blobs.get_blob_client(dst, "back.txt").upload_blob(b"old copy")
    blobs.get_blob_client(src, "back.txt").upload_blob(b"re-created")

    deleted = fa.process_blob_event(blob_event("BlobDeleted", src, "gone.txt"))
    assert [o.action for o in deleted.outcomes] == ["deleted"]
    assert not blobs.get_blob_client(dst, "gone.txt").exists()
    # the source key holds a blob again: its BlobCreated copies it, the delete is skipped
    kept = fa.process_blob_event(blob_event("BlobDeleted", src, "back.txt"))
    assert kept.outcomes == [] and blobs.get_blob_client(dst, "back.txt").exists()

    renamed = blob_event("BlobRenamed", src, "x.txt")
    assert fa.process_blob_event(renamed).detail == "ignored"
    empty = blob_event("BlobCreated", src, "adls/file", api="CreateFile")
    assert fa.process_blob_event(empty).detail == "ignored"

    caplog.set_level(logging.ERROR, logger=common.LOGGER_NAME)
    bad = blob_event("BlobCreated", src, "x.txt", url=None)
    handled = fa.process_blob_event(bad)
    assert handled.action == "dropped" and "url" in handled.detail
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def _decoded(body: dict):
    """An event as the worker hands it to the function (CloudEvent or EventGridEvent)."""
    return EventGridEventInConverter.decode(Datum(json.dumps(body), "json"), trigger_metadata={})


def test_cloudevents_schema_blob_events_replicate(env, blobs, monkeypatch, caplog):
    """#21 item 9: an Event Grid subscription in the CloudEvents 1.0 schema (the Azure
    docs' samples, account/container/blob replaced) replicates like the Event Grid
    schema; an event of neither kind is dropped with one error line."""
    src, dst = _container(blobs), _container(blobs)
    _rules(
        monkeypatch, source_bucket=src, destination=f"az://{ACCOUNT}/{dst}/", propagate_deletes=True
    )
    blobs.get_blob_client(src, "new-file.txt").upload_blob(b"cloud events")
    blobs.get_blob_client(dst, "file-to-delete.txt").upload_blob(b"old copy")
    account = f"/storageAccounts/{ACCOUNT}"

    def named(sample: dict, blob: str) -> dict:
        out = json.loads(json.dumps(sample).replace("/storageAccounts/my-storage-account", account))
        out["subject"] = f"/blobServices/default/containers/{src}/blobs/{blob}"
        out["data"]["url"] = f"https://{ACCOUNT}.blob.core.windows.net/{src}/{blob}"
        out["data"].pop("eTag", None)
        return out

    [created] = events.load("azure-BlobCreated.cloudevents.json")
    event = _decoded(named(created, "new-file.txt"))
    assert isinstance(event, func.CloudEvent)
    handled = fa.process_blob_event(event)
    assert [o.action for o in handled.outcomes] == ["copied"]
    assert blobs.get_blob_client(dst, "new-file.txt").download_blob().readall() == b"cloud events"
    [deleted] = events.load("azure-BlobDeleted.cloudevents.json")
    handled = fa.process_blob_event(_decoded(named(deleted, "file-to-delete.txt")))
    assert [o.action for o in handled.outcomes] == ["deleted"]
    assert not blobs.get_blob_client(dst, "file-to-delete.txt").exists()

    # the published samples as they are, in both schemas, read the same
    [grid] = events.load("azure-BlobCreated.eventgrid.json")
    for body in (created, grid):
        found = fa.object_event(_decoded(body))
        assert found is not None
        assert (found.kind, found.uri, found.size, found.etag) == (
            "created",
            "az://my-storage-account/test-container/new-file.txt",
            524288,
            '"0x8D4BCC2E4835CD0"',
        )
    caplog.set_level(logging.ERROR, logger=common.LOGGER_NAME)
    handled = fa.process_blob_event(object())  # type: ignore[arg-type]
    assert handled.action == "dropped"
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_blob_uri_from_topic_subject_or_url():
    topic = (
        f"/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}"
    )
    assert fa.blob_uri(topic, "/blobServices/default/containers/c1/blobs/a/b c.txt", "") == (
        f"az://{ACCOUNT}/c1/a/b c.txt"
    )
    assert fa.blob_uri(None, None, "https://acct1.blob.core.windows.net/c1/a/b%20c.txt") == (
        "az://acct1/c1/a/b c.txt"
    )
    assert (
        fa.blob_uri(None, None, f"http://127.0.0.1:10000/{ACCOUNT}/c1/k") == f"az://{ACCOUNT}/c1/k"
    )
    with pytest.raises(common.BadMessage, match="names no account"):
        fa.blob_uri(None, None, "https://acct1.blob.core.windows.net/c1")


def test_reaper_tears_down_orphans(env):
    report = fa.process_reaper()
    assert report.jobs_failed == [] and report.orphans_terminated == []


def test_queue_message_is_the_worker_type():
    msg = queue_message("hello", dequeue_count=3)
    assert isinstance(msg, func.QueueMessage) and msg.dequeue_count == 3
    assert msg.get_body() == b"hello"
