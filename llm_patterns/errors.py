"""The error taxonomy: one class per thing that goes wrong with an LLM API, and what to do.

| error                   | status           | retry? | breaker counts it? | fall back? |
|-------------------------|------------------|--------|--------------------|------------|
| RateLimitError          | 429              | yes    | no                 | yes        |
| QuotaExceededError      | 429 insufficient_quota | NO | no              | yes        |
| ServerError             | 500/502/503/504/529 | yes | yes                | yes        |
| ProviderTimeout         | timeout          | yes    | yes                | yes        |
| ConnectionFailed        | network          | yes    | yes                | yes        |
| AuthenticationError     | 401/403          | no     | no                 | yes        |
| InvalidRequestError     | 400/404/422      | no     | no                 | NO         |
| ContextWindowExceeded   | 400 context_length_exceeded | no | no        | to a larger window |
| ContentFilterError      | 400 content filter | no   | no                 | yes        |
| MalformedResponse       | 2xx, not a completion | yes | yes             | yes        |
| BudgetExceeded          | (ours)           | no     | no                 | NO         |
| CircuitOpenError        | (ours)           | no     | no                 | yes        |
| RateLimitTimeout        | (ours)           | no     | no                 | yes        |
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = [
    "LLMError",
    "RateLimitError",
    "QuotaExceededError",
    "ServerError",
    "ProviderTimeout",
    "ConnectionFailed",
    "AuthenticationError",
    "InvalidRequestError",
    "ContextWindowExceeded",
    "ContentFilterError",
    "MalformedResponse",
    "BudgetExceeded",
    "CircuitOpenError",
    "RateLimitTimeout",
    "AllProvidersFailed",
    "is_retryable",
    "retry_after_from_headers",
    "add_note",
]


class LLMError(Exception):
    """Base of every error this library raises about an LLM call."""

    retryable: bool = False

    def __init__(
        self,
        message: str = "",
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = []
        if self.provider:
            parts.append(f"[{self.provider}]")
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}:")
        parts.append(self.message or type(self).__name__)
        if self.retry_after is not None:
            parts.append(f"(retry after {self.retry_after:g} s)")
        return " ".join(parts)

    def __repr__(self) -> str:
        args = [repr(self.message)]
        for key in ("provider", "status_code", "retry_after"):
            value = getattr(self, key)
            if value is not None:
                args.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def __reduce__(self):  # picklable across processes (Airflow, multiprocessing)
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type, message: str, state: dict[str, Any]) -> LLMError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class RateLimitError(LLMError):
    """429: too many requests or tokens this minute. Wait (Retry-After) and try again."""

    retryable = True


class QuotaExceededError(RateLimitError):
    """429 ``insufficient_quota``: the account is out of credit. Retrying cannot help."""

    retryable = False


class ServerError(LLMError):
    """5xx or 529 overloaded: the provider is unwell. Retry with backoff; counts as an outage."""

    retryable = True


class ProviderTimeout(LLMError):
    """The provider did not answer in time."""

    retryable = True


class ConnectionFailed(LLMError):
    """The provider could not be reached (DNS, refused, reset)."""

    retryable = True


class AuthenticationError(LLMError):
    """401/403: the key is wrong or lacks permission."""


class InvalidRequestError(LLMError):
    """400/404/422: the request itself is wrong; any provider would refuse it the same way."""


class ContextWindowExceeded(LLMError):
    """400 ``context_length_exceeded``: too long for this model; a larger window may answer."""


class ContentFilterError(LLMError):
    """The provider's content policy refused the request or the completion."""


class MalformedResponse(LLMError):
    """A 2xx answer that is not a completion (HTML from a proxy, empty body, no usage)."""

    retryable = True


class BudgetExceeded(LLMError):
    """The call would take spending past a hard budget. Never retried, never sent elsewhere."""


class CircuitOpenError(LLMError):
    """The provider's circuit breaker is open: the call was not made."""


class RateLimitTimeout(LLMError):
    """The client-side rate limiter would have to wait longer than ``max_wait``: backpressure."""


class AllProvidersFailed(LLMError):
    """Every provider in a fallback chain failed; ``errors`` holds ``(provider_name, error)``."""

    def __init__(self, errors: list[tuple[str, BaseException]], message: str | None = None) -> None:
        self.errors = list(errors)
        if message is None:
            detail = "; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in self.errors)
            message = f"all {len(self.errors)} providers failed ({detail})"
        super().__init__(message)


_RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def is_retryable(error: BaseException | httpx.Response) -> bool:
    """Whether trying the same call again could succeed.

    True for 408, 409, 429 (but not ``insufficient_quota``), 5xx, 529, timeouts and connection
    failures; accepts our errors, raw httpx exceptions and ``httpx.Response`` objects.
    """
    if isinstance(error, LLMError):
        return type(error).retryable
    if isinstance(error, httpx.Response):
        return _status_retryable(error.status_code) and not _is_quota_body(error)
    if isinstance(error, httpx.HTTPStatusError):
        return is_retryable(error.response)
    if isinstance(error, (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)):
        return True
    if isinstance(error, (TimeoutError, ConnectionError)):
        return True
    return False


def _status_retryable(status: int) -> bool:
    return status in _RETRYABLE_STATUS or 500 <= status < 600


def _is_quota_body(response: httpx.Response) -> bool:
    if response.status_code != 429:
        return False
    try:
        body = response.json()
    except Exception:
        try:
            return "insufficient_quota" in response.text
        except Exception:
            return False
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return "insufficient_quota" in (str(err.get("code")), str(err.get("type")))
    return False


def retry_after_from_headers(
    headers: Mapping[str, str] | httpx.Headers | None, *, now: float | None = None
) -> float | None:
    """Seconds to wait, from ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date).

    An HTTP date is a wall-clock time, compared with ``now`` (default ``time.time()``).
    Returns None when the headers are absent, negative or unreadable.
    """
    if not headers:
        return None
    h = headers if isinstance(headers, httpx.Headers) else httpx.Headers(dict(headers))
    ms = h.get("retry-after-ms")
    if ms is not None:
        value = _finite(ms)
        if value is not None and value >= 0:
            return value / 1000.0
    raw = h.get("retry-after")
    if raw is None:
        return None
    value = _finite(raw)
    if value is not None:
        return value if value >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, delta)


def _finite(text: str) -> float | None:
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        return None
    return value if math.isfinite(value) else None


def add_note(error: BaseException, note: str) -> None:
    """``BaseException.add_note`` on Python 3.11+, the same ``__notes__`` list on 3.10."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:  # pragma: no cover - Python 3.10
        notes = getattr(error, "__notes__", None)
        if notes is None:
            notes = []
            error.__notes__ = notes
        notes.append(note)
