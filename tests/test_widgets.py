"""Widgets and the live dashboard engine, without a browser (fast, virtual time).

Each widget is checked against the events of a real component: the numbers drawn, the colour by
level, the throttle (coalescing on an injected clock, the final state drawn by ``flush``),
the student adapters, deterministic reprs, and ``LiveDemo`` on a ``VirtualClock``.
"""

from __future__ import annotations

import asyncio
import itertools
import re

import pytest

from llm_patterns.circuit_breaker import CircuitBreaker
from llm_patterns.clock import ScaledClock, VirtualClock
from llm_patterns.cost import CostTracker
from llm_patterns.course.live import LiveDemo
from llm_patterns.course.widgets import (
    BreakerLight,
    BucketGauge,
    CostMeter,
    Dashboard,
    EventLog,
    ProviderBoard,
    Throttle,
    TimelineFigure,
    WatchedBreaker,
    WatchedBucket,
    format_event,
    watch,
)
from llm_patterns.course.widgets.breaker import clock_speed
from llm_patterns.events import Event
from llm_patterns.layers import LimiterLayer
from llm_patterns.pricing import Pricing
from llm_patterns.rate_limit import RateLimiter, TokenBucket
from tests.student_impls import GoodEagerBreaker, GoodLazyBreaker, GoodLazyBucket, GoodLimiter


def quiet(clock: VirtualClock) -> dict:
    """Widget options for tests: the throttle reads ``clock`` and never schedules a timer."""
    return {"redraw_clock": clock, "schedule": False}


# -- the throttle ---------------------------------------------------------------------------------

def test_throttle_coalesces_and_flush_draws_the_last_request():
    clock, drawn, state = VirtualClock(), [], {"v": 0}
    throttle = Throttle(lambda: drawn.append(state["v"]), 0.1, clock=clock, schedule=False)
    for v in range(1, 101):  # 100 changes inside one interval
        state["v"] = v
        throttle.request()
    assert drawn == [1]  # the first draws at once, the other 99 wait
    assert throttle.pending
    throttle.flush()
    assert drawn == [1, 100] and not throttle.pending
    throttle.flush()  # nothing new: no draw
    assert drawn == [1, 100]
    clock.advance(0.1)
    state["v"] = 101
    throttle.request()  # the interval has passed: draws at once
    assert drawn == [1, 100, 101]
    assert throttle.requests == 101 and throttle.draws == 3


def test_throttle_limits_the_frame_rate_over_time():
    clock, drawn = VirtualClock(), []
    throttle = Throttle(lambda: drawn.append(clock.now()), 0.1, clock=clock, schedule=False)
    for _ in range(1000):  # 1000 events spread over 2 s
        throttle.request()
        clock.advance(0.002)
    throttle.flush()
    assert 20 <= len(drawn) <= 22  # ~10 frames a second, plus the final one
    gaps = [b - a for a, b in itertools.pairwise(drawn[:-1])]
    assert min(gaps) >= 0.1 - 1e-9


def test_throttle_schedules_the_final_draw_on_the_running_loop():
    drawn = []

    async def main():
        throttle = Throttle(lambda: drawn.append(1), 0.01)  # real time, 10 ms
        throttle.request()
        throttle.request()  # inside the interval: a deferred draw is scheduled
        assert len(drawn) == 1
        await asyncio.sleep(0.05)  # a short real wait: the timer must fire without a flush
        assert len(drawn) == 2 and not throttle.pending

    asyncio.run(main())


def test_throttle_rejects_bad_arguments_and_survives_a_broken_draw(caplog):
    with pytest.raises(ValueError, match="interval"):
        Throttle(lambda: None, -1)
    with pytest.raises(TypeError, match="draw"):
        Throttle(None)  # type: ignore[arg-type]
    throttle = Throttle(lambda: 1 / 0, 0.1, clock=VirtualClock(), schedule=False)
    throttle.request()  # logged, not raised
    assert "redraw" in caplog.text and throttle.draws == 1


# -- BucketGauge ------------------------------------------------------------------------------------

def test_bucket_gauge_follows_limiter_events_and_colours_by_level():
    clock = VirtualClock()
    limiter = RateLimiter(rpm=60, tpm=6000, clock=clock, name="primary", burst_seconds=60)
    gauge = BucketGauge(limiter, **quiet(clock))
    req_bar, tok_bar = gauge._rows["requests"][1], gauge._rows["tokens"][1]
    assert (req_bar.value, req_bar.max, req_bar.bar_style) == (60, 60, "success")
    for _ in range(40):
        limiter.try_acquire(100)
    assert req_bar.value == 60  # coalesced: not drawn yet (the redraw clock did not move)
    gauge.flush()
    assert (req_bar.value, req_bar.bar_style) == (20, "warning")
    assert (tok_bar.value, tok_bar.bar_style) == (2000, "warning")
    for _ in range(10):
        limiter.try_acquire(100)
    gauge.flush()
    assert (req_bar.value, req_bar.bar_style) == (10, "danger")
    assert "<b" in gauge._rows["requests"][2].value and ">10</b> / 60" in gauge._rows["requests"][2].value
    assert repr(gauge) == "BucketGauge('primary', requests=10/60, tokens=1,000/6,000, waiting=0)"
    assert gauge.draws == 3


def test_bucket_gauge_shows_the_queue_of_waiters():
    clock = VirtualClock()
    limiter = RateLimiter(rpm=60, burst_seconds=1.0, clock=clock, name="p")

    async def main():
        tasks = [asyncio.ensure_future(limiter.acquire_async()) for _ in range(4)]
        await asyncio.sleep(0)  # all four have arrived; three wait
        gauge = BucketGauge(limiter, **quiet(clock))
        assert "queued: <b>3</b>" in gauge._header.value
        await asyncio.gather(*tasks)
        gauge.flush()
        assert "queued: <b>0</b>" in gauge._header.value

    asyncio.run(main())


def test_gauge_re_attaches_to_a_new_limiter():
    clock = VirtualClock()
    gauge = BucketGauge(RateLimiter(rpm=60, clock=clock, burst_seconds=60), **quiet(clock))
    old = gauge.source
    gauge.attach(RateLimiter(rpm=600, clock=clock, name="new", burst_seconds=60))
    assert gauge._rows["requests"][1].max == 600
    old.try_acquire()  # the old limiter's events no longer reach the gauge
    assert gauge._lp_throttle.requests == 2
    gauge.close()


# -- BreakerLight -----------------------------------------------------------------------------------

def test_breaker_light_state_failures_and_countdown():
    clock = VirtualClock()
    breaker = CircuitBreaker("primary", failure_threshold=3, reset_timeout=30, clock=clock)
    light = BreakerLight(breaker, **quiet(clock))
    assert (light.state, light.failures, light.threshold, light.speed) == ("closed", 0, 3, 0.0)
    for _ in range(3):
        breaker.record_failure()
    light.flush()
    assert (light.state, light.failures, light.retry_in) == ("open", 3, 30.0)
    assert repr(light) == "BreakerLight('primary', OPEN, failures=3/3, retry_in=30.0)"
    clock.advance(12.5)
    breaker.allow_request()  # rejected: an event, and the countdown moves
    light.flush()
    assert (light.retry_in, light.rejections) == (17.5, 1)
    clock.advance(17.5)
    assert breaker.allow_request()  # half-open trial
    light.flush()
    assert light.state == "half_open"
    breaker.record_success()
    light.flush()
    assert (light.state, light.failures) == ("closed", 0)


def test_clock_speed_drives_the_browser_countdown():
    assert clock_speed(VirtualClock()) == 0.0
    assert clock_speed(ScaledClock(10)) == 10.0
    assert clock_speed(None) == 0.0


# -- CostMeter --------------------------------------------------------------------------------------

def test_cost_meter_marks_thresholds_and_colours_by_alerts():
    clock = VirtualClock()
    tracker = CostTracker({"m": Pricing(1.0, 1.0)}, budget=1.0, clock=clock)
    meter = CostMeter(tracker, **quiet(clock))
    assert "50%" in meter._html.value and "80%" in meter._html.value and "100%" in meter._html.value
    tracker.record("m", {"prompt_tokens": 300_000, "completion_tokens": 0})  # $0.30
    tracker.record("m", {"prompt_tokens": 300_000, "completion_tokens": 0})  # $0.60: 50% fires
    meter.flush()
    html = meter._html.value
    assert "$0.6000" in html and "60.0%" in html and "#e6a019" in html  # warning colour
    assert "alerts fired: <span class='lp-alerts'>50%</span>" in html
    tracker.record("m", {"prompt_tokens": 500_000, "completion_tokens": 0})  # $1.10
    meter.flush()
    assert "#d6453d" in meter._html.value  # over budget: danger
    assert repr(meter) == "CostMeter(total=$1.10, budget=$1.00, alerts=['0.5', '0.8', '1'])"


# -- student adapters -------------------------------------------------------------------------------

def test_watch_a_student_bucket_patches_its_methods_and_unwatch_restores():
    clock = VirtualClock()
    bucket = GoodLazyBucket(10, 1.0, clock)
    original = type(bucket).consume
    gauge = BucketGauge(bucket, title="my bucket", **quiet(clock))
    adapter = gauge.source
    assert isinstance(adapter, WatchedBucket) and adapter.patched
    assert watch(bucket) is adapter  # watched once
    results = [bucket.consume(1) for _ in range(12)]  # the student's own calls
    assert results == [True] * 10 + [False] * 2  # behaviour unchanged
    gauge.flush()
    assert gauge._rows["tokens"][1].value == 0 and gauge._rows["tokens"][1].bar_style == "danger"
    assert "requests" not in [c for c in gauge.children if c is gauge._rows["requests"][0]]
    adapter.unwatch()
    assert bucket.consume.__func__ is original  # type: ignore[attr-defined]


def test_watch_a_student_limiter_counts_levels_of_both_buckets():
    clock = VirtualClock()
    limiter = GoodLimiter(60, 6000, clock)
    gauge = BucketGauge(limiter, **quiet(clock))
    for _ in range(30):
        limiter.acquire(100)
    gauge.flush()
    assert gauge._rows["requests"][1].value == pytest.approx(30)
    assert gauge._rows["tokens"][1].value == pytest.approx(3000)
    assert gauge.snapshot()["waiting"] == 0


def test_watch_our_slotted_bucket_works_through_the_adapter():
    clock = VirtualClock()
    bucket = TokenBucket(5, 1.0, clock=clock)
    adapter = watch(bucket)
    assert isinstance(adapter, WatchedBucket) and not adapter.patched
    seen: list[Event] = []
    adapter.subscribe(seen.append)
    assert adapter.consume(2) is True
    assert [(e.kind, e.data["tokens_available"]) for e in seen] == [("acquire", 3.0)]


@pytest.mark.parametrize("make", [lambda c: GoodLazyBreaker(2, 10, c),
                                  lambda c: GoodEagerBreaker(2, 10, clock=c)])
def test_watch_a_student_breaker(make):
    clock = VirtualClock()
    breaker = make(clock)
    light = BreakerLight(breaker, title="mine", **quiet(clock))
    assert isinstance(light.source, WatchedBreaker)
    kinds: list[str] = []
    light.source.subscribe(lambda e: kinds.append(e.kind))
    breaker.record_failure()
    breaker.record_failure()
    light.flush()
    assert (light.state, light.failures, light.threshold) == ("open", 2, 2)
    assert "state_change" in kinds
    assert breaker.can_execute() is False
    clock.advance(10)
    assert breaker.can_execute() is True
    light.flush()
    assert light.state == "half_open"  # "half-open" and Enum states are normalised
    breaker.record_success()
    light.flush()
    assert light.state == "closed"
    assert repr(light) == "BreakerLight('mine', CLOSED, failures=0/2, retry_in=0.0)"


def test_watch_rejects_what_it_cannot_follow():
    with pytest.raises(TypeError, match="expected a token bucket"):
        watch(object())


# -- EventLog ---------------------------------------------------------------------------------------

def test_event_log_keeps_the_last_events_and_folds_repeats():
    clock = VirtualClock()
    breaker = CircuitBreaker("b", failure_threshold=2, reset_timeout=5, clock=clock)
    log = EventLog(breaker, size=3, skip=(), **quiet(clock))
    breaker.record_failure()
    breaker.record_failure()  # failure, then failure + state_change
    clock.advance(1)
    for _ in range(4):
        breaker.allow_request()  # four identical rejections: one line, x4
    log.flush()
    lines = log.lines()
    assert len(lines) == 3 and lines[0].endswith("×4") and "rejected" in lines[0]
    assert "state_change  old=closed new=open" in lines[1]
    assert "breaker/b" in lines[1] and "open" in log._html.value
    assert repr(log) == "EventLog(size=3, shown=3, seen=7)"
    with pytest.raises(ValueError, match="size"):
        EventLog(size=0)


def test_format_event_is_one_rounded_line():
    e = Event("client", "c", "response", 12.3456, {"provider": "p", "latency": 0.123456,
                                                  "attempts": 2, "cost": None})
    assert format_event(e, origin=2.0) == (
        "    10.35 s  client/c               response      provider=p latency=0.12 attempts=2 "
        "cost=None")


# -- the live engine and the board ------------------------------------------------------------------

def run(coro):
    return asyncio.run(coro)


def test_live_demo_take_down_opens_the_breaker_and_bring_up_closes_it():
    async def main():
        clock = VirtualClock()
        demo = LiveDemo(clock=clock, request_rate=4.0, seed=1)
        board = ProviderBoard(demo.client, **quiet(clock))
        await demo.run_for(20)
        board.flush()
        assert demo.breakers["primary"].state == "closed"
        fallbacks_before = board.fallbacks
        assert board.answered["primary"] > 40 and fallbacks_before == 0
        demo.take_down()
        await demo.run_for(10)
        board.flush()
        assert demo.breakers["primary"].state in ("open", "half_open")
        assert board.fallbacks > fallbacks_before + 10
        assert "class='lp-fallbacks'" in board._html.value
        demo.bring_up()
        await demo.run_for(15)  # cooldown 5 s, then one trial call closes it
        board.flush()
        assert demo.breakers["primary"].state == "closed"
        assert board.answering == "primary"
        stats = demo.stats()
        assert stats["failed"] == 0 and stats["fallbacks"] == board.fallbacks
        demo.stop()
        return repr(board)

    assert run(main()) == run(main())  # seeded and virtual: the same run twice


def test_live_demo_controls_change_the_pipeline():
    async def main():
        clock = VirtualClock()
        demo = LiveDemo(clock=clock, request_rate=2.0, primary_rpm=120)
        rebuilt: list[str] = []
        demo.subscribe(lambda e: rebuilt.append(e.data["what"]) if e.kind == "rebuild" else None)
        await demo.run_for(5)
        demo.set_limits(rpm=30, tpm=20_000)
        assert demo.limiters["primary"].rpm == 30 and demo.primary_server.rpm == 30
        layer = demo.client.stacks[0]  # the primary's layers, outermost first
        while not isinstance(layer, LimiterLayer):
            layer = layer.inner
        assert layer.limiter is demo.limiters["primary"]
        demo.set_rate(20.0)
        await demo.run_for(10)  # 200 requests at 30 RPM: the limiter queues, the rest falls back
        assert demo.limiters["primary"].status()["requests_available"] < 5
        demo.set_error_rate(0.5)
        demo.set_budget(0.01)
        assert float(demo.cost.budget) == 0.01
        with pytest.raises(ValueError, match="ScaledClock"):
            demo.set_speed(10)
        with pytest.raises(ValueError, match="requests_per_second"):
            demo.set_rate(0)
        sent = demo.stats()["sent"]
        demo.reset()
        assert rebuilt == ["limiter", "all"] and demo.stats()["sent"] == 0 and sent > 100
        await demo.run_for(2)
        demo.stop()
        assert not demo.running

    run(main())


def test_dashboard_follows_the_demo_through_a_reset():
    async def main():
        clock = VirtualClock()
        demo = LiveDemo(clock=clock, request_rate=4.0)
        dash = Dashboard(demo, **quiet(clock))
        await demo.run_for(10)
        dash.flush()
        assert dash.board.answered["primary"] > 0
        assert repr(dash).startswith("Dashboard(LiveDemo(rate=4/s")
        old_client = dash.board.client
        demo.reset()  # new client, limiters, breakers: every view re-attaches
        assert dash.board.client is demo.client is not old_client
        assert dash.gauges["primary"].source is demo.limiters["primary"]
        assert dash.lights["primary"].source is demo.breakers["primary"]
        demo.set_limits(rpm=30)
        assert dash.gauges["primary"].source is demo.limiters["primary"]
        await demo.run_for(5)
        dash.flush()
        assert dash.gauges["primary"]._rows["requests"][1].max == 30
        assert "primary up" in dash.status.value
        demo.stop()
        dash.close()

    run(main())


def test_timeline_figure_draws_the_run_and_has_a_deterministic_repr():
    async def main():
        clock = VirtualClock()
        demo = LiveDemo(clock=clock, request_rate=4.0)
        fig = TimelineFigure(demo.client, window=30, **quiet(clock))
        await demo.run_for(10)
        demo.take_down()
        await demo.run_for(10)
        fig.flush()
        data = {t.name: t for t in fig.figure.data}
        assert len(data["primary bucket"].x) > 10
        assert 2 in data["primary breaker"].y  # the breaker opened
        assert len(data["answered by secondary"].x) > 0
        assert list(data["cost"].y) == sorted(data["cost"].y) and data["cost"].y[-1] > 0
        lo, hi = fig.figure.layout.xaxis4.range
        assert lo == 0.0 and hi == pytest.approx(20.0, abs=0.5)  # follows the latest event
        await demo.run_for(40)  # past the window: old points are trimmed
        fig.flush()
        x = fig.figure.data[0].x
        assert x[1] >= 60 - 30 - 1e-9
        demo.stop()
        text = repr(fig)
        assert "uid" not in text and re.fullmatch(r"TimelineFigure\(.*points=\d+\)", text)
        return text

    assert run(main()) == run(main())


def test_widget_reprs_are_the_text_plain_output():
    clock = VirtualClock()
    gauge = BucketGauge(RateLimiter(rpm=60, clock=clock, name="x", burst_seconds=60),
                        **quiet(clock))
    bundle = gauge._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["text/plain"] == "BucketGauge('x', requests=60/60, waiting=0)"
    light = BreakerLight(CircuitBreaker("y", clock=clock), **quiet(clock))
    bundle = light._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert data["text/plain"] == "BreakerLight('y', CLOSED, failures=0/5, retry_in=0.0)"
