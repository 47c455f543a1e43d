"""Where a gateway's events go: the control API's outbox (long-polled with
``GET /v1/events``) and, when ``event_sink`` is a queue URI, that queue. Every
event is signed on its way out with the gateway's own event key
(:mod:`skyhop.eventauth`): the control plane counts no event without it."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from itertools import islice

from pydantic import TypeAdapter

from skyhop import eventauth
from skyhop.errors import SkyhopError
from skyhop.models import EventEnvelope, GatewayEvent
from skyhop.queues.base import Queue, open_queue

log = logging.getLogger("gateway_vm")

_EVENT = TypeAdapter(GatewayEvent)
MAX_OUTBOX = 100_000
MAX_WAIT = 60.0
MAX_BATCH = 1000


class Outbox:
    """Numbered events (1, 2, ...). A read ``after=N`` acknowledges every event up
    to N, which is then dropped; at most MAX_OUTBOX unacknowledged events are kept."""

    def __init__(self) -> None:
        self._events: deque[tuple[int, str]] = deque()
        self._seq = 0
        self._cond = threading.Condition()

    def add(self, event_json: str) -> int:
        with self._cond:
            self._seq += 1
            self._events.append((self._seq, event_json))
            while len(self._events) > MAX_OUTBOX:
                dropped, _ = self._events.popleft()
                log.warning("outbox full: dropped event %d", dropped)
            self._cond.notify_all()
            return self._seq

    def read(self, after: int, wait: float) -> tuple[list[str], int]:
        """Events numbered above ``after`` (waiting up to ``wait`` s for the first),
        and the cursor to pass next time."""
        deadline = time.monotonic() + min(max(wait, 0.0), MAX_WAIT)
        with self._cond:
            while self._events and self._events[0][0] <= after:
                self._events.popleft()
            while not self._events:
                left = deadline - time.monotonic()
                if left <= 0:
                    return [], max(after, 0)
                self._cond.wait(left)
                while self._events and self._events[0][0] <= after:
                    self._events.popleft()
            items = list(islice(self._events, MAX_BATCH))
        return [body for _, body in items], items[-1][0]

    @property
    def last(self) -> int:
        with self._cond:
            return self._seq


class EventRouter:
    """Validates events from workers and delivers them to the outbox and the sink."""

    def __init__(self, sink: str, key: bytes | None = None) -> None:
        self.outbox = Outbox()
        self._key = key
        self._queue: Queue | None = None if sink == "pull" else open_queue(sink)
        self._sink = sink

    def publish(self, event_json: str) -> None:
        event = _EVENT.validate_json(event_json)
        if self._key is not None:
            event = eventauth.sign(event, self._key)
        body = event.model_dump_json()
        self.outbox.add(body)
        if self._queue is not None:
            envelope = EventEnvelope(event=event).model_dump_json()
            for attempt in range(5):
                try:
                    self._queue.send(envelope)
                    break
                except SkyhopError as exc:
                    log.warning("event sink %s: %s (attempt %d)", self._sink, exc, attempt + 1)
                    time.sleep(0.2 * 2**attempt)
                except Exception as exc:  # noqa: BLE001 - the outbox still has it
                    log.warning("event sink %s failed: %s", self._sink, type(exc).__name__)
                    time.sleep(0.2 * 2**attempt)
