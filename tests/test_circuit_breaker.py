"""CircuitBreaker: state machine, outage classification, half-open admission, leases, wrappers,
health, listeners, concurrency (real threads, asyncio) and a hypothesis state-machine property;
the Breaker/Permit protocol and the concurrency bounds for SharedCircuitBreaker too (memory and
SQLite stores: one trial for 32 threads or 50 coroutines)."""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_patterns.circuit_breaker import CircuitBreaker, CircuitState, is_outage
from llm_patterns.clock import VirtualClock
from llm_patterns.errors import (
    AuthenticationError,
    CircuitOpenError,
    ConnectionFailed,
    InvalidRequestError,
    MalformedResponse,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from llm_patterns.protocols import Breaker, Permit
from llm_patterns.state import MemoryStateStore, SharedCircuitBreaker, SQLiteStateStore

OPEN, CLOSED, HALF = CircuitState.OPEN, CircuitState.CLOSED, CircuitState.HALF_OPEN


def outage() -> ServerError:
    return ServerError("overloaded", status_code=503)


def make(clock: VirtualClock | None = None, **kw) -> CircuitBreaker:
    kw.setdefault("failure_threshold", 3)
    kw.setdefault("reset_timeout", 30.0)
    return CircuitBreaker("primary", clock=clock or VirtualClock(), **kw)


def half_open(clock: VirtualClock, **kw) -> CircuitBreaker:
    breaker = make(clock, **kw)
    breaker.trip()
    clock.advance(breaker.reset_timeout)
    assert breaker.state is HALF
    return breaker


# ---------------------------------------------------------------- the state machine


def test_state_enum_is_str():
    assert CircuitState.HALF_OPEN == "half_open" and CircuitState.OPEN.value == "open"
    assert isinstance(CircuitState.CLOSED, str)


def test_opens_after_exactly_threshold_consecutive_outages():
    b = make(failure_threshold=3)
    b.record_failure(outage())
    b.record_failure(ProviderTimeout("slow"))
    assert b.state is CLOSED and b.consecutive_failures == 2
    b.record_failure(ConnectionFailed("refused"))
    assert b.state is OPEN
    assert b.allow_request() is False


@pytest.mark.parametrize(
    "error",
    [
        RateLimitError("slow down", status_code=429),
        QuotaExceededError("no credit", status_code=429),
        InvalidRequestError("bad", status_code=400),
        AuthenticationError("key", status_code=401),
        ValueError("a bug in the caller"),
    ],
)
def test_non_outage_errors_neither_count_nor_reset(error):
    b = make(failure_threshold=3)
    b.record_failure(outage())
    b.record_failure(outage())
    for _ in range(10):
        b.record_failure(error)
    assert b.state is CLOSED and b.consecutive_failures == 2  # not counted, not reset
    b.record_failure(outage())
    assert b.state is OPEN
    assert b.health()["ignored_errors"] == 10


def test_default_classification():
    request = httpx.Request("GET", "https://x")
    for err in [
        outage(),
        ProviderTimeout(),
        ConnectionFailed(),
        MalformedResponse(),
        None,
        httpx.ReadTimeout("t", request=request),
        httpx.ConnectError("c", request=request),
        TimeoutError(),
        ConnectionResetError(),
        httpx.HTTPStatusError("e", request=request, response=httpx.Response(502, request=request)),
    ]:
        assert is_outage(err), err
    for err in [
        RateLimitError(),
        InvalidRequestError(),
        AuthenticationError(),
        CircuitOpenError(),
        KeyError("x"),
        httpx.HTTPStatusError("e", request=request, response=httpx.Response(429, request=request)),
    ]:
        assert not is_outage(err), err


def test_error_none_counts_and_custom_is_failure():
    b = make(failure_threshold=2)
    b.record_failure()
    b.record_failure(None)
    assert b.state is OPEN
    b2 = make(failure_threshold=1, is_failure=lambda e: isinstance(e, KeyError))
    b2.record_failure(outage())
    assert b2.state is CLOSED
    b2.record_failure(KeyError("x"))
    assert b2.state is OPEN


def test_success_resets_the_failure_run():
    b = make(failure_threshold=3)
    for _ in range(5):
        b.record_failure(outage())
        b.record_failure(outage())
        b.record_success()
    assert b.state is CLOSED and b.consecutive_failures == 0


def test_half_open_after_reset_timeout_on_the_virtual_clock():
    clock = VirtualClock()
    b = make(clock, failure_threshold=1, reset_timeout=30.0)
    b.record_failure(outage())
    clock.advance(29.999)
    assert b.state is OPEN and b.health()["retry_in"] == pytest.approx(0.001)
    clock.advance(0.001)
    assert b.state is HALF
    assert b.health()["retry_in"] == 0.0


@pytest.mark.parametrize("permits", [1, 3])
def test_half_open_admits_exactly_max_calls(permits):
    clock = VirtualClock()
    b = half_open(clock, half_open_max_calls=permits)
    admitted = [b.allow_request() for _ in range(10)]
    assert admitted == [True] * permits + [False] * (10 - permits)
    assert b.health()["rejections"] == 10 - permits


def test_trial_success_closes_and_resets_counters():
    clock = VirtualClock()
    b = make(clock, failure_threshold=2)
    b.record_failure(outage())
    b.record_failure(outage())
    clock.advance(30)
    assert b.allow_request()
    b.record_success()
    assert b.state is CLOSED and b.consecutive_failures == 0
    assert b.allow_request() and b.allow_request()  # closed: no limit any more


def test_trial_failure_reopens_with_fresh_cooldown():
    clock = VirtualClock()
    b = make(clock, failure_threshold=1, reset_timeout=30.0)
    b.record_failure(outage())
    clock.advance(45)  # half-open since t=30, observed at t=45
    assert b.allow_request()
    clock.advance(5)  # the trial takes 5 s and fails at t=50
    b.record_failure(outage())
    assert b.state is OPEN
    assert b.health()["retry_in"] == pytest.approx(30.0)  # fresh cooldown from t=50
    assert b.health()["last_state_change"] == 50.0
    clock.advance(29.9)
    assert b.state is OPEN
    clock.advance(0.1)
    assert b.state is HALF


def test_non_outage_error_during_trial_gives_the_slot_back():
    clock = VirtualClock()
    b = half_open(clock)
    assert b.allow_request() and not b.allow_request()
    b.record_failure(RateLimitError("429", status_code=429))
    assert b.state is HALF
    assert b.allow_request()  # the slot is free again
    with pytest.raises(CircuitOpenError):
        b.call(_raise, InvalidRequestError("bad"))  # the permit is taken again: rejected
    b.record_success()
    assert b.state is CLOSED


def test_call_gives_slot_back_on_non_outage_error():
    clock = VirtualClock()
    b = half_open(clock)
    with pytest.raises(RateLimitError):
        b.call(_raise, RateLimitError("429"))
    assert b.state is HALF
    assert b.call(lambda: "ok") == "ok"
    assert b.state is CLOSED


def test_probe_lease_expiry_frees_a_stuck_permit(caplog):
    clock = VirtualClock()
    b = half_open(clock, probe_timeout=10.0)
    assert b.allow_request()  # this probe hangs and never reports back
    clock.advance(9.9)
    assert not b.allow_request()
    with caplog.at_level(logging.WARNING, "llm_patterns.circuit_breaker"):
        clock.advance(0.1)
        assert b.allow_request()  # lease expired: the next caller probes
    assert "did not report back within 10.0 s" in caplog.text
    b.record_success()
    assert b.state is CLOSED


def test_late_answer_from_a_lost_probe_does_not_decide():
    clock = VirtualClock()
    b = half_open(clock, probe_timeout=10.0)
    seen = {}

    def hung_probe():
        clock.advance(11)  # lease lost while we were "inside" the call
        seen["second"] = b.allow_request()  # someone else got the freed permit
        raise outage()

    with pytest.raises(ServerError):
        b.call(hung_probe)
    assert seen["second"] is True
    assert b.state is HALF  # the lost probe's failure did not re-open it
    b.record_success()  # the live probe decides
    assert b.state is CLOSED


def test_default_probe_timeout_is_reset_timeout():
    assert make(reset_timeout=12.0).probe_timeout == 12.0
    assert make(reset_timeout=12.0, probe_timeout=3).probe_timeout == 3.0


def test_late_success_from_closed_episode_does_not_close_open_breaker():
    clock = VirtualClock()
    b = make(clock, failure_threshold=1)
    order = []

    def slow_ok():
        b.record_failure(outage())  # another caller trips it meanwhile
        order.append(b.state)
        return "ok"

    assert b.call(slow_ok) == "ok"
    assert order == [OPEN] and b.state is OPEN


# ---------------------------------------------------------------- call, call_async, decorator


def _raise(error):
    raise error


def test_call_raises_circuit_open_with_retry_after():
    clock = VirtualClock()
    b = make(clock, failure_threshold=1, reset_timeout=30.0)
    ran = []
    b.record_failure(outage())
    clock.advance(12)
    with pytest.raises(CircuitOpenError) as info:
        b.call(ran.append, 1)
    assert ran == []
    assert info.value.provider == "primary"
    assert info.value.retry_after == pytest.approx(18.0)
    assert "half-open in 18.0 s" in str(info.value)


def test_half_open_busy_rejection_has_small_positive_retry_after():
    clock = VirtualClock()
    b = half_open(clock, probe_timeout=10.0)
    assert b.allow_request()
    clock.advance(4)
    with pytest.raises(CircuitOpenError) as info:
        b.call(lambda: None)
    assert info.value.retry_after == pytest.approx(6.0)  # when the probe's lease runs out
    assert info.value.retry_after > 0


def test_call_counts_outcomes_and_passes_arguments():
    b = make(failure_threshold=2)
    assert b.call(lambda a, *, k: a + k, 1, k=2) == 3
    with pytest.raises(ServerError):
        b.call(_raise, outage())
    with pytest.raises(ServerError):
        b.call(_raise, outage())
    assert b.state is OPEN
    h = b.health()
    assert (h["calls"], h["successes"], h["failures"]) == (3, 1, 2)


def test_keyboard_interrupt_during_trial_gives_permit_back_uncounted():
    clock = VirtualClock()
    b = half_open(clock)
    before = b.consecutive_failures
    with pytest.raises(KeyboardInterrupt):
        b.call(_raise, KeyboardInterrupt())
    assert b.state is HALF and b.consecutive_failures == before
    assert b.allow_request()


def test_call_async_and_cancellation():
    clock = VirtualClock()
    b = half_open(clock)

    async def slow(x):
        await clock.asleep(5)
        return x * 2

    async def main():
        task = asyncio.ensure_future(b.call_async(slow, 1))
        await asyncio.sleep(0)
        assert not b.allow_request()  # the trial holds the only permit
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b.state is HALF  # cancelled: not counted, permit given back
        return await b.call_async(slow, 21)

    assert asyncio.run(main()) == 42
    assert b.state is CLOSED


def test_decorator_sync_and_async_keep_names():
    clock = VirtualClock()
    b = make(clock, failure_threshold=1)

    @b
    def fetch(x):
        """doc"""
        return x + 1

    @b
    async def afetch(x):
        if x < 0:
            raise outage()
        return x + 2

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "doc" and afetch.__name__ == "afetch"
    assert fetch(1) == 2
    assert asyncio.run(afetch(1)) == 3
    with pytest.raises(ServerError):
        asyncio.run(afetch(-1))
    with pytest.raises(CircuitOpenError):
        fetch(1)
    with pytest.raises(CircuitOpenError):
        asyncio.run(afetch(1))


# ---------------------------------------------------------------- health, listeners, events, logs


def test_health_snapshot():
    clock = VirtualClock(start=100.0)
    b = make(clock, failure_threshold=2, reset_timeout=30.0)
    b.call(lambda: 1)
    for _ in range(2):
        with pytest.raises(ServerError):
            b.call(_raise, ServerError("boom " * 100, status_code=503))
    clock.advance(10)
    assert not b.allow_request()
    h = b.health()
    assert h["name"] == "primary" and h["state"] == "open"
    assert h["consecutive_failures"] == 2 and h["failure_threshold"] == 2
    assert h["retry_in"] == pytest.approx(20.0)
    assert (h["calls"], h["successes"], h["failures"], h["rejections"], h["opened_count"]) == (
        3,
        1,
        2,
        1,
        1,
    )
    assert h["last_error"].startswith("ServerError: HTTP 503: boom") and len(h["last_error"]) <= 200
    assert h["last_state_change"] == 100.0


def test_on_state_change_order_and_lazy_half_open_notification():
    clock = VirtualClock()
    b = make(clock, failure_threshold=1, reset_timeout=30.0)
    seen = []
    unsubscribe = b.on_state_change(lambda br, old, new: seen.append((br is b, old, new)))
    b.record_failure(outage())
    clock.advance(30)
    assert seen == [(True, CLOSED, OPEN)]  # nothing runs in the background
    assert b.allow_request()  # first observation delivers the lazy transition
    b.record_success()
    assert seen == [(True, CLOSED, OPEN), (True, OPEN, HALF), (True, HALF, CLOSED)]
    unsubscribe()
    b.trip()
    assert len(seen) == 3


def test_broken_listener_is_logged_and_does_not_break_the_call(caplog):
    b = make(failure_threshold=1)
    calls = []
    b.on_state_change(lambda *a: 1 / 0)
    b.on_state_change(lambda br, old, new: calls.append(new))
    with caplog.at_level(logging.ERROR, "llm_patterns.circuit_breaker"), pytest.raises(ServerError):
        b.call(_raise, outage())
    assert calls == [OPEN]
    assert "listener" in caplog.text and "ZeroDivisionError" in caplog.text


def test_listener_may_read_the_breaker_without_deadlock():
    clock = VirtualClock()
    b = make(clock, failure_threshold=1)
    seen = []
    b.on_state_change(lambda br, old, new: seen.append((new, br.state, br.health()["state"])))
    b.record_failure(outage())
    clock.advance(30)
    assert b.state is HALF
    assert seen[0] == (OPEN, OPEN, "open")
    assert seen[1][0] is HALF


def test_events():
    clock = VirtualClock()
    b = make(clock, failure_threshold=1, reset_timeout=30.0)
    events = []
    b.subscribe(events.append)
    b.call(lambda: None)
    with pytest.raises(ServerError):
        b.call(_raise, outage())
    clock.advance(10)
    with pytest.raises(CircuitOpenError):
        b.call(lambda: None)
    kinds = [(e.kind, e.time) for e in events]
    assert kinds == [("success", 0.0), ("failure", 0.0), ("state_change", 0.0), ("rejected", 10.0)]
    assert all(e.source == "breaker" and e.name == "primary" for e in events)
    assert events[1].data == {"consecutive_failures": 1, "error_type": "ServerError"}
    assert events[2].data == {"old": "closed", "new": "open", "consecutive_failures": 1}
    assert events[3].data["retry_in"] == pytest.approx(20.0)
    clock.advance(25)
    assert b.state is HALF
    assert (events[-1].kind, events[-1].time, events[-1].data["new"]) == (
        "state_change",
        30.0,
        "half_open",
    )


def test_logging(caplog):
    clock = VirtualClock()
    b = CircuitBreaker("primary", clock=clock)
    with caplog.at_level(logging.INFO, "llm_patterns.circuit_breaker"):
        for _ in range(5):
            b.record_failure(ServerError("down", status_code=503))
        clock.advance(60)
        b.call(lambda: None)
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert messages[0] == (
        "WARNING",
        "breaker primary OPEN after 5 consecutive failures (last: ServerError 503); "
        "half-open in 60.0 s",
    )
    assert messages[1][0] == "INFO" and "HALF_OPEN" in messages[1][1]
    assert messages[2][0] == "INFO" and "CLOSED" in messages[2][1]


def test_reset_and_trip():
    clock = VirtualClock()
    b = make(clock, reset_timeout=30.0)
    b.trip()
    assert b.state is OPEN and b.health()["retry_in"] == 30.0
    clock.advance(20)
    b.trip()  # a fresh cooldown
    assert b.health()["retry_in"] == 30.0
    b.reset()
    assert b.state is CLOSED and b.consecutive_failures == 0 and b.allow_request()


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold"),
        ({"failure_threshold": 2.5}, TypeError, "failure_threshold"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
        ({"reset_timeout": 0}, ValueError, "reset_timeout"),
        ({"reset_timeout": -1.0}, ValueError, "reset_timeout"),
        ({"reset_timeout": float("inf")}, ValueError, "reset_timeout"),
        ({"reset_timeout": "60"}, TypeError, "reset_timeout"),
        ({"probe_timeout": 0.0}, ValueError, "probe_timeout"),
        ({"probe_timeout": float("nan")}, ValueError, "probe_timeout"),
        ({"is_failure": 3}, TypeError, "is_failure"),
        ({"clock": object()}, TypeError, "clock"),
        ({"name": 7}, TypeError, "name"),
    ],
)
def test_bad_input(kwargs, exc, words):
    with pytest.raises(exc) as info:
        CircuitBreaker(**kwargs)
    assert words in str(info.value)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_bad_listener_and_decorator_target():
    b = make()
    with pytest.raises(TypeError):
        b.on_state_change(None)
    with pytest.raises(TypeError):
        b(42)


# ---------------------------------------------------------------- concurrency (real threads)


class NaiveBreaker:
    """The check-then-act breaker many libraries ship: half-open lets every caller through."""

    def __init__(self) -> None:
        self.state = "half_open"

    def call(self, fn):
        if self.state == "open":
            raise CircuitOpenError("open")
        result = fn()
        self.state = "closed"
        return result


def _storm(breaker, threads: int = 32) -> tuple[int, int]:
    """``threads`` real threads released together all call ``breaker.call(slow_fn)``.

    slow_fn blocks until every thread is either inside it or answered, so the calls overlap.
    Returns (times slow_fn ran, CircuitOpenErrors).
    """
    barrier = threading.Barrier(threads)
    release = threading.Event()
    lock = threading.Lock()
    counts = {"ran": 0, "rejected": 0}
    all_answered = threading.Event()

    def bump(key):
        with lock:
            counts[key] += 1
            if counts["ran"] + counts["rejected"] >= threads:
                all_answered.set()

    def slow_fn():
        bump("ran")
        release.wait(5)
        return "ok"

    def worker():
        barrier.wait(5)
        try:
            breaker.call(slow_fn)
        except CircuitOpenError:
            bump("rejected")

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    assert all_answered.wait(5)  # every thread is inside slow_fn or has its answer
    release.set()
    for t in pool:
        t.join(5)
    assert not any(t.is_alive() for t in pool)
    return counts["ran"], counts["rejected"]


def test_half_open_storm_of_32_threads_runs_one_trial():
    clock = VirtualClock()
    b = half_open(clock)
    ran, rejected = _storm(b)
    assert (ran, rejected) == (1, 31)
    assert b.state is CLOSED
    assert b.health()["rejections"] == 31


def test_storm_check_catches_a_naive_breaker():
    ran, rejected = _storm(NaiveBreaker())
    assert ran > 1 and rejected == 0  # the harness can see the bug it guards against


def test_no_lock_is_held_during_the_call():
    clock = VirtualClock()
    b = half_open(clock)
    inside, release = threading.Event(), threading.Event()
    answers = {}

    def blocking():
        inside.set()
        release.wait(5)
        return "done"

    trial = threading.Thread(target=lambda: answers.setdefault("trial", b.call(blocking)))
    trial.start()
    assert inside.wait(5)

    def reader():
        answers["state"] = b.state
        answers["health"] = b.health()
        answers["allowed"] = b.allow_request()

    probe = threading.Thread(target=reader)
    probe.start()
    probe.join(2)
    blocked = probe.is_alive()
    release.set()
    trial.join(5)
    probe.join(5)
    assert not blocked, "reading the breaker blocked while a call was running"
    assert answers["state"] is HALF and answers["health"]["trials_in_flight"] == 1
    assert answers["allowed"] is False
    assert answers["trial"] == "done" and b.state is CLOSED


def test_fifty_coroutines_one_trial():
    clock = VirtualClock()
    b = half_open(clock)
    ran = []

    async def probe(i):
        ran.append(i)
        await clock.asleep(1.0)  # the trial is still running while the others ask
        return i

    async def main():
        return await asyncio.gather(
            *(b.call_async(probe, i) for i in range(50)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert len(ran) == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 49
    assert results[ran[0]] == ran[0]
    assert b.state is CLOSED


# ---------------------------------------------------------------- the same, store-backed


def _shared_half_open(kind: str, tmp_path, **kw) -> SharedCircuitBreaker:
    clock = VirtualClock(100.0)
    store = (MemoryStateStore(clock=clock) if kind == "memory"
             else SQLiteStateStore(tmp_path / "b.db", clock=clock))
    kw.setdefault("failure_threshold", 3)
    kw.setdefault("reset_timeout", 30.0)
    b = SharedCircuitBreaker("primary", store=store, **kw)
    b.trip()
    clock.advance(b.reset_timeout)
    assert b.state is HALF
    return b


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_half_open_storm_of_32_threads_runs_one_trial_on_a_store(kind, tmp_path):
    b = _shared_half_open(kind, tmp_path)
    ran, rejected = _storm(b)
    assert (ran, rejected) == (1, 31)
    assert b.state is CLOSED
    assert b.health()["rejections"] == 31


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_fifty_coroutines_one_trial_on_a_store(kind, tmp_path):
    """The async path asks the store on the breaker's worker thread: still one trial."""
    b = _shared_half_open(kind, tmp_path, half_open_max_calls=2)
    counts = {"ran": 0, "answered": 0}

    async def main():
        everyone = asyncio.Event()

        def answered():
            counts["answered"] += 1
            if counts["answered"] >= 50:
                everyone.set()

        async def probe():
            counts["ran"] += 1
            answered()
            await everyone.wait()  # the trials run until every caller has its answer
            return "ok"

        async def caller():
            try:
                return await b.call_async(probe)
            except CircuitOpenError as exc:
                answered()
                return exc

        return await asyncio.gather(*(caller() for _ in range(50)))

    results = asyncio.run(main())
    assert counts["ran"] == 2  # half_open_max_calls
    assert results.count("ok") == 2
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 48
    assert b.state is CLOSED
    b.close()


# ---------------------------------------------------------------- the Breaker protocol


@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared"])
def test_both_breakers_are_breakers_and_hand_out_permits(shared, tmp_path):
    clock = VirtualClock()
    b = (SharedCircuitBreaker("p", failure_threshold=1, reset_timeout=30.0, clock=clock,
                              store=MemoryStateStore(clock=clock))
         if shared else make(clock, failure_threshold=1))
    assert isinstance(b, Breaker)
    permit = b.admit()
    assert isinstance(permit, Permit) and permit.trial is False
    permit.failure(outage())
    permit.success()  # settled already: ignored
    assert b.state is OPEN and b.health()["successes"] == 0
    with pytest.raises(CircuitOpenError) as info:
        b.admit()
    assert info.value.retry_after == pytest.approx(30.0)
    assert info.value.provider == b.name
    clock.advance(30)
    trial = b.admit()
    assert trial.trial is True
    with pytest.raises(CircuitOpenError, match="half-open and its 1 trial call"):
        b.admit()
    trial.release()  # never sent: the slot is given back, nothing counted
    assert b.state is HALF and b.consecutive_failures == 1
    again = asyncio.run(b.admit_async())
    assert again.trial
    again.failure(RateLimitError("429"))  # not an outage: the slot is given back
    assert b.state is HALF
    last = b.admit()
    last.success()
    assert b.state is CLOSED
    h = b.health()
    assert (h["calls"], h["successes"], h["failures"], h["ignored_errors"], h["rejections"]) \
        == (4, 1, 1, 1, 2)


@pytest.mark.parametrize("shared", [False, True], ids=["local", "shared"])
def test_events_of_ignored_errors_and_lost_leases(shared):
    clock = VirtualClock()
    b = (SharedCircuitBreaker("p", failure_threshold=1, reset_timeout=30.0, probe_timeout=5.0,
                              clock=clock, store=MemoryStateStore(clock=clock))
         if shared else make(clock, failure_threshold=1, probe_timeout=5.0))
    events = []
    b.subscribe(events.append)
    b.call(lambda: None)
    with pytest.raises(RateLimitError):
        b.call(_raise, RateLimitError("429"))
    b.trip()
    clock.advance(30)
    assert b.admit().trial  # this probe never reports back
    clock.advance(5)
    assert b.admit().trial  # its lease ran out: the next caller probes
    kinds = [(e.kind, e.time, e.data) for e in events]
    assert kinds == [
        ("success", 0.0, {}),
        ("ignored", 0.0, {"consecutive_failures": 0, "error_type": "RateLimitError"}),
        ("state_change", 0.0, {"old": "closed", "new": "open", "consecutive_failures": 0}),
        ("state_change", 30.0, {"old": "open", "new": "half_open", "consecutive_failures": 0}),
        ("lease_expired", 35.0, {"count": 1}),
    ]


# ---------------------------------------------------------------- property: random sequences

ERRORS = [  # factories: a fresh exception each time
    lambda: None,
    outage,
    lambda: ProviderTimeout("t"),
    lambda: RateLimitError("429"),
    lambda: InvalidRequestError("400"),
]
KINDS = [
    "advance",
    "advance",
    "allow",
    "allow",
    "allow",
    "success",
    "failure",
    "failure",
    "call",
    "call",
    "trip",
]
STEPS = [0.0, 1.0, 4.0, 5.0, 12.0, 31.0]  # probe_timeout 5 s and reset_timeout 30 s sit in between
op = st.tuples(st.sampled_from(KINDS), st.integers(-1, len(ERRORS) - 1))


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(op, min_size=5, max_size=60),
    start=st.sampled_from(["closed", "open", "half_open"]),
    max_calls=st.integers(1, 3),
    threshold=st.integers(1, 4),
    probe_timeout=st.sampled_from([None, 5.0]),
)
def test_property_half_open_bound_and_nothing_called_while_open(
    ops, start, max_calls, threshold, probe_timeout
):
    """A model of the breaker (episodes, trial grants, the manual protocol's open admissions)
    run beside it on random operation sequences."""
    clock = VirtualClock()
    b = CircuitBreaker(
        "p",
        failure_threshold=threshold,
        reset_timeout=30.0,
        half_open_max_calls=max_calls,
        clock=clock,
        probe_timeout=probe_timeout,
    )
    if start != "closed":
        b.trip()
    if start == "half_open":
        clock.advance(30.0)
    lease = b.probe_timeout
    model = {"episode": 0, "moves": 0}
    grants: dict[int, float] = {}  # live trial permits of this episode: id -> grant time
    admitted: list[tuple[int, int | None]] = []  # allow_request()'s open ones: (episode, trial)
    trial_ids = iter(range(10**6))

    def moved(br, old, new):
        model["episode"] += 1
        model["moves"] += 1
        grants.clear()

    b.on_state_change(moved)
    run_of_failures = 0

    def live() -> dict[int, float]:
        for tid in [t for t, at in grants.items() if at + lease <= clock.now()]:
            del grants[tid]
        return grants

    for kind, arg in ops:
        before = b.state
        if kind == "advance":
            clock.advance(STEPS[arg + 1])
        elif kind == "allow":
            allowed = b.allow_request()
            if before is OPEN:
                assert not allowed
            if before is HALF:
                assert allowed == (len(live()) < max_calls)
            if allowed:
                tid = next(trial_ids) if before is HALF else None
                if tid is not None:
                    grants[tid] = clock.now()
                admitted.append((model["episode"], tid))
        elif kind in ("success", "failure"):
            error = ERRORS[max(arg, 0)]() if kind == "failure" else None
            counts = kind == "success" or is_outage(error)
            if admitted:  # the latest open admission of this thread is settled
                episode, tid = admitted.pop()
                current = episode == model["episode"] and (
                    before is not HALF or tid is None or tid in live())
                if before is HALF and tid is not None:
                    grants.pop(tid, None)
            else:  # no admission: the current episode (in half-open its oldest live trial)
                current = True
                if before is HALF and live():
                    del grants[min(grants)]
            if kind == "success":
                b.record_success()
                if current and before is CLOSED:
                    run_of_failures = 0
            else:
                b.record_failure(error)
                if current and before is CLOSED and counts:
                    run_of_failures += 1
        elif kind == "call":
            inside = []

            def fn(arg=arg, inside=inside):
                inside.append(b.state)
                if arg >= 0:
                    raise ERRORS[arg]() or ServerError("x")
                return "ok"

            try:
                b.call(fn)
            except CircuitOpenError:
                assert before is OPEN or (before is HALF and len(live()) >= max_calls)
                assert inside == []
            except (ServerError, ProviderTimeout, RateLimitError, InvalidRequestError):
                assert arg >= 0 and inside  # the wrapped call ran and its own error came back
            if before is OPEN:
                assert inside == []
            if before is HALF and inside:
                assert len(live()) < max_calls
            assert OPEN not in inside
            if before is CLOSED and inside:
                if arg < 0:
                    run_of_failures = 0
                elif is_outage(ERRORS[arg]() or ServerError("x")):
                    run_of_failures += 1
        elif kind == "trip":
            moves = model["moves"]
            b.trip()
            if model["moves"] == moves:  # already open: a fresh cooldown is a new episode
                model["episode"] += 1

        state = b.state
        assert len(live()) <= max_calls
        assert b.health()["trials_in_flight"] <= max_calls
        if before is CLOSED and state is CLOSED:
            assert b.consecutive_failures == run_of_failures < threshold
        if before is CLOSED and run_of_failures >= threshold:
            assert state is OPEN
        if state is not CLOSED:
            run_of_failures = 0
