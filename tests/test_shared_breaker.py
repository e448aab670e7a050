"""SharedCircuitBreaker under a slow or absent store (issues 19 and 20).

- The event loop never waits for the store: with a SQLite file locked by another process and
  with a SIGSTOPped redis-server, ``call_async`` / ``admit_async`` and permits settled from the
  loop keep the loop's largest stall under 0.25 s, while the same store call made on the loop
  stalls it for the lock's duration (the control: the measure sees a blocking call).
- A coroutine cancelled while its admission waits for the store never wedges half-open: the
  trial the store granted meanwhile is given back.
- Redis back from an outage with ``on_failure="closed"``: calls are admitted again within the
  store's longest back-off (one second), however long the outage was; during it, one probe per
  back-off, never one per caller.

The stall tests run in real time (a stall is real time by definition): about a second each.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import pytest
import test_shared_limiter
from test_shared_limiter import _hold_write_lock, _largest_stall

from llm_patterns.circuit_breaker import CircuitState
from llm_patterns.clock import VirtualClock
from llm_patterns.errors import CircuitOpenError, ServerError
from llm_patterns.state import SharedCircuitBreaker, SQLiteStateStore
from llm_patterns.state.base import WallClock


async def _ok() -> str:
    return "ok"


def _outage() -> ServerError:
    return ServerError("down", status_code=503)


# ----------------------------------------------------------------------------- SQLite locked


@pytest.mark.slow
def test_a_locked_sqlite_file_never_stalls_the_event_loop(tmp_path):
    path = tmp_path / "state.db"
    br = SharedCircuitBreaker("api", failure_threshold=3, store=SQLiteStateStore(path),
                              clock=WallClock())
    assert br.call(lambda: "ok") == "ok"  # the file and its table exist

    async def work():
        t0 = time.perf_counter()
        assert await br.call_async(_ok) == "ok"  # admission and outcome wait in a thread
        permit = await br.admit_async()
        permit.failure(_outage())  # settled from the loop: handed to the worker thread
        with pytest.raises(ServerError):
            await br.call_async(_raise_outage)
        return time.perf_counter() - t0

    locker = _hold_write_lock(path, 1.0)
    try:
        stall, waited = asyncio.run(_largest_stall(work))
    finally:
        locker.wait(10)
    assert waited > 0.5  # the lock was really in the way ...
    assert stall < 0.25, stall  # ... and the loop kept running meanwhile
    br.close()  # the outcomes handed to the worker are recorded
    health = br.health()
    assert (health["calls"], health["successes"], health["failures"]) == (4, 2, 2)
    assert health["consecutive_failures"] == 2


async def _raise_outage():
    raise _outage()


@pytest.mark.slow
def test_the_stall_measure_catches_a_blocking_breaker_call(tmp_path):
    """The control: the same breaker, called with its sync API on the loop, stalls it."""
    path = tmp_path / "state.db"
    br = SharedCircuitBreaker("api", store=SQLiteStateStore(path), clock=WallClock())
    br.call(lambda: "ok")

    async def blocking():
        br.call(lambda: "ok")  # what the old call_async did: store calls on the loop

    locker = _hold_write_lock(path, 0.8)
    try:
        stall, _ = asyncio.run(_largest_stall(blocking))
    finally:
        locker.wait(10)
    assert stall > 0.5


@pytest.mark.slow
def test_a_stream_through_the_client_never_stalls_the_loop_on_its_breaker(tmp_path):
    """``ResilientClient.astream`` asks a store-backed breaker with ``admit_async``."""
    from llm_patterns import MockLLMServer, ResilientClient

    path = tmp_path / "state.db"
    br = SharedCircuitBreaker("p", store=SQLiteStateStore(path))
    br.call(lambda: "ok")
    clock = VirtualClock()
    client = ResilientClient([MockLLMServer(clock=clock, latency=0.0).provider("p")],
                             breakers={"p": br}, clock=clock)

    async def work():
        t0 = time.perf_counter()
        async with client.astream("hello there", max_tokens=16) as stream:
            text = "".join([delta async for delta in stream])
        return time.perf_counter() - t0, text

    locker = _hold_write_lock(path, 1.0)
    try:
        stall, (waited, text) = asyncio.run(_largest_stall(work))
    finally:
        locker.wait(10)
    assert text and waited > 0.5
    assert stall < 0.25, stall
    br.close()
    assert br.health()["successes"] == 2


@pytest.mark.slow
def test_a_cancelled_admission_gives_its_trial_back(tmp_path):
    """Cancelled while the store (locked) decides: the lease it then grants is released."""
    path = tmp_path / "state.db"
    store = SQLiteStateStore(path)
    br = SharedCircuitBreaker("api", failure_threshold=1, reset_timeout=0.2,
                              probe_timeout=60.0, store=store)
    br.record_failure(_outage())
    time.sleep(0.25)  # half-open now: one trial, whose lease would last a minute

    async def cancel_then_ask():
        task = asyncio.ensure_future(br.admit_async())
        await asyncio.sleep(0.05)  # the worker waits for the other process's lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(1.0)  # the lock is released; the store grants the lost admission
        return await br.call_async(_ok)  # the trial slot is free again

    locker = _hold_write_lock(path, 0.5)
    try:
        assert asyncio.run(cancel_then_ask()) == "ok"
    finally:
        locker.wait(10)
    assert br.state is CircuitState.CLOSED
    assert br.health()["calls"] == 2  # the lost admission was granted, then given back
    br.close()


def test_outcomes_settled_from_the_loop_land_in_order(tmp_path):
    """Handed to the worker thread, an outcome still lands before this breaker's next
    admission or read: the breaker reads its own writes."""
    clock = VirtualClock(10.0)
    br = SharedCircuitBreaker("api", failure_threshold=2, reset_timeout=30.0,
                              store=SQLiteStateStore(tmp_path / "s.db", clock=clock))

    async def main():
        for _ in range(2):
            permit = await br.admit_async()
            permit.failure(_outage())  # sync, from the loop: handed off, not awaited
        states = [br.state]  # a sync read from the loop: after the handed-off writes
        with pytest.raises(CircuitOpenError):
            await br.admit_async()
        clock.advance(30)
        trial = await br.admit_async()
        trial.success()
        states.append(br.state)
        return states

    assert asyncio.run(main()) == [CircuitState.OPEN, CircuitState.CLOSED]
    br.close()


# ----------------------------------------------------------------------------- Redis frozen


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.timeout(60)
def test_a_frozen_redis_never_stalls_the_event_loop(tmp_path):
    redis_store = pytest.importorskip("test_redis_store")
    from llm_patterns.state.redis import BreakerStateUnavailable, RedisStore

    srv = redis_store.RedisServer(tmp_path)
    srv.start()
    try:
        store = RedisStore(srv.url, socket_timeout=0.8, connect_timeout=0.8, prefix="stall")
        br = SharedCircuitBreaker("api", store=store)
        permit = br.admit()

        async def work():
            permit.failure(_outage())  # from the loop: a worker thread waits for Redis
            with pytest.raises(BreakerStateUnavailable):  # the socket timeout, in a thread
                await br.call_async(_ok)

        srv.proc.send_signal(signal.SIGSTOP)
        try:
            stall, _ = asyncio.run(_largest_stall(work))
        finally:
            srv.proc.send_signal(signal.SIGCONT)
        assert stall < 0.25, stall
        br.close()
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- Redis outages


class _FlakyRedis(test_shared_limiter._FlakyRedis):
    """The limiter tests' stand-in redis client (its scripts fail with ConnectionError while
    ``down``), whose breaker script admits (closed) while up."""

    def register_script(self, source):
        script = super().register_script(source)

        def run(keys=(), args=(), client=None):
            answer = script(keys, args, client)  # counts the call, raises while down
            return ["1", "closed", "0", "", "0", "0"] if "breaker op" in source else answer
        return run


def test_recovery_after_a_long_outage_is_prompt_and_probes_are_single():
    from llm_patterns.state.redis import BreakerStateUnavailable, RedisStore

    clock = VirtualClock(0.0)
    fake = _FlakyRedis()
    store = RedisStore(fake, clock=clock, on_failure="closed")
    br = SharedCircuitBreaker("api", store=store)
    assert br.admit().trial is False
    fake.down = True
    while clock.now() < 20.0:  # a 20 s outage, callers knocking every 10 ms
        with pytest.raises(BreakerStateUnavailable) as info:
            br.admit()
        assert 0 < info.value.retry_after <= 1.0  # when the store tries Redis again
        clock.advance(0.01)
    assert fake.calls - 1 <= 20 / 0.25 + 1  # back-off: never a probe per caller
    assert "on_failure='closed'" in str(info.value)
    fake.down = False
    back = clock.now()
    while True:
        try:
            br.admit()
            break
        except CircuitOpenError:
            clock.advance(0.01)
    assert clock.now() - back <= 1.0 + 1e-9  # max_reconnect_after, not 13.6 s


@pytest.mark.redis
@pytest.mark.slow
def test_a_real_redis_back_from_an_outage_admits_within_a_second(tmp_path, caplog):
    redis_store = pytest.importorskip("test_redis_store")
    from llm_patterns.state.redis import BreakerStateUnavailable, RedisStore

    caplog.set_level(logging.INFO, logger="llm_patterns.state")
    srv = redis_store.RedisServer(tmp_path)
    srv.start()
    try:
        store = RedisStore(srv.url, on_failure="closed", socket_timeout=0.5,
                           connect_timeout=0.5, prefix="outage")
        br = SharedCircuitBreaker("api", failure_threshold=2, store=store)
        assert br.call(lambda: "ok") == "ok"
        srv.stop()
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            with pytest.raises(BreakerStateUnavailable) as info:
                br.call(lambda: "never called")
            br.record_failure(_outage())  # bookkeeping during the outage never raises
            time.sleep(0.02)
        assert "on_failure='closed'" in str(info.value)
        srv.start()  # an empty server: the shared breaker starts closed again
        back = time.monotonic()
        while True:
            try:
                assert br.call(lambda: "ok") == "ok"
                break
            except BreakerStateUnavailable:
                time.sleep(0.01)
        assert time.monotonic() - back < 1.5
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        assert br.state is CircuitState.CLOSED
    finally:
        srv.stop()
