"""The official ``openai`` and ``anthropic`` SDKs as oracles of the mock's fidelity, over REAL
loopback HTTP (serve-mock's server): they parse its answers, streams and tool calls, and
classify its faults with their own error classes, request ids and retry decisions.

Real sockets and real (tiny) time: latency 0, a few requests each.
"""

from __future__ import annotations

import json

import pytest

from llm_patterns.mock import MockLLMServer, running

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

MESSAGES = [{"role": "user", "content": "Explain exponential backoff in one sentence"}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"]}
OA_TOOLS = [{"type": "function", "function": {"name": "forecast", "description": "Forecast",
                                              "parameters": SCHEMA}}]
AN_TOOLS = [{"name": "forecast", "description": "Forecast", "input_schema": SCHEMA}]
OA_MODEL, AN_MODEL = "gpt-4o-mini", "claude-haiku-4-5"


def real_mock(**kw):
    kw.setdefault("latency", 0.0)
    return MockLLMServer(**kw)


def oa_client(url, retries=0):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=retries, timeout=5)


def an_client(url, retries=0):
    return anthropic.Anthropic(base_url=url, api_key="test", max_retries=retries, timeout=5)


# ---------------------------------------------------------------- streams


def test_openai_sdk_parses_the_stream_with_usage():
    server = real_mock(prompt_caching=True)
    with running(server) as url:
        client = oa_client(url)
        stream = client.chat.completions.create(
            model=OA_MODEL, messages=MESSAGES, max_tokens=60, stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
        plain = client.chat.completions.create(model=OA_MODEL, messages=MESSAGES, max_tokens=60)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.total_tokens == plain.usage.total_tokens
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details.reasoning_tokens == 0


def test_openai_sdk_stream_helper_assembles_tool_calls():
    with running(real_mock()) as url:
        client = oa_client(url)
        with client.chat.completions.stream(model=OA_MODEL, messages=MESSAGES, tools=OA_TOOLS,
                                            max_tokens=100) as stream:
            for _ in stream:
                pass
            final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "forecast"
    assert set(json.loads(call.function.arguments)) == {"city", "days"}


def test_anthropic_sdk_streams_text_and_the_final_message():
    server = real_mock(api="anthropic")
    with running(server) as url:
        client = an_client(url)
        with client.messages.stream(model=AN_MODEL, max_tokens=60, messages=MESSAGES) as stream:
            pieces = list(stream.text_stream)
            final = stream.get_final_message()
        plain = client.messages.create(model=AN_MODEL, max_tokens=60, messages=MESSAGES)
    assert len(pieces) > 2 and "".join(pieces) == plain.content[0].text
    assert final.content[0].text == plain.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_anthropic_sdk_streams_a_tool_use():
    with running(real_mock(api="anthropic")) as url:
        client = an_client(url)
        with client.messages.stream(model=AN_MODEL, max_tokens=200, messages=MESSAGES,
                                    tools=AN_TOOLS,
                                    tool_choice={"type": "any"}) as stream:
            final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    (block,) = [b for b in final.content if b.type == "tool_use"]
    assert block.name == "forecast" and set(block.input) == {"city", "days"}


def test_anthropic_sdk_raises_on_the_error_event_part_way():
    server = real_mock(api="anthropic")
    server.fail_next("stream_error")
    with running(server) as url:
        client = an_client(url)
        pieces = []
        with pytest.raises(anthropic.APIStatusError) as info, \
                client.messages.stream(model=AN_MODEL, max_tokens=60,
                                       messages=MESSAGES) as stream:
            pieces.extend(stream.text_stream)
    assert pieces  # part of the text arrived first
    assert info.value.body["error"]["type"] == "overloaded_error"


def test_openai_sdk_raises_on_a_dropped_stream_and_on_an_error_chunk():
    server = real_mock()
    server.fail_next("stream_drop")
    server.fail_next("stream_error")
    with running(server) as url:
        client = oa_client(url)
        got = []
        with pytest.raises(openai.APIConnectionError):
            got.extend(client.chat.completions.create(  # extend keeps what came before
                model=OA_MODEL, messages=MESSAGES, max_tokens=60, stream=True))
        assert got
        with pytest.raises(openai.APIError, match="server had an error"):
            list(client.chat.completions.create(model=OA_MODEL, messages=MESSAGES,
                                                max_tokens=60, stream=True))


# ---------------------------------------------------------------- tool calls, usage


def test_sdks_parse_tool_calls_and_cache_usage():
    long_doc = "Clause about retries and budgets. " * 400
    server = real_mock(prompt_caching=True)
    with running(server) as url:
        reply = oa_client(url).chat.completions.create(model=OA_MODEL, messages=MESSAGES,
                                                       tools=OA_TOOLS, max_tokens=100)
        client = an_client(url)
        system = [{"type": "text", "text": long_doc, "cache_control": {"type": "ephemeral",
                                                                       "ttl": "1h"}}]
        first = client.messages.create(model=AN_MODEL, max_tokens=60, system=system,
                                       messages=MESSAGES, tools=AN_TOOLS)
        second = client.messages.create(model=AN_MODEL, max_tokens=60, system=system,
                                        messages=MESSAGES, tools=AN_TOOLS)
    call = reply.choices[0].message.tool_calls[0]
    assert call.type == "function" and json.loads(call.function.arguments)["days"] == 1
    assert first.stop_reason == "tool_use"
    assert first.usage.cache_creation.ephemeral_1h_input_tokens > 1000
    assert first.usage.cache_creation_input_tokens == \
        first.usage.cache_creation.ephemeral_1h_input_tokens
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens


# ---------------------------------------------------------------- errors as the SDKs see them


@pytest.mark.parametrize("kind, cls, code", [
    ("insufficient_quota", "RateLimitError", "insufficient_quota"),
    ("credit_balance_exhausted", "RateLimitError", "credit_balance_exhausted"),
    ("project_spend_limit_exceeded", "RateLimitError", "project_spend_limit_exceeded"),
    ("billing_hard_limit_reached", "BadRequestError", "billing_hard_limit_reached"),
    ("model_not_found", "NotFoundError", "model_not_found"),
])
def test_openai_sdk_classifies_the_billing_and_model_faults(kind, cls, code):
    server = real_mock()
    server.fail_next(kind)
    with running(server) as url, pytest.raises(getattr(openai, cls)) as info:
        oa_client(url).chat.completions.create(model=OA_MODEL, messages=MESSAGES,
                                               max_tokens=20)
    err = info.value
    assert err.code == code
    assert err.request_id and err.request_id.startswith("req_")


@pytest.mark.parametrize("kind, cls", [
    ("credit_balance_too_low", "BadRequestError"),
    ("enforced_spend_limit_reached", "EnforcedSpendLimitReachedError"),
    ("contract_spend_limit_reached", "ContractSpendLimitReachedError"),
    ("model_not_found", "NotFoundError"),
    ("overloaded", "OverloadedError"),
])
def test_anthropic_sdk_classifies_the_billing_and_model_faults(kind, cls):
    server = real_mock(api="anthropic")
    server.fail_next(kind)
    with running(server) as url, pytest.raises(anthropic.APIStatusError) as info:
        an_client(url).messages.create(model=AN_MODEL, max_tokens=20, messages=MESSAGES)
    err = info.value
    assert type(err).__name__ == cls  # the SDK's own class for that exact answer
    assert err.request_id and err.request_id.startswith("req_011C")


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_the_sdks_obey_x_should_retry(api):
    server = real_mock(api=api)
    # a 500 the server says not to retry, then a 404 it says to retry
    server.fail_next("server_error", should_retry=False)
    server.fail_next("model_not_found", should_retry=True)
    with running(server) as url:
        if api == "openai":
            def call():
                return oa_client(url, retries=2).chat.completions.create(
                    model=OA_MODEL, messages=MESSAGES, max_tokens=20)
            errors = (openai.InternalServerError,)
        else:
            def call():
                return an_client(url, retries=2).messages.create(
                    model=AN_MODEL, max_tokens=20, messages=MESSAGES)
            errors = (anthropic.InternalServerError,)
        with pytest.raises(errors):
            call()  # not retried: one request
        assert server.stats["requests"] == 1
        call()  # the 404 is retried, and the retry succeeds
    assert server.stats["by_status"] == {200: 1, 404: 1, 500: 1}


def test_the_sdks_refuse_nothing_the_mock_accepts():
    """Requests the SDKs build for tool conversations pass the mock's request rules."""
    with running(real_mock()) as url:
        oa = oa_client(url)
        first = oa.chat.completions.create(model=OA_MODEL, messages=MESSAGES, tools=OA_TOOLS,
                                           max_tokens=100)
        call = first.choices[0].message.tool_calls[0]
        follow = oa.chat.completions.create(model=OA_MODEL, max_tokens=100, tools=OA_TOOLS,
                                            messages=[*MESSAGES, first.choices[0].message,
                                                      {"role": "tool", "tool_call_id": call.id,
                                                       "content": "sunny"}])
        assert follow.choices[0].finish_reason == "stop"
        an = an_client(url)
        msg = an.messages.create(model=AN_MODEL, max_tokens=200, messages=MESSAGES,
                                 tools=AN_TOOLS)
        use = next(b for b in msg.content if b.type == "tool_use")
        done = an.messages.create(model=AN_MODEL, max_tokens=200, tools=AN_TOOLS, messages=[
            *MESSAGES, {"role": "assistant", "content": msg.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "sunny"}]}])
        assert done.stop_reason == "end_turn"
