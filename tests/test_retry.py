"""RetryPolicy on a VirtualClock with seeded rngs: waits, give-up rules, notes, logs, events."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading

import httpx
import pytest

import llm_patterns
from llm_patterns import retry as retry_module
from llm_patterns.backoff import BackoffPolicy
from llm_patterns.clock import VirtualClock
from llm_patterns.errors import (
    BudgetExceeded,
    ConnectionFailed,
    InvalidRequestError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from llm_patterns.retry import RetryPolicy, current_attempt, testing

NO_JITTER = BackoffPolicy(jitter="none")


class Script:
    """A callable that raises the scripted errors in order, then returns ``result``.

    Records the clock time of every call, and can spend ``work`` seconds of clock time per call.
    """

    def __init__(self, clock, errors, result="ok", work=0.0):
        self.clock, self.errors, self.result, self.work = clock, list(errors), result, work
        self.times: list[float] = []
        self.attempts_seen: list[int] = []

    def __call__(self, *args, **kwargs):
        self.times.append(self.clock.now())
        self.attempts_seen.append(current_attempt())
        self.clock.sleep(self.work)
        if self.errors:
            raise self.errors.pop(0)
        return (self.result, args, kwargs)


def overloaded(i=0):
    return ServerError(f"overloaded {i}", provider="primary", status_code=503)


def policy(clock, **kw):
    kw.setdefault("backoff", NO_JITTER)
    kw.setdefault("rng", random.Random(0))
    return RetryPolicy(clock=clock, **kw)


def events_of(p):
    seen = []
    p.subscribe(seen.append)
    return seen


# ---------------------------------------------------------------------------- success path


def test_succeeds_after_transient_failures_with_1_2_4_second_waits():
    clock = VirtualClock()
    fn = Script(clock, [overloaded(1), overloaded(2), overloaded(3)])
    result = policy(clock).call(fn, 1, key="v")
    assert result == ("ok", (1,), {"key": "v"})
    assert fn.times == [0, 1, 3, 7]
    assert clock.now() == 7
    assert fn.attempts_seen == [1, 2, 3, 4]
    assert current_attempt() == 0


def test_default_backoff_waits_are_the_seeded_full_jitter_draws():
    clock = VirtualClock()
    fn = Script(clock, [overloaded() for _ in range(4)])
    RetryPolicy(clock=clock, rng=random.Random(5)).call(fn)
    waits = [b - a for a, b in zip(fn.times, fn.times[1:])]
    rng, b = random.Random(5), BackoffPolicy()
    expected = [b.delay(k, rng) for k in range(4)]
    assert waits == pytest.approx(expected)
    for k, w in enumerate(waits):
        assert 0 <= w <= 2**k
    assert len(set(waits)) == 4


def test_the_time_spent_in_attempts_counts_towards_the_clock_not_the_waits():
    clock = VirtualClock()
    fn = Script(clock, [overloaded(), overloaded()], work=0.5)
    policy(clock).call(fn)
    assert fn.times == [0, 1.5, 4.0]


def test_decorrelated_backoff_is_fed_the_previous_delay():
    clock = VirtualClock()
    fn = Script(clock, [overloaded() for _ in range(6)])
    b = BackoffPolicy(jitter="decorrelated", max_delay=1000)
    policy(clock, backoff=b, max_attempts=7, rng=random.Random(3)).call(fn)
    waits = [y - x for x, y in zip(fn.times, fn.times[1:])]
    assert waits == pytest.approx(list(b.delays(6, random.Random(3))))


# ---------------------------------------------------------------------------- giving up


def test_non_retryable_error_is_raised_after_one_attempt_unchanged(caplog):
    clock = VirtualClock()
    err = InvalidRequestError("bad model", provider="primary", status_code=400)
    fn = Script(clock, [err])
    p = policy(clock)
    seen = events_of(p)
    with (
        caplog.at_level(logging.DEBUG, logger="llm_patterns.retry"),
        pytest.raises(InvalidRequestError) as info,
    ):
        p.call(fn)
    assert info.value is err
    assert not getattr(err, "__notes__", None)
    assert len(fn.times) == 1 and clock.now() == 0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [(e.kind, e.data["reason"]) for e in seen] == [("give_up", "not_retryable")]


def test_non_retryable_after_retries_gets_a_note():
    clock = VirtualClock()
    err = InvalidRequestError("bad", status_code=400)
    fn = Script(clock, [overloaded(), err])
    with pytest.raises(InvalidRequestError) as info:
        policy(clock).call(fn)
    assert info.value is err and len(fn.times) == 2
    assert "not retryable" in info.value.__notes__[0] and "2/5" in info.value.__notes__[0]


@pytest.mark.parametrize(
    "retry_on", [None, lambda e: True, RateLimitError, (RateLimitError, ServerError)]
)
def test_quota_exceeded_is_never_retried(retry_on):
    clock = VirtualClock()
    err = QuotaExceededError("insufficient_quota", status_code=429, retry_after=1.0)
    fn = Script(clock, [err, err])
    kw = {} if retry_on is None else {"retry_on": retry_on}
    with pytest.raises(QuotaExceededError) as info:
        policy(clock, **kw).call(fn)
    assert info.value is err and len(fn.times) == 1


def test_budget_exceeded_is_never_retried_and_retry_on_types_work():
    clock = VirtualClock()
    fn = Script(clock, [BudgetExceeded("over budget")])
    with pytest.raises(BudgetExceeded):
        policy(clock, retry_on=lambda e: True).call(fn)
    assert len(fn.times) == 1
    fn = Script(clock, [KeyError("x"), KeyError("y")])
    assert policy(clock, retry_on=KeyError).call(fn)[0] == "ok" and len(fn.times) == 3


def test_the_last_error_is_reraised_itself_with_a_note():
    clock = VirtualClock()
    errors = [overloaded(i) for i in range(3)]
    fn = Script(clock, errors)
    with pytest.raises(ServerError) as info:
        policy(clock, max_attempts=3).call(fn)
    assert info.value is errors[2]  # the same object, not a wrapper, not the first error
    assert info.value.__notes__ == ["llm_patterns.retry: gave up after 3 attempts over 3.00 s"]
    # the traceback still reaches the frame that raised it
    frames = [tb.tb_frame.f_code.co_name for tb in _walk(info.value.__traceback__)]
    assert "__call__" in frames
    assert clock.now() == 3


def _walk(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_max_attempts_one_means_no_retry():
    clock = VirtualClock()
    fn = Script(clock, [overloaded()])
    with pytest.raises(ServerError) as info:
        policy(clock, max_attempts=1).call(fn)
    assert len(fn.times) == 1 and "gave up after 1 attempt over" in info.value.__notes__[0]


def test_base_exceptions_are_never_retried():
    clock = VirtualClock()
    fn = Script(clock, [KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        policy(clock, retry_on=lambda e: True).call(fn)
    assert len(fn.times) == 1


# ---------------------------------------------------------------------------- Retry-After


def test_retry_after_is_a_floor_with_a_small_jitter_on_top():
    clock = VirtualClock()
    fn = Script(clock, [RateLimitError("slow down", status_code=429, retry_after=5.0)])
    policy(clock).call(fn)
    wait = fn.times[1]
    assert 5.0 < wait <= 5.5  # backoff says 1 s; the server says 5 s; + U(0, 0.5)


def test_retry_after_jitter_is_capped_at_one_second():
    clock = VirtualClock()
    waits = []
    for seed in range(50):
        clock = VirtualClock()
        fn = Script(clock, [RateLimitError("x", retry_after=100.0)])
        policy(clock, rng=random.Random(seed)).call(fn)
        waits.append(fn.times[1])
    assert all(100.0 <= w <= 101.0 for w in waits)
    assert max(waits) - min(waits) > 0.8  # really jittered


def test_shorter_retry_after_loses_to_backoff_and_is_used_without_extra_jitter():
    clock = VirtualClock()
    fn = Script(clock, [overloaded(), RateLimitError("x", retry_after=0.5)])
    policy(clock).call(fn)
    assert fn.times == [0, 1, 3]


def test_retry_after_ignored_when_respect_retry_after_is_false():
    clock = VirtualClock()
    fn = Script(clock, [RateLimitError("x", retry_after=30.0)])
    policy(clock, respect_retry_after=False).call(fn)
    assert fn.times == [0, 1]


def test_retry_after_above_max_retry_after_stops_at_once():
    clock = VirtualClock()
    err = RateLimitError("come back later", status_code=429, retry_after=300.0)
    fn = Script(clock, [err])
    p = policy(clock)
    seen = events_of(p)
    with pytest.raises(RateLimitError) as info:
        p.call(fn)
    assert info.value is err and len(fn.times) == 1 and clock.now() == 0
    note = info.value.__notes__[0]
    assert "Retry-After 300 s" in note and "max_retry_after=120 s" in note
    assert seen[-1].kind == "give_up" and seen[-1].data["reason"] == "retry_after_too_long"
    # a larger max_retry_after waits it out
    clock2 = VirtualClock()
    fn2 = Script(clock2, [RateLimitError("x", retry_after=300.0)])
    policy(clock2, max_retry_after=600).call(fn2)
    assert 300 <= fn2.times[1] <= 301


# ---------------------------------------------------------------------------- deadline


def test_a_wait_that_would_pass_the_deadline_stops_at_once():
    clock = VirtualClock()
    errors = [overloaded(i) for i in range(5)]
    fn = Script(clock, errors)
    p = policy(clock, deadline=5.0)
    seen = events_of(p)
    with pytest.raises(ServerError) as info:
        p.call(fn)
    # attempts at 0, 1, 3; the next wait (4 s) would end at 7 > 5
    assert fn.times == [0, 1, 3] and clock.now() == 3
    assert info.value is errors[2]
    note = info.value.__notes__[0]
    assert "deadline" in note and "4.00 s" in note and "3 attempts" in note
    assert seen[-1].data["reason"] == "deadline"


def test_deadline_counts_time_spent_in_attempts_and_retry_after():
    clock = VirtualClock()
    fn = Script(clock, [RateLimitError("x", retry_after=8.0)], work=3.0)
    with pytest.raises(RateLimitError):
        policy(clock, deadline=10.0).call(fn)  # 3 s spent + >= 8 s wait > 10 s
    assert len(fn.times) == 1 and clock.now() == 3.0


# ---------------------------------------------------------------------------- logging


def test_each_retry_logs_one_warning_with_attempt_error_and_delay(caplog):
    clock = VirtualClock()
    fn = Script(
        clock,
        [
            overloaded(1),
            RateLimitError("too many", provider="primary", status_code=429, retry_after=3.0),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="llm_patterns.retry"):
        policy(clock, name="chat").call(fn)
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_patterns.retry"]
    assert lines[0] == (
        "[chat] attempt 1/5 failed with ServerError: [primary] HTTP 503: overloaded 1; "
        "retrying in 1.00 s"
    )
    assert lines[1].startswith(
        "[chat] attempt 2/5 failed with RateLimitError: [primary] HTTP 429: too many "
        "(retry after 3 s); retrying in 3."
    )
    assert lines[1].endswith("s (Retry-After 3 s)")
    assert len(lines) == 2
    assert all(r.levelno == logging.WARNING for r in caplog.records)


def test_giving_up_logs_and_secrets_never_reach_the_log(caplog):
    clock = VirtualClock()
    secret = "sk-proj-abcdef1234567890"
    errors = [ConnectionFailed(f"refused https://x.test/v1?key={secret} with {secret}")] * 2
    fn = Script(clock, errors)
    with (
        caplog.at_level(logging.WARNING, logger="llm_patterns.retry"),
        pytest.raises(ConnectionFailed),
    ):
        policy(clock, max_attempts=2).call(fn)
    text = caplog.text
    assert "attempt 1/2 failed with ConnectionFailed" in text
    assert "giving up (exhausted) after attempt 2/2" in text
    assert secret not in text and "abcdef1234567890" not in text


# ---------------------------------------------------------------------------- events


def test_events_retry_then_success():
    clock = VirtualClock()
    fn = Script(clock, [overloaded(1), overloaded(2)])
    p = policy(clock, name="ev")
    seen = events_of(p)
    p.call(fn)
    assert [e.kind for e in seen] == ["retry", "retry", "success"]
    first = seen[0]
    assert (first.source, first.name, first.time) == ("retry", "ev", 0)
    assert first.data["attempt"] == 1 and first.data["max_attempts"] == 5
    assert first.data["delay"] == 1.0 and first.data["error_type"] == "ServerError"
    assert first.data["status_code"] == 503 and isinstance(first.data["error"], ServerError)
    assert seen[1].data["attempt"] == 2 and seen[1].data["delay"] == 2.0
    assert seen[2].data == {"attempts": 3, "elapsed": 3.0}


def test_give_up_event_when_exhausted():
    clock = VirtualClock()
    err = overloaded()
    p = policy(clock, max_attempts=2)
    seen = events_of(p)
    with pytest.raises(ServerError):
        p.call(Script(clock, [err, err]))
    assert [e.kind for e in seen] == ["retry", "give_up"]
    assert seen[1].data["attempts"] == 2 and seen[1].data["reason"] == "exhausted"
    assert seen[1].data["error"] is err


# ---------------------------------------------------------------------------- raw httpx errors


def _status_error(status, headers=None, body=None):
    request = httpx.Request("POST", "https://api.test/v1/chat/completions")
    response = httpx.Response(status, headers=headers, json=body or {}, request=request)
    return httpx.HTTPStatusError(f"HTTP {status}", request=request, response=response)


def test_raw_httpx_errors_are_classified_by_is_retryable():
    request = httpx.Request("GET", "https://api.test")
    clock = VirtualClock()
    fn = Script(
        clock,
        [
            httpx.ConnectError("refused", request=request),
            httpx.ReadTimeout("slow", request=request),
            _status_error(503),
        ],
    )
    assert policy(clock).call(fn)[0] == "ok" and len(fn.times) == 4

    for error in (
        _status_error(400),
        _status_error(401),
        _status_error(429, body={"error": {"code": "insufficient_quota"}}),
    ):
        fn = Script(clock, [error])
        with pytest.raises(httpx.HTTPStatusError) as info:
            policy(clock).call(fn)
        assert info.value is error and len(fn.times) == 1


def test_raw_httpx_429_retry_after_header_is_honoured():
    clock = VirtualClock()
    fn = Script(clock, [_status_error(429, headers={"retry-after": "7"})])
    policy(clock).call(fn)
    assert 7.0 <= fn.times[1] <= 7.7


# ---------------------------------------------------------------------------- async


def test_call_async_waits_on_the_virtual_clock():
    clock = VirtualClock()
    times = []

    async def flaky(x):
        times.append((clock.now(), current_attempt()))
        if len(times) < 3:
            raise overloaded()
        return x * 2

    result = asyncio.run(policy(clock).call_async(flaky, 21))
    assert result == 42 and times == [(0, 1), (1, 2), (3, 3)] and clock.now() == 3


def test_call_async_gives_up_with_the_last_error_and_a_note():
    clock = VirtualClock()
    errors = [overloaded(i) for i in range(3)]

    async def failing():
        raise errors.pop(0)

    async def main():
        with pytest.raises(ServerError) as info:
            await policy(clock, max_attempts=3).call_async(failing)
        return info.value

    err = asyncio.run(main())
    assert str(err) == "[primary] HTTP 503: overloaded 2"
    assert err.__notes__ == ["llm_patterns.retry: gave up after 3 attempts over 3.00 s"]


def test_concurrent_async_callers_keep_their_own_state():
    clock = VirtualClock()
    p = policy(clock, max_attempts=4)

    def make(failures):
        calls = []

        async def fn():
            calls.append(clock.now())
            if len(calls) <= failures:
                raise overloaded()
            return (failures, current_attempt(), list(calls))

        return fn

    async def main():
        return await asyncio.gather(*(p.call_async(make(f)) for f in (0, 1, 2, 3, 2, 1)))

    results = asyncio.run(main())
    expected_times = {0: [0], 1: [0, 1], 2: [0, 1, 3], 3: [0, 1, 3, 7]}
    for failures, attempt, calls in results:
        assert attempt == failures + 1
        assert calls == expected_times[failures]
    assert clock.now() == 7


def test_concurrent_threads_share_one_policy():
    clock = VirtualClock()
    p = policy(clock, max_attempts=6, retry_on=lambda e: isinstance(e, ValueError))
    results = {}

    def worker(i):
        attempts = []

        def fn():
            attempts.append(current_attempt())
            if len(attempts) <= i % 4:
                raise ValueError(i)
            return current_attempt()

        results[i] = (p.call(fn), attempts)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (final, attempts) in results.items():
        assert final == i % 4 + 1 and attempts == list(range(1, i % 4 + 2))


def test_wrong_kind_of_function_is_a_type_error_not_a_retry():
    clock = VirtualClock()
    p = policy(clock)

    async def coro_fn():
        return 1

    with pytest.raises(TypeError, match="call_async"):
        p.call(coro_fn)
    with pytest.raises(TypeError, match="coroutine"):
        p.call(lambda: coro_fn())
    calls = []

    def sync_fn():
        calls.append(1)
        return 1

    with pytest.raises(TypeError, match="awaitable"):
        asyncio.run(p.call_async(sync_fn))
    assert calls == [1] and clock.now() == 0


# ---------------------------------------------------------------------------- decorators


def test_wrap_sync_and_async_keep_names_and_retry():
    clock = VirtualClock()
    p = policy(clock)
    state = {"sync": 0, "async": 0}

    @p.wrap
    def fetch(x):
        """Fetch x."""
        state["sync"] += 1
        if state["sync"] < 2:
            raise overloaded()
        return x

    @p
    async def afetch(x):
        state["async"] += 1
        if state["async"] < 3:
            raise overloaded()
        return x

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetch x." and fetch.retry_policy is p
    assert afetch.__name__ == "afetch" and inspect.iscoroutinefunction(afetch)
    assert fetch(5) == 5 and state["sync"] == 2
    assert asyncio.run(afetch(6)) == 6 and state["async"] == 3
    assert clock.now() == 1 + 1 + 2


# ---------------------------------------------------------------------------- testing mode


def test_testing_mode_caps_attempts_and_removes_waits():
    clock = VirtualClock()
    p = policy(clock)
    with testing(attempts=2):
        fn = Script(clock, [overloaded() for _ in range(5)])
        with pytest.raises(ServerError):
            p.call(fn)
        assert len(fn.times) == 2 and clock.now() == 0
        with testing(attempts=10, no_wait=False):  # nests; caps, never raises a smaller limit
            fn = Script(clock, [overloaded() for _ in range(5)])
            with pytest.raises(ServerError):
                policy(clock, max_attempts=3).call(fn)
            assert fn.times == [0, 1, 3]
        fn = Script(clock, [overloaded()])
        assert p.call(fn)[0] == "ok" and clock.now() == 3  # back to no waits
    fn = Script(clock, [overloaded()])
    p.call(fn)
    assert fn.times[1] - fn.times[0] == 1  # restored on exit
    with testing():
        fn = Script(clock, [overloaded()])
        with pytest.raises(ServerError):
            p.call(fn)
        assert len(fn.times) == 1
    with pytest.raises(ValueError, match="attempts"), testing(attempts=0):
        pass


# ---------------------------------------------------------------------------- thundering herd


def _peak(times, window):
    times, j, best = sorted(times), 0, 0
    for i, t in enumerate(times):
        while t - times[j] >= window:
            j += 1
        best = max(best, i - j + 1)
    return best


def _herd_first_retries(n, backoff, error_factory, seed=2024):
    """n clients fail together at t=0; the virtual time of each one's second attempt."""
    clock = VirtualClock()
    p = RetryPolicy(backoff=backoff, clock=clock, rng=random.Random(seed))
    second = []

    def client():
        calls = []

        async def fn():
            calls.append(clock.now())
            if len(calls) == 1:
                raise error_factory()
            second.append(clock.now())

        return fn

    async def main():
        await asyncio.gather(*(p.call_async(client()) for _ in range(n)))

    asyncio.run(main())
    assert len(second) == n
    return second


def test_thundering_herd_full_jitter_spreads_the_first_retry():
    # The first retry waits U(0, base_delay), so over 1 s a 100 ms window averages 10% of the
    # herd; with base_delay=2 s it averages 5%. No jitter puts all 1000 in the same instant.
    spread_1s = _herd_first_retries(1000, BackoffPolicy(), overloaded)
    spread_2s = _herd_first_retries(1000, BackoffPolicy(base_delay=2.0), overloaded)
    herd = _herd_first_retries(1000, BackoffPolicy(jitter="none"), overloaded)
    assert _peak(spread_2s, 0.1) <= 75  # <= 7.5% (mean 5%)
    assert _peak(spread_1s, 0.1) <= 135  # <= 13.5% (mean 10%)
    assert _peak(herd, 0.1) == 1000  # the check can fail


def test_thundering_herd_told_the_same_retry_after_does_not_return_in_the_same_millisecond():
    times = _herd_first_retries(1000, BackoffPolicy(), lambda: RateLimitError("x", retry_after=2.0))
    assert min(times) >= 2.0 and max(times) <= 2.2
    assert _peak(times, 0.001) <= 20  # <= 2% of the herd in any millisecond (mean 0.5%)


# ---------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"max_attempts": 0}, ValueError, ["max_attempts", "0"]),
        ({"max_attempts": -3}, ValueError, ["max_attempts", "-3"]),
        ({"max_attempts": 2.5}, TypeError, ["max_attempts", "2.5"]),
        ({"max_attempts": True}, TypeError, ["max_attempts"]),
        ({"deadline": 0}, ValueError, ["deadline", "0"]),
        ({"deadline": -1}, ValueError, ["deadline", "-1"]),
        ({"deadline": float("nan")}, ValueError, ["deadline", "nan"]),
        ({"deadline": float("inf")}, ValueError, ["deadline", "inf"]),
        ({"max_retry_after": -1}, ValueError, ["max_retry_after", "-1"]),
        # finite: a Retry-After of 1e12 s must be refused, not slept (issue 20)
        ({"max_retry_after": float("inf")}, ValueError, ["max_retry_after", "inf"]),
        ({"max_retry_after": "60"}, TypeError, ["max_retry_after", "'60'"]),
        ({"respect_retry_after": "no"}, TypeError, ["respect_retry_after", "'no'"]),
        ({"respect_retry_after": 0}, TypeError, ["respect_retry_after"]),
        ({"rng": 3}, TypeError, ["rng"]),
        ({"clock": 3}, TypeError, ["clock"]),
        ({"name": 3}, TypeError, ["name"]),
        ({"retry_on": 42}, TypeError, ["retry_on", "42"]),
        ({"backoff": "expo"}, TypeError, ["backoff", "expo"]),
    ],
)
def test_bad_parameters(kwargs, exc, words):
    with pytest.raises(exc) as info:
        RetryPolicy(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_defaults_repr_and_package_export():
    p = RetryPolicy()
    assert p.max_attempts == 5 and p.backoff == BackoffPolicy() and p.deadline is None
    assert p.max_retry_after == 120.0 and p.respect_retry_after is True
    assert repr(p).startswith("RetryPolicy(max_attempts=5, backoff=BackoffPolicy(")
    assert llm_patterns.RetryPolicy is RetryPolicy and llm_patterns.BackoffPolicy is BackoffPolicy
    assert retry_module.logger.name == "llm_patterns.retry"
