"""Every real answer of SPEC §9, sent on demand by the mock, in each API's own shape.

In process (httpx.MockTransport, VirtualClock): the fault kinds and their options, request ids
on every answer, usage as billed (prompt caching, reasoning), finish reasons, and Anthropic's
separate RPM / ITPM / OTPM limits with their headers. The official SDKs' classification of the
same answers over loopback is in test_mock_sdks.py.
"""

from __future__ import annotations

import datetime as dt
import math

import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.mock import FAULT_KINDS, MockLLMServer
from llm_patterns.mock.faults import FAULT_KINDS as FAULT_TABLE
from llm_patterns.tokens import estimate_tokens

OPENAI = "/chat/completions"
ANTHROPIC = "/v1/messages"
PATHS = {"openai": "/v1/chat/completions", "anthropic": ANTHROPIC}


def oa(content="Tell me about token buckets please", max_tokens=100, **extra):
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, **extra}


def an(content="Tell me about token buckets please", max_tokens=100, **extra):
    return {"model": "claude-haiku-4-5", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": content}], **extra}


def mock(**kw):
    kw.setdefault("clock", VirtualClock())
    kw.setdefault("latency", 0.0)
    return MockLLMServer(**kw)


def post(server, api, body=None):
    with server.client(base_url="http://mock.llm") as client:
        return client.post(PATHS[api], json=body if body is not None else
                           (oa() if api == "openai" else an()))


# ---------------------------------------------------------------- billing, as each API says it

OPENAI_BILLING = {
    # code: (status, type) as OpenAI sends them (its error-codes guide: billing codes are 429s
    # whose type stays "insufficient_quota"; billing_hard_limit_reached is a 400)
    "insufficient_quota": (429, "insufficient_quota"),
    "credit_balance_exhausted": (429, "insufficient_quota"),
    "organization_spend_limit_exceeded": (429, "insufficient_quota"),
    "project_spend_limit_exceeded": (429, "insufficient_quota"),
    "organization_usage_limit_exceeded": (429, "insufficient_quota"),
    "billing_hard_limit_reached": (400, "invalid_request_error"),
}


@pytest.mark.parametrize("code", sorted(OPENAI_BILLING))
def test_openai_billing_codes(code):
    server = mock()
    server.fail_next(code)
    r = post(server, "openai")
    status, etype = OPENAI_BILLING[code]
    assert r.status_code == status
    err = r.json()["error"]
    assert (err["type"], err["code"], err["param"]) == (etype, code, None)
    assert err["message"]
    assert "retry-after" not in r.headers  # waiting does not bring the money back
    assert r.headers["x-request-id"].startswith("req_")
    assert post(server, "openai").status_code == 200  # one fault, used up


def test_anthropic_credit_balance_too_low_is_a_400_invalid_request():
    server = mock(api="anthropic")
    server.fail_next("credit_balance_too_low")
    r = post(server, "anthropic")
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith(
        "Your credit balance is too low to access the Anthropic API.")
    assert body["request_id"] == r.headers["request-id"]


@pytest.mark.parametrize("code", ["enforced_spend_limit_reached", "contract_spend_limit_reached"])
def test_anthropic_spend_limits_are_429s_with_details_and_no_retry_after(code):
    clock = VirtualClock(start=0.0)
    server = mock(api="anthropic", clock=clock)
    server.fail_next(code)
    r = post(server, "anthropic")
    assert r.status_code == 429
    error = r.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["details"] == {"error_code": code}
    assert error["message"].startswith("You have reached your API usage limits")
    assert "retry-after" not in r.headers
    if code == "enforced_spend_limit_reached":  # access comes back next month, 00:00 UTC
        now = dt.datetime.fromtimestamp(1_700_000_000, tz=dt.UTC)
        assert f"{now.year}-{now.month + 1:02d}-01 at 00:00 UTC" in error["message"]


@pytest.mark.parametrize("kind, openai_code, anthropic", [
    ("insufficient_quota", "insufficient_quota", (400, None)),
    ("credit_balance_exhausted", "credit_balance_exhausted", (400, None)),
    ("organization_spend_limit_exceeded", "organization_spend_limit_exceeded",
     (429, "enforced_spend_limit_reached")),
    ("organization_usage_limit_exceeded", "organization_usage_limit_exceeded",
     (429, "contract_spend_limit_reached")),
    ("credit_balance_too_low", "credit_balance_exhausted", (400, None)),
    ("enforced_spend_limit_reached", "organization_spend_limit_exceeded",
     (429, "enforced_spend_limit_reached")),
    ("contract_spend_limit_reached", "organization_usage_limit_exceeded",
     (429, "contract_spend_limit_reached")),
])
def test_a_billing_kind_gets_the_nearest_real_answer_on_the_other_api(kind, openai_code,
                                                                      anthropic):
    server = mock()
    server.fail_next(kind, count=2)
    o, a = post(server, "openai"), post(server, "anthropic")
    assert o.json()["error"]["code"] == openai_code
    status, detail = anthropic
    assert a.status_code == status
    if detail is None:
        assert "credit balance is too low" in a.json()["error"]["message"]
    else:
        assert a.json()["error"]["details"] == {"error_code": detail}


def test_status_option_sends_a_billing_code_with_another_status():
    server = mock()
    server.fail_next("credit_balance_exhausted", status=402)
    r = post(server, "openai")
    assert r.status_code == 402
    assert r.json()["error"]["code"] == "credit_balance_exhausted"


@pytest.mark.parametrize("value, header", [(True, "true"), (False, "false")])
def test_should_retry_option_sets_the_header(value, header):
    server = mock()
    server.fail_next("server_error", should_retry=value)
    server.fail_next("rate_limit")
    first, second = post(server, "openai"), post(server, "openai")
    assert first.status_code == 500 and first.headers["x-should-retry"] == header
    assert second.status_code == 429 and "x-should-retry" not in second.headers


# ---------------------------------------------------------------- model_not_found, content filter


def test_model_not_found_in_each_api():
    server = mock()
    server.fail_next("model_not_found", count=2)
    o = post(server, "openai", oa() | {"model": "gpt-9"})
    a = post(server, "anthropic", an() | {"model": "claude-nope"})
    assert o.status_code == 404 and a.status_code == 404
    assert o.json()["error"] == {
        "message": "The model `gpt-9` does not exist or you do not have access to it.",
        "type": "invalid_request_error", "param": None, "code": "model_not_found"}
    assert a.json()["error"] == {"type": "not_found_error", "message": "model: claude-nope"}


def test_content_filter_cuts_the_answer_with_each_apis_finish_reason():
    server = mock()
    full = post(server, "openai").json()["choices"][0]["message"]["content"]
    server.fail_next("content_filter", count=2)
    o = post(server, "openai").json()
    a = post(server, "anthropic").json()
    assert o["choices"][0]["finish_reason"] == "content_filter"
    cut = o["choices"][0]["message"]["content"]
    assert cut and len(cut) < len(full) and full.startswith(cut)
    assert a["stop_reason"] == "refusal" and a["content"][0]["text"]
    assert server.stats["by_fault"] == {"content_filter": 2}


def test_a_content_filter_fault_waits_behind_a_rate_limit_refusal():
    server = mock(rpm=60, burst_seconds=1.0)  # one request a second
    assert post(server, "openai").status_code == 200
    server.fail_next("content_filter")
    assert post(server, "openai").status_code == 429  # refused: the fault is still queued
    assert server.pending_faults == ["content_filter"]
    server.clock.advance(1.0)
    assert post(server, "openai").json()["choices"][0]["finish_reason"] == "content_filter"


# ---------------------------------------------------------------- request ids on every answer


def test_every_answer_carries_a_request_id():
    server = mock(rpm=60, burst_seconds=1.0)
    with server.client(base_url="http://mock.llm") as client:
        answers = [
            client.post(PATHS["openai"], json=oa()),  # 200
            client.post(PATHS["openai"], json=oa()),  # 429
            client.post("/v1/nope", json={}),  # 404
            client.get(PATHS["anthropic"]),  # 405
            client.post(PATHS["anthropic"], content=b"{}", headers={"content-type": "text/plain"}),
            client.post(PATHS["anthropic"], json={"model": "m"}),  # 400
        ]
    assert [r.status_code for r in answers] == [200, 429, 404, 405, 415, 400]
    ids = [r.headers.get("x-request-id") or r.headers.get("request-id") for r in answers]
    assert all(ids) and len(set(ids)) == len(ids)
    assert answers[3].headers["request-id"].startswith("req_011C")
    assert answers[5].json()["request_id"] == answers[5].headers["request-id"]


def test_fault_table_documents_every_kind():
    assert set(FAULT_KINDS) == set(FAULT_TABLE)
    assert all(len(answers) == 2 and all(answers) for answers in FAULT_TABLE.values())


# ---------------------------------------------------------------- usage as billed


LONG = "Policy clause about retries and budgets. " * 400  # ~4,000 tokens: cacheable


def cached_request(text=LONG, ttl=None, question="What does clause 3 say?"):
    marker = {"type": "ephemeral"} | ({"ttl": ttl} if ttl else {})
    return an(question, max_tokens=50, system=[{"type": "text", "text": text,
                                                "cache_control": marker}])


def test_anthropic_cache_write_then_read_with_the_5m_split():
    server = mock(api="anthropic", prompt_caching=True)
    first = post(server, "anthropic", cached_request()).json()["usage"]
    second = post(server, "anthropic", cached_request(question="And clause 4?")).json()["usage"]
    prefix = estimate_tokens(LONG)
    assert first["cache_creation_input_tokens"] == prefix
    assert first["cache_creation"] == {"ephemeral_5m_input_tokens": prefix,
                                       "ephemeral_1h_input_tokens": 0}
    assert first["cache_read_input_tokens"] == 0
    # Anthropic's input_tokens leaves the cached parts out
    total = estimate_tokens(LONG + "\nWhat does clause 3 say?")
    assert first["input_tokens"] == total - prefix
    assert second["cache_read_input_tokens"] == prefix
    assert second["cache_creation_input_tokens"] == 0


def test_anthropic_1h_ttl_outlives_5m():
    clock = VirtualClock()
    server = mock(api="anthropic", prompt_caching=True, clock=clock)
    one_hour = post(server, "anthropic", cached_request(ttl="1h")).json()["usage"]
    assert one_hour["cache_creation"]["ephemeral_1h_input_tokens"] == estimate_tokens(LONG)
    post(server, "anthropic", cached_request(text=LONG + "five minutes"))
    clock.advance(600)  # the 5-minute entry expired, the 1-hour one did not
    assert post(server, "anthropic", cached_request(ttl="1h")).json()["usage"][
        "cache_read_input_tokens"] == estimate_tokens(LONG)
    again = post(server, "anthropic", cached_request(text=LONG + "five minutes")).json()["usage"]
    assert again["cache_read_input_tokens"] == 0 and again["cache_creation_input_tokens"] > 0


def test_anthropic_short_prefixes_and_caching_off_report_no_cache():
    server = mock(api="anthropic", prompt_caching=True)
    short = post(server, "anthropic", cached_request(text="too short to cache")).json()["usage"]
    assert short["cache_creation_input_tokens"] == 0 == short["cache_read_input_tokens"]
    off = mock(api="anthropic")
    for _ in range(2):
        usage = post(off, "anthropic", cached_request()).json()["usage"]
        assert usage["cache_creation_input_tokens"] == 0 == usage["cache_read_input_tokens"]


def test_openai_automatic_caching_in_128_token_steps():
    server = mock(prompt_caching=True)
    first = post(server, "openai", oa(LONG + "first question")).json()["usage"]
    second = post(server, "openai", oa(LONG + "another question")).json()["usage"]
    assert first["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 1024 and (cached - 1024) % 128 == 0
    assert cached <= estimate_tokens(LONG) < cached + 128
    assert second["prompt_tokens"] == estimate_tokens(LONG + "another question")  # included
    small = post(server, "openai", oa("short")).json()["usage"]
    assert small["prompt_tokens_details"]["cached_tokens"] == 0


def test_openai_reasoning_tokens_count_against_max_tokens():
    server = mock(reasoning_tokens=40)
    r = post(server, "openai", {"model": "o4-mini", "max_completion_tokens": 100,
                                "messages": [{"role": "user", "content": "Think first"}]})
    usage = r.json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 40
    text = r.json()["choices"][0]["message"]["content"]
    assert usage["completion_tokens"] == 40 + estimate_tokens(text)
    starved = post(server, "openai", {"model": "o4-mini", "max_completion_tokens": 30,
                                      "messages": [{"role": "user", "content": "Think first"}]})
    choice = starved.json()["choices"][0]
    assert choice["finish_reason"] == "length" and choice["message"]["content"] == ""
    assert starved.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] == 30


@pytest.mark.parametrize("api, stop, cut", [("openai", "stop", "length"),
                                            ("anthropic", "end_turn", "max_tokens")])
def test_finish_reasons(api, stop, cut):
    server = mock()
    make = oa if api == "openai" else an
    whole = post(server, api, make("word " * 50, max_tokens=500)).json()
    short = post(server, api, make("word " * 50, max_tokens=3)).json()
    reason = (lambda b: b["choices"][0]["finish_reason"]) if api == "openai" else \
        (lambda b: b["stop_reason"])
    assert (reason(whole), reason(short)) == (stop, cut)


# ---------------------------------------------------------------- Anthropic RPM / ITPM / OTPM


def test_anthropic_itpm_refuses_with_its_own_message_and_retry_after():
    clock = VirtualClock()
    server = mock(api="anthropic", itpm=6_000, burst_seconds=10.0, clock=clock)  # 1,000 held
    big = an("x" * 3_600, max_tokens=10)  # 900 input tokens
    assert post(server, "anthropic", big).status_code == 200
    r = post(server, "anthropic", big)
    assert r.status_code == 429
    assert "input tokens per minute" in r.json()["error"]["message"]
    wait = (900 - (1_000 - 900)) / 100  # 800 tokens missing at 100 tokens/s
    assert r.headers["retry-after"] == str(math.ceil(wait))
    assert "retry-after-ms" not in r.headers
    clock.advance(wait)
    assert post(server, "anthropic", big).status_code == 200


def test_anthropic_otpm_charges_max_tokens_then_settles_to_the_actual():
    clock = VirtualClock()
    server = mock(api="anthropic", otpm=60_000, burst_seconds=1.0, clock=clock, latency=0.5)
    r = post(server, "anthropic", an(max_tokens=900))
    used = r.json()["usage"]["output_tokens"]
    assert used < 900
    left = server.stats["output_tokens_remaining"]
    # charged 900 at arrival, given back 900 - used when the answer was done (0.5 s later,
    # with the refill of those 0.5 s capped at the bucket's size)
    assert left == pytest.approx(min(1_000.0, 1_000 - 900 + 500 + (900 - used)))
    assert server.stats["by_status"] == {200: 1}


def test_anthropic_otpm_refuses_a_max_tokens_it_cannot_hold_now():
    server = mock(api="anthropic", otpm=60_000, burst_seconds=1.0, latency=0.0)
    with server.client(base_url="http://mock.llm") as client:
        statuses = [client.post(ANTHROPIC, json=an(max_tokens=600)).status_code
                    for _ in range(2)]
    assert statuses == [200, 200]  # the first gave back what it did not use
    server2 = mock(api="anthropic", otpm=60_000, burst_seconds=1.0, latency=0.0)
    assert post(server2, "anthropic", an(max_tokens=1_001)).json()["error"]["message"].startswith(
        "Request too large")


def test_anthropic_cache_reads_do_not_count_against_itpm():
    server = mock(api="anthropic", itpm=60_000, burst_seconds=6.0, prompt_caching=True)
    request = cached_request()  # ~4,000 tokens of cached system prompt, 6,000 ITPM held
    assert post(server, "anthropic", request).status_code == 200  # writes count
    # the write took ~4,000; only the uncached question counts now, so this passes
    reads = [post(server, "anthropic", cached_request(question=f"q{i}")) for i in range(3)]
    assert [r.status_code for r in reads] == [200, 200, 200]
    assert all(r.json()["usage"]["cache_read_input_tokens"] > 4_000 for r in reads)


def test_anthropic_ratelimit_headers_round_tokens_and_name_the_tightest():
    clock = VirtualClock()
    server = mock(api="anthropic", rpm=50, itpm=40_000, otpm=8_000, clock=clock)
    r = post(server, "anthropic", an(max_tokens=2_600))
    h = r.headers
    assert h["anthropic-ratelimit-requests-limit"] == "50"
    assert h["anthropic-ratelimit-requests-remaining"] == "49"
    assert h["anthropic-ratelimit-input-tokens-limit"] == "40000"
    assert h["anthropic-ratelimit-input-tokens-remaining"] == "40000"  # 39,991 -> thousands
    assert h["anthropic-ratelimit-output-tokens-remaining"] == "5000"  # 5,400 -> 5,000
    # "tokens" shows the most restrictive token limit in effect: the output bucket
    assert h["anthropic-ratelimit-tokens-limit"] == "8000"
    assert h["anthropic-ratelimit-tokens-remaining"] == "5000"
    reset = dt.datetime.strptime(h["anthropic-ratelimit-output-tokens-reset"],
                                 "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    expected = 1_700_000_000 + 2_600 / (8_000 / 60)
    assert abs(reset.timestamp() - expected) <= 1
    assert not [k for k in h if k.startswith("x-ratelimit")]


def test_openai_endpoint_ignores_itpm_and_keeps_x_ratelimit():
    server = mock(rpm=60, tpm=10_000, itpm=1_000)
    r = post(server, "openai", oa("x" * 8_000))  # 2,000 input tokens > itpm: not OpenAI's
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-tokens"] == "10000"
    assert not [k for k in r.headers if k.startswith("anthropic-")]


def test_set_limits_and_reset_keep_itpm_otpm():
    server = mock(api="anthropic", itpm=6_000)
    server.set_limits(otpm=3_000)
    assert (server.itpm, server.otpm) == (6_000, 3_000)
    server.reset()
    assert (server.itpm, server.otpm) == (6_000, 3_000)
    server.set_limits(itpm=None)
    assert server.itpm is None
