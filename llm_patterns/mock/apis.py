"""The two APIs the mock speaks: their names, paths, base URLs and default models.

A leaf module (no imports from the rest of the mock), so the server, the direct provider and
the HTTP front end can all share these constants without importing one another.
"""

from __future__ import annotations

__all__ = [
    "ANTHROPIC_PATH",
    "APIS",
    "BASE_URLS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MODELS",
    "OPENAI_PATH",
    "api_for_path",
]

APIS = ("openai", "anthropic")
OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"
# OpenAI's base URL includes /v1 (as the official SDK takes it), Anthropic's does not.
BASE_URLS = {"openai": "http://mock.llm/v1", "anthropic": "http://mock.llm"}
DEFAULT_MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest"}

# Charged when an OpenAI request names no max_tokens: the library's providers default to 256,
# so the client limiter and the mock agree. (Anthropic requires max_tokens.)
DEFAULT_MAX_TOKENS = 256


def api_for_path(path: str) -> str | None:
    """"openai" for the chat-completions path, "anthropic" for the messages path, else None."""
    path = path.rstrip("/")
    if path == OPENAI_PATH:
        return "openai"
    if path == ANTHROPIC_PATH:
        return "anthropic"
    return None
