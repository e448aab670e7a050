"""Client-side rate limiting for LLM APIs: requests per minute AND tokens per minute.

``TokenBucket`` is one continuous-refill bucket. ``RateLimiter`` holds one bucket per limit
(RPM, TPM) and pays every bucket at once or none, serves waiters first come, first served (a
large request is never starved by later small ones), pushes back with ``RateLimitTimeout`` when
the wait would exceed ``max_wait``, pauses everyone after a 429 (``penalize``), reconciles
estimates with real usage (``settle``) and re-syncs with the provider's ``x-ratelimit-*`` headers.

Time comes only from the injected clock, so a VirtualClock replays minutes of traffic at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
import re
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

from .clock import Clock, SystemClock
from .errors import RateLimitTimeout
from .events import Observable

__all__ = ["RateLimiter", "TokenBucket"]

logger = logging.getLogger("llm_patterns.rate_limit")

_REL_EPS = 1e-9  # float slack, as a fraction of capacity: 0.999999999 tokens counts as 1
_MIN_SLEEP = 1e-6  # a positive wait always moves the clock, so a wait loop always progresses
_BLOCKED = -1.0  # _look(): the waiter is not at the head of the queue yet
_TIMED_OUT = -2.0  # _look(): the waiter would pass its deadline and has left the queue


def check_real(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a finite float >= 0 (> 0 when ``positive``), or a TypeError/ValueError."""
    cls = value.__class__
    if (cls is int or cls is float) and 0 <= value < math.inf and (value or not positive):
        return float(value)  # the common case, checked in one line
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        expected = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return v


class TokenBucket:
    """A token bucket with continuous refill: holds up to ``capacity``, gains ``refill_rate``/s.

    Starts full. The level is brought up to date from the injected monotonic clock whenever it
    is read, so an idle bucket never overfills. One lock covers refill + check + take, so no
    two threads can spend the same token.
    """

    __slots__ = ("_clock", "_eps", "_last", "_lock", "_now", "_tokens", "capacity", "refill_rate")

    def __init__(self, capacity: float, refill_rate: float, *, clock: Clock | None = None) -> None:
        self.capacity = check_real("capacity", capacity, positive=True)
        self.refill_rate = check_real("refill_rate", refill_rate, positive=True)
        self._clock = clock if clock is not None else SystemClock()
        self._now = self._clock.now
        self._tokens = self.capacity
        self._last = self._now()
        self._eps = self.capacity * _REL_EPS
        self._lock = threading.Lock()  # a RateLimiter swaps in its own lock for its buckets

    # -- internals (lock held) ------------------------------------------------------------
    def _refill(self, now: float) -> None:
        if now > self._last:
            level = self._tokens + (now - self._last) * self.refill_rate
            self._tokens = min(self.capacity, level)
            self._last = now

    def _check(self, n: Any) -> float:
        amount = check_real("n", n)
        if amount > self.capacity:
            raise ValueError(
                f"n={n!r} is more than this bucket can ever hold (capacity={self.capacity:g}): "
                "it could never succeed"
            )
        return amount

    # -- public -----------------------------------------------------------------------------
    def consume(self, n: float = 1) -> bool:
        """Take ``n`` tokens if they are there now; True if taken, False (taking nothing) if not."""
        n = self._check(n)
        with self._lock:
            self._refill(self._now())
            if self._tokens + self._eps >= n:
                self._tokens -= n
                return True
            return False

    def wait_time(self, n: float = 1) -> float:
        """Seconds until ``n`` tokens will be there (0.0 if they are there now). Takes nothing."""
        n = self._check(n)
        with self._lock:
            self._refill(self._now())
            deficit = n - self._tokens
            return deficit / self.refill_rate if deficit > self._eps else 0.0

    @property
    def available(self) -> float:
        """Tokens in the bucket now (negative while paying off a debt from ``force_take``)."""
        with self._lock:
            self._refill(self._now())
            return self._tokens

    tokens = available  # the name the course's hint uses

    def force_take(self, n: float) -> None:
        """Take ``n`` even if that leaves the bucket negative (a debt later refill pays off)."""
        n = check_real("n", n)
        with self._lock:
            self._refill(self._now())
            self._tokens -= n

    def give_back(self, n: float) -> None:
        """Return ``n`` unused tokens; the level never goes above ``capacity``."""
        n = check_real("n", n)
        with self._lock:
            self._refill(self._now())
            self._tokens = min(self.capacity, self._tokens + n)

    def __repr__(self) -> str:
        return (
            f"TokenBucket(capacity={self.capacity:g}, refill_rate={self.refill_rate:g}, "
            f"available={self.available:.6g})"
        )


class _Waiter:
    """One queued acquire. ``lock``/``fut`` exist only for waiters that queued behind another."""

    __slots__ = ("at", "deadline", "delay", "done", "fut", "lock", "tokens", "woken")

    def __init__(self, tokens: float, deadline: float | None) -> None:
        self.tokens = tokens
        self.deadline = deadline
        self.lock: threading.Lock | None = None
        self.fut: asyncio.Future[None] | None = None
        self.woken = False
        self.done = False  # left the queue (granted, timed out or cancelled)
        self.at = 0.0  # clock time of the grant or the timeout
        self.delay = 0.0  # the wait that made it time out (its retry_after)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SIMPLE_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s)")


def _parse_duration(text: str) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s", "0.5") as seconds."""
    text = text.strip()
    if not text.endswith(("s", "m", "h")):  # no unit: a plain number of seconds
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) and value >= 0 else None
    simple = _SIMPLE_DURATION.fullmatch(text)  # the common "1.5s" / "20ms"
    if simple is not None:
        number, unit = float(simple.group(1)), simple.group(2)
        return number * 0.001 if unit == "ms" else number
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        number, unit = float(match.group(1)), match.group(2)
        total += number * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[unit]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


# per limit: its limit and reset headers, and their keys in the "sync" event
_REQUEST_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-reset-requests", "limit_requests",
                    "reset_requests")
_TOKEN_HEADERS = ("x-ratelimit-limit-tokens", "x-ratelimit-reset-tokens", "limit_tokens",
                  "reset_tokens")


def header_number(headers: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(str(raw).strip())
        except ValueError:
            logger.debug("ignoring unreadable header %s=%r", name, raw)
            continue
        if math.isfinite(value) and value >= 0:
            return value
    return None


class RateLimiter(Observable):
    """Stay under a provider's requests-per-minute and tokens-per-minute limits.

    One ``TokenBucket`` per configured limit: refill ``limit/60`` per second, capacity
    ``burst_seconds`` of refill (60 s: the whole minute's budget may go at once; 1 s for
    providers that enforce per second). A request costs 1 from the RPM bucket and ``tokens``
    from the TPM bucket, paid to all buckets at the same instant or to none: a request waiting
    for tokens holds no request slot.

    Waiters form one first-come-first-served queue shared by threads and coroutines; only the
    head may pay, so a big request is never overtaken by later small ones, and a newcomer never
    jumps a non-empty queue (not even ``try_acquire``). The head sleeps on the clock until the
    buckets can pay; the rest wait to be woken (a thread lock or a future; no lock is ever held
    across a sleep or an await).

    ``max_wait``: when the projected wait (the queue ahead included) is longer, ``acquire``
    raises ``RateLimitTimeout`` at once with ``retry_after``, taking nothing. A queued waiter
    whose wait grows while it waits (a ``penalize``, a header sync) is checked again when it
    reaches the head and leaves the same way if its ``max_wait`` would now be passed.

    ``update_from_headers`` only ever LOWERS the local levels to what the server reports, never
    raises them: a header is stale on arrival (requests we sent after the server wrote it are
    missing from it), so trusting a higher number would spend budget twice and cause 429s,
    while a lower number means someone else (another process sharing the key, an estimate that
    was too low) spent it. Refill alone brings the level back up.

    ``headroom``: seconds of refill held back from each bucket's capacity (default 0: capacity
    is exactly ``burst_seconds`` of refill). The limiter pays when it admits a request, the
    server charges when the request arrives a little later; while a burst is in transit the
    server's bucket sits full (refill is lost at the cap) but ours already refills, so ours
    gets ahead by up to ``refill x transit time`` and can admit a request the server refuses
    with a 429. Holding back ``headroom`` seconds of capacity covers requests in transit for
    that long. It only shrinks the opening burst (the sustained rate is unchanged): 0.05 s
    with ``burst_seconds=1`` costs 5% of the first second's burst and removes the opening
    429s an in-process or LAN provider shows; use the one-way latency for a remote one.
    """

    _event_source = "rate_limit"

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Clock | None = None,
        max_wait: float | None = None,
        burst_seconds: float = 60.0,
        name: str = "",
        headroom: float = 0.0,
    ) -> None:
        if rpm is None and tpm is None:
            raise ValueError("RateLimiter needs rpm or tpm (or both), got rpm=None and tpm=None")
        self.burst_seconds = check_real("burst_seconds", burst_seconds, positive=True)
        self.headroom = check_real("headroom", headroom)
        if self.headroom >= self.burst_seconds:
            raise ValueError(
                f"headroom={headroom!r} must be less than burst_seconds={burst_seconds!r}: the "
                "buckets would hold nothing"
            )
        self.max_wait = None if max_wait is None else check_real("max_wait", max_wait)
        self.name = str(name)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._now = self.clock.now
        self._lock = threading.Lock()
        self.rpm = None if rpm is None else check_real("rpm", rpm, positive=True)
        self.tpm = None if tpm is None else check_real("tpm", tpm, positive=True)
        self._req = self._bucket(self.rpm)
        self._tok = self._bucket(self.tpm)
        if self._req is not None and self._req.capacity < 1.0:
            raise ValueError(
                f"rpm={rpm!r} with burst_seconds={burst_seconds!r} gives a request bucket of "
                f"{self._req.capacity:g} < 1 request, so no request could ever pass; expected "
                f"burst_seconds >= {60.0 / self.rpm + self.headroom:g}"
            )
        self._tok_cap = math.inf if self._tok is None else self._tok.capacity
        self._queue: deque[_Waiter] = deque()
        # projected (time, request level, token level) just after the last queued waiter is
        # served; None when it must be recomputed from the queue
        self._tail: tuple[float, float, float] | None = None
        self._penalty_until = -math.inf
        self._limits_warned: set[tuple[str, float]] = set()

    def _bucket(self, per_minute: float | None) -> TokenBucket | None:
        if per_minute is None:
            return None
        rate = per_minute / 60.0
        bucket = TokenBucket(rate * (self.burst_seconds - self.headroom), rate, clock=self.clock)
        bucket._lock = self._lock  # one lock for the limiter and both buckets
        return bucket

    @property
    def requests_bucket(self) -> TokenBucket | None:
        """The RPM bucket (None without ``rpm``); read it, don't spend from it directly."""
        return self._req

    @property
    def tokens_bucket(self) -> TokenBucket | None:
        """The TPM bucket (None without ``tpm``); read it, don't spend from it directly."""
        return self._tok

    # -- bookkeeping (all with self._lock held) -----------------------------------------------
    def _check_tokens(self, tokens: Any) -> float:
        amount = check_real("tokens", tokens)
        if amount > self._tok_cap:
            raise ValueError(
                f"tokens={tokens!r} is more than the token bucket can ever hold "
                f"({self._tok_cap:g} = tpm {self.tpm:g} / 60 x burst_seconds "
                f"{self.burst_seconds:g}{f' less headroom {self.headroom:g}' if self.headroom else ''}"
                f"): the request could never be served; expected at most "
                f"{self._tok_cap:g} (split the request, or raise tpm or burst_seconds)"
            )
        return amount

    def _delay(self, now: float, tokens: float) -> float:
        """Seconds until every bucket can pay (0.0: now). Brings both buckets up to ``now``.

        The hot path of every admission: the buckets' refill is written out here rather than
        called (``TokenBucket._refill``, the same arithmetic)."""
        delay = self._penalty_until - now
        if delay < 0.0:  # noqa: PLR1730 - a test, not a max() call, on the hot path
            delay = 0.0
        bucket = self._req
        if bucket is not None:
            if now > bucket._last:
                level = bucket._tokens + (now - bucket._last) * bucket.refill_rate
                bucket._tokens = level if level < bucket.capacity else bucket.capacity  # noqa: FURB136
                bucket._last = now
            deficit = 1.0 - bucket._tokens
            if deficit > bucket._eps:
                deficit /= bucket.refill_rate
                delay = max(delay, deficit)
        bucket = self._tok
        if bucket is not None:
            if now > bucket._last:
                level = bucket._tokens + (now - bucket._last) * bucket.refill_rate
                bucket._tokens = level if level < bucket.capacity else bucket.capacity  # noqa: FURB136
                bucket._last = now
            deficit = tokens - bucket._tokens
            if deficit > bucket._eps:
                deficit /= bucket.refill_rate
                delay = max(delay, deficit)
        return delay

    def _pay(self, tokens: float) -> None:
        if self._req is not None:
            self._req._tokens -= 1.0
        if self._tok is not None:
            self._tok._tokens -= tokens

    def _levels(self) -> dict[str, float | None]:
        req, tok = self._req, self._tok
        return {
            "requests_available": None if req is None else req._tokens,
            "tokens_available": None if tok is None else tok._tokens,
        }

    def _serve(
        self, state: tuple[float, float, float], tokens: float
    ) -> tuple[float, float, float]:
        """Projected state after one more waiter of ``tokens`` is served, from ``state``."""
        t, lr, lt = state
        dt = 0.0
        req, tok = self._req, self._tok
        if req is not None and 1.0 - lr > req._eps:
            dt = (1.0 - lr) / req.refill_rate
        if tok is not None and tokens - lt > tok._eps:
            dt = max(dt, (tokens - lt) / tok.refill_rate)
        if dt > 0.0:
            t += dt
            if req is not None:
                lr = min(req.capacity, lr + dt * req.refill_rate)
            if tok is not None:
                lt = min(tok.capacity, lt + dt * tok.refill_rate)
        return t, lr - 1.0, lt - tokens

    def _project(self, now: float, tokens: float) -> tuple[float, tuple[float, float, float]]:
        """(projected wait for a newcomer behind the whole queue, the new tail state)."""
        state = self._tail if self._queue else None
        if state is None:  # start from the levels now, shifted past any penalty
            self._delay(now, 0.0)  # refill both buckets to now
            start = max(now, self._penalty_until)
            req, tok = self._req, self._tok
            state = (
                start,
                0.0
                if req is None
                else min(req.capacity, req._tokens + (start - now) * req.refill_rate),
                0.0
                if tok is None
                else min(tok.capacity, tok._tokens + (start - now) * tok.refill_rate),
            )
            for waiter in self._queue:
                state = self._serve(state, waiter.tokens)
        elif state[0] < now:  # the queue fell behind its projection: refill to now
            t, lr, lt = state
            req, tok = self._req, self._tok
            state = (
                now,
                lr if req is None else min(req.capacity, lr + (now - t) * req.refill_rate),
                lt if tok is None else min(tok.capacity, lt + (now - t) * tok.refill_rate),
            )
        tail = self._serve(state, tokens)
        return max(0.0, tail[0] - now), tail

    def _enqueue(self, now: float, tokens: float) -> tuple[_Waiter | None, float]:
        """Queue a newcomer (buckets already refilled to ``now``): (waiter, projected wait),
        or (None, projected wait) when that wait is over ``max_wait`` (nothing queued)."""
        delay, tail = self._project(now, tokens)
        max_wait = self.max_wait
        if max_wait is not None and delay > max_wait + 1e-9:
            return None, delay
        waiter = _Waiter(tokens, None if max_wait is None else now + max_wait)
        self._queue.append(waiter)
        self._tail = tail
        return waiter, delay

    def _look(self, w: _Waiter) -> float:
        """One look for waiter ``w``: 0.0 granted, _BLOCKED, _TIMED_OUT, or seconds to sleep."""
        queue = self._queue
        if queue[0] is not w:
            return _BLOCKED
        now = self._now()
        delay = self._delay(now, w.tokens)
        w.at = now
        if delay == 0.0:
            self._pay(w.tokens)
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
        fut = w.fut
        if fut is not None:
            loop = fut.get_loop()
            if asyncio._get_running_loop() is loop:
                _resolve(fut)
            else:
                try:
                    loop.call_soon_threadsafe(_resolve, fut)
                except RuntimeError:  # its loop is closed: nobody is waiting any more
                    pass
        elif w.lock is not None:
            w.lock.release()

    # -- events and logs (called without the lock) ---------------------------------------------
    def _emit_locked_levels(self, kind: str, now: float, **data: Any) -> None:
        if self._subscribers:
            with self._lock:
                levels = self._levels()
            self._emit(kind, now, **data, **levels)

    def _what(self, tokens: float) -> str:
        return "1 request" if self._tok is None else f"1 request + {tokens:g} tokens"

    def _granted(self, tokens: float, start: float, w: _Waiter) -> float:
        waited = w.at - start
        if waited > 0.0:
            level = logging.INFO if waited >= 1.0 else logging.DEBUG
            if logger.isEnabledFor(level):
                logger.log(
                    level, "%swaited %.2f s for %s", self._prefix(), waited, self._what(tokens)
                )
        if self._subscribers:
            self._emit_locked_levels("acquire", w.at, tokens=tokens, waited=waited)
        return waited

    def _timeout(self, tokens: float, delay: float, now: float) -> RateLimitTimeout:
        what = self._what(tokens)
        logger.warning(
            "%swould wait %.2f s for %s, over max_wait=%g s: refusing (RateLimitTimeout)",
            self._prefix(),
            delay,
            what,
            self.max_wait,
        )
        self._emit_locked_levels("timeout", now, tokens=tokens, retry_after=delay)
        return RateLimitTimeout(
            f"rate limiter {self.name or '(unnamed)'} would wait {delay:.2f} s for {what}, "
            f"over max_wait={self.max_wait:g} s",
            provider=self.name or None,
            retry_after=delay,
        )

    def _prefix(self) -> str:
        return f"rate limiter {self.name!r}: " if self.name else ""

    # -- acquiring -----------------------------------------------------------------------------
    def acquire(self, tokens: float = 0) -> float:
        """Wait (``clock.sleep``) until one request of ``tokens`` fits, pay it; seconds waited.

        Raises ``ValueError`` if ``tokens`` can never fit, ``RateLimitTimeout`` (taking nothing)
        if the wait would pass ``max_wait``. Don't call it from inside a running event loop:
        use ``acquire_async`` there.
        """
        if tokens.__class__ is not int or tokens < 0 or tokens > self._tok_cap:
            tokens = self._check_tokens(tokens)
        with self._lock:
            now = self._now()
            if not self._queue and self._delay(now, tokens) == 0.0:
                self._pay(tokens)
                if not self._subscribers:
                    return 0.0
                levels = self._levels()
            else:
                levels = None
                w, delay = self._enqueue(now, tokens)
                if w is not None and len(self._queue) > 1:
                    w.lock = threading.Lock()
                    w.lock.acquire()
                waiting = len(self._queue)
        if levels is not None:
            self._emit("acquire", now, tokens=tokens, waited=0.0, **levels)
            return 0.0
        if w is None:
            raise self._timeout(tokens, delay, now)
        self._emit_locked_levels("wait", now, tokens=tokens, seconds=delay, waiting=waiting)
        try:
            while True:
                with self._lock:
                    step = self._look(w)
                if step == 0.0:
                    break
                if step == _BLOCKED:
                    w.lock.acquire()  # type: ignore[union-attr]  # released when w is head
                elif step == _TIMED_OUT:
                    raise self._timeout(tokens, w.delay, w.at)
                else:
                    self.clock.sleep(step)
        finally:
            if not w.done:
                with self._lock:
                    if not w.done:
                        self._drop(w)
        return self._granted(tokens, now, w)

    async def acquire_async(self, tokens: float = 0) -> float:
        """``acquire`` for coroutines: waits with ``await clock.asleep`` and never blocks the
        event loop. Cancelling it takes nothing and lets the next waiter move up."""
        if tokens.__class__ is not int or tokens < 0 or tokens > self._tok_cap:
            tokens = self._check_tokens(tokens)
        with self._lock:
            now = self._now()
            if not self._queue and self._delay(now, tokens) == 0.0:
                self._pay(tokens)
                if not self._subscribers:
                    return 0.0
                levels = self._levels()
            else:
                levels = None
                w, delay = self._enqueue(now, tokens)
                if w is not None and len(self._queue) > 1:
                    w.fut = asyncio.get_running_loop().create_future()
                waiting = len(self._queue)
        if levels is not None:
            self._emit("acquire", now, tokens=tokens, waited=0.0, **levels)
            return 0.0
        if w is None:
            raise self._timeout(tokens, delay, now)
        self._emit_locked_levels("wait", now, tokens=tokens, seconds=delay, waiting=waiting)
        try:
            while True:
                with self._lock:
                    step = self._look(w)
                if step == 0.0:
                    break
                if step == _BLOCKED:
                    await w.fut  # type: ignore[misc]  # resolved when w reaches the head
                elif step == _TIMED_OUT:
                    raise self._timeout(tokens, w.delay, w.at)
                else:
                    await self.clock.asleep(step)
        finally:
            if not w.done:
                with self._lock:
                    if not w.done:
                        self._drop(w)
        return self._granted(tokens, now, w)

    def try_acquire(self, tokens: float = 0) -> bool:
        """Pay one request of ``tokens`` if every bucket can now and nobody is queued; never
        waits. False takes nothing."""
        if tokens.__class__ is not int or tokens < 0 or tokens > self._tok_cap:
            tokens = self._check_tokens(tokens)
        with self._lock:
            if self._queue:
                return False
            now = self._now()
            if self._delay(now, tokens) != 0.0:
                return False
            self._pay(tokens)
            if not self._subscribers:
                return True
            levels = self._levels()
        self._emit("acquire", now, tokens=tokens, waited=0.0, **levels)
        return True

    # -- feedback from the provider ------------------------------------------------------------
    def penalize(self, seconds: float) -> None:
        """Let nobody through until ``seconds`` from now (after a 429's Retry-After). An
        existing longer pause is kept."""
        seconds = check_real("seconds", seconds)
        with self._lock:
            now = self._now()
            until = now + seconds
            if until > self._penalty_until:
                self._penalty_until = until
                self._tail = None
            remaining = self._penalty_until - now
        logger.info("%spaused for %.2f s (every caller waits)", self._prefix(), remaining)
        self._emit_locked_levels("penalize", now, seconds=seconds, penalty_remaining=remaining)

    def settle(self, estimated: float, actual: float) -> None:
        """Reconcile a request's token estimate with its real usage: charge the excess when
        ``actual > estimated`` (the level may go negative: a debt refill pays off), give back
        the unused part when ``actual < estimated`` (never above capacity). No-op without tpm."""
        if estimated.__class__ is int and actual.__class__ is int and estimated >= 0 <= actual:
            est, act = float(estimated), float(actual)  # token counts: the common case
        else:
            est, act = check_real("estimated", estimated), check_real("actual", actual)
        bucket = self._tok
        if bucket is not None and act != est:
            with self._lock:
                bucket._refill(self._now())
                if act > est:
                    bucket._tokens -= act - est
                else:
                    bucket._tokens = min(bucket.capacity, bucket._tokens + (est - act))
                self._tail = None
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "%ssettled %g estimated vs %g actual tokens (%+g)",
                    self._prefix(),
                    est,
                    act,
                    est - act,
                )
        if self._subscribers:
            self._emit_locked_levels("settle", self._now(), estimated=est, actual=act)

    def update_from_headers(
        self,
        headers: Mapping[str, str],
        *,
        in_flight_requests: float = 0,
        in_flight_tokens: float = 0,
    ) -> None:
        """Re-sync with the provider's ``x-ratelimit-remaining-requests`` / ``-tokens`` (also
        ``anthropic-ratelimit-{requests,tokens}-remaining``).

        Only lowers: each local level becomes ``min(local, remaining - in_flight)``. Pass the
        requests and tokens you have granted but whose responses this header cannot count yet
        as ``in_flight_*``. ``x-ratelimit-limit-*`` lower than configured is logged once (a
        configuration mismatch); ``x-ratelimit-reset-*`` ("6m0s", "20ms") is reported in the
        "sync" event.
        """
        if hasattr(headers, "multi_items"):  # httpx.Headers: already case-insensitive
            h: Mapping[str, str] = headers
        else:
            h = {str(k).lower(): v for k, v in headers.items()}
        in_req = check_real("in_flight_requests", in_flight_requests)
        in_tok = check_real("in_flight_tokens", in_flight_tokens)
        rem_req = header_number(
            h, "x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"
        )
        rem_tok = header_number(
            h, "x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining"
        )
        lowered = []
        with self._lock:
            now = self._now()
            for bucket, remaining, in_flight, what in (
                (self._req, rem_req, in_req, "requests"),
                (self._tok, rem_tok, in_tok, "tokens"),
            ):
                if bucket is None or remaining is None:
                    continue
                bucket._refill(now)
                target = remaining - in_flight
                if target < bucket._tokens:
                    lowered.append((what, bucket._tokens, target))
                    bucket._tokens = target
                    self._tail = None
        if lowered and logger.isEnabledFor(logging.DEBUG):
            for what, old, new in lowered:
                logger.debug("%ssynced %s from headers: %.6g -> %.6g", self._prefix(), what, old,
                             new)
        listening = bool(self._subscribers)
        extra: dict[str, Any] = {}
        for what, configured, names in (("requests", self.rpm, _REQUEST_HEADERS),
                                        ("tokens", self.tpm, _TOKEN_HEADERS)):
            limit_header, reset_header, limit_key, reset_key = names
            limit = header_number(h, limit_header)
            if limit is not None:
                extra[limit_key] = limit
                if configured is not None and limit < configured:
                    key = (what, limit)
                    if key not in self._limits_warned:
                        self._limits_warned.add(key)
                        logger.warning(
                            "%sprovider reports a %s limit of %g per minute, below the "
                            "configured %g: lower the limiter's setting",
                            self._prefix(),
                            what,
                            limit,
                            configured,
                        )
            if not listening:
                continue  # the reset times only go into the event
            raw = h.get(reset_header)
            reset = None if raw is None else _parse_duration(str(raw))
            if reset is not None:
                extra[reset_key] = reset
        if listening:
            self._emit_locked_levels(
                "sync", now, remaining_requests=rem_req, remaining_tokens=rem_tok, **extra
            )

    # -- looking ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A snapshot for dashboards: levels, capacities, limits, queue length, pause left."""
        with self._lock:
            now = self._now()
            self._delay(now, 0.0)  # refill both buckets to now
            levels = self._levels()
            waiting = len(self._queue)
            penalty = max(0.0, self._penalty_until - now)
        return {
            "name": self.name,
            **levels,
            "requests_capacity": None if self._req is None else self._req.capacity,
            "tokens_capacity": None if self._tok is None else self._tok.capacity,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "burst_seconds": self.burst_seconds,
            "max_wait": self.max_wait,
            "waiting": waiting,
            "penalty_remaining": penalty,
        }

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rpm={self.rpm!r}, tpm={self.tpm!r}, burst_seconds={self.burst_seconds:g}, "
            f"max_wait={self.max_wait!r}, name={self.name!r})"
        )
