"""``OpenAIProvider``: the OpenAI Chat Completions API (and OpenAI-compatible servers) over httpx.

``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>``; ``base_url`` includes
``/v1``, as the official SDK takes it. ``finish_reason == "content_filter"`` (or a ``refusal``
in place of content) raises ContentFilterError: a refusal is never returned as an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ..clock import Clock
from ..errors import ContentFilterError, MalformedResponse
from ..response import Usage
from ._http import HTTPProvider, require_int, truncate

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

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = 30.0,
        default_headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        max_tokens_param: str = "max_tokens",
    ) -> None:
        if max_tokens_param not in _TOKEN_PARAMS:
            raise ValueError(
                f"max_tokens_param must be one of {_TOKEN_PARAMS}, got {max_tokens_param!r}"
            )
        self.max_tokens_param = max_tokens_param
        super().__init__(
            name, model, base_url=base_url, api_key=api_key, client=client,
            async_client=async_client, timeout=timeout, default_headers=default_headers,
            clock=clock,
        )

    def _request(
        self, messages: list[dict[str, Any]], max_tokens: int, kw: dict[str, Any]
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        other = next(p for p in _TOKEN_PARAMS if p != self.max_tokens_param)
        if other in kw:
            raise ValueError(
                f"{other} cannot be passed per call: pass max_tokens= (sent as "
                f"{self.max_tokens_param!r} by this provider)"
            )
        body = {"model": self.model, "messages": messages, self.max_tokens_param: max_tokens, **kw}
        headers = self._headers({"authorization": f"Bearer {self._api_key}"})
        return "/chat/completions", headers, body

    def _parse(self, body: dict[str, Any], response: httpx.Response) -> tuple[str, str, Usage]:
        def bad(what: str) -> MalformedResponse:
            hint = body.get("error")
            extra = f"; body has error {truncate(str(hint), 120)!r}" if hint else ""
            return MalformedResponse(f"{what}{extra}", provider=self.name,
                                     status_code=response.status_code)

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
            reason = f": {truncate(refusal)}" if isinstance(refusal, str) and refusal else ""
            raise ContentFilterError(
                f"completion refused by the content filter (finish_reason={finish!r}){reason}",
                provider=self.name, status_code=response.status_code,
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
        return content, model if isinstance(model, str) and model else self.model, Usage.from_openai(usage)
