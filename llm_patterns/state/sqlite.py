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
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from typing import Any, TypeVar

from . import base
from .base import WallClock
from .memory import DictStateStore, Op

__all__ = ["SQLiteStateStore"]

logger = logging.getLogger("llm_patterns.state")

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS llm_state ("
    " kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated REAL NOT NULL,"
    " PRIMARY KEY (kind, key))"
)
_abandoned: list[sqlite3.Connection] = []  # inherited across fork: never used nor closed


class SQLiteStateStore(DictStateStore):
    """State store in one SQLite file shared by the processes of one host (module docstring).

    ``clock``: the time base when an operation gets ``now=None`` (default ``WallClock()``; every
    process using the file must use the same base). ``timeout``: seconds a writer waits for the
    lock before ``sqlite3.OperationalError`` (never an endless wait).
    """

    def __init__(self, path: str | os.PathLike[str], *, clock: Any = None,
                 timeout: float = 30.0) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path, got {path!r}")
        self.path = os.fspath(path)
        if self.path in ("", ":memory:"):
            raise ValueError(
                f"path {self.path!r}: a SQLite state store must be a file (shared by processes); "
                "use MemoryStateStore / 'memory://' for one process"
            )
        parent = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path) or not os.path.isdir(parent):
            raise ValueError(
                f"path {self.path!r}: expected a file in an existing directory"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        self.clock = clock if clock is not None else WallClock()
        self.url = f"sqlite:///{os.path.abspath(self.path)}"
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        with self._lock:
            self._connection()

    # -- connection
    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"path {self.path!r} is not a usable SQLite state store: {exc}") \
                from exc
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            raise ValueError(f"state store {self.path!r} is closed")
        pid = os.getpid()
        if pid != self._pid:  # a forked child: never touch the parent's connection
            if self._conn is not None:
                _abandoned.append(self._conn)
            self._conn, self._pid, self._lock = None, pid, threading.RLock()
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _atomic(self, kind: str, key: str, now: float | None, fn: Op[T]) -> T:
        base.check_key(key)
        if now is not None:
            now = base.check_finite("now", now)
        if os.getpid() != self._pid:
            self._connection()
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")  # the write lock, held until COMMIT
            try:
                t = self.clock.now() if now is None else now  # read under the lock
                row = conn.execute("SELECT value FROM llm_state WHERE kind = ? AND key = ?",
                                   (kind, key)).fetchone()
                if row is not None:
                    state = json.loads(row[0])
                elif kind == "bucket":
                    state = base.new_bucket_state()
                else:
                    state = base.new_breaker_state(t)
                result = fn(state, t)
                conn.execute(
                    "INSERT INTO llm_state (kind, key, value, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, "
                    "updated = excluded.updated",
                    (kind, key, json.dumps(state), t),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _limiter(self, key: str, now: float | None, fn: Op[T]) -> T:
        return self._atomic("bucket", key, now, fn)

    def _breaker(self, key: str, now: float | None, fn: Op[T]) -> T:
        return self._atomic("breaker", key, now, fn)

    def keys(self) -> list[tuple[str, str]]:
        """``(kind, key)`` of every state held, for inspection and cleanup."""
        with self._lock:
            return [tuple(r) for r in self._connection().execute(
                "SELECT kind, key FROM llm_state ORDER BY kind, key").fetchall()]

    # -- lifecycle
    def close(self) -> None:
        """Close this process's connection; further use raises ``ValueError``."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True

    def __enter__(self) -> SQLiteStateStore:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "timeout": self.timeout, "clock": self.clock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], clock=state["clock"], timeout=state["timeout"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"SQLiteStateStore({self.path!r})"
