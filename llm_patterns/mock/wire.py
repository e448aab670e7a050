"""How each API spells an answer: completion bodies, usage, error envelopes, ids.

Pure functions, no state: the server (server.py) decides *what* to answer, this module knows
*how* each API writes it. The shapes are those of the official SDKs' response types
(``openai.types.chat.ChatCompletion`` / ``CompletionUsage``, ``anthropic.types.Message`` /
``Usage`` with ``cache_creation``), so the SDKs and our providers parse the mock's answers as
they parse the real ones.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from typing import Any

from .replies import FINISH, Reply

__all__ = [
    "Usage",
    "dumps",
    "error_body",
    "message_id",
    "request_id",
    "success_body",
    "usage_body",
]

# base64url digits that are not base58 ("0OIl-_+/") replaced by ones that are
_TO_B58 = bytes.maketrans(b"0OIl-_", b"abcdef")

# error "type" per status, for bodies that are not one of the named faults
_OPENAI_TYPES = {403: "permission_error", 409: "conflict_error", 429: "requests"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    402: "billing_error", 403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    504: "timeout_error", 529: "overloaded_error"}


@dataclass(slots=True)  # not frozen: built once per request, on the hot path (read-only)
class Usage:
    """Tokens as billed. ``input_tokens`` is every prompt token (cache reads and writes
    included); each API's body spells it its own way (Anthropic's ``input_tokens`` leaves the
    cached parts out, OpenAI's ``prompt_tokens`` keeps them in)."""

    input_tokens: int
    output_tokens: int
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0

    @property
    def uncached_input(self) -> int:
        return self.input_tokens - self.cache_read - self.cache_write_5m - self.cache_write_1h


def request_id(api: str, rng: random.Random) -> str:
    """``x-request-id`` (OpenAI: ``req_`` + 32 hex) / ``request-id`` (Anthropic: ``req_011C``
    + 20 base58 characters), from the server's seeded id generator."""
    if api == "anthropic":
        raw = base64.urlsafe_b64encode(rng.getrandbits(120).to_bytes(15, "big"))
        return "req_011C" + raw.translate(_TO_B58).decode("ascii")
    return f"req_{rng.getrandbits(128):032x}"


def message_id(api: str, request_ident: str) -> str:
    """The completion's id, derived from its request id (so no extra randomness is drawn)."""
    tail = request_ident[4:]
    return f"msg_{tail}" if api == "anthropic" else f"chatcmpl-{tail[:29]}"


def usage_body(api: str, usage: Usage) -> dict[str, Any]:
    """The ``usage`` object of ``api``."""
    if api == "anthropic":
        return {
            "input_tokens": usage.uncached_input,
            "cache_creation_input_tokens": usage.cache_write_5m + usage.cache_write_1h,
            "cache_read_input_tokens": usage.cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_write_5m,
                               "ephemeral_1h_input_tokens": usage.cache_write_1h},
            "output_tokens": usage.output_tokens,
            "service_tier": "standard",
        }
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def openai_tool_calls(reply: Reply) -> list[dict[str, Any]]:
    return [{"id": f"call_{c.id}", "type": "function",
             "function": {"name": c.name, "arguments": c.arguments_json}}
            for c in reply.tool_calls]


def anthropic_content(reply: Reply) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    blocks.extend({"type": "tool_use", "id": f"toolu_{c.id}", "name": c.name,
                   "input": c.arguments} for c in reply.tool_calls)
    return blocks


def success_body(api: str, *, ident: str, created: int, model: str, reply: Reply,
                 usage: Usage) -> dict[str, Any]:
    """A completed chat answer in ``api``'s shape."""
    finish = FINISH[api][reply.finish]
    if api == "anthropic":
        return {
            "id": message_id(api, ident),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": anthropic_content(reply),
            "stop_reason": finish,
            "stop_sequence": None,
            "usage": usage_body(api, usage),
        }
    message: dict[str, Any] = {"role": "assistant",
                               "content": reply.text if reply.text or not reply.tool_calls
                               else None,
                               "refusal": None, "annotations": []}
    if reply.tool_calls:
        message["tool_calls"] = openai_tool_calls(reply)
    return {
        "id": message_id(api, ident),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage_body(api, usage),
        "service_tier": "default",
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
    request_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An error answer in ``api``'s envelope; ``type`` defaults from the status. Anthropic's
    carries the request id in the body too (``request_id``), as the real API does."""
    if api == "anthropic":
        kind = type or _ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        error: dict[str, Any] = {"type": kind, "message": message}
        if details is not None:
            error["details"] = details
        body: dict[str, Any] = {"type": "error", "error": error}
        if request_id is not None:
            body["request_id"] = request_id
        return body
    kind = type or _OPENAI_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def dumps(body: Any) -> bytes:
    """JSON bytes, byte-identical for equal bodies (insertion-ordered keys)."""
    return json.dumps(body, ensure_ascii=False).encode("utf-8")
