"""TokenBucket and RateLimiter: continuous refill, all-or-nothing, FIFO, backpressure, sync."""

from __future__ import annotations

import asyncio
import logging
import random
import threading

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_patterns.clock import SystemClock, VirtualClock
from llm_patterns.errors import RateLimitTimeout
from llm_patterns.protocols import Demand, Limiter
from llm_patterns.rate_headers import parse_duration as _parse_duration
from llm_patterns.rate_limit import RateLimiter, TokenBucket

# ---------------------------------------------------------------------------------------------
# helpers


def window_violation(log, capacity, rate, tol=1e-6):
    """The first window [t_i, t_j] of a grant log ``[(time, amount)]`` whose grants exceed
    ``capacity + rate * (t_j - t_i)`` (what a full bucket plus refill could pay), else None."""
    log = sorted(log)
    prefix = [0.0]
    for _, amount in log:
        prefix.append(prefix[-1] + amount)
    for i in range(len(log)):
        for j in range(i, len(log)):
            granted = prefix[j + 1] - prefix[i]
            allowed = capacity + rate * (log[j][0] - log[i][0])
            if granted > allowed + tol * max(1.0, capacity):
                return (log[i][0], log[j][0], granted, allowed)
    return None


class OverfillingBucket:
    """The classic bug: refill without the cap, so an idle bucket overfills."""

    def __init__(self, capacity, refill_rate, *, clock):
        self.capacity, self.rate, self.clock = capacity, refill_rate, clock
        self.tokens, self.last = capacity, clock.now()

    def consume(self, n=1):
        now = self.clock.now()
        self.tokens += (now - self.last) * self.rate
        self.last = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


def run_bucket_ops(bucket, clock, ops):
    log = []
    for advance, n in ops:
        clock.advance(advance)
        if bucket.consume(n):
            log.append((clock.now(), n))
    return log


def grant_log(limiter):
    """Subscribe to ``acquire`` events; the log holds (grant time, tokens)."""
    log = []
    limiter.subscribe(
        lambda e: log.append((e.time, e.data["tokens"])) if e.kind == "acquire" else None
    )
    return log


# ---------------------------------------------------------------------------------------------
# TokenBucket


def test_bucket_starts_full_and_empties():
    clock = VirtualClock()
    bucket = TokenBucket(3, 1.0, clock=clock)
    assert bucket.available == 3.0
    assert [bucket.consume() for _ in range(4)] == [True, True, True, False]
    assert bucket.available == 0.0  # the refused consume took nothing


def test_bucket_refills_continuously_and_never_overfills():
    clock = VirtualClock()
    bucket = TokenBucket(10, 2.0, clock=clock)
    assert bucket.consume(10)
    clock.advance(0.25)
    assert bucket.available == pytest.approx(0.5)
    assert not bucket.consume(1)
    clock.advance(0.25)
    assert bucket.consume(1)
    clock.advance(3600)  # idle for an hour
    assert bucket.available == 10.0
    assert bucket.tokens == 10.0  # the hint's name for the level
    assert bucket.consume(10) and not bucket.consume(1)


def test_bucket_wait_time():
    clock = VirtualClock()
    bucket = TokenBucket(10, 4.0, clock=clock)
    assert bucket.wait_time(10) == 0.0
    assert bucket.consume(8)
    assert bucket.wait_time(2) == 0.0
    assert bucket.wait_time(4) == pytest.approx(0.5)
    assert bucket.available == pytest.approx(2.0)  # wait_time takes nothing
    clock.sleep(bucket.wait_time(4))
    assert bucket.consume(4)


@pytest.mark.parametrize("method", ["consume", "wait_time"])
def test_bucket_rejects_impossible_and_negative_amounts(method):
    bucket = TokenBucket(5, 1.0, clock=VirtualClock())
    with pytest.raises(ValueError, match=r"n=6.*capacity=5"):
        getattr(bucket, method)(6)
    with pytest.raises(ValueError, match=r"n must be .*>= 0, got -1"):
        getattr(bucket, method)(-1)
    with pytest.raises(TypeError, match="n must be a number, got '2'"):
        getattr(bucket, method)("2")
    with pytest.raises(ValueError, match="nan"):
        getattr(bucket, method)(float("nan"))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"capacity": 0, "refill_rate": 1}, "capacity must be a finite number > 0, got 0"),
        ({"capacity": -3, "refill_rate": 1}, "capacity .* got -3"),
        ({"capacity": 5, "refill_rate": 0}, "refill_rate must be a finite number > 0, got 0"),
        ({"capacity": 5, "refill_rate": float("inf")}, "refill_rate .* got inf"),
    ],
)
def test_bucket_rejects_bad_configuration(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        TokenBucket(**kwargs, clock=VirtualClock())


def test_bucket_force_take_makes_a_debt_and_give_back_is_capped():
    clock = VirtualClock()
    bucket = TokenBucket(10, 1.0, clock=clock)
    bucket.force_take(15)
    assert bucket.available == -5.0
    assert bucket.wait_time(1) == pytest.approx(6.0)
    clock.advance(6)
    assert bucket.consume(1)
    bucket.give_back(100)
    assert bucket.available == 10.0
    with pytest.raises(ValueError, match="n must be"):
        bucket.give_back(-1)


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.floats(1, 100),
    rate=st.floats(0.01, 50),
    ops=st.lists(st.tuples(st.floats(0, 5), st.floats(0, 1)), min_size=1, max_size=80),
)
def test_bucket_never_grants_more_than_capacity_plus_refill(capacity, rate, ops):
    clock = VirtualClock()
    bucket = TokenBucket(capacity, rate, clock=clock)
    log = []
    for advance, fraction in ops:
        clock.advance(advance)
        n = fraction * capacity
        if bucket.consume(n):
            log.append((clock.now(), n))
        assert bucket.available <= capacity
    total = sum(n for _, n in log)
    assert total <= capacity + rate * clock.now() + 1e-6 * capacity
    assert window_violation(log, capacity, rate) is None


def test_window_checker_rejects_an_overfilling_bucket():
    ops = [(0.0, 10)] + [(100.0, 0)] + [(0.0, 10)] * 3  # drain, idle, then drain again
    clock = VirtualClock()
    good = run_bucket_ops(TokenBucket(10, 1.0, clock=clock), clock, ops)
    assert window_violation(good, 10, 1.0) is None
    clock = VirtualClock()
    bad = run_bucket_ops(OverfillingBucket(10, 1.0, clock=clock), clock, ops)
    assert window_violation(bad, 10, 1.0) is not None


def test_bucket_threads_grant_exactly_capacity():
    bucket = TokenBucket(100, 1e-9, clock=SystemClock())
    threads_n, tries = 24, 20
    barrier = threading.Barrier(threads_n)
    granted = [0] * threads_n

    def worker(i):
        barrier.wait()
        for _ in range(tries):
            if bucket.consume(1):
                granted[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100


# ---------------------------------------------------------------------------------------------
# RateLimiter: configuration and basics


def test_limiter_bucket_sizes():
    lim = RateLimiter(rpm=600, tpm=60_000, clock=VirtualClock(), burst_seconds=60.0)
    assert lim.requests_bucket.capacity == 600 and lim.requests_bucket.refill_rate == 10
    assert lim.tokens_bucket.capacity == 60_000 and lim.tokens_bucket.refill_rate == 1000
    per_second = RateLimiter(rpm=600, tpm=60_000, burst_seconds=1.0, clock=VirtualClock())
    assert per_second.requests_bucket.capacity == 10
    assert per_second.tokens_bucket.capacity == 1000
    assert RateLimiter(tpm=600, clock=VirtualClock(), burst_seconds=60.0).requests_bucket is None


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({}, ValueError, "at least one of rpm, tpm, itpm, otpm"),
        ({"rpm": 0}, ValueError, "rpm must be a finite number > 0 .*, got 0"),
        ({"tpm": -5}, ValueError, "tpm .* got -5"),
        ({"rpm": 60, "burst_seconds": 0}, ValueError, "burst_seconds .* got 0"),
        ({"rpm": 60, "max_wait": -1}, ValueError, "max_wait must be a finite number >= 0, got -1"),
        ({"rpm": "60"}, TypeError, "rpm must be a number, got '60'"),
        ({"rpm": 30, "burst_seconds": 1.0}, ValueError, r"rpm=30 .*burst_seconds=1.0.* 0.5 < 1"),
    ],
)
def test_limiter_rejects_bad_configuration(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        RateLimiter(**kwargs, clock=VirtualClock())


def test_acquire_waits_exactly_as_long_as_needed():
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, burst_seconds=2.0, clock=clock)  # 2 requests, 1 per second
    assert lim.acquire() == 0.0 and lim.acquire() == 0.0
    assert lim.acquire() == pytest.approx(1.0)
    assert clock.now() == pytest.approx(1.0)
    clock.advance(0.25)
    assert lim.acquire() == pytest.approx(0.75)


def test_acquire_waits_for_tokens_and_returns_seconds():
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, tpm=600, clock=clock, burst_seconds=60.0)  # 10 tokens/s, 600 capacity
    assert lim.acquire(600) == 0.0
    assert lim.acquire(30) == pytest.approx(3.0)
    assert lim.status()["requests_available"] == pytest.approx(59.0)  # min(60, 59 + 3) - 1


@pytest.mark.parametrize("call", ["acquire", "try_acquire", "acquire_async"])
def test_impossible_request_raises_value_error_naming_both_numbers(call):
    lim = RateLimiter(rpm=60, tpm=600, burst_seconds=1.0, clock=VirtualClock())  # 10 tokens max
    fn = getattr(lim, call)
    with pytest.raises(ValueError, match=r"demand=11 .*the tokens bucket.*need 11 .*most it "
                                         r"admits is 10 \(= tpm 600"):
        if call == "acquire_async":
            asyncio.run(fn(11))
        else:
            fn(11)
    with pytest.raises(ValueError, match=r"demand must be a finite number >= 0 .*, got -1"):
        fn(-1) if call != "acquire_async" else asyncio.run(fn(-1))
    with pytest.raises(TypeError, match="demand must be a Demand or a number of tokens, got True"):
        fn(True) if call != "acquire_async" else asyncio.run(fn(True))
    assert lim.status()["tokens_available"] == 10  # nothing was taken


def test_tokens_are_free_without_tpm_and_requests_free_without_rpm():
    clock = VirtualClock()
    rpm_only = RateLimiter(rpm=60, clock=clock, burst_seconds=60.0)
    assert rpm_only.try_acquire(10**9)  # no TPM bucket: any token count passes
    tpm_only = RateLimiter(tpm=600, clock=clock, burst_seconds=60.0)
    assert all(tpm_only.try_acquire(0) for _ in range(1000))
    assert tpm_only.try_acquire(600) and not tpm_only.try_acquire(1)


def test_try_acquire_is_all_or_nothing():
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, tpm=600, clock=clock, burst_seconds=60.0)
    assert lim.try_acquire(590)
    before = lim.status()
    assert not lim.try_acquire(20)  # requests available, tokens not
    after = lim.status()
    assert after["requests_available"] == before["requests_available"] == 59
    assert after["tokens_available"] == before["tokens_available"] == 10
    assert clock.now() == 0.0  # never waits


def test_token_debt_blocks_even_zero_token_requests():
    clock = VirtualClock()
    lim = RateLimiter(rpm=600, tpm=600, clock=clock, burst_seconds=60.0)
    lim.acquire(600)
    lim.settle(estimated=100, actual=200)  # 100 tokens of debt
    assert lim.status()["tokens_available"] == -100
    assert not lim.try_acquire(0)
    assert lim.acquire(0) == pytest.approx(10.0)


# ---------------------------------------------------------------------------------------------
# RateLimiter: waiting requests spend nothing, FIFO, cancellation


def run_arrivals(lim, clock, arrivals, observers=()):
    """Run ``(label, arrival_time, tokens)`` coroutines on ``clock``; return grant order/times
    and the exceptions raised; ``observers`` are ``(time, fn)`` called at those times."""
    granted, errors = [], {}

    async def request(label, at, tokens):
        await clock.asleep(at - clock.now())
        try:
            await lim.acquire_async(tokens)
        except Exception as e:
            errors[label] = (e, clock.now())
            return
        granted.append((label, clock.now()))

    async def observe(at, fn):
        await clock.asleep(at - clock.now())
        fn()

    async def main():
        await asyncio.gather(
            *(request(*a) for a in arrivals), *(observe(at, fn) for at, fn in observers)
        )

    asyncio.run(main())
    return granted, errors


def test_waiting_for_tokens_spends_no_request_budget():
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, tpm=600, clock=clock, burst_seconds=60.0)  # 1 request/s, 10 tokens/s
    for _ in range(30):
        assert lim.try_acquire(20)  # 30 requests and all 600 tokens spent
    seen = {}

    def look():
        seen["status"] = lim.status()
        seen["try"] = lim.try_acquire(0)  # a newcomer may not jump the queue

    granted, errors = run_arrivals(lim, clock, [("big", 0.0, 300)], observers=[(10.0, look)])
    assert not errors
    assert granted == [("big", pytest.approx(30.0))]
    # at t=10 the waiter holds no request slot: 30 left + 10 refilled
    assert seen["status"]["requests_available"] == pytest.approx(40.0)
    assert seen["status"]["tokens_available"] == pytest.approx(100.0)
    assert seen["status"]["waiting"] == 1
    assert seen["try"] is False
    # at the grant it paid both buckets once: min(60, 30 + 30) - 1
    assert lim.status()["requests_available"] == pytest.approx(59.0)
    assert lim.status()["tokens_available"] == pytest.approx(0.0)


def test_big_request_is_not_starved_by_later_small_ones():
    clock = VirtualClock()
    lim = RateLimiter(tpm=600, burst_seconds=1.0, clock=clock)  # 10 tokens, 10 tokens/s
    arrivals = [("drain", 0.0, 10), ("big", 0.1, 10)]
    arrivals += [(f"small{i}", 0.2 + 0.05 * i, 1) for i in range(20)]
    granted, errors = run_arrivals(lim, clock, arrivals)
    assert not errors
    order = [label for label, _ in granted]
    assert order == [label for label, _, _ in arrivals]  # first come, first served
    times = dict(granted)
    assert times["big"] == pytest.approx(1.0)  # as soon as the bucket could hold it
    assert times["small0"] == pytest.approx(1.1)  # then one small per 0.1 s
    assert times["small19"] == pytest.approx(3.0)


def test_cancelled_waiter_takes_nothing_and_lets_the_next_move_up():
    clock = VirtualClock()
    lim = RateLimiter(tpm=600, burst_seconds=1.0, clock=clock)
    lim.acquire(10)
    result = {}

    async def main():
        big = asyncio.ensure_future(lim.acquire_async(10))
        small = asyncio.ensure_future(lim.acquire_async(2))
        await clock.asleep(0.1)
        assert lim.status()["waiting"] == 2
        big.cancel()
        await clock.asleep(0)
        result["waiting_after_cancel"] = lim.status()["waiting"]
        result["small_waited"] = await small
        with pytest.raises(asyncio.CancelledError):
            await big

    asyncio.run(main())
    assert result["waiting_after_cancel"] == 1
    assert result["small_waited"] == pytest.approx(0.2)  # no longer behind the big one
    assert lim.status()["waiting"] == 0
    assert lim.status()["tokens_available"] == pytest.approx(0.0)


def test_async_coroutines_respect_both_limits_and_fifo():
    rng = random.Random(7)
    clock = VirtualClock()
    lim = RateLimiter(rpm=120, tpm=6000, burst_seconds=5.0, clock=clock)  # 10 req, 500 tok
    log = grant_log(lim)
    arrivals = sorted(
        ((f"r{i}", round(rng.uniform(0, 20), 3), rng.randint(0, 400)) for i in range(200)),
        key=lambda a: a[1],
    )
    granted, errors = run_arrivals(lim, clock, arrivals)
    assert not errors and len(granted) == 200 and len(log) == 200
    assert window_violation([(t, 1) for t, _ in log], 10, 2.0) is None
    assert window_violation(log, 500, 100.0) is None
    # arrivals at distinct times are served in arrival order
    assert [label for label, _ in granted] == [label for label, _, _ in arrivals]
    # and the limiter wastes nothing: it finishes about when the binding limit allows
    total_tokens = sum(t for _, _, t in arrivals)
    best = max((200 - 10) / 2.0, (total_tokens - 500) / 100.0)
    assert best <= clock.now() <= best * 1.05 + 1


# ---------------------------------------------------------------------------------------------
# max_wait and RateLimitTimeout


def test_max_wait_raises_at_once_and_takes_nothing(caplog):
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, tpm=600, max_wait=5.0, clock=clock, name="openai", burst_seconds=60.0)
    lim.acquire(600)
    events = []
    lim.subscribe(events.append)
    before = lim.status()
    with (
        caplog.at_level(logging.WARNING, logger="llm_patterns.rate_limit"),
        pytest.raises(RateLimitTimeout) as info,
    ):
        lim.acquire(100)  # needs 10 s
    assert info.value.retry_after == pytest.approx(10.0)
    assert "10.00 s" in str(info.value) and "max_wait=5" in str(info.value)
    assert clock.now() == 0.0  # raised at once
    assert lim.status() == before  # took nothing
    assert lim.acquire(40) == pytest.approx(4.0)  # within max_wait: waits
    assert any("max_wait=5" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    timeout = [e for e in events if e.kind == "timeout"]
    assert timeout and timeout[0].data["retry_after"] == pytest.approx(10.0)
    assert timeout[0].data["tokens_available"] == pytest.approx(0.0)


def test_max_wait_counts_the_queue_ahead():
    clock = VirtualClock()
    lim = RateLimiter(tpm=600, burst_seconds=1.0, max_wait=1.5, clock=clock)
    lim.acquire(10)
    granted, errors = run_arrivals(lim, clock, [("a", 0.0, 10), ("b", 0.0, 10)])
    assert granted == [("a", pytest.approx(1.0))]
    err, at = errors["b"]
    assert isinstance(err, RateLimitTimeout)
    assert err.retry_after == pytest.approx(2.0)  # 1 s for a, then 1 s for itself
    assert at == 0.0


def test_max_wait_zero_never_waits():
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, burst_seconds=1.0, max_wait=0, clock=clock)
    assert lim.acquire() == 0.0
    with pytest.raises(RateLimitTimeout):
        lim.acquire()


def test_queued_waiter_times_out_when_a_penalty_pushes_it_past_max_wait():
    clock = VirtualClock()
    lim = RateLimiter(tpm=600, burst_seconds=1.0, max_wait=3.0, clock=clock)
    lim.acquire(10)
    granted, errors = run_arrivals(
        lim, clock, [("a", 0.0, 10), ("b", 0.0, 5)], observers=[(0.5, lambda: lim.penalize(10))]
    )
    assert granted == []
    assert isinstance(errors["a"][0], RateLimitTimeout)
    assert errors["a"][0].retry_after == pytest.approx(9.5)  # woke at t=1, paused until 10.5
    assert isinstance(errors["b"][0], RateLimitTimeout)
    assert lim.status()["waiting"] == 0
    assert lim.status()["tokens_available"] == pytest.approx(10.0)  # nobody took anything


# ---------------------------------------------------------------------------------------------
# penalize, settle, headers


def test_penalize_pauses_everyone_and_keeps_the_longest():
    clock = VirtualClock()
    lim = RateLimiter(rpm=600, clock=clock, burst_seconds=60.0)
    lim.penalize(5)
    assert not lim.try_acquire()
    lim.penalize(2)  # shorter: the 5 s pause stands
    assert lim.status()["penalty_remaining"] == pytest.approx(5.0)
    assert lim.acquire() == pytest.approx(5.0)
    assert lim.status()["penalty_remaining"] == 0.0
    assert lim.try_acquire()
    with pytest.raises(ValueError, match=r"seconds must be .*>= 0, got -1"):
        lim.penalize(-1)


def test_penalize_holds_queued_async_waiters():
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, burst_seconds=1.0, clock=clock)
    lim.acquire()
    granted, errors = run_arrivals(
        lim, clock, [("a", 0.0, 0), ("b", 0.0, 0)], observers=[(0.5, lambda: lim.penalize(4))]
    )
    assert not errors
    assert granted == [("a", pytest.approx(4.5)), ("b", pytest.approx(5.5))]


def test_settle_charges_and_gives_back():
    clock = VirtualClock()
    lim = RateLimiter(tpm=6000, clock=clock, burst_seconds=60.0)
    lim.acquire(1000)
    lim.settle(estimated=1000, actual=1500)
    assert lim.status()["tokens_available"] == pytest.approx(4500)
    lim.settle(estimated=1000, actual=200)
    assert lim.status()["tokens_available"] == pytest.approx(5300)
    lim.settle(estimated=5000, actual=0)  # never above capacity
    assert lim.status()["tokens_available"] == 6000
    with pytest.raises(ValueError, match=r"actual must be .* got -3"):
        lim.settle(10, -3)
    # no TPM bucket: nothing to settle
    RateLimiter(rpm=60, clock=clock, burst_seconds=60.0).settle(10, 20)


def test_update_from_headers_lowers_but_never_raises():
    clock = VirtualClock()
    lim = RateLimiter(rpm=600, tpm=60_000, clock=clock, burst_seconds=60.0)
    for _ in range(10):
        lim.acquire(100)  # local: 590 requests, 59,000 tokens
    lim.update_from_headers(
        {"x-ratelimit-remaining-requests": "1000", "x-ratelimit-remaining-tokens": "60000"}
    )
    status = lim.status()
    assert status["requests_available"] == 590 and status["tokens_available"] == 59_000
    lim.update_from_headers(
        {"X-RateLimit-Remaining-Requests": "500", "X-RateLimit-Remaining-Tokens": "5000"}
    )
    status = lim.status()
    assert status["requests_available"] == 500 and status["tokens_available"] == 5000
    # the header cannot count what we granted after the request it answers was sent
    sent = clock.now()
    clock.advance(0.001)
    lim.acquire(1000)
    lim.acquire(500)
    lim.update_from_headers(httpx.Headers({"x-ratelimit-remaining-tokens": "4000"}),
                            sent_at=sent)
    # 4,000 + 1 (the server's refill over the 1 ms since) - 1,500 (granted since)
    assert lim.status()["tokens_available"] == pytest.approx(2501)
    clock.advance(1.0)  # refill (1000 tokens/s) is what brings it back up
    assert lim.status()["tokens_available"] == pytest.approx(3501)
    # by default the header answers this thread's last request, sent 1 s ago: the server has
    # refilled 10 requests since
    lim.update_from_headers({"anthropic-ratelimit-requests-remaining": "3"})
    assert lim.status()["requests_available"] == pytest.approx(13)
    lim.update_from_headers({"anthropic-ratelimit-requests-remaining": "3"}, sent_at=clock.now())
    assert lim.status()["requests_available"] == 3
    lim.update_from_headers({"x-ratelimit-remaining-requests": "garbage"})  # ignored
    assert lim.status()["requests_available"] == 3


def test_update_from_headers_reports_reset_and_warns_on_lower_limit(caplog):
    clock = VirtualClock()
    lim = RateLimiter(rpm=600, tpm=60_000, clock=clock, name="p", burst_seconds=60.0)
    events = []
    lim.subscribe(events.append)
    headers = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-reset-tokens": "20ms",
        "x-ratelimit-remaining-tokens": "59000",
    }
    with caplog.at_level(logging.WARNING, logger="llm_patterns.rate_limit"):
        lim.update_from_headers(headers)
        lim.update_from_headers(headers)
    warnings = [r for r in caplog.records if "limit of 500" in r.message]
    assert len(warnings) == 1  # once, not on every response
    sync = events[-1]
    assert sync.kind == "sync" and sync.source == "rate_limit" and sync.name == "p"
    assert sync.data["remaining_requests"] == 499 and sync.data["remaining_tokens"] == 59_000
    assert sync.data["reset_requests"] == 360.0 and sync.data["reset_tokens"] == 0.02
    assert sync.data["requests_available"] == 499 and sync.data["tokens_available"] == 59_000


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("", None),
        ("soon", None),
        ("5x", None),
        ("1s junk", None),
        ("-1", None),
    ],
)
def test_parse_duration(text, seconds):
    assert _parse_duration(text) == seconds


# ---------------------------------------------------------------------------------------------
# status, events, logs


def test_status_fields():
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, tpm=6000, clock=clock, name="openai", max_wait=30, burst_seconds=60.0)
    lim.acquire(1000)
    clock.advance(10)
    assert lim.status() == {
        "name": "openai",
        "requests_available": 60.0,
        "tokens_available": 6000.0,
        "requests_capacity": 60.0,
        "tokens_capacity": 6000.0,
        "rpm": 60.0,
        "tpm": 6000.0,
        "burst_seconds": 60.0,
        "max_wait": 30.0,
        "waiting": 0,
        "penalty_remaining": 0.0,
        "estimate_ratio": 1.0,
    }
    tokens_only = RateLimiter(tpm=60, clock=clock, burst_seconds=60.0)
    assert tokens_only.status()["requests_available"] is None


def test_events_carry_levels():
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, tpm=600, burst_seconds=1.0, clock=clock, name="gauge")
    events = []
    unsubscribe = lim.subscribe(events.append)
    lim.acquire(10)
    lim.acquire(5)  # waits 0.5 s for tokens and 1 s for the request
    lim.penalize(2)
    lim.settle(5, 3)
    unsubscribe()
    lim.acquire(0)
    kinds = [e.kind for e in events]
    assert kinds == ["acquire", "wait", "acquire", "penalize", "settle"]
    first, wait, second, pen, settle = events
    assert first.data == {
        "tokens": 10,
        "waited": 0.0,
        "requests_available": 0.0,
        "tokens_available": 0.0,
    }
    assert wait.data["seconds"] == pytest.approx(1.0) and wait.data["waiting"] == 1
    assert second.time == pytest.approx(1.0) and second.data["waited"] == pytest.approx(1.0)
    assert second.data["tokens_available"] == pytest.approx(5.0)  # refilled to 10, paid 5
    assert pen.data["seconds"] == 2 and pen.data["requests_available"] == pytest.approx(0.0)
    assert settle.data["estimated"] == 5 and settle.data["tokens_available"] == pytest.approx(7.0)
    assert all(e.source == "rate_limit" and e.name == "gauge" for e in events)


def test_waits_are_logged_with_the_numbers(caplog):
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, tpm=600, clock=clock, name="openai", burst_seconds=60.0)
    with caplog.at_level(logging.DEBUG, logger="llm_patterns.rate_limit"):
        lim.acquire(600)
        assert not caplog.records  # no wait, no log line
        lim.acquire(12)
    (record,) = caplog.records
    assert record.levelno == logging.INFO
    assert record.getMessage() == "rate limiter 'openai': waited 1.20 s for 1 request + 12 tokens"


# ---------------------------------------------------------------------------------------------
# property: the limiter never exceeds RPM or TPM over any window


op = st.one_of(
    st.tuples(st.just("advance"), st.floats(0, 20)),
    st.tuples(st.just("try"), st.integers(0, 500)),
    st.tuples(st.just("acquire"), st.integers(0, 500)),
    st.tuples(st.just("refund"), st.floats(0, 1)),
    st.tuples(st.just("sync"), st.integers(0, 600)),
    st.tuples(st.just("penalize"), st.floats(0, 10)),
)


@settings(max_examples=150, deadline=None)
@given(
    rpm=st.sampled_from([30, 60, 600]),
    tpm=st.sampled_from([600, 6000]),
    burst=st.sampled_from([2.0, 10.0, 60.0]),
    ops=st.lists(op, max_size=60),
)
def test_limiter_never_exceeds_rpm_or_tpm_over_any_window(rpm, tpm, burst, ops):
    clock = VirtualClock()
    lim = RateLimiter(rpm=rpm, tpm=tpm, burst_seconds=burst, clock=clock)
    req_cap, tok_cap = rpm / 60 * burst, tpm / 60 * burst
    log = []  # (time, tokens actually used)
    for kind, value in ops:
        if kind == "advance":
            clock.advance(value)
        elif kind in ("try", "acquire"):
            tokens = min(value, int(tok_cap))
            if kind == "try":
                ok = lim.try_acquire(tokens)
            else:
                lim.acquire(tokens)
                ok = True
            if ok:
                log.append([clock.now(), tokens])
        elif kind == "refund" and log:  # the last request used less than estimated
            used = int(log[-1][1] * value)
            lim.settle(log[-1][1], used)
            log[-1][1] = used
        elif kind == "sync":
            lim.update_from_headers(
                {
                    "x-ratelimit-remaining-tokens": str(value),
                    "x-ratelimit-remaining-requests": str(value // 50),
                }
            )
        elif kind == "penalize":
            lim.penalize(value)
        status = lim.status()
        assert status["requests_available"] <= req_cap and status["tokens_available"] <= tok_cap
    assert window_violation([(t, 1) for t, _ in log], req_cap, rpm / 60) is None
    assert window_violation([(t, n) for t, n in log], tok_cap, tpm / 60) is None


# ---------------------------------------------------------------------------------------------
# real threads


def test_threads_hammering_try_acquire_get_exactly_the_capacity():
    # 100 requests of capacity, refilling 1e-4 per second: no refill within the test
    lim = RateLimiter(rpm=0.006, burst_seconds=1e6, clock=SystemClock())
    assert lim.status()["requests_capacity"] == pytest.approx(100)
    n_threads, tries = 16, 20
    barrier = threading.Barrier(n_threads)
    granted = [0] * n_threads

    def worker(i):
        barrier.wait()
        for _ in range(tries):
            if lim.try_acquire():
                granted[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100


def test_threads_waiting_in_acquire_respect_the_limit():
    # 5 requests of burst, 100 per second; 16 threads x 2 acquires: about 0.27 s of real waiting
    lim = RateLimiter(rpm=6000, tpm=600_000, burst_seconds=0.05, clock=SystemClock())
    log = grant_log(lim)
    n_threads = 16
    barrier = threading.Barrier(n_threads)
    errors = []

    def worker():
        barrier.wait()
        try:
            for _ in range(2):
                lim.acquire(100)
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors and len(log) == 32
    assert lim.status()["waiting"] == 0
    assert window_violation([(t, 1) for t, _ in log], 5, 100.0) is None
    assert window_violation(log, 500, 10_000.0) is None


def test_thread_queues_behind_an_earlier_waiting_thread():
    # 10 tokens of burst, 100 tokens per second: about 0.1 s of real waiting
    lim = RateLimiter(tpm=6000, burst_seconds=0.1, clock=SystemClock())
    order = []
    lim.subscribe(lambda e: order.append(e.data["tokens"]) if e.kind == "acquire" else None)
    lim.acquire(5)
    big = threading.Thread(target=lim.acquire, args=(10,))  # needs the whole bucket
    big.start()
    while lim.status()["waiting"] == 0 and big.is_alive():
        threading.Event().wait(0.001)
    lim.acquire(1)  # 5 tokens are there, but the earlier big request goes first
    big.join(timeout=10)
    assert order == [5, 10, 1]


# ---------------------------------------------------------------------------------------------
# Anthropic's separate limits: Demand, itpm / otpm, all or nothing across every bucket


def test_itpm_otpm_charge_input_and_output_separately():
    clock = VirtualClock()
    lim = RateLimiter(rpm=600, itpm=6000, otpm=1200, clock=clock, burst_seconds=1.0)
    # buckets of 10 requests, 100 input and 20 output tokens
    assert lim.acquire(Demand(input_tokens=80, output_tokens=20)) == 0.0
    st = lim.status()
    assert (st["requests_available"], st["input_tokens_available"],
            st["output_tokens_available"]) == (9, 20, 0)
    assert st["tokens_available"] is None and st["itpm"] == 6000 and st["otpm"] == 1200
    # the output bucket refuses: nothing is taken from the others (all or nothing)
    assert not lim.try_acquire(Demand(input_tokens=10, output_tokens=5))
    assert lim.status()["input_tokens_available"] == 20
    # the call used 8 of its 20 max_tokens: the output bucket gets 12 back
    lim.settle(Demand(80, 20), Demand(80, 8))
    assert lim.status()["output_tokens_available"] == pytest.approx(12)
    assert lim.acquire(Demand(input_tokens=10, output_tokens=5)) == 0.0
    # a request waits for the slowest of its buckets
    assert lim.acquire(Demand(input_tokens=50, output_tokens=0)) == pytest.approx(0.4)
    assert lim.bucket("output_tokens").capacity == 20
    with pytest.raises(ValueError, match="kind must be one of"):
        lim.bucket("bytes")


def test_fifo_across_every_bucket_a_big_output_request_is_not_starved():
    clock = VirtualClock()
    lim = RateLimiter(itpm=600, otpm=600, clock=clock, burst_seconds=1.0)  # 10 and 10
    lim.acquire(Demand(10, 10))
    arrivals = [("big-out", 0.0, Demand(0, 10))]
    arrivals += [(f"in{i}", 0.01 * (i + 1), Demand(2, 0)) for i in range(5)]
    granted, errors = run_arrivals(lim, clock, arrivals)
    assert not errors
    assert [label for label, _ in granted] == [a[0] for a in arrivals]  # first come first served
    assert dict(granted)["big-out"] == pytest.approx(1.0)


def test_a_demand_too_big_for_a_bucket_names_both_numbers():
    lim = RateLimiter(itpm=600, otpm=60, clock=VirtualClock(), burst_seconds=1.0)
    with pytest.raises(ValueError, match="output_tokens bucket"):
        lim.check(Demand(input_tokens=3, output_tokens=5))  # the same, without acquiring
    lim.check(Demand(input_tokens=3, output_tokens=1))
    with pytest.raises(ValueError, match=r"demand=Demand\(.*output_tokens bucket.*need 5 .*"
                                         r"most it admits is 1 \(= otpm 60"):
        lim.acquire(Demand(input_tokens=3, output_tokens=5))
    with pytest.raises(ValueError, match=r"input_tokens must be a finite number >= 0 .*, got -1"):
        Demand(input_tokens=-1)
    with pytest.raises(TypeError, match=r"requests must be an int, got 1\.5"):
        Demand(requests=1.5)


# ---------------------------------------------------------------------------------------------
# the default: one-second slices, with an overdraft for a request larger than a slice


def test_default_buckets_hold_a_one_second_slice():
    clock = VirtualClock()
    lim = RateLimiter(rpm=600, tpm=60_000, clock=clock)
    st = lim.status()
    assert (st["requests_capacity"], st["tokens_capacity"], st["burst_seconds"]) == (10, 1000, 1)
    log = grant_log(lim)
    for _ in range(200):  # a cold client with a backlog
        lim.acquire(50)
    # never more than a one-second slice in any window (plus refill over its length)
    assert window_violation([(t, 1) for t, _ in log], 10, 10.0) is None
    assert window_violation(log, 1000, 1000.0) is None
    assert max(sum(1 for s, _ in log if t <= s < t + 1.0) for t, _ in log) <= 10 + 10


def test_a_cold_default_limiter_never_sends_more_than_a_second_of_rpm():
    """The issue's case: with 60 s buckets a cold client sends a minute's budget at once."""
    def first_second(lim, clock):
        sent = 0
        while clock.now() < 1.0:
            lim.acquire()
            sent += clock.now() < 1.0
        return sent
    clock = VirtualClock()
    assert first_second(RateLimiter(rpm=60_000, clock=clock), clock) <= 1000 + 1000
    clock = VirtualClock()
    assert first_second(RateLimiter(rpm=60_000, clock=clock, burst_seconds=60), clock) > 60_000


def test_a_request_larger_than_a_slice_passes_alone_when_the_bucket_is_full():
    clock = VirtualClock()
    lim = RateLimiter(tpm=600, clock=clock)  # a slice of 10 tokens, a minute of 600
    assert lim.acquire(5) == 0.0
    assert lim.acquire(300) == pytest.approx(0.5)  # waits for a full bucket, not for 300
    assert lim.status()["tokens_available"] == pytest.approx(-290)  # a debt
    assert lim.acquire(1) == pytest.approx(29.1)  # paid off before anything else
    with pytest.raises(ValueError, match=r"demand=601 .*most it admits is 600 \(tpm 600: one "
                                         r"minute's limit"):
        lim.acquire(601)  # more than a whole minute: never served by the provider either
    # small limits work: rpm=2 is one request every 30 s
    clock = VirtualClock()
    slow = RateLimiter(rpm=2, clock=clock)
    assert [slow.acquire() for _ in range(3)] == [0.0, pytest.approx(30.0), pytest.approx(30.0)]


# ---------------------------------------------------------------------------------------------
# learning the estimate error


def test_settle_learns_the_ratio_of_actual_to_estimated_input():
    clock = VirtualClock()
    lim = RateLimiter(tpm=60_000, clock=clock, burst_seconds=60)
    for _ in range(10):
        lim.acquire(Demand(100, 50))
        lim.settle(Demand(100, 50), Demand(120, 50))  # the provider counts 20% more input
    assert lim.status()["estimate_ratio"] == pytest.approx(1.2)
    before = lim.status()["tokens_available"]
    lim.acquire(Demand(100, 50))  # charged 100 x 1.2 + 50
    assert before - lim.status()["tokens_available"] == pytest.approx(170)
    lim.settle(Demand(100, 50), Demand(120, 50))  # exactly what was charged: no change
    assert before - lim.status()["tokens_available"] == pytest.approx(170)


def test_settle_uses_the_ratio_the_request_was_charged_with():
    """A request acquired before the ratio was learned is settled with the ratio then (1.0),
    not the one learned meanwhile: otherwise its 20% would never be charged."""
    clock = VirtualClock()
    lim = RateLimiter(tpm=60_000, clock=clock, burst_seconds=60)
    lim.settle(Demand(100), Demand(120))  # learned: 1.2 (lim remembers grants from now on)
    results = {}

    async def early():  # acquired at ratio 1.2 ... (its own task: its own last grant)
        await lim.acquire_async(Demand(100))
        await clock.asleep(1)
        results["early"] = lim.status()["tokens_available"]
        lim.settle(Demand(100), Demand(120))
        results["after"] = lim.status()["tokens_available"]

    async def teach():  # ... while another task's answer teaches it 1.5
        await clock.asleep(0.5)
        for _ in range(20):
            lim.settle(Demand(100), Demand(150))

    async def main():
        await asyncio.gather(early(), teach())

    asyncio.run(main())
    assert lim.status()["estimate_ratio"] > 1.4
    # early was charged 120 and used 120: settling it changes nothing
    assert results["after"] == pytest.approx(results["early"])


def test_the_learned_ratio_never_discounts_and_is_capped():
    clock = VirtualClock()
    lim = RateLimiter(tpm=60_000, clock=clock)
    lim.settle(Demand(100), Demand(50))  # the provider counted fewer: no discount
    assert lim.status()["estimate_ratio"] == 1.0
    for actual in (60, 130, 70, 125, 65, 120):  # fewer on average, widely spread: no cushion
        lim.settle(Demand(100), Demand(actual))
    assert lim.status()["estimate_ratio"] == 1.0
    for _ in range(20):
        lim.settle(Demand(10), Demand(1000))  # absurd: capped
    assert lim.status()["estimate_ratio"] == 4.0
    lim2 = RateLimiter(tpm=60_000, clock=clock)
    lim2.settle(Demand(0.5), Demand(1000))  # an estimate under 1 token teaches nothing
    assert lim2.status()["estimate_ratio"] == 1.0


# ---------------------------------------------------------------------------------------------
# headers: Anthropic's, aged for what was sent since, bad input


def test_anthropic_headers_lower_each_bucket_and_report_rfc3339_resets():
    clock = VirtualClock()
    lim = RateLimiter(rpm=50, itpm=40_000, otpm=8_000, clock=clock, name="claude",
                      burst_seconds=60)
    events = []
    lim.subscribe(events.append)
    lim.update_from_headers({
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-12-05T04:52:01Z",
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-reset": "2026-12-05T04:52:00.5Z",
        "anthropic-ratelimit-output-tokens-remaining": "7000",
        "anthropic-ratelimit-output-tokens-reset": "not a time",
    })
    st = lim.status()
    assert (st["requests_available"], st["input_tokens_available"],
            st["output_tokens_available"]) == (49, 39_000, 7_000)
    sync = events[-1].data
    assert sync["remaining_input_tokens"] == 39_000 and sync["remaining_output_tokens"] == 7000
    assert sync["reset_requests_at"] == pytest.approx(1796446321.0)
    assert sync["reset_input_tokens_at"] == pytest.approx(1796446320.5)
    assert "reset_output_tokens_at" not in sync  # unreadable: ignored


def test_a_stale_header_is_aged_by_what_was_granted_since_its_request():
    clock = VirtualClock()
    lim = RateLimiter(tpm=60_000, clock=clock, burst_seconds=60)
    lim.update_from_headers({})  # syncing from now on: grants are remembered
    lim.acquire(1000)  # this thread's request; its answer carries the header below
    clock.advance(0.1)
    other = threading.Thread(target=lambda: [lim.acquire(500) for _ in range(4)])
    other.start()
    other.join()  # 2,000 granted to another thread after ours was sent
    # the server wrote 59,000 when our request arrived: it cannot know about the 2,000
    # locally: 60,000 - 1,000 + 100 (0.1 s of refill) - 2,000 = 57,100
    lim.update_from_headers({"x-ratelimit-remaining-tokens": "58500"})
    # the server now holds 58,500 + 100 (its refill since) - 2,000 = 56,600
    assert lim.status()["tokens_available"] == pytest.approx(56_600)
    # read as fresh (sent now, nothing granted since), the same header lowers only to 58,500
    lim2 = RateLimiter(tpm=60_000, clock=clock, burst_seconds=60)
    lim2.acquire(3000)
    lim2.update_from_headers({"x-ratelimit-remaining-tokens": "58500"}, sent_at=clock.now())
    assert lim2.status()["tokens_available"] == pytest.approx(57_000)  # not lowered
    lim2.update_from_headers({"x-ratelimit-remaining-tokens": "56000"}, sent_at=clock.now())
    assert lim2.status()["tokens_available"] == pytest.approx(56_000)


def test_update_from_headers_refuses_what_is_not_a_mapping():
    lim = RateLimiter(rpm=60, clock=VirtualClock())
    for bad in (None, [("x-ratelimit-remaining-requests", "1")], "x-ratelimit: 1", 5):
        with pytest.raises(TypeError, match="headers must be a mapping"):
            lim.update_from_headers(bad)
    with pytest.raises(ValueError, match="sent_at must be a finite number, got nan"):
        lim.update_from_headers({}, sent_at=float("nan"))
    lim.update_from_headers({"x-ratelimit-remaining-requests": "-3",  # ignored, never raised
                             "x-ratelimit-limit-requests": "inf",
                             "x-ratelimit-reset-requests": "1e12s"})
    assert lim.status()["requests_available"] == 1


# ---------------------------------------------------------------------------------------------
# bounded waits


@pytest.mark.parametrize("seconds", [1e12, 1e308, float("inf")])
def test_an_absurd_pause_is_logged_once_and_clamped(seconds, caplog):
    clock = VirtualClock()
    lim = RateLimiter(rpm=60, clock=clock, name="openai", max_retry_after=120)
    with caplog.at_level(logging.DEBUG, logger="llm_patterns.rate_limit"):
        lim.penalize(seconds)
        lim.penalize(seconds)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "max_retry_after=120" in warnings[0].getMessage()
    assert lim.status()["penalty_remaining"] == 120
    assert lim.acquire() == pytest.approx(120)  # slept 120 s, not 31,700 years
    with pytest.raises(ValueError, match="seconds must be a number >= 0, got nan"):
        lim.penalize(float("nan"))


def test_async_twins_of_the_bookkeeping():
    clock = VirtualClock()
    lim = RateLimiter(tpm=6000, clock=clock, burst_seconds=60)

    async def main():
        await lim.acquire_async(100)
        await lim.asettle(100, 300)
        await lim.apenalize(2)
        await lim.aupdate_from_headers({"x-ratelimit-remaining-tokens": "10"})

    asyncio.run(main())
    st = lim.status()
    assert st["tokens_available"] == 10 and st["penalty_remaining"] == 2
    assert isinstance(lim, Limiter)


@pytest.mark.parametrize("headers", [None, 42, "x-ratelimit-remaining-requests: 3"])
def test_update_from_headers_names_a_non_mapping_and_keeps_the_levels(headers):
    limiter = RateLimiter(rpm=60, clock=VirtualClock())
    before = limiter.requests_bucket.available
    with pytest.raises(TypeError, match="headers must be a mapping"):
        limiter.update_from_headers(headers)
    assert limiter.requests_bucket.available == before
    limiter.update_from_headers({"x-ratelimit-remaining-requests": "0"})  # a mapping still works
    assert limiter.requests_bucket.available == 0 < before
