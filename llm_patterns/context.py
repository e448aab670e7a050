"""Context windows: how many tokens a model takes, and a check before the call is sent.

A request whose prompt plus ``max_tokens`` does not fit the model's window is refused by the
provider with a 400 ``context_length_exceeded`` - after a network round trip, sometimes after a
retry, and on some gateways after billing. ``check_fits`` refuses it locally, before any money is
spent, with the numbers an operator needs; a fallback chain can then pick a larger-window model.

Where the limits come from, first match wins:

1. ``register_context_window(...)``: your own models, fine-tunes, gateways, corrections.
2. the ``genai-prices`` package (already a dependency, offline): its ``ModelInfo.context_window``
   is maintained with the prices and covers hundreds of models. It carries no output limit.
3. ``_DOCUMENTED``, the explicit table below: window and output cap from the providers' model
   pages, for the well-known models. It supplies ``max_output_tokens`` for (2) as well.

When (2) and (3) both know a model, the smaller window wins: a pre-flight check must never pass a
request the provider would refuse. (genai-prices 0.2.x rounds gpt-4.1's 1,047,576 down to
1,000,000 and has no window for gemini-2.5-pro.) For Gemini the documented numbers are an *input*
limit plus a separate output limit; treating them as one shared window is conservative.

Token counts are ``estimate_tokens`` of the prompt text (the message contents joined by "\\n"),
the same number the rate limiter and the mock server charge. ``check_fits`` uses an exact
tokenizer instead when ``tiktoken`` is installed, knows the (OpenAI) model and its BPE file is
already cached locally: tiktoken downloads that file on first use, with no timeout, so it is never
asked to load one that is not on disk.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ContextWindowExceeded
from .response import prompt_text as _response_prompt_text
from .tokens import estimate_tokens

__all__ = [
    "ContextLimits",
    "check_fits",
    "context_window",
    "count_prompt_tokens",
    "estimate_messages_tokens",
    "known_models",
    "prompt_text",
    "register_context_window",
]

logger = logging.getLogger("llm_patterns.context")


@dataclass(frozen=True)
class ContextLimits:
    """A model's limits in tokens: the whole window (prompt + output) and the output cap.

    ``max_output_tokens`` is None when no separate output cap is known. ``source`` says where the
    numbers came from ("override", "genai-prices", "table", "genai-prices+table") and takes no
    part in equality.
    """

    context_window: int
    max_output_tokens: int | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        _check_positive_int("context_window", self.context_window)
        if self.max_output_tokens is not None:
            _check_positive_int("max_output_tokens", self.max_output_tokens)
            if self.max_output_tokens > self.context_window:
                raise ValueError(
                    f"max_output_tokens={self.max_output_tokens} is larger than "
                    f"context_window={self.context_window}; expected max_output_tokens <= "
                    "context_window"
                )


# Documented limits (context window, max output tokens), checked 2025 against:
#  OpenAI    https://platform.openai.com/docs/models (gpt-4o, gpt-4o-mini, gpt-4.1*, o3, o4-mini,
#            gpt-5*: 400,000 window, 128,000 output)
#  Anthropic https://docs.anthropic.com/en/docs/about-claude/models/overview (200K window; output
#            64K Sonnet 4/4.5 and Haiku 4.5, 32K Opus 4/4.1, 8,192 Haiku 3.5)
#  Google    https://ai.google.dev/gemini-api/docs/models (input 1,048,576; output 65,536 for 2.5,
#            8,192 for 2.0 Flash)
_DOCUMENTED: dict[str, tuple[int, int]] = {
    "gpt-4o": (128_000, 16_384),
    "gpt-4o-mini": (128_000, 16_384),
    "gpt-4.1": (1_047_576, 32_768),
    "gpt-4.1-mini": (1_047_576, 32_768),
    "gpt-4.1-nano": (1_047_576, 32_768),
    "o3": (200_000, 100_000),
    "o4-mini": (200_000, 100_000),
    "gpt-5": (400_000, 128_000),
    "gpt-5-mini": (400_000, 128_000),
    "gpt-5-nano": (400_000, 128_000),
    "claude-sonnet-4-5": (200_000, 64_000),
    "claude-sonnet-4-0": (200_000, 64_000),
    "claude-sonnet-4": (200_000, 64_000),
    "claude-opus-4-1": (200_000, 32_000),
    "claude-opus-4-0": (200_000, 32_000),
    "claude-opus-4": (200_000, 32_000),
    "claude-haiku-4-5": (200_000, 64_000),
    "claude-3-5-haiku": (200_000, 8_192),
    "gemini-2.5-pro": (1_048_576, 65_536),
    "gemini-2.5-flash": (1_048_576, 65_536),
    "gemini-2.5-flash-lite": (1_048_576, 65_536),
    "gemini-2.0-flash": (1_048_576, 8_192),
}

_overrides: dict[str, ContextLimits] = {}
_lock = threading.Lock()

# Provider prefixes as LiteLLM, OpenRouter and the Gemini API write them ("openai/gpt-4o",
# "models/gemini-2.5-pro"); the prefix also tells genai-prices which provider to look in.
_PREFIX_PROVIDER = {
    "openai": "openai",
    "azure": "azure",
    "anthropic": "anthropic",
    "google": "google",
    "gemini": "google",
    "vertex_ai": "google",
    "vertex": "google",
    "models": "google",
}
_DATE_SUFFIX = re.compile(
    r"(?:[-@]\d{4}-?\d{2}-?\d{2}|-\d{2}-\d{2}|-\d{4}|-latest|-preview|-exp(?:erimental)?)$"
)


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _family(name: str) -> str | None:
    """The provider owning a bare model name: 'openai', 'anthropic', 'google' or None."""
    if name.startswith(("gpt-", "chatgpt-", "o1", "o3", "o4", "text-", "davinci", "babbage")):
        return "openai"
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith(("gemini", "gemma")):
        return "google"
    return None


def _candidates(model: str) -> tuple[list[str], str | None]:
    """Names to try, most specific first, and the provider the name points to (if any).

    "OpenAI/gpt-4o-2024-08-06" -> ["openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "gpt-4o"];
    "ft:gpt-4o-mini-2024-07-18:org::id" -> [..., "gpt-4o-mini"].
    """
    full = model.strip().lower()
    names = [full]
    provider = None
    base = full
    if "/" in base:
        prefix, _, rest = base.rpartition("/")
        provider = _PREFIX_PROVIDER.get(prefix.split("/")[-1])
        base = rest
        names.append(base)
    if base.startswith("ft:"):
        base = base[3:].split(":", 1)[0]
        names.append(base)
    while True:
        stripped = _DATE_SUFFIX.sub("", base)
        if stripped == base or not stripped:
            break
        base = stripped
        names.append(base)
    provider = provider or _family(base)
    return list(dict.fromkeys(names)), provider


@functools.lru_cache(maxsize=1024)
def _from_genai_prices(name: str, provider: str | None) -> tuple[str, int] | None:
    """(genai-prices model id, context window) or None; never raises."""
    try:
        from genai_prices import data_snapshot

        _, info = data_snapshot.get_snapshot().find_provider_model(name, None, provider, None)
    except Exception:
        return None
    window = getattr(info, "context_window", None)
    if isinstance(window, int) and not isinstance(window, bool) and window > 0:
        return str(info.id).lower(), window
    return None


# model -> its limits (None: unknown), resolved once; cleared whenever an override changes
_resolved: dict[str, ContextLimits | None] = {}


def cached_context_window(model: str) -> ContextLimits | None:
    """``context_window(model)`` resolved once per model (None when unknown): for hot paths."""
    try:
        return _resolved[model]
    except KeyError:
        pass
    try:
        limits: ContextLimits | None = context_window(model)
    except (KeyError, ValueError):
        limits = None
        _resolved[model] = None
    return limits


def context_window(model: str) -> ContextLimits:
    """The limits of ``model``; KeyError naming it (and close matches) when unknown.

    Tolerates case, provider prefixes ("openai/gpt-4o", "models/gemini-2.5-pro"), dated snapshots
    ("gpt-4o-2024-08-06", "claude-sonnet-4-5-20250929") and fine-tune names ("ft:gpt-4o-mini:...").
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty str, got {model!r}")
    limits = _resolved.get(model)
    if limits is None:
        limits = _lookup(model)
        if len(_resolved) >= 4096:
            _resolved.clear()
        _resolved[model] = limits
    return limits


def _lookup(model: str) -> ContextLimits:
    names, provider = _candidates(model)
    with _lock:
        for name in names:
            if name in _overrides:
                return _overrides[name]
    found = None
    for name in names:
        found = _from_genai_prices(name, provider)
        if found:
            break
    table = None
    for name in [*names, *([found[0]] if found else [])]:
        if name in _DOCUMENTED:
            table = _DOCUMENTED[name]
            break
    if found and table:
        window = min(found[1], table[0])
        if found[1] != table[0]:
            logger.debug(
                "%s: genai-prices says %d tokens, the table %d; using %d",
                model,
                found[1],
                table[0],
                window,
            )
        return ContextLimits(window, min(table[1], window), source="genai-prices+table")
    if found:
        return ContextLimits(found[1], None, source="genai-prices")
    if table:
        return ContextLimits(table[0], table[1], source="table")
    close = difflib.get_close_matches(names[-1], known_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(
        f"unknown model {model!r}: no context window known{hint} "
        f"(register it with register_context_window({model!r}, context_window, max_output_tokens))"
    )


def register_context_window(
    model: str, context_window: int, max_output_tokens: int | None = None
) -> ContextLimits:
    """Set (or correct) the limits of ``model``; they take precedence over every other source."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty str, got {model!r}")
    limits = ContextLimits(context_window, max_output_tokens, source="override")
    with _lock:
        _overrides[model.strip().lower()] = limits
        _resolved.clear()
    logger.info(
        "context window of %s set to %d tokens (max output %s)",
        model,
        context_window,
        max_output_tokens,
    )
    return limits


def _unregister(model: str) -> None:
    """Remove an override (for tests)."""
    with _lock:
        _overrides.pop(model.strip().lower(), None)
        _resolved.clear()


def known_models() -> list[str]:
    """Names with documented or registered limits (genai-prices knows many more)."""
    with _lock:
        names = set(_overrides)
    names.update(_DOCUMENTED)
    try:
        from genai_prices import data_snapshot

        for p in data_snapshot.get_snapshot().providers:
            if p.id in ("openai", "anthropic", "google"):
                names.update(str(m.id).lower() for m in p.models if m.context_window)
    except Exception as exc:
        logger.debug("genai-prices model list unavailable: %s", exc)
    return sorted(names)


# ---------------------------------------------------------------------------- token counting


def prompt_text(messages: str | Sequence[Mapping[str, Any]]) -> str:
    """The prompt as the limiter and the mock count it: the message contents joined by "\\n".

    A str is one user prompt. Otherwise this is ``llm_patterns.response.prompt_text``, the one
    definition everything shares: content is a str, None or a list of ``{"type": "text"}`` parts;
    any other part (image, audio, file) raises ValueError naming its type, never dropped.
    """
    if isinstance(messages, str):
        return messages
    return _response_prompt_text(messages)


def estimate_messages_tokens(messages: str | Sequence[Mapping[str, Any]]) -> int:
    """``estimate_tokens(prompt_text(messages))``: what the rate limiter and the mock charge."""
    return estimate_tokens(prompt_text(messages))


def _tiktoken_file_cached(tiktoken: Any, encoding: str) -> bool:
    """Whether ``tiktoken.get_encoding(encoding)`` can work without the network."""
    registry = getattr(tiktoken, "registry", None)
    if encoding in (getattr(registry, "ENCODINGS", None) or {}):
        return True  # already loaded in this process
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return False  # caching disabled: every load downloads
    url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
    return os.path.isfile(os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest()))


@functools.lru_cache(maxsize=64)
def exact_counter(model: str) -> Callable[[str], int] | None:
    """A tiktoken counter for an OpenAI model if one works offline, else None (silently)."""
    names, provider = _candidates(model)
    if provider not in ("openai", "azure"):
        return None  # tiktoken is only exact for OpenAI models
    try:
        import tiktoken

        encoding_name = None
        for name in names:
            try:
                encoding_name = tiktoken.encoding_name_for_model(name)
                break
            except KeyError:
                continue
        if encoding_name is None:
            return None
        encoding = _load_encoding(tiktoken, encoding_name)
    except Exception as exc:
        logger.debug("no exact tokenizer for %s (%s); using estimate_tokens", model, exc)
        return None
    if encoding is None:
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


_encodings: dict[str, Any] = {}


def _load_encoding(tiktoken: Any, name: str) -> Any:
    """The tiktoken encoding ``name`` if it loads from the local cache, else None; tried once."""
    with _lock:
        if name in _encodings:
            return _encodings[name]
    encoding = None
    if _tiktoken_file_cached(tiktoken, name):
        try:
            encoding = tiktoken.get_encoding(name)
            encoding.encode("probe")
        except Exception as exc:
            logger.debug(
                "tiktoken encoding %s failed to load (%s); using estimate_tokens", name, exc
            )
            encoding = None
    with _lock:
        _encodings[name] = encoding
    return encoding


def count_prompt_tokens(model: str, messages: str | Sequence[Mapping[str, Any]]) -> int:
    """Prompt tokens for ``model``: exact with an offline tiktoken, else ``estimate_tokens``.

    Per-message framing (a few tokens each in the chat format) is not counted.
    """
    text = prompt_text(messages)
    counter = exact_counter(model.strip().lower()) if isinstance(model, str) else None
    return counter(text) if counter is not None else estimate_tokens(text)


# ---------------------------------------------------------------------------- the check


def check_fits(
    model: str,
    messages: str | Sequence[Mapping[str, Any]],
    max_tokens: int,
    *,
    limits: ContextLimits | None = None,
    count_tokens: Callable[[str], int] | None = None,
    provider: str | None = None,
) -> int:
    """Raise ``ContextWindowExceeded`` before a request that cannot fit; else return its prompt
    tokens.

    It cannot fit when prompt + ``max_tokens`` > the context window, or ``max_tokens`` > the
    model's output cap. ``limits`` overrides the lookup (an unknown model otherwise raises
    KeyError); ``count_tokens(text)`` overrides the counter (default: exact when tiktoken works
    offline, else ``estimate_tokens``); ``provider`` is put on the error. The error also carries
    ``model``, ``prompt_tokens``, ``max_tokens`` and ``limit`` attributes.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if limits is None:
        limits = context_window(model)
    elif not isinstance(limits, ContextLimits):
        raise TypeError(f"limits must be a ContextLimits, got {type(limits).__name__}")
    if count_tokens is None:
        prompt_tokens = count_prompt_tokens(model, messages)
    else:
        prompt_tokens = count_tokens(prompt_text(messages))
    return check_counted(model, prompt_tokens, max_tokens, limits, provider=provider)


def count_text_tokens(model: str, text: str) -> int:
    """``count_prompt_tokens`` for a prompt already joined into one text."""
    counter = exact_counter(model.strip().lower())
    return counter(text) if counter is not None else estimate_tokens(text)


def check_counted(
    model: str, prompt_tokens: int, max_tokens: int, limits: ContextLimits,
    *, provider: str | None = None,
) -> int:
    """The check of ``check_fits`` on a prompt already counted and limits already resolved
    (what ``ResilientClient`` calls, so neither is done twice per request)."""
    window, cap = limits.context_window, limits.max_output_tokens
    if prompt_tokens + max_tokens <= window and (cap is None or max_tokens <= cap):
        return prompt_tokens
    problem = None
    if prompt_tokens + max_tokens > window:
        problem = (
            f"{model}: estimated prompt {prompt_tokens} tokens + max_tokens {max_tokens} "
            f"= {prompt_tokens + max_tokens} exceeds the context window of {window} tokens"
        )
        if cap is not None and max_tokens > cap:
            problem += f" (and max_tokens exceeds the output limit of {cap} tokens)"
    elif cap is not None and max_tokens > cap:
        problem = (
            f"{model}: max_tokens {max_tokens} exceeds the output limit of {cap} tokens "
            f"(estimated prompt {prompt_tokens} tokens, context window {window} tokens)"
        )
    if problem is None:
        return prompt_tokens
    logger.info("refused before sending: %s", problem)
    error = ContextWindowExceeded(problem, provider=provider)
    # the numbers, for a caller that handles it (the class has no fields of its own)
    vars(error).update(model=model, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                       limit=limits)
    raise error
