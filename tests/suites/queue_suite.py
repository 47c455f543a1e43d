"""The Queue protocol suite: every queue implementation runs it.

Subclass :class:`QueueSuite` and supply a ``queue`` fixture returning an empty
queue (a unique name per test)::

    class TestMemoryQueue(QueueSuite):
        @pytest.fixture
        def queue(self):
            return MemoryQueue(f"memory://suite-{uuid.uuid4().hex}")

Delivery order is not part of the protocol (SQS standard queues and Pub/Sub do
not keep it), so the suite compares bodies as multisets. Waits are bounded by
``max_wait`` and only ever decide whether a message came, never how fast.
Queues with a ``nack`` method (return a received message for redelivery) get
the redelivery tests.
"""

from __future__ import annotations

import json
import threading
import time
from typing import ClassVar

import pytest

from skyhop.queues.base import Message, Queue


def collect(queue: Queue, n: int, max_wait: float, ack: bool = True) -> list[Message]:
    """Receive until ``n`` messages arrived or ``max_wait`` seconds passed."""
    out: list[Message] = []
    deadline = time.monotonic() + max_wait
    while len(out) < n and time.monotonic() < deadline:
        batch = queue.receive(max_messages=min(10, n - len(out)), wait_seconds=1.0)
        for message in batch:
            if ack:
                queue.ack(message)
        out.extend(batch)
    return out


class QueueSuite:
    """Tests every Queue must pass. Needs a ``queue`` fixture."""

    #: how long the suite waits for messages it expects (an emulator may be slow)
    max_wait: ClassVar[float] = 10.0
    #: how long to listen when no message is expected
    quiet_wait: ClassVar[float] = 0.5
    #: whether a redelivered message counts its deliveries (Pub/Sub counts only
    #: with a dead-letter policy)
    counts_redeliveries: ClassVar[bool] = True

    def test_is_a_queue(self, queue):
        assert isinstance(queue, Queue)
        assert isinstance(queue.uri, str) and "://" in queue.uri

    def test_empty_queue_returns_nothing(self, queue):
        assert queue.receive(max_messages=10, wait_seconds=0) == []

    def test_send_receive_ack(self, queue):
        queue.send('{"hello": "world"}')
        got = collect(queue, 1, self.max_wait)
        assert [m.body for m in got] == ['{"hello": "world"}']
        assert got[0].receive_count == 1
        assert got[0].receipt
        queue.ack(got[0])  # a second ack is harmless
        assert queue.receive(max_messages=10, wait_seconds=self.quiet_wait) == []

    def test_bodies_round_trip_unchanged(self, queue):
        bodies = [
            json.dumps(
                {"event": {"type": "chunk_verified", "key": "ü/日本/🚀"}}, ensure_ascii=False
            ),
            "  leading and trailing spaces  ",
            "line one\nline two\ttab",
            "x" * 100_000,
            '{"quotes": "\\"escaped\\""}',
        ]
        for body in bodies:
            queue.send(body)
        got = collect(queue, len(bodies), self.max_wait)
        assert sorted(m.body for m in got) == sorted(bodies)

    def test_send_batch_of_more_than_ten(self, queue):
        bodies = [json.dumps({"n": i}) for i in range(25)]
        queue.send_batch(bodies)
        got = collect(queue, 25, self.max_wait)
        assert sorted(m.body for m in got) == sorted(bodies)
        assert len({m.receipt for m in got}) == 25
        assert queue.receive(max_messages=10, wait_seconds=self.quiet_wait) == []

    def test_send_batch_empty_is_a_no_op(self, queue):
        queue.send_batch([])
        assert queue.receive(max_messages=10, wait_seconds=self.quiet_wait) == []

    def test_receive_respects_max_messages(self, queue):
        queue.send_batch([f"m{i}" for i in range(6)])
        first = collect(queue, 1, self.max_wait, ack=False)
        assert len(first) == 1
        more = queue.receive(max_messages=2, wait_seconds=1.0)
        assert len(more) <= 2
        for message in first + more:
            queue.ack(message)
        rest = collect(queue, 6 - len(first) - len(more), self.max_wait)
        bodies = sorted(m.body for m in first + more + rest)
        assert bodies == [f"m{i}" for i in range(6)]

    def test_acked_messages_are_not_delivered_again(self, queue):
        queue.send_batch(["a", "b", "c"])
        got = collect(queue, 3, self.max_wait)
        assert sorted(m.body for m in got) == ["a", "b", "c"]
        for message in got:
            queue.ack(message)  # acking twice is harmless
        assert queue.receive(max_messages=10, wait_seconds=self.quiet_wait) == []

    def test_receive_waits_for_a_message_sent_later(self, queue):
        timer = threading.Timer(0.3, queue.send, args=("late",))
        timer.start()
        try:  # one receive call: it waits (long-polls) until the message comes
            got = queue.receive(max_messages=1, wait_seconds=self.max_wait)
        finally:
            timer.join()
        assert [m.body for m in got] == ["late"]
        queue.ack(got[0])

    def test_wait_on_an_empty_queue_returns_empty(self, queue):
        assert queue.receive(max_messages=1, wait_seconds=self.quiet_wait) == []

    def test_concurrent_senders_lose_nothing(self, queue):
        def send(worker: int) -> None:
            for i in range(10):
                queue.send(f"{worker}-{i}")

        threads = [threading.Thread(target=send, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = collect(queue, 40, self.max_wait)
        assert sorted(m.body for m in got) == sorted(
            f"{w}-{i}" for w in range(4) for i in range(10)
        )

    # ------------------------------------------------------------ optional: nack

    def test_nacked_message_is_delivered_again(self, queue):
        nack = getattr(queue, "nack", None)
        if nack is None:
            pytest.skip("queue has no nack")
        queue.send("again")
        first = collect(queue, 1, self.max_wait, ack=False)
        assert [m.body for m in first] == ["again"]
        nack(first[0])
        second = collect(queue, 1, self.max_wait, ack=False)
        assert [m.body for m in second] == ["again"]
        if self.counts_redeliveries:
            assert second[0].receive_count == 2
        queue.ack(second[0])
        assert queue.receive(max_messages=10, wait_seconds=self.quiet_wait) == []
