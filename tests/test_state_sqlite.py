"""The shared state store (memory and SQLite), SharedRateLimiter, SharedCircuitBreaker.

No Airflow needed. Unit tests run on a VirtualClock; the multi-process tests use real time
(about a second each) because processes cannot share a virtual clock.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from llm_patterns import (
    CircuitOpenError,
    CircuitState,
    CostRecord,
    MockLLMServer,
    OpenAIProvider,
    RateLimiter,
    RateLimitError,
    RateLimitTimeout,
    ResilientClient,
    ServerError,
    SQLiteLedger,
    SystemClock,
    VirtualClock,
)
from llm_patterns.state import (
    BreakerConfig,
    Limit,
    MemoryStateStore,
    SharedCircuitBreaker,
    SharedRateLimiter,
    SQLiteStateStore,
    from_env,
    from_url,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    clock = VirtualClock(1000.0)
    if request.param == "memory":
        s = MemoryStateStore(clock=clock)
    else:
        s = SQLiteStateStore(tmp_path / "state.db", clock=clock)
    yield s
    s.close()


# ----------------------------------------------------------------------------- the protocol


def _limits(*specs):
    """Limits from (kind, capacity, refill per second), strict (ceiling = capacity)."""
    return tuple(Limit(kind, rate * 60.0, cap, cap) for kind, cap, rate in specs)


REQ_TOK = _limits(("requests", 2, 1.0), ("tokens", 100, 10.0))


def test_acquire_is_all_or_nothing(store):
    assert store.limiter_acquire("k", REQ_TOK, (1, 60, 0)).wait == 0.0
    # 1 request left, 40 tokens: the token bucket cannot pay 60 -> nothing is taken
    grant = store.limiter_acquire("k", REQ_TOK, (1, 60, 0), max_wait=0.0)
    assert grant.wait == pytest.approx(2.0) and grant.ticket is None  # (60 - 40) / 10
    levels = store.limiter_levels("k", REQ_TOK)
    assert levels["requests"] == pytest.approx(1.0)  # the request bucket was NOT charged
    assert levels["tokens"] == pytest.approx(40.0)
    assert levels["waiting"] == 0  # refused past max_wait: nothing queued
    store.clock.advance(grant.wait)
    assert store.limiter_acquire("k", REQ_TOK, (1, 60, 0)).wait == 0.0
    assert store.limiter_levels("k", REQ_TOK)["requests"] == pytest.approx(1.0)  # cap, then -1


def test_buckets_refill_but_never_overfill(store):
    lim = _limits(("requests", 3, 1.0))
    for _ in range(3):
        assert store.limiter_acquire("k", lim, (1, 0, 0)).wait == 0.0
    assert store.limiter_acquire("k", lim, (1, 0, 0), max_wait=0).wait == pytest.approx(1.0)
    store.clock.advance(1000)
    assert store.limiter_levels("k", lim)["requests"] == 3.0


def test_settle_lower_pause(store):
    lim = _limits(("tokens", 100, 10.0))
    levels = store.limiter_settle("k", lim, (1, 0, 0), (1, 150, 0))
    assert levels["tokens"] == pytest.approx(-50)  # a debt
    assert levels["ratio"] == 1.0  # nothing estimated: nothing learned
    assert store.limiter_acquire("k", lim, (1, 10, 0), max_wait=0).wait == pytest.approx(6.0)
    assert store.limiter_settle("k", lim, (1, 1000, 0), (1, 0, 0))["tokens"] == 100  # capped
    assert store.limiter_lower("k", lim, {"tokens": 30})["tokens"] == 30
    assert store.limiter_lower("k", lim, {"tokens": 80})["tokens"] == 30  # never raises
    assert store.limiter_lower("k", lim, {"requests": 0})["tokens"] == 30  # not in the shape
    assert store.limiter_pause("k", lim, 5) == 5
    assert store.limiter_pause("k", lim, 2) == 5  # a longer pause is kept
    assert store.limiter_pause("k", lim, 1e12) == 86_400  # MAX_PAUSE, whatever is asked
    store.clock.advance(86_400)
    assert store.limiter_acquire("k", lim, (1, 1, 0)).wait == 0.0


def test_settle_learns_the_estimate_ratio(store):
    lim = _limits(("tokens", 1000, 10.0))
    for _ in range(5):
        store.limiter_settle("k", lim, (1, 100, 0), (1, 120, 0))
    levels = store.limiter_levels("k", lim)
    assert levels["ratio"] == pytest.approx(1.2)
    grant = store.limiter_acquire("k", lim, (1, 100, 0))
    assert grant.ratio == pytest.approx(1.2)
    assert store.limiter_levels("k", lim)["tokens"] == pytest.approx(1000 - 5 * 20 - 120)
    # settled with the ratio it was charged with: exactly what the provider counted
    assert store.limiter_settle("k", lim, (1, 100, 0), (1, 120, 0), grant.ratio)["tokens"] == \
        pytest.approx(1000 - 5 * 20 - 120)


def test_the_queue_is_first_come_first_served(store):
    lim = _limits(("tokens", 10, 10.0))
    assert store.limiter_acquire("k", lim, (1, 10, 0)).wait == 0.0  # empty now
    big = store.limiter_acquire("k", lim, (1, 10, 0))
    assert big.wait == pytest.approx(1.0) and big.ticket
    small = store.limiter_acquire("k", lim, (1, 1, 0))
    assert small.wait == pytest.approx(1.1) and small.ticket != big.ticket  # behind big
    assert small.waiting == 2
    store.clock.advance(0.5)
    # a newcomer never jumps the queue, not even try-style (max_wait=0)
    assert store.limiter_acquire("k", lim, (1, 0, 0), max_wait=0).wait > 0
    store.clock.advance(0.6)  # t=1.1: the bucket holds 10, but big is first
    again = store.limiter_acquire("k", lim, (1, 1, 0), ticket=small.ticket)
    assert again.wait > 0 and again.ticket == small.ticket
    assert store.limiter_acquire("k", lim, (1, 10, 0), ticket=big.ticket).wait == 0.0
    store.clock.advance(0.1)
    assert store.limiter_acquire("k", lim, (1, 1, 0), ticket=small.ticket).wait == 0.0
    assert store.limiter_levels("k", lim)["waiting"] == 0


def test_a_ticket_left_or_expired_lets_the_next_move_up(store):
    lim = _limits(("requests", 1, 1.0))
    store.limiter_acquire("k", lim, (1, 0, 0))
    first = store.limiter_acquire("k", lim, (1, 0, 0), lease=2.0)
    second = store.limiter_acquire("k", lim, (1, 0, 0), lease=2.0)
    assert (first.wait, second.wait) == (pytest.approx(1.0), pytest.approx(2.0))
    store.limiter_leave("k", first.ticket)  # first gave up
    store.clock.advance(1.0)
    assert store.limiter_acquire("k", lim, (1, 0, 0), ticket=second.ticket).wait == 0.0
    # a crashed waiter: its ticket expires `lease` after it was due back
    crashed = store.limiter_acquire("k", lim, (1, 0, 0), lease=2.0)
    late = store.limiter_acquire("k", lim, (1, 0, 0), lease=2.0)
    assert crashed.wait == pytest.approx(1.0) and late.wait == pytest.approx(2.0)
    store.clock.advance(2.5)  # crashed was due at 1.0, gone at 3.0
    assert store.limiter_acquire("k", lim, (1, 0, 0), ticket=late.ticket).wait > 0
    store.clock.advance(0.6)
    assert store.limiter_levels("k", lim)["waiting"] == 1
    assert store.limiter_acquire("k", lim, (1, 0, 0), ticket=late.ticket).wait == 0.0


def test_bad_input_is_rejected(store):
    with pytest.raises(ValueError, match="key"):
        store.limiter_acquire("", REQ_TOK, (1, 1, 0))
    with pytest.raises(TypeError, match="limits must be"):
        store.limiter_acquire("k", [("tokens", 10, 1.0)], (1, 1, 0))
    with pytest.raises(ValueError, match="distinct kinds"):
        store.limiter_acquire("k", REQ_TOK + REQ_TOK[:1], (1, 1, 0))
    with pytest.raises(ValueError, match=r"demand\[1\] must be a finite number >= 0, got -1"):
        store.limiter_acquire("k", REQ_TOK, (1, -1, 0))
    with pytest.raises(TypeError, match="demand must be"):
        store.limiter_acquire("k", REQ_TOK, 5)
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0, got -1"):
        store.limiter_pause("k", REQ_TOK, -1)
    with pytest.raises(ValueError, match=r"seconds .* got inf"):
        store.limiter_pause("k", REQ_TOK, float("inf"))
    with pytest.raises(TypeError, match="ticket must be"):
        store.limiter_acquire("k", REQ_TOK, (1, 1, 0), ticket=7)


def test_breaker_protocol(store):
    cfg = BreakerConfig(failure_threshold=2, reset_timeout=10, half_open_max_calls=1,
                        probe_timeout=5)
    a = store.breaker_admit("b", cfg)
    assert a.allowed and a.state == "closed"
    store.breaker_record("b", cfg, "failure", generation=a.generation)
    out = store.breaker_record("b", cfg, "failure", generation=a.generation)
    assert out.state == "open" and out.transitions == (("closed", "open"),)
    rejected = store.breaker_admit("b", cfg)
    assert not rejected.allowed and rejected.retry_after == pytest.approx(10)
    store.clock.advance(10)
    probe = store.breaker_admit("b", cfg)
    assert probe.allowed and probe.lease and probe.transitions == (("open", "half_open"),)
    assert not store.breaker_admit("b", cfg).allowed  # one probe only
    # a stale result from the earlier (closed) episode changes nothing
    assert store.breaker_record("b", cfg, "success", generation=a.generation).state == "half_open"
    # the probe dies: its lease expires and the next caller gets it
    store.clock.advance(5)
    second = store.breaker_admit("b", cfg)
    assert second.allowed and second.lease != probe.lease
    out = store.breaker_record("b", cfg, "success", generation=second.generation,
                               lease=second.lease)
    assert out.state == "closed" and out.transitions == (("half_open", "closed"),)
    snap = store.breaker_read("b", cfg)
    assert snap.counters["opened_count"] == 1 and snap.counters["rejections"] == 2
    assert snap.state == "closed" and snap.trials_in_flight == 0


def test_sqlite_state_survives_reopening(tmp_path):
    clock = VirtualClock(50.0)
    lim = _limits(("tokens", 10, 1.0))
    with SQLiteStateStore(tmp_path / "s.db", clock=clock) as s:
        s.limiter_acquire("k", lim, (1, 4, 0))
    with SQLiteStateStore(tmp_path / "s.db", clock=clock) as s:
        assert s.limiter_levels("k", lim)["tokens"] == pytest.approx(6.0)


def test_from_url_and_env(tmp_path, monkeypatch):
    assert isinstance(from_url("memory://"), MemoryStateStore)
    s = from_url(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(s, SQLiteStateStore) and Path(s.path) == tmp_path / "a.db"
    with pytest.raises(ValueError, match="unknown scheme 'postgres'"):
        from_url("postgres://x")
    with pytest.raises(ValueError, match="url"):
        from_url("state.db")
    monkeypatch.delenv("LLM_PATTERNS_STATE", raising=False)
    with pytest.raises(ValueError, match="LLM_PATTERNS_STATE"):
        from_env()
    monkeypatch.setenv("LLM_PATTERNS_STATE", f"sqlite:///{tmp_path}/b.db")
    assert Path(from_env().path) == tmp_path / "b.db"
    with pytest.raises(ValueError, match="path must be a file"):
        SQLiteStateStore(":memory:")


# ----------------------------------------------------------------------------- shared limiter


def test_shared_limiter_behaves_like_ratelimiter(store):
    clock = store.clock
    shared = SharedRateLimiter(rpm=60, tpm=6000, burst_seconds=2, store=store, name="p")
    local = RateLimiter(rpm=60, tpm=6000, burst_seconds=2, clock=VirtualClock(1000.0))
    got_shared = [shared.acquire(100) for _ in range(5)]
    got_local = [local.acquire(100) for _ in range(5)]
    assert got_shared == pytest.approx(got_local) == [0, 0, 1, 1, 1]
    assert clock.now() == pytest.approx(1003.0)
    st = shared.status()
    for k in ("requests_available", "tokens_available", "rpm", "tpm", "waiting"):
        assert k in st
    assert st["waiting"] == 0 and st["rpm"] == 60


def test_shared_limiter_max_wait_takes_nothing(store):
    lim = SharedRateLimiter(rpm=60, burst_seconds=1, max_wait=0.5, store=store, name="p")
    assert lim.try_acquire()
    assert not lim.try_acquire()
    with pytest.raises(RateLimitTimeout) as info:
        lim.acquire()
    assert info.value.retry_after == pytest.approx(1.0)
    assert lim.status()["requests_available"] == pytest.approx(0.0)  # nothing taken
    with pytest.raises(ValueError, match="demand=10 is more than the tokens bucket"):
        SharedRateLimiter(tpm=60, burst_seconds=1, store=store, name="q").acquire(10)


def test_shared_limiter_penalize_settle_headers(store):
    lim = SharedRateLimiter(rpm=600, tpm=6000, burst_seconds=1, store=store, name="p")
    lim.penalize(3)
    assert lim.status()["penalty_remaining"] == pytest.approx(3)
    assert lim.acquire(10) == pytest.approx(3)
    lim.settle(10, 60)  # charged 50 more
    assert lim.status()["tokens_available"] == pytest.approx(100 - 60)
    lim.update_from_headers({"x-ratelimit-remaining-tokens": "20",
                             "x-ratelimit-remaining-requests": "99"})
    st = lim.status()
    assert st["tokens_available"] == pytest.approx(20)  # lowered
    assert st["requests_available"] == pytest.approx(9)  # 99 is higher: not raised


def test_shared_limiter_async(store):
    lim = SharedRateLimiter(rpm=60, burst_seconds=1, store=store, name="p")

    async def main():
        return [await lim.acquire_async(), await lim.acquire_async()]

    assert asyncio.run(main()) == pytest.approx([0.0, 1.0])


# ----------------------------------------------------------------------------- shared breaker


def test_shared_breaker_semantics(store):
    events = []
    br = SharedCircuitBreaker("p", failure_threshold=2, reset_timeout=10, store=store)
    br.on_state_change(lambda b, old, new: events.append((old.value, new.value)))
    assert br.state is CircuitState.CLOSED
    br.record_failure(RateLimitError("429"))  # a 429 is not an outage
    assert br.consecutive_failures == 0
    for _ in range(2):
        with pytest.raises(ServerError):
            br.call(_raise, ServerError("503"))
    assert br.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        br.call(lambda: 1)
    assert info.value.retry_after == pytest.approx(10)
    store.clock.advance(10)
    assert br.state is CircuitState.HALF_OPEN
    assert br.allow_request() and not br.allow_request()  # exactly one trial
    br.record_success()
    assert br.state is CircuitState.CLOSED
    assert events == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    h = br.health()
    assert h["opened_count"] == 1 and h["rejections"] == 2 and h["failures"] == 2


def test_a_second_breaker_object_sees_the_shared_state(store):
    a = SharedCircuitBreaker("p", failure_threshold=1, reset_timeout=10, store=store)
    b = SharedCircuitBreaker("p", failure_threshold=1, reset_timeout=10, store=store)
    seen = []
    assert b.state is CircuitState.CLOSED
    b.on_state_change(lambda br, old, new: seen.append(new.value))
    a.record_failure()
    assert not b.allow_request()  # opened by a, refused to b
    assert seen == ["open"]
    store.clock.advance(10)
    assert b.call(lambda: "ok") == "ok"  # b takes the probe and closes it for a too
    assert a.state is CircuitState.CLOSED


def _raise(error):
    raise error


def test_resilient_client_takes_shared_limiters_and_breakers(store):
    clock = store.clock
    primary = MockLLMServer(clock=clock, seed=1, name="primary")
    secondary = MockLLMServer(clock=clock, seed=2, name="secondary")
    primary.take_down(503)
    providers = [
        OpenAIProvider(n, "gpt-4o-mini", base_url=s.base_url, api_key="test-key",
                       client=s.client(), clock=clock)
        for n, s in (("primary", primary), ("secondary", secondary))
    ]
    breaker = SharedCircuitBreaker("primary", failure_threshold=2, reset_timeout=30, store=store)
    client = ResilientClient(
        providers,
        limiters={n: SharedRateLimiter(rpm=600, tpm=100_000, store=store, name=n)
                  for n in ("primary", "secondary")},
        breakers={"primary": breaker}, clock=clock,
    )
    for _ in range(3):
        r = client.complete("hello", max_tokens=16)
        assert r.provider == "secondary" and r.fallback_used
    assert breaker.state is CircuitState.OPEN
    assert primary.stats["requests"] == 2  # the third call never reached the dead primary
    limiter = client.health()["primary"]["limiter"]
    assert limiter["store"] == store.url and limiter["requests_available"] <= 600


# ----------------------------------------------------------------------------- processes

_RPM, _BURST = 600.0, 1.0  # 10 requests/s, bucket of 10
_CAP, _RATE = _RPM / 60 * _BURST, _RPM / 60


class _RecordingClock:
    """Wall time; remembers the last reading (taken inside the store's write transaction)."""

    def __init__(self) -> None:
        self.last = 0.0

    def now(self) -> float:
        self.last = time.time()
        return self.last

    def sleep(self, s: float) -> None:
        time.sleep(max(0.0, s))


def _limiter_worker(mode: str, path: str, until: float, out) -> None:
    clock = _RecordingClock()
    if mode == "shared":
        store = SQLiteStateStore(path, clock=clock)
        # the limiter sleeps/stamps events on its own clock: clock.last stays the store's read
        lim = SharedRateLimiter(rpm=_RPM, burst_seconds=_BURST, store=store, name="api",
                                clock=SystemClock())
    else:  # what an in-process limiter per worker gives: every process has its own budget
        lim = RateLimiter(rpm=_RPM, burst_seconds=_BURST, clock=clock)
    grants = []
    while time.time() < until:
        if lim.try_acquire():
            grants.append(clock.last)
        else:
            time.sleep(0.005)
    out.put(grants)


def _run_limiter_processes(mode: str, path: str, n: int = 4, seconds: float = 1.2) -> list:
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    q = ctx.Queue()
    until = time.time() + 0.3 + seconds
    procs = [ctx.Process(target=_limiter_worker, args=(mode, path, until, q)) for _ in range(n)]
    for p in procs:
        p.start()
    grants = sorted(g for _ in procs for g in q.get(timeout=30))
    for p in procs:
        p.join(timeout=30)
    return grants


def _violations(grants: list[float]) -> list[tuple[int, float]]:
    """Windows [g_i, g_j] holding more grants than capacity + rate * length allows."""
    bad = []
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            if j - i + 1 > _CAP + _RATE * (grants[j] - grants[i]) + 1e-6:
                bad.append((j - i + 1, grants[j] - grants[i]))
    return bad


@pytest.mark.slow
def test_processes_share_one_sqlite_limiter(tmp_path):
    grants = _run_limiter_processes("shared", str(tmp_path / "state.db"))
    assert _violations(grants) == []
    # and every 1-second window holds at most capacity + 1 s of refill
    assert max(sum(1 for h in grants if g <= h < g + 1.0) for g in grants) <= _CAP + _RATE
    assert len(grants) >= _CAP + _RATE * 0.8  # it does grant (not starved)


@pytest.mark.slow
def test_in_process_limiters_in_many_processes_overshoot(tmp_path):
    """The control: the same check catches per-process limiters (4 budgets, not one)."""
    grants = _run_limiter_processes("local", str(tmp_path / "unused.db"))
    assert _violations(grants), "per-process limiters should exceed the shared RPM"


def _breaker_worker(path: str, barrier, out) -> None:
    store = SQLiteStateStore(path)
    br = SharedCircuitBreaker("api", failure_threshold=3, reset_timeout=0.5, store=store)
    barrier.wait()
    out.put(("open_seen", br.state.value))
    barrier.wait()  # the parent waits for the cooldown
    time.sleep(0.6)
    barrier.wait()
    out.put(("probe", br.allow_request()))


@pytest.mark.slow
def test_processes_share_one_breaker(tmp_path):
    path = str(tmp_path / "state.db")
    n = 8
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    barrier, q = ctx.Barrier(n + 1), ctx.Queue()
    procs = [ctx.Process(target=_breaker_worker, args=(path, barrier, q)) for _ in range(n)]
    for p in procs:
        p.start()
    parent = SharedCircuitBreaker("api", failure_threshold=3, reset_timeout=0.5,
                                  store=SQLiteStateStore(path))
    for _ in range(3):
        parent.record_failure(ServerError("503"))
    assert parent.state is CircuitState.OPEN
    barrier.wait()
    barrier.wait()
    barrier.wait()  # all 8 ask for the half-open probe at once
    answers = [q.get(timeout=30) for _ in range(2 * n)]
    for p in procs:
        p.join(timeout=30)
    assert [v for k, v in answers if k == "open_seen"] == ["open"] * n
    assert sorted(v for k, v in answers if k == "probe") == [False] * (n - 1) + [True]


# ----------------------------------------------------------------------------- lost updates


def _rmw_worker(path: str, increments: int, barrier) -> None:
    """Variable semantics: get, compute, set (an upsert); no compare-and-set, no lock held."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    barrier.wait()
    for _ in range(increments):
        row = conn.execute("SELECT val FROM variable WHERE key = 'spend'").fetchone()
        value = json.loads(row[0]) + 1
        time.sleep(0.01)  # the task does its work between the read and the write
        conn.execute("INSERT INTO variable (key, val) VALUES ('spend', ?) ON CONFLICT (key) "
                     "DO UPDATE SET val = excluded.val", (json.dumps(value),))


def _ledger_worker(path: str, increments: int, barrier) -> None:
    ledger = SQLiteLedger(path)
    barrier.wait()
    for i in range(increments):
        ledger.add(CostRecord(time=0.0, model="m", provider="p", dag_id="d", task_id=f"t{i}",
                              run_id="r", prompt_tokens=1, completion_tokens=1, cached_tokens=0,
                              cost=Decimal("0.001")))
        time.sleep(0.01)


@pytest.mark.slow
def test_read_modify_write_loses_updates_the_ledger_does_not(tmp_path):
    """What ``Variable.get`` + ``Variable.set`` from parallel tasks does (airflow.md §5: 7/40
    measured with LocalExecutor), simulated with the same semantics on SQLite: each worker
    reads, works, writes back; the ledger appends in one locked transaction instead."""
    n, k = 8, 5
    var = str(tmp_path / "variables.db")
    with sqlite3.connect(var) as c:
        c.execute("CREATE TABLE variable (key TEXT PRIMARY KEY, val TEXT)")
        c.execute("INSERT INTO variable VALUES ('spend', '0')")
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    for target, path in ((_rmw_worker, var), (_ledger_worker, str(tmp_path / "ledger.db"))):
        SQLiteLedger(str(tmp_path / "ledger.db")).close()
        barrier = ctx.Barrier(n)
        procs = [ctx.Process(target=target, args=(path, k, barrier)) for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    with sqlite3.connect(var) as c:
        counted = json.loads(c.execute("SELECT val FROM variable").fetchone()[0])
    ledger = SQLiteLedger(str(tmp_path / "ledger.db"))
    assert counted < n * k, f"read-modify-write kept {counted}/{n * k}: no update was lost?"
    assert ledger.count() == n * k
    assert ledger.total() == Decimal("0.001") * n * k  # exact


# ----------------------------------------------------------------------------- import hygiene


@pytest.mark.slow
def test_core_never_imports_airflow():
    """``import llm_patterns``, every core module, and even ``llm_patterns.airflow`` itself
    leave Airflow unimported (it is imported only when an Airflow-bound name is used)."""
    code = (
        "import sys, pkgutil, importlib, llm_patterns\n"
        "assert 'airflow' not in sys.modules\n"
        "for m in pkgutil.walk_packages(llm_patterns.__path__, 'llm_patterns.'):\n"
        "    if m.name.endswith('__main__'):\n"
        "        continue\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(n for n in sys.modules if n == 'airflow' or n.startswith('airflow.'))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": "/nonexistent-airflow-home"}
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
