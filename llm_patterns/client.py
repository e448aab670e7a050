"""ResilientClient: the five patterns put together in front of a list of providers.

For each provider in order, one stack of layers (``llm_patterns.layers``)::

    context check -> retry( breaker( budget( rate limiter( provider ) ) ) )

and on to the next provider (``FallbackChain``) when its breaker is open, its retries are
exhausted, its limiter would make the caller wait past ``max_wait``, or its context window is
too small. What stops the chain is the error taxonomy's answer (``errors.stops_chain``): a bad
request, an exhausted budget, and the caller's own mistakes (``ValueError``/``TypeError``: a bad
``max_tokens``, no prompt, a request no rate-limit bucket can ever hold), raised as themselves.

The request is built and checked once (``Request``), before anything is spent. The pieces are
typed against the protocols (``Limiter``, ``Breaker``, ``CostGate``), so the in-process and the
store-backed (``Shared*``) ones plug in alike. ``complete`` and ``acomplete`` are thin shells
over one flow (``_twin``); the async path never blocks the event loop on a store or a ledger.

With a hard budget (``CostTracker(budget=B, hard_limit=True)`` or ``SharedCostTracker``) each
attempt reserves its worst-case cost before it is sent and settles it after: the recorded total
never passes B for any number of concurrent threads or coroutines, as long as each call's usage
stays within its estimate (prompt estimate + ``max_tokens``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

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
    ProviderLayer,
    RetryLayer,
)
from .protocols import Breaker, CostGate, Demand, Limiter
from .request import Request
from .response import LLMResponse, Provider
from .retry import RetryPolicy
from .streaming import AsyncResilientStream, ResilientStream, Route, prepare

__all__ = ["ResilientClient"]


class ResilientClient(Observable):
    """Rate-limited, retried, circuit-broken, cost-tracked completions over a fallback chain.

    ``limiters`` and ``breakers`` are keyed by provider name; ``retry`` is one policy applied to
    each provider separately (its retries do not carry over to the next provider; its
    ``deadline`` bounds each provider's attempts, and shrinks each attempt's timeout to the time
    left). ``cost`` is a ``CostGate`` (``CostTracker``, ``SharedCostTracker``).
    ``refund_unused_tokens`` names the providers whose rate limits count actual usage rather
    than ``max_tokens`` (Anthropic's output limit does): only for those is the limiter given back
    the tokens a request did not use. ``check_context``: refuse, per provider, a request that
    cannot fit its model's window.

    Events (``subscribe``, source "client"): ``attempt`` (provider, attempt, tokens), ``error``
    (provider, error_type, status_code, error), ``response`` (provider, attempts, latency, cost,
    prompt_tokens, completion_tokens). ``close()``/``aclose()`` (or ``with``/``async with``)
    close the providers.
    """

    _event_source = "client"

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        limiters: Mapping[str, Limiter] | None = None,
        retry: RetryPolicy | None = None,
        breakers: Mapping[str, Breaker] | None = None,
        cost: CostGate | None = None,
        clock: Clock | None = None,
        refund_unused_tokens: Iterable[str] = (),
        check_context: bool = True,
        name: str = "client",
    ) -> None:
        if isinstance(providers, (str, bytes)) or not isinstance(providers, Sequence):
            raise TypeError(f"providers must be a list of providers, got {providers!r}")
        providers = list(providers)
        if not providers:
            raise ValueError("providers must name at least one provider, got an empty list")
        names = [getattr(p, "name", None) for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names!r}")
        limiters = dict(_mapping("limiters", limiters))
        breakers = dict(_mapping("breakers", breakers))
        if isinstance(refund_unused_tokens, str):
            raise TypeError("refund_unused_tokens must be a list of provider names, got "
                            f"{refund_unused_tokens!r}")
        refund = set(refund_unused_tokens)
        for label, keyed in (("limiters", limiters), ("breakers", breakers),
                             ("refund_unused_tokens", dict.fromkeys(refund))):
            unknown = sorted(set(keyed) - set(names), key=str)
            if unknown:
                raise ValueError(f"{label} names unknown providers {unknown!r}; known: {names!r}")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {retry!r}")
        if cost is not None and not isinstance(cost, CostGate):
            raise TypeError(f"cost must be a CostGate (a CostTracker, SharedCostTracker ...), "
                            f"got {cost!r}")
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
        self.chain = FallbackChain([self._stack(p) for p in providers], name=name,
                                   clock=self.clock)
        self._closed = False

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

    @property
    def stacks(self) -> list[Layer]:
        """Each provider's outermost layer, in order."""
        return list(self.chain.providers)

    def set_limiter(self, provider: str, limiter: Limiter | None) -> None:
        """Put ``limiter`` in front of ``provider`` from the next call on (None: none)."""
        names = [p.name for p in self.providers]
        if provider not in names:
            raise ValueError(f"unknown provider {provider!r}; known: {names!r}")
        if limiter is None:
            self.limiters.pop(provider, None)
        else:
            self.limiters[provider] = limiter
        i = names.index(provider)
        self.chain.providers[i] = self._stack(self.providers[i])

    # -- calls ------------------------------------------------------------------------------

    def complete(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
                 dag_id: str | None = None, task_id: str | None = None,
                 run_id: str | None = None, **kw: Any) -> LLMResponse:
        """One completion from the first provider that can give it. ``dag_id``, ``task_id``,
        ``run_id`` label its cost record; other keywords are request fields."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        return run(self._flow(request, dag_id, task_id, run_id))

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, dag_id: str | None = None,
                        task_id: str | None = None, run_id: str | None = None,
                        **kw: Any) -> LLMResponse:
        """``complete`` for asyncio."""
        request = Request(prompt, messages=messages, max_tokens=max_tokens, **kw)
        return await arun(self._flow(request, dag_id, task_id, run_id))

    def send(self, request: Request, *, dag_id: str | None = None, task_id: str | None = None,
             run_id: str | None = None) -> LLMResponse:
        """``complete`` for a ``Request`` already built."""
        return run(self._flow(_request(request), dag_id, task_id, run_id))

    async def asend(self, request: Request, *, dag_id: str | None = None,
                    task_id: str | None = None, run_id: str | None = None) -> LLMResponse:
        return await arun(self._flow(_request(request), dag_id, task_id, run_id))

    def _flow(self, request: Request, dag_id: str | None, task_id: str | None,
              run_id: str | None) -> Flow[LLMResponse]:
        """One call: the fallback chain over the providers' layers."""
        labels: dict[str, str] = {}
        if dag_id is not None or task_id is not None or run_id is not None:
            labels = {k: v.text(k, x, empty=True) for k, x in
                      (("dag_id", dag_id), ("task_id", task_id), ("run_id", run_id))
                      if x is not None}
        events = self._event if self._subscribers else None  # decided once per call
        demand = Demand(request.input_tokens, request.max_tokens)
        clock = self.clock
        calls: list[Call] = []

        def attempt(position: int, stack: Layer) -> Flow[LLMResponse]:
            call = Call(demand, labels, events)
            call.started = clock.now()
            calls.append(call)
            return stack.flow(request, call)

        def finish(position: int, response: LLMResponse) -> LLMResponse:
            """The answer with this provider's attempts and latency (and fallback_used)."""
            call = calls[-1]
            response = replace(response, attempts=max(call.attempts, 1),
                               latency_s=clock.now() - call.started,
                               fallback_used=position > 0)
            if events is not None:
                usage = response.usage
                events("response", provider=self.chain.providers[position].name,
                       attempts=response.attempts, latency=response.latency_s, cost=call.cost,
                       prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens)
            return response

        return self.chain.flow(request, attempt, finish)

    def stream(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
               dag_id: str | None = None, task_id: str | None = None,
               run_id: str | None = None, **kw: Any) -> ResilientStream:
        """A streamed answer: ``with client.stream(...) as s: for delta in s: ...``, then
        ``s.response``. Retries and fallback until the first delta reaches the caller;
        ``StreamInterrupted`` after it (see ``llm_patterns.streaming``)."""
        routes = self._routes()
        request = prepare(routes, prompt, messages, max_tokens, kw)
        return ResilientStream(routes, request, _labels(dag_id, task_id, run_id), self.clock)

    def astream(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
                dag_id: str | None = None, task_id: str | None = None,
                run_id: str | None = None, **kw: Any) -> AsyncResilientStream:
        """``stream`` for asyncio: ``async with client.astream(...) as s: async for ...``."""
        routes = self._routes()
        request = prepare(routes, prompt, messages, max_tokens, kw)
        return AsyncResilientStream(routes, request, _labels(dag_id, task_id, run_id),
                                    self.clock)

    def _routes(self) -> list[Route]:
        return [Route(p, self.retry, self.breakers.get(p.name), self.limiters.get(p.name),
                      self.cost, p.name in self.refund_unused_tokens) for p in self.providers]

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
        """Close every provider (their HTTP clients). Idempotent."""
        self._closed = True
        for p in self.providers:
            close = getattr(p, "close", None)
            if callable(close):
                close()

    async def aclose(self) -> None:
        """``close`` for asyncio: each provider's ``aclose`` (or ``close``)."""
        self._closed = True
        for p in self.providers:
            aclose = getattr(p, "aclose", None)
            if callable(aclose):
                await aclose()
            else:
                close = getattr(p, "close", None)
                if callable(close):
                    close()

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


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict keyed by provider name, got {value!r}")
    return value


def _labels(dag_id: str | None, task_id: str | None, run_id: str | None) -> dict[str, str]:
    return {k: x for k, x in (("dag_id", dag_id), ("task_id", task_id), ("run_id", run_id))
            if x is not None}


def _request(request: Any) -> Request:
    if not isinstance(request, Request):
        raise TypeError(f"request must be a Request, got {request!r}")
    return request
