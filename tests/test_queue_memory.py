"""MemoryQueue: the shared queue suite plus in-process specifics."""

from __future__ import annotations

import uuid

import pytest

from skyhop.errors import UsageError
from skyhop.queues.base import open_queue
from skyhop.queues.memory import MemoryQueue
from tests.suites.queue_suite import QueueSuite


class TestMemoryQueueSuite(QueueSuite):
    max_wait = 5.0
    quiet_wait = 0.1

    @pytest.fixture
    def queue(self) -> MemoryQueue:
        return MemoryQueue(f"memory://suite-{uuid.uuid4().hex}")


def test_open_queue_shares_a_memory_queue_by_name():
    name = f"memory://shared-{uuid.uuid4().hex}"
    sender = open_queue(name)
    receiver = open_queue(name)
    assert isinstance(sender, MemoryQueue)
    sender.send("hello")
    assert [m.body for m in receiver.receive()] == ["hello"]


def test_memory_queues_with_different_names_are_isolated():
    a = MemoryQueue(f"memory://a-{uuid.uuid4().hex}")
    b = MemoryQueue(f"memory://b-{uuid.uuid4().hex}")
    a.send("for a")
    assert b.receive(wait_seconds=0) == []
    assert [m.body for m in a.receive()] == ["for a"]


def test_memory_queue_keeps_fifo_order():
    q = MemoryQueue(f"memory://fifo-{uuid.uuid4().hex}")
    q.send_batch([str(i) for i in range(30)])
    got = q.receive(max_messages=30)
    assert [m.body for m in got] == [str(i) for i in range(30)]
    assert len(q) == 0


@pytest.mark.parametrize("uri", ["nowhere", "ftp://x", "memory:/no-slashes"])
def test_unknown_queue_uris_are_usage_errors(uri):
    with pytest.raises(UsageError, match="queue URI"):
        open_queue(uri)
