"""An in-process queue: the embedded default, shared by name within one process."""

from __future__ import annotations

import itertools
import threading
from collections import deque

from skyhop.queues.base import Message

_QUEUES: dict[str, tuple[deque[tuple[str, str]], threading.Condition]] = {}
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
        self._inflight: dict[str, str] = {}

    def send(self, body: str) -> None:
        with self._cond:
            self._items.append((str(next(_IDS)), body))
            self._cond.notify()

    def send_batch(self, bodies: list[str]) -> None:
        with self._cond:
            for body in bodies:
                self._items.append((str(next(_IDS)), body))
            self._cond.notify_all()

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        with self._cond:
            if not self._items and wait_seconds > 0:
                self._cond.wait_for(lambda: bool(self._items), timeout=wait_seconds)
            out: list[Message] = []
            while self._items and len(out) < max_messages:
                receipt, body = self._items.popleft()
                self._inflight[receipt] = body
                out.append(Message(body=body, receipt=receipt))
            return out

    def ack(self, message: Message) -> None:
        with self._cond:
            self._inflight.pop(message.receipt, None)

    def nack(self, message: Message) -> None:
        """Put a received message back at the front."""
        with self._cond:
            body = self._inflight.pop(message.receipt, None)
            if body is not None:
                self._items.appendleft((message.receipt, body))
                self._cond.notify()

    def __len__(self) -> int:
        return len(self._items)
