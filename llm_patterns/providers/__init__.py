"""HTTP providers: the real OpenAI and Anthropic APIs over httpx, every failure mapped onto
``llm_patterns.errors`` with ``provider`` set, and the key kept out of every repr, message,
traceback and log line.

Each provider has the SPEC's ``complete(prompt=None, *, messages=None, max_tokens=256, **kw)`` /
``acomplete``, and ``send(request, *, time_left=None)`` / ``asend`` taking a built
``llm_patterns.Request`` (the client's layers build the request once and pass it down).
"""

from __future__ import annotations

from ._base import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, Completion, HTTPProvider
from .anthropic import AnthropicProvider
from .openai import OpenAIProvider

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "AnthropicProvider",
    "Completion",
    "HTTPProvider",
    "OpenAIProvider",
]
