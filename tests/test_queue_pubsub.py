"""The Pub/Sub queue adapter against the Google Cloud CLI's Pub/Sub emulator (skipped
where that emulator is not installed), and its URIs."""

from __future__ import annotations

import uuid
from typing import ClassVar

import pytest

from skyhop.errors import UsageError
from skyhop.queues.base import open_queue
from skyhop.queues.pubsub import PubSubQueue, parse_pubsub
from tests.suites.queue_suite import QueueSuite


class TestPubSubQueueSuite(QueueSuite):
    """The shared Queue suite on the Pub/Sub emulator."""

    counts_redeliveries: ClassVar[bool] = False  # only with a dead-letter policy

    @pytest.fixture
    def queue(self, pubsub_server):
        return open_queue(f"pubsub://{pubsub_server.project}/t-{uuid.uuid4().hex[:12]}")


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
