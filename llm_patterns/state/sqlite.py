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
from typing import Any, TypeVar

from .._sqlite import SQLiteFile
from .._validate import real
from ..circuit_breaker import check_clock
from . import base
from .base import WallClock
from .memory import DictStateStore, Op

__all__ = ["SQLiteStateStore"]

logger = logging.getLogger("llm_patterns.state")

T = TypeVar("T")
MAX_TIMEOUT = 3600.0  # seconds a writer may wait for another process's lock

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS llm_state ("
    " kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, updated REAL NOT NULL,"
    " PRIMARY KEY (kind, key))"
)


def _create(conn: Any) -> None:
    conn.execute(_SCHEMA)


class SQLiteStateStore(DictStateStore):
    """State store in one SQLite file shared by the processes of one host (module docstring).

    ``clock``: the time base when an operation gets ``now=None`` (default ``WallClock()``; every
    process using the file must use the same base). ``timeout``: seconds a writer waits for the
    lock before ``sqlite3.OperationalError`` (never an endless wait).
    """

    blocking = True  # a write may wait for another process's lock: never on an event loop

    def __init__(self, path: str | os.PathLike[str], *, clock: Any = None,
                 timeout: float = 30.0) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r}")
        if os.fspath(path) in ("", ":memory:"):
            raise ValueError(
                f"path must be a file (shared by processes), got {os.fspath(path)!r}; use "
                "MemoryStateStore / 'memory://' for one process"
            )
        seconds = real("timeout", timeout, minimum=0.0, strict_min=True, maximum=MAX_TIMEOUT)
        self.clock = check_clock(clock if clock is not None else WallClock())
        self._db = SQLiteFile(path, timeout=seconds, label="state store", setup=_create)
        self.path, self.timeout = self._db.path, self._db.timeout
        self.url = f"sqlite:///{os.path.abspath(self.path)}"

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
        return result

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
        return {"path": self.path, "timeout": self.timeout, "clock": self.clock}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], clock=state["clock"], timeout=state["timeout"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"SQLiteStateStore({self.path!r})"
