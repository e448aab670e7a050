"""ResilientClient: the five patterns put together in front of a list of providers.

For each provider in order::

    context check -> budget check -> retry( breaker( rate limiter -> call ) ) -> cost record

and on to the next provider when its breaker is open, its retries are exhausted, its limiter
would make the caller wait past ``max_wait``, or its context window is too small. A bad request
or an exhausted budget stops the chain at once: another provider would fail or spend the same way.

The pieces stay usable on their own; this module only wires them. Each provider is wrapped in a
``GuardedProvider`` (itself a provider), and a ``FallbackChain`` walks the wrapped list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

from .circuit_breaker import CircuitBreaker, CircuitState
from .clock import Clock, SystemClock
from .context import cached_context_window, check_counted, exact_counter
from .cost import CostTracker
from .errors import CircuitOpenError, RateLimitError
from .events import Observable
from .fallback import FallbackChain
from .rate_limit import RateLimiter
from .response import LLMResponse, Provider, prompt_text, to_messages
from .retry import RetryPolicy
from .streaming import AsyncResilientStream, ResilientStream, Route, prepare
from .tokens import estimate_tokens

__all__ = ["ResilientClient", "GuardedProvider"]

logger = logging.getLogger("llm_patterns.client")

_LABELS = ("dag_id", "task_id", "run_id")
_UNRESOLVED: Any = object()


def _evolve(response: LLMResponse, attempts: int, latency: float) -> LLMResponse:
    """``replace(response, attempts=..., latency_s=...)`` without re-running the validation of
    fields that do not change (the common case: a plain LLMResponse)."""
    if (type(response) is LLMResponse and type(attempts) is int and attempts >= 1
            and latency >= 0):
        fields = response.__dict__.copy()
        fields["attempts"] = attempts
        fields["latency_s"] = latency
        new = object.__new__(LLMResponse)
        new.__dict__ = fields
        return new
    return replace(response, attempts=attempts, latency_s=latency)


class GuardedProvider(Observable):
    """One provider behind its own retry policy, breaker, limiter and the shared cost tracker."""

    _event_source = "client"

    def __init__(
        self,
        provider: Provider,
        *,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: RateLimiter | None = None,
        cost: CostTracker | None = None,
        refund_unused_tokens: bool = False,
        check_context: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.model = getattr(provider, "model", None)
        self.retry = retry
        self.breaker = breaker
        self.limiter = limiter
        self.cost = cost
        self.refund_unused_tokens = refund_unused_tokens
        self.check_context = check_context
        self.clock = clock or SystemClock()
        self._counter: Any = _UNRESOLVED  # the model's exact token counter, looked up once
        self._forward_to: Observable | None = None  # the ResilientClient re-emitting our events
        if check_context and self.model:  # resolve the window now, not inside the first call
            cached_context_window(self.model)

    def __repr__(self) -> str:
        return f"GuardedProvider({self.provider!r})"

    # -- the steps before and after the call, shared by the sync and async paths --------------

    def _start(self, prompt: str | None, messages: Any, max_tokens: int,
               kw: dict[str, Any]) -> _Call:
        """Check the request (context window, budget) and set up its call; no clock read but
        the start time."""
        msgs = to_messages(prompt, messages)
        # a prompt is one user message: its text is the prompt itself (joined only once)
        text = prompt if messages is None and type(prompt) is str else prompt_text(msgs)
        prompt_estimate = estimate_tokens(text)
        estimate = prompt_estimate + max_tokens
        model = self.model
        if self.check_context and model:
            if type(max_tokens) is not int or max_tokens <= 0:
                _check_max_tokens(max_tokens)
            limits = cached_context_window(model)  # None: no window known, let the provider decide
            if limits is not None:
                counter = self._counter
                if counter is _UNRESOLVED:
                    counter = self._counter = exact_counter(model.strip().lower())
                counted = prompt_estimate if counter is None else counter(text)
                cap = limits.max_output_tokens
                if (counted + max_tokens > limits.context_window
                        or (cap is not None and max_tokens > cap)):  # else it fits: no call
                    check_counted(model, counted, max_tokens, limits, provider=self.name)
        if self.cost is not None and model and getattr(self.cost, "hard_limit", False):
            self.cost.check(self.cost.estimate(model, prompt_estimate, max_tokens))
        return _Call(msgs, max_tokens, kw, estimate, self.clock.now())

    def _listening(self) -> bool:
        """Whether anyone hears this provider's events (its own subscribers or its client's)."""
        if self._subscribers:
            return True
        parent = self._forward_to
        return parent is not None and bool(parent._subscribers)

    def _emit(self, kind: str, time: float, **data: Any) -> None:
        parent = self._forward_to  # the client's stream first, as when it was a subscriber
        if parent is not None and parent._subscribers:
            parent._emit(kind, time, **data)
        if self._subscribers:
            Observable._emit(self, kind, time, **data)

    def _recheck_breaker(self, trial: bool) -> None:
        """After a limiter wait: don't send a call the breaker would now refuse.

        A call admitted while the breaker was closed may have queued in the limiter for many
        seconds; if the breaker opened meanwhile, sending it would hit the dead provider anyway.
        """
        if self.breaker is None or trial:
            return
        if self.breaker.state is not CircuitState.CLOSED:
            raise CircuitOpenError(
                "circuit opened while this call waited in the rate limiter",
                provider=self.name, retry_after=self.breaker.health()["retry_in"] or None,
            )

    def _on_error(self, error: BaseException) -> None:
        if (
            self.limiter is not None
            and isinstance(error, RateLimitError)
            and error.retry_after
            and error.retry_after > 0
        ):
            self.limiter.penalize(error.retry_after)
        if self._listening():
            self._emit("error", self.clock.now(), provider=self.name,
                       error_type=type(error).__name__,
                       status_code=getattr(error, "status_code", None), error=str(error))

    def _after_success(self, response: LLMResponse, call: _Call,
                       labels: dict[str, Any]) -> LLMResponse:
        usage, estimate, attempts = response.usage, call.estimate, call.attempts
        if self.limiter is not None:
            if self.refund_unused_tokens:
                actual = usage.prompt_tokens + usage.completion_tokens
            else:  # the provider charged prompt + max_tokens at arrival, as OpenAI does
                actual = max(estimate, usage.prompt_tokens + call.max_tokens)
            if actual != estimate:
                self.limiter.settle(estimate, actual)
            headers = getattr(response, "headers", None)
            if headers:
                self.limiter.update_from_headers(headers)
        cost: Decimal | float | None = None
        if self.cost is not None:
            model = response.model or self.model
            if labels:
                cost = self.cost.record(model, usage, provider=self.name, **labels)
            else:  # (an empty **labels still costs a dict merge per call)
                cost = self.cost.record(model, usage, provider=self.name)
        now = self.clock.now()
        response = _evolve(response, attempts, now - call.started)
        if self._listening():
            self._emit("response", now, provider=self.name, attempts=attempts,
                       latency=response.latency_s, cost=cost, prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens)
        return response

    # -- one attempt: breaker( rate limiter -> call ), as bound methods taking the call's
    # inputs (no closures built per call) ------------------------------------------------------

    def _attempt(self, call: _Call) -> LLMResponse:
        call.attempts += 1
        if self._listening():
            self._emit("attempt", self.clock.now(), provider=self.name, attempt=call.attempts,
                       tokens=call.estimate)
        try:
            breaker = self.breaker
            if breaker is None:
                return self._send(call, False)
            permit = breaker.admit()  # the Breaker protocol: CircuitOpenError when open
            try:
                response = self._send(call, permit.trial)
            except Exception as error:
                permit.failure(error)  # the breaker decides whether it counts
                raise
            except BaseException:
                permit.release()
                raise
            permit.success()
            return response
        except BaseException as err:
            self._on_error(err)
            raise

    def _send(self, call: _Call, trial: bool) -> LLMResponse:
        # no wait: nothing can have changed
        if self.limiter is not None and self.limiter.acquire(call.estimate) > 0:
            self._recheck_breaker(trial)
        if call.kw:
            return self.provider.complete(messages=call.messages, max_tokens=call.max_tokens,
                                          **call.kw)
        return self.provider.complete(messages=call.messages, max_tokens=call.max_tokens)

    async def _aattempt(self, call: _Call) -> LLMResponse:
        call.attempts += 1
        if self._listening():
            self._emit("attempt", self.clock.now(), provider=self.name, attempt=call.attempts,
                       tokens=call.estimate)
        try:
            breaker = self.breaker
            if breaker is None:
                return await self._asend(call, False)
            permit = await breaker.admit_async()
            try:
                response = await self._asend(call, permit.trial)
            except Exception as error:
                permit.failure(error)
                raise
            except BaseException:  # a cancelled task: the trial slot is given back
                permit.release()
                raise
            permit.success()
            return response
        except BaseException as err:
            self._on_error(err)
            raise

    async def _asend(self, call: _Call, trial: bool) -> LLMResponse:
        if self.limiter is not None and await self.limiter.acquire_async(call.estimate) > 0:
            self._recheck_breaker(trial)
        if call.kw:
            return await self.provider.acomplete(messages=call.messages,
                                                 max_tokens=call.max_tokens, **call.kw)
        return await self.provider.acomplete(messages=call.messages, max_tokens=call.max_tokens)

    # -- the provider protocol ----------------------------------------------------------------

    def complete(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
                 **kw: Any) -> LLMResponse:
        labels = _pop_labels(kw)
        call = self._start(prompt, messages, max_tokens, kw)
        response = self.retry.call(self._attempt, call) if self.retry is not None \
            else self._attempt(call)
        return self._after_success(response, call, labels)

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, **kw: Any) -> LLMResponse:
        labels = _pop_labels(kw)
        call = self._start(prompt, messages, max_tokens, kw)
        if self.retry is not None:
            response = await self.retry.call_async(self._aattempt, call)
        else:
            response = await self._aattempt(call)
        return self._after_success(response, call, labels)


class _Call:
    """One call's inputs and progress, shared by its attempts."""

    __slots__ = ("attempts", "estimate", "kw", "max_tokens", "messages", "started")

    def __init__(self, messages: list, max_tokens: int, kw: dict[str, Any], estimate: int,
                 started: float) -> None:
        self.messages = messages
        self.max_tokens = max_tokens
        self.kw = kw
        self.estimate = estimate  # what the limiter is asked for: prompt estimate + max_tokens
        self.started = started
        self.attempts = 0


def _pop_labels(kw: dict[str, Any]) -> dict[str, Any]:
    """Take the cost labels (dag_id, task_id, run_id) out of a call's extra keywords."""
    return {k: kw.pop(k) for k in _LABELS if k in kw} if kw else {}


class ResilientClient(Observable):
    """Rate-limited, retried, circuit-broken, cost-tracked completions over a fallback chain.

    ``limiters`` and ``breakers`` are keyed by provider name; ``retry`` is one policy applied to
    each provider separately (its retries do not carry over to the next provider).
    ``refund_unused_tokens`` names the providers whose rate limits count actual usage rather
    than ``max_tokens`` (Anthropic's output limit does): only for those is the limiter given back
    the tokens a request did not use.
    """

    _event_source = "client"

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        limiters: Mapping[str, RateLimiter] | None = None,
        retry: RetryPolicy | None = None,
        breakers: Mapping[str, CircuitBreaker] | None = None,
        cost: CostTracker | None = None,
        clock: Clock | None = None,
        refund_unused_tokens: Iterable[str] = (),
        check_context: bool = True,
        name: str = "client",
    ) -> None:
        providers = list(providers)
        if not providers:
            raise ValueError("providers must name at least one provider, got an empty list")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {names!r}")
        limiters, breakers = dict(limiters or {}), dict(breakers or {})
        refund = set(refund_unused_tokens)
        for label, keyed in (("limiters", limiters), ("breakers", breakers),
                             ("refund_unused_tokens", dict.fromkeys(refund))):
            unknown = sorted(set(keyed) - set(names))
            if unknown:
                raise ValueError(f"{label} names unknown providers {unknown!r}; known: {names!r}")
        if cost is not None:  # fail now, not after a paid call, if a model has no price
            for p in providers:
                model = getattr(p, "model", None)
                if model:
                    cost.prices[model]
        self.name = name
        self.clock = clock or SystemClock()
        self.providers = providers
        self.limiters, self.breakers, self.retry, self.cost = limiters, breakers, retry, cost
        self.guarded = [
            GuardedProvider(
                p, retry=retry, breaker=breakers.get(p.name), limiter=limiters.get(p.name),
                cost=cost, refund_unused_tokens=p.name in refund, check_context=check_context,
                clock=self.clock,
            )
            for p in providers
        ]
        for g in self.guarded:  # one stream of client events, whichever provider emitted them
            g._forward_to = self  # (built only when someone listens: see GuardedProvider._emit)
        self.chain = FallbackChain(self.guarded, name=name, clock=self.clock)

    def _forward(self, event: Any) -> None:
        self._emit(event.kind, event.time, **event.data)

    def complete(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
                 dag_id: str | None = None, task_id: str | None = None,
                 run_id: str | None = None, **kw: Any) -> LLMResponse:
        """One completion from the first provider that can give it."""
        if type(max_tokens) is not int or max_tokens <= 0:
            _check_max_tokens(max_tokens)
        if dag_id is not None or task_id is not None or run_id is not None:
            kw.update(_labels(dag_id, task_id, run_id))
        if kw:
            return self.chain.complete(prompt, messages=messages, max_tokens=max_tokens, **kw)
        return self.chain.complete(prompt, messages=messages, max_tokens=max_tokens)

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, dag_id: str | None = None,
                        task_id: str | None = None, run_id: str | None = None,
                        **kw: Any) -> LLMResponse:
        """``complete`` for asyncio."""
        if type(max_tokens) is not int or max_tokens <= 0:
            _check_max_tokens(max_tokens)
        if dag_id is not None or task_id is not None or run_id is not None:
            kw.update(_labels(dag_id, task_id, run_id))
        return await self.chain.acomplete(prompt, messages=messages, max_tokens=max_tokens, **kw)

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
        return [Route(g.provider, g.retry, g.breaker, g.limiter, g.cost, g.refund_unused_tokens)
                for g in self.guarded]

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

    def __repr__(self) -> str:
        return f"ResilientClient(providers={[p.name for p in self.providers]!r})"


def _labels(dag_id: str | None, task_id: str | None, run_id: str | None) -> dict[str, str]:
    labels = {}
    if dag_id is not None:
        labels["dag_id"] = dag_id
    if task_id is not None:
        labels["task_id"] = task_id
    if run_id is not None:
        labels["run_id"] = run_id
    return labels


def _check_max_tokens(max_tokens: int) -> None:
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")

