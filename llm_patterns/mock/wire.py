"""What the mock reads and writes on the wire: request parsing and OpenAI / Anthropic body shapes.

Pure functions, no state: the server (server.py) decides *what* to answer, this module knows
*how* each API spells it. Shapes follow the public API references of both providers, so the
official SDKs and our own providers parse the mock's answers as they parse the real ones.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from ..tokens import CHARS_PER_TOKEN

__all__ = [
    "ANTHROPIC_PATH",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODELS",
    "OPENAI_PATH",
    "BadRequest",
    "ChatRequest",
    "api_for_path",
    "completion_text",
    "dumps",
    "error_body",
    "parse_body",
    "parse_request",
    "success_body",
]

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"

# Charged when an OpenAI request names no max_tokens: the library's providers default to 256,
# so the client limiter and the mock agree. (Anthropic requires max_tokens.)
DEFAULT_MAX_TOKENS = 256

DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}

# error "type" per status, for bodies that are not one of the named faults
_OPENAI_TYPES = {403: "permission_error", 409: "conflict_error", 429: "requests"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}

_TEMPLATES = ("Summary: {}", "In short: {}", "Key point: {}", "Answer: {}")


class BadRequest(Exception):
    """The request body is not a chat request this API accepts (answered 400, never a crash)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat request the mock needs."""

    model: str | None
    prompt: str  # every message content (Anthropic: the system prompt first), joined by "\n"
    last_message: str
    max_tokens: int


def api_for_path(path: str) -> str | None:
    """"openai" for the chat-completions path, "anthropic" for the messages path, else None."""
    path = path.rstrip("/")
    if path == OPENAI_PATH:
        return "openai"
    if path == ANTHROPIC_PATH:
        return "anthropic"
    return None


def _text(content: Any, where: str) -> str:
    """A message content as text: a string, null, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text", "")
                if not isinstance(text, str):
                    raise BadRequest(f"{where}[{i}].text must be a string", f"{where}[{i}].text")
                parts.append(text)
            else:
                raise BadRequest(f"{where}[{i}] must be an object", f"{where}[{i}]")
        return "\n".join(parts)
    raise BadRequest(f"{where} must be a string or a list of content parts", where)


def parse_request(api: str, content: bytes) -> ChatRequest:
    """Parse a chat request of ``api``; raises ``BadRequest`` naming what is wrong."""
    try:
        body = json.loads(content.decode("utf-8")) if content else None
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the request body is not valid JSON") from None
    return parse_body(api, body)


def parse_body(api: str, body: Any) -> ChatRequest:
    """``parse_request`` on a body already decoded from JSON (the in-process direct path)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    if body.get("stream"):
        raise BadRequest("the mock does not stream: send 'stream': false", "stream")
    texts: list[str] = []
    if api == "anthropic":
        system = body.get("system")
        if system is not None:
            system_text = _text(system, "system")
            if system_text:
                texts.append(system_text)
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"messages[{i}] must be an object", f"messages[{i}]")
        texts.append(_text(message.get("content"), f"messages[{i}].content"))
    if api == "anthropic":
        if "max_tokens" not in body:
            raise BadRequest("max_tokens: Field required", "max_tokens")
        max_tokens = body["max_tokens"]
    else:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"max_tokens must be an integer >= 1, got {max_tokens!r}", "max_tokens")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest(f"model must be a string, got {model!r}", "model")
    return ChatRequest(model, "\n".join(texts), texts[-1], max_tokens)


def completion_text(seed: int, request: ChatRequest) -> tuple[str, bool]:
    """A deterministic answer for (seed, prompt), cut to fit ``max_tokens``; (text, truncated)."""
    pick = random.Random(f"{seed}|{request.prompt}")
    n = pick.randint(6, 12)
    words = request.last_message.split(maxsplit=n)[:n]  # the first n words (no full split)
    text = pick.choice(_TEMPLATES).format(" ".join(words) or "(empty prompt)")
    limit = request.max_tokens * CHARS_PER_TOKEN  # so that estimate_tokens(text) <= max_tokens
    if len(text) > limit:
        return text[:limit], True
    return text, False


def success_body(
    api: str,
    *,
    ident: str,
    created: int,
    model: str,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    truncated: bool,
) -> dict[str, Any]:
    """A completed chat answer in ``api``'s shape."""
    if api == "anthropic":
        return {
            "id": f"msg_{ident}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "max_tokens" if truncated else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": prompt_tokens,
                "output_tokens": completion_tokens,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }
    return {
        "id": f"chatcmpl-{ident}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if truncated else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "system_fingerprint": "fp_mock",
    }


def error_body(
    api: str,
    status: int,
    message: str,
    *,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """An error answer in ``api``'s envelope; ``type`` defaults from the status."""
    if api == "anthropic":
        kind = type or _ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        return {"type": "error", "error": {"type": kind, "message": message}}
    kind = type or _OPENAI_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def dumps(body: Any) -> bytes:
    """JSON bytes, byte-identical for equal bodies (insertion-ordered keys)."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8")
