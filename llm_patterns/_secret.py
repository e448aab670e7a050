"""Credentials kept out of every repr, message, traceback and log line.

``Secret`` holds one credential (an API key, a base URL with a password in it). Its ``repr``,
``str`` and ``vars()`` show ``***``; the value itself lives in a module-private weak table, not
on the object, so nothing that walks an object's attributes (a traceback rendered with
``capture_locals=True``, an error reporter, ``vars(provider)``) reaches it. ``reveal()`` is the
one way to read it, used where the value goes on the wire.

``redact(text)`` is the one scrubber of the library: it masks the value of every live
``Secret``, any extra secrets given, and anything shaped like a credential (``sk-…`` keys,
``Bearer`` tokens, ``api_key=``/``token=``/``password=`` items, a URL's password). The same
function backs a ``logging.Filter`` that the providers put on httpx's and httpcore's loggers,
whose DEBUG lines quote response headers (a proxy may echo the key back).
"""

from __future__ import annotations

import logging
import re
import threading
import weakref
from typing import Any, NoReturn

__all__ = ["MASK", "RedactingFilter", "Secret", "install_log_redaction", "redact"]

MASK = "***"

_VALUES: weakref.WeakKeyDictionary[Secret, str] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()

# Shapes of credentials, whoever they belong to (a proxy echoing a header, a key in a URL).
_PATTERNS = (
    # OpenAI / Anthropic style keys: sk-..., sk-proj-..., sk-ant-api03-...
    (re.compile(r"\b(sk-(?:ant-|proj-|svcacct-|admin-)?)[A-Za-z0-9_\-]{8,}"), r"\1" + MASK),
    # Authorization: Bearer <token> / Basic <token>
    # (the token needs a digit or one of +/=_-, so "Basic authentication" stays readable)
    (re.compile(r"(?i)\b(bearer|basic)(\s+)(?=[A-Za-z._~]*[0-9+/=_\-])[A-Za-z0-9._~+/=\-]{8,}"),
     r"\1\2" + MASK),
    # key=value items in query strings and log lines
    (re.compile(r"(?i)\b((?:api[_-]?key|access[_-]?token|token|secret|password|key)=)"
                r"[^&\s\"',;)]+"), r"\1" + MASK),
    # a password in a URL: scheme://user:password@host
    (re.compile(r"(://[^:/@\s]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
)


class Secret:
    """One credential. ``repr``/``str``/``vars()`` show ``***``; ``reveal()`` returns it.

    Not picklable (a pickle would carry the value); copies share the one value.
    """

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a str, got a {type(value).__name__} (value not shown)")
        self.value = MASK  # what vars() and attribute walkers see
        with _LOCK:
            _VALUES[self] = value

    def reveal(self) -> str:
        """The credential itself: only for the wire, never for a message."""
        return _VALUES[self]

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled: it would write the credential out")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


MIN_MASKED = 8
"""A live Secret shorter than this is not masked in every text (a test key "k" would wreck
every message); real keys are far longer. Secrets passed to ``redact`` are always masked."""


def _live_values() -> list[str]:
    with _LOCK:
        return [v for v in _VALUES.values() if len(v) >= MIN_MASKED]


def redact(text: str, *secrets: str | Secret | None) -> str:
    """``text`` with every live ``Secret``, the given ``secrets`` and anything shaped like a
    credential replaced by ``***``."""
    if not isinstance(text, str):
        raise TypeError(f"redact() takes a str, got a {type(text).__name__}")
    values = _live_values()
    for s in secrets:
        if isinstance(s, Secret):
            values.append(s.reveal())
        elif s:
            values.append(s)
    for value in sorted(set(values), key=len, reverse=True):  # longest first: a URL before its key
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message through ``redact`` (the arguments are formatted first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


# httpx logs each request's URL at INFO; httpcore logs request/response headers at DEBUG.
_HTTP_LOGGERS = ("httpx", "httpcore.connection", "httpcore.http11", "httpcore.http2",
                 "httpcore.proxy", "httpcore.socks")
_installed = False


def install_log_redaction() -> None:
    """Put one ``RedactingFilter`` on httpx's and httpcore's loggers (idempotent)."""
    global _installed
    with _LOCK:
        if _installed:
            return
        log_filter = RedactingFilter()
        for name in _HTTP_LOGGERS:
            logging.getLogger(name).addFilter(log_filter)
        _installed = True
