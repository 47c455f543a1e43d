"""The Azure Storage Queue adapter against Azurite (the Pub/Sub adapter is in
tests/test_queue_pubsub.py)."""

from __future__ import annotations

import uuid

import pytest

from skyhop.errors import UsageError
from skyhop.queues.azure_queue import AzureQueue, parse_azq
from skyhop.queues.base import Queue, open_queue
from tests.suites.queue_suite import QueueSuite


@pytest.fixture
def azq(azurite_server):
    return open_queue(f"azq://devstoreaccount1/q-{uuid.uuid4().hex[:12]}")


class TestAzureQueueSuite(QueueSuite):
    """The shared Queue suite on Azurite."""

    @pytest.fixture
    def queue(self, azurite_server):
        return open_queue(f"azq://devstoreaccount1/q-{uuid.uuid4().hex[:12]}")


def drain(q, want: int, wait: float = 10.0):
    got = []
    for _ in range(20):
        got += q.receive(max_messages=10, wait_seconds=wait)
        if len(got) >= want:
            break
    return got


def test_registry_and_protocol(azq):
    assert isinstance(azq, AzureQueue) and isinstance(azq, Queue)


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
