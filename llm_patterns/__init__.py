"""llm_patterns: the five patterns that keep a pipeline alive when it calls LLM APIs.

1. ``RateLimiter`` / ``TokenBucket`` (rate_limit.py): stay under RPM and TPM, wait or push back.
2. ``BackoffPolicy`` / ``RetryPolicy`` (backoff.py, retry.py): retry what is retryable, with jitter.
3. ``PriceTable`` / ``CostTracker`` / ``SQLiteLedger`` (pricing.py, cost.py, ledger.py):
   know the bill.
4. ``FallbackChain`` and the providers (fallback.py, providers/): one answer format, many providers.
5. ``CircuitBreaker`` (circuit_breaker.py): stop calling a provider that is down.

``ResilientClient`` (client.py) puts them together; ``MockLLMServer`` (mock/) misbehaves on demand.
Time and randomness are injected everywhere (clock.py): tests and notebooks run on a VirtualClock.

Names are imported lazily, so ``import llm_patterns`` stays cheap.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

from . import _aliases

# A library logs; the application decides where logs go (no output unless it configures logging).
logging.getLogger("llm_patterns").addHandler(logging.NullHandler())
_aliases.install()  # the course modules' old names (llm_patterns.grading, ...) keep working

try:  # one version, the installed distribution's (pyproject.toml), never a copy to keep in step
    __version__ = _metadata.version("llm-patterns")
except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

_EXPORTS: dict[str, str] = {
    # time, randomness, events
    "Clock": "clock", "SystemClock": "clock", "VirtualClock": "clock", "ScaledClock": "clock",
    "Event": "events", "Observable": "events",
    "estimate_tokens": "tokens",
    # errors
    "LLMError": "errors", "RateLimitError": "errors", "QuotaExceededError": "errors",
    "ServerError": "errors", "ProviderTimeout": "errors", "ConnectionFailed": "errors",
    "AuthenticationError": "errors", "InvalidRequestError": "errors",
    "ContextWindowExceeded": "errors", "ContentFilterError": "errors",
    "MalformedResponse": "errors", "BudgetExceeded": "errors", "CircuitOpenError": "errors",
    "RateLimitTimeout": "errors", "AllProvidersFailed": "errors",
    "ModelNotFoundError": "errors", "ConnectionPoolTimeout": "errors",
    "StreamInterrupted": "errors",
    "is_retryable": "errors", "retry_after_from_headers": "errors", "is_outage": "errors",
    "stops_chain": "errors", "describe": "errors", "redact": "errors",
    "Request": "request",
    # task 1
    "TokenBucket": "rate_limit", "RateLimiter": "rate_limit", "Demand": "protocols",
    # task 2
    "BackoffPolicy": "backoff", "RetryPolicy": "retry", "current_attempt": "retry",
    # task 3
    "Pricing": "pricing", "PriceTable": "pricing", "CostTracker": "cost", "SQLiteLedger": "ledger",
    "CostRecord": "ledger", "UnknownModelError": "pricing",
    # task 4
    "Usage": "response", "LLMResponse": "response", "Provider": "response",
    "ToolCall": "response",
    "FallbackChain": "fallback", "to_messages": "response", "prompt_text": "response",
    "OpenAIProvider": "providers", "AnthropicProvider": "providers",
    # task 5
    "CircuitBreaker": "circuit_breaker", "CircuitState": "circuit_breaker",
    # together
    # shared state across processes and hosts (Airflow workers)
    "SharedRateLimiter": "state", "SharedCircuitBreaker": "state",
    "ResilientClient": "client", "MockLLMServer": "mock",
    # token limits
    "check_fits": "context", "context_window": "context", "ContextLimits": "context",
    "register_context_window": "context",
    "chunk_text": "chunking", "chunk_spans": "chunking", "map_reduce_summarize": "chunking",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llm_patterns' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"llm_patterns.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .backoff import BackoffPolicy  # noqa: F401
    from .chunking import chunk_spans, chunk_text, map_reduce_summarize  # noqa: F401
    from .circuit_breaker import CircuitBreaker, CircuitState  # noqa: F401
    from .client import ResilientClient  # noqa: F401
    from .clock import Clock, ScaledClock, SystemClock, VirtualClock  # noqa: F401
    from .context import (  # noqa: F401
        ContextLimits,
        check_fits,
        context_window,
        register_context_window,
    )
    from .cost import CostTracker  # noqa: F401
    from .errors import (  # noqa: F401
        AllProvidersFailed,
        AuthenticationError,
        BudgetExceeded,
        CircuitOpenError,
        ConnectionFailed,
        ConnectionPoolTimeout,
        ContentFilterError,
        ContextWindowExceeded,
        InvalidRequestError,
        LLMError,
        MalformedResponse,
        ModelNotFoundError,
        ProviderTimeout,
        QuotaExceededError,
        RateLimitError,
        RateLimitTimeout,
        ServerError,
        StreamInterrupted,
        describe,
        is_outage,
        is_retryable,
        redact,
        retry_after_from_headers,
        stops_chain,
    )
    from .events import Event, Observable  # noqa: F401
    from .fallback import FallbackChain  # noqa: F401
    from .ledger import CostRecord, SQLiteLedger  # noqa: F401
    from .mock import MockLLMServer  # noqa: F401
    from .pricing import PriceTable, Pricing, UnknownModelError  # noqa: F401
    from .protocols import Demand  # noqa: F401
    from .providers import AnthropicProvider, OpenAIProvider  # noqa: F401
    from .rate_limit import RateLimiter, TokenBucket  # noqa: F401
    from .request import Request  # noqa: F401
    from .response import (  # noqa: F401
        LLMResponse,
        Provider,
        ToolCall,
        Usage,
        prompt_text,
        to_messages,
    )
    from .retry import RetryPolicy, current_attempt  # noqa: F401
    from .state import SharedCircuitBreaker, SharedRateLimiter  # noqa: F401
    from .tokens import estimate_tokens  # noqa: F401
