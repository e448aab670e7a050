"""``SQLiteStateStore``: shared limiter and breaker state for every process on one host.

``sqlite:///path/to/state.db``. Each operation is one short ``BEGIN IMMEDIATE`` transaction:
SQLite's write lock serializes it against every other process, the key's state (a JSON row) is
read, changed by the pure functions in ``base`` and written back before ``COMMIT``, so no two
processes can spend the same token or take the same half-open probe. ``busy_timeout`` makes a
writer wait its turn instead of failing; WAL keeps readers and writers out of each other's way.

Time: the store's clock (default wall time, ``time.time``), read INSIDE the transaction, so the
order of grants is the order of the timestamps; processes on one host share that clock. Across
hosts use a store whose server owns the time (Redis, issue 8): SQLite on a network file system
is neither safe nor shared-clock.

One connection per process, re-opened after ``fork``; picklable by path (hand it to workers).

Grants log (opt-in: ``log_grants=True``, or ``sqlite:///state.db?log_grants=1``): every paid
``limiter_acquire`` and every ``limiter_settle`` also inserts a row into ``llm_grants`` in the
SAME transaction, so the log is exactly what the buckets charged, in the order they charged it,
on the store's clock: an audit (did every window stay within the limit?) that needs no trust in
the processes that asked. ``grants(key)`` reads it back (see ``GrantRow``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

from .._sqlite import SQLiteFile
from .._validate import real
from ..circuit_breaker import check_clock
from . import base
from .base import Demand3, Grant, Limit, WallClock
from .memory import DictStateStore, Op

__all__ = ["GrantRow", "SQLiteStateStore"]

logger = logging.getLogger("llm_patterns.state")

T = TypeVar("T")
MAX_TIMEOUT = 3600.0  # seconds a writer may wait for another process's lock

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS llm_state ("
    " kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated REAL NOT NULL,"
    " PRIMARY KEY (kind, key))"
)


_GRANTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS llm_grants ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, at REAL NOT NULL,"
    " op TEXT NOT NULL, requests REAL NOT NULL, input_tokens REAL NOT NULL,"
    " output_tokens REAL NOT NULL)"
)


def _create(conn: Any) -> None:
    conn.execute(_SCHEMA)


def _create_with_grants(conn: Any) -> None:
    conn.execute(_SCHEMA)
    conn.execute(_GRANTS_SCHEMA)


class GrantRow(NamedTuple):
    """One row of the grants log: what a limiter key's buckets were charged at ``at`` (the
    store's time), in the order of ``seq``. ``op`` "grant": a paid acquire, ``requests``,
    ``input_tokens`` (already multiplied by the learned ratio charged) and ``output_tokens``;
    "settle": the correction once the real usage was known, actual minus charged (negative:
    given back). Costs are linear, so a bucket's charge over any window is a sum of rows:
    requests -> ``requests``, tokens -> ``input_tokens + output_tokens``, input_tokens ->
    ``input_tokens``, output_tokens -> ``output_tokens``."""

    seq: int
    key: str
    at: float
    op: str
    requests: float
    input_tokens: float
    output_tokens: float


class SQLiteStateStore(DictStateStore):
    """State store in one SQLite file shared by the processes of one host (module docstring).

    ``clock``: the time base when an operation gets ``now=None`` (default ``WallClock()``; every
    process using the file must use the same base). ``timeout``: seconds a writer waits for the
    lock before ``sqlite3.OperationalError`` (never an endless wait).
    """

    blocking = True  # a write may wait for another process's lock: never on an event loop

    def __init__(self, path: str | os.PathLike[str], *, clock: Any = None,
                 timeout: float = 30.0, log_grants: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r}")
        if os.fspath(path) in ("", ":memory:"):
            raise ValueError(
                f"path must be a file (shared by processes), got {os.fspath(path)!r}; use "
                "MemoryStateStore / 'memory://' for one process"
            )
        seconds = real("timeout", timeout, minimum=0.0, strict_min=True, maximum=MAX_TIMEOUT)
        if not isinstance(log_grants, bool):
            raise TypeError(f"log_grants must be True or False, got {log_grants!r}")
        self.log_grants = log_grants
        self.clock = check_clock(clock if clock is not None else WallClock())
        self._db = SQLiteFile(path, timeout=seconds, label="state store",
                              setup=_create_with_grants if log_grants else _create)
        self.path, self.timeout = self._db.path, self._db.timeout
        self.url = f"sqlite:///{os.path.abspath(self.path)}" + (
            "?log_grants=1" if log_grants else "")
        self._logging = threading.local()  # the charge to log in the running transaction

    def _atomic(self, kind: str, key: str, now: float | None, fn: Op[T]) -> T:
        base.check_key(key)
        if now is not None:
            now = base.check_finite("now", now)
        with self._db.write() as conn:  # SQLite's write lock, held until COMMIT
            t = self.clock.now() if now is None else now  # read under the lock
            row = conn.execute("SELECT value FROM llm_state WHERE kind = ? AND key = ?",
                               (kind, key)).fetchone()
            if row is not None:
                state = json.loads(row[0])
            else:
                state = base.new_bucket_state() if kind == "bucket" else {}
            result = fn(state, t)
            conn.execute(
                "INSERT INTO llm_state (kind, key, value, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, "
                "updated = excluded.updated",
                (kind, key, json.dumps(state), t),
            )
            charge = getattr(self._logging, "charge", None)
            if charge is not None and kind == "bucket":
                row = charge(result)
                if row is not None:
                    conn.execute(
                        "INSERT INTO llm_grants (key, at, op, requests, input_tokens, "
                        "output_tokens) VALUES (?, ?, ?, ?, ?, ?)", (key, t, *row))
        return result

    # -- the grants log (module docstring)
    @contextmanager
    def _log(self, charge: Any) -> Iterator[None]:
        """Log ``charge(result)`` (a row, or None for nothing) in this thread's next limiter
        transaction."""
        self._logging.charge = charge
        try:
            yield
        finally:
            self._logging.charge = None

    def limiter_acquire(self, key: str, limits: Sequence[Limit], demand: Demand3,
                        **kw: Any) -> Grant:
        if not self.log_grants:
            return super().limiter_acquire(key, limits, demand, **kw)
        req, inp, out = base.check_demand("demand", demand)

        def charge(grant: Grant) -> tuple[Any, ...] | None:
            return None if grant.wait != 0.0 else ("grant", req, inp * grant.ratio, out)
        with self._log(charge):
            return super().limiter_acquire(key, limits, demand, **kw)

    def limiter_settle(self, key: str, limits: Sequence[Limit], estimated: Demand3,
                       actual: Demand3, ratio: float = 1.0,
                       now: float | None = None) -> dict[str, float]:
        if not self.log_grants:
            return super().limiter_settle(key, limits, estimated, actual, ratio, now)
        (req_e, in_e, out_e), (req_a, in_a, out_a) = (
            base.check_demand("estimated", estimated), base.check_demand("actual", actual))
        r = base.check_finite("ratio", ratio, minimum=1.0)
        row = ("settle", req_a - req_e, in_a - in_e * r, out_a - out_e)
        with self._log(lambda _levels: row):
            return super().limiter_settle(key, limits, estimated, actual, ratio, now)

    def grants(self, key: str | None = None) -> list[GrantRow]:
        """The grants log (all keys, or one limiter key such as ``limiter:openai``), in
        order; ValueError if this store was opened without ``log_grants``."""
        if not self.log_grants:
            raise ValueError(f"{self!r} keeps no grants log: open it with log_grants=True "
                             "(or a URL ending in ?log_grants=1)")
        sql = "SELECT seq, key, at, op, requests, input_tokens, output_tokens FROM llm_grants"
        rows = (self._db.query(sql + " ORDER BY seq") if key is None else
                self._db.query(sql + " WHERE key = ? ORDER BY seq", (base.check_key(key),)))
        return [GrantRow(*r) for r in rows]

    def _limiter(self, key: str, now: float | None, fn: Op[T]) -> T:
        return self._atomic("bucket", key, now, fn)

    def _breaker(self, key: str, now: float | None, fn: Op[T]) -> T:
        return self._atomic("breaker", key, now, fn)

    def keys(self) -> list[tuple[str, str]]:
        """``(kind, key)`` of every state held, for inspection and cleanup."""
        rows = self._db.query("SELECT kind, key FROM llm_state ORDER BY kind, key")
        return [tuple(r) for r in rows]

    # -- lifecycle
    def close(self) -> None:
        """Close this process's connection; further use raises ``ValueError``."""
        self._db.close()

    def __enter__(self) -> SQLiteStateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout, "clock": self.clock,
                "log_grants": self.log_grants}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], clock=state["clock"], timeout=state["timeout"],  # type: ignore[misc]
                      log_grants=state.get("log_grants", False))

    def __repr__(self) -> str:
        grants = ", log_grants=True" if self.log_grants else ""
        return f"SQLiteStateStore({self.path!r}{grants})"
