"""A provider answered by a ``MockLLMServer`` in process: no HTTP objects, no JSON.

``MockLLMServer.provider(name, model)`` returns one. It is the fast path for simulations that
replay thousands of requests on a ``VirtualClock``: building ``httpx`` requests and responses
and encoding and decoding JSON cost far more than the patterns being simulated.

It behaves as the HTTP provider of the same ``api`` wired to ``server.client()`` does, because
it reuses that provider's own code at both ends:

- the request is built and validated by ``Request`` and encoded by ``OpenAIProvider`` /
  ``AnthropicProvider`` (``encode``: same errors for bad arguments) and read by the server's
  own parser (``request.parse_body``, the step after JSON decoding);
- the server decides the answer with the same code (``decide``: faults, outages, buckets,
  seeded errors, latency, request ids, stats; ``settle`` after the latency);
- a completion is read by the provider's own ``decode``; anything else (an error status, a
  timeout, a malformed body) goes through the provider's HTTP answer mapping (``answer``), so
  errors, messages and ``retry_after`` are the HTTP path's.

Streams (``stream`` / ``astream``, ``send_stream`` / ``asend_stream``) are the server's own
event frames, paced on its clock (``chunk_delay``) and read by the provider's own stream reader
(``read_stream``): the same deltas, errors and endings as over HTTP.

Differences: ``LLMResponse.headers`` has no ``content-length`` (nothing was serialized), and a
request body that JSON could not encode is not refused here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ..clock import Clock
from ..errors import error_from_exception
from ..providers import DEFAULT_TIMEOUT, AsyncOpening, AsyncStream, HTTPProvider, Stream
from ..request import Request
from ..response import LLMResponse
from .apis import APIS, BASE_URLS, DEFAULT_MODELS, api_for_path
from .request import BadRequest, ChatRequest, parse_body
from .stream import DROPPED, StreamPlan

if TYPE_CHECKING:
    from .server import MockLLMServer, Plan

__all__ = ["DirectProvider"]

logger = logging.getLogger("llm_patterns.providers")

_MOCK_KEY = "mock-direct-key"  # the mock checks no key; a placeholder, never a real one


class DirectProvider:
    """``name``, ``model``, ``complete`` / ``acomplete``: the provider protocol, in process."""

    def __init__(self, server: MockLLMServer, name: str, model: str | None = None, *,
                 api: str = "openai", timeout: float | httpx.Timeout | None = None,
                 clock: Clock | None = None) -> None:
        from ..providers import AnthropicProvider, OpenAIProvider

        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        model = model or server.model or DEFAULT_MODELS[api]
        cls = OpenAIProvider if api == "openai" else AnthropicProvider
        self._wire: HTTPProvider = cls(
            name, model, base_url=BASE_URLS[api], api_key=_MOCK_KEY,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout, clock=clock or server.clock)
        self.server = server
        self.api = api
        self.name = self._wire.name
        self.model = self._wire.model
        self.clock: Clock = self._wire.clock
        self._read_timeout = self._wire.timeout.read
        parts = urlsplit(self._wire.base_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"

    def __repr__(self) -> str:
        return (f"DirectProvider(name={self.name!r}, model={self.model!r}, api={self.api!r}, "
                f"server={self.server.name!r})")

    def _send(self, request: Request, stream: bool = False) -> tuple[str, Plan]:
        body = self._wire.encode(request, stream=stream)
        url = self._wire.base_url + self._wire.path
        path = url[len(self._origin):]
        route = api_for_path(path)
        parsed: ChatRequest | None = None
        bad: BadRequest | None = None
        if route is not None:
            try:
                parsed = parse_body(route, body)
            except BadRequest as exc:
                bad = exc
        return url, self.server.decide(route, "POST", path, parsed, bad, self._read_timeout)

    def _result(self, url: str, plan: Plan, started: float) -> LLMResponse:
        self.server.settle(plan)
        if plan.status is None:
            exc: httpx.TransportError = (
                httpx.RemoteProtocolError("Server disconnected without sending a response.")
                if plan.dropped else
                httpx.ReadTimeout(f"mock timeout: no answer after {plan.delay:g} s"))
            raise error_from_exception(exc, provider=self.name)
        body = plan.body
        if plan.status == 200 and type(body) is dict:  # a completion: read it as it is
            try:
                text, model, usage, finish, calls = self._wire.decode(body, 200)
            except Exception:  # let the HTTP path map it exactly
                pass
            else:
                assert usage is not None
                latency = max(0.0, self.clock.now() - started)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "%s: direct %s -> 200 in %.2f s (%d prompt + %d completion tokens)",
                        self.name, plan.record["path"], latency, usage.prompt_tokens,
                        usage.completion_tokens,
                    )
                return LLMResponse(text=text, model=model, provider=self.name, usage=usage,
                                   latency_s=latency, raw=body, headers=dict(plan.headers),
                                   finish_reason=finish, tool_calls=calls)
        latency = max(0.0, self.clock.now() - started)
        return self._wire.answer(plan.status, plan.headers, plan.content(), latency=latency)

    def check(self, request: Request) -> None:
        """``ValueError``/``TypeError`` if this provider's API cannot take ``request``."""
        self._wire.check(request)

    def send(self, request: Request, *, time_left: float | None = None) -> LLMResponse:
        """One completion for a built ``Request``; the latency passes on the server's clock."""
        started = self.clock.now()
        url, plan = self._send(request)
        self.server.clock.sleep(plan.delay)
        return self._result(url, plan, started)

    async def asend(self, request: Request, *, time_left: float | None = None) -> LLMResponse:
        """``send`` for async callers (``await clock.asleep`` for the latency)."""
        started = self.clock.now()
        url, plan = self._send(request)
        await self.server.clock.asleep(plan.delay)
        return self._result(url, plan, started)

    def complete(self, prompt: str | None = None, *, messages: Any = None,
                 max_tokens: int = 256, **kw: Any) -> LLMResponse:
        """One completion; the latency passes on the server's clock (``clock.sleep``)."""
        return self.send(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, **kw: Any) -> LLMResponse:
        """The async twin of ``complete`` (``await clock.asleep`` for the latency)."""
        return await self.asend(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    # -- streams ---------------------------------------------------------------------------------
    def _frames(self, frames: StreamPlan) -> Iterator[bytes]:
        for frame, delay in zip(frames.frames, frames.delays, strict=True):
            if delay:
                self.server.clock.sleep(delay)
            yield frame
        if frames.drop_after is not None:
            raise httpx.RemoteProtocolError(DROPPED)

    async def _aframes(self, frames: StreamPlan) -> AsyncIterator[bytes]:
        for frame, delay in zip(frames.frames, frames.delays, strict=True):
            if delay:
                await self.server.clock.asleep(delay)
            yield frame
        if frames.drop_after is not None:
            raise httpx.RemoteProtocolError(DROPPED)

    def send_stream(self, request: Request, *, time_left: float | None = None) -> Stream:
        """A streamed answer, started (see ``HTTPProvider.send_stream``): the server's event
        frames, paced on its clock, read by the provider's own stream reader."""
        started = self.clock.now()
        url, plan = self._send(request, stream=True)
        self.server.clock.sleep(plan.delay)
        if plan.stream is None:  # an error, or a fault that replaced the stream
            return Stream.of_response(self._result(url, plan, started))
        self.server.settle(plan)
        return self._wire.read_stream(request, plan.headers, self._frames(plan.stream),
                                      started=started, time_left=time_left,
                                      decoded=True).start()

    async def asend_stream(self, request: Request, *,
                           time_left: float | None = None) -> AsyncStream:
        """``send_stream`` for async callers."""
        started = self.clock.now()
        url, plan = self._send(request, stream=True)
        await self.server.clock.asleep(plan.delay)
        if plan.stream is None:
            return AsyncStream.of_response(self._result(url, plan, started))
        self.server.settle(plan)
        return await self._wire.aread_stream(request, plan.headers, self._aframes(plan.stream),
                                             started=started, time_left=time_left,
                                             decoded=True).start()

    def stream(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
               **kw: Any) -> Stream:
        """A streamed completion: ``with provider.stream(...) as s: for delta in s``."""
        return self.send_stream(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    def astream(self, prompt: str | None = None, *, messages: Any = None,
                max_tokens: int = 256, **kw: Any) -> AsyncOpening:
        """``async with provider.astream(...) as s: async for delta in s``."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        return AsyncOpening(lambda: self.asend_stream(request))
