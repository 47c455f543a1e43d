"""An in-process queue: the embedded default, shared by name within one process."""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterable

from skyhop.errors import UsageError
from skyhop.queues.base import (
    CONTROL_QUEUE_PREFIX,
    Message,
    control_queue_job_prefix,
    control_queue_name,
    job_of_control_queue,
)

_QUEUES: dict[str, tuple[deque[tuple[str, str, int]], threading.Condition]] = {}
_LOCK = threading.Lock()
_IDS = itertools.count()


class MemoryQueue:
    """``memory://NAME``: messages vanish once acked; unacked ones are redelivered
    only by :meth:`nack` (there is no visibility timeout in one process)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        with _LOCK:
            if uri not in _QUEUES:
                _QUEUES[uri] = (deque(), threading.Condition())
            self._items, self._cond = _QUEUES[uri]
        self._inflight: dict[str, tuple[str, int]] = {}  # receipt -> (body, deliveries)

    def send(self, body: str) -> None:
        with self._cond:
            self._items.append((str(next(_IDS)), body, 0))
            self._cond.notify()

    def send_batch(self, bodies: list[str]) -> None:
        with self._cond:
            for body in bodies:
                self._items.append((str(next(_IDS)), body, 0))
            self._cond.notify_all()

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        with self._cond:
            if not self._items and wait_seconds > 0:
                self._cond.wait_for(lambda: bool(self._items), timeout=wait_seconds)
            out: list[Message] = []
            while self._items and len(out) < max_messages:
                receipt, body, delivered = self._items.popleft()
                self._inflight[receipt] = (body, delivered + 1)
                out.append(Message(body=body, receipt=receipt, receive_count=delivered + 1))
            return out

    def ack(self, message: Message) -> None:
        with self._cond:
            self._inflight.pop(message.receipt, None)

    def nack(self, message: Message) -> None:
        """Put a received message back at the front."""
        with self._cond:
            found = self._inflight.pop(message.receipt, None)
            if found is not None:
                self._items.appendleft((message.receipt, *found))
                self._cond.notify()

    def __len__(self) -> int:
        return len(self._items)


class MemoryControlQueues:
    """``memory://PREFIX``: per-gateway control queues in this process (tests, and the
    embedded runner when it drives gateways through queues)."""

    def __init__(self, uri: str = f"memory://{CONTROL_QUEUE_PREFIX}") -> None:
        prefix = uri.partition("://")[2].strip("/")
        if not uri.startswith("memory://") or not prefix or "/" in prefix:
            raise UsageError(f"malformed control queues {uri!r}: expected memory://PREFIX")
        self.uri = uri
        self.prefix = prefix

    def create(self, job_id: str, gateway_id: str) -> str:
        uri = f"memory://{control_queue_name(self.prefix, job_id, gateway_id)}"
        MemoryQueue(uri)
        return uri

    def open(self, uri: str) -> MemoryQueue:
        return MemoryQueue(uri)

    def delete_job(self, job_id: str, uris: Iterable[str] = ()) -> int:
        head = f"memory://{control_queue_job_prefix(self.prefix, job_id)}"
        with _LOCK:
            doomed = {u for u in _QUEUES if u.startswith(head)} | (set(uris) & _QUEUES.keys())
            for uri in doomed:
                del _QUEUES[uri]
        return len(doomed)

    def jobs(self) -> set[str]:
        with _LOCK:
            names = [u.removeprefix("memory://") for u in _QUEUES]
        return {j for j in (job_of_control_queue(self.prefix, n) for n in names) if j}
