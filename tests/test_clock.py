"""VirtualClock and SystemClock: the injected time everything else runs on."""

import asyncio
import threading
import time

import pytest

from llm_patterns.clock import ScaledClock, SystemClock, VirtualClock


def test_virtual_sleep_moves_time_without_waiting():
    clock = VirtualClock(start=100.0)
    t0 = time.perf_counter()
    clock.sleep(3600)
    assert clock.now() == 3700.0
    assert time.perf_counter() - t0 < 0.5
    clock.sleep(0)
    clock.sleep(-5)  # a non-positive sleep is a no-op, like time.sleep(0)
    assert clock.now() == 3700.0


def test_advance_rejects_negative():
    with pytest.raises(ValueError, match="-1"):
        VirtualClock().advance(-1)


def test_coroutines_wake_in_virtual_time_order():
    clock = VirtualClock()
    woke = []

    async def sleeper(name, delay):
        await clock.asleep(delay)
        woke.append((name, clock.now()))

    async def main():
        await asyncio.gather(sleeper("slow", 5), sleeper("fast", 1), sleeper("mid", 3),
                             sleeper("tie", 3))

    asyncio.run(main())
    assert woke == [("fast", 1), ("mid", 3), ("tie", 3), ("slow", 5)]


def test_time_only_jumps_when_nothing_else_can_run():
    clock = VirtualClock()
    seen = []

    async def busy():
        for _ in range(100):
            seen.append(clock.now())
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(clock.asleep(10), busy())

    asyncio.run(main())
    assert set(seen) == {0.0}  # the busy coroutine never saw time move under it
    assert clock.now() == 10


def test_many_coroutines_no_real_waiting():
    clock = VirtualClock()

    async def worker(i):
        for _ in range(20):
            await clock.asleep(0.5 + (i % 5))

    async def main():
        await asyncio.gather(*(worker(i) for i in range(500)))

    t0 = time.perf_counter()
    asyncio.run(main())
    assert clock.now() == pytest.approx(20 * 4.5)
    assert time.perf_counter() - t0 < 10  # generous: it is about 0.05 s


def test_cancelled_sleeper_does_not_move_time():
    clock = VirtualClock()

    async def main():
        task = asyncio.ensure_future(clock.asleep(1000))
        await asyncio.sleep(0)
        task.cancel()
        await clock.asleep(2)

    asyncio.run(main())
    assert clock.now() == 2


def test_advance_wakes_due_sleepers_and_sync_sleep_from_a_task():
    clock = VirtualClock()
    order = []

    async def sleeper():
        await clock.asleep(5)
        order.append(("woke", clock.now()))

    async def main():
        t = asyncio.ensure_future(sleeper())
        await asyncio.sleep(0)
        clock.advance(7)  # external push of time, e.g. a sync sleep inside a coroutine
        await t

    asyncio.run(main())
    assert order == [("woke", 7)]


def test_reusable_across_event_loops():
    clock = VirtualClock()
    asyncio.run(clock.asleep(1))
    asyncio.run(clock.asleep(1))
    assert clock.now() == 2


def test_sync_sleep_is_thread_safe():
    clock = VirtualClock()

    def work():
        for _ in range(1000):
            clock.sleep(0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() == pytest.approx(8.0)


def test_system_clock_is_monotonic():
    clock = SystemClock()
    a = clock.now()
    clock.sleep(0)
    asyncio.run(clock.asleep(0))
    assert clock.now() >= a
    assert repr(clock) == "SystemClock()"


def test_scaled_clock_validates_and_scales():
    with pytest.raises(ValueError, match="speed"):
        ScaledClock(0)
    clock = ScaledClock(speed=1000)
    t0 = clock.now()
    clock.sleep(1.0)  # 1 virtual second = 1 ms real
    assert clock.now() - t0 >= 0.9
    clock.set_speed(1)
    assert clock.speed == 1


def test_sleepers_left_by_a_finished_loop_do_not_break_later_sleeps():
    clock = VirtualClock()

    async def leave_one_behind():
        asyncio.ensure_future(clock.asleep(100))  # noqa: RUF006 - left behind on purpose
        await clock.asleep(1)

    asyncio.run(leave_one_behind())
    clock.sleep(500)  # wakes nothing from the closed loop, raises nothing
    asyncio.run(clock.asleep(1))
    assert clock.now() == 502


def test_time_moves_even_if_a_foreign_callback_keeps_the_loop_busy():
    """An event loop that is never idle must not stall virtual time forever."""
    clock = VirtualClock()

    async def main():
        loop = asyncio.get_running_loop()
        stop = False

        def chatter():  # re-queues itself forever, like some event-loop integrations
            if not stop:
                loop.call_soon(chatter)

        loop.call_soon(chatter)
        await clock.asleep(5)
        stop = True

    asyncio.run(asyncio.wait_for(main(), timeout=30))
    assert clock.now() == 5
