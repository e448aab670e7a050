"""The fast paths added for the benchmarks behave exactly like the slow ones they replace:
the in-process mock provider vs HTTP, the simulation's prompt picks vs ``rng.choice``, the
cached context windows and prices, the bounded cost records, the limiter's ``headroom``."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import pytest

from llm_patterns import context
from llm_patterns.circuit_breaker import CircuitBreaker
from llm_patterns.client import ResilientClient
from llm_patterns.clock import VirtualClock
from llm_patterns.cost import CostTracker
from llm_patterns.course.simulation import Scenario, Simulation, _choices
from llm_patterns.errors import LLMError
from llm_patterns.layers import Call, stamp
from llm_patterns.mock import MockLLMServer
from llm_patterns.pricing import MILLION, MONEY_CONTEXT, PriceTable, Pricing, TokenCounts
from llm_patterns.protocols import Demand
from llm_patterns.providers import AnthropicProvider, OpenAIProvider
from llm_patterns.rate_limit import RateLimiter
from llm_patterns.request import Request
from llm_patterns.response import LLMResponse, Usage, asend, send

# ------------------------------------------------------------------ direct mock provider parity

FAULTS = ["rate_limit", "insufficient_quota", "server_error", "overloaded", "timeout",
          "context_length_exceeded", "malformed", "auth"]


def _server(api: str, clock: VirtualClock) -> MockLLMServer:
    return MockLLMServer(rpm=30, tpm=6_000, burst_seconds=2.0, latency=lambda r: r.uniform(0.1, 0.3),
                         error_rate=0.2, seed=7, clock=clock, api=api, context_window=2_000)


def _script(seed: int) -> list[tuple[str | None, str, int]]:
    """(fault to queue or None, prompt, max_tokens) for each request of a seeded run."""
    rng = random.Random(seed)
    steps = []
    for i in range(60):
        fault = rng.choice(FAULTS) if rng.random() < 0.3 else None
        prompt = f"request {i}: " + "word " * rng.randint(1, 2_000)
        steps.append((fault, prompt, rng.choice([16, 64, 256])))
    return steps


def _outcome(call, server: MockLLMServer, clock: VirtualClock, steps) -> list[tuple]:
    out = []
    for fault, prompt, max_tokens in steps:
        if fault:
            server.fail_next(fault)
        try:
            r = call(prompt, max_tokens)
        except LLMError as err:
            out.append(("error", type(err).__name__, err.status_code, err.retry_after, str(err),
                        err.provider, clock.now()))
        else:
            headers = {k: v for k, v in r.headers.items() if k != "content-length"}
            out.append(("ok", r.text, r.model, r.provider, r.usage, r.latency_s, r.raw, headers,
                        clock.now()))
        clock.advance(0.05)
    stats = server.stats
    stats.pop("log")
    return [*out, ("stats", stats)]


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_direct_provider_matches_http_sync(api: str) -> None:
    cls = OpenAIProvider if api == "openai" else AnthropicProvider
    steps = _script(1)
    results = []
    for transport in ("http", "direct"):
        clock = VirtualClock()
        server = _server(api, clock)
        if transport == "http":
            provider = cls("p", "gpt-4o-mini" if api == "openai" else "claude-haiku-4-5",
                           base_url=server.base_url, api_key="mock-direct-key",
                           client=server.client(), timeout=30.0, clock=clock)
        else:
            provider = server.provider("p", "gpt-4o-mini" if api == "openai" else
                                       "claude-haiku-4-5", api=api, timeout=30.0)
        results.append(_outcome(
            lambda p, m: provider.complete(p, max_tokens=m), server, clock, steps))  # noqa: B023
    http, direct = results
    kinds = {row[1] for row in http if row[0] == "error"}
    assert {"RateLimitError", "ServerError", "ProviderTimeout", "MalformedResponse"} <= kinds
    assert any(row[0] == "ok" for row in http)
    assert direct == http


def test_direct_provider_matches_http_async() -> None:
    steps = _script(2)[:30]
    results = []
    for transport in ("http", "direct"):
        clock = VirtualClock()
        server = _server("openai", clock)
        if transport == "http":
            provider = OpenAIProvider("p", "gpt-4o-mini", base_url=server.base_url,
                                      api_key="mock-direct-key",
                                      async_client=server.async_client(timeout=30.0), clock=clock)
        else:
            provider = server.provider("p", "gpt-4o-mini", timeout=30.0)

        async def run() -> list[tuple]:
            out = []
            for fault, prompt, max_tokens in steps:
                if fault:
                    server.fail_next(fault)  # noqa: B023
                try:
                    r = await provider.acomplete(prompt, max_tokens=max_tokens)  # noqa: B023
                except LLMError as err:
                    out.append((type(err).__name__, err.status_code, err.retry_after, str(err)))
                else:
                    out.append((r.text, r.usage, r.latency_s, clock.now()))  # noqa: B023
            return out

        results.append(asyncio.run(run()))
    assert results[0] == results[1]


def test_direct_provider_validates_like_http() -> None:
    server = MockLLMServer(clock=VirtualClock())
    provider = server.provider("p", "gpt-4o-mini")
    with pytest.raises(ValueError, match="max_tokens"):
        provider.complete("hi", max_tokens=0)
    with pytest.raises(ValueError, match="exactly one of prompt or messages"):
        provider.complete()
    with pytest.raises(ValueError, match="api must be one of"):
        server.provider("p", api="gemini")
    assert "mock-direct-key" not in repr(provider)


def test_simulation_transports_give_the_same_result() -> None:
    scenario = Scenario(duration=90, request_rate=3.0, outage=(20.0, 40.0), seed=3,
                        primary_rpm=60, primary_tpm=20_000)
    a = Simulation(scenario, transport="http").run_sync()
    b = Simulation(scenario, transport="direct").run_sync()
    assert a.requests > 100 and a.server_429s + a.failed + a.fallbacks > 0
    for field in ("requests", "succeeded", "failed", "by_provider", "fallbacks", "attempts",
                  "retries", "server_429s", "limiter_waits", "breaker_trips",
                  "calls_into_outage", "cost_by_task", "total_cost", "errors"):
        assert getattr(a, field) == getattr(b, field), field
    with pytest.raises(ValueError, match="transport"):
        Simulation(scenario, transport="grpc")


# ------------------------------------------------------------------ simulation prompt picks

@pytest.mark.parametrize("size", [1, 3, 10, 16])
def test_choices_is_rng_choice(size: int) -> None:
    population = tuple(f"w{i}" for i in range(size))
    for seed in range(40):
        a, b = random.Random(seed), random.Random(seed)
        k = a.randint(0, 500)
        b.randint(0, 500)
        assert _choices(b, population, k) == [a.choice(population) for _ in range(k)]
        assert a.random() == b.random()  # the generator ends in the same state


# ------------------------------------------------------------------ cost tracking fast paths

def test_cached_price_equals_exact_arithmetic() -> None:
    table = PriceTable({"m": Pricing(0.15, 0.60, 0.075)})
    for usage in (Usage(1234, 567, 200), Usage(1234, 567, 200), Usage(0, 0, 0), Usage(9, 1, 9)):
        p = Pricing(0.15, 0.60, 0.075)
        expected = MONEY_CONTEXT.divide(
            (usage.prompt_tokens - usage.cached_tokens) * p.input_per_million
            + usage.cached_tokens * p.cached_input_per_million
            + usage.completion_tokens * p.output_per_million, MILLION)
        assert table.cost("m", usage) == expected
        assert table.cost("m", {"prompt_tokens": usage.prompt_tokens,
                                "completion_tokens": usage.completion_tokens,
                                "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}
                          ) == expected
    with pytest.raises(ValueError):
        table.cost("m", {"prompt_tokens": -1, "completion_tokens": 0})


def test_usage_fast_path_gives_validated_counts() -> None:
    from llm_patterns.pricing import normalize_usage

    counts = normalize_usage(Usage(10, 5, 3))
    assert counts == TokenCounts(10, 5, 3, 0)
    assert counts.uncached_tokens == 7


def test_records_are_bounded_and_totals_stay_exact() -> None:
    tracker = CostTracker({"m": Pricing(1, 2)}, max_records=3)
    cost = tracker.record("m", Usage(1_000_000, 0), dag_id="d", task_id="a")
    for i in range(9):
        tracker.record("m", Usage(1_000_000, 0), dag_id="d", task_id="ab"[i % 2], provider="p")
    assert cost == Decimal(1)
    assert tracker.total == Decimal(10)
    assert tracker.count == 10 and tracker.summary()["records"] == 10
    assert len(tracker.records) == 3
    assert tracker.by_task() == {("d", "a"): Decimal(6), ("d", "b"): Decimal(4)}
    assert tracker.by_dag() == {"d": Decimal(10)}
    assert tracker.by_provider() == {None: Decimal(1), "p": Decimal(9)}
    assert tracker.by_model() == {"m": Decimal(10)}
    none_kept = CostTracker({"m": Pricing(1, 2)}, max_records=0)
    none_kept.record("m", Usage(10, 1))
    assert none_kept.records == [] and none_kept.count == 1
    everything = CostTracker({"m": Pricing(1, 2)}, max_records=None)
    for _ in range(5):
        everything.record("m", Usage(10, 1))
    assert len(everything.records) == 5
    with pytest.raises(ValueError, match="max_records"):
        CostTracker({"m": Pricing(1, 2)}, max_records=-1)
    for bad in (1.5, True, "3"):  # the wrong type is a TypeError (_validate's one rule)
        with pytest.raises(TypeError, match="max_records"):
            CostTracker({"m": Pricing(1, 2)}, max_records=bad)


def test_labels_are_still_checked() -> None:
    tracker = CostTracker({"m": Pricing(1, 2)})
    with pytest.raises(TypeError, match="task_id"):
        tracker.record("m", Usage(1, 1), task_id=3)


def test_alert_amounts_follow_a_changed_budget() -> None:
    fired = []
    tracker = CostTracker({"m": Pricing(1, 0)}, budget=10, alert_at=(0.5,),
                          on_alert=lambda t, total, budget: fired.append((t, total, budget)))
    tracker.record("m", Usage(4_000_000, 0))
    assert fired == []
    tracker.budget = Decimal(6)
    tracker.record("m", Usage(0, 0))
    assert fired == [(0.5, Decimal(4), Decimal(6))]


# ------------------------------------------------------------------ context windows

def test_context_window_cache_follows_overrides() -> None:
    model = "fast-path-test-model"
    assert context.cached_context_window(model) is None
    with pytest.raises(KeyError):
        context.context_window(model)
    context.register_context_window(model, 1_000, 100)
    try:
        assert context.cached_context_window(model).context_window == 1_000
        assert context.context_window(model).context_window == 1_000
        context.register_context_window(model, 2_000, 100)
        assert context.context_window(model).context_window == 2_000
    finally:
        context._unregister(model)
    assert context.cached_context_window(model) is None


def test_client_refuses_a_prompt_that_cannot_fit() -> None:
    model = "fast-path-tiny-model"
    context.register_context_window(model, 100, 50)
    try:
        clock = VirtualClock()
        server = MockLLMServer(clock=clock, model=model)
        client = ResilientClient([server.provider("p", model)], clock=clock)
        client.complete("x" * 100, max_tokens=50)  # 25 + 50 tokens: fits
        from llm_patterns.errors import AllProvidersFailed, ContextWindowExceeded

        with pytest.raises(AllProvidersFailed) as info:
            client.complete("x" * 400, max_tokens=50)
        (name, error), = info.value.errors
        assert isinstance(error, ContextWindowExceeded)
        assert name == "p" and error.provider == "p" and error.prompt_tokens == 100
        assert server.stats["requests"] == 1
    finally:
        context._unregister(model)


# ------------------------------------------------------------------ events only when listened to

def test_client_events_reach_subscribers_in_order() -> None:
    clock = VirtualClock()
    server = MockLLMServer(clock=clock)
    breaker = CircuitBreaker("p", clock=clock)
    client = ResilientClient([server.provider("p", "gpt-4o-mini")], clock=clock,
                             breakers={"p": breaker})
    client.complete("hi", max_tokens=8)  # nobody listens: nothing built, nothing queued
    assert not breaker._pending
    seen, breaker_events = [], []
    client.subscribe(lambda e: seen.append((e.source, e.name, e.kind)))
    breaker.subscribe(lambda e: breaker_events.append(e.kind))
    client.complete("hi", max_tokens=8)
    assert seen == [("client", "client", "attempt"), ("client", "client", "response")]
    assert breaker_events == ["success"]


# ------------------------------------------------------------------ limiter headroom

def test_headroom_shrinks_capacity_not_rate() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(rpm=600, tpm=60_000, burst_seconds=1.0, headroom=0.1, clock=clock)
    assert limiter.requests_bucket.capacity == pytest.approx(9.0)
    assert limiter.tokens_bucket.capacity == pytest.approx(900.0)
    assert limiter.requests_bucket.refill_rate == pytest.approx(10.0)
    assert sum(limiter.try_acquire() for _ in range(20)) == 9
    with pytest.raises(ValueError, match=r"less headroom 0\.1"):
        limiter.acquire(950)
    with pytest.raises(ValueError, match="headroom"):
        RateLimiter(rpm=600, burst_seconds=1.0, headroom=1.0)
    with pytest.raises(ValueError, match="headroom"):
        RateLimiter(rpm=600, headroom=-0.1)
    assert RateLimiter(rpm=600, burst_seconds=1.0).requests_bucket.capacity == 10.0


def test_headroom_avoids_the_opening_burst_429() -> None:
    """The opening burst reaches the server 30 ms after the limiter admits it (later requests
    at once, as when a burst is dispatched one by one): without headroom the limiter's bucket
    refills while the burst is in transit and gets ahead of the server's."""

    def run(headroom: float) -> int:
        clock = VirtualClock()
        server = MockLLMServer(rpm=600, burst_seconds=1.0, latency=0.0, clock=clock)
        limiter = RateLimiter(rpm=600, burst_seconds=1.0, headroom=headroom, clock=clock)
        provider = server.provider("p", "gpt-4o-mini")

        async def one() -> None:
            await limiter.acquire_async()
            if clock.now() < 0.05:
                await clock.asleep(0.03)  # the burst's transit to the server
            try:
                await provider.acomplete("hi", max_tokens=1)
            except LLMError:
                pass

        async def main() -> None:
            tasks = []
            for _ in range(40):
                tasks.append(asyncio.ensure_future(one()))
                await clock.asleep(0.005)
            await asyncio.gather(*tasks)

        asyncio.run(main())
        return server.stats["by_status"].get(429, 0)

    assert run(0.0) > 0
    assert run(0.05) == 0


# ------------------------------------------------ a plain provider's complete() and the stamp

class _Recorder:
    """A provider with only complete()/acomplete(): records the keywords it was given."""

    name = "plain"
    model = "gpt-4o-mini"

    def __init__(self) -> None:
        self.seen: list[dict] = []

    def complete(self, prompt=None, **kw):
        self.seen.append({"prompt": prompt, **kw} if prompt is not None else dict(kw))
        return LLMResponse(text="ok", model=self.model, provider=self.name,
                           usage=Usage(prompt_tokens=3, completion_tokens=1))

    async def acomplete(self, prompt=None, **kw):
        return self.complete(prompt, **kw)


@pytest.mark.parametrize("args", [
    {"prompt": "hi", "max_tokens": 5},  # the lone prompt: no complete_kwargs dict is built
    {"prompt": "hi", "max_tokens": 5, "temperature": 0.2},
    {"prompt": "hi", "max_tokens": 5, "timeout": 3.0},
    {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
    {"prompt": "hi", "max_tokens": 5, "system": "be brief"},
])
def test_a_plain_provider_gets_exactly_complete_kwargs(args) -> None:
    request = Request(**args)
    sync, async_ = _Recorder(), _Recorder()
    send(sync, request)
    asyncio.run(asend(async_, request))
    assert sync.seen == async_.seen == [request.complete_kwargs()]


def test_the_stamp_sets_three_fields_and_keeps_the_rest() -> None:
    response = LLMResponse(text="ok", model="m", provider="p", usage=Usage(3, 1),
                           headers={"x": "1"})
    call = Call(Demand(1, 1), sync=True)
    call.started = 10.0
    stamped = stamp(response, call, 1, 9.0)  # a clock read before the start: latency 0
    assert (stamped.attempts, stamped.latency_s, stamped.fallback_used) == (1, 0.0, True)
    assert stamped is not response and response.attempts == 1 and not response.fallback_used
    assert {k: v for k, v in vars(stamped).items()
            if k not in ("attempts", "latency_s", "fallback_used")} == \
        {k: v for k, v in vars(response).items()
         if k not in ("attempts", "latency_s", "fallback_used")}
    call.attempts = 3
    again = stamp(response, call, 0, 12.5)
    assert (again.attempts, again.latency_s, again.fallback_used) == (3, 2.5, False)
