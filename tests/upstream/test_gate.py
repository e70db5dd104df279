"""The FIFO admission gate, directly: order, bounds, timeouts, a moving limit, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from proxy.upstream.gate import Gate, QueueFull, QueueTimeout


async def _queued(gate: Gate, n: int) -> None:
    """Let waiting tasks reach the queue."""
    for _ in range(50):
        if gate.queued == n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{gate.queued} queued, expected {n}")


async def test_waiters_are_admitted_in_arrival_order() -> None:
    gate = Gate(limit=1, max_queue=10)
    await gate.acquire(1)
    order: list[int] = []

    async def wait(i: int) -> None:
        await gate.acquire(5)
        order.append(i)

    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(wait(i)))
        await _queued(gate, i + 1)
    for _ in range(5):
        gate.release()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4]
    assert gate.in_flight == 1 and gate.stats.waited == 5


async def test_a_full_queue_refuses_at_once_and_try_acquire_never_jumps_it() -> None:
    gate = Gate(limit=1, max_queue=1)
    await gate.acquire(1)
    waiter = asyncio.create_task(gate.acquire(5))
    await _queued(gate, 1)
    with pytest.raises(QueueFull):
        await gate.acquire(5)
    gate.release()
    assert not gate.try_acquire()  # the slot went to the waiter, not to a newcomer
    await waiter
    assert gate.stats.queue_full == 1 and gate.in_flight == 1


async def test_max_queue_zero_means_no_waiting() -> None:
    gate = Gate(limit=1, max_queue=0)
    assert await gate.acquire(1) == 0.0
    with pytest.raises(QueueFull):
        await gate.acquire(1)


async def test_a_wait_past_its_time_gives_up_and_leaves_the_queue() -> None:
    gate = Gate(limit=1, max_queue=5)
    await gate.acquire(1)
    with pytest.raises(QueueTimeout):
        await gate.acquire(0.05)
    assert gate.queued == 0 and gate.stats.queue_timeouts == 1
    gate.release()
    assert gate.in_flight == 0  # nobody was handed the slot


async def test_raising_the_limit_admits_waiters_lowering_it_holds_them() -> None:
    gate = Gate(limit=2, max_queue=10)
    await gate.acquire(1)
    await gate.acquire(1)
    tasks = [asyncio.create_task(gate.acquire(5)) for _ in range(3)]
    await _queued(gate, 3)
    gate.limit = 4
    await asyncio.sleep(0)
    assert gate.in_flight == 4 and gate.queued == 1
    gate.limit = 1
    for _ in range(3):
        gate.release()
    await asyncio.sleep(0)
    assert gate.in_flight == 1 and gate.queued == 1  # 1 in flight already: still full
    gate.release()
    await asyncio.gather(*tasks)
    assert gate.in_flight == 1 and gate.queued == 0


async def test_a_cancelled_waiter_does_not_take_a_slot_with_it() -> None:
    gate = Gate(limit=1, max_queue=5)
    await gate.acquire(1)
    first = asyncio.create_task(gate.acquire(5))
    second = asyncio.create_task(gate.acquire(5))
    await _queued(gate, 2)
    first.cancel()
    gate.release()  # may be handed to `first` just as it is cancelled: it must pass it on
    with pytest.raises(asyncio.CancelledError):
        await first
    await second
    assert gate.in_flight == 1 and gate.queued == 0


async def test_oldest_wait_and_wait_seconds_are_measured() -> None:
    now = [100.0]
    gate = Gate(limit=1, max_queue=5, clock=lambda: now[0])
    await gate.acquire(1)
    task = asyncio.create_task(gate.acquire(5))
    await _queued(gate, 1)
    now[0] += 2.5
    assert gate.oldest_wait() == 2.5
    gate.release()
    assert await task == 2.5
    assert gate.stats.wait_seconds == 2.5 and gate.oldest_wait() == 0.0
