"""Shared state for the rate limiter and the circuit breaker, across processes.

``from_url(url)`` opens a store: ``memory://`` (one process), ``sqlite:///path/state.db``
(every process on one host), ``redis://host:6379/0`` (many hosts; ``RedisStore``, extra [redis]).
``from_env()`` reads the URL from ``LLM_PATTERNS_STATE`` (what the Airflow DAG uses).
``SharedRateLimiter`` / ``SharedCircuitBreaker`` have the interface of ``RateLimiter`` /
``CircuitBreaker`` and keep their state in a store. The protocol is in ``base``.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from ..circuit_breaker import check_clock
from ..errors import redact
from .base import (
    Admission,
    BreakerConfig,
    BreakerOutcome,
    BreakerSnapshot,
    Grant,
    Limit,
    StateStore,
    WallClock,
)
from .memory import MemoryStateStore
from .shared import SharedCircuitBreaker, SharedRateLimiter
from .sqlite import SQLiteStateStore

__all__ = [
    "ENV_VAR", "Admission", "BreakerConfig", "BreakerOutcome", "BreakerSnapshot", "Grant", "Limit",
    "MemoryStateStore",
    "SQLiteStateStore", "SharedCircuitBreaker", "SharedRateLimiter", "StateStore", "WallClock",
    "from_env", "from_url",
]

ENV_VAR = "LLM_PATTERNS_STATE"


def from_url(url: str, *, clock: Any = None) -> StateStore:
    """Open the state store ``url`` names.

    ``memory://``; ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's
    spelling) -- ``sqlite:///tmp/x.db`` with a path that exists from the root is also taken as
    absolute when its directory exists only there; ``?log_grants=1`` keeps the grants log
    (``SQLiteStateStore``). ``redis://``, ``rediss://``, ``unix://`` open
    a ``RedisStore`` (query items ``on_failure=closed|open``, ``prefix``, ``socket_timeout``).
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str like 'sqlite:///path/state.db', got {url!r}")
    if "://" not in url:
        raise ValueError(
            f"url must look like 'sqlite:///path/state.db' or 'memory://', got {redact(url)!r}"
        )
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "memory":
        return MemoryStateStore(clock=check_clock(clock))
    if scheme == "sqlite":
        rest, _, query = rest.partition("?")
        options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        unknown = sorted(set(options) - {"log_grants"})
        if unknown or options.get("log_grants", "0") not in ("0", "1"):
            raise ValueError(f"url {url!r}: the only sqlite option is log_grants=0|1, "
                             f"got {query!r}")
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"url must look like sqlite:///path/to/state.db, got {url!r}")
        path = rest[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
        if not os.path.isabs(path):
            relative_dir = os.path.dirname(os.path.abspath(path))
            absolute = "/" + path
            if not os.path.isdir(relative_dir) and os.path.isdir(os.path.dirname(absolute)):
                path = absolute  # sqlite:///tmp/x.db written meaning /tmp/x.db
        return SQLiteStateStore(path, clock=clock,
                                log_grants=options.get("log_grants") == "1")
    if scheme in ("redis", "rediss", "unix"):  # issue 8; needs the [redis] extra
        from .redis import from_redis_url

        return from_redis_url(url, clock=clock)
    raise ValueError(f"url has an unknown scheme {scheme!r}; expected memory, sqlite or redis, "
                     f"got {redact(url)!r}")


def from_env(default: str | None = None, *, clock: Any = None) -> StateStore:
    """``from_url(os.environ["LLM_PATTERNS_STATE"])``, else ``default``; ValueError if neither."""
    url = os.environ.get(ENV_VAR) or default
    if not url:
        raise ValueError(
            f"{ENV_VAR} is not set and no default was given; set it to e.g. "
            "'sqlite:////var/lib/llm/state.db' (or pass store=...)"
        )
    return from_url(url, clock=clock)
