"""Injected time: every component that reads time or sleeps takes a ``clock=``.

``SystemClock`` is real monotonic time, for production and live demos. ``VirtualClock`` is
simulated time for tests, notebooks and simulations: sleeping costs no real time, so a ten-minute
outage replays in milliseconds and a run with a fixed seed is exactly reproducible.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ScaledClock", "SystemClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """What the patterns need from time: a monotonic reading and two ways to wait."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """Real time: ``time.monotonic()``, ``time.sleep`` and ``asyncio.sleep``."""

    # time.monotonic itself, not a method wrapping it: every pattern reads the clock on every
    # call, and a Python-level wrapper would double what a reading costs.
    now = staticmethod(time.monotonic)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


class ScaledClock:
    """Real time run faster (``speed=10`` makes a minute pass in six seconds), for live demos."""

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.speed = float(speed)
        self._origin_real = time.monotonic()
        self._origin_virtual = 0.0
        self._lock = threading.Lock()

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on, without a jump in the reading."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        with self._lock:
            self._origin_virtual = self.now()
            self._origin_real = time.monotonic()
            self.speed = float(speed)

    def now(self) -> float:
        return self._origin_virtual + (time.monotonic() - self._origin_real) * self.speed

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.speed)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    def __repr__(self) -> str:
        return f"ScaledClock(speed={self.speed:g})"


class VirtualClock:
    """Simulated time that only moves when someone sleeps or calls ``advance``.

    ``sleep(s)`` returns at once with the reading moved ``s`` later. ``await asleep(s)``
    suspends the coroutine until virtual time reaches its wake time; as soon as nothing else on
    the event loop can run, virtual time jumps to the earliest sleeper, so coroutines wake in
    virtual-time order (ties in the order they went to sleep) and no real time passes.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.RLock()
        self._seq = itertools.count()
        # one heap of (wake_time, seq, future) per event loop, and the loops being driven
        self._heaps: dict[asyncio.AbstractEventLoop,
                          list[tuple[float, int, asyncio.Future[None]]]] = {}

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0) and wake every coroutine that is due."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        with self._lock:
            self._now += seconds
            due = []
            for loop in [lp for lp in self._heaps if lp.is_closed()]:
                del self._heaps[loop]  # a finished asyncio.run left sleepers behind
            for heap in self._heaps.values():
                while heap and heap[0][0] <= self._now:
                    due.append(heapq.heappop(heap)[2])
        for fut in due:
            _wake(fut)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            heap = self._heaps.get(loop)
            if heap is None:
                heap = self._heaps[loop] = []
                loop.call_soon(self._tick, loop, 0)
            heapq.heappush(heap, (self._now + seconds, next(self._seq), fut))
        await fut

    # The driver: a callback that re-queues itself until the loop has nothing else to run,
    # then moves time to the earliest sleeper and wakes every sleeper due at that time.
    # A loop that is never idle (a foreign callback re-queuing itself forever, as some event-loop
    # integrations do) would stall virtual time: after _MAX_BUSY_ROUNDS busy passes in a row
    # time moves anyway. A coroutine chain is a few dozen passes deep, far below that bound.
    _MAX_BUSY_ROUNDS = 10_000

    def _tick(self, loop: asyncio.AbstractEventLoop, busy_rounds: int) -> None:
        ready = getattr(loop, "_ready", None)  # CPython's queue of runnable callbacks
        limit = self._MAX_BUSY_ROUNDS if ready is not None else 20
        # busy: something else can run, or the loop is stopping (its caller runs next)
        busy = ready is None or len(ready) > 0 or getattr(loop, "_stopping", False)
        if busy_rounds < limit and busy:
            loop.call_soon(self._tick, loop, busy_rounds + 1)
            return
        with self._lock:
            heap = self._heaps.get(loop, [])
            while heap and heap[0][2].done():  # cancelled sleepers
                heapq.heappop(heap)
            if not heap:
                self._heaps.pop(loop, None)
                return
            if heap[0][0] > self._now:
                self._now = heap[0][0]
            due = []
            while heap and heap[0][0] <= self._now:
                due.append(heapq.heappop(heap)[2])
        try:
            for fut in due:
                _wake(fut)
        finally:  # (even if a wake-up fails, the driver goes on)
            # queued after the woken coroutines' steps: when they only go back to sleep, the
            # next pass finds the loop idle and moves time at once, one loop pass per wake-up
            loop.call_soon(self._tick, loop, 0)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now:g})"


def _wake(fut: asyncio.Future[None]) -> None:
    """Resolve a sleeper's future on its own loop; one whose loop has closed is dropped."""
    if fut.done():
        return
    loop = fut.get_loop()

    def resolve() -> None:
        if not fut.done():
            fut.set_result(None)

    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        resolve()
    elif not loop.is_closed():
        try:
            loop.call_soon_threadsafe(resolve)
        except RuntimeError:  # closed between the check and the call
            pass
