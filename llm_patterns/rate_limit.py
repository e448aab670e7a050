"""Client-side rate limiting for LLM APIs: requests, tokens, input and output tokens per minute.

``TokenBucket`` is one continuous-refill bucket (the course's Task 1). ``RateLimiter`` holds one
bucket per limit (RPM, TPM, and Anthropic's separate ITPM/OTPM) and pays every bucket at once or
none, serves waiters first come, first served (a large request is never starved by later small
ones), pushes back with ``RateLimitTimeout`` when the wait would exceed ``max_wait``, pauses
everyone after a 429 (``penalize``, bounded by ``max_retry_after``), reconciles estimates with
real usage and learns how far off they are (``settle``), and re-syncs with the provider's
``x-ratelimit-*`` / ``anthropic-ratelimit-*`` headers, aged for what was sent since.

The arithmetic is ``machines.bucket`` (the same machine the store-backed ``SharedRateLimiter``
runs); this module is the in-process shell around it: a lock, a FIFO queue of waiters, one wait
flow driven by a sync and an async shell (``_flow``). Time comes only from the injected clock,
so a VirtualClock replays minutes of traffic at once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from . import _validate as v
from ._flow import Block, Flow, arun, run, running_loop
from .clock import Clock, SystemClock
from .errors import RateLimitTimeout
from .events import Observable
from .machines.bucket import (
    INPUT,
    KINDS,
    MAX_PAUSE,
    OUTPUT,
    REQUESTS,
    TOKENS,
    Buckets,
    GrantLog,
    Limit,
    as_demand,
    check_fits,
    limits_for,
)
from .protocols import MAX_COUNT, Demand
from .rate_headers import RateHeaders, parse_rate_headers

__all__ = ["LimiterConfig", "RateLimiter", "TokenBucket"]

logger = logging.getLogger("llm_patterns.rate_limit")

_MIN_SLEEP = 1e-6  # a positive wait always moves the clock, so a wait loop always progresses
_BLOCKED = -1.0  # _look(): the waiter is not at the head of the queue yet
_TIMED_OUT = -2.0  # _look(): the waiter would pass its deadline and has left the queue
MAX_PER_MINUTE = 1e15  # a limit above this is a typo (and would overflow the arithmetic)
MAX_BURST = 1e6  # seconds: a bucket of more than 11.6 days of refill is not a rate limit
_PARAM = {REQUESTS: "rpm", TOKENS: "tpm", INPUT: "itpm", OUTPUT: "otpm"}

# (limiter id, clock time, learned ratio) of the last grant in this thread / task: the request
# whose answer this thread or task settles next. Its time tells how stale the provider's header
# is (``sent_at``), its ratio what the estimate was charged (``settle``). Kept once a limiter
# settles or syncs (the overhead-only path pays nothing for it).
_LAST_GRANT: contextvars.ContextVar[tuple[int, float, float] | None] = contextvars.ContextVar(
    "llm_patterns_last_grant", default=None)


def check_clock(clock: Any) -> Clock:
    """``clock`` if it has ``now()`` and ``sleep()`` (None: a ``SystemClock``); the async
    paths also use its ``asleep()``."""
    if clock is None:
        return SystemClock()
    if not all(callable(getattr(clock, a, None)) for a in ("now", "sleep")):
        raise TypeError(f"clock must be a Clock (with now(), sleep() and asleep()), "
                        f"got {clock!r}")
    return clock  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- TokenBucket


class TokenBucket:
    """A token bucket with continuous refill: holds up to ``capacity``, gains ``refill_rate``/s.

    Starts full. The level is brought up to date from the injected monotonic clock whenever it
    is read, so an idle bucket never overfills. One lock covers refill + check + take, so no
    two threads can spend the same token. (One bucket of the limiters' machine.)
    """

    __slots__ = ("_lock", "_m", "_now", "capacity", "clock", "refill_rate")

    def __init__(self, capacity: float, refill_rate: float, *, clock: Clock | None = None) -> None:
        self.capacity = v.real("capacity", capacity, minimum=0.0, strict_min=True)
        self.refill_rate = v.real("refill_rate", refill_rate, minimum=0.0, strict_min=True)
        self.clock = check_clock(clock)
        self._now = self.clock.now
        self._m = Buckets((Limit(TOKENS, self.refill_rate * 60.0, self.capacity,
                                 self.capacity),), self._now())
        self._lock = threading.Lock()

    def _check(self, n: Any) -> float:
        amount = v.real("n", n, minimum=0.0)
        if amount > self.capacity:
            raise ValueError(
                f"n={n!r} is more than this bucket can ever hold (capacity={self.capacity:g}): "
                "it could never succeed"
            )
        return amount

    def consume(self, n: float = 1) -> bool:
        """Take ``n`` tokens if they are there now; True if taken, False (taking nothing) if not."""
        amount = self._check(n)
        with self._lock:
            return self._m.admit(0.0, amount, 0.0, self._now()) == 0.0

    def wait_time(self, n: float = 1) -> float:
        """Seconds until ``n`` tokens will be there (0.0 if they are there now). Takes nothing."""
        amount = self._check(n)
        with self._lock:
            return self._m.admit(0.0, amount, 0.0, self._now(), pay=False)

    @property
    def available(self) -> float:
        """Tokens in the bucket now (negative while paying off a debt from ``force_take``)."""
        with self._lock:
            self._m.refill(self._now())
            return self._m.levels[0]

    tokens = available  # the name the course's hint uses

    def force_take(self, n: float) -> None:
        """Take ``n`` even if that leaves the bucket negative (a debt later refill pays off)."""
        amount = v.real("n", n, minimum=0.0)
        with self._lock:
            self._m.add([-amount], self._now())

    def give_back(self, n: float) -> None:
        """Return ``n`` unused tokens; the level never goes above ``capacity``."""
        amount = v.real("n", n, minimum=0.0)
        with self._lock:
            self._m.add([amount], self._now())

    def __repr__(self) -> str:
        return (
            f"TokenBucket(capacity={self.capacity:g}, refill_rate={self.refill_rate:g}, "
            f"available={self.available:.6g})"
        )


class BucketView:
    """A read-only look at one of a limiter's buckets (``requests_bucket``, ``tokens_bucket``)."""

    __slots__ = ("_kind", "_limiter", "capacity", "ceiling", "refill_rate")

    def __init__(self, limiter: RateLimiter, limit: Limit) -> None:
        self._limiter, self._kind = limiter, limit.kind
        self.capacity, self.ceiling, self.refill_rate = limit.capacity, limit.ceiling, limit.rate

    @property
    def available(self) -> float:
        return float(self._limiter.status()[f"{self._kind}_available"])

    tokens = available

    def __repr__(self) -> str:
        return (f"BucketView({self._kind}: capacity={self.capacity:g}, "
                f"refill_rate={self.refill_rate:g}/s)")


# --------------------------------------------------------------------------- shared shell


class LimiterConfig(Observable):
    """What ``RateLimiter`` and ``SharedRateLimiter`` share: their arguments, checked once; the
    bucket shape; how a demand is read and checked; the bounded pause; logs, events, errors."""

    _event_source = "rate_limit"

    def _configure(self, *, rpm: Any, tpm: Any, itpm: Any, otpm: Any, burst_seconds: Any,
                   headroom: Any, max_wait: Any, max_retry_after: Any, name: Any) -> None:
        limits = {kind: v.optional(v.real, _PARAM[kind], value, minimum=0.0, strict_min=True,
                                   maximum=MAX_PER_MINUTE)
                  for kind, value in zip(KINDS, (rpm, tpm, itpm, otpm), strict=True)}
        if all(x is None for x in limits.values()):
            raise ValueError(f"{type(self).__name__} needs at least one of rpm, tpm, itpm, otpm "
                             "(per-minute limits), got none")
        self.rpm, self.tpm, self.itpm, self.otpm = (limits[k] for k in KINDS)
        self.burst_seconds = v.optional(v.real, "burst_seconds", burst_seconds, minimum=0.0,
                                        strict_min=True, maximum=MAX_BURST)
        self.headroom = v.real("headroom", headroom, minimum=0.0, maximum=MAX_BURST)
        self.max_wait = v.optional(v.real, "max_wait", max_wait, minimum=0.0)
        self.max_retry_after = v.real("max_retry_after", max_retry_after, minimum=0.0,
                                      maximum=MAX_PAUSE)
        self.name = v.text("name", name, empty=True)
        self.limits = limits_for(limits, self.burst_seconds, self.headroom)
        self._has_tokens = any(lim.kind != REQUESTS for lim in self.limits)
        # the largest token count (one request, all input) every bucket admits
        self._number_max = min([lim.ceiling for lim in self.limits if lim.kind in (TOKENS, INPUT)]
                               or [float("inf")])
        self._ceiling_text = {lim.kind: self._explain(lim) for lim in self.limits}
        self._pause_warned = False
        self._limits_warned: set[tuple[str, float]] = set()
        self._id = id(self)
        # the largest demand every bucket admits, per dimension (a fast fit check)
        ceilings = {lim.kind: lim.ceiling for lim in self.limits}
        inf = float("inf")
        self._max_req = ceilings.get(REQUESTS, inf)
        self._max_in = ceilings.get(INPUT, inf)
        self._max_out = ceilings.get(OUTPUT, inf)
        self._max_tok = ceilings.get(TOKENS, inf)

    def _explain(self, lim: Limit) -> str:
        param = _PARAM[lim.kind]
        if self.burst_seconds is None:
            return (f"{param} {lim.per_minute:g}: one minute's limit; the bucket holds a "
                    f"one-second slice of {lim.capacity:g} and admits a larger request alone, "
                    "when full")
        headroom = f" less headroom {self.headroom:g}" if self.headroom else ""
        return (f"= {param} {lim.per_minute:g} / 60 x burst_seconds {self.burst_seconds:g}"
                f"{headroom}")

    @property
    def burst(self) -> float:
        """Seconds of refill each bucket holds (1.0 with the default one-second slices)."""
        return 1.0 if self.burst_seconds is None else self.burst_seconds

    # -- demands
    def _demand(self, demand: Any, name: str = "demand") -> tuple[float, float, float]:
        """``(requests, input, output)``, checked: ValueError if it could never be admitted."""
        cls = demand.__class__
        if (cls is int or cls is float) and 0 <= demand <= self._number_max:
            return 1.0, float(demand), 0.0  # a token count that fits: the common case
        req, inp, out = as_demand(demand, name)
        if not (req <= self._max_req and inp <= self._max_in and out <= self._max_out
                and inp + out <= self._max_tok):
            check_fits(self.limits, req, inp, out, self._ceiling_text, f"{name}={demand!r}")
        return req, inp, out

    def check(self, demand: Demand | float) -> None:
        """Raise what ``acquire`` would raise for a demand that can never be admitted
        (``ValueError`` naming both numbers; ``TypeError`` for a non-demand), without waiting
        or taking anything: a caller may validate a request once, before trying providers."""
        self._demand(demand)

    def _what(self, req: float, inp: float, out: float) -> str:
        what = "1 request" if req == 1.0 else f"{req:g} requests"
        if not self._has_tokens:
            return what
        if out:
            return f"{what} + {inp:g} input + {out:g} output tokens"
        return f"{what} + {inp:g} tokens"

    def _prefix(self) -> str:
        return f"rate limiter {self.name!r}: " if self.name else ""

    # -- the pause
    def _bound_pause(self, seconds: Any) -> float:
        """``seconds`` checked (a number >= 0) and bounded by ``max_retry_after``: an absurd
        Retry-After (1e12 s from a buggy proxy) is logged once and clamped, never slept."""
        s = v.real("seconds", seconds, minimum=0.0, allow_inf=True)
        if s <= self.max_retry_after:
            return s
        level = logging.DEBUG if self._pause_warned else logging.WARNING
        self._pause_warned = True
        logger.log(level, "%sasked to pause %g s, over max_retry_after=%g s (a bad Retry-After?):"
                   " pausing %g s instead", self._prefix(), s, self.max_retry_after,
                   self.max_retry_after)
        return self.max_retry_after

    # -- logs, events, errors
    def _log_wait(self, waited: float, req: float, inp: float, out: float) -> None:
        if waited > 0.0:
            level = logging.INFO if waited >= 1.0 else logging.DEBUG
            if logger.isEnabledFor(level):
                logger.log(level, "%swaited %.2f s for %s", self._prefix(), waited,
                           self._what(req, inp, out))

    def _timeout(self, delay: float, now: float, req: float, inp: float, out: float,
                 kind: str = "rate limiter") -> RateLimitTimeout:
        what = self._what(req, inp, out)
        logger.warning("%swould wait %.2f s for %s, over max_wait=%g s: refusing "
                       "(RateLimitTimeout)", self._prefix(), delay, what, self.max_wait)
        if self._subscribers:
            self._emit("timeout", now, tokens=inp + out, retry_after=delay,
                       **self._event_levels())
        return RateLimitTimeout(
            f"{kind} {self.name or '(unnamed)'} would wait {delay:.2f} s for {what}, "
            f"over max_wait={self.max_wait:g} s", provider=self.name or None, retry_after=delay)

    def _event_levels(self) -> dict[str, Any]:
        """The levels events carry (none where reading them costs a store round trip)."""
        return {}

    # -- what was granted, for settling and header ageing: this thread's / task's last grant
    # once the limiter has settled or synced (``_remember``), and a log of grants once it has
    # synced (``_grants``). Until then a grant costs nothing extra (benchmarks/overhead.py).
    _remember = False
    _grants: GrantLog | None = None

    def _record(self, demand: tuple[float, float, float], now: float, ratio: float) -> None:
        """A grant at ``now`` charged with ``ratio`` (called when ``_remember``; the caller
        holds the limiter's lock)."""
        if self._grants is not None:
            self._grants.add((now, *demand, ratio))
        _LAST_GRANT.set((self._id, now, ratio))

    def _track(self) -> GrantLog:
        """From now on remember grants and keep their log (the first header sync calls it)."""
        self._remember = True
        if self._grants is None:
            self._grants = GrantLog()
        return self._grants

    def _last_grant(self) -> tuple[float, float] | None:
        """(time, ratio) of this thread's / task's last grant from this limiter."""
        last = _LAST_GRANT.get()
        return None if last is None or last[0] != self._id else (last[1], last[2])

    def _ceilings(self, rh: RateHeaders, sent_at: float | None,
                  now: float) -> dict[str, float]:
        """What the header allows per bucket kind now. The server wrote ``remaining`` when
        the answered request arrived, sent at ``sent_at`` (default: this thread's / task's
        last grant): since then the server refilled for ``now - sent_at`` and was charged what
        this limiter granted after it. Unknown ``sent_at``: the header is taken as current."""
        if sent_at is None:
            last = self._last_grant()
            sent_at = None if last is None else last[0]
        log = self._track()
        if sent_at is None:
            return dict(rh.remaining)
        since = log.since(sent_at, self.limits, now)
        age = max(0.0, now - sent_at)
        by_kind = {lim.kind: (lim.rate * age, granted)
                   for lim, granted in zip(self.limits, since, strict=True)}
        out = {}
        for kind, remaining in rh.remaining.items():
            refill, granted = by_kind.get(kind, (0.0, 0.0))
            out[kind] = remaining + refill - granted
        return out

    def _warn_limits(self, rh: RateHeaders) -> None:
        configured = {lim.kind: lim.per_minute for lim in self.limits}
        for kind, limit in rh.limit.items():
            mine = configured.get(kind)
            if mine is not None and limit < mine and (kind, limit) not in self._limits_warned:
                self._limits_warned.add((kind, limit))
                logger.warning("%sprovider reports a %s limit of %g per minute, below the "
                               "configured %s=%g: lower the limiter's setting", self._prefix(),
                               kind.replace("_", " "), limit, _PARAM[kind], mine)

    def _status(self, levels: Mapping[str, float], waiting: int, penalty: float,
                ratio: float) -> dict[str, Any]:
        caps = {lim.kind: lim.capacity for lim in self.limits}
        out: dict[str, Any] = {"name": self.name}
        for kind in KINDS:
            if kind in (REQUESTS, TOKENS) or kind in caps:
                out[f"{kind}_available"] = levels.get(kind)
        for kind in KINDS:
            if kind in (REQUESTS, TOKENS) or kind in caps:
                out[f"{kind}_capacity"] = caps.get(kind)
        out.update(rpm=self.rpm, tpm=self.tpm)
        if self.itpm is not None or self.otpm is not None:
            out.update(itpm=self.itpm, otpm=self.otpm)
        out.update(burst_seconds=self.burst, max_wait=self.max_wait, waiting=waiting,
                   penalty_remaining=penalty, estimate_ratio=ratio)
        return out

    def __repr__(self) -> str:
        limits = ", ".join(f"{_PARAM[lim.kind]}={lim.per_minute:g}" for lim in self.limits)
        return (f"{type(self).__name__}({limits}, burst_seconds={self.burst_seconds!r}, "
                f"max_wait={self.max_wait!r}, name={self.name!r})")


# --------------------------------------------------------------------------- RateLimiter


class _Waiter:
    """One queued acquire. ``block`` exists only for waiters that queued behind another."""

    __slots__ = ("at", "block", "costs", "deadline", "delay", "demand", "done", "ratio",
                 "start", "woken")

    def __init__(self, demand: tuple[float, float, float], costs: list[float], start: float,
                 deadline: float | None) -> None:
        self.demand = demand
        self.costs = costs
        self.start = start
        self.deadline = deadline
        self.block: Block | None = None
        self.woken = False
        self.done = False  # left the queue (granted, timed out or cancelled)
        self.at = 0.0  # clock time of the grant or the timeout
        self.delay = 0.0  # the wait that made it time out (its retry_after)
        self.ratio = 1.0  # the learned ratio it was charged with


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class RateLimiter(LimiterConfig):
    """Stay under a provider's per-minute limits: requests (``rpm``), tokens (``tpm``), and
    Anthropic's separate input and output tokens (``itpm``, ``otpm``).

    One bucket per configured limit (``machines.bucket``). ``acquire(demand)`` takes a
    ``Demand(input_tokens, output_tokens)`` (or a token count) and pays every bucket at the same
    instant or none: a request waiting for tokens holds no request slot. Input tokens are
    charged at arrival times the learned estimate ratio; output tokens as ``max_tokens``; both
    are settled to the real usage later (``settle``).

    ``burst_seconds`` None (default): each bucket holds a one-second slice of its limit, so a
    cold client never sends more in a second than a provider enforcing its per-minute limits in
    one-second slices accepts (OpenAI documents 60,000 RPM enforced as 1,000 per second); a
    request bigger than a slice (up to a minute's limit) passes alone when its bucket is full.
    The price: no opening burst of a whole minute's budget (``benchmarks/burst_default.py``
    measures it). A number: buckets of exactly that many seconds of refill, nothing larger ever
    admitted (``ValueError`` naming both numbers).

    Waiters form one first-come-first-served queue shared by threads and coroutines; only the
    head may pay, so a big request is never overtaken by later small ones, and a newcomer never
    jumps a non-empty queue (not even ``try_acquire``). ``max_wait``: when the projected wait
    (the queue ahead included) is longer, ``acquire`` raises ``RateLimitTimeout`` at once with
    ``retry_after``, taking nothing; a queued waiter whose wait grows while it waits (a
    ``penalize``, a header sync) leaves the same way when it reaches the head.

    ``penalize(seconds)`` pauses every caller, at most ``max_retry_after`` (default 120 s, the
    OpenAI SDK's cap): an absurd Retry-After is logged once and clamped. ``update_from_headers``
    only ever LOWERS the levels to what the provider reports, less what this limiter granted
    after the answered request was sent (a header is stale on arrival). ``headroom``: seconds
    of refill held back from each bucket for requests in transit (see the benchmarks).
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        itpm: float | None = None,
        otpm: float | None = None,
        clock: Clock | None = None,
        max_wait: float | None = None,
        burst_seconds: float | None = None,
        name: str = "",
        headroom: float = 0.0,
        max_retry_after: float = 120.0,
    ) -> None:
        self._configure(rpm=rpm, tpm=tpm, itpm=itpm, otpm=otpm, burst_seconds=burst_seconds,
                        headroom=headroom, max_wait=max_wait, max_retry_after=max_retry_after,
                        name=name)
        self.clock: Clock = check_clock(clock)
        self._now = self.clock.now
        self._lock = threading.Lock()
        self._m = Buckets(self.limits, self._now())
        self._queue: deque[_Waiter] = deque()
        # the projection (time, levels) just after the last queued waiter is served; None
        # when it must be recomputed from the queue
        self._tail: tuple[float, list[float]] | None = None
        self._by_kind = {lim.kind: BucketView(self, lim) for lim in self.limits}

    @property
    def requests_bucket(self) -> BucketView | None:
        """The RPM bucket (None without ``rpm``): capacity, refill_rate, available."""
        return self._by_kind.get(REQUESTS)

    @property
    def tokens_bucket(self) -> BucketView | None:
        """The TPM bucket (None without ``tpm``)."""
        return self._by_kind.get(TOKENS)

    def bucket(self, kind: str) -> BucketView | None:
        """The bucket counting ``kind`` (requests, tokens, input_tokens, output_tokens)."""
        return self._by_kind.get(v.choice("kind", kind, KINDS))

    # -- bookkeeping (all with self._lock held) -----------------------------------------------
    def _levels(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {"requests_available": None, "tokens_available": None}
        for kind, level in self._m.levels_by_kind().items():
            out[f"{kind}_available"] = level
        return out

    def _event_levels(self) -> dict[str, Any]:
        with self._lock:
            return self._levels()

    def _project(self, now: float, costs: list[float]) -> tuple[float, tuple[float, list[float]]]:
        """(projected wait for a newcomer behind the whole queue, the new tail)."""
        m = self._m
        tail = self._tail if self._queue else None
        if tail is None:
            tail = m.start(now)
            for waiter in self._queue:
                tail = m.serve(tail, waiter.costs)
        else:
            tail = m.catch_up(tail, now)
        tail = m.serve(tail, costs)
        return max(0.0, tail[0] - now), tail

    def _arrive(self, demand: Any, sync: bool | None) -> _Waiter | None:
        """A newcomer: granted now (None), or queued (its waiter). ``sync`` None: never
        queue (try_acquire: a refusal raises ``_Refused``)."""
        cls = demand.__class__
        if (cls is int or cls is float) and 0 <= demand <= self._number_max:
            req, inp, out = 1.0, demand, 0.0  # a token count that fits: the common case
        else:
            req, inp, out = self._demand(demand)
        with self._lock:
            now = self._now()
            if not self._queue and self._m.admit(req, inp, out, now) == 0.0:
                if self._remember:
                    self._record((req, inp, out), now, self._m.ratio)
                if not self._subscribers:
                    return None
                levels = self._levels()
                w = None
            elif sync is None:
                raise _Refused
            else:
                costs = self._m.costs(req, inp, out)
                delay, tail = self._project(now, costs)
                max_wait = self.max_wait
                if max_wait is not None and delay > max_wait + 1e-9:
                    w = None
                    levels = None
                else:
                    w = _Waiter((req, inp, out), costs, now,
                                None if max_wait is None else now + max_wait)
                    if self._queue:
                        w.block = (Block(lock=threading.Lock()) if sync else
                                   Block(fut=asyncio.get_running_loop().create_future()))
                        if sync:
                            w.block.lock.acquire()  # type: ignore[union-attr]
                    self._queue.append(w)
                    self._tail = tail
                    waiting = len(self._queue)
        if w is None:
            if levels is None:
                raise self._timeout(delay, now, req, inp, out)
            self._emit("acquire", now, tokens=inp + out, waited=0.0, **levels)
            return None
        if self._subscribers:
            with self._lock:
                levels = self._levels()
            self._emit("wait", now, tokens=inp + out, seconds=delay, waiting=waiting, **levels)
        return w

    def _look(self, w: _Waiter) -> float:
        """One look for waiter ``w``: 0.0 granted, _BLOCKED, _TIMED_OUT, or seconds to sleep."""
        queue = self._queue
        if queue[0] is not w:
            return _BLOCKED
        now = self._now()
        delay = self._m.admit(*w.demand, now)
        w.at = now
        if delay == 0.0:
            if self._remember:
                w.ratio = self._m.ratio
                self._record(w.demand, now, w.ratio)
            queue.popleft()
            w.done = True
            if queue:
                self._wake(queue[0])
            else:
                self._tail = None
            return 0.0
        if w.deadline is not None and now + delay > w.deadline + 1e-9:
            w.delay = delay
            self._drop(w)
            return _TIMED_OUT
        return max(_MIN_SLEEP, delay)

    def _drop(self, w: _Waiter) -> None:
        """Take ``w`` out of the queue without paying (timeout, cancellation, interrupt)."""
        queue = self._queue
        if queue and queue[0] is w:
            queue.popleft()
            if queue:
                self._wake(queue[0])
        else:
            queue.remove(w)
        w.done = True
        self._tail = None

    def _wake(self, w: _Waiter) -> None:
        """``w`` just reached the head of the queue: let it look again."""
        if w.woken:
            return
        w.woken = True
        block = w.block
        if block is None:
            return
        fut = block.fut
        if fut is not None:
            loop = fut.get_loop()
            if running_loop() is loop:
                _resolve(fut)
            else:
                try:
                    loop.call_soon_threadsafe(_resolve, fut)
                except RuntimeError:  # its loop is closed: nobody is waiting any more
                    pass
        elif block.lock is not None:
            block.lock.release()

    # -- acquiring: one flow, two shells -------------------------------------------------------
    def _wait(self, w: _Waiter) -> Flow[float]:
        """Wait in the queue until ``w`` is granted: yields sleeps and blocks; the wait."""
        try:
            while True:
                with self._lock:
                    step = self._look(w)
                if step == 0.0:
                    break
                if step == _BLOCKED:
                    yield w.block  # type: ignore[misc]  # set for every non-head waiter
                elif step == _TIMED_OUT:
                    raise self._timeout(w.delay, w.at, *w.demand)
                else:
                    yield step
        finally:
            if not w.done:
                with self._lock:
                    if not w.done:
                        self._drop(w)
        if self._remember:  # in the caller's context (the flow runs there)
            _LAST_GRANT.set((self._id, w.at, w.ratio))
        waited = w.at - w.start
        self._log_wait(waited, *w.demand)
        if self._subscribers:
            with self._lock:
                levels = self._levels()
            self._emit("acquire", w.at, tokens=w.demand[1] + w.demand[2], waited=waited,
                       **levels)
        return waited

    def acquire(self, demand: Demand | float = 0) -> float:
        """Wait (``clock.sleep``) until the demand fits every bucket, pay it; seconds waited.

        ``demand``: a ``Demand(input_tokens, output_tokens)``, or a token count. Raises
        ``ValueError`` if it can never fit, ``RateLimitTimeout`` (taking nothing) if the wait
        would pass ``max_wait``. From inside a running event loop use ``acquire_async``.
        """
        w = self._arrive(demand, True)
        return 0.0 if w is None else run(self._wait(w), self.clock)

    async def acquire_async(self, demand: Demand | float = 0) -> float:
        """``acquire`` for coroutines: waits with ``await clock.asleep`` and never blocks the
        event loop. Cancelling it takes nothing and lets the next waiter move up."""
        w = self._arrive(demand, False)
        return 0.0 if w is None else await arun(self._wait(w), self.clock)

    def try_acquire(self, demand: Demand | float = 0) -> bool:
        """Pay the demand if every bucket can now and nobody is queued; never waits. False
        takes nothing."""
        try:
            self._arrive(demand, None)
        except _Refused:
            return False
        return True

    # -- feedback from the provider ------------------------------------------------------------
    def penalize(self, seconds: float) -> None:
        """Let nobody through until ``seconds`` from now (a 429's Retry-After), at most
        ``max_retry_after``. An existing longer pause is kept."""
        seconds = self._bound_pause(seconds)
        with self._lock:
            now = self._now()
            remaining = self._m.pause(seconds, now)
            self._tail = None
            levels = self._levels() if self._subscribers else {}
        logger.info("%spaused for %.2f s (every caller waits)", self._prefix(), remaining)
        self._emit("penalize", now, seconds=seconds, penalty_remaining=remaining, **levels)

    def settle(self, estimated: Demand | float, actual: Demand | float) -> None:
        """Reconcile a call's estimate (what ``acquire`` was given) with its real usage: each
        bucket is charged the excess (the level may go negative: a debt refill pays off) or
        given back the unused part (never above capacity); the input-token estimate ratio is
        learned from it. Numbers are token totals (all counted as input)."""
        # token counts, the common case, are read inline (a call each costs 8% of a settle)
        e: Any = estimated
        a: Any = actual
        if (e.__class__ is int and a.__class__ is int
                and 0 <= e <= MAX_COUNT and 0 <= a <= MAX_COUNT):
            est: tuple[float, float, float] = (1.0, e, 0.0)
            act: tuple[float, float, float] = (1.0, a, 0.0)
        else:
            est, act = as_demand(estimated, "estimated"), as_demand(actual, "actual")
        last = _LAST_GRANT.get()
        ratio = last[2] if last is not None and last[0] == self._id else 1.0
        with self._lock:
            now = self._now()
            self._remember = True
            self._m.settle(est, act, now, ratio)
            self._tail = None
            levels = self._levels() if self._subscribers else None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%ssettled %s estimated vs %s actual (ratio now %.3f)", self._prefix(),
                         self._what(*est), self._what(*act), self._m.ratio)
        if levels is not None:
            self._emit("settle", now, estimated=est[1] + est[2], actual=act[1] + act[2],
                       **levels)

    def update_from_headers(self, headers: Mapping[str, str], *,
                            sent_at: float | None = None) -> None:
        """Re-sync with the provider's ``x-ratelimit-remaining-*`` (OpenAI) and
        ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-remaining``.

        Only lowers: each level becomes ``min(level, remaining - granted since)``, where
        "granted since" is what this limiter granted after the answered request was sent
        (``sent_at``, a clock time; by default the time of this thread's / task's last grant
        from this limiter). A limit header lower than configured is logged once; resets go
        into the "sync" event. ``TypeError`` if ``headers`` is not a mapping."""
        rh = parse_rate_headers(headers)
        sent = v.optional(v.real, "sent_at", sent_at)
        with self._lock:
            now = self._now()
            lowered = self._m.lower(self._ceilings(rh, sent, now), now)
            if lowered:
                self._tail = None
            levels = self._levels() if self._subscribers else {}
        for kind, old, new in lowered:
            logger.debug("%ssynced %s from headers: %.6g -> %.6g", self._prefix(), kind, old,
                         new)
        self._warn_limits(rh)
        if self._subscribers:
            self._emit("sync", now, **rh.event_data(), **levels)

    # the async twins of the bookkeeping: in process nothing blocks, they run the sync method
    async def asettle(self, estimated: Demand | float, actual: Demand | float) -> None:
        self.settle(estimated, actual)

    async def apenalize(self, seconds: float) -> None:
        self.penalize(seconds)

    async def aupdate_from_headers(self, headers: Mapping[str, str], *,
                                   sent_at: float | None = None) -> None:
        self.update_from_headers(headers, sent_at=sent_at)

    # -- looking ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A snapshot for dashboards: levels, capacities, limits, queue length, pause left,
        the learned estimate ratio."""
        with self._lock:
            now = self._now()
            self._m.refill(now)
            levels = self._m.levels_by_kind()
            waiting = len(self._queue)
            penalty = max(0.0, self._m.pause_until - now)
            ratio = self._m.ratio
        return self._status(levels, waiting, penalty, ratio)


class _Refused(Exception):
    """try_acquire: the demand cannot be paid now (internal)."""

