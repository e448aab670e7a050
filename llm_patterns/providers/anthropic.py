"""``AnthropicProvider``: the Anthropic Messages API over httpx.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``;
``base_url`` has no ``/v1``, as the official SDK takes it. Chat messages with role ``system``
(or OpenAI's ``developer``) move to the top-level ``system`` field, so one message list works
for both providers. ``stop_reason == "refusal"`` raises ContentFilterError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ..clock import Clock
from ..errors import ContentFilterError, MalformedResponse
from ..response import Usage, content_text
from ._http import HTTPProvider, require_int, truncate

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

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str = "https://api.anthropic.com",
        api_key: str | None = None,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = 30.0,
        default_headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        headers.update({str(k).lower(): v for k, v in (default_headers or {}).items()})
        super().__init__(
            name, model, base_url=base_url, api_key=api_key, client=client,
            async_client=async_client, timeout=timeout, default_headers=headers, clock=clock,
        )

    def _request(
        self, messages: list[dict[str, Any]], max_tokens: int, kw: dict[str, Any]
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        system_parts: list[dict[str, Any]] = []
        chat = []
        for i, message in enumerate(messages):
            if message["role"] in _SYSTEM_ROLES:
                content = message["content"]
                if isinstance(content, str):
                    system_parts.append({"type": "text", "text": content})
                else:  # validated text parts, kept whole (cache_control survives)
                    content_text(content, f"messages[{i}].content")
                    system_parts.extend(dict(p) for p in content)
            else:
                chat.append(message)
        if not chat:
            raise ValueError("messages need at least one user/assistant message for Anthropic")
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "messages": chat}
        if system_parts:
            if "system" in kw:
                raise ValueError("give the system prompt either as a system message or as system=, not both")
            plain = all(set(p) == {"type", "text"} for p in system_parts)
            body["system"] = (
                "\n".join(p["text"] for p in system_parts) if plain else system_parts
            )
        body.update(kw)
        headers = self._headers({"x-api-key": self._api_key})
        return "/v1/messages", headers, body

    def _parse(self, body: dict[str, Any], response: httpx.Response) -> tuple[str, str, Usage]:
        def bad(what: str) -> MalformedResponse:
            hint = body.get("error")
            extra = f"; body has error {truncate(str(hint), 120)!r}" if hint else ""
            return MalformedResponse(f"{what}{extra}", provider=self.name,
                                     status_code=response.status_code)

        if body.get("type") == "error":
            raise bad("a 2xx answer carrying an error")
        if body.get("stop_reason") == "refusal":
            raise ContentFilterError(
                "completion refused (stop_reason='refusal')",
                provider=self.name, status_code=response.status_code,
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
        return "".join(texts), model if isinstance(model, str) and model else self.model, Usage.from_anthropic(usage)
