"""``ResilientClient`` as layers (issue 16) and the request's way through them: the chain-wide
check before anything is spent, a too-big demand as the caller's ``ValueError``, the retry
deadline shrinking each attempt, header-derived waits bounded, a breaker told only about calls
that reached the provider, lifecycle, arguments. Virtual clock throughout."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from llm_patterns import (
    AllProvidersFailed,
    BudgetExceeded,
    CircuitBreaker,
    CostTracker,
    MockLLMServer,
    OpenAIProvider,
    Pricing,
    RateLimiter,
    ResilientClient,
    RetryPolicy,
    VirtualClock,
)
from llm_patterns.errors import ProviderTimeout, RateLimitError, ServerError
from llm_patterns.layers import (
    BreakerLayer,
    BudgetLayer,
    ContextLayer,
    LimiterLayer,
    ProviderLayer,
    RetryLayer,
    limiter_usage,
)
from llm_patterns.protocols import Demand
from llm_patterns.request import Request
from llm_patterns.response import LLMResponse, Usage

MODEL = "gpt-4o-mini"
PRICES = {MODEL: Pricing(0.15, 0.60), "claude-haiku-4-5": Pricing(1, 5)}


class Recorder:
    """A provider with ``send``: records the ``time_left`` of each attempt; fails the first
    ``failures`` attempts with an outage after ``busy`` seconds on the clock."""

    model = MODEL

    def __init__(self, clock, name="p", failures=0, busy=0.0):
        self.name, self.clock, self.failures, self.busy = name, clock, failures, busy
        self.time_left: list[float | None] = []
        self.closed = self.aclosed = 0

    def send(self, request, *, time_left=None):
        self.time_left.append(time_left)
        self.clock.sleep(self.busy)
        if len(self.time_left) <= self.failures:
            raise ServerError("down", provider=self.name, status_code=503)
        return LLMResponse("ok", MODEL, self.name, Usage(request.input_tokens, 5))

    async def asend(self, request, *, time_left=None):
        return self.send(request, time_left=time_left)

    def complete(self, prompt=None, **kw):
        return self.send(Request(prompt, **kw))

    async def acomplete(self, prompt=None, **kw):
        return self.complete(prompt, **kw)

    def close(self):
        self.closed += 1

    async def aclose(self):
        self.aclosed += 1


# ----------------------------------------------------------------------------- the stack

def test_the_stack_is_the_layers_in_order_typed_against_protocols():
    clock = VirtualClock()
    client = ResilientClient([Recorder(clock)], clock=clock,
                             limiters={"p": RateLimiter(rpm=60, clock=clock)},
                             breakers={"p": CircuitBreaker("p", clock=clock)},
                             cost=CostTracker(PRICES), retry=RetryPolicy(clock=clock))
    layer, kinds = client.stacks[0], []
    while True:
        kinds.append(type(layer))
        if isinstance(layer, ProviderLayer):
            break
        layer = layer.inner
    assert kinds == [ContextLayer, RetryLayer, BreakerLayer, BudgetLayer, LimiterLayer,
                     ProviderLayer]


# ----------------------------------------------------------------------------- the chain's check

def test_a_request_the_backup_cannot_take_is_refused_before_anything_is_sent():
    clock = VirtualClock()
    primary = MockLLMServer(clock=clock)
    backup = MockLLMServer(clock=clock, api="anthropic")
    client = ResilientClient([primary.provider("p", MODEL),
                              backup.provider("b", "claude-haiku-4-5")], clock=clock)
    for call in (client.complete, lambda *a, **k: asyncio.run(client.acomplete(*a, **k))):
        with pytest.raises(ValueError, match="json_object") as info:
            call("hi", response_format={"type": "json_object"})
        assert any("'b'" in note for note in info.value.__notes__)
    assert primary.stats["requests"] == backup.stats["requests"] == 0


@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_demand_no_bucket_can_hold_is_the_callers_value_error(position, run):
    """core-limiter: a too-big demand raises ValueError before anything waits. Whichever
    provider's limiter it is, it comes back as itself: not retried, not a breaker failure,
    never AllProvidersFailed, and nothing is sent or held."""
    clock = VirtualClock()
    providers = [Recorder(clock, "a"), Recorder(clock, "b")]
    small = RateLimiter(tpm=600, clock=clock)  # at most a minute's 600 tokens at once
    breakers = {n: CircuitBreaker(n, clock=clock) for n in ("a", "b")}
    cost = CostTracker(PRICES, budget=1, hard_limit=True)
    client = ResilientClient(providers, limiters={"ab"[position]: small}, breakers=breakers,
                             cost=cost, retry=RetryPolicy(max_attempts=4, clock=clock),
                             clock=clock)
    call = client.complete if run == "sync" else (
        lambda *a, **k: asyncio.run(client.acomplete(*a, **k)))
    with pytest.raises(ValueError, match="600") as info:
        call("hi", max_tokens=1000)
    assert not isinstance(info.value, AllProvidersFailed)
    assert [p.time_left for p in providers] == [[], []]  # nothing sent, nothing retried
    for b in breakers.values():
        assert b.health()["failures"] == 0 and b.consecutive_failures == 0
    assert cost.reserved == 0 and cost.count == 0
    assert call("hi", max_tokens=100).text == "ok"  # a request that fits goes through


# ----------------------------------------------------------------------------- deadlines

def test_the_retry_deadline_shrinks_each_attempts_time_left():
    clock = VirtualClock()
    provider = Recorder(clock, failures=2, busy=3.0)
    client = ResilientClient([provider], clock=clock, retry=RetryPolicy(
        max_attempts=5, deadline=20.0, clock=clock,
        backoff=__import__("llm_patterns").BackoffPolicy(base_delay=1.0, jitter="none")))
    answer = client.complete("hi")
    # attempt 1 at t=0; fails at 3, waits 1; attempt 2 at 4, fails at 7, waits 2; attempt 3 at 9
    assert provider.time_left == [20.0, 16.0, 11.0] and answer.attempts == 3
    without = Recorder(clock)
    ResilientClient([without], clock=clock).complete("hi")
    assert without.time_left == [None]


def test_a_slow_answer_is_cut_at_the_deadline_not_at_the_sdk_timeout():
    """Over HTTP: the mock answers nothing until the client's timeout; the attempt in flight
    is bounded by the policy's deadline (30 s), not by the 600 s read timeout."""
    clock = VirtualClock()
    server = MockLLMServer(clock=clock)
    server.fail_next("timeout", 5)
    provider = OpenAIProvider("p", MODEL, base_url=server.base_url, api_key="sk-test-1234",
                              client=server.client(), clock=clock)
    client = ResilientClient([provider], clock=clock,
                             retry=RetryPolicy(max_attempts=5, deadline=30.0, clock=clock))
    with pytest.raises(AllProvidersFailed) as info:
        client.complete("hi")
    assert isinstance(info.value.errors[0][1], ProviderTimeout)
    assert clock.now() == pytest.approx(30.0, abs=1.0)


# ----------------------------------------------------------------------------- header waits

def test_an_absurd_retry_after_is_bounded_everywhere(caplog):
    """Issue 20: one 429 with Retry-After 1e12 used to pause the limiter for ~31,700 years.
    The retry policy gives up on it at once (the backup answers) and the limiter's pause is
    clamped to its max_retry_after, so the healthy primary is used again soon after."""
    clock = VirtualClock()
    primary = MockLLMServer(clock=clock)
    backup = MockLLMServer(clock=clock, api="anthropic")
    limiter = RateLimiter(rpm=600, clock=clock, max_retry_after=60.0)
    client = ResilientClient([primary.provider("p", MODEL),
                              backup.provider("b", "claude-haiku-4-5")],
                             limiters={"p": limiter}, clock=clock,
                             retry=RetryPolicy(max_attempts=3, clock=clock))

    class Absurd(RateLimitError):
        pass

    original = client.providers[0].send

    def once(request, *, time_left=None):
        client.providers[0].send = original
        raise RateLimitError("slow down", provider="p", status_code=429, retry_after=1e12)

    client.providers[0].send = once
    with caplog.at_level(logging.WARNING):
        first = client.complete("hi")
    assert first.provider == "b" and clock.now() < 1.0
    assert any("max_retry_after" in r.getMessage() for r in caplog.records)
    second = client.complete("hi again")
    assert second.provider == "p" and 59.0 <= clock.now() <= 61.0  # waited the clamp, no more


# ----------------------------------------------------------------------------- the breaker

def test_the_breaker_hears_only_calls_that_reached_the_provider():
    """A refused budget or a limiter timeout says nothing about the provider: the permit is
    given back (a half-open probe slot too), never counted as a failure or a success."""
    clock = VirtualClock()
    provider = Recorder(clock)
    breaker = CircuitBreaker("p", failure_threshold=1, reset_timeout=10, clock=clock)
    tracker = CostTracker(PRICES, budget="0.0000001", hard_limit=True)
    client = ResilientClient([provider], breakers={"p": breaker}, cost=tracker, clock=clock)
    breaker.trip()
    clock.advance(10)  # half-open: one probe slot
    with pytest.raises(BudgetExceeded):
        client.complete("hi")
    health = breaker.health()
    assert health["failures"] == 0 and health["successes"] == 0
    assert breaker.allow_request()  # the probe slot was given back
    assert provider.time_left == []


def test_a_breaker_that_opens_during_a_limiter_wait_stops_the_call():
    clock = VirtualClock()
    provider = Recorder(clock)
    backup = Recorder(clock, "b")
    breaker = CircuitBreaker("p", failure_threshold=1, reset_timeout=600, clock=clock)
    limiter = RateLimiter(rpm=1, burst_seconds=60, clock=clock)
    client = ResilientClient([provider, backup], breakers={"p": breaker},
                             limiters={"p": limiter}, clock=clock)
    assert client.complete("first").provider == "p"  # the limiter's one request

    async def both():
        waiting = asyncio.ensure_future(client.acomplete("waits a minute for the limiter"))
        await asyncio.sleep(0)
        breaker.trip()  # meanwhile the provider is declared down
        return await waiting

    answer = asyncio.run(both())
    assert answer.provider == "b" and provider.time_left == [None]


# ----------------------------------------------------------------------------- the settle rule

def test_the_settle_rule():
    demand = Demand(100, 500)
    usage = Usage(prompt_tokens=140, completion_tokens=20, cached_tokens=30)
    # Anthropic counts what was used: input less the cache reads, the output generated
    assert limiter_usage(demand, usage, True) == Demand(110, 20)
    # OpenAI charged max_tokens at arrival and its own count of the input: only ever upward
    assert limiter_usage(demand, usage, False) == Demand(140, 500)
    assert limiter_usage(demand, Usage(80, 20), False) is demand


# ----------------------------------------------------------------------------- lifecycle

def test_close_and_context_managers_close_every_provider():
    clock = VirtualClock()
    a, b = Recorder(clock, "a"), Recorder(clock, "b")
    with ResilientClient([a, b], clock=clock) as client:
        assert client.complete("hi").text == "ok"
    assert (a.closed, b.closed) == (1, 1)

    async def go():
        async with ResilientClient([a, b], clock=clock) as client:
            await client.acomplete("hi")

    asyncio.run(go())
    assert (a.aclosed, b.aclosed) == (1, 1)


# ----------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("kwargs, exc, words", [
    ({"providers": "p"}, TypeError, ["providers"]),
    ({"providers": []}, ValueError, ["at least one"]),
    ({"limiters": ["x"]}, TypeError, ["limiters", "dict"]),
    ({"limiters": {"p": object()}}, TypeError, ["limiters['p']", "Limiter"]),
    ({"breakers": {"p": object()}}, TypeError, ["breaker", "'p'"]),
    ({"cost": 5}, TypeError, ["cost", "CostGate"]),
    ({"retry": 3}, TypeError, ["retry", "RetryPolicy"]),
    ({"clock": "now"}, TypeError, ["clock"]),
    ({"refund_unused_tokens": "p"}, TypeError, ["refund_unused_tokens"]),
    ({"refund_unused_tokens": ["q"]}, ValueError, ["unknown providers", "'q'"]),
    ({"check_context": "yes"}, TypeError, ["check_context"]),
    ({"name": 3}, TypeError, ["name"]),
])
def test_bad_arguments_name_the_parameter(kwargs, exc, words):
    clock = VirtualClock()
    args = {"providers": [Recorder(clock)], **kwargs}
    with pytest.raises(exc) as info:
        ResilientClient(args.pop("providers"), **args)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("label", ["dag_id", "task_id", "run_id"])
def test_labels_must_be_text(label):
    clock = VirtualClock()
    client = ResilientClient([Recorder(clock)], clock=clock, cost=CostTracker(PRICES))
    with pytest.raises(TypeError, match=label):
        client.complete("hi", **{label: 5})
    client.complete("hi", dag_id="d", task_id="t", run_id="r")
    (record,) = client.cost.records  # type: ignore[union-attr]
    assert (record.dag_id, record.task_id, record.run_id) == ("d", "t", "r")
    assert record.cost > Decimal(0)
