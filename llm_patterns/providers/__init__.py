"""HTTP providers: the real OpenAI and Anthropic APIs over httpx, every failure mapped onto
``llm_patterns.errors`` with ``provider`` set, and the key kept out of every repr, message,
traceback and log line.

Each provider has the SPEC's ``complete(prompt=None, *, messages=None, max_tokens=256, **kw)`` /
``acomplete``, and ``send(request, *, time_left=None)`` / ``asend`` taking a built
``llm_patterns.Request`` (the client's layers build the request once and pass it down);
``stream`` / ``astream`` and ``send_stream`` / ``asend_stream`` for streamed answers (``Stream``,
``AsyncStream``: text deltas, then ``.response``).
"""

from __future__ import annotations

from ._base import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, Completion, HTTPProvider
from ._sse import ServerEvent, SSEDecoder
from ._stream import AsyncOpening, AsyncStream, Stream, StreamEnd
from .anthropic import AnthropicProvider, AnthropicStreamDecoder
from .openai import OpenAIProvider, OpenAIStreamDecoder

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "AnthropicProvider",
    "AnthropicStreamDecoder",
    "AsyncOpening",
    "AsyncStream",
    "Completion",
    "HTTPProvider",
    "OpenAIProvider",
    "OpenAIStreamDecoder",
    "SSEDecoder",
    "ServerEvent",
    "Stream",
    "StreamEnd",
]
