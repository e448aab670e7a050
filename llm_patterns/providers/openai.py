"""``OpenAIProvider``: the OpenAI Chat Completions API (and OpenAI-compatible servers) over httpx.

``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>``; ``base_url`` includes
``/v1``, as the official SDK takes it. The request's messages are already in this API's format.
``finish_reason == "content_filter"`` (or a ``refusal`` in place of content) raises
ContentFilterError: a refusal is never returned as an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from .. import _validate
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

__all__ = ["OpenAIProvider"]

_TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")


class OpenAIProvider(HTTPProvider):
    """OpenAI chat completions. ``api_key=None`` reads ``OPENAI_API_KEY``.

    ``max_tokens_param="max_completion_tokens"`` sends the limit under that name, which the
    reasoning models (o-series, gpt-5) require; the default is the classic ``max_tokens``.
    """

    api = "openai"
    env_var = "OPENAI_API_KEY"
    default_base_url = "https://api.openai.com/v1"
    path = "/chat/completions"

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | Secret | None = None,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        default_headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_tokens_param: str = "max_tokens",
    ) -> None:
        self.max_tokens_param = _validate.choice("max_tokens_param", max_tokens_param,
                                                 _TOKEN_PARAMS)
        super().__init__(
            name, model, base_url=base_url, api_key=api_key, client=client,
            async_client=async_client, timeout=timeout, default_headers=default_headers,
            clock=clock, max_response_bytes=max_response_bytes,
        )

    def _auth(self, key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"}

    def encode(self, request: Request) -> dict[str, Any]:
        """The chat completions body: the messages as they are."""
        return {"model": self.model, "messages": list(request.messages),
                self.max_tokens_param: request.max_tokens, **request.extra}

    def decode(self, body: dict[str, Any], status: int = 200) -> Completion:
        def bad(what: str) -> MalformedResponse:
            hint = body.get("error")
            extra = f"; body has error {str(hint)[:120]!r}" if hint else ""
            return MalformedResponse(f"{what}{extra}", provider=self.name, status_code=status)

        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad("no choices in the completion")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise bad("choices[0] has no message")
        finish = choice.get("finish_reason")
        content = message.get("content")
        refusal = message.get("refusal")
        if finish == "content_filter" or (content is None and isinstance(refusal, str) and refusal):
            reason = f": {refusal[:200]}" if isinstance(refusal, str) and refusal else ""
            raise ContentFilterError(
                f"completion refused by the content filter (finish_reason={finish!r}){reason}",
                provider=self.name, status_code=status, code="content_filter",
            )
        if content is None and message.get("tool_calls"):
            content = ""  # a tool-call turn: the calls are in .raw
        if not isinstance(content, str):
            raise bad(f"choices[0].message.content must be a str, got {type(content).__name__}")
        usage = body.get("usage")
        if not isinstance(usage, dict):
            raise bad("no usage in the completion")
        require_int(usage, "prompt_tokens", "usage")
        require_int(usage, "completion_tokens", "usage")
        model = body.get("model")
        return Completion(content, model if isinstance(model, str) and model else self.model,
                          Usage.from_openai(usage), normalize_finish_reason(finish))
