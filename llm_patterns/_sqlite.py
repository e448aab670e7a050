"""One SQLite file shared by the threads and processes of a host: what the ledger and the
SQLite state store both stand on.

A connection per process (a forked child never touches its parent's connection or lock), WAL
so readers never block the writer, a busy timeout instead of an endless wait, and short write
transactions that take SQLite's write lock at ``BEGIN IMMEDIATE``, so a read-modify-write inside
one is atomic across processes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["SQLiteFile"]

# Connections inherited across fork: never used nor closed by the child (closing one could
# disturb the parent's transaction), only kept alive so they are not finalized there either.
_abandoned: list[sqlite3.Connection] = []


class SQLiteFile:
    """A process-local connection to ``path`` plus its lock; ``label`` names it in errors.

    ``setup(conn)`` runs once per new connection inside a write transaction (schema, functions).
    ``":memory:"`` is allowed only with ``allow_memory`` (a private in-process database).
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float, label: str,
                 setup: Callable[[sqlite3.Connection], None],
                 allow_memory: bool = False) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path, got {path!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.path = os.fspath(path)
        self.timeout = float(timeout)
        self.label = label
        self.memory = self.path in ("", ":memory:")
        if self.memory and not allow_memory:
            raise ValueError(f"path {self.path!r}: a {label} must be a file shared by processes")
        if not self.memory:
            parent = os.path.dirname(os.path.abspath(self.path))
            if os.path.isdir(self.path):
                raise ValueError(f"path {self.path!r} is a directory; expected a {label} file")
            if not os.path.isdir(parent):
                raise ValueError(
                    f"path {self.path!r}: directory {parent!r} does not exist; create it first"
                )
        self._setup = setup
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        with self.lock:
            self.connection()  # open now: a bad path fails here, not at the first use

    @property
    def lock(self) -> threading.RLock:
        """This process's lock (a lock held at fork time is replaced in the child)."""
        if os.getpid() != self._pid:
            self.connection()
        return self._lock

    def connection(self) -> sqlite3.Connection:
        if self._closed:
            raise ValueError(f"{self.label} {self.path!r} is closed")
        pid = os.getpid()
        if pid != self._pid:  # a forked child: never reuse the parent's connection
            if self.memory:
                raise RuntimeError(f"a ':memory:' {self.label} cannot be shared with a child "
                                   "process; use a file path")
            if self._conn is not None:
                _abandoned.append(self._conn)
            self._conn, self._pid, self._lock = None, pid, threading.RLock()
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise ValueError(f"path {self.path!r}: cannot open the {self.label}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            if not self.memory:
                self._use_wal(conn)
                conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; WAL-safe
            with _transaction(conn):
                self._setup(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise ValueError(f"path {self.path!r} is not a usable SQLite {self.label}: {exc}") \
                from exc
        return conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """WAL mode, which the file keeps once set. Switching needs a lock SQLite does not
        wait for (no busy handler), so processes opening a new file together retry."""
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, holding SQLite's write lock from its first statement."""
        with self.lock, _transaction(self.connection()) as conn:
            yield conn

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.connection().execute(sql, params).fetchall()

    def close(self) -> None:
        """Close this process's connection; further use raises ``ValueError``."""
        with self.lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
