"""One flow, two shells: how a sync and an async method share one definition of a wait.

A *flow* is a generator (as httpx's ``auth_flow``) that decides everything and does nothing
itself: it yields what it needs done and gets the result sent back.

| the flow yields       | the sync shell (``run``)   | the async shell (``arun``)                  |
|-----------------------|----------------------------|---------------------------------------------|
| a float ``s``         | ``clock.sleep(s)``         | ``await clock.asleep(s)``                   |
| ``Block(lock, fut)``  | ``lock.acquire()``         | ``await fut``                               |
| ``Call(fn, blocking)``| ``fn()``                   | ``fn()``, in a worker thread if blocking    |

and returns the method's result. If the shell is interrupted (an exception while sleeping, a
cancelled task) the flow is closed, so its ``finally`` clauses clean up (leave a queue, give a
ticket back). Store calls that do I/O run in a thread on the async path: the event loop never
waits for SQLite's lock or a slow Redis.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .clock import Clock

__all__ = ["Block", "Call", "Flow", "arun", "run", "running_loop"]

R = TypeVar("R")


@dataclass(slots=True)
class Block:
    """Wait to be woken: a held ``threading.Lock`` someone releases (sync), or a future
    someone resolves (async). Only the one the shell uses is set."""

    lock: threading.Lock | None = None
    fut: asyncio.Future[None] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    """Run ``fn()`` and send its result back; ``blocking``: it may wait on I/O or a lock."""

    fn: Callable[[], Any]
    blocking: bool = True


Step = float | Block | Call
Flow = Generator[Step, Any, R]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (without raising)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def run(flow: Flow[R], clock: Clock) -> R:
    """Drive ``flow`` on the calling thread."""
    try:
        step = next(flow)
        while True:
            result = None
            if isinstance(step, float):
                clock.sleep(step)
            elif isinstance(step, Call):
                result = step.fn()
            elif step.lock is not None:
                step.lock.acquire()
            else:
                raise TypeError(f"a sync flow cannot wait on {step!r}")
            step = flow.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        flow.close()


async def arun(flow: Flow[R], clock: Clock) -> R:
    """Drive ``flow`` in a coroutine: sleeping, waiting and blocking calls never hold the loop."""
    try:
        step = next(flow)
        while True:
            result = None
            if isinstance(step, float):
                await clock.asleep(step)
            elif isinstance(step, Call):
                result = await asyncio.to_thread(step.fn) if step.blocking else step.fn()
            elif step.fut is not None:
                await step.fut
            else:
                raise TypeError(f"an async flow cannot wait on {step!r}")
            step = flow.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        flow.close()
