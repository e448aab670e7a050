"""A ``Request`` (OpenAI's chat format) in each API's own body.

OpenAI's body is the request as it is, but a field only Anthropic knows (``top_k``,
``thinking``, ...) is refused. Anthropic's body is a translation:

- **messages**: ``system``/``developer`` messages become the top-level ``system``; an assistant
  turn's ``tool_calls`` become ``tool_use`` blocks (arguments parsed into ``input``); ``tool``
  messages become ``tool_result`` blocks in a user turn; consecutive turns of one role are merged
  into one (Anthropic requires alternation, and ``tool_result`` blocks first in their turn).
  A call id Anthropic would refuse (characters outside ``[a-zA-Z0-9_-]``) is rewritten the same
  way in the ``tool_use`` and in its ``tool_result``, so they still pair.
- **tools** ``{"type": "function", "function": {name, description, parameters}}`` become
  ``{name, description, input_schema}``; **tool_choice** ``auto``/``required``/``none``/a named
  function become ``{"type": "auto"|"any"|"none"|"tool"}``; ``parallel_tool_calls=False`` is
  ``disable_parallel_tool_use``.
- **response_format** ``json_schema`` becomes ``output_config.format`` (Anthropic's structured
  output); ``json_object`` has no Anthropic equivalent and is refused, as is a schema for a model
  family that predates structured output (Claude 2 and 3).
- **other fields**: ``stop`` becomes ``stop_sequences``, ``user`` ``metadata.user_id``;
  ``temperature`` above Anthropic's 1.0 is refused; OpenAI's infrastructure hints (``store``,
  ``seed``, ``service_tier``, prompt-cache keys, ``n=1`` ...) are dropped; any other
  OpenAI-only field is refused. Fields Anthropic knows pass through.

Every refusal is a ``ValueError`` naming the field, raised before anything is sent: an
OpenAI-only field is never sent to Anthropic, where it would be a 400 that stops a fallback chain.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from ..request import Request
from ..tools import parse_arguments

__all__ = [
    "ANTHROPIC_ONLY",
    "anthropic_body",
    "check_openai_fields",
]

_SYSTEM_ROLES = ("system", "developer")

ANTHROPIC_ONLY = frozenset({
    "top_k", "thinking", "stop_sequences", "output_config", "output_format", "cache_control",
    "container", "context_management", "mcp_servers", "inference_geo", "speed",
})
"""Fields only the Anthropic API takes (passed to it as they are, refused for OpenAI)."""

_OPENAI_HINTS = frozenset({
    "store", "seed", "service_tier", "prompt_cache_key", "prompt_cache_retention",
    "safety_identifier",
})
"""OpenAI fields that steer OpenAI's own infrastructure (storage, tiers, caching, abuse
monitoring, best-effort determinism), not the answer: dropped for Anthropic."""

_SHARED = frozenset({"top_p"})
_TRANSLATED = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format", "stop",
                         "user", "temperature", "metadata", "n"})
_CALL_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
_NO_STRUCTURED_OUTPUT = re.compile(r"^claude-(instant|2|3)")


def check_openai_fields(request: Request) -> None:
    """Refuse a field only Anthropic takes (``ValueError`` naming it)."""
    for key in request.extra:
        if key in ANTHROPIC_ONLY:
            raise ValueError(
                f"{key}= is an Anthropic-only field; the OpenAI API would refuse it (requests "
                f"are written in OpenAI's format{_openai_hint(key)})")


def _openai_hint(key: str) -> str:
    return {"stop_sequences": ": use stop=", "output_config": ": use response_format=",
            "output_format": ": use response_format="}.get(key, "")


def _call_id(call_id: str) -> str:
    """``call_id`` as Anthropic accepts tool ids; rewritten ids get a hash of the original, so
    two ids never collapse into one."""
    if _CALL_ID.match(call_id):
        return call_id
    digest = hashlib.sha1(call_id.encode("utf-8", "surrogatepass"),
                          usedforsecurity=False).hexdigest()[:10]
    return f"{re.sub(r'[^a-zA-Z0-9_-]', '_', call_id)[:80]}_{digest}"


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    """A str or OpenAI text parts as Anthropic text blocks (extra keys such as
    ``cache_control`` kept); empty texts left out (Anthropic refuses them)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [dict(part) for part in content if part.get("text")]


def _turns(request: Request) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """(system blocks, Anthropic messages, whether any tool block is in them)."""
    system: list[dict[str, Any]] = []
    turns: list[tuple[str, list[dict[str, Any]], Any]] = []  # role, blocks, original content
    tool_blocks = False
    for i, message in enumerate(request.messages):
        role = message["role"]
        content = message["content"]
        if role in _SYSTEM_ROLES:
            system.extend(_text_blocks(content))
            continue
        if role == "tool":
            inner: Any = content if isinstance(content, str) else _text_blocks(content)
            blocks = [{"type": "tool_result", "tool_use_id": _call_id(message["tool_call_id"]),
                       "content": inner}]
            role, content = "user", None  # a block, never a plain str turn
            tool_blocks = True
        else:
            blocks = _text_blocks(content)
            for j, call in enumerate(message.get("tool_calls") or ()):
                fn = call["function"]
                blocks.append({
                    "type": "tool_use", "id": _call_id(call["id"]), "name": fn["name"],
                    "input": parse_arguments(fn["arguments"],
                                             f"messages[{i}].tool_calls[{j}].function.arguments"),
                })
                tool_blocks = True
        if turns and turns[-1][0] == role:  # Anthropic alternates roles: merge into one turn
            turns[-1] = (role, turns[-1][1] + blocks, None)
        else:
            turns.append((role, blocks, content))
    if not turns:
        raise ValueError("messages need at least one user/assistant message for Anthropic")
    chat: list[dict[str, Any]] = []
    for k, (role, blocks, original) in enumerate(turns):
        if isinstance(original, str) and original and len(blocks) == 1:
            chat.append({"role": role, "content": original})  # a plain turn stays a str
        elif blocks:
            chat.append({"role": role, "content": blocks})
        elif role == "assistant" and k == len(turns) - 1:
            chat.append({"role": role, "content": ""})  # an empty prefill is allowed last
        else:
            raise ValueError(f"a {role} turn has no text for Anthropic (it refuses empty "
                             f"messages except a final assistant one)")
    return system, chat, tool_blocks


def _tools(tools: Any) -> list[dict[str, Any]]:
    out = []
    for tool in tools:
        fn = tool["function"]
        schema = dict(fn.get("parameters") or {"type": "object", "properties": {}})
        schema.setdefault("type", "object")
        spec: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            spec["description"] = fn["description"]
        spec["input_schema"] = schema
        if fn.get("strict") is not None:
            spec["strict"] = fn["strict"]
        out.append(spec)
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if isinstance(choice, dict):
        out: dict[str, Any] = {"type": "tool", "name": choice["function"]["name"]}
    elif choice in (None, "auto"):
        out = {"type": "auto"}
    else:
        out = {"type": {"required": "any", "none": "none"}[choice]}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # nothing to say: Anthropic's default is auto
    return out


def anthropic_body(request: Request, model: str) -> dict[str, Any]:
    """The Messages API body for ``request`` (see the module docstring)."""
    system, chat, tool_blocks = _turns(request)
    body: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens, "messages": chat}
    if system:
        plain = all(set(p) == {"type", "text"} for p in system)
        body["system"] = "\n".join(p["text"] for p in system) if plain else system
    extra = request.extra
    if not extra:
        if tool_blocks:
            _no_tools()
        return body
    for key, value in extra.items():
        if key in _TRANSLATED or key in _OPENAI_HINTS:
            continue
        if key in ANTHROPIC_ONLY or key in _SHARED:
            body[key] = value
        else:
            raise ValueError(
                f"{key}= is an OpenAI-only field with no Anthropic equivalent; it is not sent "
                f"to Anthropic (leave it out, or use only OpenAI providers for this request)")
    tools = extra.get("tools")
    if tools:
        body["tools"] = _tools(tools)
        choice = _tool_choice(extra.get("tool_choice"), extra.get("parallel_tool_calls"))
        if choice is not None:
            body["tool_choice"] = choice
    elif tool_blocks:
        _no_tools()
    _sampling(extra, body)
    _output_format(extra.get("response_format"), model, body)
    return body


def _no_tools() -> None:
    raise ValueError(
        "the messages hold tool calls or results but tools= is not given; Anthropic refuses "
        "such a request (\"Requests which include tool_use or tool_result blocks must define "
        "tools\"): pass the same tools= as when the calls were made")


def _sampling(extra: Mapping[str, Any], body: dict[str, Any]) -> None:
    temperature = extra.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a number, got {temperature!r}")
        if not 0 <= temperature <= 1:
            raise ValueError(f"temperature={temperature!r} is outside Anthropic's range 0 to 1 "
                             f"(OpenAI's goes to 2)")
        body["temperature"] = temperature
    stop = extra.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise ValueError(f"stop must be a str or a list of non-empty str, got {stop!r}")
        if "stop_sequences" in extra:
            raise ValueError("give stop= or stop_sequences=, not both")
        body["stop_sequences"] = stops
    n = extra.get("n")
    if n is not None and n != 1:
        raise ValueError(f"n={n!r}: Anthropic answers one choice per request (only n=1 is "
                         f"translated)")
    metadata = extra.get("metadata")
    user = extra.get("user")
    if isinstance(metadata, Mapping) and set(metadata) <= {"user_id"} and metadata:
        body["metadata"] = dict(metadata)  # Anthropic's own metadata
    if user is not None:
        if not isinstance(user, str):
            raise TypeError(f"user must be a str, got {user!r}")
        body["metadata"] = {**body.get("metadata", {}), "user_id": user}


def _output_format(fmt: Any, model: str, body: dict[str, Any]) -> None:
    if fmt is None or fmt.get("type") == "text":
        return
    if fmt.get("type") == "json_object":
        raise ValueError(
            "response_format={'type': 'json_object'} has no Anthropic equivalent: give a "
            "'json_schema' response_format (translated to Anthropic's structured output)")
    if _NO_STRUCTURED_OUTPUT.match(model.lower()):
        raise ValueError(
            f"response_format json_schema: the Anthropic model {model!r} predates structured "
            f"output (Claude Sonnet 4.5, Opus 4.1, Haiku 4.5 and later have it)")
    if "output_config" in body and "format" in body["output_config"]:
        raise ValueError("give response_format= or output_config.format, not both")
    schema = fmt["json_schema"].get("schema") or {"type": "object"}
    body["output_config"] = {**body.get("output_config", {}),
                             "format": {"type": "json_schema", "schema": schema}}
