"""A streamed answer: text deltas as they arrive, then the whole ``LLMResponse``.

Three parts, as for a whole answer (``_base``):

- ``StreamCore``, without I/O: fed the raw body chunks, it bounds them (``Body``: size cap,
  bounded decompression, a deadline), cuts them into server-sent events (``SSEDecoder``), hands
  each event to the API's decoder (``OpenAIStreamDecoder`` / ``AnthropicStreamDecoder``) and
  keeps the text deltas, the outcome and any error, mapped onto the §3 taxonomy (an Anthropic
  ``event: error``, an OpenAI error chunk, a dropped connection, a body that stops too soon);
- ``Stream`` and ``AsyncStream``, thin shells that pull chunks from a sync or async source
  (an httpx response, or the mock's frames) and run the same core.

**The first-delta boundary.** ``start()`` reads until the first text delta is ready (or the
answer ends, e.g. with only tool calls): any failure up to there raises as itself, so a retry or
a fallback may try again, since nothing reached the caller. After a delta was yielded, a failure
raises ``StreamInterrupted`` (``partial_text``, ``provider``, the mapped error as its cause):
the caller has the text, and only the caller may decide to ask again.

**Deadlines.** The first event must come within the request's timeout (its longest phase, as
for a whole answer); after that each event must come within the read timeout of the previous
one, so a stream that stalls, or drips bytes that never complete an event, is cut, while a long
answer that keeps flowing is not (streams are how answers longer than ten minutes are read).
``time_left`` caps the whole stream.

**Endings.** ``on_end(callback)`` registers what must run exactly once when the stream ends,
however it ends: ``callback(StreamEnd)`` with the response, or the error, or neither (closed
before the end: the caller broke out of the loop). The client's layers settle rate limiters,
breakers and budgets there.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

import httpx

from .._secret import redact
from ..clock import Clock
from ..errors import (
    LLMError,
    MalformedResponse,
    StreamInterrupted,
    error_from_answer,
    error_from_exception,
    request_id_from_headers,
)
from ..request import Request
from ..response import LLMResponse, ToolCall, Usage
from ..tokens import estimate_tokens
from ..tools import parse_arguments
from ._body import Body
from ._sse import ServerEvent, SSEDecoder

__all__ = [
    "AsyncOpening",
    "AsyncStream",
    "ErrorEvent",
    "Stream",
    "StreamCore",
    "StreamDecoder",
    "StreamEnd",
    "StreamedCalls",
]

logger = logging.getLogger("llm_patterns.providers")

# An error event's type -> the HTTP status the same error has as a whole answer, so it maps onto
# the same class (an Anthropic overloaded_error mid-stream is the 529's ServerError).
_ERROR_STATUS = {
    "overloaded_error": 529, "api_error": 500, "server_error": 500,
    "service_unavailable_error": 503, "timeout_error": 504, "rate_limit_error": 429,
    "rate_limit_exceeded": 429, "tokens": 429, "requests": 429, "insufficient_quota": 429,
    "invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
    "not_found_error": 404, "request_too_large": 413, "billing_error": 402,
}


class StreamedCalls:
    """Tool calls arriving in pieces (OpenAI ``tool_calls`` deltas, Anthropic ``tool_use``
    blocks with ``input_json_delta``), keyed by their index in the answer."""

    def __init__(self) -> None:
        self._calls: dict[int, list[Any]] = {}  # index -> [id, name, argument pieces]

    def add(self, index: int, *, ident: Any = None, name: Any = None,
            arguments: Any = None) -> None:
        """A piece of call ``index``: its id or name when they come, more of its arguments."""
        call = self._calls.setdefault(index, [None, None, []])
        if ident:
            call[0] = ident
        if name:
            call[1] = name
        if arguments:
            if not isinstance(arguments, str):
                raise TypeError(f"tool call {index}: arguments must arrive as text")
            call[2].append(arguments)

    def __contains__(self, index: int) -> bool:
        return index in self._calls

    def text(self) -> str:
        """The arguments received so far (what an incomplete answer is estimated from)."""
        return "".join("".join(call[2]) for call in self._calls.values())

    def calls(self) -> tuple[ToolCall, ...]:
        """The calls, in order, their arguments parsed (``ValueError`` for a broken one)."""
        return tuple(ToolCall(ident, name, parse_arguments("".join(pieces),
                                                           f"tool call {index} arguments"))
                     for index, (ident, name, pieces) in sorted(self._calls.items()))


class ErrorEvent(Exception):
    """Raised by a decoder for an error sent inside the stream: ``payload`` is the event's JSON
    (with an ``error`` object), ``kind`` its error type."""

    def __init__(self, payload: bytes, kind: str) -> None:
        super().__init__(kind)
        self.payload = payload
        self.kind = kind


class StreamDecoder(Protocol):
    """One API's stream events, decoded (``OpenAIStreamDecoder``, ``AnthropicStreamDecoder``)."""

    done: bool
    """The API's final event arrived (OpenAI ``[DONE]``, Anthropic ``message_stop``)."""

    def event(self, event: ServerEvent) -> str | None:
        """The text delta this event carries, if any. Raises ``ErrorEvent`` for an error sent
        in the stream, ``ValueError``/``KeyError``/``TypeError`` for an event it cannot read."""
        ...

    def finish(self) -> Any:
        """The ``Completion`` of the whole stream (usage None when the API sent none). Raises
        ``ContentFilterError`` for a refusal, ``ValueError`` for an incomplete answer."""
        ...

    def usage_seen(self) -> Usage | None:
        """The usage the stream has reported so far (None: none yet)."""
        ...

    def tool_text(self) -> str:
        """The tool-call arguments received so far (for estimating an incomplete answer)."""
        ...


@dataclass(frozen=True)
class StreamEnd:
    """How a stream ended, for ``on_end`` callbacks.

    ``response``: the whole answer (it ended normally); ``error``: the error it ended with (a
    ``StreamInterrupted`` once text reached the caller); neither: closed before its end.
    ``usage`` is the final usage, or for an incomplete stream the usage seen so far with the
    output counted from what arrived; ``delivered``: whether any text reached the caller.
    """

    provider: str
    response: LLMResponse | None
    error: BaseException | None
    usage: Usage
    text: str
    delivered: bool

    @property
    def complete(self) -> bool:
        return self.response is not None


class StreamCore:
    """The I/O-free part of one stream (see the module docstring)."""

    def __init__(self, *, provider: str, model: str, request: Request, decoder: StreamDecoder,
                 body: Body, headers: Mapping[str, str], clock: Clock, started: float,
                 idle: float | None, cap: float | None) -> None:
        self.provider = provider
        self.model = model
        self.request = request
        self.decoder = decoder
        self.body = body
        self.headers = headers
        self.clock = clock
        self.started = started
        self.idle = idle
        self.cap = cap
        self.sse = SSEDecoder()
        self.pending: deque[str] = deque()
        self.parts: list[str] = []
        self.error: LLMError | None = None
        self.finished = False  # the source is exhausted or the final event arrived

    # -- feeding ---------------------------------------------------------------------------------
    def feed(self, raw: bytes) -> None:
        """One raw chunk off the wire. Never raises: an error is kept in ``self.error``."""
        if self.error is not None or self.finished:
            return
        try:
            self.body.feed(raw)
            data = self.body.take()
            events = self.sse.feed(data) if data else []
        except LLMError as error:  # the deadline or the size cap
            self.error = error.with_traceback(None)
            return
        except ValueError as exc:  # a line over the cap
            self.error = self._malformed(str(exc))
            return
        if events:
            self._events(events)

    def source_ended(self) -> None:
        """The body ended (cleanly, as far as the transport knows)."""
        if self.error is not None or self.finished:
            return
        self._events(self.sse.end())
        self.finished = True  # without its final event, response() judges what arrived

    def source_failed(self, exc: Exception) -> None:
        """Reading the body failed: the connection broke or timed out (an httpx error, mapped
        and scrubbed), or a source that maps its own errors raised one."""
        if self.error is not None:
            return
        if isinstance(exc, LLMError):
            self.error = exc.with_traceback(None)
            return
        error = error_from_exception(exc, provider=self.provider)
        error.request_id = request_id_from_headers(self.headers)
        self.error = error

    def _events(self, events: list[ServerEvent]) -> None:
        decoder = self.decoder
        for event in events:
            try:
                delta = decoder.event(event)
            except ErrorEvent as exc:
                self.error = self._stream_error(exc.payload, exc.kind)
                return
            except (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError):
                snippet = " ".join(redact(event.data[:120]).split())
                self.error = self._malformed(f"unreadable {event.event!r} event: {snippet!r}")
                return
            if delta:
                self.pending.append(delta)
                self.parts.append(delta)
            if decoder.done:
                self.finished = True
                return
        if self.idle is not None:  # an event arrived: the next one has `idle` seconds
            deadline = self.clock.now() + self.idle
            self.body.deadline = deadline if self.cap is None else min(deadline, self.cap)

    def _malformed(self, what: str) -> MalformedResponse:
        return MalformedResponse(what, provider=self.provider, status_code=self.body.status,
                                 request_id=request_id_from_headers(self.headers))

    def _stream_error(self, payload: bytes, kind: str) -> LLMError:
        status = _ERROR_STATUS.get(kind, 500)
        rid = request_id_from_headers(self.headers)
        error = error_from_answer(status, {"x-request-id": rid} if rid else {}, payload,
                                  provider=self.provider)
        error.message = f"error event in the stream: {error.message}"
        error.args = (error.message,)
        logger.debug("%s: %s", self.provider, error)
        return error

    # -- reading the outcome ---------------------------------------------------------------------
    @property
    def text(self) -> str:
        return "".join(self.parts)

    def usage(self) -> Usage:
        """The usage seen so far; the output counted from what arrived when it is not known
        (OpenAI reports usage only at the end; Anthropic the input at the start)."""
        seen = self.decoder.usage_seen()
        arrived = estimate_tokens(self.text) + estimate_tokens(self.decoder.tool_text())
        if seen is None:
            return Usage(prompt_tokens=self.request.input_tokens, completion_tokens=arrived)
        if seen.completion_tokens >= arrived:
            return seen
        return Usage(seen.prompt_tokens, arrived, seen.cached_tokens, seen.cache_write_tokens,
                     seen.cache_write_1h_tokens, min(seen.reasoning_tokens, arrived))

    def response(self) -> LLMResponse:
        """The whole answer of a finished stream, or its error raised."""
        if self.error is not None:
            raise self.error
        failed: LLMError | None = None
        try:
            completion = self.decoder.finish()
        except LLMError as error:
            error.request_id = error.request_id or request_id_from_headers(self.headers)
            failed = error.with_traceback(None)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            failed = self._malformed(f"incomplete stream: {' '.join(str(exc).split())[:160]}")
        if failed is not None:  # raised outside the except: the decoder's frames stay out
            raise failed
        usage = completion.usage
        if usage is None:  # an OpenAI-compatible server that ignored include_usage
            usage = self.usage()
            logger.warning("%s: the stream reported no usage; counted %d prompt + %d completion "
                           "tokens from the text", self.provider, usage.prompt_tokens,
                           usage.completion_tokens)
        latency = max(0.0, self.clock.now() - self.started)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: stream done in %.2f s (%d prompt + %d completion tokens, finish %s)",
                         self.provider, latency, usage.prompt_tokens, usage.completion_tokens,
                         completion.finish_reason)
        return LLMResponse(
            text=completion.text, model=completion.model or self.model, provider=self.provider,
            usage=usage, latency_s=latency, headers=dict(self.headers.items()),
            finish_reason=completion.finish_reason, tool_calls=completion.tool_calls,
        )


Callback = Callable[[StreamEnd], Any]


class _Shell:
    """What the sync and async shells share: the delivered-text rule and the ending."""

    def __init__(self, core: StreamCore | None, response: LLMResponse | None = None) -> None:
        self._core = core
        self._response = response
        self._callbacks: list[Callback] = []
        self._end: StreamEnd | None = None
        self._whole: deque[str] = deque([response.text] if response and response.text else [])
        self.delivered = False
        self.provider = core.provider if core is not None else (response.provider if response
                                                                  else "")

    def __repr__(self) -> str:
        state = "ended" if self._end is not None else "open"
        return f"<{type(self).__name__} from {self.provider} ({state})>"

    @property
    def response(self) -> LLMResponse:
        """The whole answer, once the stream has been read to its end."""
        if self._response is None:
            raise RuntimeError("the stream has not been read to its end yet; iterate it first")
        return self._response

    @property
    def text(self) -> str:
        """The text that has arrived so far."""
        if self._core is None:
            return self._response.text if self._response is not None else ""
        return self._core.text

    @property
    def ended(self) -> StreamEnd | None:
        """How the stream ended (None while it is open)."""
        return self._end

    def on_end(self, callback: Callback) -> None:
        """Run ``callback(StreamEnd)`` once when the stream ends (at once if it has)."""
        if self._end is not None:
            raise RuntimeError("the stream has already ended")
        self._callbacks.append(callback)

    def _ready(self) -> deque[str]:
        return self._core.pending if self._core is not None else self._whole

    def _more(self) -> bool:
        """Whether there is more to read before the stream can be concluded."""
        core = self._core
        return core is not None and core.error is None and not core.finished

    def _conclude(self) -> tuple[LLMResponse | None, LLMError | None]:
        """The outcome once nothing is left to read: the response, or the error to raise
        (a ``StreamInterrupted`` once text reached the caller)."""
        core = self._core
        if core is None or self._response is not None:
            return self._response, None
        error = core.error
        if error is None:
            try:
                self._response = core.response()
                return self._response, None
            except LLMError as exc:
                error = exc.with_traceback(None)
        if self.delivered and not isinstance(error, StreamInterrupted):
            wrapped = StreamInterrupted.of(error, partial_text=core.text, usage=core.usage())
            wrapped.__cause__ = error
            error = wrapped
        core.error = error
        return None, error

    def _ending(self, response: LLMResponse | None, error: BaseException | None) -> StreamEnd:
        core = self._core
        if response is not None:
            usage, text = response.usage, response.text
        elif core is not None:
            usage, text = core.usage(), core.text
        else:
            usage, text = Usage(), ""
        return StreamEnd(self.provider, response, error, usage, text, self.delivered)


class Stream(_Shell):
    """A streamed answer, read synchronously (see the module docstring).

    ``with provider.stream(...) as s: for delta in s: ...`` then ``s.response``.
    """

    def __init__(self, core: StreamCore | None, source: Iterator[bytes] | None,
                 close: Callable[[], None] | None, *,
                 response: LLMResponse | None = None) -> None:
        super().__init__(core, response)
        self._source = source
        self._close = close
        self._iterator: Iterator[str] | None = None

    @classmethod
    def of_response(cls, response: LLMResponse) -> Stream:
        """A stream of one delta: an answer that came whole (a server that does not stream)."""
        return cls(None, None, None, response=response)

    def _pull(self) -> None:
        """Read one more chunk into the core (its end, or its failure, are kept there)."""
        core = self._core
        assert core is not None and self._source is not None
        try:
            raw = next(self._source)
        except StopIteration:
            core.source_ended()
            return
        except (httpx.HTTPError, LLMError) as exc:
            failure = exc
        else:
            core.feed(raw)
            return
        core.source_failed(failure)  # mapped outside the except: nothing chains the httpx error

    def start(self) -> Self:
        """Read until the first text delta is ready or the answer has ended (an answer with no
        text: tool calls only, a refusal); a failure up to there raises as itself, since
        nothing reached the caller yet."""
        ready = self._ready()
        while not ready and self._more():
            self._pull()
        if self._core is not None and (self._core.error is not None or not ready):
            _, error = self._conclude()
            if error is not None:
                self._run_end(None, error)
                raise error
        return self

    def __iter__(self) -> Iterator[str]:
        """The text deltas. One iterator per stream (as a file's): breaking out of a loop and
        looping again goes on where it stopped; the connection is released by ``close()``,
        the ``with`` block, the end of the stream, or the stream being garbage-collected."""
        if self._iterator is None:
            self._iterator = self._deltas()
        return self._iterator

    def _deltas(self) -> Iterator[str]:
        ready = self._ready()
        try:
            while self._end is None:
                while ready:
                    self.delivered = True
                    yield ready.popleft()
                if self._more():
                    self._pull()
                    continue
                response, error = self._conclude()
                self._run_end(response, error)
                if error is not None:
                    raise error
        finally:
            if self._end is None:  # the caller stopped early (break, an exception, GC)
                self.close()

    def _run_end(self, response: LLMResponse | None, error: BaseException | None) -> None:
        if self._end is not None:
            return
        self._end = self._ending(response, error)
        if self._close is not None:
            self._close()
        for callback in self._callbacks:
            callback(self._end)

    def close(self) -> None:
        """Stop reading and release the connection; ``on_end`` sees a stream closed early
        unless it had ended already."""
        self._run_end(None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStream(_Shell):
    """A streamed answer, read with ``async for`` (see the module docstring)."""

    def __init__(self, core: StreamCore | None, source: AsyncIterator[bytes] | None,
                 close: Callable[[], Awaitable[None]] | None, *,
                 response: LLMResponse | None = None) -> None:
        super().__init__(core, response)
        self._source = source
        self._close = close
        self._iterator: AsyncIterator[str] | None = None

    @classmethod
    def of_response(cls, response: LLMResponse) -> AsyncStream:
        """A stream of one delta: an answer that came whole (a server that does not stream)."""
        return cls(None, None, None, response=response)

    async def _pull(self) -> None:
        core = self._core
        assert core is not None and self._source is not None
        try:
            raw = await anext(self._source)
        except StopAsyncIteration:
            core.source_ended()
            return
        except (httpx.HTTPError, LLMError) as exc:
            failure = exc
        else:
            core.feed(raw)
            return
        core.source_failed(failure)

    async def start(self) -> Self:
        """``Stream.start`` for async callers."""
        ready = self._ready()
        while not ready and self._more():
            await self._pull()
        if self._core is not None and (self._core.error is not None or not ready):
            _, error = self._conclude()
            if error is not None:
                await self._run_end(None, error)
                raise error
        return self

    def __aiter__(self) -> AsyncIterator[str]:
        """The text deltas (one iterator per stream, as ``Stream.__iter__``)."""
        if self._iterator is None:
            self._iterator = self._deltas()
        return self._iterator

    async def _deltas(self) -> AsyncIterator[str]:
        ready = self._ready()
        try:
            while self._end is None:
                while ready:
                    self.delivered = True
                    yield ready.popleft()
                if self._more():
                    await self._pull()
                    continue
                response, error = self._conclude()
                await self._run_end(response, error)
                if error is not None:
                    raise error
        finally:
            if self._end is None:
                await self.aclose()

    async def _run_end(self, response: LLMResponse | None, error: BaseException | None) -> None:
        if self._end is not None:
            return
        self._end = self._ending(response, error)
        if self._close is not None:
            await self._close()
        for callback in self._callbacks:
            result = callback(self._end)
            if inspect.isawaitable(result):
                await result

    async def aclose(self) -> None:
        """``Stream.close`` for async callers."""
        await self._run_end(None, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncOpening:
    """What ``astream(...)`` returns: ``async with provider.astream(...) as s`` opens (and
    starts) the stream on entry and closes it on exit; ``s = await provider.astream(...)``
    just opens it."""

    def __init__(self, opener: Callable[[], Awaitable[AsyncStream]]) -> None:
        self._opener = opener
        self._stream: AsyncStream | None = None

    def __await__(self) -> Any:
        return self._opener().__await__()

    async def __aenter__(self) -> AsyncStream:
        self._stream = await self._opener()
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.aclose()
