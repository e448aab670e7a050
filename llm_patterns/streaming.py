"""``ResilientClient.stream()`` / ``astream()``: a streamed answer through every pattern.

A stream goes through the same layers as a whole answer (``llm_patterns.layers``)::

    context check -> retry( breaker( budget( rate limiter( open the stream ) ) ) )

and on to the next provider when that fails (``stops_chain`` decides, as for ``complete()``).
Opening a stream means reading it up to its first text delta (the provider's ``send_stream``),
so everything that can fail before the caller has seen any text is retried and falls back
exactly like a whole answer. After that the stream belongs to the caller: a failure raises
``StreamInterrupted`` (``partial_text``, ``provider``), never a silent retry.

When the stream ends, however it ends (read to the end, interrupted, or the caller breaking
out of the loop or cancelled), each layer settles once, with the same rules as for a whole
answer (``layers.attach``): the limiter is settled to what the provider counts
(``layers.limiter_usage``: the usage, or for an incomplete stream what arrived) and re-synced
from the headers; the breaker hears the outcome (the error that broke the stream, a success,
or no verdict for a stream closed before any text reached the caller); the budget hold is
committed with the usage (the final usage, else the usage seen so far with the output counted
from the text that arrived: an interrupted stream is paid for too). Cost is recorded once.

This module holds only the caller's side: ``ResilientStream`` and ``AsyncResilientStream``,
thin shells that run the client's flow (``_twin.run`` / ``arun``) and read the opened stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Self

from ._twin import Flow, arun, run
from .layers import stamp
from .providers import AsyncStream, Stream
from .response import LLMResponse

if TYPE_CHECKING:
    from .clock import Clock
    from .layers import Call

__all__ = ["AsyncResilientStream", "Opened", "ResilientStream"]


class Opened:
    """A stream opened on one provider of the chain (its layers' endings attached): what the
    shells read, and how its final answer is reported."""

    __slots__ = ("call", "clock", "position", "provider", "stream")

    def __init__(self, stream: Stream | AsyncStream, provider: str, position: int, call: Call,
                 clock: Clock) -> None:
        self.stream = stream
        self.provider = provider
        self.position = position
        self.call = call
        self.clock = clock

    def final(self, response: LLMResponse) -> LLMResponse:
        """The answer as the client reports it: that provider's attempts and latency (from its
        first attempt to the end of the stream), and whether it was a fallback."""
        return stamp(response, self.call, self.position, self.clock.now())


class _Shell:
    """What the sync and async shells share: the opened stream and the final answer."""

    def __init__(self, opener: Callable[[], Flow[Opened]]) -> None:
        self._opener = opener
        self._opened: Opened | None = None
        self._response: LLMResponse | None = None

    def __repr__(self) -> str:
        where = self._opened.provider if self._opened is not None else "not open"
        return f"<{type(self).__name__} ({where})>"

    @property
    def response(self) -> LLMResponse:
        """The whole answer (text, usage, finish reason, provider, ``fallback_used``), once the
        stream has been read to its end."""
        if self._response is None:
            raise RuntimeError("the stream has not been read to its end yet; iterate it first")
        return self._response

    @property
    def provider(self) -> str | None:
        """The provider streaming (None before the stream is open)."""
        return self._opened.provider if self._opened is not None else None

    @property
    def text(self) -> str:
        """The text that has arrived so far."""
        return self._opened.stream.text if self._opened is not None else ""


class ResilientStream(_Shell):
    """``with client.stream(...) as s: for delta in s: ...`` then ``s.response``.

    Entering opens the stream (retries and fallback happen there); iterating yields the text
    deltas; leaving closes it (settling limiter, breaker and budget with what arrived).
    """

    def __init__(self, opener: Callable[[], Flow[Opened]]) -> None:
        super().__init__(opener)
        self._iterator: Iterator[str] | None = None

    def open(self) -> Self:
        """Open the stream on the first provider that can (retries and fallback happen here);
        entering the ``with`` block does it."""
        if self._opened is None:
            self._opened = run(self._opener())
        return self

    def __iter__(self) -> Iterator[str]:
        """The text deltas (one iterator per stream: a loop broken off and resumed goes on
        where it stopped)."""
        if self._iterator is None:
            self._iterator = self._deltas()
        return self._iterator

    def _deltas(self) -> Iterator[str]:
        opened = self._opened or self.open()._opened
        assert opened is not None and isinstance(opened.stream, Stream)
        yield from opened.stream
        self._response = opened.final(opened.stream.response)

    def close(self) -> None:
        """Stop reading; what arrived is settled and paid for."""
        if self._opened is not None:
            stream = self._opened.stream
            assert isinstance(stream, Stream)
            stream.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncResilientStream(_Shell):
    """``async with client.astream(...) as s: async for delta in s: ...``."""

    def __init__(self, opener: Callable[[], Flow[Opened]]) -> None:
        super().__init__(opener)
        self._iterator: AsyncIterator[str] | None = None

    async def open(self) -> Self:
        """``ResilientStream.open`` for async callers."""
        if self._opened is None:
            self._opened = await arun(self._opener())
        return self

    def __aiter__(self) -> AsyncIterator[str]:
        """The text deltas (one iterator per stream)."""
        if self._iterator is None:
            self._iterator = self._deltas()
        return self._iterator

    async def _deltas(self) -> AsyncIterator[str]:
        opened = self._opened or (await self.open())._opened
        assert opened is not None and isinstance(opened.stream, AsyncStream)
        async for delta in opened.stream:
            yield delta
        self._response = opened.final(opened.stream.response)

    async def aclose(self) -> None:
        """Stop reading; what arrived is settled and paid for."""
        if self._opened is not None:
            stream = self._opened.stream
            assert isinstance(stream, AsyncStream)
            await stream.aclose()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
