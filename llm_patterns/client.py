"""ResilientClient: the five patterns put together in front of a list of providers.

For each provider in order, one stack of layers (``llm_patterns.layers``)::

    context check -> retry( breaker( budget( rate limiter( provider ) ) ) )

and on to the next provider (``FallbackChain``) when its breaker is open, its retries are
exhausted, its limiter would make the caller wait past ``max_wait``, or its context window is
too small. What stops the chain is the error taxonomy's answer (``errors.stops_chain``): a bad
request, an exhausted budget, and the caller's own mistakes (``ValueError``/``TypeError``: a bad
``max_tokens``, no prompt, a request no rate-limit bucket can ever hold), raised as themselves.

The request is built and checked once (``Request``), and against every provider of the chain
and its limiter before anything is spent: a request the backup could not take is the caller's
``ValueError`` now, not a surprise in the middle of an outage. The pieces are typed against the
protocols (``Limiter``, ``Breaker``, ``CostGate``), so the in-process and the store-backed
(``Shared*``) ones plug in alike. ``complete``/``acomplete`` and ``stream``/``astream`` are
thin shells over one flow (``_twin``); the async paths never block the event loop on a store or
a ledger.

With a hard budget (``CostTracker(budget=B, hard_limit=True)`` or ``SharedCostTracker``) each
attempt reserves its worst-case cost before it is sent and settles it after: the recorded total
never passes B for any number of concurrent threads or coroutines, as long as each call's usage
stays within its estimate (prompt estimate + ``max_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from . import _validate as v
from ._twin import Flow, arun, run
from .clock import Clock, SystemClock
from .events import Observable
from .fallback import FallbackChain
from .layers import (
    BreakerLayer,
    BudgetLayer,
    Call,
    ContextLayer,
    Layer,
    LimiterLayer,
    ManualBreaker,
    ProviderLayer,
    RetryLayer,
    attach,
    stamp,
)
from .protocols import Breaker, CostGate, Demand, Limiter
from .providers import StreamEnd
from .request import Request
from .response import LLMResponse, Provider, check_all
from .retry import RetryPolicy
from .streaming import AsyncResilientStream, Opened, ResilientStream

__all__ = ["ResilientClient"]


class ResilientClient(Observable):
    """Rate-limited, retried, circuit-broken, cost-tracked completions over a fallback chain.

    ``limiters`` and ``breakers`` are keyed by provider name; ``retry`` is one policy applied to
    each provider separately (its retries do not carry over to the next provider; its
    ``deadline`` bounds each provider's attempts, and shrinks each attempt's timeout to the time
    left). ``cost`` is a ``CostGate`` (``CostTracker``, ``SharedCostTracker``).
    ``refund_unused_tokens`` names the providers whose rate limits count actual usage rather
    than ``max_tokens`` (Anthropic's input and output limits do): only for those is the limiter
    given back the tokens a request did not use. ``check_context``: refuse, per provider, a
    request that cannot fit its model's window.

    Events (``subscribe``, source "client"): ``attempt`` (provider, attempt, tokens), ``error``
    (provider, error_type, status_code, error), ``response`` (provider, attempts, latency, cost,
    prompt_tokens, completion_tokens; for a stream once it ends). ``close()``/``aclose()`` (or
    ``with``/``async with``) close the providers.
    """

    _event_source = "client"

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        limiters: Mapping[str, Limiter] | None = None,
        retry: RetryPolicy | None = None,
        breakers: Mapping[str, Breaker | ManualBreaker] | None = None,
        cost: CostGate[Any] | None = None,
        clock: Clock | None = None,
        refund_unused_tokens: Iterable[str] = (),
        check_context: bool = True,
        name: str = "client",
    ) -> None:
        if not isinstance(providers, Sequence) or isinstance(cast(Any, providers), (str, bytes)):
            raise TypeError(f"providers must be a list of providers, got {providers!r}")
        providers = list(providers)
        if not providers:
            raise ValueError("providers must name at least one provider, got an empty list")
        names = [getattr(p, "name", None) for p in providers]
        for i, pname in enumerate(names):
            if not isinstance(pname, str) or not pname:
                raise ValueError(f"providers[{i}] needs a non-empty str name, got {pname!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names!r}")
        limiters = dict(_mapping("limiters", limiters))
        breakers = dict(_mapping("breakers", breakers))
        if isinstance(refund_unused_tokens, (str, bytes)) or \
                not isinstance(refund_unused_tokens, Iterable):
            raise TypeError("refund_unused_tokens must be a list of provider names, got "
                            f"{refund_unused_tokens!r}")
        refund = set(refund_unused_tokens)
        for label, keyed in (("limiters", limiters), ("breakers", breakers),
                             ("refund_unused_tokens", dict.fromkeys(refund))):
            unknown = sorted(set(keyed) - set(names), key=str)
            if unknown:
                raise ValueError(f"{label} names unknown providers {unknown!r}; known: {names!r}")
        for pname, limiter in limiters.items():
            if not isinstance(limiter, Limiter):
                raise TypeError(f"limiters[{pname!r}] must be a Limiter (RateLimiter, "
                                f"SharedRateLimiter ...), got {limiter!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {retry!r}")
        if cost is not None and not isinstance(cost, CostGate):
            raise TypeError(f"cost must be a CostGate (a CostTracker, SharedCostTracker ...), "
                            f"got {cost!r}")
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise TypeError(f"clock must be a Clock (now, sleep, asleep), got {clock!r}")
        self.name = v.text("name", name)
        self.check_context = v.boolean("check_context", check_context)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.providers = providers
        self.limiters, self.breakers, self.retry, self.cost = limiters, breakers, retry, cost
        self.refund_unused_tokens = frozenset(refund)
        if cost is not None:  # fail now, not after a paid call, if a model has no price
            prices = getattr(cost, "prices", None)
            for p in providers:
                model = getattr(p, "model", None)
                if model and prices is not None:
                    prices[model]
        # the chain asks each provider's outermost layer (a layer is a provider)
        self.chain = FallbackChain(cast(list[Provider], [self._stack(p) for p in providers]),
                                   name=name, clock=self.clock)
        self._checked_limiters = self._limiter_checks()

    def _stack(self, provider: Provider) -> Layer:
        """The layers in front of one provider (module docstring)."""
        name = provider.name
        layer: Layer = ProviderLayer(provider)
        limiter = self.limiters.get(name)
        if limiter is not None:
            layer = LimiterLayer(layer, limiter,
                                 refund_unused_tokens=name in self.refund_unused_tokens)
        if self.cost is not None:
            layer = BudgetLayer(layer, self.cost)
        breaker = self.breakers.get(name)
        if breaker is not None:
            layer = BreakerLayer(layer, breaker)
        layer = RetryLayer(layer, self.retry)
        if self.check_context and layer.model:
            layer = ContextLayer(layer)
        return layer

    def _limiter_checks(self) -> tuple[Any, ...]:
        """The fit checks of the backups' limiters (``Limiter.check``): the first provider's
        own ``acquire`` makes the same check before anything waits or is sent."""
        return tuple(lim.check for p in self.providers[1:]
                     if (lim := self.limiters.get(p.name)) is not None)

    @property
    def stacks(self) -> list[Layer]:
        """Each provider's outermost layer, in order."""
        return cast(list[Layer], list(self.chain.providers))

    def set_limiter(self, provider: str, limiter: Limiter | None) -> None:
        """Put ``limiter`` in front of ``provider`` from the next call on (None: none)."""
        names = [p.name for p in self.providers]
        if provider not in names:
            raise ValueError(f"unknown provider {provider!r}; known: {names!r}")
        if limiter is None:
            self.limiters.pop(provider, None)
        elif not isinstance(limiter, Limiter):
            raise TypeError(f"limiter must be a Limiter or None, got {limiter!r}")
        else:
            self.limiters[provider] = limiter
        i = names.index(provider)
        self.chain.providers[i] = cast(Provider, self._stack(self.providers[i]))
        self._checked_limiters = self._limiter_checks()

    # -- calls ------------------------------------------------------------------------------

    def complete(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
                 dag_id: str | None = None, task_id: str | None = None,
                 run_id: str | None = None, **kw: Any) -> LLMResponse:
        """One completion from the first provider that can give it. ``dag_id``, ``task_id``,
        ``run_id`` label its cost record; other keywords are request fields."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        response: LLMResponse = run(self._flow(request, _labels(dag_id, task_id, run_id),
                                               sync=True))
        return response

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, dag_id: str | None = None,
                        task_id: str | None = None, run_id: str | None = None,
                        **kw: Any) -> LLMResponse:
        """``complete`` for asyncio."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        response: LLMResponse = await arun(self._flow(request,
                                                      _labels(dag_id, task_id, run_id),
                                                      sync=False))
        return response

    def send(self, request: Request, *, dag_id: str | None = None, task_id: str | None = None,
             run_id: str | None = None) -> LLMResponse:
        """``complete`` for a ``Request`` already built."""
        response: LLMResponse = run(self._flow(_request(request),
                                               _labels(dag_id, task_id, run_id), sync=True))
        return response

    async def asend(self, request: Request, *, dag_id: str | None = None,
                    task_id: str | None = None, run_id: str | None = None) -> LLMResponse:
        """``send`` for asyncio."""
        response: LLMResponse = await arun(self._flow(_request(request),
                                                      _labels(dag_id, task_id, run_id),
                                                      sync=False))
        return response

    def stream(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
               dag_id: str | None = None, task_id: str | None = None,
               run_id: str | None = None, **kw: Any) -> ResilientStream:
        """A streamed answer: ``with client.stream(...) as s: for delta in s: ...``, then
        ``s.response``. Retries and fallback until the first delta reaches the caller;
        ``StreamInterrupted`` after it (see ``llm_patterns.streaming``). The request is checked
        against the whole chain here, before the stream is opened."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        labels = _labels(dag_id, task_id, run_id)
        demand = self._check(request)
        return ResilientStream(lambda: self._flow(request, labels, demand, sync=True,
                                                  stream=True))

    def astream(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
                dag_id: str | None = None, task_id: str | None = None,
                run_id: str | None = None, **kw: Any) -> AsyncResilientStream:
        """``stream`` for asyncio: ``async with client.astream(...) as s: async for ...``."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        labels = _labels(dag_id, task_id, run_id)
        demand = self._check(request)
        return AsyncResilientStream(lambda: self._flow(request, labels, demand, sync=False,
                                                       stream=True))

    def _check(self, request: Request) -> Demand:
        """The chain-wide check, before anything is spent: every provider can take the request
        (``check_all``) and every limiter could ever admit its demand (``Limiter.check``), else
        the caller's ``ValueError``/``TypeError``. Returns the demand."""
        check_all(self.providers, request)
        demand = Demand(request.input_tokens, request.max_tokens)
        for check in self._checked_limiters:
            check(demand)
        return demand

    def _flow(self, request: Request, labels: Mapping[str, str],
              demand: Demand | None = None, *, sync: bool, stream: bool = False) -> Flow[Any]:
        """One call: the fallback chain over the providers' layers (module docstring), for the
        sync shell (``_twin.run``) or the async one (``arun``)."""
        if demand is None:
            demand = self._check(request)
        walk = _Run(self, request, demand, labels, sync, stream)
        return self.chain.flow(request, walk.attempt, walk.finish)

    def _event(self, kind: str, **data: Any) -> None:
        self._emit(kind, self.clock.now(), **data)

    # -- looking ----------------------------------------------------------------------------

    def health(self) -> dict[str, dict[str, Any]]:
        """Per provider: breaker health and limiter status, for dashboards and probes."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.providers:
            entry: dict[str, Any] = {"model": getattr(p, "model", None)}
            if p.name in self.breakers:
                entry["breaker"] = self.breakers[p.name].health()
            if p.name in self.limiters:
                entry["limiter"] = self.limiters[p.name].status()
            out[p.name] = entry
        return out

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every provider (the HTTP clients they made), through its layers."""
        for layer in self.stacks:
            layer.close()

    async def aclose(self) -> None:
        """``close`` for asyncio: each provider's ``aclose`` (or ``close``)."""
        for layer in self.stacks:
            await layer.aclose()

    def __enter__(self) -> ResilientClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ResilientClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ResilientClient(providers={[p.name for p in self.providers]!r})"


class _Run:
    """One call's walk over the chain: ``attempt`` (a provider's layers, with a fresh
    ``Call``) and ``finish`` (the answer as the client reports it: that provider's attempts and
    latency, ``fallback_used``; for a stream, an ``Opened`` whose endings are attached)."""

    __slots__ = ("call", "client", "demand", "events", "labels", "request", "stream", "sync")

    def __init__(self, client: ResilientClient, request: Request, demand: Demand,
                 labels: Mapping[str, str], sync: bool, stream: bool) -> None:
        self.client = client
        self.request = request
        self.demand = demand
        self.labels = labels
        self.sync = sync
        self.stream = stream
        self.events = client._event if client.observed else None  # decided once per call
        self.call: Call | None = None

    def attempt(self, position: int, stack: Layer) -> Flow[Any]:
        call = self.call = Call(self.demand, self.labels, self.events, sync=self.sync,
                                stream=self.stream)
        call.started = self.client.clock.now()
        return stack.flow(self.request, call)

    def finish(self, position: int, result: Any) -> Any:
        call = self.call
        assert call is not None
        name = self.client.providers[position].name
        if self.stream:
            opened = Opened(result, name, position, call, self.client.clock)
            if self.events is not None:
                call.endings.append(lambda end: self._streamed(opened, end))
            attach(result, call, name)
            return opened
        response = stamp(result, call, position, self.client.clock.now())
        if self.events is not None:
            self._responded(name, response, call)
        return response

    def _streamed(self, opened: Opened, end: StreamEnd) -> Flow[None]:
        if end.response is not None:
            self._responded(opened.provider, opened.final(end.response), opened.call)
        yield from ()  # a flow with no steps

    def _responded(self, provider: str, response: LLMResponse, call: Call) -> None:
        assert self.events is not None
        usage = response.usage
        self.events("response", provider=provider, attempts=response.attempts,
                    latency=response.latency_s, cost=call.cost,
                    prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


def _labels(dag_id: str | None, task_id: str | None, run_id: str | None) -> dict[str, str]:
    """The cost record's labels that were given, each checked to be a str."""
    if dag_id is None and task_id is None and run_id is None:
        return {}
    return {k: v.text(k, x, empty=True) for k, x in
            (("dag_id", dag_id), ("task_id", task_id), ("run_id", run_id)) if x is not None}


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict keyed by provider name, got {value!r}")
    return value


def _request(request: Any) -> Request:
    if not isinstance(request, Request):
        raise TypeError(f"request must be a Request, got {request!r}")
    return request
