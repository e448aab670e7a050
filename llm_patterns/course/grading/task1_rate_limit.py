"""Task 1 check: a token bucket and a two-bucket (RPM + TPM) rate limiter."""

from __future__ import annotations

import re
from typing import Any

from llm_patterns.clock import VirtualClock

from ._framework import DEFAULT_BUDGET, CheckResult, Criterion, Fail, capture_logs, run_check
from ._student import construct, fmt
from .scheduler import Call, WaitingClock, explore, race_errors

__all__ = ["check_task1"]

TITLE = "Task 1 · Rate limiting"


def _bucket(TokenBucket: Any, capacity: float, rate: float, clock: VirtualClock) -> Any:
    return construct(TokenBucket, capacity, rate, clock=clock)


def _limiter(RateLimiter: Any, rpm: float, tpm: float, clock: Any) -> Any:
    return construct(RateLimiter, rpm=rpm, tpm=tpm, clock=clock)


def _grants(bucket: Any, n: int = 1, tries: int = 50) -> int:
    """How many consume(n) calls in a row succeed without time passing (at most ``tries``)."""
    count = 0
    for _ in range(tries):
        if not bucket.consume(n):
            break
        count += 1
    return count


def _starts_full(TokenBucket: Any) -> None:
    clock = VirtualClock()
    bucket = _bucket(TokenBucket, 10, 1.0, clock)
    granted = _grants(bucket)
    if granted == 9:
        last = _bucket(TokenBucket, 1, 1.0, VirtualClock())
        if not last.consume(1):  # a full bucket of one token refuses its only token
            raise Fail(
                "a new bucket with capacity 10 granted only 9 requests in a row, and a full "
                "bucket of capacity 1 refused consume(1): the last token is never given out — "
                "check the comparison: a request may take every token that is left (>=, not >)"
            )
    if granted < 10:
        raise Fail(
            f"a new bucket with capacity 10 granted only {granted} requests in a row: a bucket "
            "starts full (tokens = capacity), so a burst of capacity requests passes"
        )
    if granted > 10:
        raise Fail(
            f"a bucket with capacity 10 granted {granted} requests in a row without time "
            "passing: consume(n) must take n tokens and refuse when fewer than n are left"
        )


def _refills_with_clock(TokenBucket: Any) -> None:
    clock = VirtualClock()
    bucket = _bucket(TokenBucket, 10, 2.0, clock)
    _grants(bucket)
    clock.sleep(2.0)
    granted = _grants(bucket)
    if granted == 0:
        raise Fail(
            "after clock.sleep(2) at refill_rate 2/s your bucket granted 0 of 4 tokens: read "
            "time from the clock you are given (self.clock.now()), not time.time() — the check "
            "runs in virtual time"
        )
    if granted != 4:
        raise Fail(
            f"after clock.sleep(2) at refill_rate 2/s your bucket granted {granted} tokens, "
            "expected 4: add elapsed * refill_rate, where elapsed = now - the last refill time"
        )
    clock.sleep(0.25)
    if bucket.consume(1):
        raise Fail(
            "0.25 s after emptying (refill_rate 2/s, so 0.5 tokens) consume(1) succeeded: "
            "a request needs a whole token"
        )
    clock.sleep(0.25)
    if not bucket.consume(1):
        raise Fail(
            "0.5 s after emptying (refill_rate 2/s) consume(1) failed: partial refills must add "
            "up (keep fractional tokens, and move the last-refill time to now each time)"
        )


def _no_overfill(TokenBucket: Any) -> None:
    clock = VirtualClock()
    bucket = _bucket(TokenBucket, 10, 1.0, clock)
    bucket.consume(1)
    clock.sleep(60.0)
    granted = _grants(bucket)
    if granted > 10:
        raise Fail(
            f"your bucket granted {granted} requests after idling 60 s but capacity is 10: "
            "cap the refill with min(capacity, tokens + elapsed * refill_rate)"
        )
    if granted < 10:
        raise Fail(
            f"after idling 60 s (refill_rate 1/s) your bucket granted only {granted} of 10: it "
            "should be full again"
        )
    tokens = getattr(bucket, "tokens", None)
    if isinstance(tokens, (int, float)) and not isinstance(tokens, bool) and tokens > 10 + 1e-9:
        raise Fail(f"bucket.tokens is {fmt(tokens)} but capacity is 10: cap the refill")


def _wait_time(TokenBucket: Any) -> None:
    clock = VirtualClock()
    bucket = _bucket(TokenBucket, 10, 2.0, clock)
    w = float(bucket.wait_time(1))
    if abs(w) > 1e-9:
        raise Fail(f"wait_time(1) on a full bucket returned {fmt(w)}: it should be 0")
    _grants(bucket)
    cases = [(1, 0.5), (4, 2.0), (10, 5.0)]
    for n, expected in cases:
        w = float(bucket.wait_time(n))
        if abs(w - expected) > 1e-6:
            raise Fail(
                f"on an empty bucket with refill_rate 2/s, wait_time({n}) returned {fmt(w)}, "
                f"expected {fmt(expected)}: (n - tokens) / refill_rate"
            )
    clock.sleep(0.25)
    w = float(bucket.wait_time(1))
    if abs(w - 0.25) > 1e-6:
        raise Fail(
            f"0.25 s after emptying (refill_rate 2/s), wait_time(1) returned {fmt(w)}, expected "
            "0.25: bring the tokens up to date (refill) before computing the wait"
        )


def _n_above_capacity(TokenBucket: Any) -> None:
    clock = VirtualClock()
    bucket = _bucket(TokenBucket, 10, 1.0, clock)
    try:
        w = bucket.wait_time(11)
    except ValueError:
        pass
    else:
        raise Fail(
            f"wait_time(11) on a bucket of capacity 10 returned {fmt(w)}: 11 tokens can never "
            "fit, so raise ValueError naming both numbers (a caller would wait forever)"
        )
    try:
        ok = bucket.consume(11)
    except ValueError:
        return
    if ok:
        raise Fail("consume(11) on a bucket of capacity 10 returned True: it can never succeed")


def _thread_safe(TokenBucket: Any) -> None:
    """Two threads take from a bucket holding one token, under many interleavings."""

    def setup() -> tuple[list[Call], Any]:
        bucket = _bucket(TokenBucket, 1, 1e-6, VirtualClock())

        def judge(run: Any) -> str | None:
            race_errors(run)
            granted = sum(1 for r in run.results if r is True)
            if granted > 1:
                return (
                    "two threads calling consume(1) at once on a bucket holding 1 token were "
                    "both granted: both passed the check before either took the token. Hold "
                    "one threading.Lock across the refill, the check and the take "
                    "(`with self.lock:` around all three)"
                )
            if granted == 0:
                return ("two threads calling consume(1) on a bucket holding 1 token were both "
                        "refused: exactly one should get it")
            return None

        return [Call(bucket, "consume", (1,)), Call(bucket, "consume", (1,))], judge

    found = explore(setup, student=(TokenBucket,))
    if found is not None:
        raise found.fail("starts full: a burst of capacity passes, the next request is refused")


# Two scenarios where only one of two concurrent acquires fits: requests are short (rpm=1), or
# tokens are (tpm=100, two acquires of 60). The clock stands still and any wait ends the thread's
# attempt, so a correct limiter lets exactly one through and the other starts waiting.
_LIMITER_RACES: tuple[dict[str, Any], ...] = (
    {"rpm": 1, "tpm": 1000, "tokens": 1, "room": "rpm=1 (one request)"},
    {"rpm": 1000, "tpm": 100, "tokens": 60, "room": "tpm=100"},
)


def _limiter_thread_safe(RateLimiter: Any) -> None:
    """Two threads acquire from a limiter that has room for one of them."""
    turn = [0]

    def setup() -> tuple[list[Call], Any]:
        case = _LIMITER_RACES[turn[0] % len(_LIMITER_RACES)]
        turn[0] += 1
        limiter = _limiter(RateLimiter, case["rpm"], case["tpm"], WaitingClock())
        n = case["tokens"]

        def judge(run: Any) -> str | None:
            race_errors(run)
            through = sum(1 for e in run.errors if e is None)
            if through > 1:
                return (
                    f"two threads calling acquire({n}) at once both got through at the same "
                    f"instant with {case['room']}: there was room for one. Both passed the check "
                    "before either took from the buckets: hold one lock across checking both "
                    "buckets and taking from both"
                )
            if through == 0:
                return (f"two threads calling acquire({n}) at once on a fresh limiter with room "
                        "for one both waited: the first should go through at once")
            return None

        return [Call(limiter, "acquire", (n,)), Call(limiter, "acquire", (n,))], judge

    found = explore(setup, student=(RateLimiter,))
    if found is not None:
        raise found.fail(
            "RateLimiter.acquire waits with clock.sleep and returns the seconds waited")


def _acquire_waits(RateLimiter: Any) -> None:
    clock = VirtualClock()
    limiter = _limiter(RateLimiter, 6, 100_000, clock)  # 6 requests, one more every 10 s
    for i in range(6):
        waited = float(limiter.acquire(10) or 0.0)
        if waited > 1e-9 or clock.now() > 1e-9:
            raise Fail(
                f"acquire #{i + 1} of a burst of 6 (rpm=6) waited {fmt(clock.now())} s: a full "
                "limiter lets a burst of rpm requests through at once"
            )
    start = clock.now()
    waited = limiter.acquire(10)
    elapsed = clock.now() - start
    if elapsed < 10 - 1e-6:
        raise Fail(
            f"the 7th request with rpm=6 went through after {fmt(elapsed)} s of virtual time, "
            "expected 10 s: acquire must wait (clock.sleep) until the request bucket has a token"
        )
    if elapsed > 11:
        raise Fail(
            f"the 7th request with rpm=6 waited {fmt(elapsed)} s, expected about 10 s: sleep "
            "for the time the bucket needs (wait_time), not more"
        )
    if waited is None or abs(float(waited) - elapsed) > 1e-6:
        raise Fail(
            f"acquire returned {waited!r} but the clock moved {fmt(elapsed)} s: return the "
            "seconds waited"
        )


def _all_or_nothing(RateLimiter: Any) -> None:
    # Scenario A: the request bucket is full while we wait 60 s for tokens. Taking the request
    # before the tokens are there hands out a request the window has no room for.
    clock = VirtualClock()
    limiter = _limiter(RateLimiter, 2, 120, clock)  # 2 requests/min, 120 tokens/min (2 per s)
    limiter.acquire(120)
    limiter.acquire(120)  # waits 60 s for tokens; one request must be left afterwards
    t0 = clock.now()
    limiter.acquire(0)
    limiter.acquire(0)
    waited = clock.now() - t0
    if waited < 30 - 1e-6:
        raise Fail(
            "your limiter took a request before the tokens were there (or took from one bucket "
            "while waiting for the other): after waiting 60 s for tokens it let 3 requests "
            "through within one minute at rpm=2. Check both buckets first, then take from both "
            "at once (all or nothing)"
        )
    # Scenario B: tokens are the bottleneck; the request bucket has 1 request left.
    clock = VirtualClock()
    limiter = _limiter(RateLimiter, 2, 120, clock)
    limiter.acquire(100)  # requests 1 left, tokens 20 left (2 per s)
    t0 = clock.now()
    limiter.acquire(60)  # needs 40 more tokens: 20 s
    waited = clock.now() - t0
    if waited > 21:
        raise Fail(
            f"acquire(60) waited {fmt(waited)} s where 20 s were enough: your limiter spends "
            "a request while it waits for tokens (e.g. `if requests.consume(1) and "
            "tokens.consume(n)`). Check both, then take from both or from neither"
        )
    if waited < 20 - 1e-6:
        raise Fail(
            f"acquire(60) returned after {fmt(waited)} s with only 20 of 60 tokens available "
            "(2 per s): it must wait until the token bucket can pay (20 s)"
        )
    # Scenario C: requests are the bottleneck; taking tokens early hides a refill over the cap.
    clock = VirtualClock()
    limiter = _limiter(RateLimiter, 2, 120, clock)
    limiter.acquire(10)
    limiter.acquire(10)  # no request left, 100 tokens left
    t0 = clock.now()
    limiter.acquire(100)  # waits 30 s for a request; then 20 tokens are left
    waited = clock.now() - t0
    if waited > 31:
        raise Fail(
            f"acquire(100) waited {fmt(waited)} s where 30 s were enough (the next request "
            "arrives in 30 s and the 100 tokens are there): your limiter spends tokens while it "
            "waits for a request. Check both, then take from both or from neither"
        )
    t0 = clock.now()
    limiter.acquire(100)  # 20 tokens left + 2 per s: 40 s
    waited = clock.now() - t0
    if waited < 40 - 1e-6:
        raise Fail(
            "your limiter took tokens before a request was free: while it waited 30 s for the "
            "request, the token bucket refilled past what a full bucket can hold, so the next "
            f"acquire(100) waited only {fmt(waited)} s instead of 40 s. Check both buckets "
            "first, then take from both at once (all or nothing)"
        )


def _max_wait_limiter(RateLimiter: Any, clock: VirtualClock) -> Any:
    try:
        return construct(RateLimiter, rpm=60, tpm=1000, clock=clock, max_wait=5.0)
    except TypeError as exc:
        raise Fail(f"RateLimiter(rpm, tpm, clock, max_wait=5) raised TypeError ({exc}): add a "
                   "max_wait=None parameter (None: wait as long as it takes)") from None


def _backpressure(RateLimiter: Any) -> None:
    clock = VirtualClock()
    limiter = _max_wait_limiter(RateLimiter, clock)
    limiter.acquire(900)
    start = clock.now()
    try:
        got = limiter.acquire(900)  # 800 more tokens at 1000/min: 48 s, above max_wait=5
    except Exception as exc:
        if type(exc).__name__ != "RateLimitTimeout":
            raise Fail(f"an acquire that would wait 48 s with max_wait=5 raised "
                       f"{type(exc).__name__}: raise RateLimitTimeout (from llm_patterns), the "
                       "backpressure signal upstream code can act on") from None
    else:
        raise Fail(f"with max_wait=5 an acquire that needed 48 s returned {got!r} after "
                   f"{fmt(clock.now() - start)} s: when the wait would pass max_wait, raise "
                   "RateLimitTimeout at once instead of waiting")
    if clock.now() - start > 1e-9:
        raise Fail(f"acquire slept {fmt(clock.now() - start)} s before raising RateLimitTimeout: "
                   "raise at once, before sleeping — the caller wants its time back")
    passed = 0
    for _ in range(60):
        with_clock = clock.now()
        limiter.acquire(0)
        if clock.now() > with_clock:
            break
        passed += 1
    if passed < 59:
        raise Fail(f"after the refused acquire only {passed} of the 59 requests left passed at "
                   "once: a refused acquire must take nothing from either bucket")


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _logs_waits(RateLimiter: Any) -> None:
    clock = VirtualClock()
    limiter = _limiter(RateLimiter, 6, 100_000, clock)
    with capture_logs(RateLimiter) as quiet:
        for _ in range(6):
            limiter.acquire(10)
    with capture_logs(RateLimiter) as records:
        limiter.acquire(10)  # waits 10 s
    messages = [m for _, _, m in records]
    if not messages:
        raise Fail("an acquire that waited 10 s logged nothing: log each wait with the logging "
                   "module (e.g. log.info('rate limited: waiting %.1f s', wait)), so an "
                   "operator sees why the pipeline slowed down")
    numbers = [float(n) for m in messages for n in _NUMBER.findall(m)]
    if not any(abs(n - 10.0) < 0.06 for n in numbers):
        raise Fail(f"the wait was logged without its length ({messages[0]!r}): name the seconds "
                   "waited, so the log says how hard the limit bites")
    if len(quiet) > 6:
        raise Fail(f"six acquires that did not wait logged {len(quiet)} lines: log the waits, "
                   "not every call")


def check_task1(
    TokenBucket: Any, RateLimiter: Any, *, budget: float = DEFAULT_BUDGET
) -> CheckResult:
    """Check a student's ``TokenBucket`` and ``RateLimiter`` (SPEC §6), printing one line per
    criterion; raises ``CheckFailed`` listing the failures."""
    criteria = [
        Criterion(
            "starts full: a burst of capacity passes, the next request is refused",
            lambda: _starts_full(TokenBucket),
        ),
        Criterion(
            "refills at refill_rate, reading time from the given clock",
            lambda: _refills_with_clock(TokenBucket),
        ),
        Criterion("never holds more than capacity after idling", lambda: _no_overfill(TokenBucket)),
        Criterion(
            "wait_time(n) says how long until n tokens are there", lambda: _wait_time(TokenBucket)
        ),
        Criterion("n above capacity raises ValueError", lambda: _n_above_capacity(TokenBucket)),
        Criterion(
            "thread-safe: two threads never get the same token", lambda: _thread_safe(TokenBucket)
        ),
        Criterion(
            "RateLimiter.acquire waits with clock.sleep and returns the seconds waited",
            lambda: _acquire_waits(RateLimiter),
        ),
        Criterion(
            "RateLimiter takes from both buckets or from neither",
            lambda: _all_or_nothing(RateLimiter),
        ),
        Criterion(
            "RateLimiter is thread-safe: concurrent acquires never get more than there is",
            lambda: _limiter_thread_safe(RateLimiter),
        ),
        Criterion(
            "backpressure: past max_wait, RateLimitTimeout at once, nothing taken",
            lambda: _backpressure(RateLimiter),
        ),
        Criterion("logs each wait with its length", lambda: _logs_waits(RateLimiter)),
    ]
    return run_check(TITLE, criteria, budget=budget)
