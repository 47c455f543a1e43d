"""The Azure Storage Queue adapter against Azurite, and the Pub/Sub adapter against the
Google Cloud CLI's Pub/Sub emulator (skipped where that emulator is not installed)."""

from __future__ import annotations

import threading
import uuid

import pytest

from skyhop.errors import UsageError
from skyhop.queues.azure_queue import AzureQueue, parse_azq
from skyhop.queues.base import Queue, open_queue
from skyhop.queues.pubsub import PubSubQueue, parse_pubsub
from tests.suites.queue_suite import QueueSuite


@pytest.fixture
def azq(azurite_server):
    return open_queue(f"azq://devstoreaccount1/q-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def psq(pubsub_server):
    return open_queue(f"pubsub://{pubsub_server.project}/t-{uuid.uuid4().hex[:12]}")


class TestAzureQueueSuite(QueueSuite):
    """The shared Queue suite on Azurite."""

    @pytest.fixture
    def queue(self, azurite_server):
        return open_queue(f"azq://devstoreaccount1/q-{uuid.uuid4().hex[:12]}")


class TestPubSubQueueSuite(QueueSuite):
    """The shared Queue suite on the Pub/Sub emulator."""

    @pytest.fixture
    def queue(self, pubsub_server):
        return open_queue(f"pubsub://{pubsub_server.project}/t-{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=["azure", "pubsub"])
def queue(request):
    return request.getfixturevalue("azq" if request.param == "azure" else "psq")


def drain(q, want: int, wait: float = 10.0):
    got = []
    for _ in range(20):
        got += q.receive(max_messages=10, wait_seconds=wait)
        if len(got) >= want:
            break
    return got


def test_registry_and_protocol(azq):
    assert isinstance(azq, AzureQueue) and isinstance(azq, Queue)


def test_send_receive_ack(queue):
    assert queue.receive(max_messages=5) == []
    queue.send('{"hello": "wörld"}')
    [msg] = drain(queue, 1)
    assert msg.body == '{"hello": "wörld"}'
    assert msg.receive_count == 1
    queue.ack(msg)
    queue.ack(msg)  # twice is harmless
    assert queue.receive(max_messages=5) == []


def test_send_batch_and_max_messages(queue):
    bodies = [f"m{i}" for i in range(7)]
    queue.send_batch(bodies)
    first = queue.receive(max_messages=3, wait_seconds=5)
    assert 1 <= len(first) <= 3
    rest = drain(queue, 7 - len(first))
    got = first + rest
    assert sorted(m.body for m in got) == sorted(bodies)
    for m in got:
        queue.ack(m)


def test_receive_waits_for_a_message(queue):
    timer = threading.Timer(0.5, queue.send, args=("late",))
    timer.start()
    try:
        got = queue.receive(max_messages=1, wait_seconds=15)
    finally:
        timer.join()
    assert [m.body for m in got] == ["late"]
    queue.ack(got[0])


def test_nack_redelivers(queue):
    queue.send("again")
    [msg] = drain(queue, 1)
    queue.nack(msg)
    [again] = drain(queue, 1)
    assert again.body == "again"
    if isinstance(queue, AzureQueue):
        assert again.receive_count == 2  # Pub/Sub counts only with a dead-letter policy
    queue.ack(again)


def test_long_bodies_are_parked_in_a_blob_and_cleaned_up_on_ack(azq, azurite_server):
    from azure.storage.blob import BlobServiceClient

    from skyhop.queues.azure_queue import PAYLOAD_CONTAINER

    long_body = "é" * 70_000
    azq.send_batch(["short", long_body])
    got = drain(azq, 2)
    assert sorted(m.body for m in got) == sorted(["short", long_body])
    container = BlobServiceClient.from_connection_string(
        azurite_server.connection_string
    ).get_container_client(PAYLOAD_CONTAINER)
    assert len([b.name for b in container.list_blobs(name_starts_with=azq.name + "/")]) == 1
    for m in got:
        azq.ack(m)
    assert [b.name for b in container.list_blobs(name_starts_with=azq.name + "/")] == []
    assert azq.receive(max_messages=10) == []


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("azq://devstoreaccount1", "expected azq://ACCOUNT/QUEUE"),
        ("azq://devstoreaccount1/Bad_Name", "is not a queue name"),
        ("azq://devstoreaccount1/a/b", "expected azq://ACCOUNT/QUEUE"),
        ("azq://UPPER/queue", "is not a storage account name"),
    ],
)
def test_bad_azure_uris(uri, problem):
    with pytest.raises(UsageError, match=problem):
        parse_azq(uri)


@pytest.mark.parametrize(
    "uri, problem",
    [
        ("pubsub://proj", "expected pubsub://PROJECT/TOPIC"),
        ("pubsub://my-project/goog-topic", "is not a topic name"),
        ("pubsub://my-project/topic?sub=x", "unknown parameter 'sub'"),
        ("pubsub://my-project/topic?subscription=9x", "is not a subscription name"),
    ],
)
def test_bad_pubsub_uris(uri, problem):
    with pytest.raises(UsageError, match=problem):
        parse_pubsub(uri)


def test_pubsub_subscription_names():
    assert parse_pubsub("pubsub://my-project/events") == (
        "my-project",
        "events",
        "events-skyhop",
    )
    q = PubSubQueue("pubsub://my-project/events?subscription=mine", create=False)
    assert q.subscription_path == "projects/my-project/subscriptions/mine"
