"""``AnthropicProvider``: the Anthropic Messages API over httpx.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``;
``base_url`` has no ``/v1``, as the official SDK takes it. The request's system messages (role
``system`` or OpenAI's ``developer``) move to the top-level ``system`` field, so one request works
for both providers. ``stop_reason == "refusal"`` raises ContentFilterError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from .._secret import Secret
from ..clock import Clock
from ..errors import ContentFilterError, MalformedResponse
from ..request import Request
from ..response import Usage, normalize_finish_reason
from ._base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    Completion,
    HTTPProvider,
    require_int,
)

__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider"]

ANTHROPIC_VERSION = "2023-06-01"
_SYSTEM_ROLES = ("system", "developer")


class AnthropicProvider(HTTPProvider):
    """Anthropic messages. ``api_key=None`` reads ``ANTHROPIC_API_KEY``.

    ``default_headers`` may override ``anthropic-version`` or add ``anthropic-beta``.
    """

    api = "anthropic"
    env_var = "ANTHROPIC_API_KEY"
    default_base_url = "https://api.anthropic.com"
    path = "/v1/messages"

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str = "https://api.anthropic.com",
        api_key: str | Secret | None = None,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        default_headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if default_headers is not None and not isinstance(default_headers, Mapping):
            raise TypeError(
                f"default_headers must be a mapping, got {type(default_headers).__name__}")
        headers = {"anthropic-version": ANTHROPIC_VERSION, **(default_headers or {})}
        super().__init__(
            name, model, base_url=base_url, api_key=api_key, client=client,
            async_client=async_client, timeout=timeout, default_headers=headers, clock=clock,
            max_response_bytes=max_response_bytes,
        )

    def _auth(self, key: str) -> dict[str, str]:
        return {"x-api-key": key}

    def encode(self, request: Request) -> dict[str, Any]:
        """The messages body: system messages joined into ``system`` (kept as blocks when a
        part carries more than its text, e.g. ``cache_control``)."""
        system_parts: list[dict[str, Any]] = []
        chat = []
        for i, message in enumerate(request.messages):
            role = message["role"]
            content = message["content"]
            if role in _SYSTEM_ROLES:
                if isinstance(content, str):
                    system_parts.append({"type": "text", "text": content})
                else:  # text parts (checked by Request), kept whole: cache_control survives
                    system_parts.extend(dict(p) for p in content)
            elif role == "tool" or message.get("tool_calls") or content is None:
                raise ValueError(
                    f"messages[{i}] is a tool-call turn (role {role!r}); tool conversations are "
                    f"not translated for Anthropic yet")
            else:
                chat.append(message)
        if not chat:
            raise ValueError("messages need at least one user/assistant message for Anthropic")
        body: dict[str, Any] = {"model": self.model, "max_tokens": request.max_tokens,
                                "messages": chat}
        if system_parts:
            plain = all(set(p) == {"type", "text"} for p in system_parts)
            body["system"] = (
                "\n".join(p["text"] for p in system_parts) if plain else system_parts)
        body.update(request.extra)
        return body

    def decode(self, body: dict[str, Any], status: int = 200) -> Completion:
        def bad(what: str) -> MalformedResponse:
            hint = body.get("error")
            extra = f"; body has error {str(hint)[:120]!r}" if hint else ""
            return MalformedResponse(f"{what}{extra}", provider=self.name, status_code=status)

        if body.get("type") == "error":
            raise bad("a 2xx answer carrying an error")
        if body.get("stop_reason") == "refusal":
            raise ContentFilterError(
                "completion refused (stop_reason='refusal')",
                provider=self.name, status_code=status, code="refusal",
            )
        content = body.get("content")
        if not isinstance(content, list):
            raise bad("no content list in the message")
        texts = []
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                raise bad(f"content[{j}] is not an object")
            if block.get("type") == "text":
                if not isinstance(block.get("text"), str):
                    raise bad(f"content[{j}] text block has no str text")
                texts.append(block["text"])
        usage = body.get("usage")
        if not isinstance(usage, dict):
            raise bad("no usage in the message")
        require_int(usage, "input_tokens", "usage")
        require_int(usage, "output_tokens", "usage")
        model = body.get("model")
        return Completion("".join(texts), model if isinstance(model, str) and model else self.model,
                          Usage.from_anthropic(usage),
                          normalize_finish_reason(body.get("stop_reason")))
