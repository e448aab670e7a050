"""``Request``: one LLM call's arguments, normalised and validated once.

A call arrives as ``prompt=`` or ``messages=``, ``max_tokens=`` and extra fields; every layer
(fallback, limiter, budget, provider) used to re-read and re-check them. ``Request(...)`` (or
``Request.build(...)``, the same thing) does it once, before anything is sent, and raises the
caller's mistakes as themselves: ``TypeError`` for a wrong type, ``ValueError`` for a wrong
value (no prompt, ``max_tokens=0``, an image part the library cannot count), each naming the
argument. Every layer after that reads the same immutable value; providers translate it into
their wire format (``OpenAIProvider``: as is; ``AnthropicProvider``: translated, see
``providers/_translate.py``).

The messages are in OpenAI's chat format: ``{"role": ..., "content": ...}`` with ``content`` a
str, a list of ``{"type": "text", "text": ...}`` parts (``cache_control`` and other keys kept),
or None in an assistant turn that only calls tools (``tool_calls``), answered by ``tool``
messages. ``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format`` are in
OpenAI's format and checked here (``llm_patterns.tools``); the estimate counts the tools'
schemas and the calls' arguments, as the model reads them. ``system=`` is folded into a leading
system message, so both providers see the same request. ``stream`` is not a field: ``stream()``
asks for a stream (and for its usage).

``to_messages``, ``prompt_text`` and ``content_text`` are the functions the request is built
from, kept public for the callers that only need one step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NoReturn

import httpx

from .tokens import estimate_tokens
from .tools import (
    check_response_format,
    check_tool_choice,
    check_tool_turns,
    check_tools,
    tool_text,
)

__all__ = ["ROLES", "Request", "content_text", "prompt_text", "to_messages"]

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
"""The chat roles a message may have (OpenAI's; ``developer`` is OpenAI's newer ``system``)."""

# Keys that are not request fields: fixed per provider, or labels for the cost tracker.
_NOT_FIELDS = {
    "model": "the model is fixed per provider (make another provider for another model)",
    "stream": "complete() returns the whole answer; call stream() / astream() for a stream",
    "stream_options": "stream() sets it (usage is always asked for)",
    "max_completion_tokens": "pass max_tokens= (each provider sends it under its own name)",
    "dag_id": "labels go to the cost tracker, not into the request",
    "task_id": "labels go to the cost tracker, not into the request",
    "run_id": "labels go to the cost tracker, not into the request",
}
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Request:
    """One call's normalised arguments: ``messages``, ``max_tokens``, ``extra`` fields and an
    optional per-call ``timeout``; plus ``text`` (the prompt as one text) and ``input_tokens``
    (``estimate_tokens(text)``), what limiters and budgets charge.

    Immutable. ``prompt`` is kept when the call was made with one, so a provider that only has
    ``complete()`` can be called exactly as the caller called (``complete_kwargs()``).
    """

    __slots__ = ("extra", "input_tokens", "max_tokens", "messages", "prompt", "text", "timeout")

    messages: tuple[dict[str, Any], ...]
    max_tokens: int
    extra: Mapping[str, Any]
    timeout: float | httpx.Timeout | None
    prompt: str | None
    text: str
    input_tokens: int

    def __init__(
        self,
        prompt: str | None = None,
        *,
        messages: Sequence[Mapping[str, Any]] | None = None,
        max_tokens: int = 256,
        timeout: float | httpx.Timeout | None = None,
        **extra: Any,
    ) -> None:
        if type(max_tokens) is not int or max_tokens < 1:
            _bad_max_tokens(max_tokens)
        if messages is None and type(prompt) is str:  # the common case: one prompt
            msgs: tuple[dict[str, Any], ...] = ({"role": "user", "content": prompt},)
            text = prompt
        else:
            msgs = tuple(to_messages(prompt, messages))
            check_tool_turns(msgs)
            text = prompt_text(msgs)
            prompt = None
        if extra:
            folded = "system" in extra
            msgs, extra = _fields(msgs, extra)
            if folded:  # the system prompt is now the first message, and part of the text
                text = prompt_text(msgs)
                prompt = None
            extra_view: Mapping[str, Any] = MappingProxyType(extra)
        else:
            extra_view = _EMPTY
        tools = extra_view.get("tools")
        if tools is not None or (prompt is None and any("tool_calls" in m for m in msgs)):
            # the model reads the tools' schemas and the calls' arguments too: count them
            text = tool_text(msgs, tools, [content_text(m["content"]) for m in msgs])
        # the slots' own setters (``__setattr__`` refuses): 0.3 us of the 1.1 a Request took
        # in benchmarks/overhead.py through object.__setattr__
        _SET_MESSAGES(self, msgs)
        _SET_MAX_TOKENS(self, max_tokens)
        _SET_EXTRA(self, extra_view)
        _SET_TIMEOUT(self, None if timeout is None else _check_timeout(timeout))
        _SET_PROMPT(self, prompt)
        _SET_TEXT(self, text)
        _SET_INPUT_TOKENS(self, estimate_tokens(text))

    @classmethod
    def build(
        cls,
        prompt: str | None = None,
        messages: Sequence[Mapping[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> Request:
        """``Request(prompt, messages=messages, max_tokens=max_tokens, **kw)``."""
        return cls(prompt, messages=messages, max_tokens=max_tokens, **kw)

    def replace(self, **changes: Any) -> Request:
        """A new request with some arguments changed (validated again), e.g. ``max_tokens=``."""
        args: dict[str, Any] = {"max_tokens": self.max_tokens, "timeout": self.timeout,
                                **self.extra}
        if self.prompt is not None:
            args["prompt"] = self.prompt
        else:
            args["messages"] = self.messages
        if "messages" in changes:
            args.pop("prompt", None)
        if "prompt" in changes:
            args.pop("messages", None)
        args.update(changes)
        return Request(**args)

    def complete_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``provider.complete(**kwargs)`` that make this request: the
        original ``prompt`` (or the messages), ``max_tokens``, the extra fields, ``timeout``
        when one was given."""
        kwargs: dict[str, Any] = (
            {"prompt": self.prompt} if self.prompt is not None
            else {"messages": [dict(m) for m in self.messages]})
        kwargs["max_tokens"] = self.max_tokens
        kwargs.update(self.extra)
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs

    @property
    def estimated_tokens(self) -> int:
        """``input_tokens + max_tokens``: what a TPM limiter charges at arrival (OpenAI's rule)."""
        return self.input_tokens + self.max_tokens

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"Request is immutable; use request.replace({name}=...)")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Request is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (self.messages, self.max_tokens, dict(self.extra), self.timeout) == (
            other.messages, other.max_tokens, dict(other.extra), other.timeout)

    __hash__ = None  # type: ignore[assignment]  # holds dicts

    def __repr__(self) -> str:
        # never the prompt itself: a repr ends up in tracebacks and logs
        n = len(self.messages)
        extra = f", extra={sorted(self.extra)}" if self.extra else ""
        timeout = f", timeout={self.timeout!r}" if self.timeout is not None else ""
        return (f"Request({n} message{'s' if n != 1 else ''}, ~{self.input_tokens} input tokens, "
                f"max_tokens={self.max_tokens}{extra}{timeout})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.complete_kwargs(),))


# the slots' own setters: a Request is built through them (its __setattr__ refuses)
_SET_MESSAGES: Callable[[Request, Any], None] = vars(Request)["messages"].__set__
_SET_MAX_TOKENS: Callable[[Request, Any], None] = vars(Request)["max_tokens"].__set__
_SET_EXTRA: Callable[[Request, Any], None] = vars(Request)["extra"].__set__
_SET_TIMEOUT: Callable[[Request, Any], None] = vars(Request)["timeout"].__set__
_SET_PROMPT: Callable[[Request, Any], None] = vars(Request)["prompt"].__set__
_SET_TEXT: Callable[[Request, Any], None] = vars(Request)["text"].__set__
_SET_INPUT_TOKENS: Callable[[Request, Any], None] = vars(Request)["input_tokens"].__set__


def _rebuild(kwargs: dict[str, Any]) -> Request:
    return Request(**kwargs)


def _bad_max_tokens(value: Any) -> NoReturn:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"max_tokens must be an int, got {value!r}")
    raise ValueError(f"max_tokens must be an int >= 1, got {value!r}")


def _check_timeout(value: Any) -> float | httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"timeout must be a number of seconds or an httpx.Timeout, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _fields(
    msgs: tuple[dict[str, Any], ...], extra: dict[str, Any]
) -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """Check the extra fields; fold ``system=`` into a leading system message."""
    for key in extra:
        why = _NOT_FIELDS.get(key)
        if why is not None:
            raise ValueError(f"{key}= is not a request field: {why}")
    if "system" in extra:
        extra = dict(extra)
        system = extra.pop("system")
        if any(m["role"] in ("system", "developer") for m in msgs):
            raise ValueError(
                "give the system prompt either as a system message or as system=, not both")
        content_text(system, "system")
        msgs = ({"role": "system", "content": system}, *msgs)
    for key, value in extra.items():
        if value.__class__ not in _SCALARS and not _jsonable(value):
            raise TypeError(f"{key}= must be JSON-serializable, got {value!r}")
    _check_tool_fields(extra)
    return msgs, extra


def _check_tool_fields(extra: Mapping[str, Any]) -> None:
    """``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format``, in OpenAI's
    format (see ``llm_patterns.tools``): checked here, translated by each provider."""
    names = check_tools(extra["tools"]) if extra.get("tools") is not None else None
    if "tools" in extra and extra["tools"] is None:
        raise ValueError("tools=None: leave tools= out for no tools")
    if extra.get("tool_choice") is not None:
        check_tool_choice(extra["tool_choice"], names)
    parallel = extra.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise TypeError(f"parallel_tool_calls must be True or False, got {parallel!r}")
    if extra.get("response_format") is not None:
        check_response_format(extra["response_format"])


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def to_messages(
    prompt: str | None = None, messages: Sequence[Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Chat messages from exactly one of ``prompt`` (one user message) or ``messages``.

    Each message needs a known ``role`` (``ROLES``) and a ``content`` that is a str, a list of
    text parts, or None (an assistant turn calling tools); the dicts are copied, not shared.
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
        if role not in ROLES:
            raise ValueError(
                f"messages[{i}] has role {role!r}; expected one of {sorted(ROLES)}")
        if "content" not in message:
            raise ValueError(f"messages[{i}] (role {role!r}) has no 'content'")
        content = message["content"]
        if content is None and role != "assistant":
            raise ValueError(
                f"messages[{i}] (role {role!r}) has content None; only an assistant turn that "
                f"calls tools may have no content")
        content_text(content, f"messages[{i}].content")
        out.append(dict(message))
    return out


def content_text(content: Any, where: str = "content") -> str:
    """The text of one message's content: a str, None (a tool-call turn: ""), or a list of
    ``{"type": "text", "text": ...}`` parts joined by newlines. Any other part is refused with
    a ``ValueError`` (the library cannot count its tokens, and will not silently drop it)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, Mapping)):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping):
                raise TypeError(f"{where}[{j}] must be a dict part, got {type(part).__name__}")
            kind = part.get("type")
            if kind != "text":
                raise ValueError(
                    f"{where}[{j}] is a {kind!r} part: unsupported content part; only 'text' "
                    f"parts are supported (refusing rather than silently dropping it)"
                )
            if "text" not in part:
                raise ValueError(f"{where}[{j}] is a text part without 'text'")
            text = part["text"]
            if not isinstance(text, str):
                raise TypeError(f"{where}[{j}] text part needs a str 'text', got {text!r}")
            texts.append(text)
        return "\n".join(texts)
    raise TypeError(f"{where} must be a str or a list of parts, got {type(content).__name__}")


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
            raise ValueError(
                f"messages[{i}] has no 'content' (None is allowed for a tool-call turn)")
        texts.append(content_text(message["content"], f"messages[{i}].content"))
    return "\n".join(texts)
