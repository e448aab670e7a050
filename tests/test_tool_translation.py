"""Tools, tool conversations and structured output (SPEC §10): checked once by ``Request``,
translated for Anthropic, and judged by the mock, which validates each API's body as the real
API does (so a wrong translation fails here, not in production)."""

from __future__ import annotations

import json

import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.errors import stops_chain
from llm_patterns.mock import MockLLMServer
from llm_patterns.mock.request import BadRequest, parse_body
from llm_patterns.providers import AnthropicProvider, OpenAIProvider
from llm_patterns.request import Request
from llm_patterns.response import LLMResponse, ToolCall, Usage

KEY = "sk-test-0123456789abcdef"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                           "days": {"type": "integer"}},
          "required": ["city", "days"]}
TOOLS = [{"type": "function", "function": {"name": "forecast", "description": "Forecast",
                                           "parameters": SCHEMA}},
         {"type": "function", "function": {"name": "now"}}]
CALL = {"id": "call_abc", "type": "function",
        "function": {"name": "forecast", "arguments": '{"city": "Paris", "days": 3}'}}
CALL2 = {"id": "call_def", "type": "function", "function": {"name": "now", "arguments": ""}}
CONVERSATION = [
    {"role": "system", "content": "You forecast."},
    {"role": "user", "content": "Weather in Paris, and the time?"},
    {"role": "assistant", "content": "Let me look.", "tool_calls": [CALL, CALL2]},
    {"role": "tool", "tool_call_id": "call_abc", "content": '{"temp": 21}'},
    {"role": "tool", "tool_call_id": "call_def", "content": [{"type": "text", "text": "12:00"}]},
    {"role": "user", "content": "Summarize."},
]


def anthropic(model="claude-haiku-4-5"):
    return AnthropicProvider("a", model, api_key=KEY)


def openai():
    return OpenAIProvider("o", "gpt-4o-mini", api_key=KEY)


# -- the Anthropic body ---------------------------------------------------------------------------
def test_a_tool_conversation_becomes_anthropic_blocks():
    body = anthropic().encode(Request(messages=CONVERSATION, tools=TOOLS))
    assert body["system"] == "You forecast."
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris, and the time?"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_abc", "name": "forecast",
             "input": {"city": "Paris", "days": 3}},
            {"type": "tool_use", "id": "call_def", "name": "now", "input": {}}]},
        # both tool results and the next user message: ONE user turn, results first
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_abc", "content": '{"temp": 21}'},
            {"type": "tool_result", "tool_use_id": "call_def",
             "content": [{"type": "text", "text": "12:00"}]},
            {"type": "text", "text": "Summarize."}]},
    ]
    assert body["tools"] == [
        {"name": "forecast", "description": "Forecast", "input_schema": SCHEMA},
        {"name": "now", "input_schema": {"type": "object", "properties": {}}}]
    assert "tool_choice" not in body
    parse_body("anthropic", body)  # the mock, judging as Anthropic does, accepts it


def test_the_openai_body_is_the_conversation_as_it_is():
    body = openai().encode(Request(messages=CONVERSATION, tools=TOOLS, tool_choice="auto"))
    assert body["messages"] == CONVERSATION and body["tools"] == TOOLS
    parse_body("openai", body)


@pytest.mark.parametrize("choice,parallel,expected", [
    ("auto", None, {"type": "auto"}),
    ("required", None, {"type": "any"}),
    ("none", None, {"type": "none"}),
    ({"type": "function", "function": {"name": "now"}}, None, {"type": "tool", "name": "now"}),
    (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
    ("none", False, {"type": "none"}),
    (None, True, None),
])
def test_tool_choice_mapping(choice, parallel, expected):
    kw = {"tools": TOOLS}
    if choice is not None:
        kw["tool_choice"] = choice
    if parallel is not None:
        kw["parallel_tool_calls"] = parallel
    body = anthropic().encode(Request("hi", **kw))
    assert body.get("tool_choice") == expected
    assert "parallel_tool_calls" not in body
    parse_body("anthropic", body)


def test_same_role_turns_are_merged_and_plain_turns_stay_strings():
    msgs = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"}, {"role": "developer", "content": "d"},
            {"role": "assistant", "content": "e"}, {"role": "user", "content": "f"}]
    body = anthropic().encode(Request(messages=msgs))
    assert body["system"] == "d"
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"},
                                          {"type": "text", "text": "e"}]},
        {"role": "user", "content": "f"}]
    parse_body("anthropic", body)


def test_message_names_and_other_openai_keys_are_not_sent_to_anthropic():
    msgs = [{"role": "user", "content": "hi", "name": "alice"}]
    body = anthropic().encode(Request(messages=msgs))
    assert body["messages"] == [{"role": "user", "content": "hi"}]


def test_call_ids_anthropic_would_refuse_are_rewritten_in_pairs():
    odd = {**CALL, "id": "call.1/x"}
    odd2 = {**CALL, "id": "call.1:x"}  # the same after a naive rewrite: must stay distinct
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [odd, odd2]},
            {"role": "tool", "tool_call_id": "call.1/x", "content": "r1"},
            {"role": "tool", "tool_call_id": "call.1:x", "content": "r2"}]
    body = anthropic().encode(Request(messages=msgs, tools=TOOLS))
    uses = [b["id"] for b in body["messages"][1]["content"]]
    results = [b["tool_use_id"] for b in body["messages"][2]["content"]]
    assert uses == results and len(set(uses)) == 2
    assert all(c.isalnum() or c in "_-" for u in uses for c in u)
    parse_body("anthropic", body)


def test_a_tool_history_without_tools_is_refused_before_sending():
    msgs = CONVERSATION
    with pytest.raises(ValueError, match="must define tools"):
        anthropic().encode(Request(messages=msgs))
    body = openai().encode(Request(messages=msgs))  # OpenAI takes it
    parse_body("openai", body)
    # and the mock refuses it as Anthropic does, so a wrong translation would fail in tests
    with pytest.raises(BadRequest, match="must define tools"):
        parse_body("anthropic", {**anthropic().encode(Request(messages=msgs, tools=TOOLS)),
                                 "tools": None})


def test_empty_turns_are_refused_for_anthropic():
    with pytest.raises(ValueError, match="empty"):
        anthropic().encode(Request(messages=[{"role": "user", "content": ""},
                                             {"role": "assistant", "content": "x"},
                                             {"role": "user", "content": "y"}]))
    prefill = anthropic().encode(Request(messages=[{"role": "user", "content": "x"},
                                                   {"role": "assistant", "content": ""}]))
    parse_body("anthropic", prefill)


# -- structured output ----------------------------------------------------------------------------
JSON_SCHEMA = {"type": "json_schema", "json_schema": {"name": "weather", "strict": True,
                                                      "schema": SCHEMA}}


def test_json_schema_becomes_anthropic_structured_output():
    body = anthropic().encode(Request("hi", response_format=JSON_SCHEMA))
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": SCHEMA}}
    assert "response_format" not in body
    parse_body("anthropic", body)
    assert openai().encode(Request("hi", response_format=JSON_SCHEMA))["response_format"] \
        == JSON_SCHEMA


def test_what_anthropic_cannot_take_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="json_object"):
        anthropic().encode(Request("hi", response_format={"type": "json_object"}))
    with pytest.raises(ValueError, match="predates structured output"):
        anthropic("claude-3-5-haiku-latest").encode(Request("hi", response_format=JSON_SCHEMA))
    assert "output_config" not in anthropic().encode(
        Request("hi", response_format={"type": "text"}))


# -- other fields ---------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["logit_bias", "frequency_penalty", "presence_penalty",
                                   "logprobs", "top_logprobs", "reasoning_effort", "prediction",
                                   "modalities", "audio", "web_search_options"])
def test_openai_only_fields_are_never_sent_to_anthropic(field):
    value = {"logit_bias": {"50256": -100}, "logprobs": True, "top_logprobs": 2,
             "reasoning_effort": "low", "prediction": {"type": "content", "content": "x"},
             "modalities": ["text"], "audio": {"voice": "alloy", "format": "mp3"},
             "web_search_options": {}}.get(field, 0.5)
    request = Request("hi", **{field: value})
    with pytest.raises(ValueError, match=field) as info:
        anthropic().encode(request)
    assert stops_chain(info.value)
    parse_body("openai", openai().encode(request))


def test_infrastructure_hints_are_dropped_and_shared_fields_translated():
    body = anthropic().encode(Request("hi", seed=1, store=True, service_tier="auto",
                                      prompt_cache_key="k", temperature=0.2, top_p=0.9,
                                      stop=["END"], user="u-1", n=1,
                                      metadata={"run": "nightly"}))
    assert body == {"model": "claude-haiku-4-5", "max_tokens": 256,
                    "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2,
                    "top_p": 0.9, "stop_sequences": ["END"], "metadata": {"user_id": "u-1"}}
    parse_body("anthropic", body)
    assert anthropic().encode(Request("hi", stop="X"))["stop_sequences"] == ["X"]


@pytest.mark.parametrize("kw,match", [
    ({"temperature": 1.5}, "range 0 to 1"),
    ({"n": 2}, "one choice"),
    ({"stop": ["a", ""]}, "stop"),
])
def test_values_anthropic_refuses(kw, match):
    with pytest.raises(ValueError, match=match):
        anthropic().encode(Request("hi", **kw))


@pytest.mark.parametrize("field", ["top_k", "thinking", "stop_sequences", "output_config"])
def test_anthropic_only_fields_pass_to_anthropic_and_are_refused_for_openai(field):
    value = {"top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
             "stop_sequences": ["x"],
             "output_config": {"effort": "low"}}[field]
    request = Request("hi", max_tokens=2048, **{field: value})
    assert anthropic().encode(request)[field] == value
    with pytest.raises(ValueError, match="Anthropic-only"):
        openai().encode(request)


def test_check_runs_the_translation_without_sending():
    request = Request("hi", logit_bias={"1": 1})
    openai().check(request)
    with pytest.raises(ValueError, match="logit_bias"):
        anthropic().check(request)
    srv = MockLLMServer(api="anthropic", clock=VirtualClock())
    with pytest.raises(ValueError, match="logit_bias"):
        srv.provider("d").check(request)
    assert srv.stats["requests"] == 0


# -- Request: the caller's mistakes, before anything is sent --------------------------------------
@pytest.mark.parametrize("kw,exc,match", [
    ({"tools": []}, ValueError, "must not be empty"),
    ({"tools": "forecast"}, TypeError, "list of tool dicts"),
    ({"tools": [{"name": "f", "input_schema": {}}]}, ValueError, "expected 'function'"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, ValueError,
     "a-z, A-Z"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}] * 2}, ValueError, "two tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
     ValueError, "type 'object'"),
    ({"tool_choice": "auto"}, ValueError, "needs tools"),
    ({"tools": TOOLS, "tool_choice": "any"}, ValueError, "tool_choice must be one of"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     ValueError, "not one of the tools"),
    ({"tools": TOOLS, "parallel_tool_calls": "no"}, TypeError, "parallel_tool_calls"),
    ({"response_format": {"type": "xml"}}, ValueError, "response_format type"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}}, TypeError,
     "json_schema.name"),
])
def test_bad_tool_arguments_are_the_callers_errors(kw, exc, match):
    with pytest.raises(exc, match=match) as info:
        Request("hi", **kw)
    assert stops_chain(info.value)


@pytest.mark.parametrize("messages,match", [
    ([{"role": "user", "content": "q"},
      {"role": "assistant", "content": None, "tool_calls": [CALL]},
      {"role": "user", "content": "next"}], "before the tool calls"),
    ([{"role": "user", "content": "q"},
      {"role": "assistant", "content": None, "tool_calls": [CALL]}], "no 'tool' message"),
    ([{"role": "user", "content": "q"},
      {"role": "tool", "tool_call_id": "call_abc", "content": "r"}], "did not make"),
    ([{"role": "user", "content": "q"},
      {"role": "assistant", "content": None, "tool_calls": [
          {**CALL, "function": {"name": "forecast", "arguments": "[1, 2]"}}]},
      {"role": "tool", "tool_call_id": "call_abc", "content": "r"}], "JSON object"),
    ([{"role": "user", "content": "q"},
      {"role": "assistant", "content": None, "tool_calls": [CALL, CALL]},
      {"role": "tool", "tool_call_id": "call_abc", "content": "r"}], "reuses the id"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": None}],
     "no tool_calls"),
])
def test_malformed_tool_turns_are_refused(messages, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Request(messages=messages, tools=TOOLS)


def test_the_estimate_counts_tool_schemas_and_call_arguments_as_the_mock_does():
    request = Request(messages=CONVERSATION, tools=TOOLS)
    body = openai().encode(request)
    assert parse_body("openai", body).prompt == request.text
    bare = Request(messages=[{"role": "user", "content": "Weather in Paris, and the time?"}])
    assert request.input_tokens > bare.input_tokens + 20


# -- answers: ToolCall whichever provider answered ------------------------------------------------
def test_tool_call_helpers_build_the_next_turns():
    r = LLMResponse(text="", model="m", provider="p", usage=Usage(1, 1),
                    tool_calls=[ToolCall("call_1", "forecast", {"city": "Paris"})])
    assert isinstance(r.tool_calls, tuple)
    assert r.message() == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "forecast", "arguments": '{"city": "Paris"}'}}]}
    assert r.tool_calls[0].result("21C") == {"role": "tool", "tool_call_id": "call_1",
                                             "content": "21C"}
    with pytest.raises(TypeError, match=r"json\.dumps"):
        r.tool_calls[0].result({"t": 21})
    with pytest.raises(TypeError):
        LLMResponse(text="", model="m", provider="p", usage=Usage(), tool_calls=[{"id": "x"}])
    with pytest.raises(TypeError):
        ToolCall("", "f", {})


@pytest.mark.parametrize("first,second", [("openai", "anthropic"), ("anthropic", "openai")])
def test_a_tool_conversation_continues_on_the_other_api(first, second):
    """A call made by one API, answered, and the conversation finished by the other: the
    translated body passes the mock's (the real API's) validation and the answer is text."""
    clock = VirtualClock()
    servers = {api: MockLLMServer(api=api, clock=clock, latency=0.0) for api in (first, second)}
    a = servers[first].provider("first")
    b = servers[second].provider("second")
    messages = [{"role": "system", "content": "You forecast."},
                {"role": "user", "content": "Weather in Paris for 3 days?"}]
    asked = a.complete(messages=messages, tools=TOOLS, tool_choice="required")
    (call,) = asked.tool_calls
    assert call.name in ("forecast", "now") and asked.finish_reason == "tool_calls"
    messages += [asked.message(), call.result(json.dumps({"temp": 21}))]
    answer = b.complete(messages=messages, tools=TOOLS)
    assert answer.text and answer.tool_calls == () and answer.finish_reason == "stop"
    assert servers[second].stats["by_status"] == {200: 1}
