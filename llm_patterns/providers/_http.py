"""What the HTTP providers share: clients, timing, and mapping every failure onto the §3 errors.

Status mapping (both APIs; the body's error code/type/message refines it):

| status / condition                                   | error                  |
|------------------------------------------------------|------------------------|
| 429 with code/type ``insufficient_quota``; 402       | QuotaExceededError     |
| 429                                                  | RateLimitError         |
| 401, 403                                             | AuthenticationError    |
| 400 ``context_length_exceeded`` / "prompt is too long" / "maximum context length" | ContextWindowExceeded |
| 400 code ``content_filter`` / ``content_policy_violation`` | ContentFilterError |
| 408                                                  | ProviderTimeout (the server gave up waiting: retryable, as the SDKs treat it) |
| 409                                                  | ServerError (a conflict/lock the SDKs retry; transient, not the caller's fault) |
| other 4xx (400, 404, 413, 422 ...)                   | InvalidRequestError    |
| 5xx, 529                                             | ServerError            |
| 1xx/3xx (a redirect: wrong base_url or a proxy)      | MalformedResponse      |
| 2xx that is not JSON, empty, or lacks the fields     | MalformedResponse      |
| httpx.TimeoutException                               | ProviderTimeout        |
| httpx.NetworkError / RemoteProtocolError / other transport errors | ConnectionFailed |

Every error carries ``provider`` (the provider's name), ``status_code`` and ``retry_after`` (from
``retry-after-ms`` / ``retry-after``), and a message with the provider's own words truncated to
about 200 characters. The API key is scrubbed from every message we build and never stored where
a repr could show it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import threading
from collections.abc import Mapping
from typing import Any, TypeVar

import httpx

from ..clock import Clock, SystemClock
from ..errors import (
    AuthenticationError,
    ConnectionFailed,
    ContentFilterError,
    ContextWindowExceeded,
    InvalidRequestError,
    LLMError,
    MalformedResponse,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    retry_after_from_headers,
)
from ..response import LLMResponse, Usage, to_messages

__all__ = [
    "HTTPProvider",
    "build_async_client",
    "build_client",
    "error_from_exception",
    "error_from_response",
    "parse_json",
    "redact",
    "truncate",
]

logger = logging.getLogger("llm_patterns.providers")

MAX_MESSAGE_CHARS = 200
_REDACTED = "***"
# Things that look like API keys even when they are not ours (a proxy echoing a header).
_KEY_PATTERN = re.compile(r"\b(sk-(?:ant-|proj-)?)[A-Za-z0-9_\-]{8,}")
_CONTEXT_PATTERNS = (
    "context_length_exceeded",
    "prompt is too long",
    "maximum context length",
    "context window",
    "context length",
    "context limit",
)
_CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation"})
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_error", "billing_hard_limit_reached"})


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` and anything shaped like an ``sk-`` key replaced by ``***``."""
    if secret:
        text = text.replace(secret, _REDACTED)
    return _KEY_PATTERN.sub(lambda m: m.group(1) + _REDACTED, text)


def truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line of at most ``limit`` characters (whitespace collapsed), ``…`` when cut."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not (
        math.isfinite(timeout) and timeout > 0
    ):
        raise ValueError(f"timeout must be a number of seconds > 0 or an httpx.Timeout, got {timeout!r}")
    return httpx.Timeout(float(timeout))


def build_client(timeout: float | httpx.Timeout = 30.0) -> httpx.Client:
    """A sync httpx client with the timeout (seconds for connect, read, write and pool)."""
    return httpx.Client(timeout=_timeout(timeout))


def build_async_client(timeout: float | httpx.Timeout = 30.0) -> httpx.AsyncClient:
    """An async httpx client with the timeout."""
    return httpx.AsyncClient(timeout=_timeout(timeout))


# ---------------------------------------------------------------------------------------------
# Mapping failures
# ---------------------------------------------------------------------------------------------


def _error_fields(response: httpx.Response) -> tuple[str, str, str]:
    """(message, type, code) from an OpenAI- or Anthropic-style error body, or the raw text."""
    try:
        body = response.json()
    except Exception:  # noqa: BLE001 - any undecodable body is reported as text
        try:
            text = response.text
        except Exception:  # noqa: BLE001 - an unknown charset: no text at all
            text = ""
        return (text.strip() or "(empty body)", "", "")
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message = err.get("message")
        return (
            str(message) if message is not None else json.dumps(err)[:MAX_MESSAGE_CHARS],
            str(err.get("type") or ""),
            str(err.get("code") or ""),
        )
    if isinstance(err, str):
        return err, "", ""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"], str(body.get("type") or ""), str(body.get("code") or "")
    return json.dumps(body)[:MAX_MESSAGE_CHARS * 2], "", ""


def error_from_response(
    response: httpx.Response, provider: str, *, secret: str | None = None
) -> LLMError:
    """The §3 error for a non-2xx response (see the module table)."""
    status = response.status_code
    message, etype, code = _error_fields(response)
    detail = truncate(redact(message, secret))
    tags = ", ".join(f"{k} {v}" for k, v in (("type", etype), ("code", code)) if v)
    if tags:
        detail = f"{detail} ({redact(tags, secret)})"
    kinds = {etype.lower(), code.lower()}
    lowered = message.lower()
    cls: type[LLMError]
    if status == 402 or (status == 429 and kinds & _QUOTA_CODES):
        cls, what = QuotaExceededError, "quota exhausted"
    elif status == 429:
        cls, what = RateLimitError, "rate limited"
    elif status in (401, 403):
        cls, what = AuthenticationError, "authentication failed"
    elif status == 408:
        cls, what = ProviderTimeout, "the server timed out waiting for the request"
    elif status == 409:
        cls, what = ServerError, "conflict"
    elif 400 <= status < 500 and (
        "context_length_exceeded" in kinds or any(p in lowered for p in _CONTEXT_PATTERNS)
    ):
        cls, what = ContextWindowExceeded, "context window exceeded"
    elif 400 <= status < 500 and kinds & _CONTENT_FILTER_CODES:
        cls, what = ContentFilterError, "refused by the content filter"
    elif 400 <= status < 500:
        cls, what = InvalidRequestError, "invalid request"
    elif status >= 500:
        cls, what = ServerError, "overloaded" if status == 529 else "server error"
    else:
        location = response.headers.get("location")
        where = f" to {truncate(redact(location, secret), 120)}" if location else ""
        cls, what = MalformedResponse, f"expected a completion, got a {status} answer{where}"
    return cls(
        f"{what}: {detail}",
        provider=provider,
        status_code=status,
        retry_after=retry_after_from_headers(response.headers),
    )


def error_from_exception(exc: Exception, provider: str, *, secret: str | None = None) -> LLMError:
    """The §3 error for an httpx transport exception (timeouts, refused or dropped connections)."""
    text = truncate(redact(str(exc) or type(exc).__name__, secret))
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"timed out ({type(exc).__name__}): {text}", provider=provider)
    return ConnectionFailed(f"connection failed ({type(exc).__name__}): {text}", provider=provider)


def parse_json(
    response: httpx.Response, provider: str, *, secret: str | None = None
) -> dict[str, Any]:
    """The JSON object of a 2xx answer, or MalformedResponse (HTML from a proxy, empty, a list)."""
    status = response.status_code
    content = response.content
    if not content.strip():
        raise MalformedResponse("empty body, expected a JSON completion", provider=provider,
                                status_code=status)
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        ctype = response.headers.get("content-type", "unknown content-type")
        snippet = truncate(redact(content[:400].decode("utf-8", "replace"), secret), 80)
        raise MalformedResponse(
            f"body is not JSON ({ctype}): {snippet!r}", provider=provider, status_code=status
        ) from None
    if not isinstance(body, dict):
        raise MalformedResponse(
            f"expected a JSON object, got {type(body).__name__}", provider=provider,
            status_code=status,
        )
    return body


def malformed(what: str, response: httpx.Response, provider: str) -> MalformedResponse:
    return MalformedResponse(what, provider=provider, status_code=response.status_code)


# ---------------------------------------------------------------------------------------------
# The shared provider
# ---------------------------------------------------------------------------------------------


def _check_name(param: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{param} must be a non-empty str, got {value!r}")
    return value


def _check_key(api_key: Any, env_var: str) -> str:
    if api_key is None:
        api_key = os.environ.get(env_var)
        if not api_key:
            raise ValueError(f"api_key is required: pass api_key= or set {env_var}")
    if not isinstance(api_key, str):
        raise ValueError(  # noqa: TRY004 - one error type for every bad key, value never shown
            f"api_key must be a non-empty str, got a {type(api_key).__name__}"
        )
    if not api_key:
        raise ValueError("api_key must be a non-empty str, got an empty string")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in api_key):
        raise ValueError(
            "api_key contains whitespace or control characters (value not shown); "
            "strip it, e.g. api_key=key.strip()"
        )
    return api_key


def _check_base_url(base_url: Any) -> str:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    return base_url.rstrip("/")


_P = TypeVar("_P", bound="HTTPProvider")


class HTTPProvider:
    """Base of the HTTP providers: validation, lazy clients, timing, error mapping.

    Subclasses set ``api`` and ``env_var`` and implement ``_request(messages, max_tokens, kw)
    -> (path, headers, body)`` and ``_parse(body, response) -> (text, model, usage)``.
    """

    api = "http"
    env_var = ""
    default_base_url = ""
    _reserved = frozenset({"model", "stream"})

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        client: httpx.Client | None = None,
        async_client: httpx.AsyncClient | None = None,
        timeout: float | httpx.Timeout = 30.0,
        default_headers: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.name = _check_name("name", name)
        self.model = _check_name("model", model)
        self.base_url = _check_base_url(self.default_base_url if base_url is None else base_url)
        self.__key = _check_key(api_key, self.env_var)
        self.timeout = _timeout(timeout)
        if client is not None and not isinstance(client, httpx.Client):
            raise TypeError(f"client must be an httpx.Client, got {type(client).__name__}")
        if async_client is not None and not isinstance(async_client, httpx.AsyncClient):
            raise TypeError(
                f"async_client must be an httpx.AsyncClient, got {type(async_client).__name__}"
            )
        if default_headers is not None and not isinstance(default_headers, Mapping):
            raise TypeError(
                f"default_headers must be a mapping, got {type(default_headers).__name__}"
            )
        self._default_headers = {str(k).lower(): v for k, v in (default_headers or {}).items()}
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._client = client
        self._owns_client = client is None
        self._async_client = async_client
        self._owns_async_client = async_client is None
        self._async_loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    # The key lives in a name-mangled attribute, read only to build the auth header.
    @property
    def _api_key(self) -> str:
        return self.__key

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, "
            f"base_url={self.base_url!r})"
        )

    # -- subclass hooks ---------------------------------------------------------------------
    def _request(
        self, messages: list[dict[str, Any]], max_tokens: int, kw: dict[str, Any]
    ) -> tuple[str, dict[str, str], dict[str, Any]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _parse(
        self, body: dict[str, Any], response: httpx.Response
    ) -> tuple[str, str, Usage]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- clients ----------------------------------------------------------------------------
    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = build_client(self.timeout)
            return self._client

    def _get_async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._owns_async_client and (self._async_client is None or self._async_loop is not loop):
                # A pooled connection belongs to the loop that opened it: a new asyncio.run()
                # (a notebook cell, a test) gets a fresh client instead of "Event loop is closed".
                self._async_client = build_async_client(self.timeout)
                self._async_loop = loop
            assert self._async_client is not None
            return self._async_client

    def close(self) -> None:
        """Close the sync client if this provider created it (use ``aclose`` for the async one)."""
        with self._lock:
            client, self._client = (self._client, None) if self._owns_client else (None, self._client)
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close every client this provider created."""
        self.close()
        with self._lock:
            if self._owns_async_client:
                client, self._async_client, self._async_loop = self._async_client, None, None
            else:
                client = None
        if client is not None:
            await client.aclose()

    def __enter__(self: _P) -> _P:  # noqa: PYI019 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self: _P) -> _P:  # noqa: PYI019
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- calls ------------------------------------------------------------------------------
    def _prepare(
        self,
        prompt: str | None,
        messages: list[dict[str, Any]] | None,
        max_tokens: int,
        kw: dict[str, Any],
    ) -> tuple[str, dict[str, str], dict[str, Any]]:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        clash = self._reserved & kw.keys()
        if clash:
            raise ValueError(
                f"{sorted(clash)} cannot be passed per call to {self.name!r}: the model is fixed "
                f"per provider and streaming is not supported"
            )
        path, headers, body = self._request(to_messages(prompt, messages), max_tokens, kw)
        return f"{self.base_url}{path}", headers, body

    def _headers(self, auth: dict[str, str]) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update(self._default_headers)
        headers.update(auth)
        return headers

    def _finish(self, response: httpx.Response, started: float) -> LLMResponse:
        latency = max(0.0, self.clock.now() - started)
        if not 200 <= response.status_code < 300:
            error = error_from_response(response, self.name, secret=self._api_key)
            logger.debug("%s: POST %s -> %d in %.2f s: %s", self.name, response.request.url.path,
                         response.status_code, latency, type(error).__name__)
            raise error
        body = parse_json(response, self.name, secret=self._api_key)
        try:
            text, model, usage = self._parse(body, response)
        except LLMError as error:  # scrub anything the body echoed into the message
            error.message = redact(error.message, self._api_key)
            error.args = (error.message,)
            raise
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise malformed(
                f"unexpected completion shape ({type(exc).__name__}: {truncate(str(exc), 120)})",
                response, self.name,
            ) from None
        logger.debug(
            "%s: POST %s -> %d in %.2f s (%d prompt + %d completion tokens, %d cached)",
            self.name, response.request.url.path, response.status_code, latency,
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens,
        )
        return LLMResponse(
            text=text,
            model=model,
            provider=self.name,
            usage=usage,
            latency_s=latency,
            raw=body,
            headers=dict(response.headers.items()),
        )

    def complete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse:
        """One completion over HTTP; every failure raised as a §3 error with ``provider`` set."""
        url, headers, body = self._prepare(prompt, messages, max_tokens, kw)
        client = self._sync_client()
        started = self.clock.now()
        try:
            response = client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise error_from_exception(exc, self.name, secret=self._api_key) from exc
        return self._finish(response, started)

    async def acomplete(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        max_tokens: int = 256,
        **kw: Any,
    ) -> LLMResponse:
        """The async twin of ``complete``."""
        url, headers, body = self._prepare(prompt, messages, max_tokens, kw)
        client = self._get_async_client()
        started = self.clock.now()
        try:
            response = await client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise error_from_exception(exc, self.name, secret=self._api_key) from exc
        return self._finish(response, started)


def require_int(mapping: Mapping[str, Any], key: str, where: str) -> int:
    """``mapping[key]`` as a non-negative int, else ValueError (mapped to MalformedResponse)."""
    value = mapping.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}.{key} must be a non-negative int, got {value!r}")
    return value
