"""The ControlQueues conformance suite: per-gateway control queues, as the control
plane makes them and a gateway reads them, run against every implementation.

A subclass supplies ``queues``: a fresh ControlQueues under a prefix of its own
(so tests never see each other's queues).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import TypeAdapter

from skyhop.models import ChunkBatch, ChunksMessage, ChunkWork, ControlMessage, DrainMessage
from skyhop.queues.base import ControlQueues, open_queue

MESSAGE: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)
#: as long as a job id skyhop makes (new_job_id), with gateway ids far longer than
#: a queue name may be
LONG_JOB = "j-0123456789abcdef"


def chunks_message(job_id: str) -> ChunksMessage:
    work = ChunkWork(
        chunk_id=7,
        object_id=3,
        index=0,
        src_key="a/b.bin",
        dst_key="c/b.bin",
        offset=0,
        length=1024,
        object_size=1024,
    )
    return ChunksMessage(batch=ChunkBatch(job_id=job_id, chunks=[work]))


class ControlQueueSuite:
    """Subclass with a ``queues`` fixture."""

    #: how long a receive may wait for a message that was sent
    max_wait: ClassVar[float] = 2.0

    def test_is_control_queues(self, queues):
        assert isinstance(queues, ControlQueues)

    def test_one_queue_per_gateway_created_idempotently(self, queues):
        a0 = queues.create("j-a", "gw-j-a-a1-h0-0")
        assert queues.create("j-a", "gw-j-a-a1-h0-0") == a0
        a1 = queues.create("j-a", "gw-j-a-a1-h1-0")
        b0 = queues.create("j-a-b", "gw-j-a-b-a1-h0-0")  # a job id that starts like j-a's
        long = queues.create(LONG_JOB, f"gw-{LONG_JOB}-" + "z" * 90)
        assert len({a0, a1, b0, long}) == 4
        assert queues.jobs() == {"j-a", "j-a-b", LONG_JOB}

    def test_what_the_control_plane_sends_the_gateway_receives(self, queues):
        uri = queues.create("j-r", "gw-j-r-a1-h0-0")
        sent = [chunks_message("j-r"), DrainMessage()]
        # sent before the gateway opens its queue: the queue holds it
        queues.open(uri).send_batch([m.model_dump_json() for m in sent])
        gateway_side = open_queue(uri)
        got = []
        for _ in range(20):
            got += gateway_side.receive(max_messages=10, wait_seconds=self.max_wait)
            if len(got) >= len(sent):
                break
        assert sorted((MESSAGE.validate_json(m.body) for m in got), key=repr) == sorted(
            sent, key=repr
        )
        for message in got:
            gateway_side.ack(message)
        assert gateway_side.receive(max_messages=10, wait_seconds=0) == []

    def test_delete_job_removes_only_that_jobs_queues_and_is_idempotent(self, queues):
        a0 = queues.create("j-d", "gw-j-d-a1-h0-0")
        a1 = queues.create("j-d", "gw-j-d-a1-h1-0")
        other = queues.create("j-d-b", "gw-j-d-b-a1-h0-0")
        long = queues.create(LONG_JOB, f"gw-{LONG_JOB}-" + "y" * 90)
        assert queues.delete_job("j-d", [a0, a1]) == 2
        assert queues.delete_job("j-d", [a0, a1]) == 0
        assert queues.jobs() == {"j-d-b", LONG_JOB}  # j-d-b shares j-d's name prefix
        assert queues.delete_job(LONG_JOB) == 1  # found by the listing alone
        assert queues.delete_job("j-d-b", [other]) == 1
        assert queues.jobs() == set()
        assert long != other
