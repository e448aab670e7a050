"""Circuit breaker: stop calling a provider that is down; probe it carefully when it may be back.

CLOSED lets every call through and counts consecutive *outage* failures (server errors, timeouts,
connection failures, malformed answers). At ``failure_threshold`` it OPENs: nothing is called and
callers get ``CircuitOpenError`` at once. After ``reset_timeout`` it reads HALF_OPEN (computed on
read, no background thread) and hands out exactly ``half_open_max_calls`` trial permits, however
many threads or coroutines ask at the same moment: a trial success CLOSEs it, a trial failure
re-OPENs it with a fresh cooldown. A 429 or a bad request says nothing about an outage: it neither
counts nor resets, and a trial call that ends that way gives its permit back.

Two bugs common in other breakers are designed out: half-open admitting every concurrent caller
(a permit counter in one atomic step), and a hung or cancelled probe wedging half-open forever
(each trial permit is a lease that expires after ``probe_timeout``). No lock is held while the
wrapped call runs, and listeners run outside any lock, in order.

The states and transitions are ``machines.breaker`` (one definition). ``BreakerBase`` is the
public API over it: ``admit()`` -> ``BreakerPermit`` (the ``Breaker``/``Permit`` protocol),
and the SPEC's ``allow_request``/``record_success``/``record_failure``, ``call``/``call_async``,
decorator use, ``state``, ``health()``, ``on_state_change``, ``reset``/``trip`` as thin layers
over it; it turns the machine's ``changes`` into events, log lines and listener calls.
``CircuitBreaker`` runs the machine in this process under a lock; ``SharedCircuitBreaker``
(``state/shared.py``) runs it in a store shared by every process, so both announce the same
events, raise the same errors and show the same ``health()``.

Events (``subscribe``): ``success``; ``failure`` and ``ignored`` (``consecutive_failures``,
``error_type``); ``rejected`` (``retry_in``, ``state``); ``state_change`` (``old``, ``new``,
``consecutive_failures``); ``lease_expired`` (``count``). Logs (``llm_patterns.circuit_breaker``):
a WARNING at every OPEN with the failure count and the last error (redacted), INFO at HALF_OPEN
and CLOSED, a WARNING when a trial's lease runs out.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

from . import _validate as v
from ._decorate import decorate
from .clock import Clock, SystemClock
from .errors import CircuitOpenError, describe, is_outage
from .events import Observable
from .machines.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Admission,
    BreakerConfig,
    BreakerOutcome,
    BreakerSnapshot,
    Change,
    Circuit,
)

__all__ = ["BreakerBase", "BreakerPermit", "CircuitBreaker", "CircuitState", "is_outage"]

logger = logging.getLogger("llm_patterns.circuit_breaker")

T = TypeVar("T")
StateListener = Callable[[Any, "CircuitState", "CircuitState"], None]
Result = Admission | BreakerOutcome | BreakerSnapshot

_ERROR_CHARS = 200  # last_error in health(): one redacted line
_MANUAL_PENDING = 256  # the manual protocol remembers at most this many admissions per task

# allow_request()'s open admissions, per thread / asyncio task (its own context) and breaker
_MANUAL: contextvars.ContextVar[dict[BreakerBase, tuple[BreakerPermit, ...]] | None] = (
    contextvars.ContextVar("llm_patterns_breaker_manual", default=None))


class CircuitState(StrEnum):
    """The three breaker states; a ``str`` so it compares with and serializes as "open" etc."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATE = {s.value: s for s in CircuitState}


class BreakerPermit:
    """One admission by a breaker (the ``Permit`` protocol). The first of ``success()``,
    ``failure(error)`` or ``release()`` settles it; later calls do nothing. None of them raises
    (a store that cannot record an outcome logs it) and none blocks an event loop: called from
    a running loop, a store-backed breaker hands the write to its worker thread, ordered before
    that breaker's next admission."""

    __slots__ = ("_breaker", "_done", "generation", "lease", "trial")

    def __init__(self, breaker: BreakerBase, generation: int, lease: str | None) -> None:
        self._breaker = breaker
        self._done = False
        self.generation = generation
        self.lease = lease
        self.trial = lease is not None  # whether this call was admitted as a half-open trial

    def success(self) -> None:
        """The call succeeded: a trial closes the breaker; closed resets the failure run."""
        if not self._done:
            self._done = True
            self._breaker._report(self, "success", None)

    def failure(self, error: BaseException | None) -> None:
        """The call failed; ``error`` counts if the breaker's ``is_failure`` says so (outages
        do), otherwise a trial's slot is given back."""
        if not self._done:
            self._done = True
            self._breaker._report(self, self._breaker._classify(error), error)

    def release(self) -> None:
        """The call never got an answer (cancelled, interrupted): nothing is counted and a
        trial's slot is given back."""
        if not self._done:
            self._done = True
            if self.lease is not None:  # a closed-state admission holds nothing to give back
                self._breaker._report(self, "release", None)

    async def _aend(self, outcome: str, error: BaseException | None) -> None:
        """Settle with ``outcome`` and wait until it is recorded (``call_async``)."""
        if not self._done:
            self._done = True
            await self._breaker._areport(self, outcome, error)

    def __repr__(self) -> str:
        what = f"trial lease {self.lease}" if self.lease is not None else "closed"
        settled = ", settled" if self._done else ""
        return (f"BreakerPermit({self._breaker.name!r}, {what}, "
                f"generation {self.generation}{settled})")


class BreakerBase(Observable):
    """The breaker API over a breaker machine (see the module docstring).

    A subclass runs the machine: ``_run(op, *args, error=)`` runs ``Circuit.<op>(*args, now)``
    (``admit``, ``record``, ``release``, ``force``, ``read``) atomically and, in the same
    critical section, hands the answer to ``_queue`` so notifications keep the machine's order.
    ``_blocking`` says whether ``_run`` may wait on I/O (a store): async callers then run it on
    this breaker's worker thread, never on the event loop.
    """

    _event_source = "breaker"
    _blocking = False

    name: str
    config: BreakerConfig
    is_failure: Callable[[BaseException | None], bool]

    def _setup(self, name: str, config: BreakerConfig,
               is_failure: Callable[[BaseException | None], bool] | None,
               seen: CircuitState | None) -> None:
        if is_failure is not None and not callable(is_failure):
            raise TypeError(f"is_failure must be a callable(error) -> bool or None, "
                            f"got {is_failure!r}")
        self.name = name
        self.config = config
        self.is_failure = is_failure or is_outage
        self._lock = threading.Lock()
        self._listeners: tuple[StateListener, ...] = ()
        # notifications are queued under the lock and delivered outside it, in order
        self._pending: deque[tuple[Change, str, BaseException | None]] = deque()
        self._dispatching = False
        self._seen = seen  # the state this object last announced (None: not looked yet)
        self._worker: tuple[int, ThreadPoolExecutor] | None = None  # (pid, executor)

    # ------------------------------------------------------------------ the machine (subclass)

    def _run(self, op: str, *args: Any, error: BaseException | None = None) -> Any:
        raise NotImplementedError

    def _store_url(self) -> str | None:
        return None

    def _ordered(self, op: str, *args: Any) -> Any:
        """``_run`` for the sync API. Called from a running event loop, a blocking breaker
        runs it on its worker thread after the outcomes already handed there (this object
        reads its own writes), and waits: a sync call blocks by nature; the async API
        (``admit_async``, ``call_async``) does not."""
        if self._worker is not None and self._blocking and _in_event_loop():
            return self._submit(partial(self._run, op, *args)).result()
        return self._run(op, *args)

    # ------------------------------------------------------------------ numbers

    @property
    def failure_threshold(self) -> int:
        return self.config.failure_threshold

    @property
    def reset_timeout(self) -> float:
        return self.config.reset_timeout

    @property
    def half_open_max_calls(self) -> int:
        return self.config.half_open_max_calls

    @property
    def probe_timeout(self) -> float:
        return self.config.probe_timeout

    # ------------------------------------------------------------------ admission (the protocol)

    def admit(self) -> BreakerPermit:
        """A permit to call now (in half-open: one of the trial leases), or
        ``CircuitOpenError`` with ``retry_after`` (open, or every trial slot taken)."""
        adm: Admission = self._ordered("admit")
        self._dispatch()
        return self._permit(adm)

    async def admit_async(self) -> BreakerPermit:
        """``admit`` for coroutines: a store-backed breaker asks its store on its worker thread
        (after the outcomes this breaker already handed to it). A cancelled caller's admission,
        if the store granted it meanwhile, is given back."""
        if not self._blocking:
            return self.admit()
        future = self._submit(partial(self._run, "admit"))
        try:
            adm: Admission = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._release_lost)
            raise
        self._dispatch()
        return self._permit(adm)

    def _permit(self, adm: Admission) -> BreakerPermit:
        if adm.allowed:
            return BreakerPermit(self, adm.generation, adm.lease)
        if adm.state == HALF_OPEN:
            message = (f"circuit {self._label!r} is half-open and its "
                       f"{self.config.half_open_max_calls} trial call(s) are in flight")
        else:
            message = f"circuit {self._label!r} is open; half-open in {adm.retry_after:.1f} s"
        raise CircuitOpenError(message, provider=self.name or None, retry_after=adm.retry_after)

    def _release_lost(self, future: Future[Admission]) -> None:
        """A cancelled ``admit_async`` whose admission the store granted anyway."""
        if future.cancelled() or future.exception() is not None:
            return
        adm = future.result()
        if adm.allowed:
            BreakerPermit(self, adm.generation, adm.lease).release()

    def _classify(self, error: BaseException | None) -> str:
        """``failure`` if ``error`` counts (``None`` always does), else ``ignored``."""
        if error is None:
            return "failure"
        try:
            return "failure" if self.is_failure(error) else "ignored"
        except Exception:
            logger.exception("breaker %s: is_failure(%r) raised; counting the error as a failure",
                             self._label, type(error).__name__)
            return "failure"

    def _report(self, permit: BreakerPermit | None, outcome: str,
                error: BaseException | None) -> None:
        """Tell the machine a call's outcome (``success``/``failure``/``ignored``/``release``);
        from a running event loop a blocking breaker hands it to its worker thread."""
        if self._blocking and _in_event_loop():
            self._submit(partial(self._report_now, permit, outcome, error))
            return
        self._report_now(permit, outcome, error)

    def _report_now(self, permit: BreakerPermit | None, outcome: str,
                    error: BaseException | None) -> None:
        generation = None if permit is None else permit.generation
        lease = None if permit is None else permit.lease
        try:
            if outcome == "release":
                if lease is not None:  # a closed-state admission holds nothing
                    self._run("release", lease)
            else:
                text = None if error is None else describe(error, _ERROR_CHARS)
                self._run("record", outcome, generation, lease, text, error=error)
        except Exception as exc:  # bookkeeping after a call never fails that call
            logger.error("breaker %s: could not record a call's %s (%s); it is not counted",
                         self._label, outcome, describe(exc, brief=True))
        self._dispatch()

    async def _areport(self, permit: BreakerPermit, outcome: str,
                       error: BaseException | None) -> None:
        """``_report``, awaited to the end (``call_async``: the state is current on return)."""
        if not self._blocking:
            self._report(permit, outcome, error)
            return
        recorded = asyncio.wrap_future(self._submit(partial(self._report_now, permit, outcome,
                                                            error)))
        await asyncio.shield(recorded)  # a cancelled caller never cancels the bookkeeping
        self._dispatch()

    # ------------------------------------------------------------------ the manual protocol

    def allow_request(self) -> bool:
        """May a call go through now? In half-open this takes one of the trial permits.

        Every True must be followed, in the same thread or task, by ``record_success()`` or
        ``record_failure(error)``: they settle that thread's or task's latest open admission
        (so a late answer from an earlier episode is recognised as stale).
        """
        try:
            permit = self.admit()
        except CircuitOpenError:
            return False
        held = _MANUAL.get() or {}
        mine = held.get(self, ())[-_MANUAL_PENDING + 1:]
        _MANUAL.set({**held, self: (*mine, permit)})  # a new mapping: tasks never share one
        return True

    def _manual_permit(self) -> BreakerPermit | None:
        held = _MANUAL.get() or {}
        mine = held.get(self)
        if not mine:
            return None
        rest = {**held, self: mine[:-1]}
        if len(mine) == 1:
            del rest[self]  # nothing open any more: the context keeps no reference to us
        _MANUAL.set(rest)
        return mine[-1]

    def record_success(self) -> None:
        """A call succeeded: a half-open trial closes the breaker; closed resets the failure run."""
        permit = self._manual_permit()
        if permit is not None:
            permit.success()
        else:
            self._report(None, "success", None)

    def record_failure(self, error: BaseException | None = None) -> None:
        """A call failed. Only errors ``is_failure`` accepts count (``None`` always does)."""
        permit = self._manual_permit()
        if permit is not None:
            permit.failure(error)
        else:
            self._report(None, self._classify(error), error)

    # ------------------------------------------------------------------ wrapping calls

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` through the breaker; ``CircuitOpenError`` if not allowed."""
        permit = self.admit()
        try:
            result = fn(*args, **kwargs)
        except Exception as error:
            permit.failure(error)
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: says nothing about the provider
            permit.release()
            raise
        permit.success()
        return result

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any,
                         **kwargs: Any) -> T:
        """``await fn(*args, **kwargs)`` through the breaker; cancellation gives a trial
        permit back."""
        permit = await self.admit_async()
        try:
            result = await fn(*args, **kwargs)
        except Exception as error:
            await permit._aend(self._classify(error), error)
            raise
        except BaseException:  # asyncio.CancelledError, KeyboardInterrupt
            permit.release()
            raise
        await permit._aend("success", None)
        return result

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator use: ``@breaker`` wraps a sync or an async function, keeping its name."""
        return decorate(fn, self.call, self.call_async)

    # ------------------------------------------------------------------ reading state

    def _read(self) -> BreakerSnapshot:
        snap: BreakerSnapshot = self._ordered("read")
        self._dispatch()
        return snap

    @property
    def state(self) -> CircuitState:
        """The current state; reads HALF_OPEN once ``reset_timeout`` has passed since opening."""
        return _STATE[self._read().state]

    @property
    def consecutive_failures(self) -> int:
        """Outage failures in a row since the last success (or reset)."""
        return self._read().consecutive_failures

    def retry_in(self) -> float:
        """Seconds until the breaker turns half-open; 0 when it is not open."""
        return self._read().retry_in

    def health(self) -> dict[str, Any]:
        """A snapshot for dashboards and health endpoints (plain JSON-friendly values)."""
        snap = self._read()
        cfg = self.config
        return {
            "name": self.name,
            "store": self._store_url(),
            "state": snap.state,
            "consecutive_failures": snap.consecutive_failures,
            "failure_threshold": cfg.failure_threshold,
            "retry_in": snap.retry_in,
            **snap.counters,
            "trials_in_flight": snap.trials_in_flight,
            "half_open_max_calls": cfg.half_open_max_calls,
            "last_error": snap.last_error,
            "last_state_change": snap.last_state_change,
        }

    # ------------------------------------------------------------------ operators

    def reset(self) -> None:
        """Force the breaker closed and clear the failure run (an operator's "it is fixed")."""
        self._ordered("force", CLOSED)
        self._dispatch()

    def trip(self) -> None:
        """Force the breaker open now, with a fresh ``reset_timeout`` cooldown."""
        out: BreakerOutcome = self._ordered("force", OPEN)
        if not out.transitions:  # already open: a fresh cooldown, no transition to announce
            logger.warning("breaker %s OPEN again (forced by trip()); half-open in %.1f s",
                           self._label, self.config.reset_timeout)
        self._dispatch()

    def on_state_change(self, callback: StateListener) -> Callable[[], None]:
        """Call ``callback(breaker, old, new)`` on every transition; returns an unsubscriber.

        Callbacks run outside any lock, in transition order; one that raises is logged. A
        store-backed breaker reports the transitions it causes or sees (another process's, at
        this object's next call).
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable(breaker, old, new), got {callback!r}")
        with self._lock:
            self._listeners = (*self._listeners, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(cb for cb in self._listeners if cb is not callback)

        return unsubscribe

    # ------------------------------------------------------------------ the worker (stores)

    def _submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on this breaker's worker thread: one thread, so store calls made for the
        event loop keep their order (an outcome lands before the next admission)."""
        with self._lock:
            if self._worker is None or self._worker[0] != os.getpid():  # new, or a forked child
                self._worker = (os.getpid(), ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"llm-breaker-{self.name}"))
            worker = self._worker[1]
        return worker.submit(fn)

    def close(self) -> None:
        """Stop this breaker's worker thread once the outcomes handed to it are recorded."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None and worker[0] == os.getpid():
            worker[1].shutdown(wait=True)

    # ------------------------------------------------------------------ notifications

    def _queue(self, result: Result, op: str, error: BaseException | None) -> None:
        """Queue what ``result`` announces (call with the lock held). A store-backed breaker
        may find the state moved by another process: that move is announced too."""
        seen = self._seen
        for change in result.changes:
            if change.kind == "state_change":
                if seen is not None and change.state != seen.value:
                    self._pending.append((Change("state_change", change.at, seen.value,
                                                 change.state, change.number), "seen", None))
                seen = _STATE[change.new]
            elif not self._subscribers and change.kind in ("success", "failure", "ignored"):
                continue  # only an event: nothing to queue when nobody listens
            self._pending.append((change, op, error))
        if seen is None:
            seen = _STATE[result.state]
        elif result.state != seen.value:
            self._pending.append((Change("state_change", result.at, seen.value, result.state,
                                         _consecutive(result)), "seen", None))
            seen = _STATE[result.state]
        self._seen = seen

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
                for change, op, error in batch:
                    self._deliver(change, op, error, listeners)
            finally:
                with self._lock:
                    self._dispatching = False

    def _deliver(self, change: Change, op: str, error: BaseException | None,
                 listeners: tuple[StateListener, ...]) -> None:
        kind, at = change.kind, change.at
        if kind == "state_change":
            old, new = _STATE[change.state], _STATE[change.new]
            self._log_transition(old, new, op, error, int(change.number))
            for callback in listeners:
                try:
                    callback(self, old, new)
                except Exception:
                    logger.exception("breaker %s: state-change listener %r failed on %s -> %s",
                                     self._label, callback, old.value, new.value)
            self._emit("state_change", at, old=old.value, new=new.value,
                       consecutive_failures=int(change.number))
        elif kind == "rejected":
            self._emit("rejected", at, retry_in=float(change.number), state=change.state)
        elif kind == "lease_expired":
            logger.warning("breaker %s: %d trial call(s) did not report back within %.1f s; "
                           "permit(s) freed", self._label, int(change.number),
                           self.config.probe_timeout)
            self._emit("lease_expired", at, count=int(change.number))
        elif kind == "success":
            self._emit("success", at)
        else:  # failure, ignored
            self._emit(kind, at, consecutive_failures=int(change.number),
                       error_type=None if error is None else type(error).__name__)

    def _log_transition(self, old: CircuitState, new: CircuitState, op: str,
                        error: BaseException | None, consecutive: int) -> None:
        if new is CircuitState.OPEN:
            if op == "seen":
                reason = "(opened by another process)"
            elif op == "force":
                reason = "(forced by trip())"
            elif old is CircuitState.HALF_OPEN:
                reason = f"again: trial call failed (last: {describe(error, brief=True)})"
            else:
                reason = (f"after {consecutive} consecutive failures "
                          f"(last: {describe(error, brief=True)})")
            logger.warning("breaker %s OPEN %s; half-open in %.1f s", self._label, reason,
                           self.config.reset_timeout)
        elif new is CircuitState.HALF_OPEN:
            logger.info("breaker %s HALF_OPEN after %.1f s open; allowing %d trial call(s)",
                        self._label, self.config.reset_timeout, self.config.half_open_max_calls)
        else:
            reason = {"seen": "closed by another process", "force": "forced by reset()"}.get(
                op, "trial call succeeded")
            logger.info("breaker %s CLOSED (%s)", self._label, reason)

    @property
    def _label(self) -> str:
        return self.name or "<unnamed>"


def _consecutive(result: Result) -> int:
    return int(result.consecutive_failures) if not isinstance(result, Admission) else 0


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def check_clock(clock: Any) -> Clock:
    """``clock`` if it has ``now()`` (None: a ``SystemClock``)."""
    if clock is None:
        return SystemClock()
    if not callable(getattr(clock, "now", None)):
        raise TypeError(f"clock must have a now() method (e.g. VirtualClock()), got {clock!r}")
    return clock  # type: ignore[no-any-return]


class CircuitBreaker(BreakerBase):
    """Per-provider circuit breaker (thread- and asyncio-safe); see the module docstring.

    ``is_failure(error) -> bool`` decides which errors count toward opening (default
    :func:`is_outage`). ``probe_timeout`` (default ``reset_timeout``) is how long a half-open trial
    may run before its permit is considered lost and handed to the next caller.
    """

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
        v.text("name", name, empty=True)
        config = BreakerConfig.of(failure_threshold, reset_timeout, half_open_max_calls,
                                  probe_timeout)
        self.clock: Clock = check_clock(clock)
        self._setup(name, config, is_failure, CircuitState.CLOSED)
        self._m = Circuit(config, self.clock.now())

    def _run(self, op: str, *args: Any, error: BaseException | None = None) -> Any:
        with self._lock:
            result = getattr(self._m, op)(*args, self.clock.now())
            self._queue(result, op, error)
        return result

    # The fast path of a healthy provider (see ``Circuit.admit_closed``): while CLOSED and
    # nobody listens for events, no clock reading, no answer objects and nothing queued.
    # ``call`` also skips the permit object on success (benchmarks/overhead.py
    # "CircuitBreaker.call": 0.80 us, against 0.97 us through ``admit()`` and a permit).

    def admit(self) -> BreakerPermit:
        with self._lock:
            generation = self._m.admit_closed()
        if generation >= 0:
            return BreakerPermit(self, generation, None)
        return super().admit()

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            generation = self._m.admit_closed()
        if generation < 0:
            return super().call(fn, *args, **kwargs)
        try:
            result = fn(*args, **kwargs)
        except Exception as error:
            BreakerPermit(self, generation, None).failure(error)
            raise
        # (a BaseException needs nothing: a closed admission holds no trial slot)
        if self._subscribers or not self._succeed_closed(generation):
            BreakerPermit(self, generation, None).success()
        return result

    def _succeed_closed(self, generation: int) -> bool:
        with self._lock:
            return self._m.succeed_closed(generation)

    def _report(self, permit: BreakerPermit | None, outcome: str,
                error: BaseException | None) -> None:
        if (outcome == "success" and permit is not None and permit.lease is None
                and not self._subscribers):
            with self._lock:
                if self._m.succeed_closed(permit.generation):
                    return
        self._report_now(permit, outcome, error)

    def __repr__(self) -> str:
        m = self._m
        return (f"CircuitBreaker(name={self.name!r}, state={m.state!r}, "
                f"failures={m.consecutive}/{self.config.failure_threshold}, "
                f"reset_timeout={self.config.reset_timeout:g})")
