"""Reading a chat request as each real API does: parse, validate, and keep what the mock needs.

A wrong translation (an OpenAI ``role: "tool"`` turn sent to Anthropic, a ``system`` message
inside Anthropic's ``messages``, a tool without ``input_schema``, an Anthropic-only field sent to
OpenAI) must fail in tests, not in production, so each API's rules are checked here and refused
with a ``BadRequest`` carrying that API's own words (the messages below are the ones the real
APIs send, as reported in public issue threads and the official SDKs' docs). Only rules the real
APIs enforce are checked: Anthropic merges consecutive same-role turns and accepts a final
assistant turn (prefill), so neither is refused here.

Pure functions, no state. ``parse_request`` never raises anything but ``BadRequest`` for any
byte string (deeply nested JSON included).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .apis import DEFAULT_MAX_TOKENS

__all__ = [
    "BadRequest",
    "CacheBreakpoint",
    "ChatRequest",
    "ToolSpec",
    "parse_body",
    "parse_request",
]

# Top-level fields each API accepts (from the official SDKs' create() parameters, plus the
# sampling parameters Anthropic has long accepted); anything else is refused by the real APIs.
OPENAI_FIELDS = frozenset({
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
    "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
    "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning_effort",
    "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
    "verbosity", "web_search_options",
})
ANTHROPIC_FIELDS = frozenset({
    "cache_control", "container", "context_management", "diagnostics", "inference_geo",
    "max_tokens", "mcp_servers", "messages", "metadata", "model", "output_config",
    "output_format", "service_tier", "speed", "stop_sequences", "stream", "system",
    "temperature", "thinking", "tool_choice", "tools", "top_k", "top_p", "user_profile_id",
    "workspace_id",
})
OPENAI_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
OPENAI_PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
ANTHROPIC_BLOCK_TYPES = (
    "text", "image", "document", "search_result", "thinking", "redacted_thinking", "tool_use",
    "tool_result", "server_tool_use", "web_search_tool_result", "container_upload",
)
ANTHROPIC_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
# Models that only take max_completion_tokens (OpenAI's reasoning models).
_OPENAI_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
_OPENAI_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent "
    "was not valid JSON. If you have trouble figuring out how to fix this, please contact us "
    "through our help center at help.openai.com.)"
)


class BadRequest(Exception):
    """The body is not a request this API accepts: answered 400 in the API's envelope."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class ToolSpec:
    """A tool the request offers: its name and the JSON schema of its arguments."""

    name: str
    schema: Any


@dataclass(frozen=True)
class CacheBreakpoint:
    """An Anthropic ``cache_control`` marker: the prompt prefix up to it (``chars`` of the
    prompt text, identified by ``key``) may be cached for ``ttl`` ("5m" or "1h")."""

    chars: int
    key: str
    ttl: str


@dataclass(slots=True)  # not frozen: built once per request, on the hot path (read-only)
class ChatRequest:
    """The parts of a chat request the mock needs to answer it."""

    model: str | None
    prompt: str  # tools, system, then every message's text, joined by "\n"
    last_message: str
    max_tokens: int
    stream: bool = False
    include_usage: bool = False  # OpenAI stream_options.include_usage
    tools: tuple[ToolSpec, ...] = ()
    tool_choice: str | None = None  # None / "auto", "none", "any", or a tool's name
    wants_tool: bool = False  # the model would answer with a tool call now
    breakpoints: tuple[CacheBreakpoint, ...] = field(default=(), repr=False)


def parse_request(api: str, content: bytes) -> ChatRequest:
    """Parse and validate a chat request of ``api``; raises ``BadRequest`` naming the problem."""
    try:
        body = json.loads(content.decode("utf-8")) if content else None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        deep = " (nested too deeply)" if isinstance(exc, RecursionError) else ""
        raise BadRequest(_OPENAI_BAD_JSON if api == "openai" else
                         f"The request body is not valid JSON{deep}.") from None
    if body is None and api == "openai":
        raise BadRequest(_OPENAI_BAD_JSON)
    return parse_body(api, body)


def parse_body(api: str, body: Any) -> ChatRequest:
    """``parse_request`` on a body already decoded from JSON (the in-process direct path)."""
    try:
        return _openai(body) if api == "openai" else _anthropic(body)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None


# ------------------------------------------------------------------------------------ helpers


def _kind(value: Any) -> str:
    """How OpenAI names a JSON value's type in its messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# ------------------------------------------------------------------------------------- OpenAI


def _oa_bad(message: str, param: str | None = None, code: str | None = None) -> BadRequest:
    return BadRequest(message, param, code)


def _oa_missing(param: str) -> BadRequest:
    return _oa_bad(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def _oa_type(param: str, expected: str, value: Any) -> BadRequest:
    return _oa_bad(f"Invalid type for '{param}': expected {expected}, but got "
                   f"{'an' if _kind(value)[0] in 'aeiou' else 'a'} {_kind(value)} instead.",
                   param, "invalid_type")


def _oa_value(param: str, value: Any, options: tuple[str, ...]) -> BadRequest:
    listed = ", ".join(f"'{o}'" for o in options[:-1]) + f", and '{options[-1]}'"
    return _oa_bad(f"Invalid value: '{value}'. Supported values are: {listed}.", param,
                   "invalid_value")


def _oa_content(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _oa_type(where, "one of a string or array of objects", content)
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise _oa_type(f"{where}[{j}]", "an object", part)
        kind = part.get("type")
        if kind not in OPENAI_PART_TYPES:
            if kind is None:
                raise _oa_missing(f"{where}[{j}].type")
            raise _oa_value(f"{where}[{j}].type", kind, OPENAI_PART_TYPES)
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if not isinstance(text, str):
                raise _oa_missing(f"{where}[{j}].{kind}") if text is None else \
                    _oa_type(f"{where}[{j}].{kind}", "a string", text)
            texts.append(text)
    return "\n".join(texts)


def _oa_tools(tools: Any) -> tuple[ToolSpec, ...]:
    if not isinstance(tools, list):
        raise _oa_type("tools", "an array", tools)
    if not tools:
        raise _oa_bad("Invalid 'tools': empty array. Expected an array with minimum length 1, "
                      "but got an empty array instead.", "tools", "empty_array")
    specs = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _oa_type(f"tools[{i}]", "an object", tool)
        kind = tool.get("type", "function")
        if kind not in ("function", "custom"):
            raise _oa_value(f"tools[{i}].type", kind, ("function", "custom"))
        fn = tool.get(kind)
        if fn is None:
            raise _oa_missing(f"tools[{i}].{kind}")
        if not isinstance(fn, dict):
            raise _oa_type(f"tools[{i}].{kind}", "an object", fn)
        name = fn.get("name")
        if name is None:
            raise _oa_missing(f"tools[{i}].{kind}.name")
        if not isinstance(name, str):
            raise _oa_type(f"tools[{i}].{kind}.name", "a string", name)
        specs.append(ToolSpec(name, fn.get("parameters") or {}))
    return tuple(specs)


def _oa_tool_choice(choice: Any, tools: tuple[ToolSpec, ...]) -> str | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise _oa_value("tool_choice", choice, ("none", "auto", "required"))
        if choice == "required" and not tools:
            raise _oa_bad("Invalid value for 'tool_choice': 'tool_choice' is only allowed when "
                          "'tools' are specified.", "tool_choice")
        return "any" if choice == "required" else choice
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if isinstance(name, str):
            return name
        raise _oa_missing("tool_choice.function.name")
    raise _oa_type("tool_choice", "one of a string or object", choice)


def _openai(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise _oa_bad(_OPENAI_BAD_JSON if not isinstance(body, (list, str, int, float)) else
                      f"Invalid request: the body must be a JSON object, got "
                      f"{'an' if _kind(body)[0] in 'aeiou' else 'a'} {_kind(body)}.")
    unknown = [k for k in body if k not in OPENAI_FIELDS]
    if unknown:
        raise _oa_bad(f"Unrecognized request argument supplied: {unknown[0]}")
    model = body.get("model")
    if model is None:
        raise _oa_bad("you must provide a model parameter")
    if not isinstance(model, str):
        raise _oa_type("model", "a string", model)
    messages = body.get("messages")
    if messages is None:
        raise _oa_missing("messages")
    if not isinstance(messages, list):
        raise _oa_type("messages", "an array", messages)
    if not messages:
        raise _oa_bad("Invalid 'messages': empty array. Expected an array with minimum length 1, "
                      "but got an empty array instead.", "messages", "empty_array")
    tools = _oa_tools(body["tools"]) if body.get("tools") is not None else ()
    choice = _oa_tool_choice(body.get("tool_choice"), tools)
    texts: list[str] = [_json_text([{"name": t.name, "parameters": t.schema} for t in tools])] \
        if tools else []
    pending: dict[str, int] = {}  # tool_call ids of the last assistant turn not yet answered
    last_role = ""
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _oa_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            raise _oa_missing(f"{where}.role")
        if role not in OPENAI_ROLES:
            raise _oa_value(f"{where}.role", role, OPENAI_ROLES)
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id is None:
                raise _oa_missing(f"{where}.tool_call_id")
            if call_id not in pending:
                raise _oa_bad("Invalid parameter: messages with role 'tool' must be a response to "
                              "a preceeding message with 'tool_calls'.", f"messages.[{i}].role")
            del pending[call_id]
        elif pending:
            raise _unanswered_openai(pending)
        if "content" not in message and role != "assistant":
            raise _oa_missing(f"{where}.content")
        texts.append(_oa_content(message.get("content"), f"{where}.content"))
        if role == "assistant" and message.get("tool_calls"):
            calls = message["tool_calls"]
            if not isinstance(calls, list):
                raise _oa_type(f"{where}.tool_calls", "an array", calls)
            for j, call in enumerate(calls):
                cwhere = f"{where}.tool_calls[{j}]"
                if not isinstance(call, dict):
                    raise _oa_type(cwhere, "an object", call)
                for key in ("id", "function"):
                    if key not in call:
                        raise _oa_missing(f"{cwhere}.{key}")
                fn = call["function"]
                if not isinstance(fn, dict) or "name" not in fn:
                    raise _oa_missing(f"{cwhere}.function.name")
                args = fn.get("arguments")
                if not isinstance(args, str):
                    raise _oa_type(f"{cwhere}.function.arguments", "a string", args)
                texts.append(f"{fn['name']}({args})")
                pending[str(call["id"])] = i
        last_role = role
    if pending:
        raise _unanswered_openai(pending)
    max_tokens = _oa_max_tokens(body, model)
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _oa_type("stream", "a boolean", stream)
    options = body.get("stream_options")
    if options is not None and not stream:
        raise _oa_bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                      "stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    wants = bool(tools) and choice != "none" and (
        choice not in (None, "auto") or last_role == "user")
    return ChatRequest(model, "\n".join(texts), texts[-1], max_tokens, stream, include_usage,
                       tools, choice, wants)


def _unanswered_openai(pending: dict[str, int]) -> BadRequest:
    at = next(iter(pending.values()))
    return _oa_bad("An assistant message with 'tool_calls' must be followed by tool messages "
                   "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                   f"response messages: {', '.join(pending)}", f"messages.[{at}].role")


def _oa_max_tokens(body: dict[str, Any], model: str) -> int:
    if body.get("max_tokens") is not None and _OPENAI_REASONING_MODEL.match(model):
        raise _oa_bad("Unsupported parameter: 'max_tokens' is not supported with this model. "
                      "Use 'max_completion_tokens' instead.", "max_tokens", "unsupported_parameter")
    param = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    value = body.get(param)
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int):
        raise _oa_type(param, "an integer", value)
    if value < 1:
        raise _oa_bad(f"Invalid '{param}': integer below minimum value. Expected a value >= 1, "
                      f"but got {value} instead.", param, "integer_below_min_value")
    return value


# ---------------------------------------------------------------------------------- Anthropic


def _an_bad(message: str, param: str | None = None) -> BadRequest:
    return BadRequest(message, param)


def _an_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _an_bad(f"{where}: Input should be a valid string", where)
    return value


def _cache_ttl(block: dict[str, Any], where: str) -> str | None:
    marker = block.get("cache_control")
    if marker is None:
        return None
    if not isinstance(marker, dict) or marker.get("type") != "ephemeral":
        raise _an_bad(f"{where}.cache_control: Input tag found using 'type' does not match any of "
                      "the expected tags: 'ephemeral'", f"{where}.cache_control")
    ttl = marker.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise _an_bad(f"{where}.cache_control.ttl: Input should be '5m' or '1h'",
                      f"{where}.cache_control.ttl")
    return str(ttl)


class _Prompt:
    """The prompt text as it is built, with the cache breakpoints met on the way (the blocks
    are hashed only when a breakpoint needs a key: most requests have none)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.chars = -1  # length of "\n".join(parts)
        self._raws: list[Any] = []
        self._hasher: Any = None
        self._hashed = 0
        self.breakpoints: list[CacheBreakpoint] = []

    def add(self, text: str, raw: Any, ttl: str | None) -> None:
        self.parts.append(text)
        self.chars += len(text) + 1
        self._raws.append(raw)
        if ttl is not None:
            if self._hasher is None:
                self._hasher = hashlib.sha1(usedforsecurity=False)
            for block in self._raws[self._hashed:]:
                self._hasher.update(_json_text(block).encode("utf-8", "surrogatepass") + b"\0")
            self._hashed = len(self._raws)
            self.breakpoints.append(CacheBreakpoint(self.chars, self._hasher.hexdigest(), ttl))


def _an_blocks(content: Any, where: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Each content block of a message (a string is one text block) with its text."""
    if isinstance(content, str):
        yield {"type": "text", "text": content}, content
        return
    if not isinstance(content, list):
        raise _an_bad(f"{where}: Input should be a valid list", where)
    for j, block in enumerate(content):
        bwhere = f"{where}.{j}"
        if not isinstance(block, dict):
            raise _an_bad(f"{bwhere}: Input should be a valid dictionary or object to extract "
                          "fields from", bwhere)
        kind = block.get("type")
        if kind not in ANTHROPIC_BLOCK_TYPES:
            tags = ", ".join(f"'{t}'" for t in ANTHROPIC_BLOCK_TYPES)
            raise _an_bad(f"{bwhere}: Input tag '{kind}' found using 'type' does not match any of "
                          f"the expected tags: {tags}", bwhere)
        if kind == "text":
            text = _an_text(block.get("text"), f"{bwhere}.text")
            if not text:
                raise _an_bad("messages: text content blocks must be non-empty", where)
            yield block, text
        elif kind == "tool_use":
            for key in ("id", "name", "input"):
                if key not in block:
                    raise _an_bad(f"{bwhere}.tool_use.{key}: Field required", f"{bwhere}.{key}")
            yield block, f"{block['name']}({_json_text(block['input'])})"
        elif kind == "tool_result":
            if "tool_use_id" not in block:
                raise _an_bad(f"{bwhere}.tool_result.tool_use_id: Field required",
                              f"{bwhere}.tool_use_id")
            inner = block.get("content", "")
            text = inner if isinstance(inner, str) else "\n".join(
                t for _, t in _an_blocks(inner, f"{bwhere}.content"))
            yield block, text
        else:
            yield block, ""


def _an_tools(tools: Any, prompt: _Prompt) -> tuple[ToolSpec, ...]:
    if not isinstance(tools, list):
        raise _an_bad("tools: Input should be a valid list", "tools")
    specs = []
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _an_bad(f"{where}: Input should be a valid dictionary or object to extract "
                          "fields from", where)
        kind = tool.get("type")
        if kind == "function" or "function" in tool:  # OpenAI's shape sent as it is
            raise _an_bad(f"{where}: Input tag 'function' found using 'type' does not match any "
                          "of the expected tags: 'custom', 'bash_20250124', "
                          "'text_editor_20250728', 'web_search_20250305', ...", where)
        if kind not in (None, "custom"):
            prompt.add(_json_text(tool), tool, _cache_ttl(tool, where))  # a server tool
            continue
        for key in ("name", "input_schema"):
            if key not in tool:
                raise _an_bad(f"{where}.custom.{key}: Field required", f"{where}.{key}")
        name = tool["name"]
        if not isinstance(name, str) or not ANTHROPIC_TOOL_NAME.match(name):
            raise _an_bad(f"{where}.custom.name: String should match pattern "
                          f"'{ANTHROPIC_TOOL_NAME.pattern}'", f"{where}.name")
        if not isinstance(tool["input_schema"], dict):
            raise _an_bad(f"{where}.custom.input_schema: Input should be a valid dictionary",
                          f"{where}.input_schema")
        specs.append(ToolSpec(name, tool["input_schema"]))
        prompt.add(_json_text({"name": name, "input_schema": tool["input_schema"]}), tool,
                   _cache_ttl(tool, where))
    return tuple(specs)


def _an_tool_choice(choice: Any) -> str | None:
    if choice is None:
        return None
    if not isinstance(choice, dict):
        raise _an_bad("tool_choice: Input should be a valid dictionary or object to extract "
                      "fields from", "tool_choice")
    kind = choice.get("type")
    if kind in ("auto", "any", "none"):
        return str(kind)
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise _an_bad("tool_choice.tool.name: Field required", "tool_choice.name")
        return name
    raise _an_bad(f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
                  "expected tags: 'auto', 'any', 'tool', 'none'", "tool_choice")


def _anthropic(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise _an_bad("Input should be a valid dictionary or object to extract fields from")
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise _an_bad(f"{key}: Field required", key)
    unknown = [k for k in body if k not in ANTHROPIC_FIELDS]
    if unknown:
        raise _an_bad(f"{unknown[0]}: Extra inputs are not permitted", unknown[0])
    model = _an_text(body["model"], "model")
    max_tokens = body["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _an_bad("max_tokens: Input should be a valid integer", "max_tokens")
    if max_tokens < 0:
        raise _an_bad("max_tokens: Input should be greater than or equal to 0", "max_tokens")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _an_bad("messages: Input should be a valid list", "messages")
    if not messages:
        raise _an_bad("messages: at least one message is required", "messages")
    prompt = _Prompt()
    tools = _an_tools(body["tools"], prompt) if body.get("tools") is not None else ()
    choice = _an_tool_choice(body.get("tool_choice"))
    system = body.get("system")
    if system is not None:
        for j, (block, text) in enumerate(_an_blocks(system, "system")):
            if block.get("type") != "text":
                raise _an_bad(f"system.{j}.type: Input should be 'text'", f"system.{j}.type")
            prompt.add(text, block, _cache_ttl(block, f"system.{j}"))
    last_text = ""
    last_role = ""
    last_has_result = False
    asked: list[str] = []  # tool_use ids of the previous assistant turn
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _an_bad(f"{where}: Input should be a valid dictionary or object to extract "
                          "fields from", where)
        role = message.get("role")
        if role == "system":
            raise _an_bad('messages: Unexpected role "system". The Messages API accepts a '
                          'top-level `system` parameter, not "system" as an input message role.',
                          f"{where}.role")
        if role not in ("user", "assistant"):
            raise _an_bad(f"{where}.role: Input should be 'user' or 'assistant'", f"{where}.role")
        if "content" not in message:
            raise _an_bad(f"{where}.content: Field required", f"{where}.content")
        content = message["content"]
        if (content == "" or content == []) and not (role == "assistant" and
                                                      i == len(messages) - 1):
            raise _an_bad(f"messages.{i}: all messages must have non-empty content except for "
                          "the optional final assistant message", where)
        if type(content) is str:  # the common case, without the block machinery
            if asked:
                raise _unanswered_anthropic(i - 1, asked)
            prompt.add(content, content, None)
            last_text = content or last_text
            last_role, last_has_result = role, False
            continue
        uses: list[str] = []
        results: list[str] = []
        texts: list[str] = []
        for j, (block, text) in enumerate(_an_blocks(content, f"{where}.content")):
            kind = block["type"]
            if kind == "tool_use":
                uses.append(str(block["id"]))
            elif kind == "tool_result":
                results.append(str(block["tool_use_id"]))
            texts.append(text)
            prompt.add(text, block, _cache_ttl(block, f"{where}.content.{j}"))
        if role == "user":
            stray = [r for r in results if r not in asked]
            if stray:
                raise _an_bad(f"{where}.content.0: unexpected `tool_use_id` found in "
                              f"`tool_result` blocks: {stray[0]}. Each `tool_result` block must "
                              "have a corresponding `tool_use` block in the previous message.",
                              where)
        if asked and role == "user":
            missing = [a for a in asked if a not in results]
            if missing:
                raise _unanswered_anthropic(i - 1, missing)
        elif asked:
            raise _unanswered_anthropic(i - 1, asked)
        asked = uses if role == "assistant" else []
        last_text = "\n".join(t for t in texts if t) or last_text
        last_role, last_has_result = role, bool(results)
    if asked:
        raise _unanswered_anthropic(len(messages) - 1, asked)
    if not tools and _has_tool_blocks(messages):
        raise _an_bad("Requests which include `tool_use` or `tool_result` blocks must define "
                      "tools.")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _an_bad("stream: Input should be a valid boolean", "stream")
    wants = bool(tools) and choice != "none" and (
        choice not in (None, "auto") or (last_role == "user" and not last_has_result))
    return ChatRequest(model, "\n".join(prompt.parts), last_text, max_tokens, stream, False,
                       tools, choice, wants, tuple(prompt.breakpoints))


def _has_tool_blocks(messages: list[Any]) -> bool:
    return any(isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result")
               for message in messages if isinstance(message.get("content"), list)
               for block in message["content"])


def _unanswered_anthropic(index: int, ids: list[str]) -> BadRequest:
    return _an_bad(f"messages.{index + 1}: `tool_use` ids were found without `tool_result` "
                   f"blocks immediately after: {', '.join(ids)}. Each `tool_use` block must have "
                   "a corresponding `tool_result` block in the next message.",
                   f"messages.{index + 1}")
