"""``ResilientClient.stream()`` / ``astream()`` (SPEC §10): retries and fallback until the first
delta reaches the caller, ``StreamInterrupted`` after it; limiter charged at the start and
settled at the end; cost recorded once, also for an interrupted stream; budget holds committed
or released on every path. Everything on the VirtualClock, over the mock."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from llm_patterns import (
    AllProvidersFailed,
    BudgetExceeded,
    CircuitBreaker,
    CostTracker,
    InvalidRequestError,
    RateLimiter,
    ResilientClient,
    RetryPolicy,
)
from llm_patterns.backoff import BackoffPolicy
from llm_patterns.clock import VirtualClock
from llm_patterns.errors import ServerError, StreamInterrupted
from llm_patterns.mock import MockLLMServer
from llm_patterns.protocols import Demand
from llm_patterns.providers import AnthropicProvider, OpenAIProvider
from llm_patterns.response import LLMResponse, Usage

PROMPT = "Explain in plain words why retries need jitter and a budget"
TOOLS = [{"type": "function", "function": {
    "name": "forecast", "description": "Weather forecast",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city", "days"]}}}]
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}


class Spy(RateLimiter):
    """A RateLimiter that records the ``Demand`` it is charged and settled with (tokens refill
    as the virtual clock moves, so levels alone would not show it)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls = []

    def acquire(self, tokens=0):
        self.calls.append(("acquire", tokens))
        return super().acquire(tokens)

    async def acquire_async(self, tokens=0):
        self.calls.append(("acquire", tokens))
        return await super().acquire_async(tokens)

    def settle(self, estimated, actual):
        self.calls.append(("settle", estimated, actual))
        return super().settle(estimated, actual)


class Setup:
    """A primary and a backup mock server (different APIs by default), one clock, and a client
    with retries, a breaker and a limiter on each, a cost tracker and a budget."""

    def __init__(self, primary="openai", backup="anthropic", *, http=False, budget=10.0,
                 max_attempts=2, refund=(), tpm=100_000, **client_kw):
        self.clock = VirtualClock()
        self.servers = {
            "primary": MockLLMServer(api=primary, clock=self.clock, latency=0.2,
                                     chunk_delay=0.1, name="primary"),
            "backup": MockLLMServer(api=backup, clock=self.clock, latency=0.2, chunk_delay=0.1,
                                    name="backup"),
        }
        self.providers = [self.make(name, srv, http) for name, srv in self.servers.items()]
        self.breakers = {n: CircuitBreaker(n, failure_threshold=3, clock=self.clock)
                         for n in self.servers}
        self.limiters = {n: Spy(rpm=600, tpm=tpm, clock=self.clock) for n in self.servers}
        self.cost = CostTracker(budget=budget, hard_limit=True)
        self.client = ResilientClient(
            self.providers, limiters=self.limiters, breakers=self.breakers, cost=self.cost,
            retry=RetryPolicy(max_attempts=max_attempts, clock=self.clock,
                              backoff=BackoffPolicy(base_delay=0.5, jitter="none")),
            clock=self.clock, refund_unused_tokens=refund, **client_kw)

    def make(self, name, srv, http):
        if not http:
            return srv.provider(name, MODELS[srv.api])
        cls = OpenAIProvider if srv.api == "openai" else AnthropicProvider
        return cls(name, MODELS[srv.api], base_url=srv.base_url, api_key="sk-test-123456",
                   client=srv.client(), async_client=srv.async_client(), clock=self.clock)

    @property
    def primary(self):
        return self.servers["primary"]

    @property
    def backup(self):
        return self.servers["backup"]


def read(stream):
    with stream as s:
        return list(s), s


async def aread(stream):
    async with stream as s:
        return [d async for d in s], s


# -- a stream through the whole stack ------------------------------------------------------------
@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("http", [False, True])
def test_a_stream_through_the_client_is_the_completion(api, http):
    t = Setup(api, "openai", http=http)
    deltas, s = read(t.client.stream(PROMPT, max_tokens=80, dag_id="d", task_id="t"))
    whole = t.client.complete(PROMPT, max_tokens=80)
    r = s.response
    assert isinstance(r, LLMResponse) and "".join(deltas) == r.text == whole.text
    assert r.usage == whole.usage and r.provider == "primary" and not r.fallback_used
    assert r.attempts == 1 and r.finish_reason == "stop"
    assert r.latency_s == pytest.approx(0.2 + 0.1 * (len(deltas) - 1))
    records = t.cost.records
    assert len(records) == 2 and records[0].dag_id == "d" and records[0].task_id == "t"
    assert records[0].cost == records[1].cost and t.cost.reserved == 0


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_async_stream_through_the_client(api):
    t = Setup(api, "openai")
    deltas, s = asyncio.run(aread(t.client.astream(PROMPT, max_tokens=80)))
    assert "".join(deltas) == s.response.text == t.client.complete(PROMPT, max_tokens=80).text
    assert t.cost.count == 2 and t.cost.reserved == 0


def test_iterating_without_with_opens_the_stream():
    t = Setup()
    s = t.client.stream(PROMPT)
    assert s.provider is None
    assert "".join(s) == s.response.text and s.provider == "primary"


# -- before the first delta: retries and fallback, as complete() -------------------------------
@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_failure_before_the_first_delta_is_retried(run):
    t = Setup()
    t.primary.fail_next("overloaded")
    deltas, s = (read(t.client.stream(PROMPT)) if run == "sync"
                 else asyncio.run(aread(t.client.astream(PROMPT))))
    assert deltas and s.response.provider == "primary" and s.response.attempts == 2
    assert not s.response.fallback_used and t.backup.stats["requests"] == 0
    assert t.cost.count == 1 and t.cost.reserved == 0


@pytest.mark.parametrize("run", ["sync", "async"])
def test_it_falls_back_before_the_first_delta(run):
    t = Setup()
    t.primary.fail_next("overloaded", 2)
    deltas, s = (read(t.client.stream(PROMPT)) if run == "sync"
                 else asyncio.run(aread(t.client.astream(PROMPT))))
    r = s.response
    assert r.provider == "backup" and r.fallback_used and r.attempts == 1
    assert "".join(deltas) == r.text and r.model == "claude-haiku-4-5"
    assert t.breakers["primary"].consecutive_failures == 2
    # the failed provider's hold was released: one record, for the backup, nothing held
    assert [rec.provider for rec in t.cost.records] == ["backup"] and t.cost.reserved == 0


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_stream_that_breaks_before_any_text_reached_the_caller_falls_back(api):
    """A tool call streams no text: a drop part-way through its arguments is retried."""
    t = Setup(api, "anthropic" if api == "openai" else "openai", max_attempts=1)
    t.primary.fail_next("stream_drop")
    deltas, s = read(t.client.stream("Weather in Paris for 3 days?", tools=TOOLS,
                                     tool_choice="required"))
    assert deltas == [] and s.response.provider == "backup" and s.response.fallback_used
    (call,) = s.response.tool_calls
    assert call.name == "forecast" and set(call.arguments) == {"city", "days"}
    assert t.primary.stats["by_fault"] == {"stream_drop": 1}


def test_an_open_breaker_moves_on_without_calling():
    t = Setup()
    t.breakers["primary"].trip()
    _, s = read(t.client.stream(PROMPT))
    assert s.response.provider == "backup" and t.primary.stats["requests"] == 0


def test_all_providers_failing_before_the_first_delta():
    t = Setup()
    t.primary.fail_next("overloaded", 2)
    t.backup.fail_next("overloaded", 2)
    with pytest.raises(AllProvidersFailed) as info:
        read(t.client.stream(PROMPT))
    assert [name for name, _ in info.value.errors] == ["primary", "backup"]
    assert t.cost.count == 0 and t.cost.reserved == 0


def test_a_bad_request_stops_the_chain():
    t = Setup()
    t.primary.fail_next("auth", status=400)  # a 400: any provider would refuse it
    with pytest.raises(InvalidRequestError):
        read(t.client.stream(PROMPT))
    assert t.backup.stats["requests"] == 0 and t.cost.reserved == 0


# -- after it: StreamInterrupted, never a silent retry ------------------------------------------
@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("kind", ["stream_error", "stream_drop"])
@pytest.mark.parametrize("run", ["sync", "async"])
def test_a_failure_after_the_first_delta_is_an_interruption(api, kind, run):
    t = Setup(api, "openai" if api == "anthropic" else "anthropic", refund=("primary",))
    full = t.primary.provider("x", MODELS[api]).complete(PROMPT).text
    t.primary.reset()
    t.primary.fail_next(kind)
    got = []

    def sync():
        with t.client.stream(PROMPT) as s:
            for delta in s:
                got.append(delta)

    async def run_async():
        async with t.client.astream(PROMPT) as s:
            async for delta in s:
                got.append(delta)

    with pytest.raises(StreamInterrupted) as info:
        sync() if run == "sync" else asyncio.run(run_async())
    err = info.value
    assert err.provider == "primary" and err.partial_text == "".join(got) and got
    assert full.startswith(err.partial_text) and len(err.partial_text) < len(full)
    assert t.backup.stats["requests"] == 0  # never fallen back: the caller has the text
    assert t.primary.stats["requests"] == 1  # and never retried
    assert t.breakers["primary"].consecutive_failures == 1  # an outage mid-stream counts
    # cost recorded once, for what the interrupted stream used, and nothing left on hold
    (record,) = t.cost.records
    assert record.provider == "primary" and record.completion_tokens == err.usage.completion_tokens
    assert record.completion_tokens > 0 and t.cost.reserved == 0
    # the limiter, charged input + max_tokens, settled down to what was used (refund on)
    used = Demand(err.usage.prompt_tokens - err.usage.cached_tokens, err.usage.completion_tokens)
    estimate = Demand((len(PROMPT) + 3) // 4, 256)
    assert t.limiters["primary"].calls == [("acquire", estimate), ("settle", estimate, used)]


def test_the_caller_breaking_out_settles_and_pays_for_what_arrived():
    t = Setup("anthropic", "openai", refund=("primary",))
    with t.client.stream(PROMPT) as s:
        for delta in s:
            first = delta
            break
    (record,) = t.cost.records
    assert record.provider == "primary" and t.cost.reserved == 0
    assert record.prompt_tokens > 0 and record.completion_tokens >= 1
    assert s.text == first
    assert t.breakers["primary"].consecutive_failures == 0  # the provider was fine
    assert t.breakers["primary"].health()["failures"] == 0
    with pytest.raises(RuntimeError, match="not been read"):
        _ = s.response


def test_async_caller_breaking_out_settles_too():
    t = Setup()

    async def go():
        async with t.client.astream(PROMPT) as s:
            async for _ in s:
                break

    asyncio.run(go())
    assert t.cost.count == 1 and t.cost.reserved == 0


def test_cancelling_a_stream_still_pays_and_releases():
    t = Setup()

    async def go():
        reading = asyncio.Event()

        async def consume():
            async with t.client.astream(PROMPT) as s:
                async for _ in s:
                    reading.set()
                    await t.clock.asleep(1000)

        task = asyncio.ensure_future(consume())
        await reading.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    assert t.cost.count == 1 and t.cost.reserved == 0


# -- limiter: charged at the start, settled at the end -------------------------------------------
def test_the_limiter_is_charged_at_the_start_and_settled_at_the_end():
    t = Setup("anthropic", "openai", refund=("primary",))
    limiter = t.limiters["primary"]
    estimate = Demand((len(PROMPT) + 3) // 4, 500)
    with t.client.stream(PROMPT, max_tokens=500) as s:
        it = iter(s)
        next(it)
        assert limiter.calls == [("acquire", estimate)]  # charged before the first byte
        list(it)
    usage = s.response.usage
    used = Demand(usage.prompt_tokens - usage.cached_tokens, usage.completion_tokens)
    assert limiter.calls == [("acquire", estimate), ("settle", estimate, used)]


def test_without_refund_the_limiter_keeps_max_tokens_charged():
    t = Setup("openai", "anthropic")
    t.primary.fail_next("overloaded")
    read(t.client.stream(PROMPT, max_tokens=500))
    estimate = Demand((len(PROMPT) + 3) // 4, 500)
    # each attempt is charged (the failed one was sent); the usage is within the estimate
    assert t.limiters["primary"].calls == [("acquire", estimate)] * 2


# -- budget: holds under concurrency, committed or released on every path -----------------------
def test_a_hard_budget_holds_under_concurrent_streams():
    t = Setup("openai", "anthropic", budget=0.0001)
    t.backup.take_down()

    async def one(i):
        try:
            async with t.client.astream(f"{PROMPT} #{i}", max_tokens=20) as s:
                async for _ in s:
                    await asyncio.sleep(0)
            return "ok"
        except BudgetExceeded:
            return "budget"

    async def many():
        return await asyncio.gather(*(one(i) for i in range(40)))

    outcomes = asyncio.run(many())
    assert "ok" in outcomes and "budget" in outcomes
    assert t.cost.total <= Decimal("0.0001") and t.cost.reserved == 0
    assert t.cost.count == outcomes.count("ok")


def test_budget_exceeded_stops_the_chain_before_anything_is_sent():
    t = Setup(budget=0.0000001)
    with pytest.raises(BudgetExceeded):
        read(t.client.stream(PROMPT))
    assert t.primary.stats["requests"] == 0 and t.backup.stats["requests"] == 0


# -- requests every provider of the chain must be able to take ----------------------------------
def test_a_request_the_backup_cannot_take_is_refused_before_sending():
    t = Setup("openai", "anthropic")
    for call in (t.client.stream, t.client.astream):
        with pytest.raises(ValueError, match="json_object") as info:
            call(PROMPT, response_format={"type": "json_object"})
        assert any("backup" in note for note in info.value.__notes__)
    assert t.primary.stats["requests"] == 0


@pytest.mark.parametrize("primary,backup", [("openai", "anthropic"), ("anthropic", "openai")])
def test_a_tool_conversation_falls_back_to_the_other_api(primary, backup):
    """The conversation (made on one API) is translated for the other; the mock validates the
    body as the real API does, so a wrong translation fails here."""
    t = Setup(primary, backup)
    messages = [{"role": "system", "content": "You forecast."},
                {"role": "user", "content": "Weather in Paris for 3 days?"}]
    asked = t.client.complete(messages=messages, tools=TOOLS, tool_choice="required")
    (call,) = asked.tool_calls
    assert asked.provider == "primary"
    messages += [asked.message(), call.result(json.dumps({"temp": 21}))]
    t.primary.fail_next("overloaded", 4)
    deltas, s = read(t.client.stream(messages=messages, tools=TOOLS))
    assert s.response.provider == "backup" and s.response.fallback_used
    assert "".join(deltas) == s.response.text and s.response.text
    answer = t.client.complete(messages=messages, tools=TOOLS)  # complete() falls back too
    assert answer.provider == "backup" and answer.text == s.response.text
    assert t.backup.stats["by_status"] == {200: 2}


# -- a provider that cannot stream ---------------------------------------------------------------
class Plain:
    """A user's provider with only complete()/acomplete()."""

    name, model = "plain", "gpt-4o-mini"

    def complete(self, prompt=None, *, messages=None, max_tokens=256, **kw):
        return LLMResponse("whole answer", self.model, self.name, Usage(5, 2))

    async def acomplete(self, prompt=None, *, messages=None, max_tokens=256, **kw):
        return self.complete(prompt, messages=messages, max_tokens=max_tokens, **kw)


def test_a_provider_without_streaming_answers_in_one_delta():
    clock = VirtualClock()
    primary = MockLLMServer(clock=clock)
    primary.take_down()
    cost = CostTracker()
    client = ResilientClient([primary.provider("down"), Plain()], cost=cost, clock=clock)
    deltas, s = read(client.stream(PROMPT))
    assert deltas == ["whole answer"] and s.response.fallback_used
    adeltas, _ = asyncio.run(aread(client.astream(PROMPT)))
    assert adeltas == ["whole answer"] and cost.count == 2


def test_a_server_error_event_is_the_cause_of_the_interruption():
    t = Setup("anthropic", "openai")
    t.primary.fail_next("stream_error")
    with pytest.raises(StreamInterrupted) as info:
        read(t.client.stream(PROMPT))
    assert isinstance(info.value.cause, ServerError) and info.value.cause.status_code == 529


def test_a_refusal_with_no_text_falls_back():
    """A stream that ends without any text and fails (here: OpenAI's content filter refusing
    before writing) is judged before anything reached the caller: the backup answers."""
    import httpx

    refusal = (b'data: {"choices":[{"index":0,"delta":{"refusal":"no"},"finish_reason":null}]}'
               b'\n\ndata: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
               b"data: [DONE]\n\n")
    transport = httpx.MockTransport(lambda r: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=refusal))
    clock = VirtualClock()
    refusing = OpenAIProvider("refusing", "gpt-4o-mini", api_key="sk-test-123456",
                              client=httpx.Client(transport=transport), clock=clock)
    backup = MockLLMServer(api="anthropic", clock=clock).provider("backup")
    client = ResilientClient([refusing, backup], cost=CostTracker(), clock=clock)
    deltas, s = read(client.stream(PROMPT))
    assert s.response.provider == "backup" and deltas and s.response.fallback_used
