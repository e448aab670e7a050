"""The HTTP clients a provider owns: pools as large as the SDKs', one async client per loop.

An ``httpx.AsyncClient`` belongs to the event loop it first ran on: its pooled connections are
that loop's transports. Each ``asyncio.run()`` makes a new loop, so a provider used from many
``asyncio.run()`` calls needs a client per loop, and each must be closed while its loop still
runs. ``LoopClients`` does both: a client is made on first use in a loop, and closed by an async
generator that the loop finalizes at shutdown (``asyncio.run`` calls ``shutdown_asyncgens``),
or earlier by ``aclose()``. No client outlives its loop.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import AsyncGenerator, Callable

import httpx

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "LoopClients", "new_async_client", "new_client"]

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
"""The official SDKs' default: 10 minutes for a completion, 5 s to connect."""

DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
"""The official SDKs' pool size (httpx's own default, 100/20, queues a busy pipeline)."""


def new_client() -> httpx.Client:
    """A sync client with the SDKs' pool; timeouts are set per request."""
    return httpx.Client(timeout=DEFAULT_TIMEOUT, limits=DEFAULT_LIMITS)


def new_async_client() -> httpx.AsyncClient:
    """An async client with the SDKs' pool; timeouts are set per request."""
    return httpx.AsyncClient(timeout=DEFAULT_TIMEOUT, limits=DEFAULT_LIMITS)


async def _close_when_loop_ends(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    """Suspended for the client's life; the loop's ``shutdown_asyncgens`` (or ``aclose()``)
    resumes it into the ``finally``, which closes the client on the loop that owns it."""
    try:
        yield
    finally:
        await client.aclose()


class LoopClients:
    """One owned ``httpx.AsyncClient`` per running event loop."""

    def __init__(self, factory: Callable[[], httpx.AsyncClient] = new_async_client) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[httpx.AsyncClient, AsyncGenerator[None, None]],
        ] = weakref.WeakKeyDictionary()

    async def get(self) -> httpx.AsyncClient:
        """This loop's client, made (and its closer registered with the loop) on first use."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.get(loop)
            if entry is None:
                for old in [lp for lp in self._by_loop if lp.is_closed()]:
                    del self._by_loop[old]  # a loop that ended without shutdown_asyncgens
                client = self._factory()
                closer = _close_when_loop_ends(client)
                entry = self._by_loop[loop] = (client, closer)
                fresh = True
            else:
                fresh = False
        if fresh:
            await anext(entry[1])  # registers the closer with this loop's asyncgen hooks
        return entry[0]

    async def aclose(self) -> None:
        """Close this loop's client now; forget those of loops that have ended."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._by_loop.pop(loop, None)
            for old in [lp for lp in self._by_loop if lp.is_closed()]:
                del self._by_loop[old]
        if entry is not None:
            await entry[1].aclose()

    def open_count(self) -> int:
        """How many clients are open (for tests and health checks)."""
        with self._lock:
            return sum(1 for client, _ in self._by_loop.values() if not client.is_closed)
