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

Differences: ``LLMResponse.headers`` has no ``content-length`` (nothing was serialized), a
request body that JSON could not encode is not refused here, and there is no streaming (use the
HTTP path, ``server.client()``, for streams).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from ..clock import Clock
from ..errors import error_from_exception
from ..providers import DEFAULT_TIMEOUT, HTTPProvider
from ..request import Request
from ..response import LLMResponse
from .apis import APIS, BASE_URLS, DEFAULT_MODELS, api_for_path
from .request import BadRequest, ChatRequest, parse_body

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

    def _send(self, prompt: str | None, messages: Any, max_tokens: int,
              kw: dict[str, Any]) -> tuple[str, Plan]:
        body = self._wire.encode(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))
        url = self._wire.base_url + self._wire.path
        path = url[len(self._origin):]
        route = api_for_path(path)
        parsed: ChatRequest | None = None
        bad: BadRequest | None = None
        if route is not None:
            if body.get("stream"):
                raise ValueError("a direct mock provider does not stream: use the HTTP path "
                                 "(server.client()) for streams")
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
                text, model, usage, finish = self._wire.decode(body, 200)
            except Exception:  # let the HTTP path map it exactly
                pass
            else:
                latency = max(0.0, self.clock.now() - started)
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug(
                        "%s: direct %s -> 200 in %.2f s (%d prompt + %d completion tokens)",
                        self.name, plan.record["path"], latency, usage.prompt_tokens,
                        usage.completion_tokens,
                    )
                return LLMResponse(text=text, model=model, provider=self.name, usage=usage,
                                   latency_s=latency, raw=body, headers=dict(plan.headers),
                                   finish_reason=finish)
        latency = max(0.0, self.clock.now() - started)
        return self._wire.answer(plan.status, plan.headers, plan.content(), latency=latency)

    def complete(self, prompt: str | None = None, *, messages: Any = None,
                 max_tokens: int = 256, **kw: Any) -> LLMResponse:
        """One completion; the latency passes on the server's clock (``clock.sleep``)."""
        started = self.clock.now()
        url, plan = self._send(prompt, messages, max_tokens, kw)
        self.server.clock.sleep(plan.delay)
        return self._result(url, plan, started)

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, **kw: Any) -> LLMResponse:
        """The async twin of ``complete`` (``await clock.asleep`` for the latency)."""
        started = self.clock.now()
        url, plan = self._send(prompt, messages, max_tokens, kw)
        await self.server.clock.asleep(plan.delay)
        return self._result(url, plan, started)
