"""Our providers and the official SDKs read the SAME streams over real loopback HTTP
(serve-mock's server) and agree: text, usage, finish reason, tool calls, and a stream that dies
part-way. Real sockets and real (tiny) time: latency 0, a few requests each."""

from __future__ import annotations

import asyncio
import json

import pytest

from llm_patterns.errors import ConnectionFailed, ServerError, StreamInterrupted
from llm_patterns.mock import MockLLMServer, running
from llm_patterns.providers import AnthropicProvider, OpenAIProvider

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

from test_mock_sdks import AN_MODEL, AN_TOOLS, MESSAGES, OA_MODEL, OA_TOOLS  # noqa: E402


def ours(api, url):
    if api == "openai":
        return OpenAIProvider("ours", OA_MODEL, base_url=f"{url}/v1", api_key="test", timeout=5)
    return AnthropicProvider("ours", AN_MODEL, base_url=url, api_key="test", timeout=5)


def test_openai_stream_read_by_the_sdk_and_by_us():
    with running(MockLLMServer(latency=0.0)) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=5)
        chunks = list(sdk.chat.completions.create(
            model=OA_MODEL, messages=MESSAGES, max_tokens=60, stream=True,
            stream_options={"include_usage": True}))
        with ours("openai", url) as p, p.stream(messages=MESSAGES, max_tokens=60) as s:
            deltas = list(s)
    sdk_deltas = [c.choices[0].delta.content for c in chunks
                  if c.choices and c.choices[0].delta.content]
    assert deltas == sdk_deltas
    usage = chunks[-1].usage
    r = s.response
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (usage.prompt_tokens,
                                                                  usage.completion_tokens)
    assert r.finish_reason == [c.choices[0].finish_reason for c in chunks if c.choices][-1]


def test_anthropic_stream_read_by_the_sdk_and_by_us():
    with running(MockLLMServer(api="anthropic", latency=0.0)) as url:
        sdk = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0, timeout=5)
        with sdk.messages.stream(model=AN_MODEL, max_tokens=60, messages=MESSAGES) as stream:
            sdk_deltas = list(stream.text_stream)
            final = stream.get_final_message()
        with ours("anthropic", url) as p, p.stream(messages=MESSAGES, max_tokens=60) as s:
            deltas = list(s)
    assert deltas == sdk_deltas
    assert s.response.usage.prompt_tokens == final.usage.input_tokens
    assert s.response.usage.completion_tokens == final.usage.output_tokens
    assert s.response.finish_reason == "stop" and final.stop_reason == "end_turn"


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_streamed_tool_calls_agree_with_the_sdks(api):
    server = MockLLMServer(api=api, latency=0.0)
    with running(server) as url:
        if api == "openai":
            sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=5)
            with sdk.chat.completions.stream(model=OA_MODEL, messages=MESSAGES, tools=OA_TOOLS,
                                             tool_choice="required", max_tokens=100) as st:
                for _ in st:
                    pass
                (call,) = st.get_final_completion().choices[0].message.tool_calls
            expected = (call.id, call.function.name, json.loads(call.function.arguments))
        else:
            sdk = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0, timeout=5)
            with sdk.messages.stream(model=AN_MODEL, max_tokens=100, messages=MESSAGES,
                                     tools=AN_TOOLS, tool_choice={"type": "any"}) as st:
                (block,) = [b for b in st.get_final_message().content if b.type == "tool_use"]
            expected = (block.id, block.name, block.input)
        with ours(api, url) as p, p.stream(messages=MESSAGES, max_tokens=100, tools=OA_TOOLS,
                                           tool_choice="required") as s:
            assert list(s) == []
    (mine,) = s.response.tool_calls
    assert (mine.id, mine.name, dict(mine.arguments)) == expected


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("kind,cause", [("stream_error", ServerError),
                                        ("stream_drop", ConnectionFailed)])
def test_a_stream_that_dies_over_a_real_socket(api, kind, cause):
    server = MockLLMServer(api=api, latency=0.0)
    server.fail_next(kind)
    with running(server) as url, ours(api, url) as p:
        got = []
        with pytest.raises(StreamInterrupted) as info, p.stream(messages=MESSAGES) as s:
            got.extend(s)
        again = "".join(p.stream(messages=MESSAGES))  # the connection pool still works
    assert got and info.value.partial_text == "".join(got)
    assert isinstance(info.value.cause, cause) and again.startswith(info.value.partial_text)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_async_streams_over_a_real_socket(api):
    async def go(url):
        async with ours(api, url) as p, p.astream(messages=MESSAGES, max_tokens=60) as s:
            return [d async for d in s], s.response

    with running(MockLLMServer(api=api, latency=0.0)) as url:
        deltas, response = asyncio.run(go(url))
        with ours(api, url) as p:
            whole = p.complete(messages=MESSAGES, max_tokens=60)
    assert "".join(deltas) == whole.text and response.usage == whole.usage
