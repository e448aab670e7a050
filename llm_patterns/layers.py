"""The client's layers: each one a provider wrapping a provider, as httpx transports wrap.

``ResilientClient`` stacks them in front of each provider, over one ``Request`` built and
checked once::

    ContextLayer -> RetryLayer -> BreakerLayer -> BudgetLayer -> LimiterLayer -> ProviderLayer
    (fits the      (attempts,    (admit() ->     (reserve ->     (acquire ->     (the provider's
     window)        deadline)     Permit)         commit|release) settle, 429s)   send/asend)

Each layer is typed against a protocol (``Breaker``, ``CostGate``, ``Limiter``), never a
concrete class, and reads no other module's private state. Each has the provider methods
(``send``/``asend``, ``complete``/``acomplete``) as thin shells over ONE definition, its
``flow(request, call)``: a generator that yields the protocol's operations as twin steps
(``_twin``: the sync path calls ``limiter.acquire``, the async path awaits
``limiter.acquire_async``) and wraps the flow of the layer inside it with ``yield from``. A
cancellation is thrown into the flow like any error, so every layer cleans up on that path too:
a budget hold is released, a breaker permit given back.

What each layer decides:

- ``ContextLayer``: a request that cannot fit the model's window raises
  ``ContextWindowExceeded`` before anything is spent (the chain moves on to a larger model).
- ``RetryLayer``: the ``RetryPolicy`` loop; each attempt is told the time left before the
  policy's deadline, and the provider's HTTP timeout shrinks to it.
- ``BreakerLayer``: ``breaker.admit()`` (``CircuitOpenError`` when open); the outcome is reported
  on the permit: ``failure(error)`` (the breaker decides whether it counts), ``success()``, or
  ``release()`` when the call never got an answer or a verdict (cancelled).
- ``BudgetLayer``: ``gate.reserve(model, demand)`` holds the call's worst-case cost; an answer
  commits the real cost, any failure releases the hold.
- ``LimiterLayer``: ``limiter.acquire(demand)``; after a wait the breaker's permit is taken anew
  (the breaker may have opened meanwhile), a 429's Retry-After pauses the limiter, an answer
  settles the estimate to the real usage and re-syncs from the rate-limit headers.
- ``ProviderLayer``: the provider's ``send(request, time_left=...)`` (or its ``complete``).

A paid answer is never thrown away over bookkeeping: what runs after the provider answered
(settle, header sync, cost commit, permit success) logs its own failure and returns the answer,
so an error there can never trigger a retry or a fallback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ._twin import Flow, Twin, arun, run
from .context import cached_context_window, check_counted, exact_counter
from .errors import CircuitOpenError, MalformedResponse, RateLimitError, describe
from .protocols import Breaker, CostGate, Demand, Limiter, Permit
from .request import Request
from .response import LLMResponse
from .retry import RetryPolicy

__all__ = [
    "BreakerLayer",
    "BudgetLayer",
    "Call",
    "ContextLayer",
    "Layer",
    "LimiterLayer",
    "ProviderLayer",
    "RetryLayer",
]

logger = logging.getLogger("llm_patterns.client")

EventSink = Callable[..., None]
"""``sink(kind, **data)``: where layers report client events (None: nobody listens)."""


class Call:
    """One call through one provider's layers: what they share.

    ``labels`` (dag_id/task_id/run_id for the cost record), ``demand`` (the request's tokens,
    for the limiter and the budget), ``events`` (a sink, or None), ``attempts`` so far,
    ``time_left`` for the attempt in flight (None: no deadline), ``permit`` (the breaker's
    admission of that attempt), ``cost`` (what the answer cost; None if unpriced).
    """

    __slots__ = ("attempts", "cost", "demand", "events", "labels", "permit", "readmit",
                 "started", "time_left")

    def __init__(self, demand: Demand, labels: Mapping[str, str] | None = None,
                 events: EventSink | None = None) -> None:
        self.demand = demand
        self.labels: Mapping[str, str] = labels or {}
        self.events = events
        self.attempts = 0
        self.time_left: float | None = None
        self.permit: Permit | None = None
        self.readmit: Twin | None = None  # the breaker's admit twin, for the limiter
        self.cost: Any = None
        self.started = 0.0  # clock time the call reached this provider

    @classmethod
    def of(cls, request: Request, **labels: str) -> Call:
        """A call for ``request``: one request, its input estimate and ``max_tokens``."""
        return cls(Demand(request.input_tokens, request.max_tokens), labels)


class Layer:
    """A provider wrapping ``inner`` (a layer or any provider): ``name`` and ``model`` are the
    inner provider's; ``send``/``asend``/``complete``/``acomplete`` run ``flow``."""

    def __init__(self, inner: Any) -> None:
        if not isinstance(inner, Layer):
            inner = ProviderLayer(inner)
        self.inner: Layer = inner
        self.name: str = inner.name
        self.model: str | None = inner.model

    def flow(self, request: Request, call: Call) -> Flow[LLMResponse]:
        """This layer's part of a call, wrapped around the inner layer's flow."""
        raise NotImplementedError

    def send(self, request: Request, *, time_left: float | None = None,
             **labels: str) -> LLMResponse:
        """``request`` through this layer and the ones inside it (``labels``: dag_id,
        task_id, run_id for the cost record)."""
        call = Call.of(request, **labels)
        call.time_left = time_left
        return run(self.flow(request, call))

    async def asend(self, request: Request, *, time_left: float | None = None,
                    **labels: str) -> LLMResponse:
        call = Call.of(request, **labels)
        call.time_left = time_left
        return await arun(self.flow(request, call))

    def complete(self, prompt: str | None = None, *, messages: Any = None,
                 max_tokens: int = 256, **kw: Any) -> LLMResponse:
        return self.send(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, **kw: Any) -> LLMResponse:
        return await self.asend(Request(prompt, messages=messages, max_tokens=max_tokens, **kw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


def _after_answer(what: str, layer: Layer, error: Exception) -> None:
    """Bookkeeping that failed after the provider answered: logged, never raised."""
    logger.error("provider %s answered, but %s failed (the answer is kept): %s",
                 layer.name, what, describe(error))


# ------------------------------------------------------------------------------- the provider

class ProviderLayer(Layer):
    """The innermost layer: the provider itself. ``send(request, time_left=...)`` when it has
    one (the HTTP providers cap the attempt's timeouts to ``time_left``), else its
    ``complete(**request.complete_kwargs())``. Anything but an ``LLMResponse`` back is a
    ``MalformedResponse``."""

    def __init__(self, provider: Any) -> None:
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a provider needs a non-empty str name, got {name!r}")
        self.provider = provider
        self.name = name
        model = getattr(provider, "model", None)
        self.model = model if isinstance(model, str) and model else None
        self._has_send = callable(getattr(provider, "send", None))
        self._has_asend = callable(getattr(provider, "asend", None))
        self._twin: Twin = (self._send, self._asend)

    def _send(self, request: Request, time_left: float | None) -> Any:
        if self._has_send:
            return self.provider.send(request, time_left=time_left)
        return self.provider.complete(**request.complete_kwargs())

    async def _asend(self, request: Request, time_left: float | None) -> Any:
        if self._has_asend:
            return await self.provider.asend(request, time_left=time_left)
        return await self.provider.acomplete(**request.complete_kwargs())

    def flow(self, request: Request, call: Call) -> Flow[LLMResponse]:
        response = yield self._twin, (request, call.time_left)
        if not isinstance(response, LLMResponse):
            raise MalformedResponse(f"returned {type(response).__name__}, expected an "
                                    f"LLMResponse", provider=self.name)
        return response

    def close(self) -> None:
        close = getattr(self.provider, "close", None)
        if callable(close):
            close()

    async def aclose(self) -> None:
        aclose = getattr(self.provider, "aclose", None)
        if callable(aclose):
            await aclose()
        else:
            self.close()

    def __repr__(self) -> str:
        return f"ProviderLayer({self.provider!r})"


# ------------------------------------------------------------------------------- the limiter

class LimiterLayer(Layer):
    """``limiter.acquire(demand)`` before the call; after it, settle and re-sync (module doc).

    ``refund_unused_tokens``: the provider counts actual usage (Anthropic's output limit), so
    the unused part of ``max_tokens`` is given back; otherwise the limiter keeps ``max_tokens``
    charged (OpenAI charges it at arrival) and only settles upward."""

    def __init__(self, inner: Any, limiter: Limiter, *, refund_unused_tokens: bool = False) -> None:
        super().__init__(inner)
        if not isinstance(limiter, Limiter):
            raise TypeError(f"limiter for {self.name!r} must be a Limiter (acquire, "
                            f"acquire_async, settle, penalize, ...), got {limiter!r}")
        self.limiter = limiter
        self.refund_unused_tokens = refund_unused_tokens
        self._acquire: Twin = (limiter.acquire, limiter.acquire_async)

    def flow(self, request: Request, call: Call) -> Flow[LLMResponse]:
        demand = call.demand
        waited = yield self._acquire, (demand,)
        permit = call.permit
        if waited > 0 and permit is not None and not permit.trial and call.readmit is not None:
            # the permit was given before the wait: the breaker may have opened meanwhile
            call.permit = None
            permit.release()
            call.permit = yield call.readmit, ()
        try:
            response: LLMResponse = yield from self.inner.flow(request, call)
        except RateLimitError as error:
            retry_after = error.retry_after
            if error.retryable and retry_after is not None and retry_after > 0:
                try:
                    self.limiter.penalize(retry_after)  # bookkeeping: never blocks (protocols)
                except Exception as failure:  # noqa: BLE001 - the 429 is what the caller sees
                    logger.error("could not pause %s's limiter after a 429: %s", self.name,
                                 describe(failure))
            raise
        try:
            self._settle(demand, response)
        except Exception as error:  # noqa: BLE001 - answered: never a retry or a fallback
            _after_answer("settling the rate limiter", self, error)
        return response

    def _settle(self, demand: Demand, response: LLMResponse) -> None:
        """The estimate settled to the usage, the levels re-synced from the headers: the
        limiter's bookkeeping, which never blocks (store-backed limiters hand it to a worker
        when called on an event loop: ``protocols.Limiter``)."""
        usage = response.usage
        if self.refund_unused_tokens:
            used_in, used_out = usage.prompt_tokens, usage.completion_tokens
        else:  # the provider charged max_tokens at arrival: only ever settle upward
            used_in = max(demand.input_tokens, usage.prompt_tokens)
            used_out = demand.output_tokens
        if used_in != demand.input_tokens or used_out != demand.output_tokens:
            self.limiter.settle(demand, Demand(used_in, used_out))
        headers = response.headers
        if headers:
            self.limiter.update_from_headers(headers)


# ------------------------------------------------------------------------------- the budget

class BudgetLayer(Layer):
    """``gate.reserve(model, demand)`` before the call, ``commit`` after an answer, ``release``
    after anything else (a failure, a cancellation): the budget never keeps a dead call's hold.
    ``model``: what the estimate is priced at (the provider's model)."""

    def __init__(self, inner: Any, gate: CostGate, *, model: str | None = None) -> None:
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

    def _commit_sync(self, hold: Any, response: LLMResponse, labels: Mapping[str, str]) -> Any:
        return self.gate.commit(hold, response.model or self.price_model, response.usage,
                                provider=self.name, **labels)

    async def _commit_async(self, hold: Any, response: LLMResponse,
                            labels: Mapping[str, str]) -> Any:
        return await self.gate.acommit(hold, response.model or self.price_model, response.usage,
                                       provider=self.name, **labels)

    def flow(self, request: Request, call: Call) -> Flow[LLMResponse]:
        hold = yield self._reserve, (self.price_model, call.demand)
        try:
            response: LLMResponse = yield from self.inner.flow(request, call)
        except GeneratorExit:  # the flow was abandoned: no step can run any more
            self.gate.release(hold)
            raise
        except BaseException:
            yield self._release, (hold,)
            raise
        try:
            call.cost = yield self._commit, (hold, response, call.labels)
        except Exception as error:  # noqa: BLE001 - answered: never a retry or a fallback
            _after_answer("recording its cost", self, error)
        return response


# ------------------------------------------------------------------------------- the breaker

class BreakerLayer(Layer):
    """``breaker.admit()`` before the call, the outcome reported on the permit after it."""

    def __init__(self, inner: Any, breaker: Breaker) -> None:
        super().__init__(inner)
        admit = getattr(breaker, "admit", None)
        if callable(admit) and callable(getattr(breaker, "admit_async", None)):
            self._admit: Twin = (admit, breaker.admit_async)
        elif all(callable(getattr(breaker, m, None))
                 for m in ("allow_request", "record_success", "record_failure")):
            self._admit = _SpecAdmission(breaker).twin  # the SPEC's manual protocol
        else:
            raise TypeError(f"breaker for {self.name!r} must be a Breaker (admit, admit_async, "
                            f"...), got {breaker!r}")
        self.breaker = breaker

    def flow(self, request: Request, call: Call) -> Flow[LLMResponse]:
        call.permit = yield self._admit, ()
        call.readmit = self._admit
        try:
            response: LLMResponse = yield from self.inner.flow(request, call)
        except Exception as error:
            permit = call.permit
            if permit is not None:  # (None: a re-admission after a limiter wait refused it)
                permit.failure(error)  # the breaker decides whether it counts
            raise
        except BaseException:  # cancelled, interrupted: no verdict on the provider
            permit = call.permit
            if permit is not None:
                permit.release()
            raise
        finally:
            call.readmit = None
        try:
            call.permit.success()  # type: ignore[union-attr]
        except Exception as error:  # noqa: BLE001 - answered: never a retry or a fallback
            _after_answer("reporting success to its breaker", self, error)
        return response


class _SpecAdmission:
    """A ``Permit`` for a breaker that only has the SPEC's manual protocol (``allow_request``,
    ``record_success``, ``record_failure(error)``): a user's own breaker, or one written before
    ``admit()``. A released permit is reported as a failure the breaker does not count (a
    cancellation is never an outage)."""

    def __init__(self, breaker: Any) -> None:
        self.breaker = breaker
        self.twin: Twin = (self.admit, self.admit_async)

    def admit(self) -> _SpecPermit:
        if not self.breaker.allow_request():
            retry_in = None
            health = getattr(self.breaker, "health", None)
            if callable(health):
                retry_in = health().get("retry_in") or None
            raise CircuitOpenError("circuit open: the call was not made",
                                   provider=getattr(self.breaker, "name", None),
                                   retry_after=retry_in)
        return _SpecPermit(self.breaker)

    async def admit_async(self) -> _SpecPermit:
        return self.admit()


class _SpecPermit:
    __slots__ = ("breaker",)

    trial = False  # unknown: never re-admitted after a limiter wait

    def __init__(self, breaker: Any) -> None:
        self.breaker = breaker

    def success(self) -> None:
        self.breaker.record_success()

    def failure(self, error: BaseException) -> None:
        self.breaker.record_failure(error)

    def release(self) -> None:
        self.breaker.record_failure(asyncio.CancelledError())


# ------------------------------------------------------------------------------- retry, context

class RetryLayer(Layer):
    """Each attempt through the inner layers, retried per ``policy`` (None: one attempt); the
    policy's deadline shrinks each attempt's timeout (``call.time_left``)."""

    def __init__(self, inner: Any, policy: RetryPolicy | None = None) -> None:
        super().__init__(inner)
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {policy!r}")
        self.policy = policy

    def flow(self, request: Request, call: Call) -> Flow[LLMResponse]:
        if self.policy is None:
            return self._attempt(request, call, call.time_left)
        return self.policy.flow(lambda time_left: self._attempt(request, call, time_left))

    def _attempt(self, request: Request, call: Call,
                 time_left: float | None) -> Flow[LLMResponse]:
        call.attempts += 1
        call.time_left = time_left
        if call.events is None:
            return self.inner.flow(request, call)  # no frame of its own when nobody listens
        return self._observed(request, call)

    def _observed(self, request: Request, call: Call) -> Flow[LLMResponse]:
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

    def flow(self, request: Request, call: Call) -> Flow[LLMResponse]:
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
