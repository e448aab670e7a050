"""``SharedRateLimiter`` and ``SharedCircuitBreaker``: the patterns, with their state in a store.

Same public interface as ``RateLimiter`` and ``CircuitBreaker`` (drop them into
``ResilientClient(limiters=..., breakers=...)``), but every decision is one atomic operation on
a ``StateStore``, so every process that opens the same store and name shares one RPM/TPM budget
and one breaker. Differences from the in-process classes, all forced by sharing:

- Waiters are served first come, first served across processes through a ticket queue in the
  store; a waiter sleeps until its projected turn (at most ``poll`` s) and asks again, so a
  grant comes up to one store round trip later than in process.
- ``waiting`` in ``status()`` counts the store's queue (every process).
- ``on_state_change`` fires when THIS object sees a transition: one it caused, or one another
  process caused, noticed at its next call (there is no push channel).
- Time: the buckets and the breaker's cooldown run on the store's clock (see ``base``); the
  ``clock`` here is only what a waiter sleeps on (default: the store's clock).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from .. import _validate as v
from .._decorate import decorate
from .._flow import Call, Flow, arun, run
from ..circuit_breaker import CircuitState, is_outage
from ..errors import CircuitOpenError
from ..events import Observable
from ..machines.bucket import MAX_PAUSE, as_demand
from ..protocols import Demand
from ..rate_headers import parse_rate_headers
from ..rate_limit import LimiterConfig, check_clock
from .base import DEFAULT_LEASE, Admission, BreakerConfig, Grant, StateStore

__all__ = ["SharedCircuitBreaker", "SharedRateLimiter"]

T = TypeVar("T")
limit_logger = logging.getLogger("llm_patterns.rate_limit")
breaker_logger = logging.getLogger("llm_patterns.circuit_breaker")

_MIN_SLEEP = 0.001  # a waiter never busy-loops on the store


def _resolve_store(store: StateStore | str | None) -> StateStore:
    if store is None:
        from . import from_env

        return from_env()
    if isinstance(store, str):
        from . import from_url

        return from_url(store)
    for op in ("limiter_acquire", "breaker_admit"):
        if not callable(getattr(store, op, None)):
            raise TypeError(f"store must be a StateStore or a URL string, got {store!r}")
    return store


class SharedRateLimiter(LimiterConfig):
    """A ``RateLimiter`` whose buckets live in a ``StateStore`` under ``name``.

    ``rpm``, ``tpm``, ``itpm``, ``otpm``, ``max_wait``, ``burst_seconds``, ``headroom`` and
    ``max_retry_after`` mean what they mean for ``RateLimiter`` (the same machine,
    ``machines.bucket``, runs inside the store's atomic step); ``store`` is a ``StateStore`` or
    a URL (``from_url``; None reads ``LLM_PATTERNS_STATE``). Every process configuring the same
    name should configure the same limits (the shape travels with each call).

    Waiters are served first come, first served across processes: a waiter takes a ticket in the
    store's queue and only the head may pay; the others sleep until their projected turn (at
    most ``poll`` seconds between looks). A ticket whose holder stops asking (a crashed
    process) expires ``lease`` seconds after its holder was due back. The async path runs every
    store call in a worker thread (the event loop never waits for SQLite's lock or Redis), and
    ``settle`` / ``penalize`` / ``update_from_headers`` called from inside a running event loop
    hand their store write to this limiter's worker thread instead of blocking it.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        itpm: float | None = None,
        otpm: float | None = None,
        store: StateStore | str | None = None,
        name: str,
        clock: Any = None,
        max_wait: float | None = None,
        burst_seconds: float | None = None,
        headroom: float = 0.0,
        max_retry_after: float = 120.0,
        lease: float = DEFAULT_LEASE,
        poll: float = 1.0,
    ) -> None:
        self._configure(rpm=rpm, tpm=tpm, itpm=itpm, otpm=otpm, burst_seconds=burst_seconds,
                        headroom=headroom, max_wait=max_wait, max_retry_after=max_retry_after,
                        name=name)
        v.text("name", name)  # the shared key: never empty
        self.lease = v.real("lease", lease, minimum=0.0, strict_min=True, maximum=MAX_PAUSE)
        self.poll = v.real("poll", poll, minimum=0.0, strict_min=True, maximum=MAX_PAUSE)
        self.store = _resolve_store(store)
        self.key = f"limiter:{name}"
        self.clock = check_clock(clock if clock is not None else self.store.clock)
        self._blocking = bool(getattr(self.store, "blocking", True))
        self._lock = threading.Lock()
        self._worker: tuple[int, ThreadPoolExecutor] | None = None  # (pid, executor)

    # -- store calls that must not block an event loop
    def _in_loop(self) -> bool:
        return self._blocking and asyncio._get_running_loop() is not None

    def _background(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on this limiter's worker thread (in order, never concurrently); its
        failure is logged: bookkeeping after a call never fails that call."""
        with self._lock:
            if self._worker is None or self._worker[0] != os.getpid():  # a forked child
                self._worker = (os.getpid(), ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"llm-limiter-{self.name}"))
            worker = self._worker[1]

        def logged() -> None:
            try:
                fn()
            except Exception:
                limit_logger.exception("%sbookkeeping in the background failed",
                                       self._prefix())
        worker.submit(logged)

    def _bookkeep(self, fn: Callable[[], T]) -> T | None:
        """``fn()`` now, or on the worker thread when called from a running event loop."""
        if self._in_loop():
            self._background(fn)
            return None
        return fn()

    def _prefix(self) -> str:
        return f"rate limiter {self.name!r} ({self.store.url.split(':', 1)[0]}): "

    # -- acquiring: one flow, two shells
    def _acquire(self, demand: Any) -> Flow[float]:
        """Queue in the store until the demand is paid; yields store calls and sleeps."""
        req, inp, out = d = self._demand(demand)
        start = self.clock.now()
        ticket: str | None = None
        granted = False
        try:
            while True:
                elapsed = self.clock.now() - start
                left = None if self.max_wait is None else max(0.0, self.max_wait - elapsed)
                grant: Grant = yield Call(partial(
                    self.store.limiter_acquire, self.key, self.limits, d, ticket=ticket,
                    lease=self.lease, max_wait=left if ticket is None else None),
                    self._blocking)
                if grant.wait == 0.0:
                    granted = True
                    break
                if grant.ticket is None or (self.max_wait is not None
                                            and elapsed + grant.wait > self.max_wait + 1e-9):
                    raise self._timeout(grant.wait, self.clock.now(), req, inp, out,
                                        kind="shared rate limiter")
                if ticket is None:  # queued (``at``: the store's time of it)
                    self._emit("wait", start, tokens=inp + out, seconds=grant.wait,
                               waiting=grant.waiting, at=grant.at, ticket=grant.ticket)
                ticket = grant.ticket
                yield max(_MIN_SLEEP, min(grant.wait, self.poll))
        finally:
            if ticket is not None and not granted:
                self._leave(ticket)
        now = self.clock.now()
        if self._remember:
            with self._lock:
                self._record(d, now, grant.ratio)
        waited = now - start if ticket is not None else 0.0
        self._log_wait(waited, req, inp, out)
        self._emit("acquire", now, tokens=inp + out, waited=waited, at=grant.at)
        return waited

    def _leave(self, ticket: str) -> None:
        """Give a ticket back (a timeout, an error, a cancellation); if the store is down the
        ticket simply expires."""
        def leave() -> None:
            try:
                self.store.limiter_leave(self.key, ticket)
            except Exception as exc:  # the ticket expires on its own
                limit_logger.debug("%scould not give ticket back (%s); it will expire",
                                   self._prefix(), exc)
        if self._in_loop():
            self._background(leave)
        else:
            leave()

    def acquire(self, demand: Demand | float = 0) -> float:
        """Wait until the demand fits the shared buckets, first come first served across
        processes, and pay it; seconds waited. ``RateLimitTimeout`` (taking nothing) if that
        would pass ``max_wait``; ``ValueError`` if it could never fit."""
        return run(self._acquire(demand), self.clock)

    async def acquire_async(self, demand: Demand | float = 0) -> float:
        """``acquire`` for coroutines: sleeps with ``await clock.asleep``; store calls run in a
        worker thread."""
        return await arun(self._acquire(demand), self.clock)

    def try_acquire(self, demand: Demand | float = 0) -> bool:
        """Pay the demand if the shared buckets can now and nobody is queued; never waits."""
        d = self._demand(demand)
        grant = self.store.limiter_acquire(self.key, self.limits, d, max_wait=0.0)
        if grant.wait != 0.0:
            return False
        if self._remember:
            with self._lock:
                self._record(d, self.clock.now(), grant.ratio)
        self._emit("acquire", self.clock.now(), tokens=d[1] + d[2], waited=0.0)
        return True

    # -- feedback
    def penalize(self, seconds: float) -> None:
        """Pause every process using this limiter for ``seconds`` (a 429's Retry-After), at
        most ``max_retry_after``."""
        sec = self._bound_pause(seconds)

        def pause() -> None:
            remaining = self.store.limiter_pause(self.key, self.limits, sec)
            limit_logger.info("%spaused for %.2f s (every caller, every process)",
                              self._prefix(), remaining)
            self._emit("penalize", self.clock.now(), seconds=sec, penalty_remaining=remaining)
        self._bookkeep(pause)

    def settle(self, estimated: Demand | float, actual: Demand | float) -> None:
        """Charge the excess or give back the unused part; learn the estimate ratio (see
        ``RateLimiter.settle``)."""
        est, act = as_demand(estimated, "estimated"), as_demand(actual, "actual")
        last = self._last_grant()
        self._remember = True

        def settle() -> None:
            self.store.limiter_settle(self.key, self.limits, est, act,
                                      1.0 if last is None else last[1])
            limit_logger.debug("%ssettled %s estimated vs %s actual", self._prefix(),
                               self._what(*est), self._what(*act))
            self._emit("settle", self.clock.now(), estimated=est[1] + est[2],
                       actual=act[1] + act[2])
        self._bookkeep(settle)

    def update_from_headers(self, headers: Mapping[str, str], *,
                            sent_at: float | None = None) -> None:
        """Only LOWER the shared levels to the provider's remaining counts, less what this
        process granted after the answered request was sent (see ``RateLimiter``)."""
        rh = parse_rate_headers(headers)
        sent = v.optional(v.real, "sent_at", sent_at)
        with self._lock:
            ceilings = self._ceilings(rh, sent, self.clock.now())

        def lower() -> None:
            if ceilings:
                self.store.limiter_lower(self.key, self.limits, ceilings)
            self._emit("sync", self.clock.now(), **rh.event_data())
        self._warn_limits(rh)
        self._bookkeep(lower)

    async def asettle(self, estimated: Demand | float, actual: Demand | float) -> None:
        """``settle`` without blocking the event loop (the store call runs in a thread)."""
        await self._after(self.settle, estimated, actual)

    async def apenalize(self, seconds: float) -> None:
        await self._after(self.penalize, seconds)

    async def aupdate_from_headers(self, headers: Mapping[str, str], *,
                                   sent_at: float | None = None) -> None:
        await self._after(partial(self.update_from_headers, sent_at=sent_at), headers)

    async def _after(self, fn: Callable[..., None], *args: Any) -> None:
        """Run sync bookkeeping ``fn`` to completion in a thread (errors propagate), keeping
        the caller's context (its last grant)."""
        if self._blocking:
            await asyncio.to_thread(fn, *args)
        else:
            fn(*args)

    # -- looking
    def status(self) -> dict[str, Any]:
        """Shared levels, capacities, limits, the store's queue length, pause left, the
        learned ratio."""
        levels = self.store.limiter_levels(self.key, self.limits)
        out = self._status(levels, int(levels["waiting"]), levels["pause_remaining"],
                           levels["ratio"])
        return {"name": self.name, "store": self.store.url, **out}

    def close(self) -> None:
        """Stop this limiter's worker thread after the bookkeeping already handed to it."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None and worker[0] == os.getpid():
            worker[1].shutdown(wait=True)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, store={self.store!r})"


StateListener = Callable[[Any, CircuitState, CircuitState], None]


class SharedCircuitBreaker(Observable):
    """A ``CircuitBreaker`` whose state, counters and probe leases live in a ``StateStore``.

    The arguments mean what they mean for ``CircuitBreaker``; ``name`` is the shared key.
    ``probe_timeout`` (default ``reset_timeout``) is the lease on a half-open trial: a probe
    whose process dies gives its slot back when the lease expires.
    """

    _event_source = "breaker"

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_timeout: float = 60.0,
        half_open_max_calls: int = 1,
        *,
        store: StateStore | str | None = None,
        clock: Any = None,
        is_failure: Callable[[BaseException | None], bool] | None = None,
        probe_timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (the shared key), got {name!r}")
        for param, value in (("failure_threshold", failure_threshold),
                             ("half_open_max_calls", half_open_max_calls)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{param} must be an int >= 1, got {value!r}")
        for param, value in (("reset_timeout", reset_timeout), ("probe_timeout", probe_timeout)):
            if value is None and param == "probe_timeout":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0
            ):
                raise ValueError(f"{param} must be a finite number of seconds > 0, got {value!r}")
        if is_failure is not None and not callable(is_failure):
            raise TypeError(f"is_failure must be callable(error) -> bool, got {is_failure!r}")
        self.store = _resolve_store(store)
        self.name = name
        self.key = f"breaker:{name}"
        self.failure_threshold = failure_threshold
        self.reset_timeout = float(reset_timeout)
        self.half_open_max_calls = half_open_max_calls
        self.probe_timeout = float(reset_timeout if probe_timeout is None else probe_timeout)
        self.config = BreakerConfig(failure_threshold, self.reset_timeout, half_open_max_calls,
                                    self.probe_timeout)
        self.clock = clock if clock is not None else self.store.clock
        self.is_failure = is_failure or is_outage
        self._listeners: tuple[StateListener, ...] = ()
        self._lock = threading.Lock()
        self._seen: CircuitState | None = None  # baseline: the first state this object reads
        self._manual = threading.local()  # the manual protocol's admission, per thread

    # -- state
    def _observe(self, state: str, transitions: tuple[tuple[str, str], ...] = ()) -> CircuitState:
        """Fire listeners for what this object has not seen yet; returns the new state."""
        new = CircuitState(state)
        with self._lock:
            seen = self._seen
            self._seen = new
        if seen is None:  # first look: what others did before we existed is not news
            seen = CircuitState(transitions[0][0]) if transitions else new
        steps = [(CircuitState(a), CircuitState(b)) for a, b in transitions]
        if not steps or steps[0][0] is not seen:
            chain = [(seen, steps[0][0])] if steps else [(seen, new)]
            steps = [s for s in chain if s[0] is not s[1]] + steps
        for old, nxt in steps:
            self._notify(old, nxt)
        return new

    def _notify(self, old: CircuitState, new: CircuitState) -> None:
        if new is CircuitState.OPEN:
            breaker_logger.warning("breaker %s (shared) OPEN; half-open in %.1f s", self.name,
                                   self.reset_timeout)
        elif new is CircuitState.HALF_OPEN:
            breaker_logger.info("breaker %s (shared) HALF_OPEN; allowing %d trial call(s)",
                                self.name, self.half_open_max_calls)
        else:
            breaker_logger.info("breaker %s (shared) CLOSED", self.name)
        for cb in self._listeners:
            try:
                cb(self, old, new)
            except Exception:
                breaker_logger.exception("breaker %s: state-change listener %r failed",
                                         self.name, cb)
        self._emit("state_change", self.clock.now(), old=old.value, new=new.value)

    def _read(self) -> dict[str, Any]:
        snap = self.store.breaker_read(self.key, self.config)
        self._observe(snap["state"], snap.pop("transitions"))
        return snap

    @property
    def state(self) -> CircuitState:
        """The shared state (HALF_OPEN once ``reset_timeout`` has passed since opening)."""
        return CircuitState(self._read()["state"])

    @property
    def consecutive_failures(self) -> int:
        return int(self._read()["consecutive_failures"])

    def retry_in(self) -> float:
        """Seconds until the shared breaker turns half-open; 0 when it is not open."""
        return float(self._read()["retry_in"])

    def health(self) -> dict[str, Any]:
        snap = self._read()
        return {
            "name": self.name,
            "store": self.store.url,
            "state": snap["state"],
            "consecutive_failures": snap["consecutive_failures"],
            "failure_threshold": self.failure_threshold,
            "retry_in": snap["retry_in"],
            "calls": snap["calls"],
            "successes": snap["successes"],
            "failures": snap["failures"],
            "ignored_errors": snap["ignored_errors"],
            "rejections": snap["rejections"],
            "opened_count": snap["opened_count"],
            "trials_in_flight": snap["trials_in_flight"],
            "half_open_max_calls": self.half_open_max_calls,
            "last_error": snap["last_error"],
            "last_state_change": snap["last_state_change"],
        }

    # -- admission and settling
    def _admit(self) -> Admission:
        adm = self.store.breaker_admit(self.key, self.config)
        self._observe(adm.state, (adm.transition,) if adm.transition else ())
        if not adm.allowed:
            self._emit("rejected", self.clock.now(), retry_in=adm.retry_after, state=adm.state)
        return adm

    def _settle(self, adm: Admission | None, error: BaseException | None, outcome: str) -> None:
        out = self.store.breaker_record(
            self.key, self.config, outcome,
            generation=None if adm is None else adm.generation,
            lease=None if adm is None else adm.lease,
            error=None if error is None else f"{type(error).__name__}: {error}"[:200],
        )
        self._observe(out.state, out.transitions)
        if outcome != "success":
            self._emit(outcome, self.clock.now(), consecutive_failures=out.consecutive_failures,
                       error_type=None if error is None else type(error).__name__)
        else:
            self._emit("success", self.clock.now())

    def _classify(self, error: BaseException | None) -> str:
        if error is None:
            return "failure"
        try:
            return "failure" if self.is_failure(error) else "ignored"
        except Exception:
            breaker_logger.exception("breaker %s: is_failure(%r) raised; counting it", self.name,
                                     error)
            return "failure"

    def _enter(self) -> Admission:
        adm = self._admit()
        if not adm.allowed:
            what = ("is half-open and its trial call(s) are in flight"
                    if adm.state == "half_open" else f"is open; half-open in {adm.retry_after:.1f} s")
            raise CircuitOpenError(f"circuit {self.name!r} {what}", provider=self.name,
                                   retry_after=adm.retry_after)
        return adm

    def allow_request(self) -> bool:
        """May a call go through now? In half-open this takes a probe lease (shared)."""
        adm = self._admit()
        if adm.allowed:
            self._manual.admission = adm
        return adm.allowed

    def _pop_manual(self) -> Admission | None:
        adm = getattr(self._manual, "admission", None)
        self._manual.admission = None
        return adm

    def record_success(self) -> None:
        self._settle(self._pop_manual(), None, "success")

    def record_failure(self, error: BaseException | None = None) -> None:
        self._settle(self._pop_manual(), error, self._classify(error))

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` through the shared breaker; ``CircuitOpenError`` if not allowed."""
        adm = self._enter()
        try:
            result = fn(*args, **kwargs)
        except Exception as error:
            self._settle(adm, error, self._classify(error))
            raise
        except BaseException:
            if adm.lease is not None:
                self.store.breaker_release(self.key, adm.lease)
            raise
        self._settle(adm, None, "success")
        return result

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any,
                         **kwargs: Any) -> T:
        adm = self._enter()
        try:
            result = await fn(*args, **kwargs)
        except Exception as error:
            self._settle(adm, error, self._classify(error))
            raise
        except BaseException:
            if adm.lease is not None:
                self.store.breaker_release(self.key, adm.lease)
            raise
        self._settle(adm, None, "success")
        return result

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator use: ``@breaker`` wraps a sync or an async function, keeping its name."""
        return decorate(fn, self.call, self.call_async)

    # -- operators
    def reset(self) -> None:
        """Force the shared breaker closed (for every process)."""
        out = self.store.breaker_force(self.key, self.config, "closed")
        self._observe(out.state, out.transitions)

    def trip(self) -> None:
        """Force the shared breaker open now, with a fresh cooldown (for every process)."""
        out = self.store.breaker_force(self.key, self.config, "open")
        self._observe(out.state, out.transitions)

    def on_state_change(self, callback: StateListener) -> Callable[[], None]:
        """``callback(breaker, old, new)`` on every transition this object observes."""
        if not callable(callback):
            raise TypeError(f"callback must be callable(breaker, old, new), got {callback!r}")
        with self._lock:
            self._listeners = (*self._listeners, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(c for c in self._listeners if c is not callback)
        return unsubscribe

    def __repr__(self) -> str:
        return (f"SharedCircuitBreaker(name={self.name!r}, failure_threshold="
                f"{self.failure_threshold}, reset_timeout={self.reset_timeout:g}, "
                f"store={self.store!r})")
