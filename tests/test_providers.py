"""OpenAIProvider and AnthropicProvider against small httpx.MockTransport handlers."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_patterns.clock import VirtualClock
from llm_patterns.errors import (
    AuthenticationError,
    ConnectionFailed,
    ConnectionPoolTimeout,
    ContentFilterError,
    ContextWindowExceeded,
    InvalidRequestError,
    LLMError,
    MalformedResponse,
    ModelNotFoundError,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from llm_patterns.providers import AnthropicProvider, HTTPProvider, OpenAIProvider
from llm_patterns.response import LLMResponse, Provider, Usage

KEY = "sk-proj-TESTKEYabcdefghijklmnopqrstuvwxyz0123456789"


# -- realistic bodies -----------------------------------------------------------------------------
def openai_ok(content="Hello there!", finish="stop", cached=1920, **message_extra):
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None,
                            "annotations": [], **message_extra},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": 2006,
            "completion_tokens": 300,
            "total_tokens": 2306,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0},
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
    }


def anthropic_ok(blocks=None, stop="end_turn"):
    return {
        "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": (blocks if blocks is not None
                    else [{"type": "text", "text": "Hi! How can I help?"}]),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 50,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 1000,
            "output_tokens": 200,
            "service_tier": "standard",
        },
    }


def openai_error(message, type_="invalid_request_error", code=None):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def anthropic_error(message, type_):
    return {"type": "error", "error": {"type": type_, "message": message},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


# -- harness --------------------------------------------------------------------------------------
class Recorder:
    """A MockTransport handler that records requests and answers with ``respond(request)``."""

    def __init__(self, respond):
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)

    @property
    def last_body(self):
        return json.loads(self.requests[-1].content)


def reply(status=200, body=None, headers=None, content=None):
    def respond(request):
        if content is not None:
            return httpx.Response(status, content=content, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return Recorder(respond)


def make(kind, handler, **kw):
    cls = OpenAIProvider if kind == "openai" else AnthropicProvider
    model = "gpt-4o" if kind == "openai" else "claude-sonnet-4-5"
    transport = httpx.MockTransport(handler)
    kw.setdefault("api_key", KEY)
    return cls(f"{kind}-primary", model, client=httpx.Client(transport=transport),
               async_client=httpx.AsyncClient(transport=transport), **kw)


# -- success --------------------------------------------------------------------------------------
def test_openai_success_parses_text_model_usage_and_headers():
    rec = reply(body=openai_ok(), headers={"x-ratelimit-remaining-requests": "499",
                                           "x-ratelimit-remaining-tokens": "29000"})
    p = make("openai", rec)
    r = p.complete("Say hello", max_tokens=50)
    assert isinstance(r, LLMResponse)
    assert r.text == "Hello there!"
    assert r.model == "gpt-4o-2024-08-06"
    assert r.provider == "openai-primary"
    assert r.usage == Usage(prompt_tokens=2006, completion_tokens=300, cached_tokens=1920)
    assert r.headers["x-ratelimit-remaining-requests"] == "499"
    assert r.raw["id"] == "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG"
    assert (r.attempts, r.fallback_used) == (1, False)
    assert isinstance(p, Provider)


def test_openai_request_url_auth_and_body():
    rec = reply(body=openai_ok())
    p = make("openai", rec, base_url="https://gateway.example/v1/")
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    p.complete(messages=msgs, max_tokens=77, temperature=0.2)
    req = rec.requests[0]
    assert req.method == "POST"
    assert str(req.url) == "https://gateway.example/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["content-type"] == "application/json"
    assert rec.last_body == {"model": "gpt-4o", "messages": msgs, "max_tokens": 77,
                             "temperature": 0.2}


def test_openai_default_base_url_and_prompt_becomes_user_message():
    rec = reply(body=openai_ok())
    p = make("openai", rec)
    p.complete("hello")
    assert str(rec.requests[0].url) == "https://api.openai.com/v1/chat/completions"
    assert rec.last_body["messages"] == [{"role": "user", "content": "hello"}]
    assert rec.last_body["max_tokens"] == 256


def test_openai_max_completion_tokens_param():
    rec = reply(body=openai_ok())
    p = make("openai", rec, max_tokens_param="max_completion_tokens")
    p.complete("x", max_tokens=40)
    assert rec.last_body["max_completion_tokens"] == 40 and "max_tokens" not in rec.last_body
    with pytest.raises(ValueError, match="max_tokens_param"):
        make("openai", rec, max_tokens_param="tokens")


def test_openai_tool_call_turn_has_empty_text():
    body = openai_ok(content=None, finish="tool_calls",
                     tool_calls=[{"id": "call_1", "type": "function",
                                  "function": {"name": "f", "arguments": "{}"}}])
    r = make("openai", reply(body=body)).complete("x")
    assert r.text == "" and r.raw["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"


def test_openai_default_headers_are_sent_but_cannot_replace_auth():
    rec = reply(body=openai_ok())
    p = make("openai", rec, default_headers={"OpenAI-Organization": "org-1",
                                             "Authorization": "Bearer other"})
    p.complete("x")
    assert rec.requests[0].headers["openai-organization"] == "org-1"
    assert rec.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_anthropic_success_joins_text_blocks_and_counts_cache():
    blocks = [{"type": "text", "text": "Part one. "},
              {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
              {"type": "text", "text": "Part two."}]
    rec = reply(body=anthropic_ok(blocks))
    p = make("anthropic", rec)
    r = p.complete("hi")
    assert r.text == "Part one. Part two."
    assert r.model == "claude-sonnet-4-5-20250929"
    assert r.usage == Usage(prompt_tokens=1350, completion_tokens=200, cached_tokens=1000,
                           cache_write_tokens=300)
    assert r.provider == "anthropic-primary"


def test_anthropic_request_url_headers_and_system_field():
    rec = reply(body=anthropic_ok())
    p = make("anthropic", rec, default_headers={"anthropic-beta": "prompt-caching-2024-07-31"})
    msgs = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"}]
    p.complete(messages=msgs, max_tokens=99, temperature=0)
    req = rec.requests[0]
    assert str(req.url) == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert req.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "authorization" not in req.headers
    assert rec.last_body == {
        "model": "claude-sonnet-4-5", "max_tokens": 99, "system": "You are terse.",
        "messages": msgs[1:], "temperature": 0,
    }


def test_anthropic_custom_base_url_without_v1():
    rec = reply(body=anthropic_ok())
    make("anthropic", rec, base_url="http://localhost:8080/").complete("x")
    assert str(rec.requests[0].url) == "http://localhost:8080/v1/messages"


def test_anthropic_system_parts_with_cache_control_are_kept():
    rec = reply(body=anthropic_ok())
    part = {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}}
    make("anthropic", rec).complete(messages=[{"role": "system", "content": [part]},
                                              {"role": "developer", "content": "and be kind"},
                                              {"role": "user", "content": "q"}])
    assert rec.last_body["system"] == [part, {"type": "text", "text": "and be kind"}]
    assert rec.last_body["messages"] == [{"role": "user", "content": "q"}]


def test_anthropic_rejects_system_only_and_double_system():
    p = make("anthropic", reply(body=anthropic_ok()))
    with pytest.raises(ValueError, match="user/assistant"):
        p.complete(messages=[{"role": "system", "content": "only"}])
    with pytest.raises(ValueError, match="system"):
        p.complete(messages=[{"role": "system", "content": "a"}, {"role": "user", "content": "b"}],
                   system="c")


def test_anthropic_system_kwarg_passes_through():
    rec = reply(body=anthropic_ok())
    make("anthropic", rec).complete("q", system="be nice")
    assert rec.last_body["system"] == "be nice"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_latency_measured_with_injected_clock(kind):
    clock = VirtualClock()
    body = openai_ok() if kind == "openai" else anthropic_ok()

    def slow(request):
        clock.advance(1.25)
        return httpx.Response(200, json=body)

    r = make(kind, Recorder(slow), clock=clock).complete("x")
    assert r.latency_s == pytest.approx(1.25)


# -- content filter -------------------------------------------------------------------------------
def test_openai_content_filter_finish_reason():
    p = make("openai", reply(body=openai_ok(content="", finish="content_filter")))
    with pytest.raises(ContentFilterError) as info:
        p.complete("x")
    assert info.value.provider == "openai-primary" and "content_filter" in str(info.value)


def test_openai_refusal_is_content_filter():
    body = openai_ok(content=None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    with pytest.raises(ContentFilterError, match="can't help"):
        make("openai", reply(body=body)).complete("x")


def test_anthropic_refusal_stop_reason():
    p = make("anthropic", reply(body=anthropic_ok(stop="refusal")))
    with pytest.raises(ContentFilterError, match="refusal"):
        p.complete("x")


# -- status -> error mapping ----------------------------------------------------------------------
OPENAI_CASES = [
    (429, openai_error("Rate limit reached for gpt-4o in organization org-x on tokens per min.",
                       "tokens", "rate_limit_exceeded"), RateLimitError),
    (429, openai_error("You exceeded your current quota, please check your plan and billing "
                       "details.", "insufficient_quota", "insufficient_quota"),
     QuotaExceededError),
    (401, openai_error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
     AuthenticationError),
    (403, openai_error("Country, region, or territory not supported", "request_forbidden",
                       "unsupported_country_region_territory"), AuthenticationError),
    (400, openai_error("This model's maximum context length is 128000 tokens. However, your "
                       "messages resulted in 130000 tokens.", "invalid_request_error",
                       "context_length_exceeded"), ContextWindowExceeded),
    (400, openai_error("The response was filtered due to the prompt triggering content management "
                       "policy.", "invalid_request_error", "content_filter"), ContentFilterError),
    (400, openai_error("'messages' must contain at least one message.", "invalid_request_error"),
     InvalidRequestError),
    (404, openai_error("The model `gpt-9` does not exist or you do not have access to it.",
                       "invalid_request_error", "model_not_found"), ModelNotFoundError),
    (422, openai_error("Unprocessable entity"), InvalidRequestError),
    (408, openai_error("Request timed out."), ProviderTimeout),
    (409, openai_error("Conflict"), ServerError),
    (500, openai_error("The server had an error while processing your request.", "server_error"),
     ServerError),
    (502, openai_error("Bad gateway.", "server_error"), ServerError),
    (503, openai_error("The engine is currently overloaded, please try again later.",
                       "server_error"), ServerError),
    (504, openai_error("Gateway timeout.", "server_error"), ServerError),
]

ANTHROPIC_CASES = [
    (429, anthropic_error("Number of request tokens has exceeded your per-minute rate limit",
                          "rate_limit_error"), RateLimitError),
    (402, anthropic_error("Your credit balance is too low to access the Anthropic API.",
                          "billing_error"), QuotaExceededError),
    (401, anthropic_error("invalid x-api-key", "authentication_error"), AuthenticationError),
    (403, anthropic_error("Your API key does not have permission to use the specified resource.",
                          "permission_error"), AuthenticationError),
    (400, anthropic_error("prompt is too long: 215000 tokens > 200000 maximum",
                          "invalid_request_error"), ContextWindowExceeded),
    (400, anthropic_error("input length and `max_tokens` exceed context limit: 198000 + 8192 > "
                          "200000", "invalid_request_error"), ContextWindowExceeded),
    (400, anthropic_error("messages: roles must alternate between \"user\" and \"assistant\"",
                          "invalid_request_error"), InvalidRequestError),
    (404, anthropic_error("model: claude-9", "not_found_error"), ModelNotFoundError),
    (413, anthropic_error("Request exceeds the maximum allowed number of bytes.",
                          "request_too_large"), InvalidRequestError),
    (500, anthropic_error("Internal server error", "api_error"), ServerError),
    (503, anthropic_error("Service unavailable", "api_error"), ServerError),
    (529, anthropic_error("Overloaded", "overloaded_error"), ServerError),
]


def _ids(cases):
    return [f"{status}-{cls.__name__}" for status, _, cls in cases]


@pytest.mark.parametrize("status, body, cls", OPENAI_CASES, ids=_ids(OPENAI_CASES))
def test_openai_status_mapping(status, body, cls):
    p = make("openai", reply(status, body))
    with pytest.raises(LLMError) as info:
        p.complete("x")
    err = info.value
    assert type(err) is cls
    assert err.provider == "openai-primary"
    assert err.status_code == status
    assert body["error"]["message"][:40] in str(err)  # the provider's own words


@pytest.mark.parametrize("status, body, cls", ANTHROPIC_CASES, ids=_ids(ANTHROPIC_CASES))
def test_anthropic_status_mapping(status, body, cls):
    p = make("anthropic", reply(status, body))
    with pytest.raises(LLMError) as info:
        p.complete("x")
    err = info.value
    assert type(err) is cls
    assert err.provider == "anthropic-primary"
    assert err.status_code == status
    assert body["error"]["message"][:40] in str(err)


def test_context_window_is_not_invalid_request():
    body = openai_error("too long", code="context_length_exceeded")
    with pytest.raises(ContextWindowExceeded) as info:
        make("openai", reply(400, body)).complete("x")
    assert not isinstance(info.value, InvalidRequestError)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520, 529, 599])
def test_any_5xx_is_server_error_even_with_html(status):
    html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    for kind in ("openai", "anthropic"):
        with pytest.raises(ServerError) as info:
            make(kind, reply(status, content=html.encode(),
                             headers={"content-type": "text/html"})).complete("x")
        assert info.value.status_code == status and "502 Bad Gateway" in str(info.value)


def test_redirect_is_malformed_not_silently_followed():
    rec = reply(301, content=b"", headers={"location": "https://elsewhere.example/v1"})
    with pytest.raises(MalformedResponse, match="301"):
        make("openai", rec).complete("x")


def test_long_provider_message_is_truncated():
    body = openai_error("x" * 5000, "server_error")
    with pytest.raises(ServerError) as info:
        make("openai", reply(500, body)).complete("x")
    assert 100 < len(str(info.value)) < 320


@pytest.mark.parametrize(
    "headers, expected",
    [({"retry-after": "7"}, 7.0),
     ({"retry-after-ms": "1500"}, 1.5),
     ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
     ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: go now
     ({}, None),
     ({"retry-after": "soon"}, None)],
)
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_retry_after_parsed(kind, headers, expected):
    body = (openai_error("slow down", "requests", "rate_limit_exceeded") if kind == "openai"
            else anthropic_error("slow down", "rate_limit_error"))
    with pytest.raises(RateLimitError) as info:
        make(kind, reply(429, body, headers=headers)).complete("x")
    assert info.value.retry_after == expected


def test_overloaded_529_carries_retry_after():
    rec = reply(529, anthropic_error("Overloaded", "overloaded_error"),
                headers={"retry-after": "12"})
    with pytest.raises(ServerError) as info:
        make("anthropic", rec).complete("x")
    assert info.value.retry_after == 12.0 and "retry after 12 s" in str(info.value)


# -- malformed 2xx --------------------------------------------------------------------------------
MALFORMED_OPENAI = {
    "html": {"content": b"<html><body>Sign in to the corporate proxy</body></html>",
                 "headers": {"content-type": "text/html"}},
    "empty": {"content": b""},
    "whitespace": {"content": b"  \n"},
    "json-list": {"body": [1, 2]},
    "no-usage": {"body": {k: v for k, v in openai_ok().items() if k != "usage"}},
    "usage-missing-field": {"body": {**openai_ok(), "usage": {"prompt_tokens": 3}}},
    "negative-usage": {"body": {**openai_ok(),
                                "usage": {"prompt_tokens": -3, "completion_tokens": 1}}},
    "no-choices": {"body": {**openai_ok(), "choices": []}},
    "choices-not-list": {"body": {**openai_ok(), "choices": "nope"}},
    "no-message": {"body": {**openai_ok(), "choices": [{"index": 0}]}},
    "content-int": {"body": openai_ok(content=42)},
    "content-null": {"body": openai_ok(content=None)},
    "error-in-200": {"body": openai_error("upstream failed", "server_error")},
    "truncated-json": {"content": b'{"choices": [{"message": '},
    "cached-above-prompt": {"body": openai_ok(cached=99999)},
}

MALFORMED_ANTHROPIC = {
    "html": {"content": b"<!DOCTYPE html><html>Cloudflare</html>"},
    "empty": {"content": b""},
    "no-usage": {"body": {k: v for k, v in anthropic_ok().items() if k != "usage"}},
    "usage-missing-output": {"body": {**anthropic_ok(), "usage": {"input_tokens": 3}}},
    "content-not-list": {"body": {**anthropic_ok(), "content": "hi"}},
    "block-not-dict": {"body": anthropic_ok(blocks=["hi"])},
    "text-block-no-text": {"body": anthropic_ok(blocks=[{"type": "text"}])},
    "error-in-200": {"body": anthropic_error("Overloaded", "overloaded_error")},
}


@pytest.mark.parametrize("case", sorted(MALFORMED_OPENAI))
def test_openai_malformed_2xx(case):
    with pytest.raises(MalformedResponse) as info:
        make("openai", reply(200, **MALFORMED_OPENAI[case])).complete("x")
    assert info.value.provider == "openai-primary" and info.value.status_code == 200
    assert "openai-primary" in str(info.value) and "HTTP 200" in str(info.value)


@pytest.mark.parametrize("case", sorted(MALFORMED_ANTHROPIC))
def test_anthropic_malformed_2xx(case):
    with pytest.raises(MalformedResponse) as info:
        make("anthropic", reply(200, **MALFORMED_ANTHROPIC[case])).complete("x")
    assert info.value.provider == "anthropic-primary" and info.value.status_code == 200


def test_malformed_html_names_content_type():
    rec = reply(200, content=b"<html>login</html>",
                headers={"content-type": "text/html; charset=utf-8"})
    with pytest.raises(MalformedResponse, match="text/html"):
        make("openai", rec).complete("x")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.sampled_from(["choices", "message", "content", "usage", "prompt_tokens",
                                       "completion_tokens", "text", "type", "input_tokens",
                                       "output_tokens", "model", "error", "finish_reason",
                                       "stop_reason"]), children, max_size=5),
    max_leaves=20,
)


_FUZZ_BODY: list = [None]
_FUZZ = {kind: make(kind, Recorder(lambda request: httpx.Response(200, json=_FUZZ_BODY[0])))
         for kind in ("openai", "anthropic")}


@settings(max_examples=200, deadline=None)
@given(body=json_values, kind=st.sampled_from(["openai", "anthropic"]))
def test_no_raw_exception_escapes_on_any_json(body, kind):
    _FUZZ_BODY[0] = body
    try:
        r = _FUZZ[kind].complete("x")
    except LLMError:
        return
    assert isinstance(r, LLMResponse) and isinstance(r.text, str)


# -- transport failures ---------------------------------------------------------------------------
def raising(exc_type, message="boom"):
    def respond(request):
        raise exc_type(message, request=request)

    return Recorder(respond)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize(
    "exc, cls",
    [(httpx.ReadTimeout, ProviderTimeout), (httpx.ConnectTimeout, ProviderTimeout),
     (httpx.WriteTimeout, ProviderTimeout), (httpx.PoolTimeout, ConnectionPoolTimeout),
     (httpx.ConnectError, ConnectionFailed), (httpx.ReadError, ConnectionFailed),
     (httpx.RemoteProtocolError, ConnectionFailed)],
)
def test_transport_errors(kind, exc, cls):
    with pytest.raises(cls) as info:
        make(kind, raising(exc, "[Errno 111] Connection refused")).complete("x")
    assert info.value.provider == f"{kind}-primary"
    assert exc.__name__ in str(info.value)
    assert isinstance(info.value.__cause__, exc)  # the original stays reachable for debugging


# -- async ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_async_success_and_request(kind):
    rec = reply(body=openai_ok() if kind == "openai" else anthropic_ok())
    p = make(kind, rec)
    r = asyncio.run(p.acomplete(messages=[{"role": "user", "content": "hi"}], max_tokens=12))
    assert r.provider == f"{kind}-primary" and r.usage.completion_tokens in (300, 200)
    assert rec.last_body["max_tokens"] == 12
    if kind == "openai":
        assert rec.requests[0].headers["authorization"] == f"Bearer {KEY}"
    else:
        assert rec.requests[0].headers["x-api-key"] == KEY


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_async_errors_map_the_same(kind):
    body = (openai_error("quota", "insufficient_quota", "insufficient_quota") if kind == "openai"
            else anthropic_error("credit", "billing_error"))
    status = 429 if kind == "openai" else 402
    with pytest.raises(QuotaExceededError):
        asyncio.run(make(kind, reply(status, body)).acomplete("x"))
    with pytest.raises(ProviderTimeout):
        asyncio.run(make(kind, raising(httpx.ReadTimeout)).acomplete("x"))
    with pytest.raises(MalformedResponse):
        asyncio.run(make(kind, reply(200, content=b"<html>")).acomplete("x"))


def test_async_handler_coroutine_and_latency():
    clock = VirtualClock()

    async def handler(request):
        clock.advance(0.5)
        return httpx.Response(200, json=openai_ok())

    p = OpenAIProvider("a", "gpt-4o", api_key=KEY, clock=clock,
                       async_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    assert asyncio.run(p.acomplete("x")).latency_s == pytest.approx(0.5)


def _counting_clients(monkeypatch, body):
    made = []

    def factory(self):
        client = httpx.AsyncClient(transport=httpx.MockTransport(
            lambda request: httpx.Response(200, json=body)))
        made.append(client)
        return client

    monkeypatch.setattr(HTTPProvider, "_new_async_client", factory)
    return made


def test_owned_async_client_is_per_event_loop_and_closed_with_it(monkeypatch):
    made = _counting_clients(monkeypatch, openai_ok())
    p = OpenAIProvider("a", "gpt-4o", api_key=KEY)

    async def twice():
        await p.acomplete("x")
        await p.acomplete("y")

    asyncio.run(twice())
    assert len(made) == 1  # reused within one loop
    assert made[0].is_closed  # and closed when that loop shut down
    asyncio.run(p.acomplete("z"))
    assert len(made) == 2 and made[1].is_closed  # a new loop got (and closed) its own


def test_no_client_left_open_after_many_asyncio_runs(monkeypatch):
    made = _counting_clients(monkeypatch, anthropic_ok())
    p = AnthropicProvider("b", "claude", api_key=KEY)
    for i in range(25):
        asyncio.run(p.acomplete(f"call {i}"))
    assert len(made) == 25 and all(c.is_closed for c in made)


def test_aclose_closes_this_loops_client_at_once(monkeypatch):
    made = _counting_clients(monkeypatch, openai_ok())
    p = OpenAIProvider("a", "gpt-4o", api_key=KEY)

    async def run():
        await p.acomplete("x")
        assert not made[0].is_closed
        await p.aclose()
        assert made[0].is_closed
        await p.acomplete("again")  # usable after aclose: a fresh client
        assert len(made) == 2 and not made[1].is_closed

    asyncio.run(run())
    assert made[1].is_closed


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_owned_clients_have_the_sdk_pool_and_close(mode, monkeypatch):
    made = []
    cls = httpx.Client if mode == "sync" else httpx.AsyncClient

    class Recording(cls):  # the real client, recording what it was built with
        def __init__(self, **kwargs):
            made.append((self, kwargs))
            super().__init__(transport=httpx.MockTransport(
                lambda r: httpx.Response(200, json=openai_ok())), **kwargs)

    monkeypatch.setattr(httpx, "Client" if mode == "sync" else "AsyncClient", Recording)
    p = OpenAIProvider("a", "gpt-4o", api_key=KEY, timeout=5.0)
    if mode == "sync":
        with p:
            p.complete("x")
    else:
        async def run():
            async with p:
                await p.acomplete("x")

        asyncio.run(run())
    (client, kwargs), = made
    limits = kwargs["limits"]
    assert (limits.max_connections, limits.max_keepalive_connections) == (1000, 100)
    assert client.is_closed


def test_given_client_is_not_closed():
    client = httpx.Client(transport=httpx.MockTransport(
        lambda r: httpx.Response(200, json=openai_ok())))
    with OpenAIProvider("a", "gpt-4o", api_key=KEY, client=client) as p:
        p.complete("x")
    assert not client.is_closed
    client.close()


def test_async_context_manager_closes_owned_clients(monkeypatch):
    made = _counting_clients(monkeypatch, anthropic_ok())

    async def run():
        async with AnthropicProvider("b", "claude", api_key=KEY) as p:
            await p.acomplete("x")
            assert not made[0].is_closed
        assert made[0].is_closed

    asyncio.run(run())


# -- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [OpenAIProvider, AnthropicProvider])
def test_argument_validation(cls):
    with pytest.raises(ValueError, match="name"):
        cls("", "m", api_key=KEY)
    with pytest.raises(ValueError, match="model"):
        cls("n", " ", api_key=KEY)
    with pytest.raises(ValueError, match="base_url"):
        cls("n", "m", api_key=KEY, base_url="api.openai.com/v1")
    with pytest.raises(ValueError, match="timeout"):
        cls("n", "m", api_key=KEY, timeout=0)
    with pytest.raises(TypeError, match="client"):
        cls("n", "m", api_key=KEY, client=object())


@pytest.mark.parametrize("cls", [OpenAIProvider, AnthropicProvider])
@pytest.mark.parametrize("bad, exc", [("", ValueError), (12345, TypeError),
                                      (b"sk-bytes-key-1234567890", TypeError),
                                      (KEY + "\n", ValueError), (" " + KEY, ValueError)])
def test_bad_api_key_never_echoed(cls, bad, exc, monkeypatch):
    monkeypatch.delenv(cls.env_var, raising=False)
    with pytest.raises(exc, match="api_key") as info:
        cls("n", "m", api_key=bad)
    text = str(info.value) + repr(info.value)
    assert KEY not in text and "sk-bytes" not in text and "12345" not in text


@pytest.mark.parametrize("cls", [OpenAIProvider, AnthropicProvider])
def test_api_key_from_environment(cls, monkeypatch):
    monkeypatch.delenv(cls.env_var, raising=False)
    with pytest.raises(ValueError, match=cls.env_var):
        cls("n", "m")
    monkeypatch.setenv(cls.env_var, KEY)
    rec = reply(body=openai_ok() if cls is OpenAIProvider else anthropic_ok())
    p = cls("n", "m", client=httpx.Client(transport=httpx.MockTransport(rec)))
    p.complete("x")
    sent = rec.requests[0].headers
    if cls is OpenAIProvider:
        assert sent["authorization"] == f"Bearer {KEY}"
    else:
        assert sent["x-api-key"] == KEY


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_call_validation_sends_nothing(kind):
    rec = reply(body=openai_ok())
    p = make(kind, rec)
    with pytest.raises(ValueError, match="max_tokens"):
        p.complete("x", max_tokens=0)
    with pytest.raises(ValueError, match="exactly one"):
        p.complete()
    with pytest.raises(ValueError, match="model"):
        p.complete("x", model="other")
    with pytest.raises(ValueError, match="stream"):
        p.complete("x", stream=True)
    assert rec.requests == []


# -- the key never leaks --------------------------------------------------------------------------
def _echo_key_handler(status):
    def respond(request):
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "")
        return httpx.Response(status, json=openai_error(f"bad key {key} for org", "x", "y"),
                              headers={"x-echo": key})

    return Recorder(respond)


ALL_STATUSES = [301, 400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 503, 529]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_api_key_never_in_repr_errors_or_logs(kind, caplog):
    caplog.set_level(logging.DEBUG)
    p = make(kind, _echo_key_handler(200))
    assert KEY not in repr(p) and KEY not in str(p)
    assert repr(p) == (f"{type(p).__name__}(name='{kind}-primary', model='{p.model}', "
                       f"base_url='{p.base_url}')")
    texts = []
    for status in ALL_STATUSES:
        p = make(kind, _echo_key_handler(status))
        with pytest.raises(LLMError) as info:
            p.complete("x")
        err = info.value
        texts += [str(err), repr(err), err.message]
        logging.getLogger("test").warning("failed: %s %r", err, err)
    for exc_type in (httpx.ConnectError, httpx.ReadTimeout):
        with pytest.raises(LLMError) as info:
            make(kind, raising(exc_type, f"cannot use {KEY}")).complete("x")
        texts += [str(info.value), repr(info.value)]
    # a 200 that echoes the key in a malformed body
    with pytest.raises(MalformedResponse) as info:
        make(kind, reply(200, content=f"<html>{KEY}</html>".encode())).complete("x")
    texts += [str(info.value), repr(info.value)]
    # a 200 whose JSON error echoes the key, and a refusal that quotes it
    with pytest.raises(MalformedResponse) as info:
        make(kind, reply(200, openai_error(f"upstream said {KEY}"))).complete("x")
    texts += [str(info.value), repr(info.value)]
    refusal = openai_ok(content=None)
    refusal["choices"][0]["message"]["refusal"] = f"no, {KEY}"
    with pytest.raises(ContentFilterError) as info:
        make("openai", reply(200, refusal)).complete("x")
    texts += [str(info.value), repr(info.value)]
    joined = "\n".join(texts) + caplog.text
    assert KEY not in joined
    assert KEY[:20] not in joined  # not even the recognisable prefix of it
    assert "***" in joined  # the echoed key was seen and scrubbed, not just absent


def test_redact_helper():
    from llm_patterns.errors import redact

    assert redact(f"key {KEY}!", KEY) == "key ***!"
    assert "ABCDEFGH" not in redact("header sk-ant-ABCDEFGHIJKLMN leaked")
    assert redact("no secrets here") == "no secrets here"


def test_providers_log_each_call_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="llm_patterns.providers")
    make("openai", reply(body=openai_ok())).complete("x")
    lines = [r.getMessage() for r in caplog.records if r.name == "llm_patterns.providers"]
    assert any("openai-primary" in m and "200" in m and "2006 prompt" in m for m in lines)


# -- every constructor argument: one rule (wrong type -> TypeError, wrong value -> ValueError) -----
BAD_ARGUMENTS = [
    ("name", "", ValueError), ("name", None, TypeError), ("name", 5, TypeError),
    ("model", "  ", ValueError), ("model", True, TypeError),
    ("base_url", "ftp://x", ValueError), ("base_url", "http://", ValueError),
    ("base_url", b"http://x", TypeError), ("base_url", 3.0, TypeError),
    ("timeout", 0, ValueError), ("timeout", -1, ValueError), ("timeout", float("nan"), ValueError),
    ("timeout", float("inf"), ValueError), ("timeout", "30", TypeError),
    ("timeout", True, TypeError),
    ("max_response_bytes", 0, ValueError), ("max_response_bytes", -5, ValueError),
    ("max_response_bytes", 1.5e6, TypeError), ("max_response_bytes", None, TypeError),
    ("default_headers", ["x"], TypeError), ("default_headers", {"a": 1}, TypeError),
    ("client", httpx.AsyncClient(), TypeError), ("async_client", httpx.Client(), TypeError),
    ("clock", "now", TypeError),
]


@pytest.mark.parametrize("cls", [OpenAIProvider, AnthropicProvider])
@pytest.mark.parametrize("param, value, exc", BAD_ARGUMENTS,
                         ids=[f"{p}={v!r}" for p, v, _ in BAD_ARGUMENTS])
def test_every_bad_argument_names_itself(cls, param, value, exc):
    kwargs = {"name": "n", "model": "m", "api_key": KEY, param: value}
    with pytest.raises(exc, match=param) as info:
        cls(kwargs.pop("name"), kwargs.pop("model"), **kwargs)
    assert type(info.value) is exc


def test_openai_max_tokens_param_is_a_choice():
    with pytest.raises(ValueError, match="max_tokens_param"):
        OpenAIProvider("n", "m", api_key=KEY, max_tokens_param="max_output_tokens")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_errors_after_a_2xx_carry_the_request_id(kind):
    for content in (b"<html>proxy login</html>", b'{"choices": []}', b""):
        rec = reply(200, content=content, headers={"x-request-id": "req_2xx",
                                                   "request-id": "req_2xx"})
        with pytest.raises(MalformedResponse) as info:
            make(kind, rec).complete("x")
        assert info.value.request_id == "req_2xx" and "req_2xx" in str(info.value)
