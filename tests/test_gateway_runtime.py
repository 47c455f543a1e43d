"""The gateway's in-process building blocks: chunk buffers drawn from one
budget shared by the workers (reused, served in order, handed between
workers under contention) and the test-hook budgets."""

from __future__ import annotations

import multiprocessing
import threading
import time

from gateway_vm.runtime import BufferPool, HookBudget, SharedBudget

CTX = multiprocessing.get_context("fork")


def _pool(capacity: int) -> BufferPool:
    return BufferPool(SharedBudget(CTX, capacity))


def test_pool_reuses_buffers_within_its_budget() -> None:
    pool = _pool(100)
    a = pool.get(40)
    b = pool.get(40)
    assert a is not None and b is not None and pool.budget.used == 80
    pool.put(a)
    again = pool.get(30)  # the free 40-byte buffer serves a smaller chunk
    assert again is a and pool.budget.used == 80
    pool.put(again)
    pool.put(b)
    big = pool.get(90)  # free buffers too small: given back to make room
    assert big is not None and len(big) == 90 and pool.budget.used == 90 == pool.held


def test_pool_serves_an_oversized_request_alone() -> None:
    pool = _pool(100)
    small = pool.get(10)
    assert small is not None
    got: list[bytearray | None] = []
    waiter = threading.Thread(target=lambda: got.append(pool.get(500)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # waits while anything else is held
    pool.put(small)
    pool.trim()
    waiter.join(5)
    assert got and got[0] is not None and len(got[0]) == 500
    pool.put(got[0])
    assert pool.budget.used == 0  # an oversized buffer is not kept


def test_waiters_of_a_worker_are_served_in_order() -> None:
    pool = _pool(100)
    held = [pool.get(50), pool.get(50)]
    order: list[int] = []
    threads = []
    for i in range(4):

        def wait_for_buffer(i: int = i) -> None:
            buf = pool.get(50)
            order.append(i)
            assert buf is not None
            pool.put(buf)

        t = threading.Thread(target=wait_for_buffer)
        t.start()
        threads.append(t)
        while len(pool._queue) < i + 1:  # the thread queued up
            time.sleep(0.01)
    for buf in held:
        assert buf is not None
        pool.put(buf)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]


def test_idle_buffers_move_to_a_worker_that_waits() -> None:
    budget = SharedBudget(CTX, 100)
    a, b = BufferPool(budget), BufferPool(budget)
    kept = a.get(60)
    assert kept is not None
    a.put(kept)  # nobody waits: kept for reuse
    assert a.held == 60 and budget.used == 60
    got: list[bytearray | None] = []
    waiter = threading.Thread(target=lambda: got.append(b.get(60)))
    waiter.start()
    while not budget.contended:
        time.sleep(0.01)
    a.trim()  # a's idle buffer goes back to the budget
    waiter.join(5)
    assert got and got[0] is not None and a.held == 0 and b.held == 60


def test_a_worker_returns_a_buffer_to_the_budget_when_another_waits() -> None:
    budget = SharedBudget(CTX, 100)
    a, b = BufferPool(budget), BufferPool(budget)
    in_use = a.get(100)
    assert in_use is not None
    got: list[bytearray | None] = []
    waiter = threading.Thread(target=lambda: got.append(b.get(100)))
    waiter.start()
    while not budget.contended:
        time.sleep(0.01)
    a.put(in_use)  # contended, and a has no waiter of its own: released
    waiter.join(5)
    assert got and got[0] is not None and budget.used == 100 == b.held


def test_pool_gives_up_when_stopping() -> None:
    pool = _pool(10)
    assert pool.get(10) is not None
    stop = threading.Event()
    stop.set()
    assert pool.get(10, stop) is None
    assert len(pool._queue) == 0


def test_hook_budget_counts_down_across_processes() -> None:
    budget = HookBudget(CTX, 2)
    child = CTX.Process(target=budget.take)
    child.start()
    child.join(10)
    assert budget.take() is True
    assert budget.take() is False


def test_memory_plan(monkeypatch) -> None:
    from gateway_vm import memory
    from skyhop.models import GatewayConfig, GatewayRole

    cfg = GatewayConfig(
        job_id="j-1",
        gateway_id="g",
        role=GatewayRole.DESTINATION,
        ca_cert_pem="x",
        cert_pem="x",
        key_pem="x",
        control_token="t",
        workers=8,
    )
    monkeypatch.setattr(memory, "cpus", lambda: 2)
    planned, notes = memory.plan(cfg)
    assert planned.workers == 2 and "2 CPUs" in notes[0]
    monkeypatch.setattr(memory, "cpus", lambda: 64)
    planned, _ = memory.plan(cfg)  # 256 MiB budget: only so many interpreters fit under 512 MiB
    assert planned.workers == 4
    one, notes = memory.plan(cfg.model_copy(update={"workers": 1}))
    assert one.workers == 1 and notes == []
    # the budget covers the connections' frame buffers; the pool gets the rest
    assert memory.pool_capacity(cfg) == cfg.buffer_budget_bytes - 8 * memory.frame_buffer(cfg)
