"""``ResilientClient.stream()`` / ``astream()``: a streamed answer through every pattern.

For each provider in order, as for ``complete()``::

    budget hold -> retry( rate limiter -> breaker -> open the stream up to its first delta )

and on to the next provider when that fails (``stops_chain`` decides, as for ``complete()``).
Opening a stream means reading it up to its first text delta (``send_stream``), so everything
that can fail before the caller has seen any text is retried and falls back exactly like a
whole answer. After that the stream belongs to the caller: a failure raises
``StreamInterrupted`` (``partial_text``, ``provider``), never a silent retry.

When the stream ends, however it ends (read to the end, interrupted, or the caller breaking
out of the loop), one ending settles everything once (``StreamEnd``):

- the **limiter**, charged ``input + max_tokens`` at each attempt, is settled to what the
  provider counts (the usage, or for an incomplete stream what arrived) and re-synced from the
  answer's rate-limit headers;
- the **breaker** hears the outcome: success, the error that broke the stream (it counts when
  it is an outage), or nothing for a stream closed before any text reached the caller;
- the **budget** hold is committed with the usage (the final usage, else the usage seen so far
  with the output counted from the text that arrived, so an interrupted stream is paid for
  too), or released when the provider answered nothing. Cost is recorded exactly once.

The flow is shared by the sync and async shells (``ResilientStream``, ``AsyncResilientStream``),
which differ only in how they wait (``acquire`` / ``acquire_async``, ``send_stream`` /
``asend_stream``, ``RetryPolicy.call`` / ``call_async``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self

from .errors import (
    AllProvidersFailed,
    CircuitOpenError,
    LLMError,
    RateLimitError,
    add_note,
    describe,
    stops_chain,
)
from .protocols import Demand
from .providers import AsyncStream, Stream, StreamEnd
from .request import Request
from .response import LLMResponse, Usage, asend, check_all, send

if TYPE_CHECKING:
    from .clock import Clock

__all__ = ["AsyncResilientStream", "ResilientStream", "Route", "limiter_actual", "prepare"]

logger = logging.getLogger("llm_patterns.client")
fallback_logger = logging.getLogger("llm_patterns.fallback")


def limiter_actual(estimate: float, usage: Usage, max_tokens: int, refund: bool) -> float:
    """What a provider's rate limit really counted for a call charged ``estimate`` tokens:
    the usage for a provider that counts actual usage (``refund``), else ``max_tokens`` at
    arrival as OpenAI counts it (never less than the estimate)."""
    if refund:
        return usage.prompt_tokens + usage.completion_tokens
    return max(estimate, usage.prompt_tokens + max_tokens)


def prepare(routes: Sequence[Route], prompt: str | None, messages: Any, max_tokens: int,
            kw: dict[str, Any]) -> Request:
    """The call's ``Request``, checked once, and against every provider of the chain
    (``check_all``) before anything is sent: a request the fallback could not send is the
    caller's ``ValueError`` now, not a 400 from the second provider in the middle of an outage."""
    request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
    check_all([route.provider for route in routes], request)
    return request


@dataclass
class Route:
    """One provider and the patterns in front of it, as the stream flow sees them."""

    provider: Any
    retry: Any = None
    breaker: Any = None
    limiter: Any = None
    cost: Any = None
    refund: bool = False

    @property
    def name(self) -> str:
        return str(self.provider.name)

    @property
    def model(self) -> str | None:
        model = getattr(self.provider, "model", None)
        return model if isinstance(model, str) and model else None


class _Budget:
    """One call's budget hold, over the ``CostGate`` protocol (reserve -> commit | release) or,
    for a tracker without it, ``reserve()`` held open until ``record()``."""

    def __init__(self, cost: Any, model: str | None, request: Request) -> None:
        self.cost = cost
        self.model = model
        self.hold: Any = None
        self._held = contextlib.ExitStack()
        if cost is None or model is None:
            return
        if callable(getattr(cost, "commit", None)):
            self.hold = cost.reserve(model, Demand(request.input_tokens, request.max_tokens))
        else:
            estimate = cost.estimate(model, request.input_tokens, request.max_tokens)
            self._held.enter_context(cost.reserve(estimate))

    def commit(self, usage: Usage, provider: str, labels: dict[str, Any]) -> Decimal | None:
        if self.cost is None or self.model is None:
            return None
        try:
            if self.hold is not None:
                return self.cost.commit(  # type: ignore[no-any-return]
                    self.hold, self.model, usage, provider=provider, **labels)
            return self.cost.record(  # type: ignore[no-any-return]
                self.model, usage, provider=provider, **labels)
        finally:
            self._held.close()

    def release(self) -> None:
        if self.hold is not None:
            self.cost.release(self.hold)
        self._held.close()


class _Permit:
    """A breaker's admission, over the ``Breaker``/``Permit`` protocol or the manual one
    (``allow_request`` / ``record_success`` / ``record_failure``)."""

    def __init__(self, breaker: Any, provider: str, permit: Any = None) -> None:
        self.breaker = breaker
        self.permit: Any = permit  # given: admitted already (``admit_async``)
        if breaker is None or permit is not None:
            return
        if callable(getattr(breaker, "admit", None)):
            self.permit = breaker.admit()
        elif not breaker.allow_request():
            health = breaker.health()
            raise CircuitOpenError(f"circuit {health.get('name') or provider!r} is open",
                                   provider=provider, retry_after=health.get("retry_in") or None)

    def success(self) -> None:
        if self.permit is not None:
            self.permit.success()
        elif self.breaker is not None:
            self.breaker.record_success()

    def failure(self, error: BaseException) -> None:
        if self.permit is not None:
            self.permit.failure(error)
        elif self.breaker is not None:
            self.breaker.record_failure(error)

    def release(self) -> None:
        if self.permit is not None:
            self.permit.release()
        elif self.breaker is not None:  # the manual protocol has no release: a non-outage
            self.breaker.record_failure(_NotSent())


class _NotSent(LLMError):
    """Reported to a breaker without ``release``: an outcome that never counts (not an outage)."""


@dataclass
class _Flow:
    """One streamed call through the routes: the decisions shared by the sync and async shells."""

    routes: Sequence[Route]
    request: Request
    labels: dict[str, Any]
    clock: Clock
    started: float = 0.0
    attempts: int = 0
    errors: list[tuple[str, BaseException]] = field(default_factory=list)

    # -- one attempt (inside the route's retry) -------------------------------------------------
    def before_send(self, route: Route) -> _Permit:
        """After the limiter: count the attempt, ask the breaker."""
        self.attempts += 1
        return _Permit(route.breaker, route.name)

    async def abefore_send(self, route: Route) -> _Permit:
        """``before_send`` for the async path: ``admit_async`` never blocks the event loop (a
        store-backed breaker asks its store in a thread)."""
        admit = getattr(route.breaker, "admit_async", None)
        if not callable(admit):
            return self.before_send(route)
        self.attempts += 1
        return _Permit(route.breaker, route.name, await admit())

    def send_failed(self, route: Route, permit: _Permit | None, error: BaseException) -> None:
        """An attempt failed before any text: the breaker hears it, a 429 pauses the limiter."""
        if permit is not None:
            if isinstance(error, Exception):
                permit.failure(error)
            else:  # cancelled, interrupted: says nothing about the provider
                permit.release()
        limiter = route.limiter
        if (limiter is not None and isinstance(error, RateLimitError) and error.retry_after
                and error.retry_after > 0):
            limiter.penalize(error.retry_after)

    # -- the route as a whole -------------------------------------------------------------------
    def route_failed(self, position: int, error: Exception) -> None:
        """Every attempt on this route failed: log it; raise at once if it stops the chain."""
        name = self.routes[position].name
        self.errors.append((name, error))
        fatal = stops_chain(error)
        if fatal:
            outcome = f"not falling back ({type(error).__name__} stops the chain)"
        elif position + 1 < len(self.routes):
            outcome = f"trying {self.routes[position + 1].name}"
        else:
            outcome = "no providers left"
        fallback_logger.warning("stream: provider %s failed with %s; %s", name,
                                describe(error), outcome)
        if fatal:
            if len(self.errors) > 1:
                earlier = "; ".join(f"{n}: {type(e).__name__}" for n, e in self.errors[:-1])
                add_note(error, f"earlier providers in the fallback chain failed: {earlier}")
            raise error

    def exhausted(self) -> AllProvidersFailed:
        fallback_logger.error("stream: all %d providers failed", len(self.errors))
        return AllProvidersFailed(self.errors)

    def walk(self) -> Generator[Route, tuple[Any, _Permit], _Opened]:
        """The fallback walk without I/O: yields each route to open; is sent back what the
        route's (retried) attempts opened, or has their failure thrown in; returns the opened
        stream, or raises what stops the chain or ``AllProvidersFailed``."""
        for position, route in enumerate(self.routes):
            self.begin_route()
            try:
                budget = _Budget(route.cost, route.model, self.request)
            except Exception as error:
                self.route_failed(position, error)
                continue
            try:
                stream, permit = yield route
            except Exception as error:
                budget.release()
                self.route_failed(position, error)
                continue
            except BaseException:
                budget.release()
                raise
            stream.on_end(self.opened(position, route, permit, budget))
            return _Opened(stream, position)
        raise self.exhausted() from self.errors[-1][1]

    def opened(self, position: int, route: Route, permit: _Permit,
               budget: _Budget) -> Callable[[StreamEnd], None]:
        """The stream is open on ``route``: the ending that settles everything, once."""
        estimate = self.request.estimated_tokens
        request = self.request
        labels = self.labels
        logger.info("stream: %s is streaming (provider %d/%d, %d attempt(s), %.2f s to the "
                    "first delta)", route.name, position + 1, len(self.routes), self.attempts,
                    self.clock.now() - self.started)

        def settle(end: StreamEnd) -> None:
            if end.error is not None:
                permit.failure(end.error)  # the breaker counts it when it is an outage
            elif end.response is not None or end.delivered:
                permit.success()
            else:
                permit.release()  # closed before any text reached the caller: no verdict
            limiter = route.limiter
            if limiter is not None:
                actual = limiter_actual(estimate, end.usage, request.max_tokens, route.refund)
                if actual != estimate:
                    limiter.settle(estimate, actual)
                headers = end.response.headers if end.response is not None else None
                if headers:
                    limiter.update_from_headers(headers)
            cost = budget.commit(end.usage, route.name, labels)
            outcome = ("done" if end.response is not None else
                       f"interrupted ({type(end.error).__name__})" if end.error is not None
                       else "closed early")
            logger.info("stream: %s %s after %d chars, %d prompt + %d completion tokens%s",
                        route.name, outcome, len(end.text), end.usage.prompt_tokens,
                        end.usage.completion_tokens,
                        f", ${cost:.6f}" if isinstance(cost, Decimal) else "")

        return settle

    def begin_route(self) -> None:
        """A provider is tried: attempts and latency are counted per provider, as for
        ``complete()``."""
        self.attempts = 0
        self.started = self.clock.now()

    def final(self, response: LLMResponse, position: int) -> LLMResponse:
        """The answer as the client reports it: that provider's attempts and latency (from its
        first attempt to the end of the stream), and whether it was a fallback."""
        return replace(response, attempts=max(1, self.attempts), fallback_used=position > 0,
                       latency_s=max(0.0, self.clock.now() - self.started))


class _Opened:
    """What the shells keep once a route has opened: the stream and where it came from."""

    def __init__(self, stream: Any, position: int) -> None:
        self.stream = stream
        self.position = position


class ResilientStream:
    """``with client.stream(...) as s: for delta in s: ...`` then ``s.response``.

    Entering opens the stream (retries and fallback happen there); iterating yields the text
    deltas; leaving closes it (settling limiter, breaker and budget with what arrived).
    """

    def __init__(self, routes: Sequence[Route], request: Request, labels: dict[str, Any],
                 clock: Clock) -> None:
        self._flow = _Flow(routes, request, labels, clock)
        self._opened: _Opened | None = None
        self._response: LLMResponse | None = None
        self._iterator: Iterator[str] | None = None

    def __repr__(self) -> str:
        where = self._opened.stream.provider if self._opened is not None else "not open"
        return f"<ResilientStream ({where})>"

    # -- opening --------------------------------------------------------------------------------
    def _attempt(self, route: Route) -> tuple[Stream, _Permit]:
        flow = self._flow
        if route.limiter is not None:
            route.limiter.acquire(flow.request.estimated_tokens)
        permit = None
        try:
            permit = flow.before_send(route)
            opener = getattr(route.provider, "send_stream", None)
            stream = (opener(flow.request) if opener is not None  # a provider that cannot
                      else Stream.of_response(send(route.provider, flow.request)))  # stream
        except BaseException as error:
            flow.send_failed(route, permit, error)
            raise
        return stream, permit

    def open(self) -> Self:
        """Open the stream on the first provider that can (retries and fallback happen here);
        entering the ``with`` block does it."""
        if self._opened is not None:
            return self
        walk = self._flow.walk()
        try:
            route = next(walk)
            while True:
                try:
                    opened = (route.retry.call(self._attempt, route) if route.retry is not None
                              else self._attempt(route))
                except BaseException as error:
                    route = walk.throw(error)
                else:
                    route = walk.send(opened)
        except StopIteration as done:
            self._opened = done.value
        return self

    # -- reading --------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[str]:
        """The text deltas (one iterator per stream: a loop broken off and resumed goes on
        where it stopped)."""
        if self._iterator is None:
            self._iterator = self._deltas()
        return self._iterator

    def _deltas(self) -> Iterator[str]:
        opened = self._opened or self.open()._opened
        assert opened is not None
        yield from opened.stream
        self._response = self._flow.final(opened.stream.response, opened.position)

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
        return self._opened.stream.provider if self._opened is not None else None

    @property
    def text(self) -> str:
        """The text that has arrived so far."""
        return self._opened.stream.text if self._opened is not None else ""

    def close(self) -> None:
        """Stop reading; what arrived is settled and paid for."""
        if self._opened is not None:
            self._opened.stream.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncResilientStream:
    """``async with client.astream(...) as s: async for delta in s: ...``."""

    def __init__(self, routes: Sequence[Route], request: Request, labels: dict[str, Any],
                 clock: Clock) -> None:
        self._flow = _Flow(routes, request, labels, clock)
        self._opened: _Opened | None = None
        self._response: LLMResponse | None = None
        self._iterator: AsyncIterator[str] | None = None

    def __repr__(self) -> str:
        where = self._opened.stream.provider if self._opened is not None else "not open"
        return f"<AsyncResilientStream ({where})>"

    async def _attempt(self, route: Route) -> tuple[AsyncStream, _Permit]:
        flow = self._flow
        if route.limiter is not None:
            await route.limiter.acquire_async(flow.request.estimated_tokens)
        permit = None
        try:
            permit = await flow.abefore_send(route)
            opener = getattr(route.provider, "asend_stream", None)
            stream = (await opener(flow.request) if opener is not None
                      else AsyncStream.of_response(await asend(route.provider, flow.request)))
        except BaseException as error:
            flow.send_failed(route, permit, error)
            raise
        return stream, permit

    async def open(self) -> Self:
        """``ResilientStream.open`` for async callers."""
        if self._opened is not None:
            return self
        walk = self._flow.walk()
        try:
            route = next(walk)
            while True:
                try:
                    opened = (await route.retry.call_async(self._attempt, route)
                              if route.retry is not None else await self._attempt(route))
                except BaseException as error:
                    route = walk.throw(error)
                else:
                    route = walk.send(opened)
        except StopIteration as done:
            self._opened = done.value
        return self

    def __aiter__(self) -> AsyncIterator[str]:
        """The text deltas (one iterator per stream)."""
        if self._iterator is None:
            self._iterator = self._deltas()
        return self._iterator

    async def _deltas(self) -> AsyncIterator[str]:
        opened = self._opened or (await self.open())._opened
        assert opened is not None
        async for delta in opened.stream:
            yield delta
        self._response = self._flow.final(opened.stream.response, opened.position)

    response = ResilientStream.response
    provider = ResilientStream.provider
    text = ResilientStream.text

    async def aclose(self) -> None:
        """Stop reading; what arrived is settled and paid for."""
        if self._opened is not None:
            await self._opened.stream.aclose()

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
