"""Usage, LLMResponse, Provider, to_messages and prompt_text."""

from __future__ import annotations

import dataclasses

import pytest

from llm_patterns.response import LLMResponse, Provider, Usage, prompt_text, to_messages


# -- Usage ---------------------------------------------------------------------------------------
def test_usage_defaults_and_total():
    assert Usage() == Usage(0, 0, 0)
    u = Usage(prompt_tokens=120, completion_tokens=30, cached_tokens=100)
    assert u.total_tokens == 150
    assert u.uncached_prompt_tokens == 20


def test_usage_is_frozen():
    u = Usage(1, 2, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        u.prompt_tokens = 5  # type: ignore[misc]


@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens", "cached_tokens"])
def test_usage_negative_raises_naming_the_field(field):
    with pytest.raises(ValueError, match=field):
        Usage(**{field: -1})


@pytest.mark.parametrize("value", [1.5, "3", None, True])
def test_usage_non_int_raises(value):
    with pytest.raises(TypeError, match="prompt_tokens"):
        Usage(prompt_tokens=value)


def test_usage_cached_cannot_exceed_prompt():
    with pytest.raises(ValueError, match="cached_tokens"):
        Usage(prompt_tokens=10, cached_tokens=11)


def test_from_openai_with_cached_details():
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert Usage.from_openai(usage) == Usage(2006, 300, 1920)


def test_from_openai_missing_or_null_details():
    assert Usage.from_openai({"prompt_tokens": 5, "completion_tokens": 1}) == Usage(5, 1, 0)
    assert Usage.from_openai(
        {"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": None}
    ) == Usage(5, 1, 0)


def test_from_openai_rejects_negative_and_non_mapping():
    with pytest.raises(ValueError, match="completion_tokens"):
        Usage.from_openai({"prompt_tokens": 5, "completion_tokens": -1})
    with pytest.raises(TypeError):
        Usage.from_openai([1, 2])  # type: ignore[arg-type]


def test_from_anthropic_adds_cache_reads_and_writes_to_prompt():
    usage = {
        "input_tokens": 50,
        "output_tokens": 200,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 300,
    }
    u = Usage.from_anthropic(usage)
    assert u == Usage(prompt_tokens=1350, completion_tokens=200, cached_tokens=1000,
                      cache_write_tokens=300)
    assert u.uncached_prompt_tokens == 50  # reads and writes have their own prices


def test_from_anthropic_without_cache_fields():
    assert Usage.from_anthropic({"input_tokens": 7, "output_tokens": 3}) == Usage(7, 3, 0)
    assert Usage.from_anthropic(
        {"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": None}
    ) == Usage(7, 3, 0)


def test_from_anthropic_negative_raises():
    with pytest.raises(ValueError, match="cache_read_input_tokens"):
        Usage.from_anthropic({"input_tokens": 7, "output_tokens": 3, "cache_read_input_tokens": -2})


def test_parse_tells_the_conventions_apart():
    assert Usage.parse({"prompt_tokens": 10, "completion_tokens": 2}) == Usage(10, 2, 0)
    anthropic = {"input_tokens": 10, "output_tokens": 2, "cache_read_input_tokens": 5}
    assert Usage.parse(anthropic) == Usage(15, 2, 5)
    u = Usage(1, 1, 0)
    assert Usage.parse(u) is u
    with pytest.raises(ValueError, match="neither"):
        Usage.parse({"tokens": 3})


def test_usage_add_and_sum():
    a, b = Usage(10, 5, 2), Usage(3, 4, 1)
    assert a + b == Usage(13, 9, 3)
    assert sum([a, b]) == Usage(13, 9, 3)
    assert sum([], Usage()) == Usage()
    with pytest.raises(TypeError):
        a + 1


# -- LLMResponse ----------------------------------------------------------------------------------
def test_llmresponse_defaults_and_repr_hides_raw_and_headers():
    r = LLMResponse("hi", "gpt-4o", "primary", Usage(3, 1), raw={"secret_blob": 1},
                    headers={"x-ratelimit-remaining-requests": "9"})
    assert (r.latency_s, r.attempts, r.fallback_used) == (0.0, 1, False)
    assert "secret_blob" not in repr(r)
    assert "x-ratelimit" not in repr(r)
    assert "primary" in repr(r) and "gpt-4o" in repr(r)
    r2 = dataclasses.replace(r, fallback_used=True)
    assert r2.fallback_used and r2.raw == {"secret_blob": 1} and not r.fallback_used


def test_llmresponse_validates():
    with pytest.raises(TypeError, match="Usage"):
        LLMResponse("hi", "m", "p", {"prompt_tokens": 1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempts"):
        LLMResponse("hi", "m", "p", Usage(), attempts=0)
    with pytest.raises(ValueError, match="latency_s"):
        LLMResponse("hi", "m", "p", Usage(), latency_s=-1.0)
    with pytest.raises(TypeError, match="text"):
        LLMResponse(None, "m", "p", Usage())  # type: ignore[arg-type]


# -- Provider protocol ----------------------------------------------------------------------------
def test_provider_protocol_is_runtime_checkable():
    class Good:
        name = "g"
        model = "m"

        def complete(self, prompt=None, *, messages=None, max_tokens=256, **kw):
            return LLMResponse("x", self.model, self.name, Usage())

        async def acomplete(self, prompt=None, *, messages=None, max_tokens=256, **kw):
            return self.complete(prompt)

    class NoAsync:
        name = "n"
        model = "m"

        def complete(self, prompt=None, **kw):
            return None

    assert isinstance(Good(), Provider)
    assert not isinstance(NoAsync(), Provider)


# -- to_messages / prompt_text --------------------------------------------------------------------
def test_to_messages_from_prompt():
    assert to_messages("hello", None) == [{"role": "user", "content": "hello"}]


def test_to_messages_copies_messages():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    out = to_messages(None, msgs)
    assert out == msgs
    out[0]["content"] = "changed"
    assert msgs[0]["content"] == "be brief"


@pytest.mark.parametrize(
    "prompt, messages, match",
    [
        (None, None, "neither"),
        ("x", [{"role": "user", "content": "y"}], "both"),
        (None, [], "empty"),
        (None, [{"content": "no role"}], "role"),
        (None, [{"role": "user"}], "content"),
    ],
)
def test_to_messages_rejects(prompt, messages, match):
    with pytest.raises(ValueError, match=match):
        to_messages(prompt, messages)


def test_to_messages_type_errors():
    with pytest.raises(TypeError):
        to_messages(123, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_messages(None, "hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        to_messages(None, ["hello"])  # type: ignore[list-item]


def test_prompt_text_joins_contents_with_newlines():
    msgs = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "part one"},
                                     {"type": "text", "text": "part two"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "t"}]},
        {"role": "user", "content": "last"},
    ]
    assert prompt_text(msgs) == "be brief\npart one\npart two\n\nlast"


def test_prompt_text_of_single_prompt():
    assert prompt_text(to_messages("abc", None)) == "abc"


@pytest.mark.parametrize(
    "part, match",
    [
        ({"type": "image_url", "image_url": {"url": "data:..."}}, "image_url"),
        ({"type": "image", "source": {}}, "'image'"),
        ({"type": "input_audio"}, "input_audio"),
        ({"type": "text"}, "text"),
    ],
)
def test_prompt_text_refuses_non_text_parts(part, match):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "look"}, part]}]
    with pytest.raises(ValueError, match=match):
        prompt_text(msgs)


def test_prompt_text_names_the_position_of_the_bad_part():
    msgs = [{"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    with pytest.raises(ValueError, match=r"messages\[1\]\.content\[0\]"):
        prompt_text(msgs)


def test_prompt_text_rejects_odd_content():
    with pytest.raises(ValueError, match="content"):
        prompt_text([{"role": "user"}])
    with pytest.raises(TypeError):
        prompt_text([{"role": "user", "content": 42}])
    with pytest.raises(TypeError):
        prompt_text("not a list")  # type: ignore[arg-type]


# -- usage as billed: cache writes (5 min / 1 h), reasoning ---------------------------------------
def test_from_anthropic_keeps_cache_writes_and_their_one_hour_part():
    usage = {
        "input_tokens": 20, "output_tokens": 7, "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 100_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 40_000,
                           "ephemeral_1h_input_tokens": 60_000},
    }
    u = Usage.from_anthropic(usage)
    assert (u.prompt_tokens, u.cached_tokens, u.cache_write_tokens) == (101_020, 1000, 100_000)
    assert (u.cache_write_1h_tokens, u.cache_write_5m_tokens) == (60_000, 40_000)
    assert u.uncached_prompt_tokens == 20


def test_from_anthropic_split_without_total_sums_the_split():
    u = Usage.from_anthropic({"input_tokens": 1, "output_tokens": 1, "cache_creation": {
        "ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4}})
    assert (u.cache_write_tokens, u.cache_write_1h_tokens, u.prompt_tokens) == (7, 4, 8)


def test_from_openai_reads_reasoning_tokens():
    u = Usage.from_openai({"prompt_tokens": 10, "completion_tokens": 500,
                           "completion_tokens_details": {"reasoning_tokens": 448}})
    assert (u.reasoning_tokens, u.completion_tokens) == (448, 500)
    assert Usage.from_openai({"prompt_tokens": 1, "completion_tokens": 1,
                              "completion_tokens_details": None}).reasoning_tokens == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"prompt_tokens": 10, "cached_tokens": 6, "cache_write_tokens": 5}, "cannot exceed"),
    ({"prompt_tokens": 10, "cache_write_tokens": 2, "cache_write_1h_tokens": 3}, "part of them"),
    ({"completion_tokens": 2, "reasoning_tokens": 3}, "includes them"),
    ({"reasoning_tokens": -1}, "reasoning_tokens"),
])
def test_usage_rejects_inconsistent_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Usage(**kwargs)


def test_usage_add_sums_every_field():
    a = Usage(10, 5, 1, 4, 2, 3)
    assert a + a == Usage(20, 10, 2, 8, 4, 6)


@pytest.mark.parametrize("raw, expected", [
    ("stop", "stop"), ("end_turn", "stop"), ("stop_sequence", "stop"),
    ("length", "length"), ("max_tokens", "length"),
    ("tool_calls", "tool_calls"), ("tool_use", "tool_calls"), ("function_call", "tool_calls"),
    ("content_filter", "content_filter"), ("refusal", "content_filter"),
    ("pause_turn", "pause_turn"), (None, None), ("", None), (3, None),
])
def test_finish_reason_in_one_vocabulary(raw, expected):
    from llm_patterns.response import normalize_finish_reason

    assert normalize_finish_reason(raw) == expected


def test_llmresponse_finish_reason_is_a_str_or_none():
    assert LLMResponse("x", "m", "p", Usage(), finish_reason="length").finish_reason == "length"
    with pytest.raises(TypeError, match="finish_reason"):
        LLMResponse("x", "m", "p", Usage(), finish_reason=1)  # type: ignore[arg-type]


def test_usage_repr_shows_cache_writes_and_reasoning_only_when_present():
    assert repr(Usage(9, 12)) == "Usage(prompt_tokens=9, completion_tokens=12, cached_tokens=0)"
    assert repr(Usage(9, 12, 1, 4, 0, 3)) == (
        "Usage(prompt_tokens=9, completion_tokens=12, cached_tokens=1, cache_write_tokens=4, "
        "reasoning_tokens=3)")
    assert eval(repr(Usage(9, 12, 1, 4, 2, 3)), {"Usage": Usage}) == Usage(9, 12, 1, 4, 2, 3)
