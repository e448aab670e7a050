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
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from .. import _validate as v
from .._flow import Call, Flow, arun, run, running_loop
from ..circuit_breaker import BreakerBase
from ..circuit_breaker import check_clock as check_breaker_clock
from ..machines.breaker import BreakerConfig
from ..machines.bucket import MAX_PAUSE, as_demand
from ..protocols import Demand
from ..rate_headers import parse_rate_headers
from ..rate_limit import LimiterConfig, check_clock
from .base import DEFAULT_LEASE, Grant, StateStore

__all__ = ["SharedCircuitBreaker", "SharedRateLimiter"]

T = TypeVar("T")
limit_logger = logging.getLogger("llm_patterns.rate_limit")

_MIN_SLEEP = 0.001  # a waiter never busy-loops on the store


def _resolve_store(store: StateStore | str | None) -> StateStore:
    if store is None:
        from . import from_env

        return from_env()
    if isinstance(store, str):
        from . import from_url

        try:
            return from_url(store)
        except ValueError as exc:  # name the argument the caller passed
            raise ValueError(f"store: {exc}") from None
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
        return self._blocking and running_loop() is not None

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


class SharedCircuitBreaker(BreakerBase):
    """A ``CircuitBreaker`` whose state, counters and trial leases live in a ``StateStore``.

    The arguments mean what they mean for ``CircuitBreaker`` (the same machine,
    ``machines.breaker``, runs inside the store's atomic step); ``name`` is the shared key.
    ``probe_timeout`` (default ``reset_timeout``) is the lease on a half-open trial: a probe
    whose process dies gives its slot back when the lease expires. Time is the store's (see
    ``base``); ``clock`` is accepted for symmetry with the other patterns and unused.

    The async paths (``admit_async``, ``call_async``) run store calls on this breaker's worker
    thread, and a permit settled from inside a running event loop hands its write to that
    thread: the loop never waits for SQLite's lock or a slow Redis.
    """

    _blocking = True

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
        v.text("name", name)  # the shared key: never empty
        config = BreakerConfig.of(failure_threshold, reset_timeout, half_open_max_calls,
                                  probe_timeout)
        self.store = _resolve_store(store)
        self.clock = check_breaker_clock(clock if clock is not None else self.store.clock)
        self.key = f"breaker:{name}"
        self._setup(name, config, is_failure, None)
        self._blocking = bool(getattr(self.store, "blocking", True))

    def _run(self, op: str, *args: Any, error: BaseException | None = None) -> Any:
        result = getattr(self.store, f"breaker_{op}")(self.key, self.config, *args)
        with self._lock:
            self._queue(result, op, error)
        return result

    def _store_url(self) -> str | None:
        return self.store.url

    def __repr__(self) -> str:
        return (f"SharedCircuitBreaker(name={self.name!r}, failure_threshold="
                f"{self.failure_threshold}, reset_timeout={self.reset_timeout:g}, "
                f"store={self.store!r})")
