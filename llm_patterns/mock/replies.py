"""What the mock model "says": a deterministic answer to a request, text or a tool call.

The answer depends only on the seed and the request, so the same run gives the same bytes.
A request that offers tools gets a tool call when a real model would make one: the tool is
forced (``tool_choice`` required/any or a named tool), or the choice is left to the model and
the last turn is the user's question (after a tool result, the model answers in text). The
arguments follow the tool's JSON schema.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from ..tokens import CHARS_PER_TOKEN, estimate_tokens
from .request import ChatRequest, ToolSpec

__all__ = ["FINISH", "Reply", "ToolCall", "example_arguments", "make_reply"]

_TEMPLATES = ("Summary: {}", "In short: {}", "Key point: {}", "Answer: {}")
_MAX_SCHEMA_DEPTH = 16  # deeper schemas get {} (a hostile schema cannot recurse us to death)
_ID_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789"  # base58-like

# The one vocabulary used inside the mock, spelled per API on the wire.
FINISH = {
    "openai": {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
               "content_filter": "content_filter"},
    "anthropic": {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                  "content_filter": "refusal"},
}


@dataclass(frozen=True)
class ToolCall:
    """One tool call of an answer: ``arguments`` as the dict the model produced."""

    id: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, ensure_ascii=False)


@dataclass(slots=True)  # not frozen: built once per request, on the hot path (read-only)
class Reply:
    """An answer: its text, its tool calls, why it stopped and the output tokens it cost."""

    text: str
    tool_calls: tuple[ToolCall, ...]
    finish: str  # "stop" | "length" | "tool_calls" | "content_filter"
    output_tokens: int  # billed output, reasoning included
    reasoning_tokens: int = 0


def _words(text: str, n: int) -> list[str]:
    return text.split(maxsplit=n)[:n]  # the first n words (no full split of a long prompt)


def example_arguments(schema: Any, words: list[str], depth: int = 0) -> Any:
    """A value that fits the JSON ``schema``: what a model would fill in, deterministically."""
    if not isinstance(schema, dict) or depth > _MAX_SCHEMA_DEPTH:
        return {}
    if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_arguments(schema[key][0], words, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return {}
        required = schema.get("required")
        names = [n for n in props if not isinstance(required, list) or n in required] or \
            list(props)
        return {name: example_arguments(props[name], words, depth + 1) for name in names}
    if kind == "array":
        return [example_arguments(schema.get("items", {}), words, depth + 1)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return " ".join(words[:3]) or "example"


def _tool_call(seed: int, request: ChatRequest, pick: random.Random) -> ToolCall:
    tools = request.tools
    by_name = {t.name: t for t in tools}
    choice = request.tool_choice
    tool: ToolSpec = by_name[choice] if choice in by_name else pick.choice(tools)
    ident = "".join(pick.choice(_ID_CHARS) for _ in range(24))
    return ToolCall(ident, tool.name, example_arguments(tool.schema,
                                                        _words(request.last_message, 6)))


def make_reply(api: str, seed: int, request: ChatRequest, *, content_filter: bool = False,
               reasoning_tokens: int = 0) -> Reply:
    """The answer to ``request``, cut to fit ``max_tokens`` (reasoning tokens first)."""
    pick = random.Random(f"{seed}|{request.prompt}")
    n = pick.randint(6, 12)
    budget = request.max_tokens
    reasoning = min(reasoning_tokens, budget) if api == "openai" else 0
    budget -= reasoning
    if request.wants_tool and not content_filter:
        call = _tool_call(seed, request, pick)
        preface = ""
        if api == "anthropic" and request.tool_choice in (None, "auto"):
            preface = f"I'll use the {call.name} tool."  # Claude may speak before a tool call
        cost = estimate_tokens(preface) + estimate_tokens(call.arguments_json)
        if cost <= budget:
            return Reply(preface, (call,), "tool_calls", reasoning + cost, reasoning)
    text = pick.choice(_TEMPLATES).format(" ".join(_words(request.last_message, n))
                                          or "(empty prompt)")
    finish = "stop"
    if content_filter:  # the filter stops the answer part-way
        text, finish = text[: max(1, len(text) // 2)], "content_filter"
    limit = budget * CHARS_PER_TOKEN  # so that estimate_tokens(text) <= budget
    if len(text) > limit:
        text, finish = text[:limit], "length"
    return Reply(text, (), finish, reasoning + estimate_tokens(text), reasoning)
