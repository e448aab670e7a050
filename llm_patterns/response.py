"""One answer format whichever provider answered: ``Usage``, ``LLMResponse``, ``Provider``.

``Usage`` follows OpenAI's convention: ``prompt_tokens`` INCLUDES ``cached_tokens``. Anthropic
reports ``input_tokens`` WITHOUT the cache reads and cache writes, so ``Usage.from_anthropic``
adds them back; mixing the two conventions up is the classic double-counting bug in cost code.

``to_messages`` and ``prompt_text`` are the one place that turns a call's ``prompt``/``messages``
into chat messages and into the text that token estimates are taken from, so the client-side
rate limiter and the mock server count the same prompt the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["LLMResponse", "Provider", "Usage", "prompt_text", "to_messages"]


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _field(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return 0 if value is None else _count(key, value)


@dataclass(frozen=True)
class Usage:
    """Token counts of one call. ``prompt_tokens`` includes ``cached_tokens`` (OpenAI style)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def __post_init__(self) -> None:
        _count("prompt_tokens", self.prompt_tokens)
        _count("completion_tokens", self.completion_tokens)
        _count("cached_tokens", self.cached_tokens)
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError(
                f"cached_tokens ({self.cached_tokens}) cannot exceed prompt_tokens "
                f"({self.prompt_tokens}): prompt_tokens includes the cached tokens"
            )

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens billed at the full input price."""
        return self.prompt_tokens - self.cached_tokens

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any]) -> Usage:
        """From OpenAI's ``usage``: ``prompt_tokens``, ``completion_tokens``,
        ``prompt_tokens_details.cached_tokens`` (missing or null counts are 0)."""
        if not isinstance(usage, Mapping):
            raise TypeError(f"usage must be a mapping, got {type(usage).__name__}")
        details = usage.get("prompt_tokens_details") or {}
        if not isinstance(details, Mapping):
            raise TypeError(
                f"prompt_tokens_details must be a mapping, got {type(details).__name__}"
            )
        return cls(
            prompt_tokens=_field(usage, "prompt_tokens"),
            completion_tokens=_field(usage, "completion_tokens"),
            cached_tokens=_field(details, "cached_tokens"),
        )

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any]) -> Usage:
        """From Anthropic's ``usage``, whose ``input_tokens`` EXCLUDES cache reads and writes:
        prompt = input + cache_read + cache_creation, cached = cache_read."""
        if not isinstance(usage, Mapping):
            raise TypeError(f"usage must be a mapping, got {type(usage).__name__}")
        cache_read = _field(usage, "cache_read_input_tokens")
        cache_write = _field(usage, "cache_creation_input_tokens")
        return cls(
            prompt_tokens=_field(usage, "input_tokens") + cache_read + cache_write,
            completion_tokens=_field(usage, "output_tokens"),
            cached_tokens=cache_read,
        )

    @classmethod
    def parse(cls, usage: Usage | Mapping[str, Any]) -> Usage:
        """A ``Usage``, an OpenAI usage dict or an Anthropic usage dict, told apart by their keys."""
        if isinstance(usage, Usage):
            return usage
        if not isinstance(usage, Mapping):
            raise TypeError(
                f"usage must be a Usage or a usage dict, got {type(usage).__name__}"
            )
        if "input_tokens" in usage or "output_tokens" in usage:
            return cls.from_anthropic(usage)
        if "prompt_tokens" in usage or "completion_tokens" in usage:
            return cls.from_openai(usage)
        raise ValueError(
            f"usage has neither OpenAI keys (prompt_tokens, completion_tokens) nor Anthropic "
            f"keys (input_tokens, output_tokens): {sorted(usage)!r}"
        )

    def __add__(self, other: object) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )

    def __radd__(self, other: object) -> Usage:
        if other == 0:  # so sum(usages) works
            return self
        return NotImplemented


@dataclass
class LLMResponse:
    """A completion, the same shape whichever provider answered.

    ``raw`` is the provider's parsed JSON and ``headers`` the HTTP response headers (so a client
    can re-sync its rate limiter from ``x-ratelimit-*``); both are left out of the repr.
    """

    text: str
    model: str
    provider: str
    usage: Usage
    latency_s: float = 0.0
    attempts: int = 1
    fallback_used: bool = False
    raw: Any = field(default=None, repr=False)
    headers: Mapping[str, str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"text must be a str, got {type(self.text).__name__}")
        if not isinstance(self.usage, Usage):
            raise TypeError(
                f"usage must be a Usage (use Usage.parse for a dict), got {type(self.usage).__name__}"
            )
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int) or self.attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, got {self.attempts!r}")
        if not self.latency_s >= 0:
            raise ValueError(f"latency_s must be >= 0, got {self.latency_s!r}")


@runtime_checkable
class Provider(Protocol):
    """What the fallback chain and the resilient client need from a provider."""

    name: str
    model: str

    def complete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse: ...

    async def acomplete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse: ...


def to_messages(
    prompt: str | None = None, messages: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Chat messages from exactly one of ``prompt`` (one user message) or ``messages``.

    Each message needs a str ``role`` and a ``content``; the dicts are copied, not shared.
    """
    if (prompt is None) == (messages is None):
        raise ValueError(
            "give exactly one of prompt or messages, got "
            + ("both" if prompt is not None else "neither")
        )
    if prompt is not None:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        return [{"role": "user", "content": prompt}]
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(
            f"messages must be a list of message dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError("messages must not be empty")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ValueError(f"messages[{i}] needs a non-empty str 'role', got {role!r}")
        if "content" not in message:
            raise ValueError(f"messages[{i}] (role {role!r}) has no 'content'")
        out.append(dict(message))
    return out


def content_text(content: Any, where: str = "content") -> str:
    """The text of one message's content: a str, None (a tool-call turn: ""), or a list of
    ``{"type": "text", "text": ...}`` parts joined by newlines. Any other part is refused."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, Mapping)):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping):
                raise ValueError(  # noqa: TRY004 - a bad message shape is a bad value
                    f"{where}[{j}] must be a dict part, got {type(part).__name__}"
                )
            kind = part.get("type")
            if kind != "text":
                raise ValueError(
                    f"{where}[{j}] is a {kind!r} part; only 'text' parts can be counted as "
                    f"prompt text (refusing rather than silently dropping it)"
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise ValueError(  # noqa: TRY004 - a bad message shape is a bad value
                    f"{where}[{j}] text part needs a str 'text', got {text!r}"
                )
            texts.append(text)
        return "\n".join(texts)
    raise ValueError(
        f"{where} must be a str or a list of parts, got {type(content).__name__}"
    )


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt as one text: every message's content joined by newlines (text parts of a
    list content joined by newlines too). Token estimates (limiter, mock) are taken from this."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise TypeError(f"messages must be a list of message dicts, got {type(messages).__name__}")
    texts = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        if "content" not in message:
            raise ValueError(f"messages[{i}] has no 'content' (None is allowed for a tool-call turn)")
        texts.append(content_text(message["content"], f"messages[{i}].content"))
    return "\n".join(texts)
