"""The mock refuses what each real API refuses (so a wrong translation fails in tests), accepts
what it accepts, and answers tool requests with tool calls in each API's format."""

from __future__ import annotations

import json

import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.mock import MockLLMServer
from llm_patterns.mock.replies import example_arguments

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
WEATHER_SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer"}}, "required": ["city", "unit"]}
OA_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                            "parameters": WEATHER_SCHEMA}}
AN_TOOL = {"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}
USER = {"role": "user", "content": "What is the weather in Paris today?"}


def send(api, body):
    server = MockLLMServer(clock=VirtualClock(), latency=0.0, tpm=10**9)
    with server.client(base_url="http://mock.llm") as client:
        r = client.post(OPENAI if api == "openai" else ANTHROPIC, json=body)
    return r, server


def oa(**extra):
    return {"model": "gpt-4o-mini", "messages": [USER], **extra}


def an(**extra):
    return {"model": "claude-haiku-4-5", "max_tokens": 200, "messages": [USER], **extra}


# ---------------------------------------------------------------- what Anthropic refuses

ANTHROPIC_REFUSES = [
    ("role tool", an(messages=[USER, {"role": "assistant", "content": "ok"},
                               {"role": "tool", "tool_call_id": "c1", "content": "18C"}]),
     "messages.2.role: Input should be 'user' or 'assistant'"),
    ("system inside messages", an(messages=[{"role": "system", "content": "Be brief"}, USER]),
     'Unexpected role "system". The Messages API accepts a top-level `system` parameter'),
    ("no max_tokens", {k: v for k, v in an().items() if k != "max_tokens"},
     "max_tokens: Field required"),
    ("no model", {k: v for k, v in an().items() if k != "model"}, "model: Field required"),
    ("tool without input_schema", an(tools=[{"name": "get_weather"}]),
     "tools.0.custom.input_schema: Field required"),
    ("OpenAI tool shape", an(tools=[OA_TOOL]), "tools.0: Input tag 'function'"),
    ("bad tool name", an(tools=[AN_TOOL | {"name": "get weather!"}]),
     "tools.0.custom.name: String should match pattern"),
    ("OpenAI-only field", an(response_format={"type": "json_object"}),
     "response_format: Extra inputs are not permitted"),
    ("stream_options", an(stream_options={"include_usage": True}),
     "stream_options: Extra inputs are not permitted"),
    ("OpenAI tool_choice string", an(tools=[AN_TOOL], tool_choice="auto"),
     "tool_choice: Input should be a valid dictionary"),
    ("OpenAI image part", an(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]),
     "messages.0.content.0: Input tag 'image_url'"),
    ("empty text block", an(messages=[{"role": "user", "content": [{"type": "text",
                                                                      "text": ""}]}]),
     "text content blocks must be non-empty"),
    ("empty content mid-conversation", an(messages=[USER, {"role": "assistant", "content": ""},
                                                    USER]),
     ("messages.1: all messages must have non-empty content except for the optional final "
     "assistant message")),
    ("no messages", an(messages=[]), "messages: at least one message is required"),
    ("tool_use without its result", an(tools=[AN_TOOL], messages=[
        USER, {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                                 "name": "get_weather", "input": {}}]},
        {"role": "user", "content": "never mind"}]),
     "`tool_use` ids were found without `tool_result` blocks immediately after: toolu_1"),
    ("stray tool_result", an(messages=[USER, {"role": "assistant", "content": "Sure."},
                                       {"role": "user", "content": [{
                                           "type": "tool_result", "tool_use_id": "toolu_9",
                                           "content": "18C"}]}]),
     "unexpected `tool_use_id` found in `tool_result` blocks: toolu_9"),
    ("negative max_tokens", an(max_tokens=-1), "max_tokens: Input should be greater than"),
]


@pytest.mark.parametrize("name, body, words", ANTHROPIC_REFUSES,
                         ids=[case[0] for case in ANTHROPIC_REFUSES])
def test_anthropic_refuses_what_the_real_api_refuses(name, body, words):
    r, server = send("anthropic", body)
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert words in data["error"]["message"]
    assert data["request_id"] == r.headers["request-id"]
    assert server.stats["tokens_charged"] == 0


ANTHROPIC_ACCEPTS = [
    ("same-role turns merged", an(messages=[USER, USER])),
    ("assistant prefill", an(messages=[USER, {"role": "assistant", "content": "The weather"}])),
    ("empty final assistant", an(messages=[USER, {"role": "assistant", "content": ""}])),
    ("max_tokens 0 warms the cache", an(max_tokens=0)),
    ("system as blocks with cache_control", an(system=[{
        "type": "text", "text": "Be brief", "cache_control": {"type": "ephemeral"}}])),
    ("sampling parameters", an(temperature=0.2, top_p=0.9, top_k=5, stop_sequences=["\n\n"])),
    ("a whole tool conversation", an(tools=[AN_TOOL], tool_choice={"type": "auto"}, messages=[
        USER, {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris", "unit": "celsius"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": [{"type": "text", "text": "18C"}]}]}])),
    ("a server tool", an(tools=[{"type": "web_search_20250305", "name": "web_search"}])),
]


@pytest.mark.parametrize("name, body", ANTHROPIC_ACCEPTS, ids=[c[0] for c in ANTHROPIC_ACCEPTS])
def test_anthropic_accepts_what_the_real_api_accepts(name, body):
    r, _ = send("anthropic", body)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "message"


def test_max_tokens_zero_generates_nothing():
    r, _ = send("anthropic", an(max_tokens=0))
    body = r.json()
    assert body["content"] == [] and body["stop_reason"] == "max_tokens"
    assert body["usage"]["output_tokens"] == 0


# ---------------------------------------------------------------- what OpenAI refuses

OPENAI_REFUSES = [
    ("tool without function.name", oa(tools=[{"type": "function", "function": {
        "parameters": WEATHER_SCHEMA}}]),
     "Missing required parameter: 'tools[0].function.name'.", "tools[0].function.name",
     "missing_required_parameter"),
    ("Anthropic tool shape", oa(tools=[AN_TOOL]),
     "Missing required parameter: 'tools[0].function'.", "tools[0].function",
     "missing_required_parameter"),
    ("Anthropic-only field", oa(system="Be brief"),
     "Unrecognized request argument supplied: system", None, None),
    ("top_k", oa(top_k=3), "Unrecognized request argument supplied: top_k", None, None),
    ("no model", {"messages": [USER]}, "you must provide a model parameter", None, None),
    ("bad role", oa(messages=[{"role": "bot", "content": "hi"}]),
     ("Invalid value: 'bot'. Supported values are: 'system', 'assistant', 'user', 'function', "
     "'tool', and 'developer'."), "messages[0].role", "invalid_value"),
    ("tool result without a call", oa(messages=[USER, {"role": "tool", "tool_call_id": "c1",
                                                       "content": "18C"}]),
     "messages with role 'tool' must be a response to a preceeding message with 'tool_calls'",
     "messages.[1].role", None),
    ("unanswered tool call", oa(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": "{}"}}]}, USER]),
     "The following tool_call_ids did not have response messages: call_1", "messages.[1].role",
     None),
    ("tool message without tool_call_id", oa(messages=[USER, {"role": "tool", "content": "x"}]),
     "Missing required parameter: 'messages[1].tool_call_id'.", "messages[1].tool_call_id",
     "missing_required_parameter"),
    ("arguments as an object", oa(messages=[USER, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}]),
     "Invalid type for 'messages[1].tool_calls[0].function.arguments': expected a string",
     "messages[1].tool_calls[0].function.arguments", "invalid_type"),
    ("max_tokens on a reasoning model", {"model": "o3-mini", "messages": [USER],
                                         "max_tokens": 100},
     ("Unsupported parameter: 'max_tokens' is not supported with this model. Use "
     "'max_completion_tokens' instead."), "max_tokens", "unsupported_parameter"),
    ("empty messages", oa(messages=[]), "Invalid 'messages': empty array.", "messages",
     "empty_array"),
    ("empty tools", oa(tools=[]), "Invalid 'tools': empty array.", "tools", "empty_array"),
]


@pytest.mark.parametrize("name, body, words, param, code", OPENAI_REFUSES,
                         ids=[c[0] for c in OPENAI_REFUSES])
def test_openai_refuses_what_the_real_api_refuses(name, body, words, param, code):
    r, server = send("openai", body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert words in err["message"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, code)
    assert server.stats["tokens_charged"] == 0


def test_openai_accepts_a_whole_tool_conversation():
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    r, _ = send("openai", oa(tools=[OA_TOOL], messages=[
        {"role": "system", "content": "Be brief"}, USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]))
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    assert "tool_calls" not in message and message["content"]  # after a result: text
    assert r.json()["choices"][0]["finish_reason"] == "stop"


# ---------------------------------------------------------------- tool calls in each format


def test_openai_answers_a_tool_request_with_a_tool_call():
    r, _ = send("openai", oa(tools=[OA_TOOL]))
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    args = json.loads(call["function"]["arguments"])  # a JSON string, as OpenAI sends it
    assert set(args) == {"city", "unit"} and args["unit"] == "celsius"
    usage = r.json()["usage"]
    assert usage["completion_tokens"] > 0


def test_anthropic_answers_a_tool_request_with_a_tool_use_block():
    r, _ = send("anthropic", an(tools=[AN_TOOL]))
    body = r.json()
    assert body["stop_reason"] == "tool_use"
    text, use = body["content"]  # with tool_choice auto, Claude may speak first
    assert text["type"] == "text" and "get_weather" in text["text"]
    assert use["type"] == "tool_use" and use["id"].startswith("toolu_")
    assert use["name"] == "get_weather"
    assert use["input"]["unit"] == "celsius" and isinstance(use["input"]["city"], str)


def test_forced_tool_choice_names_the_tool_and_none_means_text():
    tools = [AN_TOOL, AN_TOOL | {"name": "get_time", "input_schema": {"type": "object"}}]
    r, _ = send("anthropic", an(tools=tools, tool_choice={"type": "tool", "name": "get_time"}))
    (use,) = r.json()["content"]  # forced: no preamble, as Anthropic documents
    assert use["name"] == "get_time" and use["input"] == {}
    r, _ = send("anthropic", an(tools=tools, tool_choice={"type": "none"}))
    assert r.json()["stop_reason"] == "end_turn"
    oa_tools = [OA_TOOL, {"type": "function", "function": {"name": "get_time"}}]
    r, _ = send("openai", oa(tools=oa_tools, tool_choice={"type": "function",
                                                          "function": {"name": "get_time"}}))
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_time"
    r, _ = send("openai", oa(tools=oa_tools, tool_choice="none"))
    assert r.json()["choices"][0]["finish_reason"] == "stop"


def test_tool_calls_are_deterministic():
    a, _ = send("openai", oa(tools=[OA_TOOL]))
    b, _ = send("openai", oa(tools=[OA_TOOL]))
    assert a.json()["choices"] == b.json()["choices"]


def test_example_arguments_follow_the_schema_and_stop_at_depth():
    schema = {"type": "object", "properties": {
        "n": {"type": "number"}, "ok": {"type": "boolean"}, "tags": {"type": "array",
                                                                     "items": {"type": "string"}},
        "kind": {"anyOf": [{"const": "a"}, {"type": "string"}]}, "maybe": {"type": ["null",
                                                                                   "integer"]}}}
    assert example_arguments(schema, ["paris"]) == {"n": 1.5, "ok": True, "tags": ["paris"],
                                                    "kind": "a", "maybe": 1}
    deep: dict = {"type": "object", "properties": {}}
    node = deep
    for _ in range(500):
        child: dict = {"type": "object", "properties": {}}
        node["properties"]["x"] = child
        node = child
    assert isinstance(example_arguments(deep, []), dict)  # no RecursionError


def test_a_deeply_nested_tool_schema_is_answered_not_crashed():
    schema: dict = {"type": "object"}
    for _ in range(300):
        schema = {"type": "object", "properties": {"x": schema}}
    r, _ = send("anthropic", an(tools=[AN_TOOL | {"input_schema": schema}]))
    assert r.status_code == 200
