"""SharedRateLimiter across processes and under a slow store (issues 19 and 20).

- Fair shares: 6 processes with equal demand get shares within +-25 % of each other, and
  grants follow the order in which waiters reached the store's queue (FIFO across processes,
  to the store clock's resolution), on SQLite and on a real Redis.
- The event loop never waits for the store: a SQLite file locked by another process, a
  SIGSTOPped redis-server; the loop's largest stall is measured (and a blocking call in the
  loop is shown to be caught by the same measurement).
- Redis back from an outage: calls are served again within a second, however long it was;
  a refusal names the real ``on_failure`` mode.

The multi-process and stall tests run in real time (processes cannot share a virtual clock; a
stall is real time by definition): a few seconds each.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llm_patterns.clock import SystemClock, VirtualClock
from llm_patterns.errors import RateLimitTimeout
from llm_patterns.state import SharedRateLimiter, SQLiteStateStore
from llm_patterns.state.base import WallClock

CTX = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
N_PROCS = 6
RPM = 1800.0  # 30 grants per second shared by everyone (a bucket of 1.5: no opening burst
# for the first process to start to take alone), the limit is the bottleneck


# ----------------------------------------------------------------------------- fair shares


def _make_store(kind: str, where: str):
    if kind == "sqlite":
        return SQLiteStateStore(where)
    from llm_patterns.state.redis import RedisStore

    return RedisStore(where, prefix="fair")


def _fair_worker(kind: str, where: str, start_at: float, until: float, out) -> None:
    store = _make_store(kind, where)
    lim = SharedRateLimiter(rpm=RPM, burst_seconds=0.05, store=store, name="api",
                            clock=SystemClock(), max_wait=30)
    grants = []  # (store time queued, store time granted)
    queued = {}
    lim.subscribe(lambda e: queued.__setitem__("at", e.data["at"]) if e.kind == "wait" else
                  grants.append((queued.pop("at", e.data["at"]), e.data["at"]))
                  if e.kind == "acquire" else None)
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < until:
        lim.acquire()  # equal demand: one request at a time, as fast as granted
    out.put(grants)


def _run_fair(kind: str, where: str, seconds: float = 3.0) -> list[list[tuple[float, float]]]:
    q = CTX.Queue()
    start_at = time.time() + 0.5  # every worker starts together
    procs = [CTX.Process(target=_fair_worker, args=(kind, where, start_at, start_at + seconds,
                                                    q)) for _ in range(N_PROCS)]
    for p in procs:
        p.start()
    per_proc = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return per_proc


def _assert_fair_and_fifo(per_proc: list[list[tuple[float, float]]]) -> None:
    shares = [len(g) for g in per_proc]
    mean = sum(shares) / len(shares)
    assert mean >= 10, shares  # enough grants to judge
    assert all(abs(s - mean) <= 0.25 * mean for s in shares), shares
    # FIFO: ordered by the store time each waiter joined the queue, grants never go backwards
    # (the store reads its clock inside its atomic step: one order for everything)
    waits = sorted((queued, granted) for g in per_proc for queued, granted in g)
    out_of_order = [(a, b) for a, b in itertools.pairwise(waits) if b[1] < a[1] - 1e-6]
    assert not out_of_order, out_of_order[:5]


def test_fairness_checker_rejects_an_unfair_run():
    """The checker catches what the old polling limiter gave: [12, 13, 26, 10, 10, 114]."""
    unfair = [[(float(i), float(i))] * n for i, n in enumerate([12, 13, 26, 10, 10, 114])]
    with pytest.raises(AssertionError):
        _assert_fair_and_fifo(unfair)
    overtaken = [[(0.0, 2.0)] * 10, [(1.0, 1.5)] * 10]
    with pytest.raises(AssertionError):
        _assert_fair_and_fifo(overtaken)


@pytest.mark.slow
def test_six_processes_get_fair_fifo_shares_on_sqlite(tmp_path):
    _assert_fair_and_fifo(_run_fair("sqlite", str(tmp_path / "state.db")))


@pytest.mark.slow
@pytest.mark.redis
def test_six_processes_get_fair_fifo_shares_on_redis(tmp_path):
    redis_store = pytest.importorskip("test_redis_store")
    srv = redis_store.RedisServer(tmp_path)
    srv.start()
    try:
        _assert_fair_and_fifo(_run_fair("redis", srv.url))
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- loop stalls


async def _largest_stall(work, tick: float = 0.005):
    """Run ``work()`` while a ticker measures the loop's largest gap between ticks."""
    gaps = [0.0]
    done = asyncio.Event()

    async def ticker():
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(tick)
            now = time.perf_counter()
            gaps.append(now - last - tick)
            last = now

    t = asyncio.create_task(ticker())
    await asyncio.sleep(tick * 3)
    try:
        result = await work()
    finally:
        done.set()
        await t
    return max(gaps), result


_LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def _hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _LOCKER, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow
def test_a_locked_sqlite_file_never_stalls_the_event_loop(tmp_path):
    path = tmp_path / "state.db"
    store = SQLiteStateStore(path)
    lim = SharedRateLimiter(rpm=600, tpm=60_000, store=store, name="api", clock=WallClock())
    lim.acquire(10)  # the file and its table exist

    async def work():
        t0 = time.perf_counter()
        await lim.acquire_async(10)  # waits for the other process's lock, in a thread
        lim.settle(10, 20)  # a sync bookkeeping call from the loop: handed to a worker
        await lim.asettle(10, 30)
        await lim.apenalize(0.01)
        return time.perf_counter() - t0

    locker = _hold_write_lock(path, 1.0)
    try:
        stall, waited = asyncio.run(_largest_stall(work))
    finally:
        locker.wait(10)
    assert waited > 0.5  # the lock was really in the way ...
    assert stall < 0.25, stall  # ... and the loop kept running meanwhile
    lim.close()
    assert lim.status()["tokens_available"] < 1000 - 10  # the bookkeeping did land


@pytest.mark.slow
def test_the_stall_measure_catches_a_blocking_store_call(tmp_path):
    """The control: the same store call made ON the loop stalls it for the lock's duration."""
    path = tmp_path / "state.db"
    store = SQLiteStateStore(path)
    lim = SharedRateLimiter(rpm=600, store=store, name="api", clock=WallClock())
    lim.acquire()

    async def blocking():
        store.limiter_acquire(lim.key, lim.limits, (1, 0, 0))  # what the old code did

    locker = _hold_write_lock(path, 0.8)
    try:
        stall, _ = asyncio.run(_largest_stall(blocking))
    finally:
        locker.wait(10)
    assert stall > 0.5


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.timeout(60)
def test_a_frozen_redis_never_stalls_the_event_loop(tmp_path):
    redis_store = pytest.importorskip("test_redis_store")
    from llm_patterns.state.redis import LimiterStateUnavailable, RedisStore

    srv = redis_store.RedisServer(tmp_path)
    srv.start()
    try:
        store = RedisStore(srv.url, socket_timeout=0.8, connect_timeout=0.8, prefix="stall")
        lim = SharedRateLimiter(rpm=600, store=store, name="api")
        lim.acquire()

        async def work():
            lim.penalize(0.001)  # bookkeeping from the loop: a worker thread waits for Redis
            with pytest.raises(LimiterStateUnavailable):
                await lim.acquire_async()  # the socket timeout, in a thread

        srv.proc.send_signal(__import__("signal").SIGSTOP)
        try:
            stall, _ = asyncio.run(_largest_stall(work))
        finally:
            srv.proc.send_signal(__import__("signal").SIGCONT)
        assert stall < 0.25, stall
        lim.close()
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- Redis outages


class _FlakyRedis:
    """A stand-in redis client for the back-off schedule on a virtual clock: its scripts fail
    with ConnectionError while ``down``. (The real server is used for everything else.)"""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def evalsha(self, *a, **k):  # marks it as a client
        raise NotImplementedError

    def register_script(self, source):
        def run(keys=(), args=(), client=None):
            self.calls += 1
            if self.down:
                raise ConnectionError("redis is down")
            if args and args[0] == "acquire" and "limiter op" in source:
                return ["0", "", "1", "0", "0"]
            return ["requests", "1", "pause_remaining", "0", "ratio", "1", "waiting", "0"]
        return run


def test_recovery_after_a_long_outage_is_prompt_and_probes_are_single():
    from llm_patterns.state.redis import RedisStore, StateStoreUnavailable

    clock = VirtualClock(0.0)
    fake = _FlakyRedis()
    store = RedisStore(fake, clock=clock, on_failure="closed")
    lim = SharedRateLimiter(rpm=600, store=store, name="api", clock=clock)
    assert lim.try_acquire()
    fake.down = True
    while clock.now() < 20.0:  # a 20 s outage, callers knocking every 10 ms
        with pytest.raises(RateLimitTimeout):
            lim.try_acquire()
        clock.advance(0.01)
    probes_during_outage = fake.calls - 1
    assert probes_during_outage <= 20 / 0.25 + 1  # back-off: never a probe per caller
    fake.down = False
    back = clock.now()
    while True:
        try:
            lim.try_acquire()
            break
        except StateStoreUnavailable:
            clock.advance(0.01)
    assert clock.now() - back <= 1.0 + 1e-9  # max_reconnect_after, not 13.6 s


@pytest.mark.redis
@pytest.mark.slow
def test_a_real_redis_back_from_an_outage_serves_within_a_second(tmp_path, caplog):
    redis_store = pytest.importorskip("test_redis_store")
    from llm_patterns.state.budget import SharedBudget
    from llm_patterns.state.redis import RedisStore, StateStoreUnavailable

    caplog.set_level(logging.INFO, logger="llm_patterns.state")
    srv = redis_store.RedisServer(tmp_path)
    srv.start()
    try:
        store = RedisStore(srv.url, on_failure="closed", socket_timeout=0.5,
                           connect_timeout=0.5, prefix="outage")
        open_store = RedisStore(srv.url, on_failure="open", socket_timeout=0.5,
                                connect_timeout=0.5, prefix="outage")
        lim = SharedRateLimiter(rpm=6000, store=store, name="api")
        assert lim.try_acquire()
        srv.stop()
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            with pytest.raises(StateStoreUnavailable) as info:
                lim.try_acquire()
            time.sleep(0.02)
        assert "on_failure='closed'" in str(info.value)
        with pytest.raises(StateStoreUnavailable) as budget_info:  # open store, budget closed
            SharedBudget(1, store=open_store, name="b").reserve("0.1")
        assert "fail closed whatever on_failure ('open')" in str(budget_info.value)
        assert "on_failure='closed'" not in str(budget_info.value)
        srv.start()
        back = time.monotonic()
        while True:
            try:
                if lim.try_acquire():
                    break
            except StateStoreUnavailable:
                time.sleep(0.01)
        assert time.monotonic() - back < 1.5
    finally:
        srv.stop()
