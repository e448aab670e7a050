"""``HTTPProvider``: what the OpenAI and Anthropic providers share.

One call is one ``_Attempt``, a sans-I/O object (as h11 is to sockets): it builds the
``httpx.Request``, is told when the response headers arrive and fed the raw body chunks, and
turns the outcome into an ``LLMResponse`` or a §3 error. ``send`` and ``asend`` are the only
places that do I/O, and are the same eight lines with and without ``await``: the sync/async
pair share every decision.

Per attempt:

- **Timeouts** as the SDKs set them (``httpx.Timeout(600, connect=5)`` by default), applied to
  each request, so a passed client's own default (httpx's 5 s) does not cut a slow completion.
  ``Request.timeout`` replaces the provider's; ``send(request, time_left=s)`` caps every phase
  and the whole response at ``s`` seconds (a retry deadline shrinking the attempt in flight).
- **An overall deadline** for the whole response (the longest phase timeout, or ``time_left``),
  checked as each chunk arrives: a server dripping a byte every 20 ms is cut at the deadline,
  not after one read timeout per byte. (A single read still waits at most its read timeout.)
- **A body cap** (``max_response_bytes``, 32 MiB by default) and **bounded decompression**
  (we ask for gzip/deflate only and inflate them ourselves with a ``max_length``).
- **The key** lives in a ``Secret``; errors are raised outside the ``except`` that caught the
  httpx exception, with a scrubbed copy as their cause (no request, no headers, no frames), and a
  malformed body is never chained to the caller's error.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple, Self
from urllib.parse import urlsplit, urlunsplit

import httpx

from .. import _validate
from .._secret import Secret, install_log_redaction, redact
from ..clock import Clock, SystemClock
from ..errors import (
    LLMError,
    MalformedResponse,
    error_from_answer,
    error_from_exception,
    request_id_from_headers,
)
from ..request import Request
from ..response import LLMResponse, ToolCall, Usage
from ._body import ACCEPT_ENCODING, Body
from ._clients import DEFAULT_TIMEOUT, LoopClients, new_async_client, new_client
from ._stream import AsyncOpening, AsyncStream, Stream, StreamCore, StreamDecoder

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "ERROR_BODY_BYTES",
    "Completion",
    "HTTPProvider",
    "require_int",
]

logger = logging.getLogger("llm_patterns.providers")

DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
"""A completion's JSON is rarely over 1 MB; 32 MiB leaves room for logprobs and many choices."""

ERROR_BODY_BYTES = 64 * 1024
"""An error body is read only for its message: the first 64 KiB, the rest is dropped."""

_INVALID = object()


class Completion(NamedTuple):
    """What a provider reads from a 2xx body (its ``decode``) or a whole stream. ``usage`` is
    None only for a stream that reported none (an OpenAI-compatible server may not)."""

    text: str
    model: str
    usage: Usage | None
    finish_reason: str | None
    tool_calls: tuple[ToolCall, ...] = ()


def require_int(mapping: Mapping[str, Any], key: str, where: str) -> int:
    """``mapping[key]`` as a non-negative int, else ValueError (mapped to MalformedResponse)."""
    value = mapping.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}.{key} must be a non-negative int, got {value!r}")
    return value


def _check_key(api_key: Any, env_var: str) -> Secret:
    """The key as a Secret. Its value is never shown, not even in the error about it."""
    if api_key is None:
        api_key = os.environ.get(env_var)
        if not api_key:
            raise ValueError(f"api_key is required: pass api_key= or set {env_var}")
    if isinstance(api_key, Secret):
        api_key = api_key.reveal()
    if not isinstance(api_key, str):
        raise TypeError(f"api_key must be a str, got a {type(api_key).__name__} (value not shown)")
    if not api_key:
        raise ValueError("api_key must be a non-empty str, got an empty string")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in api_key):
        raise ValueError(
            "api_key contains whitespace or control characters (value not shown); "
            "strip it, e.g. api_key=key.strip()"
        )
    return Secret(api_key)


def _check_base_url(base_url: Any, path: str) -> tuple[str, str | Secret]:
    """(the base URL as shown, credentials masked; the endpoint URL (``path`` appended before
    any query), held as a Secret when it carries credentials: a password, or a key in its query).
    """
    if not isinstance(base_url, str):  # the value is not shown: it may hold a password
        raise TypeError(f"base_url must be a str, got a {type(base_url).__name__}")
    _validate.text("base_url", redact(base_url))
    display = redact(base_url)
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL, got {display!r}")
    try:
        parts = urlsplit(base_url.rstrip("/"))
    except ValueError:
        raise ValueError(f"base_url is not a valid URL: {display!r}") from None
    if not parts.hostname:
        raise ValueError(f"base_url has no host: {display!r}")
    shown = redact(urlunsplit(parts))
    endpoint = urlunsplit(parts._replace(path=parts.path + path))
    return shown, (endpoint if redact(endpoint) == endpoint else Secret(endpoint))


def _check_timeout(timeout: Any) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(_validate.real("timeout", timeout, minimum=0, strict_min=True))


def _cap(value: float | None, cap: float) -> float:
    return cap if value is None else min(value, cap)


class _Attempt:
    """One request/response exchange, without the I/O (see the module docstring).

    Nothing here raises about the answer: the outcome (an ``LLMResponse`` or an error) is kept
    and ``outcome()`` returns or raises it, from a frame whose locals hold neither the body nor
    the headers (a traceback rendered with its locals shows none of them).
    """

    __slots__ = ("body", "deadline", "error", "http_request", "provider", "request", "response",
                 "started", "stream", "time_left")

    def __init__(self, provider: HTTPProvider, request: Request,
                 client: httpx.Client | httpx.AsyncClient, time_left: float | None,
                 stream: bool = False) -> None:
        self.provider = provider
        self.request = request
        self.stream = stream
        self.time_left = time_left
        timeout, total = provider._timeouts(request, time_left)
        if stream:
            content = provider._dumps(provider.encode(request, stream=True))
            headers = provider._headers()
            headers["accept"] = "text/event-stream"
        else:
            content = provider._dumps(provider.encode(request))
            headers = provider._headers()
        self.http_request = client.build_request(
            "POST", provider._url, content=content, headers=headers, timeout=timeout,
        )
        self.started = provider.clock.now()
        self.deadline = None if total is None else self.started + total
        self.response: httpx.Response | None = None
        self.body: Body | None = None
        self.error: LLMError | None = None

    def __repr__(self) -> str:  # shown by tracebacks with locals: never the headers
        return f"<attempt {self.provider.name} POST {self.provider.path}>"

    def received(self, response: httpx.Response) -> bool:
        """The status and headers have arrived; whether the body is still to be streamed (an
        in-memory transport hands over a response whose body is already read and decoded)."""
        self.response = response
        ok = response.is_success
        p = self.provider
        try:
            loaded: bytes | None = response.content
        except httpx.ResponseNotRead:
            loaded = None
        self.body = Body(
            response.headers, limit=p.max_response_bytes if ok else ERROR_BODY_BYTES,
            deadline=self.deadline, clock=p.clock, provider=p.name,
            status=response.status_code, truncate=not ok, decoded=loaded is not None,
        )
        if loaded is not None:
            self.body.feed(loaded)
        return loaded is None

    def streaming(self) -> bool:
        """Whether the answer is an event stream to read as it comes (else it is read whole:
        an error, or a server that answered a stream request with one JSON body)."""
        response = self.response
        return (self.stream and response is not None and response.is_success
                and response.headers.get("content-type", "").startswith("text/event-stream"))

    def read(self, chunks: Iterable[bytes]) -> None:
        """The raw body chunks of a sync response."""
        assert self.body is not None
        for chunk in chunks:
            if not self.body.feed(chunk):
                break

    async def aread(self, chunks: AsyncIterable[bytes]) -> None:
        """The raw body chunks of an async response."""
        assert self.body is not None
        async for chunk in chunks:
            if not self.body.feed(chunk):
                break

    def transport_failed(self, exc: Exception) -> None:
        """An httpx exception: kept as its scrubbed §3 error (see ``error_from_exception``).
        When it broke a response whose headers had arrived, the error carries that response's
        status and request id, and obeys its ``x-should-retry: false`` (as the SDKs do)."""
        error = error_from_exception(exc, provider=self.provider.name)
        if self.response is not None:
            headers = self.response.headers
            error.status_code = self.response.status_code
            error.request_id = request_id_from_headers(headers)
            if headers.get("x-should-retry") == "false":
                error.retryable = False
        self.error = error
        logger.debug("%s: POST %s failed: %s", self.provider.name, self.provider.path,
                     self.error.message)

    def read_failed(self, error: LLMError) -> None:
        """Reading the body failed (deadline, size, encoding): kept without its frames."""
        self.error = error.with_traceback(None)

    def outcome(self) -> LLMResponse:
        """The answer, or its error raised."""
        error = self.error
        if error is None:
            assert self.response is not None and self.body is not None
            latency = max(0.0, self.provider.clock.now() - self.started)
            answer = self.provider._answer(self.response.status_code, self.response.headers,
                                           self.body.content(), latency)
            if isinstance(answer, LLMResponse):
                return answer
            error = answer
        raise error


class HTTPProvider:
    """Base of the HTTP providers: configuration, clients, the call flow, error mapping.

    Subclasses set ``api``, ``env_var``, ``default_base_url`` and ``path``, and implement
    ``_auth(key) -> headers``, ``encode(request) -> JSON body`` and
    ``decode(body, status) -> Completion``.
    """

    api = "http"
    env_var = ""
    default_base_url = ""
    path = ""

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        default_headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.name = _validate.text("name", name)
        self.model = _validate.text("model", model)
        self.base_url, self._endpoint = _check_base_url(
            self.default_base_url if base_url is None else base_url, self.path)
        self._key = _check_key(api_key, self.env_var)
        self.timeout = _check_timeout(timeout)
        if client is not None and not isinstance(client, httpx.Client):
            raise TypeError(f"client must be an httpx.Client, got {type(client).__name__}")
        if async_client is not None and not isinstance(async_client, httpx.AsyncClient):
            raise TypeError(
                f"async_client must be an httpx.AsyncClient, got {type(async_client).__name__}")
        if default_headers is not None and not isinstance(default_headers, Mapping):
            raise TypeError(
                f"default_headers must be a mapping, got {type(default_headers).__name__}")
        headers = {}
        for key, value in (default_headers or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(
                    f"default_headers must map str to str, got {type(key).__name__} -> "
                    f"{type(value).__name__} for {key!r}")
            headers[key.lower()] = value
        self._default_headers = headers
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise TypeError(f"clock must have a now() method, got {type(clock).__name__}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.max_response_bytes = _validate.integer(
            "max_response_bytes", max_response_bytes, minimum=1024)
        self._client = client
        self._owns_client = client is None
        self._async_client = async_client
        self._loop_clients = LoopClients(self._new_async_client) if async_client is None else None
        self._lock = threading.Lock()
        install_log_redaction()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, "
                f"base_url={self.base_url!r})")

    # -- subclass hooks -------------------------------------------------------------------------
    def _auth(self, key: str) -> dict[str, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, request: Request, *,
               stream: bool = False) -> dict[str, Any]:  # pragma: no cover - abstract
        """The JSON body of ``request`` in this API's format (``stream``: asking for a stream);
        ``ValueError`` for what it cannot take."""
        raise NotImplementedError

    def stream_decoder(self, request: Request) -> StreamDecoder:  # pragma: no cover - abstract
        """A reader of this API's stream events for one request."""
        raise NotImplementedError

    def check(self, request: Request) -> None:
        """Raise ``ValueError``/``TypeError`` if this provider cannot take ``request`` (a field
        its API cannot take, a conversation it cannot translate), without sending anything.
        A client runs it for every provider of a fallback chain before the first is called."""
        self.encode(request)

    def decode(self, body: dict[str, Any], status: int = 200) -> Completion:  # pragma: no cover
        """Read a 2xx JSON body. Raise ``MalformedResponse``/``ContentFilterError``; any other
        ``KeyError``/``TypeError``/``ValueError`` is reported as a malformed answer."""
        raise NotImplementedError

    # -- the pieces of a call -------------------------------------------------------------------
    @property
    def _url(self) -> str:
        endpoint = self._endpoint
        return endpoint if isinstance(endpoint, str) else endpoint.reveal()

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json",
                   "accept-encoding": ACCEPT_ENCODING}
        headers.update(self._default_headers)
        headers.update(self._auth(self._key.reveal()))
        return headers

    def _timeouts(self, request: Request,
                  time_left: float | None) -> tuple[httpx.Timeout, float | None]:
        """The request's phase timeouts and its overall deadline in seconds (None: no limit)."""
        timeout = self.timeout if request.timeout is None else _check_timeout(request.timeout)
        phases = (timeout.connect, timeout.read, timeout.write)
        longest = max((t for t in phases if t is not None), default=None)
        if time_left is None:
            return timeout, longest
        cap = _validate.real("time_left", time_left, minimum=0, strict_min=True)
        capped = httpx.Timeout(connect=_cap(timeout.connect, cap), read=_cap(timeout.read, cap),
                               write=_cap(timeout.write, cap), pool=_cap(timeout.pool, cap))
        return capped, _cap(longest, cap)

    @staticmethod
    def _dumps(body: dict[str, Any]) -> bytes:
        try:
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except ValueError as exc:  # NaN or infinity: the caller's value
            raise ValueError(f"the request cannot be sent as JSON: {exc}") from None
        except TypeError as exc:
            raise TypeError(f"the request cannot be sent as JSON: {exc}") from None
        return text.encode()

    def answer(self, status: int, headers: Mapping[str, str], content: bytes, *,
               latency: float = 0.0) -> LLMResponse:
        """The ``LLMResponse`` for one HTTP answer (status, headers, decoded body), or its §3
        error, raised."""
        result = self._answer(status, headers, content, latency)
        if isinstance(result, LLMError):
            raise result
        return result

    def _answer(self, status: int, headers: Mapping[str, str], content: bytes,
                latency: float) -> LLMResponse | LLMError:
        if not isinstance(headers, httpx.Headers):
            headers = httpx.Headers(headers)
        if not 200 <= status < 300:
            error = error_from_answer(status, headers, content, provider=self.name)
            logger.debug("%s: POST %s -> %d in %.2f s: %s", self.name, self.path, status,
                         latency, type(error).__name__)
            return error
        outcome = self._completion(status, headers, content)
        if isinstance(outcome, LLMError):
            outcome.request_id = outcome.request_id or request_id_from_headers(headers)
            return outcome
        completion, raw = outcome
        usage = completion.usage
        if usage is None:  # decode always reads one; a stream's finish may not
            return MalformedResponse("no usage in the completion", provider=self.name,
                                     status_code=status)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s: POST %s -> %d in %.2f s (%d prompt + %d completion tokens, %d cached, "
                "finish %s)", self.name, self.path, status, latency,
                usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
                completion.finish_reason,
            )
        return LLMResponse(
            text=completion.text, model=completion.model, provider=self.name,
            usage=usage, latency_s=latency, raw=raw, headers=dict(headers.items()),
            finish_reason=completion.finish_reason, tool_calls=completion.tool_calls,
        )

    def _completion(self, status: int, headers: httpx.Headers,
                    content: bytes) -> tuple[Completion, dict[str, Any]] | LLMError:
        """Decode a 2xx body; an error is returned, not raised, so no ``except`` chains it."""
        body = _json_object(content)
        if not isinstance(body, dict):
            ctype = headers.get("content-type", "unknown content-type")
            if body is _INVALID:
                snippet = _snippet(content)
                what = f"body is not JSON ({ctype}): {snippet!r}"
            elif body is None:
                what = "empty body, expected a JSON completion"
            else:
                what = f"expected a JSON object, got {type(body).__name__}"
            return MalformedResponse(what, provider=self.name, status_code=status)
        try:
            completion = self.decode(body, status)
        except LLMError as error:  # scrub anything the body echoed into the message
            error.message = redact(error.message)
            error.args = (error.message,)
            error.__context__ = None
            return error.with_traceback(None)  # decode's frames hold the body
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            what = f"unexpected completion shape ({type(exc).__name__}: {_snippet(str(exc))})"
            return MalformedResponse(what, provider=self.name, status_code=status)
        return completion, body

    # -- clients --------------------------------------------------------------------------------
    def _new_client(self) -> httpx.Client:
        return new_client()

    def _new_async_client(self) -> httpx.AsyncClient:
        return new_async_client()

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
            return self._client

    async def _aclient(self) -> httpx.AsyncClient:
        if self._loop_clients is None:
            assert self._async_client is not None
            return self._async_client
        return await self._loop_clients.get()

    def close(self) -> None:
        """Close the sync client if this provider made it. Async clients are closed by
        ``aclose()`` or, at the latest, when their event loop shuts down."""
        with self._lock:
            client = self._client if self._owns_client else None
            if self._owns_client:
                self._client = None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close every client this provider made (the sync one, and this loop's async one)."""
        self.close()
        if self._loop_clients is not None:
            await self._loop_clients.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- calls ----------------------------------------------------------------------------------
    def send(self, request: Request, *, time_left: float | None = None) -> LLMResponse:
        """One completion for a built ``Request``; every failure raised as a §3 error.
        ``time_left`` caps the attempt (every phase and the whole response) in seconds."""
        client = self._sync_client()
        attempt = _Attempt(self, request, client, time_left)
        try:
            response = client.send(attempt.http_request, stream=True)
            try:
                if attempt.received(response):
                    attempt.read(response.iter_raw())
            finally:
                response.close()
        except httpx.HTTPError as exc:
            attempt.transport_failed(exc)
        except LLMError as error:
            attempt.read_failed(error)
        return attempt.outcome()

    async def asend(self, request: Request, *, time_left: float | None = None) -> LLMResponse:
        """``send`` for async callers: the same flow, awaited."""
        client = await self._aclient()
        attempt = _Attempt(self, request, client, time_left)
        try:
            response = await client.send(attempt.http_request, stream=True)
            try:
                if attempt.received(response):
                    await attempt.aread(response.aiter_raw())
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            attempt.transport_failed(exc)
        except LLMError as error:
            attempt.read_failed(error)
        return attempt.outcome()

    def send_stream(self, request: Request, *, time_left: float | None = None) -> Stream:
        """A streamed answer for a built ``Request``, started: it has read up to its first text
        delta (or its end), and any failure up to there is raised here as a §3 error, so it
        may be retried. Iterate it for the deltas; ``.response`` after the loop."""
        client = self._sync_client()
        attempt = _Attempt(self, request, client, time_left, stream=True)
        response = None
        unread = False
        try:
            response = client.send(attempt.http_request, stream=True)
            unread = attempt.received(response)
            if unread and not attempt.streaming():
                attempt.read(response.iter_raw())
        except httpx.HTTPError as exc:
            attempt.transport_failed(exc)
        except LLMError as error:
            attempt.read_failed(error)
        if attempt.error is not None or not attempt.streaming():
            if response is not None:
                response.close()
            return Stream.of_response(attempt.outcome())
        assert response is not None and attempt.body is not None
        chunks = response.iter_raw() if unread else iter([attempt.body.content()])
        return self.read_stream(request, response.headers, chunks, started=attempt.started,
                                time_left=time_left, close=response.close,
                                decoded=not unread).start()

    async def asend_stream(self, request: Request, *,
                           time_left: float | None = None) -> AsyncStream:
        """``send_stream`` for async callers."""
        client = await self._aclient()
        attempt = _Attempt(self, request, client, time_left, stream=True)
        response = None
        unread = False
        try:
            response = await client.send(attempt.http_request, stream=True)
            unread = attempt.received(response)
            if unread and not attempt.streaming():
                await attempt.aread(response.aiter_raw())
        except httpx.HTTPError as exc:
            attempt.transport_failed(exc)
        except LLMError as error:
            attempt.read_failed(error)
        if attempt.error is not None or not attempt.streaming():
            if response is not None:
                await response.aclose()
            return AsyncStream.of_response(attempt.outcome())
        assert response is not None and attempt.body is not None
        chunks = response.aiter_raw() if unread else _once(attempt.body.content())
        return await self.aread_stream(request, response.headers, chunks,
                                       started=attempt.started, time_left=time_left,
                                       close=response.aclose, decoded=not unread).start()

    def _stream_core(self, request: Request, headers: Mapping[str, str], started: float,
                     time_left: float | None, decoded: bool) -> StreamCore:
        timeout, total = self._timeouts(request, time_left)
        body = Body(headers, limit=self.max_response_bytes,
                    deadline=None if total is None else started + total, clock=self.clock,
                    provider=self.name, status=200, decoded=decoded)
        return StreamCore(
            provider=self.name, model=self.model, request=request,
            decoder=self.stream_decoder(request), body=body, headers=headers, clock=self.clock,
            started=started, idle=timeout.read if timeout.read is not None else total,
            cap=None if time_left is None else started + time_left)

    def read_stream(self, request: Request, headers: Mapping[str, str], chunks: Iterable[bytes],
                    *, started: float, time_left: float | None = None,
                    close: Callable[[], None] | None = None, decoded: bool = False) -> Stream:
        """The (not yet started) stream of a 200 event-stream answer to ``request``, read from
        ``chunks`` (raw body bytes; ``decoded``: already decompressed): the HTTP path's, and
        the in-process mock's. ``close`` releases the source when the stream ends."""
        core = self._stream_core(request, headers, started, time_left, decoded)
        return Stream(core, iter(chunks), close)

    def aread_stream(self, request: Request, headers: Mapping[str, str],
                     chunks: AsyncIterable[bytes], *, started: float,
                     time_left: float | None = None,
                     close: Callable[[], Awaitable[None]] | None = None,
                     decoded: bool = False) -> AsyncStream:
        """``read_stream`` for an async source."""
        core = self._stream_core(request, headers, started, time_left, decoded)
        return AsyncStream(core, aiter(chunks), close)

    def stream(self, prompt: str | None = None, *, messages: list[dict[str, Any]] | None = None,
               max_tokens: int = 256, **kw: Any) -> Stream:
        """A streamed completion: ``with provider.stream("...") as s: for delta in s: ...``,
        then ``s.response``. The arguments are those of ``complete``."""
        return self.send_stream(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    def astream(self, prompt: str | None = None, *,
                messages: list[dict[str, Any]] | None = None, max_tokens: int = 256,
                **kw: Any) -> AsyncOpening:
        """``stream`` for async callers: ``async with provider.astream(...) as s: async for
        delta in s: ...``. The arguments are checked at once, before anything is awaited."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        return AsyncOpening(lambda: self.asend_stream(request))

    def complete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse:
        """One completion over HTTP; every failure raised as a §3 error with ``provider`` set.
        The arguments are checked (``Request``) before anything is sent; ``timeout=`` sets this
        call's timeout (seconds or an ``httpx.Timeout``)."""
        return self.send(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    async def acomplete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse:
        """``complete`` for async callers."""
        return await self.asend(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _json_object(content: bytes) -> Any:
    """The parsed JSON, None for an empty body, ``_INVALID`` when it is not JSON. Never raises
    (and keeps no ``JSONDecodeError``, whose ``doc`` is the whole body)."""
    if not content.strip():
        return None
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return _INVALID


def _snippet(content: bytes | str, limit: int = 80) -> str:
    text = content[:400].decode("utf-8", "replace") if isinstance(content, bytes) else content
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

