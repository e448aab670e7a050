"""The SQLite store's opt-in grants log: written in the same transaction as the charge it records.

Unit tests on a VirtualClock, one multi-process test on wall time (about a second), and the
audit (``grants_audit``) shown to catch a log that broke its limit.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import sqlite3
import sys
import time

import pytest
from grants_audit import fullest, violations

from llm_patterns import SystemClock, VirtualClock
from llm_patterns.state import Limit, SharedRateLimiter, SQLiteStateStore, from_url
from llm_patterns.state.sqlite import GrantRow

REQ_TOK = (Limit("requests", 60.0, 2.0, 2.0), Limit("tokens", 600.0, 100.0, 100.0))


@pytest.fixture
def store(tmp_path):
    s = SQLiteStateStore(tmp_path / "state.db", clock=VirtualClock(1000.0), log_grants=True)
    yield s
    s.close()


def test_paid_grants_and_settles_are_logged_refusals_are_not(store):
    assert store.limiter_acquire("k", REQ_TOK, (1, 30, 10)).wait == 0.0
    assert store.limiter_acquire("k", REQ_TOK, (1, 30, 10)).wait == 0.0
    refused = store.limiter_acquire("k", REQ_TOK, (1, 30, 10), max_wait=0.0)
    assert refused.wait > 0 and refused.ticket is None
    store.clock.advance(2.0)
    store.limiter_settle("k", REQ_TOK, (1, 30, 10), (1, 25, 4))  # 11 tokens given back
    store.limiter_acquire("other", REQ_TOK, (1, 5, 0))
    rows = store.grants("k")
    assert [(r.op, r.at, r.requests, r.input_tokens, r.output_tokens) for r in rows] == [
        ("grant", 1000.0, 1, 30, 10), ("grant", 1000.0, 1, 30, 10),
        ("settle", 1002.0, 0, -5, -6)]
    assert [r.key for r in store.grants()] == ["k", "k", "k", "other"]
    assert [r.seq for r in store.grants()] == sorted(r.seq for r in store.grants())


def test_a_queued_waiter_is_logged_once_when_paid(store):
    store.limiter_acquire("k", REQ_TOK, (2, 0, 0))  # the request bucket is empty now
    waiting = store.limiter_acquire("k", REQ_TOK, (1, 0, 0))
    assert waiting.wait == pytest.approx(1.0) and waiting.ticket
    store.clock.advance(0.5)
    assert store.limiter_acquire("k", REQ_TOK, (1, 0, 0), ticket=waiting.ticket).wait > 0
    store.clock.advance(0.5)
    assert store.limiter_acquire("k", REQ_TOK, (1, 0, 0), ticket=waiting.ticket).wait == 0.0
    assert [(r.op, r.at, r.requests) for r in store.grants("k")] == [
        ("grant", 1000.0, 2), ("grant", 1001.0, 1)]


def test_the_learned_ratio_is_in_the_logged_charge(store):
    store.limiter_settle("k", REQ_TOK, (1, 50, 0), (1, 75, 0))  # the provider counts 1.5x
    grant = store.limiter_acquire("k", REQ_TOK, (1, 20, 0))
    assert grant.ratio > 1.0
    row = store.grants("k")[-1]
    assert row.op == "grant" and row.input_tokens == pytest.approx(20 * grant.ratio)
    store.limiter_settle("k", REQ_TOK, (1, 20, 0), (1, 20, 0), grant.ratio)
    assert store.grants("k")[-1].input_tokens == pytest.approx(20 - 20 * grant.ratio)


def test_the_log_row_and_the_charge_commit_together(store, tmp_path):
    """No row, no charge: a failed insert rolls the bucket back with it."""
    store.limiter_acquire("k", REQ_TOK, (1, 10, 0))
    with sqlite3.connect(tmp_path / "state.db") as other:
        other.execute("DROP TABLE llm_grants")
    with pytest.raises(sqlite3.OperationalError, match="llm_grants"):
        store.limiter_acquire("k", REQ_TOK, (1, 10, 0))
    levels = store.limiter_levels("k", REQ_TOK)
    assert levels["requests"] == pytest.approx(1.0) and levels["tokens"] == pytest.approx(90.0)


def test_off_by_default_and_opt_in_by_url(tmp_path):
    plain = SQLiteStateStore(tmp_path / "plain.db", clock=VirtualClock())
    plain.limiter_acquire("k", REQ_TOK, (1, 1, 0))
    with pytest.raises(ValueError, match="log_grants=True"):
        plain.grants()
    tables = {r[0] for r in sqlite3.connect(tmp_path / "plain.db").execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "llm_grants" not in tables
    logged = from_url(f"sqlite:///{tmp_path / 'log.db'}?log_grants=1")
    assert logged.log_grants and logged.url.endswith("?log_grants=1")
    assert from_url(logged.url).log_grants  # its URL opens it the same way
    assert not from_url(f"sqlite:///{tmp_path / 'log.db'}?log_grants=0").log_grants
    again = pickle.loads(pickle.dumps(logged))
    assert again.log_grants and again.path == logged.path
    with pytest.raises(ValueError, match=r"log_grants=0\|1"):
        from_url(f"sqlite:///{tmp_path / 'x.db'}?log_grants=yes")
    with pytest.raises(ValueError, match="only sqlite option"):
        from_url(f"sqlite:///{tmp_path / 'x.db'}?journal=off")
    with pytest.raises(TypeError, match="log_grants"):
        SQLiteStateStore(tmp_path / "y.db", log_grants="yes")


# ----------------------------------------------------------------------------- the audit

_LIMIT = Limit("requests", 60.0, 2.0, 2.0)  # 1 per second, 2 at once


def _row(seq: int, at: float, op: str = "grant", requests: float = 1.0) -> GrantRow:
    return GrantRow(seq, "k", at, op, requests, 0.0, 0.0)


def test_the_audit_catches_a_broken_limit_and_passes_a_tight_one():
    tight = [_row(1, 0.0), _row(2, 0.0), _row(3, 1.0), _row(4, 2.0), _row(5, 3.0)]
    assert violations(tight, _LIMIT) == []
    assert fullest(tight, _LIMIT).over == pytest.approx(0.0)  # exactly at the limit
    burst = [*tight, _row(6, 3.2)]  # one request 0.8 s early
    assert [round(w.over, 3) for w in violations(burst, _LIMIT)] == [0.8]
    # a give-back frees room; a settle's debt counts against the window
    refunded = [_row(1, 0.0), _row(2, 0.0), _row(3, 0.0, "settle", -1.0), _row(4, 0.0)]
    assert violations(refunded, _LIMIT) == []
    debt = [_row(1, 0.0), _row(2, 0.5, "settle", 2.0), _row(3, 1.0)]  # 4 charged, 3 allowed
    assert [round(w.over, 3) for w in violations(debt, _LIMIT)] == [1.0]


def _worker(url: str, until: float) -> None:
    lim = SharedRateLimiter(rpm=600, burst_seconds=0.5, store=url, name="api",
                            clock=SystemClock())
    while time.time() < until:
        if not lim.try_acquire():
            time.sleep(0.003)


@pytest.mark.slow
def test_processes_sharing_a_limiter_leave_a_log_within_the_limit(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}?log_grants=1"
    store = from_url(url)  # creates the file and the table before the workers race to
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    until = time.time() + 1.2
    procs = [ctx.Process(target=_worker, args=(url, until)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
    assert all(p.exitcode == 0 for p in procs)
    rows = store.grants("limiter:api")
    limit = SharedRateLimiter(rpm=600, burst_seconds=0.5, store=store, name="api").limits[0]
    assert violations(rows, limit) == []
    assert fullest(rows, limit).over > -1.0  # the limit was binding: some window was full
    assert len(rows) >= limit.capacity + limit.rate * 0.8
