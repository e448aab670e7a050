"""The seams between the patterns: what ``ResilientClient`` needs from a rate limiter, a circuit
breaker and a budget. The in-process classes (``RateLimiter``, ``CircuitBreaker``,
``CostTracker``) and the store-backed ones (``SharedRateLimiter``, ``SharedCircuitBreaker``,
``SharedCostTracker``) all satisfy them, so the client is typed against these protocols and never
against a concrete class or its private state.

The three protocols are deliberately small:

- ``Limiter``: wait until a ``Demand`` (one request, its input and output tokens) can be paid in
  full, pay it all at once, settle it later to what the provider really counted.
- ``Breaker``: ``admit()`` hands out a ``Permit`` (or raises ``CircuitOpenError``); the caller
  reports the call's outcome on that permit, exactly once.
- ``CostGate``: ``reserve()`` holds a call's estimated cost against the budget before it is sent
  (or raises ``BudgetExceeded``), then ``commit()`` records the real cost or ``release()`` gives
  the hold back: the recorded total never passes a hard budget, whatever the concurrency.

Each has async twins for implementations that do I/O (SQLite, Redis): they must not block the
event loop. In-process implementations may simply run the sync method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from ._validate import integer, real

if TYPE_CHECKING:
    from .circuit_breaker import CircuitState
    from .response import Usage

__all__ = ["MAX_COUNT", "Breaker", "CostGate", "Demand", "Hold", "Limiter", "Permit"]

MAX_COUNT = 1e15  # the most tokens or requests one demand may count


@dataclass(frozen=True, slots=True, init=False)
class Demand:
    """What one call asks of a rate limiter: one request, its (estimated) input tokens, and the
    output tokens it may produce (``max_tokens`` at arrival; the actual count when settling)."""

    input_tokens: float = 0
    output_tokens: float = 0
    requests: int = 1

    def __init__(self, input_tokens: float = 0, output_tokens: float = 0,
                 requests: int = 1) -> None:
        """Checked once, here: a limiter can trust any ``Demand`` it is given (counts above
        ``MAX_COUNT`` are a bug, not a workload).

        Written by hand, with the slots' own setters: the generated frozen ``__init__`` and
        its ``__post_init__`` cost 0.6 us, a client makes two Demands per call (0.4 us of
        benchmarks/overhead.py's full stack). Token counts, the common case, are checked
        inline."""
        i: Any = input_tokens
        o: Any = output_tokens
        r: Any = requests
        if not (i.__class__ is int and o.__class__ is int and r.__class__ is int
                and 0 <= i <= MAX_COUNT and 0 <= o <= MAX_COUNT and 0 <= r <= MAX_COUNT):
            real("input_tokens", i, minimum=0.0, maximum=MAX_COUNT)
            real("output_tokens", o, minimum=0.0, maximum=MAX_COUNT)
            integer("requests", r, minimum=0, maximum=int(MAX_COUNT))
        _SET_INPUT(self, i)
        _SET_OUTPUT(self, o)
        _SET_REQUESTS(self, r)

    @property
    def tokens(self) -> float:
        """Input plus output: what a single TPM bucket is charged."""
        return self.input_tokens + self.output_tokens


_SET_INPUT: Callable[[Demand, Any], None] = vars(Demand)["input_tokens"].__set__
_SET_OUTPUT: Callable[[Demand, Any], None] = vars(Demand)["output_tokens"].__set__
_SET_REQUESTS: Callable[[Demand, Any], None] = vars(Demand)["requests"].__set__


@runtime_checkable
class Limiter(Protocol):
    """Client-side rate limiting in front of one provider (requests, tokens, input and output
    tokens per minute).

    The call's flow: ``acquire(demand)`` before sending; then, in the SAME thread or task, either
    ``settle(demand, actual)`` and ``update_from_headers(response.headers)`` after an answer, or
    ``penalize(retry_after)`` after a 429. The limiter remembers the thread's / task's last
    grant: it tells ``settle`` which learned ratio the estimate was charged with and
    ``update_from_headers`` how stale the header is (pass ``sent_at`` when the answer is
    processed elsewhere). The ``a``-prefixed twins never block an event loop (the store-backed
    limiters do I/O); in-process limiters simply run the sync method."""

    def acquire(self, demand: Demand | float = 0) -> float:
        """Wait until the demand can be paid, pay it all at once; seconds waited. A number is a
        token total with no input/output split (counted as input). Raises ``RateLimitTimeout``
        past ``max_wait`` (taking nothing) and ``ValueError`` (naming both numbers) for a
        demand no bucket could ever admit: a caller's mistake, to propagate as itself."""
        ...

    async def acquire_async(self, demand: Demand | float = 0) -> float: ...

    def check(self, demand: Demand | float) -> None:
        """Raise what ``acquire`` would raise for a demand that can never be admitted, without
        waiting or taking anything: a client checks a request against every limiter of its
        chain before anything is spent."""
        ...

    def settle(self, estimated: Demand | float, actual: Demand | float) -> None:
        """Charge or give back the difference once the real usage is known (``estimated`` is
        what ``acquire`` was given); the limiter learns its estimate error from it."""
        ...

    async def asettle(self, estimated: Demand | float, actual: Demand | float) -> None: ...

    def penalize(self, seconds: float) -> None:
        """Pause every caller (after a 429 with Retry-After), at most the limiter's
        ``max_retry_after``: an absurd value is logged once and clamped, never slept."""
        ...

    async def apenalize(self, seconds: float) -> None: ...

    def update_from_headers(self, headers: Mapping[str, str], *,
                            sent_at: float | None = None) -> None:
        """Re-sync with the provider's rate-limit headers (only ever lowering); ``TypeError``
        if ``headers`` is not a mapping."""
        ...

    async def aupdate_from_headers(self, headers: Mapping[str, str], *,
                                   sent_at: float | None = None) -> None: ...

    def status(self) -> dict[str, Any]: ...


@runtime_checkable
class Permit(Protocol):
    """One admission by a breaker. The first of ``success``/``failure``/``release`` settles it;
    later calls do nothing (a cleanup path may release a permit already settled). None of them
    raises (a store that cannot record an outcome logs it: bookkeeping never fails a call that
    happened) and none blocks an event loop (a store-backed breaker called from a running loop
    hands the write to its worker thread, ordered before its next admission)."""

    @property
    def trial(self) -> bool:
        """Whether this call was admitted as a half-open probe."""
        ...

    def success(self) -> None: ...

    def failure(self, error: BaseException) -> None:
        """The call failed; the breaker decides whether ``error`` counts (outages do). One that
        does not count (a 429, a bad request) gives a trial's slot back."""
        ...

    def release(self) -> None:
        """The call got no answer to judge (never sent, cancelled, interrupted): nothing is
        counted and a trial's slot is given back."""
        ...


@runtime_checkable
class Breaker(Protocol):
    """A circuit breaker in front of one provider (``CircuitBreaker``, ``SharedCircuitBreaker``:
    the same machine, the same events and errors)."""

    name: str

    @property
    def state(self) -> CircuitState: ...

    def admit(self) -> Permit:
        """A permit to call, or ``CircuitOpenError`` (with ``retry_after``) when open or when
        every half-open trial slot is taken."""
        ...

    async def admit_async(self) -> Permit:
        """``admit`` without blocking the event loop; a cancelled caller's admission, if the
        store granted it meanwhile, is given back."""
        ...

    def health(self) -> dict[str, Any]: ...

    def on_state_change(self, callback: Callable[[Any, Any, Any], None]) -> Callable[[], None]: ...


@runtime_checkable
class Hold(Protocol):
    """A budget reservation: the estimated USD held for one call in flight."""

    @property
    def amount(self) -> Decimal: ...


H = TypeVar("H", bound=Hold)


@runtime_checkable
class CostGate(Protocol[H]):
    """Cost tracking with a budget that holds under concurrency: reserve -> commit | release.

    Generic in its hold type: a gate commits and releases only the holds it handed out
    (``CostTracker`` is a ``CostGate[BudgetHold]``; a client takes any ``CostGate[Any]``).
    Every hold is settled exactly once; ``release`` of a settled hold does nothing."""

    def reserve(self, model: str, demand: Demand) -> H:
        """Hold the call's estimated cost; ``BudgetExceeded`` if it would pass a hard budget."""
        ...

    async def areserve(self, model: str, demand: Demand) -> H: ...

    def commit(self, hold: H, model: str, usage: Usage, *, dag_id: str | None = None,
               task_id: str | None = None, run_id: str | None = None,
               provider: str | None = None) -> Decimal | None:
        """Record what the call really cost (``usage`` at ``model``, the model that answered)
        under its labels and drop the hold; the recorded cost (None when the model has no
        price: the usage is recorded unpriced and the estimate stays charged)."""
        ...

    async def acommit(self, hold: H, model: str, usage: Usage, *, dag_id: str | None = None,
                      task_id: str | None = None, run_id: str | None = None,
                      provider: str | None = None) -> Decimal | None: ...

    def release(self, hold: H) -> None:
        """The call was not answered: nothing was spent, give the hold back."""
        ...

    async def arelease(self, hold: H) -> None: ...
