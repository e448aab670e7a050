"""Circuit breaker: stop calling a provider that is down, and probe it carefully when it may be back.

CLOSED lets every call through and counts consecutive *outage* failures (server errors, timeouts,
connection failures, malformed answers). At ``failure_threshold`` it OPENs: nothing is called and
callers get ``CircuitOpenError`` at once. After ``reset_timeout`` it reads HALF_OPEN (computed on
read, no background thread) and hands out exactly ``half_open_max_calls`` trial permits, however
many threads or coroutines ask at the same moment: a trial success CLOSEs it, a trial failure
re-OPENs it with a fresh cooldown. A 429 or a bad request says nothing about an outage: it neither
counts nor resets, and a trial call that ends that way gives its permit back.

Two bugs common in other breakers are designed out: half-open admitting every concurrent caller
(a permit counter under a lock), and a hung or cancelled probe wedging half-open forever (each
permit is a lease that expires after ``probe_timeout``). The lock guards only state transitions;
it is never held while the wrapped call runs, and listeners run outside it, in order.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any, TypeVar

import httpx

from ._decorate import decorate
from .clock import Clock, SystemClock
from .errors import CircuitOpenError, is_outage
from .events import Observable

__all__ = ["CircuitBreaker", "CircuitState", "is_outage"]

logger = logging.getLogger("llm_patterns.circuit_breaker")

T = TypeVar("T")
StateListener = Callable[["CircuitBreaker", "CircuitState", "CircuitState"], None]

_MIN_RETRY_AFTER = 0.001  # a busy half-open breaker never tells callers "retry in 0 s"
_REPR_LIMIT = 200


class CircuitState(str, Enum):
    """The three breaker states; a ``str`` so it compares with and serializes as "open" etc."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


class _Token:
    """One admitted call: the breaker generation it was admitted in and its trial permit, if any."""

    __slots__ = ("generation", "permit")

    def __init__(self, generation: int, permit: int | None) -> None:
        self.generation = generation
        self.permit = permit


class CircuitBreaker(Observable):
    """Per-provider circuit breaker (thread- and asyncio-safe); see the module docstring.

    ``is_failure(error) -> bool`` decides which errors count toward opening (default
    :func:`is_outage`). ``probe_timeout`` (default ``reset_timeout``) is how long a half-open trial
    may run before its permit is considered lost and handed to the next caller.
    """

    _event_source = "breaker"

    def __init__(
        self,
        name: str = "",
        failure_threshold: int = 5,
        reset_timeout: float = 60.0,
        half_open_max_calls: int = 1,
        *,
        clock: Clock | None = None,
        is_failure: Callable[[BaseException | None], bool] | None = None,
        probe_timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {name!r}")
        _check_count("failure_threshold", failure_threshold)
        _check_count("half_open_max_calls", half_open_max_calls)
        _check_seconds("reset_timeout", reset_timeout)
        if probe_timeout is not None:
            _check_seconds("probe_timeout", probe_timeout)
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise TypeError(f"clock must have a now() method (e.g. VirtualClock()), got {clock!r}")
        if is_failure is not None and not callable(is_failure):
            raise TypeError(
                f"is_failure must be a callable(error) -> bool or None, got {is_failure!r}"
            )

        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.half_open_max_calls = half_open_max_calls
        self.probe_timeout = float(reset_timeout if probe_timeout is None else probe_timeout)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.is_failure: Callable[[BaseException | None], bool] = is_failure or is_outage

        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._generation = 0  # bumped on every transition: results from an older episode are stale
        self._opened_at = 0.0
        self._consecutive_failures = 0
        self._permit_ids = itertools.count(1)
        self._permits: dict[int, float] = {}  # outstanding trial permit -> lease deadline
        self._last_error: str | None = None
        self._last_state_change = self.clock.now()
        self._stats = dict.fromkeys(
            ("calls", "successes", "failures", "ignored_errors", "rejections", "opened_count"), 0
        )
        self._listeners: tuple[StateListener, ...] = ()
        # notifications are queued under the lock and delivered outside it, in order
        self._pending: deque[tuple[str, float, dict[str, Any]]] = deque()
        self._dispatching = False

    # ------------------------------------------------------------------ reading state

    @property
    def state(self) -> CircuitState:
        """The current state; reads HALF_OPEN once ``reset_timeout`` has passed since opening."""
        with self._lock:
            state = self._refresh(self.clock.now())
        self._dispatch()
        return state

    @property
    def consecutive_failures(self) -> int:
        """Outage failures in a row since the last success (or reset)."""
        return self._consecutive_failures

    def retry_in(self) -> float:
        """Seconds until the breaker turns half-open; 0 when it is not open."""
        with self._lock:
            now = self.clock.now()
            self._refresh(now)
            value = self._retry_in(now)
        self._dispatch()
        return value

    def health(self) -> dict[str, Any]:
        """A snapshot for dashboards and health endpoints (plain JSON-friendly values)."""
        with self._lock:
            now = self.clock.now()
            state = self._refresh(now)
            self._expire_leases(now)
            snapshot = {
                "name": self.name,
                "state": state.value,
                "consecutive_failures": self._consecutive_failures,
                "failure_threshold": self.failure_threshold,
                "retry_in": self._retry_in(now),
                **self._stats,
                "trials_in_flight": len(self._permits),
                "half_open_max_calls": self.half_open_max_calls,
                "last_error": self._last_error,
                "last_state_change": self._last_state_change,
            }
        self._dispatch()
        return snapshot

    # ------------------------------------------------------------------ the manual protocol

    def allow_request(self) -> bool:
        """May a call go through now? In half-open this takes one of the trial permits.

        Every True must be followed by ``record_success()`` or ``record_failure(error)``.
        """
        try:
            return self._admit(raise_if_rejected=False) is not None
        finally:
            self._dispatch()

    def record_success(self) -> None:
        """A call succeeded: a half-open trial closes the breaker; closed resets the failure run."""
        with self._lock:
            self._settle(self._current_token(), None, success=True)
        self._dispatch()

    def record_failure(self, error: BaseException | None = None) -> None:
        """A call failed. Only errors ``is_failure`` accepts count (``None`` always does)."""
        counts = self._classify(error)
        with self._lock:
            self._settle(self._current_token(), error, success=False, counts=counts)
        self._dispatch()

    # ------------------------------------------------------------------ wrapping calls

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker; raises ``CircuitOpenError`` if not allowed."""
        generation = self._admit_closed()
        token = self._enter() if generation < 0 else None
        try:
            result = fn(*args, **kwargs)
        except Exception as error:
            self._exit(token or _Token(generation, None), error, success=False)
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: says nothing about the provider
            self._abandon(token or _Token(generation, None))
            raise
        if token is not None or not self._succeed_closed(generation):
            self._exit(token or _Token(generation, None), None, success=True)
        return result

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` through the breaker; cancellation gives a trial permit back."""
        generation = self._admit_closed()
        token = self._enter() if generation < 0 else None
        try:
            result = await fn(*args, **kwargs)
        except Exception as error:
            self._exit(token or _Token(generation, None), error, success=False)
            raise
        except BaseException:  # asyncio.CancelledError, KeyboardInterrupt
            self._abandon(token or _Token(generation, None))
            raise
        if token is not None or not self._succeed_closed(generation):
            self._exit(token or _Token(generation, None), None, success=True)
        return result

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator use: ``@breaker`` wraps a sync or an async function, keeping its name."""
        return decorate(fn, self.call, self.call_async)

    # ------------------------------------------------------------------ operators

    def reset(self) -> None:
        """Force the breaker closed and clear the failure run (an operator's "it is fixed")."""
        with self._lock:
            now = self.clock.now()
            self._refresh(now)
            self._consecutive_failures = 0
            if self._state is not CircuitState.CLOSED:
                self._transition(CircuitState.CLOSED, now, reason="forced by reset()")
        self._dispatch()

    def trip(self) -> None:
        """Force the breaker open now, with a fresh ``reset_timeout`` cooldown."""
        with self._lock:
            now = self.clock.now()
            self._refresh(now)
            self._open(now, reason="(forced by trip())")
        self._dispatch()

    def on_state_change(self, callback: StateListener) -> Callable[[], None]:
        """Call ``callback(breaker, old, new)`` on every transition; returns an unsubscribe function.

        Callbacks run outside the breaker's lock, in transition order; one that raises is logged.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable(breaker, old, new), got {callback!r}")
        with self._lock:
            self._listeners = (*self._listeners, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(cb for cb in self._listeners if cb is not callback)

        return unsubscribe

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state.value!r}, "
            f"failures={self._consecutive_failures}/{self.failure_threshold}, "
            f"reset_timeout={self.reset_timeout:g})"
        )

    # ------------------------------------------------------------------ internals (call with lock)

    # The fast path of a healthy provider: while CLOSED, admitting a call and recording its
    # success need no clock reading, no token and no notification (CLOSED never changes by
    # itself: only OPEN turns HALF_OPEN as time passes).

    def _admit_closed(self) -> int:
        """Admit a call if CLOSED: count it and return the generation; -1 when not CLOSED."""
        with self._lock:
            if self._state is CircuitState.CLOSED:
                self._stats["calls"] += 1
                return self._generation
        return -1

    def _succeed_closed(self, generation: int) -> bool:
        """Record the success of a call admitted by ``_admit_closed`` if the breaker is still in
        that CLOSED generation and nobody listens for "success" events; False: do it in full."""
        if self._subscribers:
            return False
        with self._lock:
            if self._generation != generation:
                return False
            self._stats["successes"] += 1
            self._consecutive_failures = 0
        return True

    def _enter(self) -> _Token:
        try:
            token = self._admit(raise_if_rejected=True)
        finally:
            self._dispatch()
        assert token is not None
        return token

    def _exit(self, token: _Token, error: BaseException | None, *, success: bool) -> None:
        counts = True if success else self._classify(error)
        with self._lock:
            self._settle(token, error, success=success, counts=counts)
        self._dispatch()

    def _abandon(self, token: _Token) -> None:
        """The call was interrupted (cancelled, Ctrl-C): give its trial permit back, count nothing."""
        with self._lock:
            if token.permit is not None:
                self._permits.pop(token.permit, None)
        self._dispatch()

    def _classify(self, error: BaseException | None) -> bool:
        if error is None:
            return True
        try:
            return bool(self.is_failure(error))
        except Exception:
            logger.exception(
                "breaker %s: is_failure(%r) raised; counting the error as a failure",
                self._label,
                error,
            )
            return True

    def _admit(self, *, raise_if_rejected: bool) -> _Token | None:
        with self._lock:
            now = self.clock.now()
            state = self._refresh(now)
            if state is CircuitState.CLOSED:
                self._stats["calls"] += 1
                return _Token(self._generation, None)
            if state is CircuitState.HALF_OPEN:
                self._expire_leases(now)
                if len(self._permits) < self.half_open_max_calls:
                    permit = next(self._permit_ids)
                    self._permits[permit] = now + self.probe_timeout
                    self._stats["calls"] += 1
                    return _Token(self._generation, permit)
                retry_after = max(_MIN_RETRY_AFTER, min(self._permits.values()) - now)
                message = (
                    f"circuit {self._label!r} is half-open and its {self.half_open_max_calls} "
                    f"trial call(s) are in flight"
                )
            else:
                retry_after = self._retry_in(now)
                message = f"circuit {self._label!r} is open; half-open in {retry_after:.1f} s"
            self._stats["rejections"] += 1
            self._pending.append(("rejected", now, {"retry_in": retry_after, "state": state}))
        if raise_if_rejected:
            raise CircuitOpenError(message, provider=self.name or None, retry_after=retry_after)
        return None

    def _current_token(self) -> _Token:
        """For the manual protocol: the oldest live trial permit (if any) of the current episode."""
        now = self.clock.now()
        permit = None
        if self._refresh(now) is CircuitState.HALF_OPEN:
            self._expire_leases(now)
            permit = next(iter(self._permits), None)
        return _Token(self._generation, permit)

    def _settle(
        self, token: _Token, error: BaseException | None, *, success: bool, counts: bool = True
    ) -> None:
        now = self.clock.now()
        state = self._refresh(now)
        if not success:
            self._last_error = _short_repr(error)
        current = token.generation == self._generation and (
            state is not CircuitState.HALF_OPEN
            or token.permit is None
            or token.permit in self._permits
        )
        if state is CircuitState.HALF_OPEN and token.permit is not None:
            self._permits.pop(token.permit, None)

        if success:
            self._stats["successes"] += 1
            if self._subscribers:  # only an event: nothing to queue when nobody listens
                self._pending.append(("success", now, {}))
            if not current or state is CircuitState.OPEN:
                return  # a late answer from an earlier episode or a lost lease: statistics only
            self._consecutive_failures = 0
            if state is CircuitState.HALF_OPEN:
                self._transition(CircuitState.CLOSED, now, reason="trial call succeeded")
            return

        if not counts:
            self._stats["ignored_errors"] += 1
            return  # a 429 or a bad request: no count, no reset; a trial permit was given back
        self._stats["failures"] += 1
        if not current or state is CircuitState.OPEN:
            self._pending.append(
                (
                    "failure",
                    now,
                    {
                        "consecutive_failures": self._consecutive_failures,
                        "error_type": _type_name(error),
                    },
                )
            )
            return
        self._consecutive_failures += 1
        self._pending.append(
            (
                "failure",
                now,
                {
                    "consecutive_failures": self._consecutive_failures,
                    "error_type": _type_name(error),
                },
            )
        )
        if state is CircuitState.HALF_OPEN:
            self._open(now, reason=f"again: trial call failed (last: {_describe(error)})")
        elif self._consecutive_failures >= self.failure_threshold:
            self._open(
                now,
                reason=f"after {self._consecutive_failures} consecutive failures (last: {_describe(error)})",
            )

    def _refresh(self, now: float) -> CircuitState:
        """The lazy OPEN -> HALF_OPEN transition, stamped at the moment it became due."""
        if self._state is CircuitState.OPEN and now >= self._opened_at + self.reset_timeout:
            self._transition(CircuitState.HALF_OPEN, self._opened_at + self.reset_timeout)
        return self._state

    def _retry_in(self, now: float) -> float:
        if self._state is not CircuitState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.reset_timeout - now)

    def _expire_leases(self, now: float) -> None:
        expired = [p for p, deadline in self._permits.items() if deadline <= now]
        for permit in expired:
            del self._permits[permit]
        if expired:
            self._pending.append(("lease_expired", now, {"count": len(expired)}))

    def _open(self, now: float, *, reason: str) -> None:
        self._opened_at = now
        self._stats["opened_count"] += 1
        if self._state is CircuitState.OPEN:  # trip() while open: fresh cooldown, no transition
            self._generation += 1
            self._pending.append(("log_open", now, {"reason": reason}))
            return
        self._transition(CircuitState.OPEN, now, reason=reason)

    def _transition(self, new: CircuitState, at: float, *, reason: str = "") -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._permits.clear()
        self._last_state_change = at
        if new is CircuitState.CLOSED:
            self._consecutive_failures = 0
        self._pending.append(
            (
                "state_change",
                at,
                {
                    "old": old,
                    "new": new,
                    "consecutive_failures": self._consecutive_failures,
                    "reason": reason,
                },
            )
        )

    # ------------------------------------------------------------------ delivery (without the lock)

    def _dispatch(self) -> None:
        """Deliver queued notifications in order; never under the lock, never re-entrantly."""
        if not self._pending:  # the common case; whoever queues next dispatches after it
            return
        while True:
            with self._lock:
                if self._dispatching or not self._pending:
                    return
                self._dispatching = True
                batch = list(self._pending)
                self._pending.clear()
                listeners = self._listeners
            try:
                for kind, at, data in batch:
                    self._deliver(kind, at, data, listeners)
            finally:
                with self._lock:
                    self._dispatching = False

    def _deliver(
        self, kind: str, at: float, data: dict[str, Any], listeners: tuple[StateListener, ...]
    ) -> None:
        if kind == "log_open":
            logger.warning(
                "breaker %s OPEN %s; half-open in %.1f s",
                self._label,
                data["reason"],
                self.reset_timeout,
            )
            return
        if kind == "lease_expired":
            logger.warning(
                "breaker %s: %d trial call(s) did not report back within %.1f s; permit(s) freed",
                self._label,
                data["count"],
                self.probe_timeout,
            )
            return
        if kind == "state_change":
            old, new = data["old"], data["new"]
            if new is CircuitState.OPEN:
                logger.warning(
                    "breaker %s OPEN %s; half-open in %.1f s",
                    self._label,
                    data["reason"],
                    self.reset_timeout,
                )
            elif new is CircuitState.HALF_OPEN:
                logger.info(
                    "breaker %s HALF_OPEN after %.1f s open; allowing %d trial call(s)",
                    self._label,
                    self.reset_timeout,
                    self.half_open_max_calls,
                )
            else:
                logger.info("breaker %s CLOSED (%s)", self._label, data["reason"])
            for callback in listeners:
                try:
                    callback(self, old, new)
                except Exception:
                    logger.exception(
                        "breaker %s: state-change listener %r failed on %s -> %s",
                        self._label,
                        callback,
                        old.value,
                        new.value,
                    )
            self._emit(
                "state_change",
                at,
                old=old.value,
                new=new.value,
                consecutive_failures=data["consecutive_failures"],
            )
            return
        if kind == "rejected":
            self._emit("rejected", at, retry_in=data["retry_in"], state=data["state"].value)
        else:
            self._emit(kind, at, **data)

    @property
    def _label(self) -> str:
        return self.name or "<unnamed>"


def _check_count(param: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{param} must be an int >= 1, got {value!r}")


def _check_seconds(param: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{param} must be a number of seconds > 0, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{param} must be a finite number of seconds > 0, got {value!r}")


def _type_name(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__name__


def _describe(error: BaseException | None) -> str:
    """``ServerError 503`` / ``ReadTimeout`` / ``no error given``: what an operator needs."""
    if error is None:
        return "no error given"
    status = getattr(error, "status_code", None)
    if status is None and isinstance(error, httpx.HTTPStatusError):
        status = error.response.status_code
    return f"{type(error).__name__} {status}" if status is not None else type(error).__name__


def _short_repr(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = repr(error)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."
