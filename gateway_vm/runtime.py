"""State shared between a gateway's main process and its workers: counters in
shared memory, test-hook budgets, and the per-process byte budget."""

from __future__ import annotations

import threading
from collections import deque
from multiprocessing.context import BaseContext
from typing import Any

FIELDS = ("taken", "done", "failed", "bytes_sent", "bytes_received", "errors")
_INDEX = {name: i for i, name in enumerate(FIELDS)}


class Counters:
    """One row of counters per worker, in shared memory; each row has a single
    writing process (threads within it take a lock)."""

    def __init__(self, ctx: BaseContext, workers: int) -> None:
        self.workers = workers
        self._arr: Any = ctx.Array("q", workers * len(FIELDS), lock=False)
        self._lock = threading.Lock()

    def add(self, worker: int, name: str, n: int = 1) -> None:
        i = worker * len(FIELDS) + _INDEX[name]
        with self._lock:
            self._arr[i] += n

    def total(self, name: str) -> int:
        j = _INDEX[name]
        return sum(self._arr[w * len(FIELDS) + j] for w in range(self.workers))


class HookBudget:
    """``flip_wire`` / ``flip_plain``: a shared count of frames left to corrupt."""

    def __init__(self, ctx: BaseContext, count: int) -> None:
        self._value: Any = ctx.Value("i", max(count, 0))

    def take(self) -> bool:
        """True (and one fewer left) while the hook still has frames to corrupt."""
        if self._value.value <= 0:  # unlocked fast path: hooks are usually off
            return False
        with self._value.get_lock():
            if self._value.value <= 0:
                return False
            self._value.value -= 1
            return True


class TokenBucket:
    """``--bwlimit``: at most ``rate`` bytes per second on average, shared by the
    sender threads of one process. ``take(n)`` books ``n`` bytes and sleeps off
    any debt, so concurrent senders queue behind each other; up to one second's
    worth may go out at once after an idle spell. Clock and sleep are injectable."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Any = None,
        sleep: Any = None,
    ) -> None:
        import time

        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self._clock = clock or time.monotonic
        self._sleep = sleep or time.sleep
        self._tokens = self.rate
        self._stamp = self._clock()
        self._lock = threading.Lock()

    def take(self, n: int) -> float:
        """Account for ``n`` bytes; returns the seconds slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= n
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class ByteBudget:
    """A byte semaphore: ``acquire(n)`` waits until ``n`` bytes fit. A request
    larger than the whole budget waits until nothing else is held, then runs
    alone, so nothing deadlocks and the budget is exceeded by one chunk at most."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, stop: threading.Event | None = None) -> bool:
        with self._cond:
            while not self._fits(n):
                if stop is not None and stop.is_set():
                    return False
                self._cond.wait(0.5)
            self.used += n
            return True

    def _fits(self, n: int) -> bool:
        return self.used + n <= self.capacity or self.used == 0

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class BufferPool:
    """A fixed budget of reusable chunk buffers.

    Fresh large allocations cost a page fault per 4 KiB (measured: a new
    64 MiB buffer fills at ~0.6 GB/s, a reused one at ~4.5 GB/s), so buffers
    go back to a free list and are reused. Bytes allocated (in use + free)
    never exceed ``capacity``, except that a request larger than the whole
    budget is served alone once nothing else is allocated.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.allocated = 0
        self._free: list[bytearray] = []
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()

    def get(self, n: int, stop: threading.Event | None = None) -> bytearray | None:
        """A buffer of at least ``n`` bytes (None when stopping). Waiters are served
        first come, first served: a connection whose chunk waits for memory holds
        a sender hostage, so none may be overtaken indefinitely."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while True:
                    if self._queue[0] is ticket:
                        buf = self._take(n)
                        if buf is not None:
                            return buf
                    if stop is not None and stop.is_set():
                        return None
                    self._cond.wait(0.5)
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()

    def _take(self, n: int) -> bytearray | None:
        fits = [b for b in self._free if len(b) >= n]
        if fits:
            buf = min(fits, key=len)
            self._free.remove(buf)
            return buf
        while self._free and self.allocated + n > self.capacity:
            self.allocated -= len(self._free.pop())
        size = max(n, 1)
        if self.allocated + size <= self.capacity or self.allocated == 0:
            self.allocated += size
            return bytearray(size)
        return None

    def put(self, buf: bytearray) -> None:
        with self._cond:
            if self.allocated > self.capacity:  # an oversized buffer: let it go
                self.allocated -= len(buf)
            else:
                self._free.append(buf)
            self._cond.notify_all()

    def forget(self, buf: bytearray) -> None:
        """Stop counting a buffer that cannot be reused (someone kept a view of it)."""
        with self._cond:
            self.allocated -= len(buf)
            self._cond.notify_all()
