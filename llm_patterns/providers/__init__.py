"""HTTP providers: the real OpenAI and Anthropic APIs over httpx, every failure mapped onto
``llm_patterns.errors`` with ``provider`` set, and the key kept out of every repr and message."""

from __future__ import annotations

from .anthropic import AnthropicProvider
from .openai import OpenAIProvider

__all__ = ["AnthropicProvider", "OpenAIProvider"]
