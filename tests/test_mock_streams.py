"""Server-sent events in each API's format, in process, paced on the VirtualClock, with faults
before the first token and part-way. (The official SDKs parse the same streams over loopback in
test_mock_sdks.py.)"""

from __future__ import annotations

import asyncio
import itertools
import json

import httpx
import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.mock import MockLLMServer

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
PROMPT = "Explain in plain words why retries need jitter and a budget"
TOOL_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                                "days": {"type": "integer"}},
               "required": ["city", "days"]}


def body(api, stream=True, **extra):
    base = ({"model": "gpt-4o-mini", "max_tokens": 200,
             "messages": [{"role": "user", "content": PROMPT}]} if api == "openai" else
            {"model": "claude-haiku-4-5", "max_tokens": 200,
             "messages": [{"role": "user", "content": PROMPT}]})
    return base | ({"stream": True} if stream else {}) | extra


def mock(**kw):
    kw.setdefault("clock", VirtualClock())
    kw.setdefault("latency", 0.0)
    return MockLLMServer(**kw)


def sse(raw: str) -> list[tuple[str | None, str]]:
    """(event, data) per server-sent event."""
    out = []
    for block in raw.strip().split("\n\n"):
        event = None
        data = []
        for line in block.split("\n"):
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        out.append((event, "\n".join(data)))
    return out


def stream_text(server, api, payload):
    with server.client(base_url="http://mock.llm") as client, \
            client.stream("POST", OPENAI if api == "openai" else ANTHROPIC, json=payload) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in r.headers
        return r.read().decode()


def plain(server, api, payload):
    with server.client(base_url="http://mock.llm") as client:
        return client.post(OPENAI if api == "openai" else ANTHROPIC, json=payload).json()


# ---------------------------------------------------------------- OpenAI format


def test_openai_stream_chunks_usage_and_done():
    server = mock()
    events = sse(stream_text(server, "openai", body(
        "openai", stream_options={"include_usage": True})))
    assert events[-1] == (None, "[DONE]")
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["usage"] is None for c in chunks[:-1])  # include_usage: null until the end
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    finish = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finish[-1] == "stop" and set(finish[:-1]) == {None}
    whole = plain(mock(), "openai", body("openai", stream=False))
    assert text == whole["choices"][0]["message"]["content"]
    assert last["usage"] == whole["usage"]


def test_openai_stream_without_include_usage_has_no_usage():
    events = sse(stream_text(mock(), "openai", body("openai")))
    chunks = [json.loads(d) for _, d in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)


def test_openai_tool_call_stream_assembles_to_the_plain_answer():
    tools = [{"type": "function", "function": {"name": "forecast", "parameters": TOOL_SCHEMA}}]
    events = sse(stream_text(mock(), "openai", body("openai", tools=tools)))
    chunks = [json.loads(d) for _, d in events[:-1]]
    calls: dict[int, dict] = {}
    for c in chunks:
        for delta in c["choices"][0]["delta"].get("tool_calls") or []:
            call = calls.setdefault(delta["index"], {"id": None, "name": "", "arguments": ""})
            call["id"] = delta.get("id") or call["id"]
            call["name"] += delta.get("function", {}).get("name") or ""
            call["arguments"] += delta.get("function", {}).get("arguments") or ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    whole = plain(mock(), "openai", body("openai", stream=False, tools=tools))
    (expected,) = whole["choices"][0]["message"]["tool_calls"]
    assert calls[0] == {"id": expected["id"], "name": "forecast",
                        "arguments": expected["function"]["arguments"]}
    assert sum(1 for c in chunks if c["choices"][0]["delta"].get("tool_calls")) > 2


# ---------------------------------------------------------------- Anthropic format


def test_anthropic_stream_event_sequence_and_usage():
    events = sse(stream_text(mock(api="anthropic"), "anthropic", body("anthropic")))
    names = [e for e, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names[1:3] == ["content_block_start", "ping"]
    assert names.count("content_block_stop") == 1
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == e for (e, _), d in zip(events, data, strict=False))
    start = data[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    text = "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta")
    whole = plain(mock(api="anthropic"), "anthropic", body("anthropic", stream=False))
    assert text == whole["content"][0]["text"]
    delta = data[-2]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == whole["usage"]["output_tokens"]
    assert start["usage"]["input_tokens"] == whole["usage"]["input_tokens"]


def test_anthropic_tool_use_stream_uses_input_json_deltas():
    tools = [{"name": "forecast", "input_schema": TOOL_SCHEMA}]
    events = sse(stream_text(mock(api="anthropic"), "anthropic",
                             body("anthropic", tools=tools,
                                  tool_choice={"type": "tool", "name": "forecast"})))
    data = [json.loads(d) for _, d in events]
    (start,) = [d for d in data if d["type"] == "content_block_start"]
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["input"] == {}
    partial = "".join(d["delta"]["partial_json"] for d in data
                      if d["type"] == "content_block_delta")
    assert all(d["delta"]["type"] == "input_json_delta" for d in data
               if d["type"] == "content_block_delta")
    whole = plain(mock(api="anthropic"), "anthropic", body(
        "anthropic", stream=False, tools=tools, tool_choice={"type": "tool", "name": "forecast"}))
    assert json.loads(partial) == whole["content"][0]["input"]
    assert data[-2]["delta"]["stop_reason"] == "tool_use"


# ---------------------------------------------------------------- pacing on the clock


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_deltas_arrive_paced_on_the_virtual_clock(api):
    clock = VirtualClock()
    server = mock(api=api, clock=clock, latency=0.5, chunk_delay=0.1)
    seen = []

    async def run():
        async with server.async_client(base_url="http://mock.llm") as client, \
                client.stream("POST", OPENAI if api == "openai" else ANTHROPIC,
                              json=body(api)) as r:
            async for line in r.aiter_lines():
                if ('"content":"' in line and '"role"' not in line) or "text_delta" in line:
                    seen.append(round(clock.now(), 6))

    asyncio.run(run())
    assert len(seen) >= 3
    assert seen[0] == pytest.approx(0.5)  # time to the first token: the latency
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(seen)}
    assert gaps == {0.1}


def test_sync_stream_sleeps_the_clock_between_deltas():
    clock = VirtualClock()
    server = mock(clock=clock, latency=0.2, chunk_delay=0.05)
    text = stream_text(server, "openai", body("openai"))
    deltas = sum(1 for _, d in sse(text)[:-1] if json.loads(d)["choices"][0]["delta"].get(
        "content"))
    assert clock.now() == pytest.approx(0.2 + 0.05 * (deltas - 1))


# ---------------------------------------------------------------- faults


def test_anthropic_error_event_part_way():
    server = mock(api="anthropic")
    server.fail_next("stream_error")
    events = sse(stream_text(server, "anthropic", body("anthropic")))
    assert events[-1][0] == "error"
    error = json.loads(events[-1][1])
    assert error["type"] == "error" and error["error"] == {"type": "overloaded_error",
                                                           "message": "Overloaded"}
    deltas = [json.loads(d) for e, d in events if e == "content_block_delta"]
    assert deltas, "part-way: some text was sent first"
    assert "message_stop" not in [e for e, _ in events]
    full = sse(stream_text(mock(api="anthropic"), "anthropic", body("anthropic")))
    assert len(deltas) < sum(1 for e, _ in full if e == "content_block_delta")


def test_openai_error_chunk_part_way():
    server = mock()
    server.fail_next("stream_error")
    events = sse(stream_text(server, "openai", body("openai")))
    assert json.loads(events[-1][1])["error"]["type"] == "server_error"
    assert (None, "[DONE]") not in events
    assert any(json.loads(d).get("choices", [{}])[0].get("delta", {}).get("content")
               for _, d in events[:-1])


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_stream_drop_part_way_raises_remote_protocol_error(api):
    server = mock(api=api)
    server.fail_next("stream_drop")
    got = []
    with server.client(base_url="http://mock.llm") as client, \
            client.stream("POST", OPENAI if api == "openai" else ANTHROPIC,
                          json=body(api)) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_raw():
                got.append(chunk)
    assert got and b"DONE" not in b"".join(got) and b"message_stop" not in b"".join(got)
    assert server.stats["by_fault"] == {"stream_drop": 1}


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_faults_before_the_first_token_are_plain_errors(api):
    server = mock(api=api, rpm=60, burst_seconds=1.0)
    server.fail_next("overloaded")
    with server.client(base_url="http://mock.llm") as client:
        path = OPENAI if api == "openai" else ANTHROPIC
        first = client.post(path, json=body(api))
        ok = client.post(path, json=body(api))
        limited = client.post(path, json=body(api))
    assert first.status_code == (503 if api == "openai" else 529)
    assert first.headers["content-type"] == "application/json"
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/event-stream")
    assert limited.status_code == 429 and limited.json()


def test_stream_faults_on_a_plain_request():
    server = mock()
    server.fail_next("stream_error")
    server.fail_next("stream_drop")
    with server.client(base_url="http://mock.llm") as client:
        assert client.post(OPENAI, json=body("openai", stream=False)).status_code == 500
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(OPENAI, json=body("openai", stream=False))
    aserver = mock(api="anthropic")
    aserver.fail_next("stream_error")
    assert plain(aserver, "anthropic", body("anthropic", stream=False))["error"]["type"] == \
        "overloaded_error"


def test_a_stream_fault_waits_for_a_streamed_request_behind_a_bad_one():
    server = mock()
    server.fail_next("stream_error")
    with server.client(base_url="http://mock.llm") as client:
        bad = client.post(OPENAI, json={"model": "m", "messages": []})
    assert bad.status_code == 400 and server.pending_faults == ["stream_error"]
