"""Retry what is worth retrying, with backoff, Retry-After and a deadline; give up loudly.

``RetryPolicy`` runs a call up to ``max_attempts`` times. After a failed attempt ``k`` it:

1. raises the error at once if ``retry_on(error)`` is False (``QuotaExceededError`` and
   ``BudgetExceeded`` are never retried, whatever ``retry_on`` says: retrying cannot help and
   may cost money);
2. re-raises it when attempts are used up;
3. re-raises it when the error's ``retry_after`` exceeds ``max_retry_after`` (the OpenAI SDK's
   rule: a server asking for five minutes means "not now", not "block this worker");
4. waits ``backoff.delay(k-1)``, or the Retry-After when that is longer. A server-directed wait
   gets a small jitter on top, ``U(0, min(1.0, 0.1 * retry_after))``: the SDKs sleep exactly
   Retry-After, which sends a herd told "retry after 2 s" back in the same millisecond;
5. re-raises instead when that wait would end past ``deadline`` seconds after the first attempt.

Whenever it gives up it re-raises the LAST error itself (``raise``, the same object with its
traceback, never a wrapper) with a note such as "llm_patterns.retry: gave up after 5 attempts
over 14.20 s". Each retry logs one WARNING on ``llm_patterns.retry``.

All per-call state is local to the call, so one policy can be shared by any number of threads
and coroutines. ``current_attempt()`` tells the function being retried which attempt it is on,
and ``testing()`` caps attempts and removes waits for test suites.

``call`` and ``call_async`` are two thin shells over one loop, ``flow`` (a generator, see
``_twin``), which ``ResilientClient`` also runs around its per-provider layers: there each
attempt is told the time left before ``deadline``, and its HTTP timeout shrinks to it.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import math
import numbers
import random
import threading
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from . import _validate as v
from ._decorate import decorate
from ._twin import Flow, Step, arun, run
from .backoff import BackoffPolicy
from .clock import Clock, SystemClock
from .errors import (
    BudgetExceeded,
    QuotaExceededError,
    add_note,
    describe,
    is_retryable,
    retry_after_from_headers,
)
from .events import Observable

__all__ = ["RetryPolicy", "current_attempt", "testing"]

logger = logging.getLogger("llm_patterns.retry")

T = TypeVar("T")

# Errors no policy retries: the account is out of credit / the budget forbids the spend.
_NEVER_RETRY: tuple[type[BaseException], ...] = (QuotaExceededError, BudgetExceeded)

_attempt_var: contextvars.ContextVar[int] = contextvars.ContextVar(
    "llm_patterns_retry_attempt", default=0
)


def current_attempt() -> int:
    """The attempt (1-based) the innermost RetryPolicy is running in this thread or task; 0 outside.

    Read it inside the retried function, e.g. to report ``attempts`` on a response or to send an
    attempt counter header.
    """
    return _attempt_var.get()


# ---------------------------------------------------------------------------- testing mode

_testing_lock = threading.Lock()
_testing_mode: tuple[int, bool] | None = None  # (attempts cap, no_wait)


@contextlib.contextmanager
def testing(attempts: int = 1, no_wait: bool = True) -> Iterator[None]:
    """For users' test suites: every RetryPolicy makes at most ``attempts`` attempts, and with
    ``no_wait`` waits 0 s between them (like stamina's ``set_testing``). Process-wide; nests."""
    global _testing_mode
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
    with _testing_lock:
        saved, _testing_mode = _testing_mode, (attempts, bool(no_wait))
    try:
        yield
    finally:
        with _testing_lock:
            _testing_mode = saved


testing.__test__ = False  # type: ignore[attr-defined]  # not a test when imported into test modules


# ---------------------------------------------------------------------------- helpers

def _retry_after_of(error: BaseException) -> float | None:
    """The server's requested wait: ``error.retry_after``, or an httpx error's response headers."""
    value = getattr(error, "retry_after", None)
    if value is None:
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None) if response is not None else None
        if headers is not None:
            try:
                value = retry_after_from_headers(headers)
            except Exception:
                value = None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def _status_of(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    if status is None:
        status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _as_predicate(retry_on: Any) -> Callable[[BaseException], bool]:
    if isinstance(retry_on, type) and issubclass(retry_on, BaseException):
        retry_on = (retry_on,)
    if (
        isinstance(retry_on, tuple)
        and retry_on
        and all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on)
    ):
        types = retry_on
        return lambda error: isinstance(error, types)
    if callable(retry_on):
        predicate: Callable[[BaseException], bool] = retry_on
        return predicate
    raise TypeError(
        f"retry_on must be a predicate error -> bool or exception type(s), got {retry_on!r}"
    )


# ---------------------------------------------------------------------------- the policy


class RetryPolicy(Observable):
    """Retry a call with exponential backoff and jitter, honouring Retry-After and a deadline.

    Events (``subscribe``): "retry" (attempt, max_attempts, delay, error, error_type,
    status_code, retry_after), "give_up" (attempts, error, error_type, reason, elapsed; reason
    in "exhausted" | "not_retryable" | "retry_after_too_long" | "deadline"), "success"
    (attempts, elapsed).
    """

    _event_source = "retry"

    def __init__(
        self,
        max_attempts: int = 5,
        backoff: BackoffPolicy | None = None,
        retry_on: Callable[[BaseException], bool]
        | type[BaseException]
        | tuple[type[BaseException], ...] = is_retryable,
        respect_retry_after: bool = True,
        max_retry_after: float = 120.0,
        deadline: float | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        name: str = "",
    ) -> None:
        self.max_attempts = v.integer("max_attempts", max_attempts, minimum=1)
        if backoff is None:
            backoff = BackoffPolicy()
        if not callable(getattr(backoff, "delay", None)):
            raise TypeError(f"backoff must be a BackoffPolicy (with .delay), got {backoff!r}")
        if rng is not None and not callable(getattr(rng, "uniform", None)):
            raise TypeError(f"rng must be a random.Random, got {rng!r}")
        self.backoff = backoff
        self.retry_on = _as_predicate(retry_on)
        self.respect_retry_after = v.boolean("respect_retry_after", respect_retry_after)
        # finite: a header-derived wait is always bounded (inf would accept a Retry-After of
        # 1e12 s, then crash in sleep)
        self.max_retry_after = v.real("max_retry_after", max_retry_after, minimum=0.0)
        self.deadline = v.optional(v.real, "deadline", deadline, minimum=0.0, strict_min=True)
        if clock is not None and not (callable(getattr(clock, "now", None))
                                      and callable(getattr(clock, "sleep", None))):
            raise TypeError(f"clock must be a Clock (now, sleep, asleep), got {clock!r}")
        self.clock: Clock = SystemClock() if clock is None else clock
        self.rng = random.Random() if rng is None else rng
        self.name = v.text("name", name, empty=True)
        self._sleep = (self.clock.sleep, self.clock.asleep)

    def __repr__(self) -> str:
        name = f"name={self.name!r}, " if self.name else ""
        return (
            f"RetryPolicy({name}max_attempts={self.max_attempts}, backoff={self.backoff!r}, "
            f"max_retry_after={self.max_retry_after:g}, deadline={self.deadline!r})"
        )

    # -- running calls -------------------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retried per this policy; returns its result or raises."""
        if _is_async_function(fn):
            raise TypeError(
                f"{_name_of(fn)} is an async function: use `await policy.call_async(...)`"
            )
        return run(self._loop(None, ((_call, _acall), (fn, args, kwargs)), sync=True))

    async def call_async(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)``, retried per this policy (waits: ``clock.asleep``)."""
        return await arun(self._loop(None, ((_call, _acall), (fn, args, kwargs)), sync=False))

    def flow(self, attempt: Callable[[float | None], Flow[T]], *, sync: bool = False) -> Flow[T]:
        """The retry loop as a flow (``_twin``): ``attempt(time_left)`` makes one attempt's
        flow, ``time_left`` being the seconds before ``deadline`` (None without one) that its
        timeouts must fit in. Drive it with ``_twin.run`` or ``arun``, or ``yield from`` it;
        ``sync``: it is driven by ``run``, so the waits are slept where they stand."""
        return self._loop(attempt, None, sync=sync)

    def _loop(self, attempt: Callable[[float | None], Flow[T]] | None,
              step: Step | None, *, sync: bool) -> Flow[T]:
        """The one retry loop: each attempt runs ``attempt``'s flow, or the single ``step``
        (on the sync path called where it stands: the round trip through ``run`` was half of
        ``call``'s 1.3 us in benchmarks/overhead.py)."""
        start = self.clock.now()
        deadline = self.deadline
        time_left = deadline
        tries: _Run | None = None  # built at the first failure: most calls succeed at once
        k = 1
        while True:
            token = _attempt_var.set(k)
            try:
                if step is not None:
                    result = step[0][0](*step[1]) if sync else (yield step)
                else:
                    result = yield from attempt(time_left)  # type: ignore[misc]
            except _UsageError:
                raise  # a mistake in how the policy was called, never a failed attempt
            except Exception as error:
                if tries is None:
                    tries = _Run(self, start)
                wait = tries.failed(error)
                if wait is None:
                    raise
            else:
                self._succeeded(tries, start)
                return result  # type: ignore[no-any-return]
            finally:
                _attempt_var.reset(token)
            if wait > 0:
                if sync:
                    self.clock.sleep(wait)
                else:
                    yield self._sleep, (wait,)
            k = tries.begin()
            if deadline is not None:
                time_left = deadline - tries.elapsed()

    def _succeeded(self, run: _Run | None, start: float) -> None:
        if run is not None:
            run.succeeded()
        elif self._subscribers:  # a first-attempt success: nothing to log, maybe an event
            now = self.clock.now()
            self._emit("success", now, attempts=1, elapsed=now - start)

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: the same function, retried per this policy (sync or async; keeps the name)."""
        return decorate(fn, self.call, self.call_async, retry_policy=self)

    __call__ = wrap  # `@policy` works as well as `@policy.wrap`


def _is_async_function(fn: Any) -> bool:
    """``inspect.iscoroutinefunction``, with a fast answer for a plain function (a closure)
    or a method bound to an instance."""
    if type(fn) is types.MethodType:
        fn = fn.__func__
    if type(fn) is types.FunctionType and "_is_coroutine_marker" not in fn.__dict__:
        return bool(fn.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(fn)


class _UsageError(TypeError):
    """``call``/``call_async`` used with the wrong kind of function: raised, never retried."""


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One attempt of ``call``: ``fn(*args, **kwargs)``, which must not be a coroutine."""
    result = fn(*args, **kwargs)
    if type(result) is types.CoroutineType:  # inspect.iscoroutine (the type is final)
        result.close()
        raise _UsageError(
            f"{_name_of(fn)} returned a coroutine: use `await policy.call_async(...)`")
    return result


async def _acall(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One attempt of ``call_async``: ``await fn(*args, **kwargs)``."""
    awaitable = fn(*args, **kwargs)
    if not inspect.isawaitable(awaitable):
        raise _UsageError(
            f"call_async needs a function returning an awaitable; {_name_of(fn)} returned "
            f"{type(awaitable).__name__} (use policy.call for sync functions)")
    return await awaitable


def _name_of(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


class _Run:
    """The state of one call through a policy: attempt count, start time, last backoff delay."""

    __slots__ = ("attempt", "label", "max_attempts", "no_wait", "policy", "previous", "start")

    def __init__(self, policy: RetryPolicy, start: float) -> None:
        """State after the first attempt (which began at ``start``) failed."""
        self.policy = policy
        self.attempt = 1
        mode = _testing_mode
        self.max_attempts = (
            policy.max_attempts if mode is None else min(policy.max_attempts, mode[0])
        )
        self.no_wait = mode is not None and mode[1]
        self.start = start
        self.previous: float | None = None
        self.label = f"[{policy.name}] " if policy.name else ""

    def begin(self) -> int:
        """The number of the attempt about to start."""
        self.attempt += 1
        return self.attempt

    def elapsed(self) -> float:
        return self.policy.clock.now() - self.start

    def succeeded(self) -> None:
        p = self.policy
        if p.observed:
            p.emit("success", p.clock.now(), attempts=self.attempt, elapsed=self.elapsed())
        if self.attempt > 1:
            logger.info(
                "%ssucceeded on attempt %d/%d after %.2f s",
                self.label,
                self.attempt,
                self.max_attempts,
                self.elapsed(),
            )

    def failed(self, error: BaseException) -> float | None:
        """The wait before the next attempt, or None after noting why we give up."""
        p = self.policy
        k, n = self.attempt, self.max_attempts
        if isinstance(error, _NEVER_RETRY) or not p.retry_on(error):
            if k > 1:  # a first-attempt error goes back untouched
                self._give_up(
                    error,
                    "not_retryable",
                    f"{describe(error, 120)} is not retryable; stopped at attempt {k}/{n}",
                )
            else:
                p.emit(
                    "give_up",
                    p.clock.now(),
                    attempts=k,
                    error=error,
                    error_type=type(error).__name__,
                    reason="not_retryable",
                    elapsed=self.elapsed(),
                )
            return None
        if k >= n:
            self._give_up(
                error,
                "exhausted",
                f"gave up after {k} attempt{'s' if k > 1 else ''} over {self.elapsed():.2f} s",
            )
            return None

        backoff_delay = p.backoff.delay(k - 1, p.rng, self.previous)
        self.previous = backoff_delay
        wait = backoff_delay
        retry_after = _retry_after_of(error) if p.respect_retry_after else None
        if retry_after is not None:
            if retry_after > p.max_retry_after:
                self._give_up(
                    error,
                    "retry_after_too_long",
                    f"Retry-After {retry_after:g} s exceeds "
                    f"max_retry_after={p.max_retry_after:g} s; "
                    f"gave up after {k} attempt{'s' if k > 1 else ''} over {self.elapsed():.2f} s",
                )
                return None
            if retry_after >= backoff_delay:  # the server's wait is a floor, plus a little jitter
                wait = retry_after + p.rng.uniform(0.0, min(1.0, 0.1 * retry_after))
        if self.no_wait:
            wait = 0.0
        if p.deadline is not None and self.elapsed() + wait > p.deadline:
            self._give_up(
                error,
                "deadline",
                f"the next wait of {wait:.2f} s would pass the {p.deadline:g} s deadline "
                f"({self.elapsed():.2f} s elapsed); gave up after {k} "
                f"attempt{'s' if k > 1 else ''}",
            )
            return None

        status = _status_of(error)
        p.emit(
            "retry",
            p.clock.now(),
            attempt=k,
            max_attempts=n,
            delay=wait,
            error=error,
            error_type=type(error).__name__,
            status_code=status,
            retry_after=retry_after,
        )
        hint = (
            f" (Retry-After {retry_after:g} s)"
            if retry_after is not None and wait >= retry_after
            else ""
        )
        logger.warning(
            "%sattempt %d/%d failed with %s; retrying in %.2f s%s",
            self.label,
            k,
            n,
            describe(error),
            wait,
            hint,
        )
        return wait

    def _give_up(self, error: BaseException, reason: str, why: str) -> None:
        p = self.policy
        add_note(error, f"llm_patterns.retry: {self.label}{why}")
        p.emit(
            "give_up",
            p.clock.now(),
            attempts=self.attempt,
            error=error,
            error_type=type(error).__name__,
            reason=reason,
            elapsed=self.elapsed(),
        )
        logger.warning(
            "%sgiving up (%s) after attempt %d/%d, %.2f s: %s",
            self.label,
            reason,
            self.attempt,
            self.max_attempts,
            self.elapsed(),
            describe(error),
        )
