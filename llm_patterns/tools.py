"""Tools, tool-call turns and structured output in OpenAI's chat format, checked once.

A request is written in one format, OpenAI's, whichever provider ends up answering it (the
Anthropic provider translates it). So the caller's mistakes in that format are caught here, by
``Request``, before anything is sent: a ``ValueError``/``TypeError`` naming the place, never a
400 from the second provider of a fallback chain in the middle of an outage.

- ``tools``: a non-empty list of ``{"type": "function", "function": {"name", "description",
  "parameters", "strict"}}``; names as both APIs allow them (``[a-zA-Z0-9_-]``, at most 64
  characters, OpenAI's limit) and unique; ``parameters`` a JSON-schema object.
- ``tool_choice``: ``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function":
  {"name": ...}}`` naming one of the tools; only with ``tools``.
- ``response_format``: ``{"type": "text"}``, ``{"type": "json_object"}`` or ``{"type":
  "json_schema", "json_schema": {"name", "schema", "strict", "description"}}``.
- tool turns: an assistant message's ``tool_calls`` (``id``, ``type: "function"``, ``function``
  with ``name`` and ``arguments``, a JSON object as text), each answered by a ``tool`` message
  (``tool_call_id``) before the next user or assistant turn, as both APIs require.

``tool_text`` is the prompt as the model reads it (tool definitions, contents and the calls'
arguments), the text token estimates are taken from, as the mock counts it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "TOOL_NAME",
    "check_response_format",
    "check_tool_choice",
    "check_tool_turns",
    "check_tools",
    "parse_arguments",
    "tool_names",
    "tool_text",
]

TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""A tool (or schema) name both APIs accept: OpenAI allows 64 characters, Anthropic 128."""

_CHOICES = ("auto", "none", "required")
_FORMATS = ("text", "json_object", "json_schema")


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _dict(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(value).__name__}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a str, got {value!r}")
    if not TOOL_NAME.match(value):
        raise ValueError(f"{where} must be 1-64 characters of a-z, A-Z, 0-9, _ or - (what both "
                         f"APIs accept), got {value!r}")
    return value


def _schema(value: Any, where: str) -> None:
    schema = _dict(value, where)
    kind = schema.get("type", "object")
    if kind != "object":
        raise ValueError(f"{where} must be a JSON schema of type 'object' (tool arguments are "
                         f"an object in both APIs), got type {kind!r}")


def check_tools(tools: Any) -> tuple[str, ...]:
    """Check ``tools=`` (OpenAI's function format); the tools' names, in order."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise TypeError(f"tools must be a list of tool dicts, got {type(tools).__name__}")
    if not tools:
        raise ValueError("tools must not be empty (leave tools= out for no tools)")
    names: list[str] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        tool = _dict(tool, where)
        kind = tool.get("type")
        if kind != "function":
            raise ValueError(
                f"{where} has type {kind!r}; expected 'function' ({{'type': 'function', "
                f"'function': {{'name', 'description', 'parameters'}}}}, OpenAI's format, which "
                f"every provider here translates)")
        fn = _dict(tool.get("function"), f"{where}.function")
        name = _name(fn.get("name"), f"{where}.function.name")
        if name in names:
            raise ValueError(f"{where}.function.name {name!r} is used by two tools")
        names.append(name)
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise TypeError(f"{where}.function.description must be a str, got {description!r}")
        if fn.get("parameters") is not None:
            _schema(fn["parameters"], f"{where}.function.parameters")
        strict = fn.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise TypeError(f"{where}.function.strict must be True or False, got {strict!r}")
    return tuple(names)


def tool_names(tools: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The names of checked tools."""
    return tuple(t["function"]["name"] for t in tools)


def check_tool_choice(choice: Any, names: Sequence[str] | None) -> None:
    """Check ``tool_choice=`` against the tools' ``names`` (None: no tools given)."""
    if names is None:
        raise ValueError(f"tool_choice={choice!r} needs tools= (both APIs refuse a tool choice "
                         f"without tools)")
    if isinstance(choice, str):
        if choice not in _CHOICES:
            raise ValueError(f"tool_choice must be one of {', '.join(map(repr, _CHOICES))} or "
                             f"{{'type': 'function', 'function': {{'name': ...}}}}, got {choice!r}")
        return
    choice = _dict(choice, "tool_choice")
    if choice.get("type") != "function":
        raise ValueError(f"tool_choice as a dict must have type 'function', got "
                         f"{choice.get('type')!r}")
    name = _dict(choice.get("function"), "tool_choice.function").get("name")
    if not isinstance(name, str):
        raise TypeError(f"tool_choice.function.name must be a str, got {name!r}")
    if name not in names:
        raise ValueError(f"tool_choice names {name!r}, which is not one of the tools "
                         f"{list(names)!r}")


def check_response_format(fmt: Any) -> None:
    """Check ``response_format=`` (OpenAI's structured output)."""
    fmt = _dict(fmt, "response_format")
    kind = fmt.get("type")
    if kind not in _FORMATS:
        raise ValueError(f"response_format type must be one of {', '.join(map(repr, _FORMATS))}, "
                         f"got {kind!r}")
    if kind != "json_schema":
        return
    spec = _dict(fmt.get("json_schema"), "response_format.json_schema")
    _name(spec.get("name"), "response_format.json_schema.name")
    if spec.get("schema") is not None:
        _dict(spec["schema"], "response_format.json_schema.schema")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise TypeError(f"response_format.json_schema.strict must be True or False, got {strict!r}")


def parse_arguments(text: Any, where: str = "arguments") -> dict[str, Any]:
    """A tool call's arguments (JSON text) as a dict; ``ValueError`` if they are not an object."""
    if not isinstance(text, str):
        raise TypeError(f"{where} must be a JSON object as a str, got {type(text).__name__}")
    if not text.strip():
        return {}  # a call without arguments (OpenAI sends "" or "{}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{where} is not valid JSON ({len(text)} characters)") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, got a {type(value).__name__}")
    return value


def check_tool_turns(messages: Sequence[Mapping[str, Any]]) -> None:
    """Check assistant ``tool_calls`` and ``tool`` messages: well formed, and every call
    answered by a ``tool`` message (and only those) before the conversation goes on."""
    pending: dict[str, int] = {}  # call id -> index of the assistant message that made it
    for i, message in enumerate(messages):
        role = message["role"]
        where = f"messages[{i}]"
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ValueError(f"{where} (role 'tool') needs a non-empty str 'tool_call_id', "
                                 f"got {call_id!r}")
            if call_id not in pending:
                raise ValueError(f"{where} answers tool call {call_id!r}, which the assistant "
                                 f"turn before it did not make")
            del pending[call_id]
            continue
        if pending:
            raise ValueError(f"{where} comes before the tool calls {sorted(pending)!r} were "
                             f"answered (one 'tool' message per call, right after the call)")
        calls = message.get("tool_calls")
        if role != "assistant":
            if calls is not None:
                raise ValueError(f"{where} has tool_calls but role {role!r}; only assistant "
                                 f"turns call tools")
            continue
        if calls is None:
            if message.get("content") is None:
                raise ValueError(f"{where} (assistant) has content None and no tool_calls")
            continue
        if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence) or not calls:
            raise TypeError(f"{where}.tool_calls must be a non-empty list of calls, got {calls!r}")
        for j, call in enumerate(calls):
            cwhere = f"{where}.tool_calls[{j}]"
            call = _dict(call, cwhere)
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                raise ValueError(f"{cwhere} needs a non-empty str 'id', got {call_id!r}")
            if call.get("type", "function") != "function":
                raise ValueError(f"{cwhere} has type {call.get('type')!r}; expected 'function'")
            fn = _dict(call.get("function"), f"{cwhere}.function")
            _name(fn.get("name"), f"{cwhere}.function.name")
            parse_arguments(fn.get("arguments"), f"{cwhere}.function.arguments")
            if call_id in pending:
                raise ValueError(f"{cwhere} reuses the id {call_id!r}")
            pending[call_id] = i
    if pending:
        raise ValueError(f"the tool calls {sorted(pending)!r} have no 'tool' message answering "
                         f"them (send the results before asking the model again)")


def tool_text(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
              contents: Sequence[str]) -> str:
    """The prompt as the model reads it: the tools' names and schemas, then each message's text
    (``contents``) followed by the calls it makes as ``name(arguments)``, joined by newlines."""
    texts: list[str] = []
    if tools:
        texts.append(_json_text([{"name": t["function"]["name"],
                                  "parameters": t["function"].get("parameters") or {}}
                                 for t in tools]))
    for message, content in zip(messages, contents, strict=True):
        texts.append(content)
        for call in message.get("tool_calls") or ():
            fn = call["function"]
            texts.append(f"{fn['name']}({fn['arguments']})")
    return "\n".join(texts)
