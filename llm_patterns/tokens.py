"""Token estimates: one rule shared by the client limiter and the mock server, so they agree."""

from __future__ import annotations

import math

__all__ = ["CHARS_PER_TOKEN", "estimate_tokens"]

CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """About four characters a token (OpenAI's rule of thumb), rounded up; 0 for empty text."""
    if not isinstance(text, str):
        raise TypeError(f"estimate_tokens expects str, got {type(text).__name__}")
    return math.ceil(len(text) / CHARS_PER_TOKEN)
