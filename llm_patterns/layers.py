"""The client's layers: each one a provider wrapping a provider, as httpx transports wrap.

``ResilientClient`` stacks them in front of each provider, over one ``Request`` built and
checked once::

    ContextLayer -> RetryLayer -> BreakerLayer -> BudgetLayer -> LimiterLayer -> ProviderLayer
    (fits the      (attempts,    (admit() ->     (reserve ->     (acquire ->     (the provider's
     window)        deadline)     Permit)         commit|release) settle, 429s)   send/asend)

Each layer is typed against a protocol (``Breaker``, ``CostGate``, ``Limiter``), never a
concrete class, and reads no other module's private state. Each has one definition, its
``flow(request, call)``: a generator (``_twin``) that yields the protocol's operations as twin
steps (the sync path calls ``limiter.acquire``, the async path awaits ``limiter.acquire_async``)
and wraps the flow of the layer inside it with ``yield from``. ``send``/``asend`` (a whole
answer) and ``send_stream``/``asend_stream`` (a stream) are thin shells over it. A
cancellation is thrown into the flow like any error, so every layer cleans up on that path
too: a budget hold is released, a breaker permit given back.

What each layer decides:

- ``ContextLayer``: a request that cannot fit the model's window raises
  ``ContextWindowExceeded`` before anything is spent (the chain moves on to a larger model).
- ``RetryLayer``: the ``RetryPolicy`` loop; each attempt is told the time left before the
  policy's deadline, and the provider's HTTP timeout shrinks to it.
- ``BreakerLayer``: ``breaker.admit()`` (``CircuitOpenError`` when open); the outcome is
  reported on the permit: ``failure(error)`` when the provider was asked (the breaker decides
  whether it counts), ``success()``, or ``release()`` when the call never reached the provider
  (refused by the budget or the limiter, cancelled): no verdict on the provider.
- ``BudgetLayer``: ``gate.reserve(model, demand)`` holds the call's worst-case cost; an answer
  commits the real cost, any failure releases the hold.
- ``LimiterLayer``: ``limiter.acquire(demand)``; after a wait the breaker's admission is checked
  anew (the breaker may have opened meanwhile), a 429's Retry-After pauses the limiter, an answer
  settles the estimate to what the provider counted (``limiter_usage``) and re-syncs from the
  rate-limit headers. A demand no bucket can ever hold is the caller's ``ValueError``, raised as
  itself before anything waits (never retried, never a breaker failure).
- ``ProviderLayer``: the provider's ``send(request, time_left=...)`` (or its ``complete``), or
  for a stream its ``send_stream`` (a stream started up to its first text delta).

**Streams.** Up to the first delta a stream is an attempt like any other: its failures are
retried, counted by the breaker, released from the budget. Once it is open, each layer leaves
its "after the answer" part (settle, commit, the breaker's verdict) in ``call.endings``, and
``attach`` runs them once, in order, when the stream ends however it ends (read to the end,
interrupted, closed early), in the thread or task that reads it.

A paid answer is never thrown away over bookkeeping: what runs after the provider answered
(settle, header sync, cost commit, permit success) logs its own failure and returns the answer,
so an error there can never trigger a retry or a fallback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import replace
from typing import Any, Protocol, cast, runtime_checkable

from ._twin import Flow, Twin, arun, run
from .context import cached_context_window, check_counted, exact_counter
from .errors import CircuitOpenError, LLMError, MalformedResponse, RateLimitError, describe
from .protocols import Breaker, CostGate, Demand, Limiter, Permit
from .providers import AsyncStream, Stream, StreamEnd
from .request import Request
from .response import LLMResponse, Usage, asend, send
from .retry import RetryPolicy

__all__ = [
    "BreakerLayer",
    "BudgetLayer",
    "Call",
    "ContextLayer",
    "Ending",
    "Layer",
    "LimiterLayer",
    "ManualBreaker",
    "ProviderLayer",
    "RetryLayer",
    "attach",
    "limiter_usage",
    "stamp",
]

logger = logging.getLogger("llm_patterns.client")

EventSink = Callable[..., None]
"""``sink(kind, **data)``: where layers report client events (None: nobody listens)."""

Ending = Callable[[StreamEnd], Flow[None]]
"""What a layer does once a stream it opened has ended (``StreamEnd``): a flow."""


class Call:
    """One call through one provider's layers: what they share.

    ``demand`` (the request's tokens, for the limiter and the budget), ``labels``
    (dag_id/task_id/run_id for the cost record), ``events`` (a sink, or None), ``stream``
    (whether the provider is asked for a stream), ``attempts`` so far, ``time_left`` for the
    attempt in flight (None: no deadline), ``permit`` (the breaker's admission of that attempt),
    ``sent`` (whether that attempt reached the provider), ``cost`` (what the answer cost; None
    if unpriced), ``endings`` (for a stream: what the layers do when it ends).
    """

    __slots__ = ("attempts", "cost", "demand", "endings", "events", "labels", "permit",
                 "readmit", "sent", "started", "stream", "sync", "time_left")

    def __init__(self, demand: Demand, labels: Mapping[str, str] | None = None,
                 events: EventSink | None = None, *, sync: bool, stream: bool = False,
                 time_left: float | None = None) -> None:
        self.demand = demand
        self.labels: Mapping[str, str] = labels or {}
        self.events = events
        self.sync = sync
        self.stream = stream
        self.attempts = 0
        self.time_left = time_left
        self.permit: Permit | None = None
        self.readmit: Twin | None = None  # the breaker's re-admission, for the limiter
        self.sent = False
        self.cost: Any = None
        self.started = 0.0  # clock time the call reached this provider (set by the client)
        self.endings: list[Ending] = []

    @classmethod
    def of(cls, request: Request, labels: Mapping[str, str] | None = None, *, sync: bool,
           stream: bool = False, time_left: float | None = None) -> Call:
        """A call for ``request``: one request, its input estimate and ``max_tokens``."""
        return cls(Demand(request.input_tokens, request.max_tokens), labels, sync=sync,
                   stream=stream, time_left=time_left)


def attach(stream: Stream | AsyncStream, call: Call, provider: str) -> None:
    """Run ``call.endings`` once when ``stream`` ends: in the reading thread for a ``Stream``
    (``_twin.run``), awaited in the reading task for an ``AsyncStream`` (``_twin.arun``)."""
    endings = call.endings
    if not endings:
        return
    if isinstance(stream, AsyncStream):
        stream.on_end(lambda end: arun(_ended(endings, end, provider)))
    else:
        stream.on_end(lambda end: run(_ended(endings, end, provider)))


def _ended(endings: list[Ending], end: StreamEnd, provider: str) -> Flow[None]:
    """Each layer's ending, innermost first; one that fails is logged and the next one runs."""
    for ending in endings:
        try:
            yield from ending(end)
        except Exception as error:
            logger.error("provider %s streamed, but settling after its end failed: %s",
                         provider, describe(error))


class Layer:
    """A provider wrapping ``inner`` (a layer or any provider): ``name`` and ``model`` are the
    inner provider's; ``send``/``asend``/``send_stream``/``asend_stream`` and
    ``complete``/``acomplete`` run ``flow``."""

    def __init__(self, inner: Any) -> None:
        if not isinstance(inner, Layer):
            inner = ProviderLayer(inner)
        self.inner: Layer = inner
        self.name: str = inner.name
        self.model: str | None = inner.model

    def flow(self, request: Request, call: Call) -> Flow[Any]:
        """This layer's part of a call, wrapped around the inner layer's flow."""
        raise NotImplementedError

    def send(self, request: Request, *, time_left: float | None = None) -> LLMResponse:
        """``request`` through this layer and the ones inside it."""
        call = Call.of(request, sync=True, time_left=time_left)
        response: LLMResponse = run(self.flow(request, call))
        return response

    async def asend(self, request: Request, *, time_left: float | None = None) -> LLMResponse:
        call = Call.of(request, sync=False, time_left=time_left)
        response: LLMResponse = await arun(self.flow(request, call))
        return response

    def send_stream(self, request: Request, *, time_left: float | None = None) -> Stream:
        """A stream through this layer, started up to its first delta; the layers settle when
        it ends."""
        call = Call.of(request, sync=True, stream=True, time_left=time_left)
        stream: Stream = run(self.flow(request, call))
        attach(stream, call, self.name)
        return stream

    async def asend_stream(self, request: Request, *,
                           time_left: float | None = None) -> AsyncStream:
        call = Call.of(request, sync=False, stream=True, time_left=time_left)
        stream: AsyncStream = await arun(self.flow(request, call))
        attach(stream, call, self.name)
        return stream

    def complete(self, prompt: str | None = None, *, messages: Any = None,
                 max_tokens: int = 256, **kw: Any) -> LLMResponse:
        return self.send(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    def close(self) -> None:
        """Close the provider inside (its HTTP clients)."""
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, **kw: Any) -> LLMResponse:
        return await self.asend(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def stamp(response: LLMResponse, call: Call, position: int, now: float) -> LLMResponse:
    """The answer as a client reports it: that provider's ``attempts``, the ``latency_s`` from
    its first attempt to ``now``, ``fallback_used`` when it was not the first provider."""
    attempts = call.attempts if call.attempts > 1 else 1
    latency = now - call.started
    if latency < 0.0:
        latency = 0.0
    if response.__class__ is LLMResponse:
        # every answer is re-stamped: ``dataclasses.replace`` re-validates all its fields, 2.1 us
        # a call in benchmarks/overhead.py's full stack; the three set here are checked here
        # (a copied dict, assigned: half the cost of ``update(..., **fields)`` and ``max``)
        fields = response.__dict__.copy()
        fields["attempts"] = attempts
        fields["latency_s"] = latency
        fields["fallback_used"] = position > 0
        new = object.__new__(LLMResponse)
        new.__dict__ = fields
        return new
    return replace(response, attempts=attempts, latency_s=latency, fallback_used=position > 0)


def _do(call: Call, twin: Twin, *args: Any) -> Flow[Any]:
    """One protocol operation of ``call``: on the sync path called where it stands (what
    ``_twin.run`` would do with the step, without its round trip through every layer's frame),
    on the async path yielded as a step (``await async_fn(*args)``).

    The operations every call makes (admit, reserve, acquire, send, settle, commit) are written
    inline as ``op(...) if call.sync else (yield twin, args)``: this helper's own generator
    costs about 0.2 us a use (0.7 us of the full stack in benchmarks/overhead.py)."""
    if call.sync:
        return twin[0](*args)
    return (yield twin, args)


def _after_answer(what: str, layer: Layer, error: Exception) -> None:
    """Bookkeeping that failed after the provider answered: logged, never raised."""
    logger.error("provider %s answered, but %s failed (the answer is kept): %s",
                 layer.name, what, describe(error))


# ------------------------------------------------------------------------------- the provider

class ProviderLayer(Layer):
    """The innermost layer: the provider itself (``response.send``: its ``send(request,
    time_left=...)``, which caps the attempt's timeouts to ``time_left``, else its
    ``complete``). For a stream, its ``send_stream`` (one delta from ``send`` for a provider
    that cannot stream). Anything but an ``LLMResponse`` back is a ``MalformedResponse``."""

    def __init__(self, provider: Any) -> None:
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a provider needs a non-empty str name, got {name!r}")
        self.provider = provider
        self.name = name
        model = getattr(provider, "model", None)
        self.model = model if isinstance(model, str) and model else None
        self._send: Twin = (self._send_sync, self._send_async)
        self._open: Twin = (self._open_sync, self._open_async)

    def _send_sync(self, request: Request, time_left: float | None) -> Any:
        return send(self.provider, request, time_left=time_left)

    async def _send_async(self, request: Request, time_left: float | None) -> Any:
        return await asend(self.provider, request, time_left=time_left)

    def _open_sync(self, request: Request, time_left: float | None) -> Stream:
        opener = getattr(self.provider, "send_stream", None)
        if opener is not None:
            return opener(request, time_left=time_left)  # type: ignore[no-any-return]
        return Stream.of_response(self._checked(self._send_sync(request, time_left)))

    async def _open_async(self, request: Request, time_left: float | None) -> AsyncStream:
        opener = getattr(self.provider, "asend_stream", None)
        if opener is not None:
            return await opener(request, time_left=time_left)  # type: ignore[no-any-return]
        return AsyncStream.of_response(self._checked(await self._send_async(request, time_left)))

    def _checked(self, response: Any) -> LLMResponse:
        if response.__class__ is not LLMResponse and not isinstance(response, LLMResponse):
            raise MalformedResponse(f"returned {type(response).__name__}, expected an "
                                    f"LLMResponse", provider=self.name)
        checked: LLMResponse = response
        return checked

    def flow(self, request: Request, call: Call) -> Flow[Any]:
        call.sent = True
        if call.stream:
            return (yield from _do(call, self._open, request, call.time_left))
        response = (send(self.provider, request, time_left=call.time_left) if call.sync
                    else (yield self._send, (request, call.time_left)))  # (_do, inline)
        return self._checked(response)

    def close(self) -> None:
        """The provider's ``close()``, if it has one."""
        close = getattr(self.provider, "close", None)
        if callable(close):
            close()

    async def aclose(self) -> None:
        """The provider's ``aclose()``, else its ``close()``."""
        aclose = getattr(self.provider, "aclose", None)
        if callable(aclose):
            await aclose()
        else:
            self.close()

    def __repr__(self) -> str:
        return f"ProviderLayer({self.provider!r})"


# ------------------------------------------------------------------------------- the limiter

def limiter_usage(demand: Demand, usage: Usage, counts_actual: bool) -> Demand:
    """What a provider's rate limit counted for a call charged ``demand`` (its input estimate
    and ``max_tokens``), given the ``usage`` it reported.

    ``counts_actual`` (Anthropic's ITPM/OTPM): input as counted, less the cache reads Anthropic
    does not count; output as generated. Otherwise (OpenAI): ``max_tokens`` stays charged, as
    OpenAI counts it at arrival, and input only ever settles upward (OpenAI charged its own
    estimate at arrival and gives nothing back).
    """
    if counts_actual:
        counted, output = usage.prompt_tokens - usage.cached_tokens, usage.completion_tokens
        if counted == demand.input_tokens and output == demand.output_tokens:
            return demand
        return Demand(counted, output)
    prompt = usage.prompt_tokens
    if prompt <= demand.input_tokens:
        return demand
    return Demand(prompt, demand.output_tokens)


class LimiterLayer(Layer):
    """``limiter.acquire(demand)`` before the call; after it, settle and re-sync (module doc).

    ``refund_unused_tokens``: the provider counts actual usage (Anthropic's input and output
    limits), so the limiter is settled down to it (``limiter_usage``); otherwise ``max_tokens``
    stays charged and input only settles upward."""

    def __init__(self, inner: Any, limiter: Limiter, *, refund_unused_tokens: bool = False) -> None:
        super().__init__(inner)
        if not isinstance(limiter, Limiter):
            raise TypeError(f"limiter for {self.name!r} must be a Limiter (acquire, "
                            f"acquire_async, settle, penalize, ...), got {limiter!r}")
        self.limiter = limiter
        self.refund_unused_tokens = refund_unused_tokens
        self._acquire: Twin = (limiter.acquire, limiter.acquire_async)
        self._settle: Twin = (limiter.settle, limiter.asettle)
        self._sync: Twin = (limiter.update_from_headers, limiter.aupdate_from_headers)
        self._penalize: Twin = (limiter.penalize, limiter.apenalize)

    def flow(self, request: Request, call: Call) -> Flow[Any]:
        demand = call.demand
        waited = (self.limiter.acquire(demand) if call.sync  # (see _do: the hot path inline)
                  else (yield self._acquire, (demand,)))
        if waited > 0 and call.readmit is not None:
            # the breaker admitted this call before the wait: it may have opened meanwhile
            permit, call.permit = call.permit, None
            call.permit = yield from _do(call, call.readmit, permit)
        try:
            result = yield from self.inner.flow(request, call)
        except RateLimitError as error:
            retry_after = error.retry_after
            if error.retryable and retry_after is not None and retry_after > 0:
                try:  # (bounded by the limiter's max_retry_after: never years)
                    yield from _do(call, self._penalize, retry_after)
                except Exception as failure:
                    logger.error("could not pause %s's limiter after a 429: %s", self.name,
                                 describe(failure))
            raise
        if call.stream:
            call.endings.append(lambda end: self._settled(call, end.usage, end.response))
            return result
        try:
            yield from self._settled(call, result.usage, result)
        except Exception as error:
            _after_answer("settling the rate limiter", self, error)
        return result

    def _settled(self, call: Call, usage: Usage, response: LLMResponse | None) -> Flow[None]:
        """The estimate settled to what the provider counted, the levels re-synced from the
        answer's rate-limit headers (in the thread or task that acquired: protocols.Limiter)."""
        demand = call.demand
        actual = limiter_usage(demand, usage, self.refund_unused_tokens)
        if actual is not demand:
            if call.sync:
                self.limiter.settle(demand, actual)
            else:
                yield self._settle, (demand, actual)
        headers = response.headers if response is not None else None
        if headers:
            yield from _do(call, self._sync, headers)


# ------------------------------------------------------------------------------- the budget

class BudgetLayer(Layer):
    """``gate.reserve(model, demand)`` before the call, ``commit`` after an answer (for a stream:
    once it ends, with the usage that arrived), ``release`` after anything else (a failure, a
    cancellation): the budget never keeps a dead call's hold. ``model``: what the estimate is
    priced at (the provider's model); the answer is priced at the model that answered."""

    def __init__(self, inner: Any, gate: CostGate[Any], *, model: str | None = None) -> None:
        super().__init__(inner)
        if not isinstance(gate, CostGate):
            raise TypeError(f"cost must be a CostGate (reserve, commit, release and their "
                            f"async twins), got {gate!r}")
        model = model or self.model
        if not model:
            raise ValueError(f"provider {self.name!r} has no model: a cost tracker cannot "
                             "price its calls")
        self.gate = gate
        self.price_model = model
        self._reserve: Twin = (gate.reserve, gate.areserve)
        self._release: Twin = (gate.release, gate.arelease)
        self._commit: Twin = (self._commit_sync, self._commit_async)

    def _commit_sync(self, hold: Any, model: str | None, usage: Usage,
                     labels: Mapping[str, str]) -> Any:
        return self.gate.commit(hold, model or self.price_model, usage, provider=self.name,
                                **labels)

    async def _commit_async(self, hold: Any, model: str | None, usage: Usage,
                            labels: Mapping[str, str]) -> Any:
        return await self.gate.acommit(hold, model or self.price_model, usage,
                                       provider=self.name, **labels)

    def flow(self, request: Request, call: Call) -> Flow[Any]:
        hold = (self.gate.reserve(self.price_model, call.demand) if call.sync  # (_do, inline)
                else (yield self._reserve, (self.price_model, call.demand)))
        try:
            result = yield from self.inner.flow(request, call)
        except GeneratorExit:  # the flow was abandoned: no step can run any more
            self.gate.release(hold)
            raise
        except BaseException:
            try:
                yield from _do(call, self._release, hold)
            except Exception as error:
                logger.error("could not release a budget hold of provider %s: %s", self.name,
                             describe(error))
            raise
        if call.stream:
            call.endings.append(lambda end: self._committed(
                hold, end.response.model if end.response is not None else None, end.usage,
                call))
            return result
        try:
            yield from self._committed(hold, result.model, result.usage, call)
        except Exception as error:
            _after_answer("recording its cost", self, error)
        return result

    def _committed(self, hold: Any, model: str | None, usage: Usage, call: Call) -> Flow[None]:
        if call.sync:  # (_do, inline)
            call.cost = self._commit_sync(hold, model, usage, call.labels)
        else:
            call.cost = yield self._commit, (hold, model, usage, call.labels)


# ------------------------------------------------------------------------------- the breaker

@runtime_checkable
class ManualBreaker(Protocol):
    """The SPEC's manual breaker protocol (Task 5), which ``BreakerLayer`` adapts when a breaker
    has no ``admit()``: a user's own breaker, or one written before ``Breaker``."""

    def allow_request(self) -> bool: ...

    def record_success(self) -> None: ...

    def record_failure(self, error: BaseException | None = None) -> None: ...

    def health(self) -> dict[str, Any]: ...


class BreakerLayer(Layer):
    """``breaker.admit()`` before the call, the outcome reported on the permit after it (for a
    stream: once it ends). A breaker with only the SPEC's manual protocol (``allow_request``,
    ``record_success``, ``record_failure``) is adapted (``_ManualAdmission``)."""

    def __init__(self, inner: Any, breaker: Breaker | ManualBreaker) -> None:
        super().__init__(inner)
        admit = getattr(breaker, "admit", None)
        if callable(admit) and callable(getattr(breaker, "admit_async", None)):
            self._admit: Twin = (admit, cast(Breaker, breaker).admit_async)
            self._readmit: Twin = (self._readmit_sync, self._readmit_async)
        elif all(callable(getattr(breaker, m, None))
                 for m in ("allow_request", "record_success", "record_failure")):
            manual = _ManualAdmission(breaker, self.name)
            self._admit = (manual.admit, manual.admit_async)
            self._readmit = (manual.readmit, manual.readmit_async)
        else:
            raise TypeError(f"breaker for {self.name!r} must be a Breaker (admit, admit_async, "
                            f"...) or have allow_request/record_success/record_failure, got "
                            f"{breaker!r}")
        self.breaker = breaker

    def _readmit_sync(self, permit: Permit | None) -> Permit | None:
        if permit is None or permit.trial:
            return permit  # a probe keeps its slot through the wait
        permit.release()
        return self._admit[0]()  # type: ignore[no-any-return]

    async def _readmit_async(self, permit: Permit | None) -> Permit | None:
        if permit is None or permit.trial:
            return permit
        permit.release()
        return await self._admit[1]()  # type: ignore[no-any-return]

    def flow(self, request: Request, call: Call) -> Flow[Any]:
        call.permit = self._admit[0]() if call.sync else (yield self._admit, ())  # (_do, inline)
        call.readmit = self._readmit
        call.sent = False
        try:
            result = yield from self.inner.flow(request, call)
        except Exception as error:
            permit = call.permit
            if permit is not None:  # (None: a re-admission after a limiter wait refused it)
                if call.sent:
                    permit.failure(error)  # the breaker decides whether it counts
                else:
                    permit.release()  # refused before the provider was asked: no verdict
            raise
        except BaseException:  # cancelled, interrupted: no verdict on the provider
            permit = call.permit
            if permit is not None:
                permit.release()
            raise
        finally:
            call.readmit = None
        permit = call.permit
        assert permit is not None
        if call.stream:
            call.endings.append(lambda end: _verdict(permit, end))
            return result
        try:
            permit.success()
        except Exception as error:
            _after_answer("reporting success to its breaker", self, error)
        return result


def _verdict(permit: Permit, end: StreamEnd) -> Flow[None]:
    """A stream's outcome for the breaker: the error that broke it (counted when it is an
    outage), a success once anything arrived, else no verdict (closed before any text)."""
    if end.error is not None:
        permit.failure(end.error)
    elif end.response is not None or end.delivered:
        permit.success()
    else:
        permit.release()
    yield from ()  # a flow with no steps


class _NotSent(LLMError):
    """Reported to a manual-protocol breaker for a call that never reached the provider: an
    outcome no breaker counts (not an outage), which gives a trial slot back."""


class _ManualAdmission:
    """A ``Permit`` source for a breaker that only has the SPEC's manual protocol
    (``allow_request``, ``record_success``, ``record_failure(error)``, ``state``): a user's
    own breaker, or one written before ``admit()``. A released permit is reported as a failure
    no breaker counts (``_NotSent``)."""

    def __init__(self, breaker: Any, provider: str) -> None:
        self.breaker = breaker
        self.provider = provider

    def _refused(self, why: str) -> CircuitOpenError:
        retry_in = None
        health = getattr(self.breaker, "health", None)
        if callable(health):
            retry_in = health().get("retry_in") or None
        name = getattr(self.breaker, "name", None) or self.provider
        return CircuitOpenError(f"circuit {name!r} {why}", provider=self.provider,
                                retry_after=retry_in)

    def admit(self) -> _ManualPermit:
        if not self.breaker.allow_request():
            raise self._refused("is open: the call was not made")
        return _ManualPermit(self.breaker)

    async def admit_async(self) -> _ManualPermit:
        return self.admit()

    def readmit(self, permit: Permit | None) -> Permit | None:
        """After a limiter wait: a closed-state admission owes the breaker nothing, so the
        state is simply read again (no trial slot is taken or counted)."""
        if permit is None:
            return None
        state = getattr(self.breaker, "state", "closed")
        if state != "closed" and state != "half_open":
            raise self._refused("opened while this call waited in the rate limiter")
        return permit

    async def readmit_async(self, permit: Permit | None) -> Permit | None:
        return self.readmit(permit)


class _ManualPermit:
    __slots__ = ("breaker",)

    trial = False  # unknown to the manual protocol

    def __init__(self, breaker: Any) -> None:
        self.breaker = breaker

    def success(self) -> None:
        self.breaker.record_success()

    def failure(self, error: BaseException) -> None:
        self.breaker.record_failure(error)

    def release(self) -> None:
        self.breaker.record_failure(_NotSent("the call did not reach the provider"))


# ------------------------------------------------------------------------------- retry, context

class RetryLayer(Layer):
    """Each attempt through the inner layers, retried per ``policy`` (None: one attempt); the
    policy's deadline shrinks each attempt's timeout (``call.time_left``)."""

    def __init__(self, inner: Any, policy: RetryPolicy | None = None) -> None:
        super().__init__(inner)
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {policy!r}")
        self.policy = policy

    def flow(self, request: Request, call: Call) -> Flow[Any]:
        if self.policy is None:
            return self._attempt(request, call, call.time_left)
        outer = call.time_left
        if outer is None:
            return self.policy.flow(lambda time_left: self._attempt(request, call, time_left),
                                    sync=call.sync)
        return self.policy.flow(lambda time_left: self._attempt(
            request, call, outer if time_left is None else min(outer, time_left)),
            sync=call.sync)

    def _attempt(self, request: Request, call: Call,
                 time_left: float | None) -> Flow[Any]:
        call.attempts += 1
        call.time_left = time_left
        if call.events is None:
            return self.inner.flow(request, call)  # no frame of its own when nobody listens
        return self._observed(request, call)

    def _observed(self, request: Request, call: Call) -> Generator[Any, Any, Any]:
        """An attempt with its "attempt" and "error" events."""
        events = call.events
        assert events is not None
        events("attempt", provider=self.name, attempt=call.attempts,
               tokens=request.estimated_tokens)
        try:
            return (yield from self.inner.flow(request, call))
        except Exception as error:
            events("error", provider=self.name, error_type=type(error).__name__,
                   status_code=getattr(error, "status_code", None), error=str(error))
            raise


class ContextLayer(Layer):
    """Refuse, before anything is spent, a request that cannot fit ``model``'s context window
    (or its output cap): ``ContextWindowExceeded``, so the chain moves on to a larger model.
    A model with no known window is left to the provider."""

    def __init__(self, inner: Any, model: str | None = None) -> None:
        super().__init__(inner)
        model = model or self.model
        if not model:
            raise ValueError(f"provider {self.name!r} has no model: no window to check")
        self.window_model = model
        self.limits = cached_context_window(model)  # resolved now, not inside the first call
        self._counter = exact_counter(model.strip().lower()) if self.limits else None

    def flow(self, request: Request, call: Call) -> Flow[Any]:
        limits = self.limits
        if limits is not None:
            counted = request.input_tokens if self._counter is None \
                else self._counter(request.text)
            cap = limits.max_output_tokens
            if (counted + request.max_tokens > limits.context_window
                    or (cap is not None and request.max_tokens > cap)):
                check_counted(self.window_model, counted, request.max_tokens, limits,
                              provider=self.name)
        return self.inner.flow(request, call)  # no frame of its own: the check is all it adds
