"""Request: one call's arguments, normalised and validated once, before anything is sent."""

from __future__ import annotations

import copy
import pickle

import httpx
import pytest

from llm_patterns import Request, stops_chain
from llm_patterns.tokens import estimate_tokens


def test_prompt_becomes_one_user_message():
    r = Request("hello there")
    assert r.messages == ({"role": "user", "content": "hello there"},)
    assert (r.max_tokens, dict(r.extra), r.timeout, r.prompt) == (256, {}, None, "hello there")
    assert r.text == "hello there"
    assert r.input_tokens == estimate_tokens("hello there")
    assert r.estimated_tokens == r.input_tokens + 256


def test_build_is_the_constructor():
    assert Request.build("x", None, 9, temperature=0.5) == Request("x", max_tokens=9,
                                                                   temperature=0.5)


def test_messages_are_copied_and_the_text_joins_them():
    msgs = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {
                "type": "ephemeral"}}, {"type": "text", "text": "b"}]}]
    r = Request(messages=msgs, max_tokens=5)
    assert list(r.messages) == msgs and r.messages[0] is not msgs[0]
    msgs[0]["content"] = "changed"
    assert r.messages[0]["content"] == "be brief"
    assert r.text == "be brief\na\nb" and r.prompt is None


def test_system_keyword_becomes_the_leading_system_message_and_counts():
    r = Request("question", system="You are terse.")
    assert r.messages == ({"role": "system", "content": "You are terse."},
                          {"role": "user", "content": "question"})
    assert "system" not in r.extra
    assert r.text == "You are terse.\nquestion"
    with pytest.raises(ValueError, match="not both"):
        Request(messages=[{"role": "system", "content": "a"}, {"role": "user", "content": "b"}],
                system="c")


def test_request_is_immutable_and_replace_revalidates():
    r = Request("x", max_tokens=10, temperature=0)
    with pytest.raises(AttributeError, match="immutable"):
        r.max_tokens = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        r.extra["temperature"] = 1  # type: ignore[index]
    r2 = r.replace(max_tokens=20)
    assert (r2.max_tokens, r2.prompt, dict(r2.extra)) == (20, "x", {"temperature": 0})
    assert r.max_tokens == 10
    with pytest.raises(ValueError, match="max_tokens"):
        r.replace(max_tokens=0)
    r3 = r.replace(messages=[{"role": "user", "content": "y"}])
    assert r3.prompt is None and r3.text == "y"


def test_repr_never_shows_the_prompt():
    r = Request("my secret plans for the quarter", temperature=0.2)
    text = repr(r)
    assert "secret plans" not in text
    assert "1 message" in text and "max_tokens=256" in text and "temperature" in text


def test_complete_kwargs_replays_the_call_as_made():
    assert Request("x", max_tokens=3, top_p=0.5).complete_kwargs() == {
        "prompt": "x", "max_tokens": 3, "top_p": 0.5}
    msgs = [{"role": "user", "content": "y"}]
    kwargs = Request(messages=msgs, timeout=7).complete_kwargs()
    assert kwargs == {"messages": msgs, "max_tokens": 256, "timeout": 7.0}


def test_pickle_and_copy():
    r = Request("x", max_tokens=3, temperature=0.1, timeout=httpx.Timeout(9.0))
    assert pickle.loads(pickle.dumps(r)) == r
    assert copy.deepcopy(r) == r


def test_equality():
    assert Request("x") == Request(messages=[{"role": "user", "content": "x"}])
    assert Request("x") != Request("y")
    assert Request("x") != "x"


# -- the caller's mistakes: raised as themselves, naming the argument --------------------------
@pytest.mark.parametrize("kwargs, exc, match", [
    ({}, ValueError, "neither"),
    ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, ValueError, "both"),
    ({"prompt": 12}, TypeError, "prompt"),
    ({"messages": "hello"}, TypeError, "messages"),
    ({"messages": []}, ValueError, "empty"),
    ({"messages": ["hi"]}, TypeError, r"messages\[0\]"),
    ({"messages": [{"content": "x"}]}, ValueError, "role"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, ValueError, "wizard"),
    ({"messages": [{"role": "user"}]}, ValueError, "content"),
    ({"messages": [{"role": "user", "content": None}]}, ValueError, "None"),
    ({"messages": [{"role": "user", "content": 42}]}, TypeError, "content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     ValueError, "unsupported content part"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, ValueError, "without"),
    ({"prompt": "x", "max_tokens": 0}, ValueError, "max_tokens"),
    ({"prompt": "x", "max_tokens": -5}, ValueError, "max_tokens"),
    ({"prompt": "x", "max_tokens": "100"}, TypeError, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10.0}, TypeError, "max_tokens"),
    ({"prompt": "x", "max_tokens": True}, TypeError, "max_tokens"),
    ({"prompt": "x", "max_tokens": None}, TypeError, "max_tokens"),
    ({"prompt": "x", "model": "other"}, ValueError, "model"),
    ({"prompt": "x", "stream": True}, ValueError, "stream"),
    ({"prompt": "x", "max_completion_tokens": 5}, ValueError, "max_tokens="),
    ({"prompt": "x", "dag_id": "d"}, ValueError, "labels"),
    ({"prompt": "x", "temperature": object()}, TypeError, "temperature"),
    ({"prompt": "x", "timeout": 0}, ValueError, "timeout"),
    ({"prompt": "x", "timeout": float("nan")}, ValueError, "timeout"),
    ({"prompt": "x", "timeout": "5"}, TypeError, "timeout"),
    ({"prompt": "x", "system": 5}, TypeError, "system"),
])
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match) as info:
        Request(**kwargs)
    assert type(info.value) is exc
    assert stops_chain(info.value)  # a fallback chain raises it as itself, never falls back


def test_valid_shapes_pass():
    Request(messages=[
        {"role": "developer", "content": "d"},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "42", "tool_call_id": "c1"},
    ])
    Request("", max_tokens=1, timeout=httpx.Timeout(5.0), temperature=0, stop=["\n"])


# -- handing a request to a provider ------------------------------------------------------------
def test_send_uses_send_or_replays_complete():
    import asyncio

    from llm_patterns.response import LLMResponse, Sender, Usage, asend, send

    class Plain:
        name, model = "plain", "m"

        def __init__(self):
            self.calls = []

        def complete(self, prompt=None, *, messages=None, max_tokens=256, **kw):
            self.calls.append((prompt, messages, max_tokens, kw))
            return LLMResponse("ok", "m", self.name, Usage())

        async def acomplete(self, prompt=None, *, messages=None, max_tokens=256, **kw):
            return self.complete(prompt, messages=messages, max_tokens=max_tokens, **kw)

    class Direct(Plain):
        def send(self, request, *, time_left=None):
            self.calls.append((request, time_left))
            return LLMResponse("sent", "m", self.name, Usage())

        async def asend(self, request, *, time_left=None):
            return self.send(request, time_left=time_left)

    plain, direct = Plain(), Direct()
    r = Request("hi", max_tokens=7, temperature=0)
    assert send(plain, r, time_left=3).text == "ok"
    assert plain.calls == [("hi", None, 7, {"temperature": 0})]
    assert asyncio.run(asend(plain, r)).text == "ok"
    assert send(direct, r, time_left=3).text == "sent" and direct.calls == [(r, 3)]
    assert asyncio.run(asend(direct, r)).text == "sent"
    assert isinstance(direct, Sender) and not isinstance(plain, Sender)
