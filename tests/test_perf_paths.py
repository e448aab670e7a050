"""The second performance pass keeps behaviour: fast paths (first retry attempt, CLOSED breaker,
VirtualClock driver, event construction, duration parsing, prompt picks) against the slow ones."""

from __future__ import annotations

import asyncio
import random

import pytest

from llm_patterns.backoff import BackoffPolicy
from llm_patterns.circuit_breaker import CircuitBreaker, CircuitState
from llm_patterns.clock import SystemClock, VirtualClock
from llm_patterns.course.simulation import Scenario, Simulation, Timeline
from llm_patterns.errors import ServerError
from llm_patterns.events import Event, Observable, _new_event
from llm_patterns.rate_headers import parse_duration as _parse_duration
from llm_patterns.rate_limit import RateLimiter
from llm_patterns.retry import RetryPolicy, current_attempt


def _policy(clock: VirtualClock, **kw: object) -> RetryPolicy:
    return RetryPolicy(max_attempts=3, backoff=BackoffPolicy(base_delay=1.0, max_delay=1.0,
                                                             jitter="none"),
                       clock=clock, rng=random.Random(0), **kw)


# ------------------------------------------------------------------ retry: the first attempt

def test_first_attempt_success_reports_attempt_one_and_its_elapsed_time() -> None:
    clock = VirtualClock()
    policy = _policy(clock)
    events = []
    policy.subscribe(events.append)

    def work() -> int:
        clock.sleep(2.5)
        return current_attempt()

    assert policy.call(work) == 1
    assert [(e.kind, e.data) for e in events] == [("success", {"attempts": 1, "elapsed": 2.5})]


@pytest.mark.parametrize("use_async", [False, True])
def test_deadline_counts_the_first_attempt_although_its_state_is_built_late(
        use_async: bool) -> None:
    """The per-call state is only built at the first failure; the deadline must still count
    the time the first attempt took (5 s here: 5 + a 1 s wait passes a 5.5 s deadline)."""
    clock = VirtualClock()
    policy = _policy(clock, deadline=5.5)
    events = []
    policy.subscribe(events.append)

    def fail_slowly() -> None:
        clock.sleep(5.0)
        raise ServerError("down", provider="p", status_code=503)

    async def afail_slowly() -> None:
        fail_slowly()

    with pytest.raises(ServerError) as info:
        if use_async:
            asyncio.run(policy.call_async(afail_slowly))
        else:
            policy.call(fail_slowly)
    give_up = [e for e in events if e.kind == "give_up"]
    assert give_up and give_up[0].data["reason"] == "deadline"
    assert give_up[0].data["elapsed"] == 5.0
    assert any("deadline" in note for note in getattr(info.value, "__notes__", []))


@pytest.mark.parametrize("use_async", [False, True])
def test_retries_after_a_failed_first_attempt_count_from_two(use_async: bool) -> None:
    clock = VirtualClock()
    policy = _policy(clock)
    seen: list[int] = []

    def flaky() -> str:
        seen.append(current_attempt())
        if len(seen) < 3:
            raise ServerError("down", provider="p", status_code=503)
        return "ok"

    async def aflaky() -> str:
        return flaky()

    result = asyncio.run(policy.call_async(aflaky)) if use_async else policy.call(flaky)
    assert result == "ok"
    assert seen == [1, 2, 3]
    assert clock.now() == 2.0  # two 1 s waits, nothing else


def test_sync_call_still_refuses_coroutines() -> None:
    policy = _policy(VirtualClock())

    async def coro() -> None:
        return None

    with pytest.raises(TypeError, match="async function"):
        policy.call(coro)
    with pytest.raises(TypeError, match="returned a coroutine"):
        policy.call(lambda: coro())


# ------------------------------------------------------------------ breaker: the CLOSED fast path

def test_a_success_admitted_before_the_breaker_opened_does_not_close_it() -> None:
    clock = VirtualClock()
    breaker = CircuitBreaker("p", failure_threshold=2, reset_timeout=10, clock=clock)

    def fail() -> None:
        raise ServerError("down", provider="p", status_code=503)

    def slow_success() -> str:  # while it runs, two other calls fail and open the breaker
        for _ in range(2):
            with pytest.raises(ServerError):
                breaker.call(fail)
        return "late"

    assert breaker.call(slow_success) == "late"
    assert breaker.state is CircuitState.OPEN
    health = breaker.health()
    assert health["successes"] == 1 and health["failures"] == 2 and health["calls"] == 3


def test_closed_fast_path_keeps_stats_and_resets_the_failure_run() -> None:
    breaker = CircuitBreaker("p", failure_threshold=3, clock=VirtualClock())
    with pytest.raises(ServerError):
        breaker.call(lambda: (_ for _ in ()).throw(ServerError("x", status_code=500)))
    assert breaker.consecutive_failures == 1
    assert breaker.call(lambda: 7) == 7
    assert breaker.consecutive_failures == 0
    assert breaker.health()["calls"] == 2 and breaker.health()["successes"] == 1


def test_breaker_success_events_still_reach_subscribers() -> None:
    breaker = CircuitBreaker("p", clock=VirtualClock())
    kinds: list[str] = []
    breaker.subscribe(lambda e: kinds.append(e.kind))
    breaker.call(lambda: None)
    asyncio.run(breaker.call_async(asyncio.sleep, 0))
    assert kinds == ["success", "success"]


# ------------------------------------------------------------------ clocks

def test_system_clock_now_is_monotonic_time() -> None:
    clock = SystemClock()
    a = clock.now()
    b = clock.now()
    assert isinstance(a, float) and b >= a


def test_virtual_clock_wakes_in_time_order_with_one_pass_per_wake_up() -> None:
    clock = VirtualClock()
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float, again: float) -> None:
        await clock.asleep(seconds)
        order.append((name, clock.now()))
        await clock.asleep(again)
        order.append((name, clock.now()))

    async def main() -> None:
        await asyncio.gather(sleeper("a", 3, 1), sleeper("b", 1, 5), sleeper("c", 2, 0.5))

    asyncio.run(main())
    assert order == [("b", 1), ("c", 2), ("c", 2.5), ("a", 3), ("a", 4), ("b", 6)]


# ------------------------------------------------------------------ events and timeline

def test_fast_event_is_the_same_frozen_event() -> None:
    fast = _new_event("retry", "r", "success", 1.5, {"attempts": 1})
    assert fast == Event("retry", "r", "success", 1.5, {"attempts": 1})
    assert repr(fast) == repr(Event("retry", "r", "success", 1.5, {"attempts": 1}))
    with pytest.raises(AttributeError):
        fast.kind = "other"  # type: ignore[misc]

    class Thing(Observable):
        _event_source = "thing"
        name = "t"

    seen: list[Event] = []
    thing = Thing()
    thing.subscribe(seen.append)
    thing.emit("poke", 2.0, x=1)
    assert seen == [Event("thing", "t", "poke", 2.0, {"x": 1})]


def test_timeline_repr_is_short_and_series_are_kept() -> None:
    sim = Simulation(Scenario(duration=30, seed=1), keep_log=False)
    sim.run_sync()
    timeline = sim.timeline
    assert "primary.requests" in timeline.series
    assert len(timeline.series["primary.requests"]) == len(timeline.series["primary.tokens"])
    text = repr(timeline)
    assert text.startswith("Timeline(") and len(text) < 400
    assert repr(Timeline()) == "Timeline({}, log=0 events)"


def test_without_a_log_the_retry_policy_is_not_observed() -> None:
    assert Simulation(Scenario(duration=10), keep_log=False).retry.observed is False
    assert Simulation(Scenario(duration=10), keep_log=True).retry.observed is True


# ------------------------------------------------------------------ limiter bits

@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("20ms", 0.02), ("1.5s", 1.5), ("6m0s", 360.0), ("1h2m3.5s", 3723.5),
    ("0.5", 0.5), ("5.", 5.0), (" 2.5s ", 2.5), ("3m", 180.0), ("2h", 7200.0),
    ("abc", None), ("", None), ("-1", None), ("inf", None), ("nan", None), ("1.5.5s", None),
    ("5x", None), ("s", None), ("ms", None),
])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert _parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_settle_checks_its_arguments_on_the_fast_path_too() -> None:
    limiter = RateLimiter(tpm=6000, clock=VirtualClock())
    with pytest.raises(ValueError, match="actual"):
        limiter.settle(10, -1)
    with pytest.raises(ValueError, match="estimated"):
        limiter.settle(-3, 10)
    with pytest.raises(TypeError, match="actual"):
        limiter.settle(10, "5")  # type: ignore[arg-type]
    before = limiter.tokens_bucket.available
    limiter.settle(10, 40)
    assert limiter.tokens_bucket.available == pytest.approx(before - 30)
