"""MockLLMServer in process: bodies, rate limits, faults, outages, stats, determinism, async."""

from __future__ import annotations

import asyncio
import json
import math
import threading

import httpx
import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.errors import is_retryable, retry_after_from_headers
from llm_patterns.mock import FAULT_KINDS, MockLLMServer
from llm_patterns.mock.limits import openai_duration
from llm_patterns.tokens import estimate_tokens

OPENAI = "/chat/completions"
ANTHROPIC = "/v1/messages"


def oa(content="Tell me about token buckets please", max_tokens=100, **extra):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, **extra}


def an(content="Tell me about token buckets please", max_tokens=100, **extra):
    return {"model": "claude-3-5-haiku-latest", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}], **extra}


def mock(**kw):
    kw.setdefault("clock", VirtualClock())
    kw.setdefault("latency", 0.0)
    return MockLLMServer(**kw)


# ---------------------------------------------------------------- bodies


def test_openai_body_shape_and_usage():
    clock = VirtualClock(start=10.0)
    server = mock(clock=clock, latency=0.25)
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Summarise the retry chapter in one line"}]
    with server.client() as client:
        r = client.post(OPENAI, json={"model": "gpt-4o", "messages": messages, "max_tokens": 50})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    text = choice["message"]["content"]
    assert "Summarise the retry" in text
    usage = body["usage"]
    prompt = "You are terse.\nSummarise the retry chapter in one line"
    assert usage["prompt_tokens"] == estimate_tokens(prompt)
    assert usage["completion_tokens"] == estimate_tokens(text) <= 50
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert r.headers["x-request-id"].startswith("req_") and len(r.headers["x-request-id"]) == 36
    assert clock.now() == pytest.approx(10.25)  # the latency passed on the virtual clock


def test_anthropic_body_shape_counts_system_prompt():
    server = mock(api="anthropic")
    assert server.base_url == "http://mock.llm"
    body = an("What is a circuit breaker?", system="Answer in French.")
    with server.client() as client:
        r = client.post(ANTHROPIC, json=body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["id"].startswith("msg_")
    assert (data["type"], data["role"], data["model"]) == ("message", "assistant",
                                                           "claude-3-5-haiku-latest")
    (block,) = data["content"]
    assert block["type"] == "text" and "circuit breaker" in block["text"]
    assert data["stop_reason"] == "end_turn"
    usage = data["usage"]
    assert usage["input_tokens"] == estimate_tokens("Answer in French.\nWhat is a circuit breaker?")
    assert usage["output_tokens"] == estimate_tokens(block["text"])
    assert usage["cache_read_input_tokens"] == 0 and usage["cache_creation_input_tokens"] == 0
    assert r.headers["request-id"].startswith("req_")


def test_content_parts_are_joined_like_strings():
    server = mock(api="anthropic")
    parts = [{"type": "text", "text": "first part"}, {"type": "text", "text": "second"}]
    with server.client() as client:
        a = client.post(ANTHROPIC, json=an(parts, system=[{"type": "text", "text": "sys"}])).json()
    assert a["usage"]["input_tokens"] == estimate_tokens("sys\nfirst part\nsecond")


def test_completion_never_exceeds_max_tokens():
    server = mock()
    with server.client() as client:
        for max_tokens in (1, 2, 3, 5, 8):
            body = client.post(OPENAI, json=oa("word " * 200, max_tokens=max_tokens)).json()
            assert body["usage"]["completion_tokens"] <= max_tokens
            assert body["choices"][0]["finish_reason"] == "length"


def test_model_echo_override_and_default():
    with mock().client() as client:
        assert client.post(OPENAI, json=oa()).json()["model"] == "gpt-4o-mini"
        no_model = {"messages": [{"role": "user", "content": "hi"}]}  # the real API refuses it
        refused = client.post(OPENAI, json=no_model)
        assert refused.status_code == 400
        assert refused.json()["error"]["message"] == "you must provide a model parameter"
    with mock(model="gpt-mock").client() as client:
        assert client.post(OPENAI, json=oa()).json()["model"] == "gpt-mock"


def test_text_is_deterministic_from_seed_and_prompt():
    def text(seed, prompt):
        with mock(seed=seed).client() as c:
            return c.post(OPENAI, json=oa(prompt)).json()["choices"][0]["message"]["content"]

    assert text(1, "alpha beta gamma delta") == text(1, "alpha beta gamma delta")
    texts = {text(s, "alpha beta gamma delta epsilon zeta eta theta iota") for s in range(12)}
    assert len(texts) > 1  # the seed matters


def test_openai_sdk_parses_the_bodies_in_process():
    # (the anthropic SDK only takes httpx2 clients: it is tested over loopback in test_serve_mock)
    openai = pytest.importorskip("openai")
    server = mock()
    sdk = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0,
                        http_client=server.client())
    out = sdk.chat.completions.create(model="gpt-4o-mini", max_tokens=20,
                                      messages=[{"role": "user", "content": "hello world"}])
    assert out.choices[0].message.content
    assert out.usage.prompt_tokens == estimate_tokens("hello world")
    server.fail_next("insufficient_quota")
    with pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="gpt-4o-mini", max_tokens=20,
                                    messages=[{"role": "user", "content": "hello world"}])
    assert info.value.code == "insufficient_quota"


# ---------------------------------------------------------------- rate limits


def test_rpm_bucket_429_headers_and_exact_retry_after():
    clock = VirtualClock()
    server = mock(clock=clock, rpm=120, burst_seconds=1.0)  # capacity 2, refill 2/s
    with server.client() as client:
        assert [client.post(OPENAI, json=oa()).status_code for _ in range(2)] == [200, 200]
        r = client.post(OPENAI, json=oa())
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["type"] == "requests"
        assert err["param"] is None and "requests per min" in err["message"]
        assert r.headers["retry-after-ms"] == "500"  # one request refills in 0.5 s
        assert r.headers["retry-after"] == "1"  # whole seconds, rounded up
        assert retry_after_from_headers(r.headers) == pytest.approx(0.5)
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert is_retryable(r)
        clock.sleep(0.499)
        assert client.post(OPENAI, json=oa()).status_code == 429  # not before the hint
        clock.sleep(0.001)
        assert client.post(OPENAI, json=oa()).status_code == 200  # exactly at the hint


def test_tpm_bucket_retry_after_ms_is_the_wait():
    clock = VirtualClock()
    server = mock(clock=clock, tpm=6000)  # capacity 6000, refill 100 tokens/s
    body = oa("x" * 400, max_tokens=1900)  # 100 + 1900 = 2000 tokens each
    with server.client() as client:
        for _ in range(3):
            assert client.post(OPENAI, json=body).status_code == 200
        clock.sleep(3.0)  # +300 tokens: 300 in the bucket, 1700 short
        r = client.post(OPENAI, json=body)
        assert r.status_code == 429
        assert r.json()["error"]["type"] == "tokens"
        wait = retry_after_from_headers(r.headers)
        assert wait == pytest.approx(17.0)
        assert r.headers["retry-after"] == "17"
        assert r.headers["x-ratelimit-remaining-tokens"] == "300"
        clock.sleep(wait)
        assert client.post(OPENAI, json=body).status_code == 200
    assert server.stats["tokens_charged"] == 4 * 2000


def test_a_refusal_by_one_bucket_takes_nothing_from_the_other():
    clock = VirtualClock()
    server = mock(clock=clock, rpm=60, tpm=1000)
    with server.client() as client:
        ok = client.post(OPENAI, json=oa("x" * 40, max_tokens=890))  # 10 + 890 = 900 tokens
        assert ok.headers["x-ratelimit-remaining-requests"] == "59"
        assert ok.headers["x-ratelimit-remaining-tokens"] == "100"
        r = client.post(OPENAI, json=oa("x" * 40, max_tokens=190))  # 200 tokens: refused
        assert r.status_code == 429 and r.json()["error"]["type"] == "tokens"
        assert r.headers["x-ratelimit-remaining-requests"] == "59"  # the request was not spent
        assert client.post(OPENAI, json=oa("x" * 40, max_tokens=90)).status_code == 200


def test_request_larger_than_the_tpm_bucket_is_429_request_too_large():
    server = mock(tpm=1000, burst_seconds=1.0)  # capacity 16.7 tokens
    with server.client() as client:
        r = client.post(OPENAI, json=oa("hi", max_tokens=100))
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and "Request too large" in err["message"]
    assert "retry-after" not in r.headers and "retry-after-ms" not in r.headers
    assert server.stats["by_fault"] == {"request_too_large": 1}


def test_ratelimit_headers_on_200s_and_none_when_unlimited():
    clock = VirtualClock()
    server = mock(clock=clock, rpm=600, tpm=60_000)
    with server.client() as client:
        r = client.post(OPENAI, json=oa("x" * 400, max_tokens=900))  # 1000 tokens
    assert r.status_code == 200
    h = r.headers
    assert h["x-ratelimit-limit-requests"] == "600" and h["x-ratelimit-limit-tokens"] == "60000"
    assert h["x-ratelimit-remaining-requests"] == "599"
    assert h["x-ratelimit-remaining-tokens"] == "59000"
    assert h["x-ratelimit-reset-requests"] == "100ms"  # one request at 10/s
    assert h["x-ratelimit-reset-tokens"] == "1s"  # 1000 tokens at 1000/s
    with mock().client() as client:
        r = client.post(OPENAI, json=oa())
    assert not [k for k in r.headers if k.startswith("x-ratelimit")]


def test_anthropic_ratelimit_headers_and_error_envelope():
    server = mock(api="anthropic", rpm=60, burst_seconds=1.0)  # capacity 1
    with server.client() as client:
        ok = client.post(ANTHROPIC, json=an())
        r = client.post(ANTHROPIC, json=an())
    assert ok.headers["anthropic-ratelimit-requests-limit"] == "60"
    assert ok.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert ok.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert r.status_code == 429
    assert r.json()["type"] == "error" and r.json()["error"]["type"] == "rate_limit_error"
    assert r.json()["request_id"] == r.headers["request-id"]
    assert "requests per minute" in r.json()["error"]["message"]
    assert r.headers["retry-after"] == "1" and "retry-after-ms" not in r.headers  # as Anthropic
    assert not [k for k in r.headers if k.startswith("x-ratelimit")]  # OpenAI's, not sent


def test_tpm_multiplier_counts_more_than_the_estimate():
    server = mock(tpm=100_000, tpm_multiplier=1.2)
    prompt = "y" * 400  # estimate 100 tokens
    with server.client() as client:
        body = client.post(OPENAI, json=oa(prompt, max_tokens=50)).json()
    assert body["usage"]["prompt_tokens"] == 120
    assert server.stats["tokens_charged"] == 170


def test_openai_duration_format():
    assert openai_duration(0.12) == "120ms"
    assert openai_duration(1) == "1s"
    assert openai_duration(1.5) == "1.5s"
    assert openai_duration(360) == "6m0s"
    assert openai_duration(3723.5) == "1h2m3.5s"
    with pytest.raises(ValueError, match="seconds"):
        openai_duration(-1)


# ---------------------------------------------------------------- faults


FAULT_EXPECTATIONS = {
    # kind: (openai status, openai error code or type, anthropic status, anthropic error type)
    "rate_limit": (429, "rate_limit_exceeded", 429, "rate_limit_error"),
    "insufficient_quota": (429, "insufficient_quota", 400, "invalid_request_error"),
    "server_error": (500, "server_error", 500, "api_error"),
    "overloaded": (503, "server_is_overloaded", 529, "overloaded_error"),
    "context_length_exceeded": (400, "context_length_exceeded", 400, "invalid_request_error"),
    "auth": (401, "invalid_api_key", 401, "authentication_error"),
}


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("kind", sorted(FAULT_EXPECTATIONS))
def test_json_faults(api, kind):
    server = mock(api=api)
    path, body = (OPENAI, oa()) if api == "openai" else (ANTHROPIC, an())
    server.fail_next(kind)
    with server.client() as client:
        r = client.post(path, json=body)
        after = client.post(path, json=body)
    oa_status, oa_code, an_status, an_type = FAULT_EXPECTATIONS[kind]
    assert r.status_code == (an_status if api == "anthropic" else oa_status)
    data = r.json()
    if api == "anthropic":
        assert data["type"] == "error" and data["error"]["type"] == an_type
        assert data["error"]["message"]
    else:
        err = data["error"]
        assert oa_code in (err["code"], err["type"]) and err["message"]
    assert after.status_code == 200  # count=1: only the next request
    assert server.stats["by_fault"] == {kind: 1}
    expected_retryable = kind in ("rate_limit", "server_error", "overloaded")
    if not (kind == "insufficient_quota" and api == "anthropic"):  # a 400: core-http's call
        assert is_retryable(r) is expected_retryable


def test_fault_details_match_the_providers():
    server = mock()
    server.fail_next("rate_limit")
    server.fail_next("insufficient_quota")
    server.fail_next("context_length_exceeded")
    server.fail_next("auth")
    secret = {"authorization": "Bearer sk-secret-key-123"}
    with server.client(headers=secret) as client:
        rl, quota, ctx, auth = (client.post(OPENAI, json=oa()) for _ in range(4))
    assert rl.headers["retry-after"] == "1" and rl.headers["retry-after-ms"] == "1000"
    assert "retry-after" not in quota.headers
    assert quota.json()["error"]["type"] == "insufficient_quota"
    assert "maximum context length is 128000 tokens" in ctx.json()["error"]["message"]
    assert auth.status_code == 401 and "sk-secret" not in auth.text  # never echoes a key
    aserver = mock(api="anthropic", context_window=1000)
    aserver.fail_next("context_length_exceeded")
    with aserver.client() as client:
        msg = client.post(ANTHROPIC, json=an()).json()["error"]["message"]
    assert msg.startswith("prompt is too long: ") and msg.endswith("tokens > 1000 maximum")


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_malformed_is_a_200_of_html(api):
    server = mock(api=api)
    server.fail_next("malformed")
    with server.client() as client:
        r = client.post(OPENAI if api == "openai" else ANTHROPIC,
                        json=oa() if api == "openai" else an())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.text == "<html>502 Bad Gateway</html>"
    with pytest.raises(json.JSONDecodeError):
        r.json()


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_timeout_raises_read_timeout_after_the_client_timeout(api):
    clock = VirtualClock()
    server = mock(api=api, clock=clock, latency=0.1)
    server.fail_next("timeout", count=2)
    path, body = (OPENAI, oa()) if api == "openai" else (ANTHROPIC, an())
    with server.client(timeout=7.0) as client:
        with pytest.raises(httpx.ReadTimeout) as info:
            client.post(path, json=body)
        assert clock.now() == pytest.approx(7.0)  # hung for the client's read timeout
        assert is_retryable(info.value)
        with pytest.raises(httpx.ReadTimeout):
            client.post(path, json=body)
        assert client.post(path, json=body).status_code == 200
    stats = server.stats
    assert stats["timeouts"] == 2 and stats["requests"] == 3 and stats["by_status"] == {200: 1}
    fixed = mock(clock=clock, timeout_after=2.5)
    fixed.fail_next("timeout")
    start = clock.now()
    with fixed.client(timeout=30.0) as client, pytest.raises(httpx.ReadTimeout):
        client.post(OPENAI, json=oa())
    assert clock.now() - start == pytest.approx(2.5)


def test_faults_are_served_first_in_first_out_with_counts():
    server = mock()
    server.fail_next("server_error", count=2)
    server.fail_next("auth")
    assert server.pending_faults == ["server_error", "server_error", "auth"]
    with server.client() as client:
        statuses = [client.post(OPENAI, json=oa()).status_code for _ in range(4)]
    assert statuses == [500, 500, 401, 200]
    assert server.pending_faults == []


def test_fail_next_rejects_bad_arguments():
    server = mock()
    with pytest.raises(ValueError) as info:
        server.fail_next("explode")
    assert "explode" in str(info.value)
    assert all(kind in str(info.value) for kind in FAULT_KINDS)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="count"):
            server.fail_next("server_error", count=bad)
    for bad in (1.5, True, "2"):
        with pytest.raises(TypeError, match="count"):
            server.fail_next("server_error", count=bad)
    with pytest.raises(ValueError, match="status"):
        server.fail_next("server_error", status=200)
    with pytest.raises(TypeError, match="should_retry"):
        server.fail_next("server_error", should_retry="no")
    assert server.pending_faults == []


# ---------------------------------------------------------------- outages and controls


def test_outage_windows_on_the_virtual_clock():
    clock = VirtualClock()
    server = mock(clock=clock)
    server.outage(2.0, 4.0)
    server.outage(6.0, 7.0, status=502)
    seen = {}
    with server.client() as client:
        for t in (0.0, 1.99, 2.0, 3.5, 3.999, 4.0, 6.0, 6.5, 7.0):
            clock.advance(t - clock.now())
            seen[t] = client.post(OPENAI, json=oa()).status_code
    assert seen == {0.0: 200, 1.99: 200, 2.0: 503, 3.5: 503, 3.999: 503, 4.0: 200,
                    6.0: 502, 6.5: 502, 7.0: 200}
    assert server.stats["by_fault"] == {"outage": 5}


def test_outage_validation():
    server = mock()
    for args, word in [((5, 5), "before"), ((6, 5), "before"), ((-1, 5), "start"),
                       ((1, float("inf")), "end")]:
        with pytest.raises(ValueError, match=word):
            server.outage(*args)
    for status in (200, 302, 600, 99):
        with pytest.raises(ValueError, match="status"):
            server.outage(1, 2, status=status)


def test_take_down_and_bring_up():
    server = mock()
    with server.client() as client:
        server.take_down()
        down = client.post(OPENAI, json=oa())
        server.take_down(status=500)
        assert client.post(OPENAI, json=oa()).status_code == 500
        assert server.stats["down"] == 500
        server.bring_up()
        assert client.post(OPENAI, json=oa()).status_code == 200
    assert down.status_code == 503 and down.json()["error"]["type"] == "server_error"
    with pytest.raises(ValueError, match="status"):
        server.take_down(status=200)


def test_set_limits_set_error_rate_and_reset():
    clock = VirtualClock()
    server = mock(clock=clock, rpm=60, burst_seconds=1.0)
    with server.client() as client:
        assert [client.post(OPENAI, json=oa()).status_code for _ in range(2)] == [200, 429]
        server.set_limits(rpm=None)
        assert server.rpm is None
        assert all(client.post(OPENAI, json=oa()).status_code == 200 for _ in range(5))
        server.set_limits(tpm=60, burst_seconds=60.0)
        assert client.post(OPENAI, json=oa("x" * 40, max_tokens=50)).status_code == 200
        assert client.post(OPENAI, json=oa("x" * 40, max_tokens=50)).status_code == 429
        server.set_error_rate(1.0)
        server.set_limits(tpm=None)
        assert client.post(OPENAI, json=oa()).status_code == 500
        with pytest.raises(ValueError, match="error_rate"):
            server.set_error_rate(1.5)
        server.fail_next("auth")
        server.outage(100, 200)
        server.take_down()
        server.reset()
        assert server.pending_faults == [] and server.stats["requests"] == 0
        clock.advance(150)
        server.set_error_rate(0.0)
        assert client.post(OPENAI, json=oa()).status_code == 200  # outage and down cleared


def test_error_rate_is_seeded_and_deterministic():
    def statuses(seed, p=0.3, n=400):
        with mock(seed=seed, error_rate=p).client() as client:
            return [client.post(OPENAI, json=oa()).status_code for _ in range(n)]

    a, b, c = statuses(7), statuses(7), statuses(8)
    assert a == b and a != c
    share = a.count(500) / len(a)
    assert 0.22 < share < 0.38
    assert set(statuses(1, p=0.0, n=50)) == {200}
    assert set(statuses(1, p=1.0, n=50)) == {500}


def test_context_window_option():
    server = mock(context_window=200)
    with server.client() as client:
        assert client.post(OPENAI, json=oa("x" * 400, max_tokens=100)).status_code == 200
        r = client.post(OPENAI, json=oa("x" * 400, max_tokens=101))  # 100 + 101 > 200
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert "201 tokens" in r.json()["error"]["message"]


# ---------------------------------------------------------------- stats, events, determinism


def test_stats_and_log():
    clock = VirtualClock()
    server = mock(clock=clock, rpm=60, burst_seconds=1.0, latency=0.5)
    server.fail_next("server_error")
    with server.client() as client:
        for _ in range(3):
            client.post(OPENAI, json=oa("abcd" * 5, max_tokens=10))
    stats = server.stats
    assert stats["requests"] == 3
    assert stats["by_status"] == {200: 1, 429: 1, 500: 1}
    assert stats["rejected_429"] == 1
    assert stats["tokens_charged"] == 15
    assert [rec["status"] for rec in stats["log"]] == [500, 200, 429]
    assert [rec["fault"] for rec in stats["log"]] == ["server_error", None, "rate_limited"]
    first = stats["log"][0]
    assert first == {"time": 0.0, "path": "/v1/chat/completions", "status": 500,
                     "prompt_tokens": 5, "max_tokens": 10, "tokens_charged": 0,
                     "fault": "server_error"}
    assert [rec["time"] for rec in stats["log"]] == [0.0, 0.5, 1.0]
    quiet = mock(keep_log=False)
    with quiet.client() as client:
        client.post(OPENAI, json=oa())
    assert quiet.stats["log"] == [] and quiet.stats["requests"] == 1
    bounded = mock(log_size=3)
    with bounded.client() as client:
        for _ in range(5):
            client.post(OPENAI, json=oa())
    assert len(bounded.stats["log"]) == 3 and bounded.stats["requests"] == 5


def test_request_events_for_the_dashboard():
    clock = VirtualClock()
    server = mock(clock=clock, latency=0.2)
    events = []
    server.subscribe(events.append)
    server.fail_next("overloaded")
    with server.client() as client:
        client.post(OPENAI, json=oa("abcd" * 3))
        client.post(OPENAI, json=oa("abcd" * 3))
    assert [(e.source, e.name, e.kind) for e in events] == [("mock", "mock", "request")] * 2
    assert [e.data["status"] for e in events] == [503, 200]
    assert [e.data["fault"] for e in events] == ["overloaded", None]
    assert events[1].data["prompt_tokens"] == 3 and events[1].data["path"] == "/v1/chat/completions"
    assert [e.time for e in events] == pytest.approx([0.2, 0.4])


def run_script(server):
    """A mixed request sequence: successes, 429s, faults, errors; returns every answer's bytes."""
    out = []
    with server.client() as client:
        for i in range(30):
            if i == 5:
                server.fail_next("server_error")
            if i == 9:
                server.fail_next("malformed")
            path, body = (OPENAI, oa(f"prompt number {i} " * (i % 4 + 1))) if i % 3 else (
                "http://mock.llm/v1/messages", an(f"anthropic prompt {i}"))
            r = client.post(path, json=body)
            out.append((r.status_code, sorted(r.headers.items()), r.content))
            server.clock.sleep(0.3)
    return out


def test_same_seed_same_requests_give_identical_bytes():
    kw = {"rpm": 120, "tpm": 20_000, "burst_seconds": 2.0, "error_rate": 0.2, "latency": 0.05}
    a = run_script(MockLLMServer(seed=3, clock=VirtualClock(), **kw))
    b = run_script(MockLLMServer(seed=3, clock=VirtualClock(), **kw))
    c = run_script(MockLLMServer(seed=4, clock=VirtualClock(), **kw))
    assert a == b
    assert a != c
    statuses = {status for status, _, _ in a}
    # the script really exercised the limits and the faults
    assert {200, 429, 500} <= statuses <= {200, 429, 500}


# ---------------------------------------------------------------- async and threads


def test_async_requests_overlap_in_virtual_time():
    clock = VirtualClock()
    server = mock(clock=clock, latency=0.5)

    async def main():
        async with server.async_client() as client:
            async def one(i):
                await clock.asleep(i * 0.01)
                r = await client.post(OPENAI, json=oa(f"request {i}"))
                return r.status_code, clock.now()

            return await asyncio.gather(*(one(i) for i in range(50)))

    results = asyncio.run(main())
    assert all(status == 200 for status, _ in results)
    for i, (_, finished) in enumerate(results):
        assert finished == pytest.approx(i * 0.01 + 0.5)  # concurrent, not 50 * 0.5 s
    assert clock.now() == pytest.approx(0.49 + 0.5)


def test_async_rate_limit_and_latency_callable():
    clock = VirtualClock()
    draws = []

    def latency(rng):
        draws.append(rng.random())
        return 0.1 + draws[-1] * 0.1

    server = mock(clock=clock, latency=latency, rpm=600, burst_seconds=1.0)  # capacity 10

    async def main():
        async with server.async_client() as client:
            rs = await asyncio.gather(*(client.post(OPENAI, json=oa()) for _ in range(15)))
            return [r.status_code for r in rs]

    statuses = asyncio.run(main())
    assert statuses.count(200) == 10 and statuses.count(429) == 5
    assert len(draws) == 15 and clock.now() <= 0.2 + 1e-9
    with pytest.raises(ValueError, match="latency"), mock(latency=lambda rng: -1.0).client() as c:
        c.post(OPENAI, json=oa())


def test_threads_never_overspend_the_bucket():
    server = mock(rpm=100)  # capacity 100; the virtual clock never moves (latency 0)
    statuses = []
    lock = threading.Lock()

    def worker():
        with server.client() as client:
            for _ in range(25):
                code = client.post(OPENAI, json=oa()).status_code
                with lock:
                    statuses.append(code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(200) == 100 and statuses.count(429) == 100
    assert server.stats["by_status"] == {200: 100, 429: 100}


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("content, api, word", [
    (b"not json", "openai", "JSON"),
    (b"[1, 2]", "openai", "object"),
    (b'{"model": "m"}', "openai", "messages"),
    (b'{"model": "m", "messages": []}', "openai", "messages"),
    (b'{"model": "m", "messages": ["hi"]}', "openai", "messages[0]"),
    (b'{"model": "m", "messages": [{"role": "user", "content": 5}]}', "openai", "content"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}',
     "openai", "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "9"}',
     "openai", "max_tokens"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream_options": {}}',
     "openai", "stream"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}', "anthropic",
     "max_tokens"),
    (b'\xff\xfe', "anthropic", "JSON"),
    (b"[" * 100_000, "openai", "JSON"),  # nested too deeply: a 400, never a crash
    (b"[" * 100_000, "anthropic", "JSON"),
])
def test_bad_bodies_answer_400(content, api, word):
    server = mock(api=api, tpm=1000)
    path = OPENAI if api == "openai" else ANTHROPIC
    with server.client() as client:
        r = client.post(path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400
    data = r.json()
    message = data["error"]["message"]
    assert word in message
    if api == "anthropic":
        assert data["error"]["type"] == "invalid_request_error"
    else:
        assert data["error"]["type"] == "invalid_request_error"
    assert server.stats["tokens_charged"] == 0


def test_unknown_path_and_method():
    server = mock()
    with server.client() as client:
        assert client.post("/completions", json=oa()).status_code == 404
        assert client.get(OPENAI).status_code == 405
    assert server.stats["by_status"] == {404: 1, 405: 1}


def test_both_endpoints_answer_whatever_the_api():
    server = mock(api="openai")
    with httpx.Client(transport=server.transport, base_url="http://mock.llm") as client:
        assert client.post(ANTHROPIC, json=an()).json()["type"] == "message"
        assert client.post("/v1/chat/completions", json=oa()).json()["object"] == "chat.completion"


@pytest.mark.parametrize("kwargs, word", [
    ({"api": "gemini"}, "api"),
    ({"latency": -0.1}, "latency"),
    ({"latency": float("nan")}, "latency"),
    ({"error_rate": 1.1}, "error_rate"),
    ({"rpm": 0}, "rpm"),
    ({"rpm": 30, "burst_seconds": 1.0}, "burst_seconds"),
    ({"tpm": -5}, "tpm"),
    ({"burst_seconds": 0}, "burst_seconds"),
    ({"tpm_multiplier": 0}, "tpm_multiplier"),
    ({"context_window": 0}, "context_window"),
    ({"log_size": 0}, "log_size"),
])
def test_constructor_validation(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MockLLMServer(clock=VirtualClock(), **kwargs)


def test_repr_and_base_urls():
    server = mock(rpm=60)
    assert "rpm=60" in repr(server) and server.base_url == "http://mock.llm/v1"
    with server.client() as client:
        assert str(client.base_url).rstrip("/") == "http://mock.llm/v1"
    assert math.isclose(server.stats["requests_remaining"], 60)
