"""One flow, two shells: how a call's sync and async paths share one definition.

A *flow* is a generator (as httpx's ``auth_flow``) that decides everything and does no I/O or
waiting itself: it yields *steps* and gets each step's result sent back, or its exception
thrown back in (so a flow can retry, fall back or clean up with ordinary ``try``). A step is
a tuple ``(twin, args)`` where ``twin`` is ``(sync_fn, async_fn)``:

| the shell         | runs a step as                        |
|-------------------|---------------------------------------|
| ``run(flow)``     | ``sync_fn(*args)``                    |
| ``arun(flow)``    | ``await async_fn(*args)``             |

so a limiter's wait is ``(limiter.acquire, limiter.acquire_async)``, a backoff sleep
``(clock.sleep, clock.asleep)``, a provider call ``(send, asend)``: the protocol's own async
twins, which never block the event loop. Flows compose with ``yield from``: the client's layers
each wrap the flow of the layer inside them. A cancellation (``asyncio.CancelledError``) is
thrown into the flow like any exception, so every layer's cleanup runs on that path too.

(``_flow.py`` is the limiter's own driver, for waits on locks and futures.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["Flow", "Step", "Twin", "arun", "run"]

R = TypeVar("R")

Twin = tuple[Callable[..., Any], Callable[..., Awaitable[Any]]]
"""``(sync_fn, async_fn)``: one operation on each path."""

Step = tuple[Twin, tuple[Any, ...]]
"""``(twin, args)``: run ``twin`` with ``args`` and send the result back."""

Flow = Generator[Step, Any, R]


def run(flow: Flow[R]) -> R:
    """Drive ``flow`` on the calling thread: each step's sync function, called."""
    try:
        twin, args = next(flow)  # a sync flow usually ends here (every step called in place):
        # the bound send/throw only once it yields (0.1 us of RetryPolicy.call, overhead.py)
        send, throw = flow.send, flow.throw
        while True:
            try:
                result = twin[0](*args)
            except BaseException as error:
                twin, args = throw(error)
            else:
                twin, args = send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def arun(flow: Flow[R]) -> R:
    """Drive ``flow`` in a coroutine: each step's async function, awaited."""
    try:
        twin, args = next(flow)
        send, throw = flow.send, flow.throw
        while True:
            try:
                result = await twin[1](*args)
            except BaseException as error:
                twin, args = throw(error)
            else:
                twin, args = send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
