"""The SQS queue adapter against moto in server mode: the shared Queue suite, then
batches, receive counts, and a poison message landing in the dead-letter queue."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest

from skyhop.errors import NotFoundError, UsageError
from skyhop.queues.base import Queue, open_queue
from skyhop.queues.sqs import SQSQueue, create_queue, parse_sqs, redrive_policy
from tests.suites.queue_suite import QueueSuite


def _name() -> str:
    return f"q-{uuid.uuid4().hex[:12]}"


class TestSQSQueueSuite(QueueSuite):
    """The shared Queue protocol suite on SQS (moto)."""

    @pytest.fixture
    def queue(self, moto) -> SQSQueue:
        return open_queue(create_queue(_name()))


@pytest.fixture
def queue(moto) -> SQSQueue:
    return open_queue(create_queue(_name()))


def drain(q: SQSQueue, want: int) -> list:
    got = []
    for _ in range(10):
        got += q.receive(max_messages=10, wait_seconds=1)
        if len(got) >= want:
            break
    return got


def test_registry_and_protocol(queue) -> None:
    assert isinstance(queue, SQSQueue) and isinstance(queue, Queue)


def test_send_receive_ack(queue) -> None:
    assert queue.receive(max_messages=5) == []
    queue.send('{"hello": "wörld"}')
    [msg] = drain(queue, 1)
    assert (msg.body, msg.receive_count) == ('{"hello": "wörld"}', 1)
    queue.ack(msg)
    queue.ack(msg)  # twice is harmless
    assert queue.receive(max_messages=5) == []


def test_send_batch_of_more_than_ten_and_receive_more_than_ten(queue) -> None:
    bodies = [f"m{i}" for i in range(23)]
    queue.send_batch(bodies)
    first = queue.receive(max_messages=3)
    assert 1 <= len(first) <= 3
    rest = drain(queue, 23 - len(first))
    assert sorted(m.body for m in first + rest) == sorted(bodies)
    for m in first + rest:
        queue.ack(m)
    assert queue.receive(max_messages=10) == []


def test_queue_url_form_reaches_the_same_queue(queue) -> None:
    by_url = SQSQueue(queue.url)
    by_url.send("via url")
    [msg] = drain(queue, 1)
    assert msg.body == "via url"


def test_poison_message_lands_in_the_dead_letter_queue(moto) -> None:
    name, dlq_name = _name(), _name()
    uri = create_queue(name, dead_letter=dlq_name, max_receive_count=3)
    queue, dlq = SQSQueue(uri), SQSQueue(f"sqs://{dlq_name}")
    policy = json.loads(queue.attributes()["RedrivePolicy"])
    assert policy["maxReceiveCount"] in (3, "3")
    assert policy["deadLetterTargetArn"] == dlq.attributes()["QueueArn"]

    queue.send("poison")
    queue.send("fine")
    counts = []
    for _ in range(6):
        for msg in queue.receive(max_messages=10):
            if msg.body == "fine":
                queue.ack(msg)
            else:
                counts.append(msg.receive_count)
                queue.nack(msg)  # the handler failed on it again
    assert counts == [1, 2, 3]
    assert queue.receive(max_messages=10) == []
    [dead] = drain(dlq, 1)
    assert dead.body == "poison"


def test_bad_uris_and_bodies_are_one_line_errors(queue) -> None:
    for bad in [
        "sqs://",
        "sqs://a/b",
        "sqs://bad name",
        "ftp://x",
        "https://sqs.us-east-1.amazonaws.com/q",
    ]:
        with pytest.raises(UsageError, match="malformed queue URI"):
            SQSQueue(bad)
    with pytest.raises(UsageError, match="over SQS's limit"):
        queue.send("x" * (256 * 1024 + 1))
    with pytest.raises(UsageError, match="over SQS's limit"):
        queue.send_batch(["ok", "x" * (256 * 1024 + 1)])
    assert queue.receive(max_messages=10) == []  # nothing of the bad batch was sent
    with pytest.raises(UsageError, match="out of range"):
        redrive_policy("arn:aws:sqs:us-east-1:123456789012:dlq", 0)


def test_missing_queue_is_not_found(moto) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        SQSQueue(f"sqs://{_name()}").send("x")


def test_parse_sqs() -> None:
    assert parse_sqs("sqs://jobs?region=eu-west-1") == ("jobs", None, "eu-west-1")
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs"
    assert parse_sqs(url) == (None, url, "eu-west-1")
    legacy = "https://us-west-2.queue.amazonaws.com/123456789012/jobs.fifo"
    assert parse_sqs(legacy) == (None, legacy, "us-west-2")


def test_messages_sent_with_boto3_are_received(queue) -> None:
    boto3.client("sqs").send_message(QueueUrl=queue.url, MessageBody="from boto3")
    [msg] = drain(queue, 1)
    assert msg.body == "from boto3"
