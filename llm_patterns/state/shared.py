"""``SharedRateLimiter`` and ``SharedCircuitBreaker``: the patterns, with their state in a store.

Same public interface as ``RateLimiter`` and ``CircuitBreaker`` (drop them into
``ResilientClient(limiters=..., breakers=...)``), but every decision is one atomic operation on
a ``StateStore``, so every process that opens the same store and name shares one RPM/TPM budget
and one breaker. Differences from the in-process classes, all forced by sharing:

- Waiters are not served first come, first served across processes: each waiter asks the store,
  sleeps for the wait it was told, and asks again. A large request can be overtaken by small
  ones (keep requests well under the bucket size, or cap concurrency with an Airflow pool).
- ``waiting`` in ``status()`` counts this process's waiters only.
- ``on_state_change`` fires when THIS object sees a transition: one it caused, or one another
  process caused, noticed at its next call (there is no push channel).
- Time: the buckets and the breaker's cooldown run on the store's clock (see ``base``); the
  ``clock`` here is only what a waiter sleeps on (default: the store's clock).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from .._decorate import decorate
from ..circuit_breaker import CircuitState, is_outage
from ..errors import CircuitOpenError, RateLimitTimeout
from ..events import Observable
from ..rate_limit import check_real, header_number
from .base import Admission, BreakerConfig, Bucket, StateStore

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
    for op in ("acquire", "breaker_admit"):
        if not callable(getattr(store, op, None)):
            raise TypeError(f"store must be a StateStore or a URL string, got {store!r}")
    return store


class SharedRateLimiter(Observable):
    """A ``RateLimiter`` whose buckets live in a ``StateStore`` under ``name``.

    ``rpm``, ``tpm``, ``max_wait`` and ``burst_seconds`` mean what they mean for
    ``RateLimiter``; ``store`` is a ``StateStore`` or a URL (``from_url``; None reads
    ``LLM_PATTERNS_STATE``). Every process configuring the same name should configure the same
    limits (the shape travels with each call; the last caller's capacity wins).
    """

    _event_source = "rate_limit"

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        store: StateStore | str | None = None,
        name: str,
        clock: Any = None,
        max_wait: float | None = None,
        burst_seconds: float = 60.0,
    ) -> None:
        if rpm is None and tpm is None:
            raise ValueError(
                "SharedRateLimiter needs rpm or tpm (or both), got rpm=None and tpm=None"
            )
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (the shared key), got {name!r}")
        self.store = _resolve_store(store)
        self.name = name
        self.key = f"limiter:{name}"
        self.burst_seconds = check_real("burst_seconds", burst_seconds, positive=True)
        self.max_wait = None if max_wait is None else check_real("max_wait", max_wait)
        self.rpm = None if rpm is None else check_real("rpm", rpm, positive=True)
        self.tpm = None if tpm is None else check_real("tpm", tpm, positive=True)
        self.clock = clock if clock is not None else self.store.clock
        self._req = None if self.rpm is None else Bucket(
            "requests", self.rpm / 60.0 * self.burst_seconds, self.rpm / 60.0)
        self._tok = None if self.tpm is None else Bucket(
            "tokens", self.tpm / 60.0 * self.burst_seconds, self.tpm / 60.0)
        if self._req is not None and self._req.capacity < 1.0:
            raise ValueError(
                f"rpm={rpm!r} with burst_seconds={burst_seconds!r} gives a request bucket of "
                f"{self._req.capacity:g} < 1 request, so no request could ever pass; expected "
                f"burst_seconds >= {60.0 / self.rpm:g}"
            )
        self._waiting = 0
        self._count_lock = threading.Lock()

    # -- helpers
    def _buckets(self, tokens: float) -> list[Bucket]:
        out = []
        if self._req is not None:
            out.append(self._req._replace(amount=1.0))
        if self._tok is not None:
            out.append(self._tok._replace(amount=tokens))
        return out

    def _check_tokens(self, tokens: Any) -> float:
        amount = check_real("tokens", tokens)
        if self._tok is not None and amount > self._tok.capacity:
            raise ValueError(
                f"tokens={tokens!r} is more than the token bucket can ever hold "
                f"({self._tok.capacity:g} = tpm {self.tpm:g} / 60 x burst_seconds "
                f"{self.burst_seconds:g}): the request could never be served; expected at most "
                f"{self._tok.capacity:g}"
            )
        return amount

    def _prefix(self) -> str:
        return f"rate limiter {self.name!r} ({self.store.url.split(':', 1)[0]}): "

    def _what(self, tokens: float) -> str:
        return "1 request" if self._tok is None else f"1 request + {tokens:g} tokens"

    def _timeout(self, tokens: float, delay: float) -> RateLimitTimeout:
        limit_logger.warning(
            "%swould wait %.2f s for %s, over max_wait=%g s: refusing (RateLimitTimeout)",
            self._prefix(), delay, self._what(tokens), self.max_wait,
        )
        self._emit("timeout", self.clock.now(), tokens=tokens, retry_after=delay)
        return RateLimitTimeout(
            f"shared rate limiter {self.name} would wait {delay:.2f} s for "
            f"{self._what(tokens)}, over max_wait={self.max_wait:g} s",
            provider=self.name, retry_after=delay,
        )

    def _step(self, tokens: float, waited: float) -> float:
        """One ask: 0.0 granted, else seconds to sleep; raises when max_wait would be passed."""
        wait = self.store.acquire(self.key, self._buckets(tokens))
        if wait == 0.0:
            return 0.0
        if self.max_wait is not None and waited + wait > self.max_wait + 1e-9:
            raise self._timeout(tokens, wait)
        return max(_MIN_SLEEP, wait)

    def _granted(self, tokens: float, waited: float) -> float:
        if waited > 0:
            level = logging.INFO if waited >= 1.0 else logging.DEBUG
            limit_logger.log(level, "%swaited %.2f s for %s", self._prefix(), waited,
                             self._what(tokens))
        self._emit("acquire", self.clock.now(), tokens=tokens, waited=waited)
        return waited

    @contextmanager
    def _queued(self, tokens: float, start: float, step: float) -> Iterator[None]:
        """Count this caller among the waiters (``status()["waiting"]``) while it waits."""
        with self._count_lock:
            self._waiting += 1
        try:
            self._emit("wait", start, tokens=tokens, seconds=step)
            yield
        finally:
            with self._count_lock:
                self._waiting -= 1

    # -- acquiring
    def acquire(self, tokens: float = 0) -> float:
        """Wait until one request of ``tokens`` fits in the shared buckets, pay it; seconds
        waited. ``RateLimitTimeout`` (taking nothing) if that would pass ``max_wait``."""
        tokens = self._check_tokens(tokens)
        start = self.clock.now()
        step = self._step(tokens, 0.0)
        if step == 0.0:
            return self._granted(tokens, 0.0)
        with self._queued(tokens, start, step):
            while step:
                self.clock.sleep(step)
                step = self._step(tokens, self.clock.now() - start)
        return self._granted(tokens, self.clock.now() - start)

    async def acquire_async(self, tokens: float = 0) -> float:
        """``acquire`` for coroutines: sleeps with ``await clock.asleep``. The store call itself
        is a short blocking transaction (a few ms under contention)."""
        tokens = self._check_tokens(tokens)
        start = self.clock.now()
        step = self._step(tokens, 0.0)
        if step == 0.0:
            return self._granted(tokens, 0.0)
        with self._queued(tokens, start, step):
            while step:
                await self.clock.asleep(step)
                step = self._step(tokens, self.clock.now() - start)
        return self._granted(tokens, self.clock.now() - start)

    def try_acquire(self, tokens: float = 0) -> bool:
        """Pay one request of ``tokens`` if the shared buckets can now; never waits."""
        tokens = self._check_tokens(tokens)
        if self.store.acquire(self.key, self._buckets(tokens)) == 0.0:
            self._emit("acquire", self.clock.now(), tokens=tokens, waited=0.0)
            return True
        return False

    # -- feedback
    def penalize(self, seconds: float) -> None:
        """Pause every process using this limiter for ``seconds`` (a 429's Retry-After)."""
        seconds = check_real("seconds", seconds)
        remaining = self.store.pause(self.key, seconds)
        limit_logger.info("%spaused for %.2f s (every caller, every process)", self._prefix(),
                          remaining)
        self._emit("penalize", self.clock.now(), seconds=seconds, penalty_remaining=remaining)

    def settle(self, estimated: float, actual: float) -> None:
        """Charge the excess (``actual > estimated``) or give back the unused part."""
        est, act = check_real("estimated", estimated), check_real("actual", actual)
        if self._tok is not None and act != est:
            self.store.adjust(self.key, self._tok, est - act)
            limit_logger.debug("%ssettled %g estimated vs %g actual tokens", self._prefix(),
                               est, act)
        self._emit("settle", self.clock.now(), estimated=est, actual=act)

    def update_from_headers(self, headers: Mapping[str, str], *, in_flight_requests: float = 0,
                            in_flight_tokens: float = 0) -> None:
        """Only LOWER the shared levels to the provider's ``x-ratelimit-remaining-*`` minus
        what is in flight (a header is stale on arrival; see ``RateLimiter``)."""
        h = headers if hasattr(headers, "multi_items") else {
            str(k).lower(): v for k, v in headers.items()}
        in_req = check_real("in_flight_requests", in_flight_requests)
        in_tok = check_real("in_flight_tokens", in_flight_tokens)
        rem_req = header_number(h, "x-ratelimit-remaining-requests",
                                 "anthropic-ratelimit-requests-remaining")
        rem_tok = header_number(h, "x-ratelimit-remaining-tokens",
                                 "anthropic-ratelimit-tokens-remaining")
        for bucket, remaining, in_flight in ((self._req, rem_req, in_req),
                                             (self._tok, rem_tok, in_tok)):
            if bucket is not None and remaining is not None:
                self.store.lower(self.key, bucket, remaining - in_flight)
        self._emit("sync", self.clock.now(), remaining_requests=rem_req,
                   remaining_tokens=rem_tok)

    # -- looking
    @property
    def requests_bucket(self) -> None:
        """No local bucket object: the levels live in the store (see ``status()``)."""
        return None

    tokens_bucket = requests_bucket

    def status(self) -> dict[str, Any]:
        """Shared levels, capacities, limits, this process's waiters, pause left."""
        buckets = [b for b in (self._req, self._tok) if b is not None]
        levels = self.store.levels(self.key, buckets)
        return {
            "name": self.name,
            "store": self.store.url,
            "requests_available": levels.get("requests"),
            "tokens_available": levels.get("tokens"),
            "requests_capacity": None if self._req is None else self._req.capacity,
            "tokens_capacity": None if self._tok is None else self._tok.capacity,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "burst_seconds": self.burst_seconds,
            "max_wait": self.max_wait,
            "waiting": self._waiting,
            "penalty_remaining": levels["pause_remaining"],
        }

    def __repr__(self) -> str:
        return (f"SharedRateLimiter(rpm={self.rpm!r}, tpm={self.tpm!r}, name={self.name!r}, "
                f"store={self.store!r})")


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
