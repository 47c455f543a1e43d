"""The retry policy and the pacer, with an injected clock: nothing here sleeps."""

from __future__ import annotations

import threading

import pytest

from skyhop.errors import AccessError, NotFoundError, PreconditionFailed, StoreError, ThrottledError
from skyhop.retry import Pacer, backoff_delay, is_retryable, is_throttle, retry


class FakeClock:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


class Flaky:
    """Raises the given errors in turn, then returns ``result``."""

    def __init__(self, errors: list[BaseException], result: str = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def transient() -> StoreError:
    return StoreError("503 from the store", retryable=True)


def test_classification():
    assert is_retryable(StoreError("x", retryable=True))
    assert is_retryable(ThrottledError("slow down"))
    assert not is_retryable(StoreError("x"))
    assert not is_retryable(PreconditionFailed("etag moved"))
    assert not is_retryable(NotFoundError("gone"))
    assert not is_retryable(ValueError("bug"))
    assert is_throttle(ThrottledError("slow down"))
    assert not is_throttle(StoreError("x", retryable=True))


def test_backoff_is_capped_exponential_with_full_jitter():
    top = [backoff_delay(i, base=0.5, cap=5.0, rng=lambda: 1.0) for i in range(6)]
    assert top == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff_delay(3, base=0.5, cap=5.0, rng=lambda: 0.0) == 0.0
    assert backoff_delay(3, base=0.5, cap=5.0, rng=lambda: 0.25) == 1.0
    # huge attempt numbers do not overflow
    assert backoff_delay(10_000, base=1.0, cap=7.0, rng=lambda: 1.0) == 7.0


def test_retry_succeeds_after_transient_errors():
    clock = FakeClock()
    fn = Flaky([transient(), ThrottledError("slow down")], result="done")
    seen: list[tuple[int, str, float]] = []
    out = retry(
        fn,
        attempts=5,
        base=1.0,
        cap=10.0,
        sleep=clock.sleep,
        rng=lambda: 0.5,
        on_retry=lambda n, exc, d: seen.append((n, str(exc), d)),
    )
    assert out == "done"
    assert fn.calls == 3
    assert clock.sleeps == [0.5, 1.0]
    assert seen == [(1, "503 from the store", 0.5), (2, "slow down", 1.0)]


def test_retry_raises_non_retryable_at_once():
    clock = FakeClock()
    fn = Flaky([AccessError("access denied to bucket 'b'"), transient()])
    with pytest.raises(AccessError, match="access denied"):
        retry(fn, attempts=5, sleep=clock.sleep, rng=lambda: 1.0)
    assert fn.calls == 1
    assert clock.sleeps == []


def test_retry_gives_up_after_attempts_with_the_last_error():
    clock = FakeClock()
    errors = [StoreError(f"try {i}", retryable=True) for i in range(3)]
    fn = Flaky(errors)
    with pytest.raises(StoreError, match="try 2"):
        retry(fn, attempts=3, base=1.0, cap=10.0, sleep=clock.sleep, rng=lambda: 1.0)
    assert fn.calls == 3
    assert clock.sleeps == [1.0, 2.0]


def test_retry_custom_predicate_and_single_attempt():
    clock = FakeClock()
    fn = Flaky([KeyError("a")], result="x")
    assert retry(fn, retry_on=lambda e: isinstance(e, KeyError), sleep=clock.sleep) == "x"
    with pytest.raises(StoreError):
        retry(Flaky([transient()]), attempts=1, sleep=clock.sleep)
    with pytest.raises(ValueError, match="attempts"):
        retry(lambda: None, attempts=0)


def test_pacer_spaces_calls_and_backs_off_on_throttling():
    clock = FakeClock()
    pacer = Pacer(
        min_sleep=0.1, max_sleep=1.0, attempts=5, clock=clock, sleep=clock.sleep, rng=lambda: 0.0
    )
    assert pacer.call(lambda: 1) == 1
    assert pacer.call(lambda: 2) == 2
    # the second call had to wait out the minimum gap
    assert clock.sleeps == [pytest.approx(0.1)]

    fn = Flaky([ThrottledError("SlowDown"), ThrottledError("SlowDown")], result="through")
    assert pacer.call(fn) == "through"
    assert fn.calls == 3
    # two throttles doubled the gap twice, the success eased it by a quarter
    assert pacer.delay == pytest.approx(0.4 * 0.75)


def test_pacer_delay_is_bounded_and_decays_to_min_sleep():
    clock = FakeClock()
    pacer = Pacer(min_sleep=0.0, max_sleep=0.5, clock=clock, sleep=clock.sleep)
    for _ in range(20):
        pacer.on_throttle()
    assert pacer.delay == 0.5
    for _ in range(200):
        pacer.on_success()
    assert pacer.delay == 0.0


def test_pacer_does_not_retry_or_slow_down_for_permanent_errors():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    fn = Flaky([NotFoundError("s3://b/k does not exist")])
    with pytest.raises(NotFoundError):
        pacer.call(fn)
    assert fn.calls == 1
    assert pacer.delay == 0.0
    assert clock.sleeps == []


def test_pacer_turns_are_shared_between_threads():
    # a frozen clock: every thread asks for its turn at the same instant
    sleeps: list[float] = []
    lock = threading.Lock()

    def record(seconds: float) -> None:
        with lock:
            sleeps.append(seconds)

    pacer = Pacer(min_sleep=0.5, max_sleep=1.0, clock=lambda: 100.0, sleep=record)
    threads = [threading.Thread(target=pacer.wait_turn) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # each thread got its own slot, half a second apart; nobody shared one
    assert sorted(sleeps) == [pytest.approx(0.5), pytest.approx(1.0), pytest.approx(1.5)]


def test_pacer_rejects_bad_settings():
    with pytest.raises(ValueError):
        Pacer(min_sleep=2.0, max_sleep=1.0)
    with pytest.raises(ValueError):
        Pacer(attack=0)
