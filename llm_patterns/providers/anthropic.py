"""``AnthropicProvider``: the Anthropic Messages API over httpx.

``POST {base_url}/v1/messages`` with ``x-api-key`` and ``anthropic-version: 2023-06-01``;
``base_url`` has no ``/v1``, as the official SDK takes it. The request, written in OpenAI's chat
format, is translated (``_translate.anthropic_body``: system top-level, tool calls and results as
blocks, tools and tool choice, structured output, the other fields), so one request works for
both providers. ``stop_reason == "refusal"`` raises ContentFilterError. ``tool_use`` blocks come
back as ``LLMResponse.tool_calls``; ``AnthropicStreamDecoder`` reads the stream's events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import httpx

from .._secret import Secret
from ..clock import Clock
from ..errors import ContentFilterError, MalformedResponse
from ..request import Request
from ..response import ToolCall, Usage, normalize_finish_reason
from ._base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    Completion,
    HTTPProvider,
    require_int,
)
from ._sse import ServerEvent
from ._stream import ErrorEvent, StreamedCalls
from ._translate import anthropic_body

__all__ = ["ANTHROPIC_VERSION", "AnthropicProvider", "AnthropicStreamDecoder"]

ANTHROPIC_VERSION = "2023-06-01"


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

    def encode(self, request: Request, *, stream: bool = False) -> dict[str, Any]:
        """The Messages API body: the request translated from OpenAI's format (see
        ``_translate``); ``ValueError`` for what Anthropic cannot take."""
        body = anthropic_body(request, self.model)
        if stream:
            body["stream"] = True
        return body

    def stream_decoder(self, request: Request) -> AnthropicStreamDecoder:
        return AnthropicStreamDecoder(self.name, self.model)

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
        calls = []
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                raise bad(f"content[{j}] is not an object")
            kind = block.get("type")
            if kind == "text":
                if not isinstance(block.get("text"), str):
                    raise bad(f"content[{j}] text block has no str text")
                texts.append(block["text"])
            elif kind == "tool_use":
                if not isinstance(block.get("input"), dict):
                    raise bad(f"content[{j}] tool_use block has no input object")
                try:
                    calls.append(ToolCall(cast(str, block.get("id")), cast(str, block.get("name")),
                                          block["input"]))
                except TypeError as exc:
                    failed = str(exc)
                else:
                    continue
                raise bad(failed)
        usage = body.get("usage")
        if not isinstance(usage, dict):
            raise bad("no usage in the message")
        require_int(usage, "input_tokens", "usage")
        require_int(usage, "output_tokens", "usage")
        model = body.get("model")
        return Completion("".join(texts), model if isinstance(model, str) and model else self.model,
                          Usage.from_anthropic(usage),
                          normalize_finish_reason(body.get("stop_reason")), tuple(calls))


class AnthropicStreamDecoder:
    """The Messages stream: ``message_start`` (model, input usage), ``content_block_start`` /
    ``_delta`` / ``_stop`` (text, and tool input JSON assembled per block), ``message_delta``
    (stop reason, cumulative usage), ``message_stop``; ``ping`` and unknown events skipped (as
    the SDK does); ``event: error`` raises ``ErrorEvent``."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.done = False
        self._text: list[str] = []
        self._calls = StreamedCalls()  # by content block index
        self._usage: dict[str, Any] = {}
        self._stop: str | None = None

    def event(self, event: ServerEvent) -> str | None:
        data = json.loads(event.data)
        if not isinstance(data, dict):
            raise TypeError(f"an event must be a JSON object, got {type(data).__name__}")
        kind = data.get("type") or event.event
        if kind == "content_block_delta":
            delta = data["delta"]
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta["text"]
                if not isinstance(text, str):
                    raise TypeError("text_delta without a str text")
                if text:
                    self._text.append(text)
                    return text
            elif dtype == "input_json_delta":
                index = data["index"]
                if index not in self._calls:
                    raise KeyError(f"input_json_delta for block {index}, not a tool_use block")
                self._calls.add(index, arguments=delta.get("partial_json"))
            return None  # thinking, signatures, citations: not text
        if kind == "content_block_start":
            block = data["content_block"]
            if block.get("type") == "tool_use":
                self._calls.add(data["index"], ident=block.get("id"), name=block.get("name"))
            elif block.get("type") == "text" and block.get("text"):
                self._text.append(block["text"])
                return str(block["text"])
        elif kind == "message_start":
            message = data["message"]
            model = message.get("model")
            if isinstance(model, str) and model:
                self.model = model
            self._usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            stop = (data.get("delta") or {}).get("stop_reason")
            if stop:
                self._stop = stop
            usage = data.get("usage") or {}  # cumulative: overrides what came before
            self._usage.update({k: v for k, v in usage.items() if v is not None})
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = data.get("error")
            raise ErrorEvent(event.data.encode(),
                             str(error.get("type") if isinstance(error, dict) else "api_error"))
        return None

    def usage_seen(self) -> Usage | None:
        return Usage.from_anthropic(self._usage) if self._usage else None

    def tool_text(self) -> str:
        return self._calls.text()

    def finish(self) -> Completion:
        if self._stop is None:
            raise ValueError("the stream ended without a stop_reason")
        if self._stop == "refusal":
            raise ContentFilterError("completion refused (stop_reason='refusal')",
                                     provider=self.provider, status_code=200, code="refusal")
        return Completion("".join(self._text), self.model, self.usage_seen(),
                          normalize_finish_reason(self._stop), self._calls.calls())
