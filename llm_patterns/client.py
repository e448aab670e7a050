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
from .context import _exact_counter, cached_context_window, check_counted
from .cost import CostTracker
from .errors import CircuitOpenError, RateLimitError
from .events import Observable
from .fallback import FallbackChain
from .rate_limit import RateLimiter
from .response import LLMResponse, Provider, prompt_text, to_messages
from .retry import RetryPolicy
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
        new = object.__new__(LLMResponse)
        d = new.__dict__
        d.update(response.__dict__)
        d["attempts"] = attempts
        d["latency_s"] = latency
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

    def _prepare(self, prompt: str | None, messages: Any, max_tokens: int) -> tuple[list, int]:
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
                    counter = self._counter = _exact_counter(model.strip().lower())
                counted = prompt_estimate if counter is None else counter(text)
                check_counted(model, counted, max_tokens, limits, provider=self.name)
        if self.cost is not None and model and getattr(self.cost, "hard_limit", False):
            self.cost.check(self.cost.estimate(model, prompt_estimate, max_tokens))
        return msgs, estimate

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

    def _is_trial(self) -> bool:
        """Whether the breaker admitted this call as its half-open probe."""
        breaker = self.breaker
        if breaker is None:
            return False
        if isinstance(breaker, CircuitBreaker):  # just admitted us: its state is current
            return breaker._state is CircuitState.HALF_OPEN
        return breaker.state is CircuitState.HALF_OPEN

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

    def _before_attempt(self, attempt: int, estimate: int) -> None:
        if not self._listening():
            return
        self._emit("attempt", self.clock.now(), provider=self.name, attempt=attempt,
                   tokens=estimate)

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

    def _after_success(self, response: LLMResponse, estimate: int, max_tokens: int,
                       labels: dict[str, Any], attempts: int, started: float) -> LLMResponse:
        usage = response.usage
        if self.limiter is not None:
            if self.refund_unused_tokens:
                actual = usage.prompt_tokens + usage.completion_tokens
            else:  # the provider charged prompt + max_tokens at arrival, as OpenAI does
                actual = max(estimate, usage.prompt_tokens + max_tokens)
            if actual != estimate:
                self.limiter.settle(estimate, actual)
            headers = getattr(response, "headers", None)
            if headers:
                self.limiter.update_from_headers(headers)
        cost: Decimal | float | None = None
        if self.cost is not None:
            cost = self.cost.record(response.model or self.model, usage, provider=self.name,
                                    **labels)
        now = self.clock.now()
        response = _evolve(response, attempts, now - started)
        if self._listening():
            self._emit("response", now, provider=self.name, attempts=attempts,
                       latency=response.latency_s, cost=cost, prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens)
        return response

    # -- the provider protocol ----------------------------------------------------------------

    def complete(self, prompt: str | None = None, *, messages: Any = None, max_tokens: int = 256,
                 **kw: Any) -> LLMResponse:
        labels = {k: kw.pop(k) for k in _LABELS if k in kw} if kw else {}
        msgs, estimate = self._prepare(prompt, messages, max_tokens)
        started, attempts = self.clock.now(), 0

        def guarded_call() -> LLMResponse:
            if self.limiter is not None:
                trial = self._is_trial()
                if self.limiter.acquire(estimate) > 0:  # no wait: nothing can have changed
                    self._recheck_breaker(trial)
            return self.provider.complete(messages=msgs, max_tokens=max_tokens, **kw)

        def attempt() -> LLMResponse:
            nonlocal attempts
            attempts += 1
            self._before_attempt(attempts, estimate)
            try:
                if self.breaker is not None:
                    return self.breaker.call(guarded_call)
                return guarded_call()
            except BaseException as err:
                self._on_error(err)
                raise

        response = self.retry.call(attempt) if self.retry is not None else attempt()
        return self._after_success(response, estimate, max_tokens, labels, attempts, started)

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, **kw: Any) -> LLMResponse:
        labels = {k: kw.pop(k) for k in _LABELS if k in kw} if kw else {}
        msgs, estimate = self._prepare(prompt, messages, max_tokens)
        started, attempts = self.clock.now(), 0

        async def guarded_call() -> LLMResponse:
            if self.limiter is not None:
                trial = self._is_trial()
                if await self.limiter.acquire_async(estimate) > 0:
                    self._recheck_breaker(trial)
            return await self.provider.acomplete(messages=msgs, max_tokens=max_tokens, **kw)

        async def attempt() -> LLMResponse:
            nonlocal attempts
            attempts += 1
            self._before_attempt(attempts, estimate)
            try:
                if self.breaker is not None:
                    return await self.breaker.call_async(guarded_call)
                return await guarded_call()
            except BaseException as err:
                self._on_error(err)
                raise

        if self.retry is not None:
            response = await self.retry.call_async(attempt)
        else:
            response = await attempt()
        return self._after_success(response, estimate, max_tokens, labels, attempts, started)


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
        _check_max_tokens(max_tokens)
        labels = _labels(dag_id, task_id, run_id)
        return self.chain.complete(prompt, messages=messages, max_tokens=max_tokens, **labels, **kw)

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, dag_id: str | None = None,
                        task_id: str | None = None, run_id: str | None = None,
                        **kw: Any) -> LLMResponse:
        """``complete`` for asyncio."""
        _check_max_tokens(max_tokens)
        labels = _labels(dag_id, task_id, run_id)
        return await self.chain.acomplete(prompt, messages=messages, max_tokens=max_tokens,
                                          **labels, **kw)

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

