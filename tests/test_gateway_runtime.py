"""The gateway's in-process building blocks: the chunk buffer pool (a fixed
budget, buffers reused, waiters served in order) and the test-hook budgets."""

from __future__ import annotations

import multiprocessing
import threading

from gateway_vm.runtime import BufferPool, HookBudget


def test_pool_reuses_buffers_within_its_budget() -> None:
    pool = BufferPool(100)
    a = pool.get(40)
    b = pool.get(40)
    assert a is not None and b is not None and pool.allocated == 80
    pool.put(a)
    again = pool.get(30)  # the free 40-byte buffer serves a smaller chunk
    assert again is a and pool.allocated == 80
    pool.put(again)
    pool.put(b)
    big = pool.get(90)  # free buffers too small: dropped to make room
    assert big is not None and len(big) == 90 and pool.allocated == 90


def test_pool_serves_an_oversized_request_alone() -> None:
    pool = BufferPool(100)
    small = pool.get(10)
    assert small is not None
    stop = threading.Event()
    got: list[bytearray | None] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get(500, stop)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()  # waits while anything else is allocated
    pool.put(small)
    waiter.join(5)
    assert got and got[0] is not None and len(got[0]) == 500
    pool.put(got[0])
    assert pool.allocated == 0  # an oversized buffer is not kept


def test_pool_waiters_are_served_in_order() -> None:
    pool = BufferPool(100)
    held = [pool.get(50), pool.get(50)]
    order: list[int] = []
    threads = []
    for i in range(4):
        ready = threading.Event()

        def wait_for_buffer(i: int = i, ready: threading.Event = ready) -> None:
            ready.set()
            buf = pool.get(50)
            order.append(i)
            assert buf is not None
            pool.put(buf)

        t = threading.Thread(target=wait_for_buffer)
        t.start()
        ready.wait(5)
        threads.append(t)
        while len(pool._queue) < i + 1:  # the thread queued up
            threading.Event().wait(0.01)
    for buf in held:
        assert buf is not None
        pool.put(buf)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]


def test_pool_gives_up_when_stopping() -> None:
    pool = BufferPool(10)
    assert pool.get(10) is not None
    stop = threading.Event()
    stop.set()
    assert pool.get(10, stop) is None
    assert len(pool._queue) == 0


def test_hook_budget_counts_down_across_processes() -> None:
    ctx = multiprocessing.get_context("fork")
    budget = HookBudget(ctx, 2)
    child = ctx.Process(target=budget.take)
    child.start()
    child.join(10)
    assert budget.take() is True
    assert budget.take() is False
