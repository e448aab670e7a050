"""The error taxonomy: one class per thing that goes wrong with an LLM API, and what to do.

Each class carries its answers as data, and everything that decides reads them:
``is_retryable`` (the retry policy), ``is_outage`` (the circuit breakers) and ``stops_chain``
(the fallback chain). The table below IS the class attributes (a test checks it):

| error                 | raised for                              | retry | outage | falls back |
|-----------------------|-----------------------------------------|-------|--------|------------|
| RateLimitError        | 429                                     | yes   | no     | yes        |
| QuotaExceededError    | billing: 402, quota/spend-limit codes   | NO    | no     | yes        |
| ServerError           | 5xx, 529, 409                           | yes   | yes    | yes        |
| ProviderTimeout       | connect/read/write timeout, 408         | yes   | yes    | yes        |
| ConnectionPoolTimeout | our own connection pool ran dry (local) | yes   | NO     | yes        |
| ConnectionFailed      | DNS, refused, reset, protocol error     | yes   | yes    | yes        |
| AuthenticationError   | 401, 403                                | no    | no     | yes        |
| ModelNotFoundError    | 404 (model_not_found, not_found_error)  | no    | no     | yes        |
| InvalidRequestError   | other 4xx (400, 413, 422 ...)           | no    | no     | NO         |
| ContextWindowExceeded | 400 context_length_exceeded             | no    | no     | yes (1)    |
| ContentFilterError    | 400 content filter, a refusal           | no    | no     | yes        |
| MalformedResponse     | a 2xx/3xx that is not a completion      | yes   | yes    | yes        |
| BudgetExceeded        | ours: a hard budget                     | no    | no     | NO         |
| CircuitOpenError      | ours: the breaker is open               | no    | no     | yes        |
| RateLimitTimeout      | ours: the limiter would wait too long   | no    | no     | yes        |
| AllProvidersFailed    | ours: every provider failed             | no    | no     | yes        |
| StreamInterrupted     | a stream failed after text was delivered| NO    | (2)    | NO         |

(1) a model with a larger window may answer.
(2) the cause's: an overloaded error mid-stream counts for the breaker, a caller's break does not.

A server's ``x-should-retry: true|false`` header overrides ``retryable`` on that error (as both
official SDKs obey it), except for billing: a ``QuotaExceededError`` is never retried.

``error_from_response`` maps an HTTP answer onto the table (one rule for both APIs; the
``_RULES`` below, first match wins); ``is_retryable`` on a raw ``httpx.Response`` runs the same
rules, so the raw and the mapped answer always agree. ``ValueError``/``TypeError`` are the
caller's own mistakes (a bad ``max_tokens``, no prompt, an unsupported content part): raised as
themselves before any request, they stop a fallback chain too.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from . import _validate
from ._secret import redact

__all__ = [
    "BILLING_CODES",
    "AllProvidersFailed",
    "AuthenticationError",
    "BudgetExceeded",
    "CircuitOpenError",
    "ConnectionFailed",
    "ConnectionPoolTimeout",
    "ContentFilterError",
    "ContextWindowExceeded",
    "InvalidRequestError",
    "LLMError",
    "MalformedResponse",
    "ModelNotFoundError",
    "ProviderTimeout",
    "QuotaExceededError",
    "RateLimitError",
    "RateLimitTimeout",
    "ServerError",
    "StreamInterrupted",
    "add_note",
    "describe",
    "error_from_answer",
    "error_from_exception",
    "error_from_response",
    "is_outage",
    "is_retryable",
    "redact",
    "request_id_from_headers",
    "retry_after_from_headers",
    "stops_chain",
]

MAX_MESSAGE_CHARS = 200


class LLMError(Exception):
    """Base of every error this library raises about an LLM call.

    ``retryable``, ``outage`` and ``falls_back`` are the class's row of the table above; a
    server's ``x-should-retry`` header may override ``retryable`` on one instance.
    ``request_id`` is the provider's id of the failed request (quote it to their support);
    ``code`` the provider's own error code or type (``insufficient_quota``, ``rate_limit_error``).
    """

    retryable: bool = False
    outage: bool = False
    falls_back: bool = True
    request_id: str | None = None
    code: str | None = None

    def __init__(
        self,
        message: str = "",
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
        code: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after
        self.request_id = request_id
        self.code = code
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        parts = []
        if self.provider:
            parts.append(f"[{self.provider}]")
        if self.status_code is not None:
            parts.append(f"HTTP {self.status_code}:")
        parts.append(self.message or type(self).__name__)
        if self.retry_after is not None:
            parts.append(f"(retry after {self.retry_after:g} s)")
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)

    def __repr__(self) -> str:
        args = [repr(self.message)]
        for key in ("provider", "status_code", "retry_after", "request_id", "code"):
            value = getattr(self, key, None)
            if value is not None:
                args.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (Airflow)
        return (_rebuild, (type(self), self.message, self.__dict__.copy()))


def _rebuild(cls: type[LLMError], message: str, state: dict[str, Any]) -> LLMError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class RateLimitError(LLMError):
    """429: too many requests or tokens this minute. Wait (Retry-After) and try again."""

    retryable = True


class QuotaExceededError(RateLimitError):
    """Billing: out of credit, or over a spend limit (OpenAI ``insufficient_quota`` and the other
    billing codes, Anthropic "credit balance is too low" and spend limits, any 402). Retrying
    cannot help, whatever the status or ``x-should-retry`` say; another provider may answer."""

    retryable = False


class ServerError(LLMError):
    """5xx or 529 overloaded (or 409, a conflict the SDKs retry): the provider is unwell."""

    retryable = True
    outage = True


class ProviderTimeout(LLMError):
    """The provider did not answer in time (connect, read or write timeout, 408, or the whole
    response took longer than its deadline)."""

    retryable = True
    outage = True


class ConnectionPoolTimeout(LLMError):
    """Our own connection pool had no free connection in time: a local shortage, not the
    provider's fault, so no breaker counts it. Retryable (connections free up)."""

    retryable = True


class ConnectionFailed(LLMError):
    """The provider could not be reached (DNS, refused, reset, a broken HTTP exchange)."""

    retryable = True
    outage = True


class AuthenticationError(LLMError):
    """401/403: the key is wrong or lacks permission. Another provider has another key."""


class ModelNotFoundError(LLMError):
    """404: this provider has no such model (OpenAI ``model_not_found``, Anthropic
    ``not_found_error``) or no such endpoint (a wrong ``base_url``). Not an
    ``InvalidRequestError``: another provider, with another model, may answer."""


class InvalidRequestError(LLMError):
    """400/413/422: the request itself is wrong; any provider would refuse it the same way."""

    falls_back = False


class ContextWindowExceeded(LLMError):
    """400 ``context_length_exceeded``: too long for this model; a larger window may answer."""


class ContentFilterError(LLMError):
    """The provider's content policy refused the request or the completion."""


class MalformedResponse(LLMError):
    """A 2xx answer that is not a completion (HTML from a proxy, empty body, no usage), a
    redirect, or a body over the size cap."""

    retryable = True
    outage = True


class BudgetExceeded(LLMError):
    """The call would take spending past a hard budget. Never retried, never sent elsewhere."""

    falls_back = False


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


class StreamInterrupted(LLMError):
    """A stream failed after some of its text reached the caller.

    Never retried and never sent to another provider by the library: the caller already has
    ``partial_text`` and alone can decide what to do with it (show it, discard it, ask again).
    ``provider`` is the provider that was streaming; ``usage`` what the stream is known or
    estimated to have cost so far; the error that broke it is ``__cause__`` (and ``cause``),
    whose ``outage`` this error carries, so a breaker counts an overloaded stream, not a bad one.
    """

    retryable = False
    falls_back = False

    def __init__(self, message: str = "", *, partial_text: str = "", usage: Any = None,
                 cause: BaseException | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.partial_text = partial_text
        self.usage = usage
        self.cause = cause
        self.outage = is_outage(cause) if cause is not None else False

    @classmethod
    def of(cls, error: BaseException, *, partial_text: str, usage: Any = None) -> StreamInterrupted:
        """The interruption of a stream by ``error``, after ``partial_text`` was delivered."""
        status = getattr(error, "status_code", None)
        detail = error.message if isinstance(error, LLMError) else str(error)
        what = redact(" ".join(f"{type(error).__name__}: {detail}".split()))[:240]
        return cls(
            f"stream interrupted after {len(partial_text)} characters by {what}",
            partial_text=partial_text, usage=usage, cause=error,
            provider=getattr(error, "provider", None),
            status_code=status if isinstance(status, int) else None,
            request_id=getattr(error, "request_id", None),
            code=getattr(error, "code", None),
        )

    def __repr__(self) -> str:  # never the text itself: it ends up in logs
        return (f"StreamInterrupted(provider={self.provider!r}, "
                f"partial_text=<{len(self.partial_text)} chars>, cause={self.cause!r})")


# ---------------------------------------------------------------------------------------------
# The three questions, asked of any exception
# ---------------------------------------------------------------------------------------------


def is_retryable(error: BaseException | httpx.Response) -> bool:
    """Whether trying the same call again could succeed.

    Our errors answer with their ``retryable`` (see the table; ``x-should-retry`` may have set it
    on the instance). A raw ``httpx.Response`` or ``httpx.HTTPStatusError`` goes through the same
    rules as ``error_from_response``; raw timeouts and connection errors are retryable.
    """
    if isinstance(error, LLMError):
        return error.retryable
    if isinstance(error, httpx.Response):
        return not error.is_success and error_from_response(error).retryable
    if isinstance(error, httpx.HTTPStatusError):
        return is_retryable(error.response)
    return isinstance(error, (httpx.TimeoutException, httpx.NetworkError,
                              httpx.RemoteProtocolError, TimeoutError, ConnectionError))


def is_outage(error: BaseException | None) -> bool:
    """Whether this error says the provider is down: the circuit breakers' default ``is_failure``.

    Our errors answer with their ``outage``. Raw httpx timeouts (but not ``PoolTimeout``: our own
    pool ran dry), network and protocol errors, an ``HTTPStatusError`` with a 5xx, ``TimeoutError``
    and ``ConnectionError`` are outages; so is ``None`` (a failure reported with no detail). A 429,
    a bad request or an auth error says nothing about an outage.
    """
    if error is None:
        return True
    if isinstance(error, LLMError):
        return error.outage
    if isinstance(error, httpx.PoolTimeout):
        return False
    if isinstance(error, httpx.HTTPStatusError):
        return error_from_response(error.response).outage
    return isinstance(error, (httpx.TimeoutException, httpx.NetworkError,
                              httpx.RemoteProtocolError, TimeoutError, ConnectionError))


def stops_chain(error: BaseException) -> bool:
    """Whether a fallback chain must raise ``error`` at once instead of trying the next provider.

    Our errors answer with ``not falls_back`` (``BudgetExceeded``, ``InvalidRequestError``).
    ``ValueError``/``TypeError`` are the caller's own mistakes (or a bug): every provider would
    refuse them the same way, so they stop the chain and surface as themselves. Anything else
    (an outage, a provider raising a plain ``Exception``) moves on; ``BaseException`` that is not
    an ``Exception`` (Ctrl-C, cancellation) is never caught by a chain at all.
    """
    if isinstance(error, LLMError):
        return not error.falls_back
    return isinstance(error, (ValueError, TypeError)) or not isinstance(error, Exception)


def describe(error: BaseException | None, limit: int = 300, *, brief: bool = False) -> str:
    """One line about ``error`` for a log line, an event or a note, credentials masked.

    ``brief``: ``ServerError 503 from openai`` (what a breaker or a task log needs); otherwise
    ``ServerError: [openai] HTTP 503: server error: ... (request id req_1)``, cut at ``limit``.
    """
    _validate.integer("limit", limit, minimum=4)
    if error is None:
        return "no error given"
    name = type(error).__name__
    if brief:
        status = getattr(error, "status_code", None)
        if status is None and isinstance(error, httpx.HTTPStatusError):
            status = error.response.status_code
        provider = getattr(error, "provider", None)
        text = name + (f" {status}" if status is not None else "")
        text += f" from {provider}" if isinstance(provider, str) and provider else ""
    else:
        try:
            detail = str(error)
        except Exception:
            detail = "<unprintable>"
        text = f"{name}: {detail}" if detail else name
    text = redact(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# HTTP answers onto the table
# ---------------------------------------------------------------------------------------------

BILLING_CODES = frozenset({
    # OpenAI error.code / error.type, whatever the status (429, 402 or 400)
    "insufficient_quota",
    "billing_hard_limit_reached",
    "credit_balance_exhausted",
    "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded",
    "organization_usage_limit_exceeded",
    # Anthropic: error.type on a 402, and error.details.error_code on a 429 or a 402
    "billing_error",
    "enforced_spend_limit_reached",
    "contract_spend_limit_reached",
    "linked_organization_billing_unavailable",
    "linked_organization_spend_limit_reached",
})
"""Error codes and types that mean "out of credit or over a spend limit" (QuotaExceededError)."""

_BILLING_MESSAGES = ("your credit balance is too low",)  # Anthropic's 400 invalid_request_error
_CONTEXT_PATTERNS = (
    "context_length_exceeded",
    "prompt is too long",
    "maximum context length",
    "context window",
    "context length",
    "context limit",
)
_CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})


@dataclass(frozen=True)
class _Answer:
    """What the rules read from one HTTP answer (every field present, possibly empty)."""

    status: int
    message: str
    type: str
    code: str
    error_code: str
    request_id: str | None

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(c.lower() for c in (self.type, self.code, self.error_code) if c)

    @property
    def client_error(self) -> bool:
        return 400 <= self.status < 500


def _billing(a: _Answer) -> bool:
    if not a.client_error:
        return False
    lowered = a.message.lower()
    return (a.status == 402 or bool(a.codes & BILLING_CODES)
            or lowered.lstrip().startswith(_BILLING_MESSAGES)
            or any(code in lowered for code in BILLING_CODES))  # a non-JSON body naming one


def _context(a: _Answer) -> bool:
    lowered = a.message.lower()
    return a.client_error and ("context_length_exceeded" in a.codes
                               or any(p in lowered for p in _CONTEXT_PATTERNS))


# First match wins. Each rule: (applies?, class, what the message says it is).
_RULES: tuple[tuple[Callable[[_Answer], bool], type[LLMError], str], ...] = (
    (_billing, QuotaExceededError, "billing: out of credit or over a spend limit"),
    (lambda a: a.status == 429, RateLimitError, "rate limited"),
    (lambda a: a.status in (401, 403), AuthenticationError, "authentication failed"),
    (lambda a: a.status == 404, ModelNotFoundError, "model or endpoint not found"),
    (lambda a: a.status == 408, ProviderTimeout, "the server timed out waiting for the request"),
    (lambda a: a.status == 409, ServerError, "conflict"),
    (_context, ContextWindowExceeded, "context window exceeded"),
    (lambda a: a.client_error and bool(a.codes & _CONTENT_FILTER_CODES), ContentFilterError,
     "refused by the content filter"),
    (lambda a: a.client_error, InvalidRequestError, "invalid request"),
    (lambda a: a.status == 529, ServerError, "overloaded"),
    (lambda a: a.status >= 500, ServerError, "server error"),
    (lambda a: True, MalformedResponse, "expected a completion, got a {status} answer"),
)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _read(status: int, headers: Mapping[str, str], content: bytes) -> _Answer:
    """The fields of an OpenAI- or Anthropic-style error body; the raw text when it is not one.
    Never raises, whatever the body."""
    request_id = request_id_from_headers(headers)
    text = content.decode("utf-8", "replace")
    try:
        body = json.loads(text) if text.strip() else None
    except (ValueError, RecursionError):
        body = None
    if body is None:
        return _Answer(status, text.strip() or "(empty body)", "", "", "", request_id)
    if isinstance(body, dict) and request_id is None:
        request_id = _text(body.get("request_id")) or None  # Anthropic repeats it in the body
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        details = err.get("details")
        error_code = _text(details.get("error_code")) if isinstance(details, dict) else ""
        message = err.get("message")
        code = err.get("code")
        return _Answer(
            status,
            message if isinstance(message, str) else json.dumps(err)[:MAX_MESSAGE_CHARS],
            _text(err.get("type")),
            str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else "",
            error_code,
            request_id,
        )
    if isinstance(err, str):
        return _Answer(status, err, "", "", "", request_id)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _Answer(status, body["message"], _text(body.get("type")), _text(body.get("code")),
                       "", request_id)
    return _Answer(status, json.dumps(body)[: MAX_MESSAGE_CHARS * 2], "", "", "", request_id)


def _truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _should_retry(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry")
    return {"true": True, "false": False}.get(value) if isinstance(value, str) else None


def error_from_answer(
    status: int, headers: Mapping[str, str], content: bytes, *, provider: str | None = None
) -> LLMError:
    """The error for one HTTP answer that is not a completion: status, headers and raw body.

    Billing codes and messages (``BILLING_CODES``) are a ``QuotaExceededError`` whatever the
    status; ``x-should-retry`` overrides ``retryable`` (never for billing); ``request_id`` comes
    from ``x-request-id`` (OpenAI), ``request-id`` (Anthropic) or the body. The message carries
    the provider's own words, truncated, with credentials masked.
    """
    if not isinstance(headers, httpx.Headers):
        headers = httpx.Headers(headers)
    answer = _read(status, headers, content)
    cls, what = next((cls, what) for applies, cls, what in _RULES if applies(answer))
    if cls is MalformedResponse:
        location = headers.get("location")
        what = what.format(status=status) + (
            f" to {_truncate(redact(location), 120)}" if location else "")
    detail = _truncate(redact(answer.message))
    tags = ", ".join(f"{k} {v}" for k, v in (("type", answer.type), ("code", answer.code),
                                             ("error_code", answer.error_code)) if v)
    if tags:
        detail = f"{detail} ({redact(tags)})"
    code = answer.error_code or answer.code or answer.type
    return cls(
        f"{what}: {detail}",
        provider=provider,
        status_code=status,
        retry_after=retry_after_from_headers(headers),
        request_id=_truncate(redact(answer.request_id), 120) if answer.request_id else None,
        code=_truncate(redact(code), 120) if code else None,
        retryable=None if cls is QuotaExceededError else _should_retry(headers),
    )


def error_from_response(response: httpx.Response, *, provider: str | None = None) -> LLMError:
    """``error_from_answer`` for an ``httpx.Response`` (an unread streamed body counts as empty)."""
    try:
        content = response.content
    except httpx.ResponseNotRead:
        content = b""
    return error_from_answer(response.status_code, response.headers, content, provider=provider)


def error_from_exception(exc: Exception, *, provider: str | None = None) -> LLMError:
    """The error for an httpx transport exception, with a scrubbed copy as its ``__cause__``.

    The copy keeps the exception's type and (redacted) message but not its ``request``, whose
    headers hold the key, nor its traceback, whose frames' locals do. Raise the result outside
    the ``except`` block that caught ``exc``, so ``__context__`` does not reach it either.
    """
    name = type(exc).__name__
    text = _truncate(redact(str(exc) or name))
    error: LLMError
    if isinstance(exc, httpx.PoolTimeout):
        error = ConnectionPoolTimeout(
            f"no free connection in our own pool in time ({name}): {text}", provider=provider)
    elif isinstance(exc, httpx.TimeoutException):
        error = ProviderTimeout(f"timed out ({name}): {text}", provider=provider)
    else:
        error = ConnectionFailed(f"connection failed ({name}): {text}", provider=provider)
    try:
        cause: BaseException | None = type(exc)(redact(str(exc)))
    except Exception:
        cause = None
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error


def request_id_from_headers(headers: Mapping[str, str] | None) -> str | None:
    """The provider's request id: ``x-request-id`` (OpenAI) or ``request-id`` (Anthropic)."""
    if not headers:
        return None
    value = headers.get("x-request-id") or headers.get("request-id")
    return value if isinstance(value, str) and value else None


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
    delta = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, delta)


def _finite(text: str) -> float | None:
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        return None
    return value if math.isfinite(value) else None


def add_note(error: BaseException, note: str) -> None:
    """``BaseException.add_note`` (kept as a function for the callers written for Python 3.10)."""
    error.add_note(note)
