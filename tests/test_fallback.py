"""FallbackChain: order, fallback_used, what stops the chain, logging, events, async."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.errors import (
    AllProvidersFailed,
    AuthenticationError,
    BudgetExceeded,
    CircuitOpenError,
    ContentFilterError,
    ContextWindowExceeded,
    InvalidRequestError,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from llm_patterns.fallback import FallbackChain
from llm_patterns.providers import OpenAIProvider
from llm_patterns.response import LLMResponse, Usage


class Fake:
    """A scripted provider: each call pops the next outcome (an exception or an answer text)."""

    def __init__(self, name, *outcomes, model="m"):
        self.name = name
        self.model = model
        self.outcomes = list(outcomes) or ["ok"]
        self.calls = []

    def _next(self, prompt, messages, max_tokens, kw):
        self.calls.append({"prompt": prompt, "messages": messages, "max_tokens": max_tokens, **kw})
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        if isinstance(outcome, str):
            return LLMResponse(f"{outcome} from {self.name}", self.model, self.name, Usage(5, 2),
                               latency_s=0.3, attempts=2)
        return outcome

    def complete(self, prompt=None, *, messages=None, max_tokens=256, **kw):
        return self._next(prompt, messages, max_tokens, kw)

    async def acomplete(self, prompt=None, *, messages=None, max_tokens=256, **kw):
        await asyncio.sleep(0)
        return self._next(prompt, messages, max_tokens, kw)


def outage(name):
    return ServerError("server error: overloaded", provider=name, status_code=503)


# -- order and fallback_used ----------------------------------------------------------------------
def test_first_provider_answers_without_fallback():
    a, b = Fake("primary"), Fake("secondary")
    r = FallbackChain([a, b]).complete("hi", max_tokens=10, temperature=0)
    assert r.provider == "primary" and r.fallback_used is False
    assert a.calls == [{"prompt": "hi", "messages": None, "max_tokens": 10, "temperature": 0}]
    assert b.calls == []


def test_falls_back_in_order_and_marks_fallback_used():
    a, b, c = Fake("primary", outage("primary")), Fake("secondary", outage("secondary")), Fake("tertiary")
    r = FallbackChain([a, b, c]).complete(messages=[{"role": "user", "content": "hi"}])
    assert r.provider == "tertiary" and r.text == "ok from tertiary"
    assert r.fallback_used is True
    assert (r.latency_s, r.attempts, r.usage) == (0.3, 2, Usage(5, 2))  # the provider's own numbers
    assert [len(p.calls) for p in (a, b, c)] == [1, 1, 1]
    assert b.calls[0]["messages"] == [{"role": "user", "content": "hi"}]


def test_the_providers_response_object_is_not_mutated():
    answer = LLMResponse("x", "m", "secondary", Usage())
    chain = FallbackChain([Fake("primary", outage("primary")), Fake("secondary", answer)])
    r = chain.complete("q")
    assert r.fallback_used and not answer.fallback_used


@pytest.mark.parametrize(
    "error",
    [
        outage("p"),
        RateLimitError("slow down", status_code=429, retry_after=3),
        QuotaExceededError("no credit", status_code=429),
        ProviderTimeout("timed out"),
        AuthenticationError("bad key", status_code=401),
        ContentFilterError("refused"),
        CircuitOpenError("open", retry_after=10),
        ContextWindowExceeded("prompt is too long", status_code=400),
        RuntimeError("a bug in a provider adapter"),
        KeyError("choices"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_these_failures_move_on(error):
    b = Fake("secondary")
    r = FallbackChain([Fake("primary", error), b]).complete("x")
    assert r.provider == "secondary" and r.fallback_used


def test_context_window_falls_back_to_a_larger_model():
    small = Fake("small-window", ContextWindowExceeded("too long", provider="small-window"))
    large = Fake("large-window")
    assert FallbackChain([small, large]).complete("long " * 1000).provider == "large-window"


@pytest.mark.parametrize(
    "error",
    [BudgetExceeded("would pass the $5 budget"), InvalidRequestError("bad request", status_code=400)],
    ids=lambda e: type(e).__name__,
)
def test_budget_and_invalid_request_stop_at_once(error):
    b = Fake("secondary")
    with pytest.raises(type(error)) as info:
        FallbackChain([Fake("primary", error), b]).complete("x")
    assert info.value is error
    assert b.calls == []


def test_stop_after_earlier_failures_notes_them():
    a = Fake("primary", outage("primary"))
    budget = BudgetExceeded("over budget")
    c = Fake("tertiary")
    with pytest.raises(BudgetExceeded) as info:
        FallbackChain([a, Fake("secondary", budget), c]).complete("x")
    assert info.value is budget and c.calls == []
    assert any("primary: ServerError" in n for n in getattr(info.value, "__notes__", []))


def test_all_failed_lists_every_error_in_order_with_cause():
    errors = [outage("a"), RateLimitError("429", provider="b"), RuntimeError("c broke")]
    providers = [Fake(n, e) for n, e in zip("abc", errors)]
    with pytest.raises(AllProvidersFailed) as info:
        FallbackChain(providers).complete("x")
    exc = info.value
    assert exc.errors == [("a", errors[0]), ("b", errors[1]), ("c", errors[2])]
    assert exc.__cause__ is errors[2]
    assert "all 3 providers failed" in str(exc)


def test_single_provider_failure_is_all_failed():
    err = outage("only")
    with pytest.raises(AllProvidersFailed) as info:
        FallbackChain([Fake("only", err)]).complete("x")
    assert info.value.errors == [("only", err)]


def test_keyboard_interrupt_is_not_swallowed():
    b = Fake("secondary")
    with pytest.raises(KeyboardInterrupt):
        FallbackChain([Fake("primary", KeyboardInterrupt()), b]).complete("x")
    assert b.calls == []


def test_non_response_return_is_a_failure():
    b = Fake("secondary")
    r = FallbackChain([Fake("primary", {"text": "a dict"}), b]).complete("x")
    assert r.provider == "secondary"


def test_chain_is_reusable_and_stateless():
    a = Fake("primary", outage("primary"), "ok")
    chain = FallbackChain([a, Fake("secondary")])
    assert chain.complete("1").provider == "secondary"
    assert chain.complete("2").provider == "primary"


# -- validation -----------------------------------------------------------------------------------
def test_empty_providers_raise():
    with pytest.raises(ValueError, match="providers"):
        FallbackChain([])


def test_bad_providers_raise():
    with pytest.raises(ValueError, match="name"):
        FallbackChain([object()])
    with pytest.raises(TypeError, match="complete"):
        nameless = type("P", (), {"name": "p"})()
        FallbackChain([nameless])
    with pytest.raises(TypeError):
        FallbackChain(Fake("a"))  # type: ignore[arg-type]


def test_bad_call_arguments_raise_before_any_provider():
    a = Fake("primary")
    chain = FallbackChain([a])
    with pytest.raises(ValueError, match="exactly one"):
        chain.complete()
    with pytest.raises(ValueError):
        chain.complete("x", messages=[{"role": "user", "content": "y"}])
    assert a.calls == []


def test_repr_and_len():
    chain = FallbackChain([Fake("a"), Fake("b")], name="main")
    assert repr(chain) == "FallbackChain(name='main', providers=[a, b])"
    assert len(chain) == 2


# -- logging --------------------------------------------------------------------------------------
def _lines(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "llm_patterns.fallback"]


def test_logs_each_failure_and_who_answered(caplog):
    caplog.set_level(logging.INFO, logger="llm_patterns.fallback")
    a, b, c = Fake("primary", outage("primary")), Fake("secondary", ProviderTimeout("slow")), Fake("tertiary")
    FallbackChain([a, b, c]).complete("x")
    lines = _lines(caplog)
    assert lines[0][0] == "WARNING"
    assert lines[0][1].startswith("fallback: provider primary failed with ServerError: ")
    assert lines[0][1].endswith("; trying secondary")
    assert "overloaded" in lines[0][1]
    assert lines[1] == ("WARNING", "fallback: provider secondary failed with ProviderTimeout: slow; trying tertiary")
    assert lines[2][0] == "INFO" and "answered by tertiary" in lines[2][1] and "3/3" in lines[2][1]
    assert "2 failure(s)" in lines[2][1]


def test_logs_exhaustion_and_stop(caplog):
    caplog.set_level(logging.INFO, logger="llm_patterns.fallback")
    with pytest.raises(AllProvidersFailed):
        FallbackChain([Fake("a", outage("a")), Fake("b", outage("b"))], name="c1").complete("x")
    lines = _lines(caplog)
    assert lines[1][1].endswith("; no providers left")
    assert lines[0][1].startswith("fallback [c1]: provider a failed")
    assert lines[-1] == ("ERROR", "fallback [c1]: all 2 providers failed")
    caplog.clear()
    with pytest.raises(BudgetExceeded):
        FallbackChain([Fake("a", BudgetExceeded("over")), Fake("b")]).complete("x")
    assert "not falling back (BudgetExceeded stops the chain)" in _lines(caplog)[0][1]


def test_first_provider_success_logs_info(caplog):
    caplog.set_level(logging.INFO, logger="llm_patterns.fallback")
    FallbackChain([Fake("a"), Fake("b")]).complete("x")
    assert _lines(caplog) == [("INFO", "fallback: answered by a (provider 1/2)")]


# -- events ---------------------------------------------------------------------------------------
def test_events_failure_and_success():
    clock = VirtualClock(start=42.0)
    chain = FallbackChain([Fake("a", outage("a")), Fake("b")], name="main", clock=clock)
    events = []
    unsubscribe = chain.subscribe(events.append)
    chain.complete("x")
    assert [(e.source, e.name, e.kind, e.time) for e in events] == [
        ("fallback", "main", "failure", 42.0), ("fallback", "main", "success", 42.0)]
    fail, ok = events
    assert fail.data["provider"] == "a" and fail.data["error_type"] == "ServerError"
    assert "overloaded" in fail.data["error"] and fail.data["position"] == 0
    assert fail.data["fatal"] is False
    assert ok.data == {"provider": "b", "position": 1, "fallback_used": True}
    unsubscribe()
    chain.complete("y")
    assert len(events) == 2


def test_events_on_exhaustion_and_stop():
    events = []
    chain = FallbackChain([Fake("a", outage("a")), Fake("b", RuntimeError("x"))])
    chain.subscribe(events.append)
    with pytest.raises(AllProvidersFailed):
        chain.complete("x")
    assert [e.kind for e in events] == ["failure", "failure", "exhausted"]
    assert events[-1].data["errors"][1] == ("b", "RuntimeError", "x")
    events.clear()
    chain2 = FallbackChain([Fake("a", InvalidRequestError("bad")), Fake("b")])
    chain2.subscribe(events.append)
    with pytest.raises(InvalidRequestError):
        chain2.complete("x")
    assert [(e.kind, e.data["fatal"]) for e in events] == [("failure", True)]


# -- async ----------------------------------------------------------------------------------------
def test_async_falls_back_and_marks():
    a, b = Fake("primary", outage("primary")), Fake("secondary")
    r = asyncio.run(FallbackChain([a, b]).acomplete("hi", max_tokens=5))
    assert r.provider == "secondary" and r.fallback_used
    assert b.calls[0]["max_tokens"] == 5


def test_async_all_failed_and_stop():
    errors = [outage("a"), ContextWindowExceeded("too long")]
    with pytest.raises(AllProvidersFailed) as info:
        asyncio.run(FallbackChain([Fake("a", errors[0]), Fake("b", errors[1])]).acomplete("x"))
    assert info.value.errors == [("a", errors[0]), ("b", errors[1])]
    assert info.value.__cause__ is errors[1]
    c = Fake("c")
    with pytest.raises(BudgetExceeded):
        asyncio.run(FallbackChain([Fake("a", BudgetExceeded("no")), c]).acomplete("x"))
    assert c.calls == []


def test_async_needs_acomplete_everywhere():
    class SyncOnly:
        name = "sync-only"
        model = "m"

        def complete(self, prompt=None, **kw):
            return LLMResponse("x", "m", "sync-only", Usage())

    first = Fake("first")
    with pytest.raises(TypeError, match="sync-only"):
        asyncio.run(FallbackChain([first, SyncOnly()]).acomplete("x"))
    assert first.calls == []
    assert FallbackChain([SyncOnly()]).complete("x").provider == "sync-only"


def test_async_cancellation_is_not_swallowed():
    class Hangs(Fake):
        async def acomplete(self, prompt=None, **kw):
            await asyncio.Event().wait()

    b = Fake("b")

    async def run():
        task = asyncio.create_task(FallbackChain([Hangs("a"), b]).acomplete("x"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert b.calls == []


# -- with the real HTTP providers -----------------------------------------------------------------
def test_chain_over_http_providers():
    def down(request):
        return httpx.Response(503, json={"error": {"message": "overloaded", "type": "server_error"}})

    def up(request):
        return httpx.Response(200, json={
            "model": "gpt-4o-mini", "choices": [{"message": {"content": "pong"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}})

    key = "sk-test-chainkey-1234567890"
    a = OpenAIProvider("primary", "gpt-4o", api_key=key, client=httpx.Client(transport=httpx.MockTransport(down)))
    b = OpenAIProvider("backup", "gpt-4o-mini", api_key=key, client=httpx.Client(transport=httpx.MockTransport(up)))
    r = FallbackChain([a, b]).complete("ping")
    assert (r.text, r.provider, r.fallback_used) == ("pong", "backup", True)
    with pytest.raises(AllProvidersFailed) as info:
        FallbackChain([a]).complete("ping")
    assert info.value.errors[0][1].status_code == 503 and key not in str(info.value)
