"""``OpenAIProvider``: the OpenAI Chat Completions API (and OpenAI-compatible servers) over httpx.

``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>``; ``base_url`` includes
``/v1``, as the official SDK takes it. The request's messages are already in this API's format.
``finish_reason == "content_filter"`` (or a ``refusal`` in place of content) raises
ContentFilterError: a refusal is never returned as an answer. Tool calls come back as
``LLMResponse.tool_calls`` (their JSON arguments parsed). A streamed request asks for the usage
(``stream_options.include_usage``); ``OpenAIStreamDecoder`` reads the chunks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import httpx

from .. import _validate
from .._secret import Secret
from ..clock import Clock
from ..errors import ContentFilterError, MalformedResponse
from ..request import Request
from ..response import ToolCall, Usage, normalize_finish_reason
from ..tools import parse_arguments
from ._base import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    Completion,
    HTTPProvider,
    require_int,
)
from ._sse import ServerEvent
from ._stream import ErrorEvent, StreamedCalls
from ._translate import check_openai_fields

__all__ = ["OpenAIProvider", "OpenAIStreamDecoder"]

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

    def encode(self, request: Request, *, stream: bool = False) -> dict[str, Any]:
        """The chat completions body: the messages as they are (a field only Anthropic takes
        is refused); a stream asks for the usage in its last chunk."""
        if request.extra:
            check_openai_fields(request)
        body = {"model": self.model, "messages": list(request.messages),
                self.max_tokens_param: request.max_tokens, **request.extra}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def stream_decoder(self, request: Request) -> OpenAIStreamDecoder:
        return OpenAIStreamDecoder(self.name, self.model)

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
        calls = message.get("tool_calls")
        tool_calls = _tool_calls(calls, bad) if calls else ()
        if content is None and calls:
            content = ""  # a tool-call turn: text may be empty
        if not isinstance(content, str):
            raise bad(f"choices[0].message.content must be a str, got {type(content).__name__}")
        usage = body.get("usage")
        if not isinstance(usage, dict):
            raise bad("no usage in the completion")
        require_int(usage, "prompt_tokens", "usage")
        require_int(usage, "completion_tokens", "usage")
        model = body.get("model")
        return Completion(content, model if isinstance(model, str) and model else self.model,
                          Usage.from_openai(usage), normalize_finish_reason(finish), tool_calls)


def _tool_calls(calls: Any, bad: Any) -> tuple[ToolCall, ...]:
    if not isinstance(calls, list):
        raise bad("message.tool_calls is not a list")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise bad(f"tool_calls[{j}] has no function")
        try:
            arguments = parse_arguments(fn.get("arguments"), f"tool_calls[{j}] arguments")
            out.append(ToolCall(cast(str, call.get("id")), cast(str, fn.get("name")), arguments))
        except (TypeError, ValueError) as exc:
            failed = str(exc)
        else:
            continue
        raise bad(failed)
    return tuple(out)


class OpenAIStreamDecoder:
    """``chat.completion.chunk`` events: text deltas of choice 0, tool-call pieces assembled by
    index, the finish reason, the usage chunk, ``[DONE]``; an error chunk raises ``ErrorEvent``."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.done = False
        self._text: list[str] = []
        self._refusal: list[str] = []
        self._calls = StreamedCalls()
        self._finish: str | None = None
        self._usage: Usage | None = None

    def event(self, event: ServerEvent) -> str | None:
        data = event.data
        if data == "[DONE]":
            self.done = True
            return None
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise TypeError(f"a chunk must be a JSON object, got {type(chunk).__name__}")
        error = chunk.get("error")
        if error:
            kind = error.get("type") or error.get("code") if isinstance(error, dict) else None
            raise ErrorEvent(data.encode(), str(kind or "server_error"))
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self.model = model
        usage = chunk.get("usage")
        if usage:
            self._usage = Usage.from_openai(usage)
        text = None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1: the first choice is the answer
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                text = content if isinstance(content, str) else str(content)
                self._text.append(text)
            refusal = delta.get("refusal")
            if refusal:
                self._refusal.append(refusal)
            for piece in delta.get("tool_calls") or ():
                fn = piece.get("function") or {}
                self._calls.add(piece.get("index", 0), ident=piece.get("id"),
                                name=fn.get("name"), arguments=fn.get("arguments"))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return text

    def usage_seen(self) -> Usage | None:
        return self._usage

    def tool_text(self) -> str:
        return self._calls.text()

    def finish(self) -> Completion:
        finish = self._finish
        if finish is None:
            raise ValueError("the stream ended without a finish_reason")
        if finish == "content_filter" or (self._refusal and not self._text):
            refusal = "".join(self._refusal)
            raise ContentFilterError(
                f"completion refused by the content filter (finish_reason={finish!r})"
                + (f": {refusal[:200]}" if refusal else ""),
                provider=self.provider, status_code=200, code="content_filter")
        return Completion("".join(self._text), self.model, self._usage,
                          normalize_finish_reason(finish), self._calls.calls())
