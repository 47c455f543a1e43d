"""One retry policy for skyhop: capped exponential back-off with full jitter.

What is worth retrying is decided by the caller's classification, never by
catching everything: each store turns its SDK's errors into
:mod:`skyhop.errors`, marking the transient ones ``StoreError(retryable=True)``
and throttling as :class:`skyhop.errors.ThrottledError`; :func:`is_retryable`
reads that mark. A :class:`Pacer`, shared by the threads calling one service,
also spaces calls out after throttling and eases off again on success (the
rclone ``lib/pacer`` idea).

Clocks, sleeps and random numbers are injectable, so tests never sleep.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from skyhop.errors import StoreError, ThrottledError

T = TypeVar("T")

Predicate = Callable[[BaseException], bool]
OnRetry = Callable[[int, BaseException, float], None]

_MAX_EXPONENT = 62


def is_retryable(exc: BaseException) -> bool:
    """True for errors a store classified as transient (``StoreError(retryable=True)``)."""
    return isinstance(exc, StoreError) and exc.retryable


def is_throttle(exc: BaseException) -> bool:
    """True when the service asked us to slow down."""
    return isinstance(exc, ThrottledError)


def backoff_delay(attempt: int, *, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in ``[0, min(cap, base * 2**attempt)]`` for the
    ``attempt``-th retry (0-based)."""
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))
    return rng() * ceiling


def pause(attempt: int, *, base: float, cap: float) -> None:
    """Sleep one full-jitter back-off (:func:`backoff_delay`) before retrying a lost
    race or unprocessed items: spreading contention out needs no secure random."""
    time.sleep(backoff_delay(attempt, base=base, cap=cap, rng=random.random))


def retry(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base: float = 0.2,
    cap: float = 20.0,
    retry_on: Predicate = is_retryable,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    on_retry: OnRetry | None = None,
) -> T:
    """Call ``fn`` up to ``attempts`` times while it raises errors ``retry_on`` accepts.

    Between tries it sleeps ``backoff_delay(i)``. An error ``retry_on`` rejects is
    raised at once; after the last attempt the last error is raised unchanged.
    ``on_retry(attempt, error, delay)`` is called before each sleep (for logging).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must not be negative")
    attempt = 0
    while True:
        try:
            return fn()
        except BaseException as exc:
            if attempt + 1 >= attempts or not retry_on(exc):
                raise
            delay = backoff_delay(attempt, base=base, cap=cap, rng=rng)
            if on_retry is not None:
                on_retry(attempt + 1, exc, delay)
            sleep(delay)
            attempt += 1


class Pacer:
    """Spaces calls to one service and retries them with :func:`retry`.

    Every call waits its turn: calls start at least ``delay`` seconds apart,
    across all threads sharing the pacer. ``delay`` starts at ``min_sleep``;
    each throttling error (``throttled``) multiplies it by ``2**attack / (2**attack - 1)``
    (doubles it for ``attack=1``) up to ``max_sleep``; each success shrinks it
    by a factor ``1 - 2**-decay`` back towards ``min_sleep``.
    """

    def __init__(
        self,
        *,
        min_sleep: float = 0.0,
        max_sleep: float = 2.0,
        attack: int = 1,
        decay: int = 2,
        attempts: int = 10,
        base: float = 0.1,
        cap: float = 10.0,
        retry_on: Predicate = is_retryable,
        throttled: Predicate = is_throttle,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if min_sleep < 0 or max_sleep < min_sleep:
            raise ValueError("need 0 <= min_sleep <= max_sleep")
        if attack < 1 or decay < 1:
            raise ValueError("attack and decay must be at least 1")
        self.min_sleep = min_sleep
        self.max_sleep = max_sleep
        self.attack = attack
        self.decay = decay
        self.attempts = attempts
        self.base = base
        self.cap = cap
        self._retry_on = retry_on
        self._throttled = throttled
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._lock = threading.Lock()
        self._delay = min_sleep
        self._next_start = float("-inf")

    @property
    def delay(self) -> float:
        """The current minimum gap between the starts of two calls."""
        with self._lock:
            return self._delay

    def wait_turn(self) -> float:
        """Block until this caller may start; returns how long it waited."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next_start)
            self._next_start = start + self._delay
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait

    def on_throttle(self) -> None:
        """Widen the gap after the service asked us to slow down."""
        with self._lock:
            grown = max(self._delay, self.min_sleep, 0.01) * (2**self.attack / (2**self.attack - 1))
            self._delay = min(self.max_sleep, grown)

    def on_success(self) -> None:
        """Ease off towards ``min_sleep`` after a call went through."""
        with self._lock:
            shrunk = self._delay * (1 - 2**-self.decay)
            self._delay = max(self.min_sleep, shrunk if shrunk >= 1e-4 else 0.0)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in turn, retrying the errors the pacer's ``retry_on`` accepts."""

        def attempt() -> T:
            self.wait_turn()
            try:
                result = fn()
            except BaseException as exc:
                if self._throttled(exc):
                    self.on_throttle()
                raise
            self.on_success()
            return result

        return retry(
            attempt,
            attempts=self.attempts,
            base=self.base,
            cap=self.cap,
            retry_on=self._retry_on,
            sleep=self._sleep,
            rng=self._rng,
        )
