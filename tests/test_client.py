"""ResilientClient end to end: real httpx requests through the mock provider, on a virtual clock."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from decimal import Decimal

import pytest

from llm_patterns import (
    AllProvidersFailed,
    AnthropicProvider,
    BackoffPolicy,
    BudgetExceeded,
    CircuitBreaker,
    CostTracker,
    InvalidRequestError,
    MockLLMServer,
    OpenAIProvider,
    Pricing,
    RateLimiter,
    ResilientClient,
    RetryPolicy,
    VirtualClock,
)
from llm_patterns.tokens import estimate_tokens

PRICES = {"gpt-4o-mini": Pricing(0.15, 0.60), "claude-haiku-4-5": Pricing(1.0, 5.0),
          "big-window": Pricing(2.0, 8.0)}


def openai_on(mock: MockLLMServer, name: str, clock, model: str = "gpt-4o-mini"):
    return OpenAIProvider(name, model, base_url="http://mock.llm/v1", api_key="test-key",
                          client=mock.client(), async_client=mock.async_client(), clock=clock)


def anthropic_on(mock: MockLLMServer, name: str, clock, model: str = "claude-haiku-4-5"):
    return AnthropicProvider(name, model, base_url="http://mock.llm", api_key="test-key",
                             client=mock.client(), async_client=mock.async_client(), clock=clock)


def two_provider_client(clock, *, outage=None, seed=0, budget=None, hard_limit=False,
                        primary_rpm=None, primary_tpm=None):
    primary_mock = MockLLMServer(latency=0.2, seed=seed, clock=clock, rpm=primary_rpm,
                                 tpm=primary_tpm)
    secondary_mock = MockLLMServer(latency=0.3, seed=seed + 1, clock=clock, api="anthropic")
    if outage:
        primary_mock.outage(*outage)
    primary = openai_on(primary_mock, "primary", clock)
    secondary = anthropic_on(secondary_mock, "secondary", clock)
    limiters = {}
    if primary_rpm or primary_tpm:
        limiters["primary"] = RateLimiter(rpm=primary_rpm, tpm=primary_tpm, clock=clock,
                                          name="primary")
    client = ResilientClient(
        [primary, secondary],
        limiters=limiters,
        breakers={n: CircuitBreaker(n, failure_threshold=5, reset_timeout=10.0, clock=clock)
                  for n in ("primary", "secondary")},
        retry=RetryPolicy(max_attempts=3, backoff=BackoffPolicy(base_delay=0.5, max_delay=4),
                          clock=clock, rng=random.Random(seed)),
        cost=CostTracker(PRICES, budget=budget, hard_limit=hard_limit, clock=clock),
        clock=clock,
    )
    return client, primary_mock, secondary_mock


def test_outage_every_request_succeeds_breaker_spares_the_dead_primary():
    """Primary down for 30 s, one request a second: all succeed, few calls reach the primary."""
    clock = VirtualClock()
    client, primary_mock, _ = two_provider_client(clock, outage=(10.0, 40.0))
    answered_by = []
    for second in range(70):
        clock.sleep(max(0.0, second - clock.now()))
        response = client.complete(f"document {second}", max_tokens=50, task_id="summarize")
        answered_by.append((second, response.provider))
    assert len(answered_by) == 70  # every request succeeded
    during = [p for s, p in answered_by if 10 <= s < 40]
    assert set(during) <= {"primary", "secondary"} and during.count("secondary") >= 25
    into_outage = sum(1 for rec in primary_mock.stats["log"] if 10.0 <= rec["time"] < 40.0)
    assert into_outage <= 15, f"{into_outage} calls reached the dead primary"
    assert into_outage >= 5  # it did notice: the breaker needs its threshold of failures
    assert all(p == "primary" for s, p in answered_by if s >= 55)  # serves again after recovery
    assert client.breakers["primary"].state == "closed"


def test_concurrent_requests_run_at_the_limit_without_429s():
    """300 concurrent requests, client limiter matching the server: near-minimum time, no 429s."""
    clock = VirtualClock()
    rpm, tpm = 600, 60_000
    mock = MockLLMServer(rpm=rpm, tpm=tpm, latency=0.1, seed=1, clock=clock)
    provider = openai_on(mock, "primary", clock)
    limiter = RateLimiter(rpm=rpm, tpm=tpm, clock=clock, name="primary", burst_seconds=60)
    client = ResilientClient([provider], limiters={"primary": limiter},
                             retry=RetryPolicy(max_attempts=5, clock=clock, rng=random.Random(1)),
                             clock=clock)
    rng = random.Random(7)
    prompts = ["word " * rng.randint(20, 400) for _ in range(300)]
    charges = [estimate_tokens(p.strip() if False else p) + 100 for p in prompts]

    async def main():
        return await asyncio.gather(*(client.acomplete(p, max_tokens=100) for p in prompts))

    t0 = time.perf_counter()
    responses = asyncio.run(main())
    real = time.perf_counter() - t0
    assert len(responses) == 300
    # theoretical minimum: what exceeds the initial full buckets, at the refill rate
    need_tokens = max(0, sum(charges) - tpm) / (tpm / 60)
    need_requests = max(0, 300 - rpm) / (rpm / 60)
    minimum = max(need_tokens, need_requests)
    elapsed = clock.now()
    assert elapsed <= minimum * 1.10 + 1.0, (elapsed, minimum)
    assert mock.stats["by_status"].get(429, 0) <= 3  # at most 1 %
    assert real < 30  # a few real seconds; generous bound, not a benchmark


def _event_log(seed: int) -> list[tuple]:
    clock = VirtualClock()
    client, _, _ = two_provider_client(clock, outage=(5.0, 15.0), seed=seed,
                                       primary_rpm=30, primary_tpm=20_000)
    log = []
    for component in (client, *client.breakers.values(), *client.limiters.values(), client.cost):
        component.subscribe(lambda e: log.append((e.source, e.name, e.kind, round(e.time, 9),
                                                  tuple(sorted((k, str(v))
                                                               for k, v in e.data.items())))))

    async def main():
        async def one(i):
            await clock.asleep(i * 0.4)
            try:
                await client.acomplete(f"doc {i} " * (i % 7 + 1), max_tokens=64,
                                       dag_id="d", task_id=f"t{i % 3}")
            except AllProvidersFailed:
                pass

        await asyncio.gather(*(one(i) for i in range(80)))

    asyncio.run(main())
    return log


def test_same_seed_same_event_log():
    first, second = _event_log(3), _event_log(3)
    assert len(first) > 200
    assert first == second
    assert _event_log(4) != first  # and the seed matters


def test_retry_after_penalizes_the_limiter_and_usage_settles_upward():
    clock = VirtualClock()
    mock = MockLLMServer(latency=0.05, seed=0, clock=clock, tpm_multiplier=1.5)
    provider = openai_on(mock, "primary", clock)
    limiter = RateLimiter(rpm=600, tpm=100_000, clock=clock, name="primary")
    client = ResilientClient([provider], limiters={"primary": limiter},
                             retry=RetryPolicy(max_attempts=3, clock=clock, rng=random.Random(0)),
                             clock=clock)
    kinds = []
    limiter.subscribe(lambda e: kinds.append((e.kind, dict(e.data))))
    mock.fail_next("rate_limit")  # 429 with retry-after 1
    response = client.complete("x" * 400, max_tokens=10)
    assert response.attempts == 2
    penalties = [d["seconds"] for k, d in kinds if k == "penalize"]
    assert penalties and penalties[0] >= 1.0
    assert clock.now() >= 1.0  # the retry waited at least the Retry-After
    settles = [d for k, d in kinds if k == "settle"]
    # the mock counted 1.5x our prompt estimate: the limiter is charged the difference
    assert settles and settles[-1]["actual"] > settles[-1]["estimated"]


def test_labels_reach_the_cost_tracker_and_totals_are_exact():
    clock = VirtualClock()
    client, _, _ = two_provider_client(clock)
    for i in range(6):
        client.complete(f"doc {i}", max_tokens=20, dag_id="nightly", task_id=f"t{i % 2}",
                        run_id="r1")
    by_task = client.cost.by_task()
    assert set(by_task) == {("nightly", "t0"), ("nightly", "t1")}
    assert sum(by_task.values()) == client.cost.total
    assert isinstance(client.cost.total, Decimal) and client.cost.total > 0


def test_budget_exceeded_stops_the_chain_before_any_call():
    clock = VirtualClock()
    client, primary_mock, secondary_mock = two_provider_client(clock, budget=0.000001,
                                                               hard_limit=True)
    with pytest.raises(BudgetExceeded):
        client.complete("a long prompt " * 100, max_tokens=500)
    assert primary_mock.stats["requests"] == 0 and secondary_mock.stats["requests"] == 0


def test_invalid_request_is_not_sent_to_the_next_provider():
    import httpx

    clock = VirtualClock()
    bad_request = httpx.MockTransport(lambda request: httpx.Response(
        400, json={"error": {"message": "Unrecognized request argument", "type":
                             "invalid_request_error", "code": None}}))
    primary = OpenAIProvider("primary", "gpt-4o-mini", base_url="http://mock.llm/v1",
                             api_key="test-key", client=httpx.Client(transport=bad_request),
                             clock=clock)
    secondary_mock = MockLLMServer(clock=clock, api="anthropic")
    client = ResilientClient([primary, anthropic_on(secondary_mock, "secondary", clock)],
                             retry=RetryPolicy(max_attempts=3, clock=clock), clock=clock)
    with pytest.raises(InvalidRequestError):
        client.complete("hello", max_tokens=10)
    assert secondary_mock.stats["requests"] == 0
    with pytest.raises(ValueError, match="content"):  # caught locally, before any request
        client.complete(messages=[{"role": "user"}], max_tokens=10)


def test_quota_exhausted_is_not_retried_but_falls_back():
    clock = VirtualClock()
    client, primary_mock, _ = two_provider_client(clock)
    primary_mock.fail_next("insufficient_quota")
    response = client.complete("hello", max_tokens=10)
    assert response.provider == "secondary" and response.fallback_used
    assert primary_mock.stats["requests"] == 1  # one attempt only


def test_all_providers_failed_lists_every_error():
    clock = VirtualClock()
    client, primary_mock, secondary_mock = two_provider_client(clock)
    primary_mock.take_down()
    secondary_mock.take_down(status=529)
    with pytest.raises(AllProvidersFailed) as info:
        client.complete("hello", max_tokens=10)
    assert [name for name, _ in info.value.errors] == ["primary", "secondary"]


def test_context_window_skips_a_small_provider_without_calling_it():
    clock = VirtualClock()
    small = MockLLMServer(seed=0, clock=clock, context_window=1_000)
    large = MockLLMServer(seed=1, clock=clock)
    from llm_patterns.context import register_context_window

    register_context_window("small-window-test", 1_000, max_output_tokens=500)
    register_context_window("big-window", 1_000_000, max_output_tokens=32_000)
    prices = {"small-window-test": Pricing(0.1, 0.1), "big-window": Pricing(2.0, 8.0)}
    client = ResilientClient(
        [openai_on(small, "small", clock, model="small-window-test"),
         openai_on(large, "large", clock, model="big-window")],
        cost=CostTracker(prices), clock=clock,
    )
    response = client.complete("word " * 2_000, max_tokens=200)  # ~2,500 tokens: too big
    assert response.provider == "large" and response.fallback_used
    assert small.stats["requests"] == 0  # no money spent at the small provider
    short = client.complete("short", max_tokens=20)
    assert short.provider == "small"


def test_context_length_error_from_the_provider_falls_back():
    clock = VirtualClock()
    client, primary_mock, _ = two_provider_client(clock)
    primary_mock.fail_next("context_length_exceeded")
    assert client.complete("hi", max_tokens=10).provider == "secondary"


def test_async_and_sync_give_the_same_answer_shape():
    clock = VirtualClock()
    client, _, _ = two_provider_client(clock)
    sync = client.complete("same prompt", max_tokens=30)
    asyn = asyncio.run(client.acomplete("same prompt", max_tokens=30))
    assert (sync.provider, sync.model) == (asyn.provider, asyn.model)
    assert sync.attempts == asyn.attempts == 1 and not sync.fallback_used


def test_health_reports_breakers_and_limiters():
    clock = VirtualClock()
    client, _, _ = two_provider_client(clock, primary_rpm=60, primary_tpm=10_000)
    health = client.health()
    assert health["primary"]["breaker"]["state"] == "closed"
    assert health["primary"]["limiter"]["rpm"] == 60
    assert "limiter" not in health["secondary"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"providers": []}, "at least one provider"),
        ({"limiters": {"nope": None}}, "unknown providers"),
        ({"breakers": {"nope": None}}, "unknown providers"),
    ],
)
def test_bad_configuration(kwargs, match):
    clock = VirtualClock()
    mock = MockLLMServer(clock=clock)
    args = {"providers": [openai_on(mock, "p", clock)], **kwargs}
    with pytest.raises(ValueError, match=match):
        ResilientClient(args.pop("providers"), **args)


def test_duplicate_names_and_unpriced_models_fail_at_construction():
    clock = VirtualClock()
    mock = MockLLMServer(clock=clock)
    with pytest.raises(ValueError, match="unique"):
        ResilientClient([openai_on(mock, "p", clock), openai_on(mock, "p", clock)])
    with pytest.raises(KeyError, match="no-such-model"):
        ResilientClient([openai_on(mock, "p", clock, model="no-such-model")],
                        cost=CostTracker(PRICES))


@pytest.mark.parametrize("max_tokens, error", [(0, ValueError), (-5, ValueError),
                                               (2.5, TypeError), (True, TypeError)])
def test_bad_max_tokens_is_the_callers_error_before_any_request(max_tokens, error):
    clock = VirtualClock()
    client, primary, secondary = two_provider_client(clock)
    with pytest.raises(error, match="max_tokens"):
        client.complete("x", max_tokens=max_tokens)
    with pytest.raises(error, match="max_tokens"):
        asyncio.run(client.acomplete("x", max_tokens=max_tokens))
    assert primary.stats["requests"] == secondary.stats["requests"] == 0


def test_api_key_never_in_logs_or_reprs(caplog):
    clock = VirtualClock()
    mock = MockLLMServer(clock=clock, seed=0)
    secret = "sk-live-SECRET0123456789abcdef"
    provider = OpenAIProvider("p", "gpt-4o-mini", base_url="http://mock.llm/v1", api_key=secret,
                              client=mock.client(), clock=clock)
    client = ResilientClient([provider], retry=RetryPolicy(max_attempts=2, clock=clock),
                             clock=clock)
    mock.fail_next("server_error")
    mock.fail_next("auth")
    with (caplog.at_level(logging.DEBUG, logger="llm_patterns"),
          pytest.raises(AllProvidersFailed) as info):
        client.complete("hi", max_tokens=5)
    assert secret not in caplog.text
    assert secret not in repr(client) + repr(provider) + str(info.value) + repr(info.value)
