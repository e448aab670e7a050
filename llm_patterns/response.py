"""One answer format whichever provider answered: ``Usage``, ``LLMResponse``, ``Provider``.

``Usage`` follows OpenAI's convention: ``prompt_tokens`` INCLUDES ``cached_tokens`` (cache
reads) and ``cache_write_tokens`` (Anthropic's cache creation). Anthropic reports
``input_tokens`` WITHOUT the cache reads and writes, so ``Usage.from_anthropic`` adds them back;
mixing the two conventions up is the classic double-counting bug in cost code.

``finish_reason`` is one vocabulary for both APIs (``normalize_finish_reason``): ``"stop"``,
``"length"`` (truncated at ``max_tokens``), ``"tool_calls"``, ``"content_filter"``, else the
provider's raw value.

A reply's tool calls are ``ToolCall(id, name, arguments)`` whichever API made them
(``LLMResponse.tool_calls``); ``LLMResponse.message()`` is the assistant turn to append to the
conversation (OpenAI's chat format, which every provider here translates), and
``ToolCall.result(content)`` the ``tool`` turn answering a call.

``to_messages``, ``prompt_text`` and ``content_text`` live in ``llm_patterns.request`` (with the
``Request`` built from them) and are re-exported here for the callers that import them from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .request import Request, content_text, prompt_text, to_messages

if TYPE_CHECKING:
    from .providers import AsyncStream, Stream

__all__ = [
    "FINISH_REASONS",
    "LLMResponse",
    "Provider",
    "Sender",
    "StreamSender",
    "ToolCall",
    "Usage",
    "asend",
    "check_all",
    "content_text",
    "normalize_finish_reason",
    "prompt_text",
    "send",
    "to_messages",
]


def _count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _field(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return 0 if value is None else _count(key, value)


@dataclass(frozen=True, repr=False)
class Usage:
    """Token counts of one call, as billed.

    ``prompt_tokens`` includes ``cached_tokens`` (cache reads, billed at the cached price) and
    ``cache_write_tokens`` (Anthropic cache creation, billed at the cache-write price);
    ``cache_write_1h_tokens`` is the part of the writes made with a 1-hour TTL (billed at the
    1-hour price). ``completion_tokens`` includes ``reasoning_tokens`` (billed as output).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0

    def __post_init__(self) -> None:
        _count("prompt_tokens", self.prompt_tokens)
        _count("completion_tokens", self.completion_tokens)
        _count("cached_tokens", self.cached_tokens)
        _count("cache_write_tokens", self.cache_write_tokens)
        _count("cache_write_1h_tokens", self.cache_write_1h_tokens)
        _count("reasoning_tokens", self.reasoning_tokens)
        if self.cached_tokens + self.cache_write_tokens > self.prompt_tokens:
            raise ValueError(
                f"cached_tokens ({self.cached_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) cannot exceed prompt_tokens ({self.prompt_tokens}): "
                f"prompt_tokens includes the cache reads and writes"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) cannot exceed "
                f"cache_write_tokens ({self.cache_write_tokens}): they are part of them"
            )
        if self.reasoning_tokens > self.completion_tokens:
            raise ValueError(
                f"reasoning_tokens ({self.reasoning_tokens}) cannot exceed completion_tokens "
                f"({self.completion_tokens}): completion_tokens includes them"
            )

    def __repr__(self) -> str:
        # the three classic counts always; cache writes and reasoning only when there are any
        extra = "".join(f", {name}={getattr(self, name)}" for name in (
            "cache_write_tokens", "cache_write_1h_tokens", "reasoning_tokens")
            if getattr(self, name))
        return (f"Usage(prompt_tokens={self.prompt_tokens}, "
                f"completion_tokens={self.completion_tokens}, "
                f"cached_tokens={self.cached_tokens}{extra})")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def uncached_prompt_tokens(self) -> int:
        """Prompt tokens billed at the full input price: neither cache reads nor cache writes."""
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens

    @property
    def cache_write_5m_tokens(self) -> int:
        """Cache writes with the default 5-minute TTL."""
        return self.cache_write_tokens - self.cache_write_1h_tokens

    @classmethod
    def from_openai(cls, usage: Mapping[str, Any]) -> Usage:
        """From OpenAI's ``usage``: ``prompt_tokens``, ``completion_tokens``,
        ``prompt_tokens_details.cached_tokens``, ``completion_tokens_details.reasoning_tokens``
        (missing or null counts are 0)."""
        if not isinstance(usage, Mapping):
            raise TypeError(f"usage must be a mapping, got {type(usage).__name__}")
        return cls(
            prompt_tokens=_field(usage, "prompt_tokens"),
            completion_tokens=_field(usage, "completion_tokens"),
            cached_tokens=_field(_details(usage, "prompt_tokens_details"), "cached_tokens"),
            reasoning_tokens=_field(_details(usage, "completion_tokens_details"),
                                    "reasoning_tokens"),
        )

    @classmethod
    def from_anthropic(cls, usage: Mapping[str, Any]) -> Usage:
        """From Anthropic's ``usage``, whose ``input_tokens`` EXCLUDES cache reads and writes:
        prompt = input + cache_read + cache_creation, cached = cache_read, cache_write =
        cache_creation (its 1-hour part from ``cache_creation.ephemeral_1h_input_tokens``)."""
        if not isinstance(usage, Mapping):
            raise TypeError(f"usage must be a mapping, got {type(usage).__name__}")
        cache_read = _field(usage, "cache_read_input_tokens")
        cache_write = _field(usage, "cache_creation_input_tokens")
        split = _details(usage, "cache_creation")
        write_1h = _field(split, "ephemeral_1h_input_tokens")
        if split and not cache_write:  # only the split given: the total is its sum
            cache_write = write_1h + _field(split, "ephemeral_5m_input_tokens")
        return cls(
            prompt_tokens=_field(usage, "input_tokens") + cache_read + cache_write,
            completion_tokens=_field(usage, "output_tokens"),
            cached_tokens=cache_read,
            cache_write_tokens=cache_write,
            cache_write_1h_tokens=min(write_1h, cache_write),
        )

    @classmethod
    def parse(cls, usage: Usage | Mapping[str, Any]) -> Usage:
        """A ``Usage``, an OpenAI usage dict or an Anthropic usage dict, told apart by keys."""
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
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_write_1h_tokens + other.cache_write_1h_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def __radd__(self, other: object) -> Usage:
        if other == 0:  # so sum(usages) works
            return self
        return NotImplemented


def _details(usage: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    details = usage.get(key) or {}
    if not isinstance(details, Mapping):
        raise TypeError(f"{key} must be a mapping, got {type(details).__name__}")
    return details


FINISH_REASONS: Mapping[str, str] = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop",
    "length": "length", "max_tokens": "length",
    "tool_calls": "tool_calls", "function_call": "tool_calls", "tool_use": "tool_calls",
    "content_filter": "content_filter", "refusal": "content_filter",
}
"""OpenAI ``finish_reason`` and Anthropic ``stop_reason`` values onto one vocabulary."""


def normalize_finish_reason(raw: Any) -> str | None:
    """``"stop"``, ``"length"``, ``"tool_calls"``, ``"content_filter"``, else the raw value
    (e.g. Anthropic's ``pause_turn``); None when the provider gave none."""
    if not isinstance(raw, str) or not raw:
        return None
    return FINISH_REASONS.get(raw, raw)


@dataclass(frozen=True)
class ToolCall:
    """One tool call of a reply: the provider's call ``id``, the tool's ``name`` and the
    ``arguments`` the model gave, parsed from JSON (always a dict: both APIs send an object)."""

    id: str
    name: str
    arguments: Mapping[str, Any]

    def __post_init__(self) -> None:
        for key in ("id", "name"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value:
                raise TypeError(f"ToolCall.{key} must be a non-empty str, got {value!r}")
        if not isinstance(self.arguments, Mapping):
            raise TypeError(f"ToolCall.arguments must be a dict, got "
                            f"{type(self.arguments).__name__}")

    @property
    def arguments_json(self) -> str:
        """The arguments as the JSON text OpenAI's chat format carries them in."""
        return json.dumps(dict(self.arguments), ensure_ascii=False)

    def to_openai(self) -> dict[str, Any]:
        """This call as an entry of an assistant message's ``tool_calls`` (OpenAI's format)."""
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments_json}}

    def result(self, content: str) -> dict[str, Any]:
        """The ``tool`` message that answers this call with ``content``."""
        if not isinstance(content, str):
            raise TypeError(f"content must be a str (serialize the tool's result, e.g. with "
                            f"json.dumps), got {type(content).__name__}")
        return {"role": "tool", "tool_call_id": self.id, "content": content}


@dataclass
class LLMResponse:
    """A completion, the same shape whichever provider answered.

    ``raw`` is the provider's parsed JSON and ``headers`` the HTTP response headers (so a client
    can re-sync its rate limiter from ``x-ratelimit-*``); both are left out of the repr.
    ``finish_reason`` says why the answer ended (``"length"``: cut at ``max_tokens``;
    ``"tool_calls"``: the model asks for ``tool_calls``, and ``text`` may be empty).
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
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"text must be a str, got {type(self.text).__name__}")
        if not isinstance(self.usage, Usage):
            raise TypeError(
                f"usage must be a Usage (use Usage.parse for a dict), "
                f"got {type(self.usage).__name__}"
            )
        attempts = self.attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, got {self.attempts!r}")
        if not self.latency_s >= 0:
            raise ValueError(f"latency_s must be >= 0, got {self.latency_s!r}")
        if self.finish_reason is not None and not isinstance(self.finish_reason, str):
            raise TypeError(f"finish_reason must be a str or None, got {self.finish_reason!r}")
        if type(self.tool_calls) is not tuple:
            if not isinstance(self.tool_calls, (list, tuple)):
                raise TypeError(f"tool_calls must be a tuple of ToolCall, got "
                                f"{type(self.tool_calls).__name__}")
            self.tool_calls = tuple(self.tool_calls)
        for call in self.tool_calls:
            if not isinstance(call, ToolCall):
                raise TypeError(f"tool_calls must hold ToolCall objects, got "
                                f"{type(call).__name__}")

    def message(self) -> dict[str, Any]:
        """This reply as the assistant turn of a conversation (OpenAI's chat format, which every
        provider here accepts): append it, then one ``call.result(...)`` per tool call."""
        msg: dict[str, Any] = {"role": "assistant",
                               "content": self.text if self.text or not self.tool_calls else None}
        if self.tool_calls:
            msg["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return msg


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


@runtime_checkable
class Sender(Protocol):
    """A provider (or a layer wrapping one) that takes a built ``Request``: the HTTP providers,
    and every layer of the client. ``time_left`` caps the attempt in seconds (a retry deadline)."""

    name: str

    def send(self, request: Request, *, time_left: float | None = None) -> LLMResponse: ...

    async def asend(self, request: Request, *, time_left: float | None = None) -> LLMResponse: ...


@runtime_checkable
class StreamSender(Protocol):
    """A provider (or a layer wrapping one) that streams a built ``Request``: ``send_stream``
    returns a started ``Stream`` (read up to its first text delta; failures before that raised
    as themselves, so they can be retried), ``asend_stream`` an ``AsyncStream``."""

    name: str

    def send_stream(self, request: Request, *, time_left: float | None = None) -> Stream: ...

    async def asend_stream(self, request: Request, *,
                           time_left: float | None = None) -> AsyncStream: ...


def send(provider: Provider | Sender, request: Request, *,
         time_left: float | None = None) -> LLMResponse:
    """``provider.send(request)``, or for a provider with only ``complete()`` (a test double, a
    user's own class) ``provider.complete(**request.complete_kwargs())`` (which cannot honour
    ``time_left``)."""
    method = getattr(provider, "send", None)  # (a runtime Protocol check costs microseconds)
    if method is not None:
        return method(request, time_left=time_left)  # type: ignore[no-any-return]
    prompt = _lone_prompt(request)
    if prompt is not None:
        return provider.complete(prompt=prompt,  # type: ignore[union-attr]
                                 max_tokens=request.max_tokens)
    return provider.complete(**request.complete_kwargs())  # type: ignore[union-attr]


def _lone_prompt(request: Request) -> str | None:
    """The prompt of a request that is nothing but a prompt and ``max_tokens`` (what
    ``complete_kwargs`` would give, without building a dict to unpack: 0.5 us of the 0.7 a
    ``send`` to a plain provider took in benchmarks/overhead.py), else None."""
    if request.extra or request.timeout is not None:
        return None
    return request.prompt


def check_all(providers: Any, request: Request) -> None:
    """Raise the caller's ``ValueError``/``TypeError`` if any provider of a chain cannot take
    ``request`` (its ``check``: a field or a conversation its API cannot take), before anything
    is sent, with a note naming the provider. Providers without ``check`` are trusted."""
    if not request.extra and request.prompt is not None:
        return  # a lone prompt: every API takes it
    for provider in providers:
        check = getattr(provider, "check", None)
        if check is None:
            continue
        try:
            check(request)
        except (ValueError, TypeError) as error:
            error.add_note(f"(provider {getattr(provider, 'name', provider)!r} of the chain "
                           f"cannot take this request)")
            raise


async def asend(provider: Provider | Sender, request: Request, *,
                time_left: float | None = None) -> LLMResponse:
    """``send`` for async callers (``asend`` or ``acomplete``)."""
    method = getattr(provider, "asend", None)
    if method is not None:
        return await method(request, time_left=time_left)  # type: ignore[no-any-return]
    prompt = _lone_prompt(request)
    if prompt is not None:
        return await provider.acomplete(  # type: ignore[union-attr]
            prompt=prompt, max_tokens=request.max_tokens)
    return await provider.acomplete(**request.complete_kwargs())  # type: ignore[union-attr]
