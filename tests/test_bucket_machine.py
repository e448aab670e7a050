"""The token-bucket machine (``machines/bucket.py``) and its ports.

- The compiled hot paths (``admit``, ``settle``) agree with a plain reference written here
  from the module's table, on random scripts (hypothesis).
- The same random scripts of store operations give the same answers on the memory, SQLite
  and Redis stores: the Lua port is held to the Python machine operation by operation.
- The default one-second slices with an overdraft never pay more, over any window, than the
  larger of a slice and one request, plus refill.
"""

from __future__ import annotations

import importlib.util
import random
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_patterns.clock import VirtualClock
from llm_patterns.machines.bucket import KINDS, Buckets, Limit, limits_for
from llm_patterns.rate_limit import RateLimiter
from llm_patterns.state import MemoryStateStore, SQLiteStateStore

# ----------------------------------------------------------------------------- a reference


class Reference:
    """The machine's semantics written the plainest way (the module docstring's table)."""

    def __init__(self, limits, now):
        self.limits = limits
        self.levels = {lim.kind: lim.capacity for lim in limits}
        self.last, self.pause, self.ratio = now, float("-inf"), 1.0
        self.sums = [0.0, 0.0, 0.0]

    def cost(self, kind, req, inp, out, ratio):
        return {"requests": req, "tokens": inp * ratio + out, "input_tokens": inp * ratio,
                "output_tokens": out}[kind]

    def refill(self, now):
        if now > self.last:
            for lim in self.limits:
                self.levels[lim.kind] = min(lim.capacity,
                                            self.levels[lim.kind] + (now - self.last) * lim.rate)
        self.last = now

    def admit(self, req, inp, out, now):
        self.refill(now)
        wait = max(0.0, self.pause - now)
        for lim in self.limits:
            need = min(self.cost(lim.kind, req, inp, out, self.ratio), lim.capacity)
            if need - self.levels[lim.kind] > lim.capacity * 1e-9:
                wait = max(wait, (need - self.levels[lim.kind]) / lim.rate)
        if wait == 0.0:
            for lim in self.limits:
                self.levels[lim.kind] -= self.cost(lim.kind, req, inp, out, self.ratio)
        return wait

    def settle(self, est, act, now, ratio):
        self.refill(now)
        for lim in self.limits:
            d = self.cost(lim.kind, *est, ratio) - self.cost(lim.kind, *act, 1.0)
            level = self.levels[lim.kind] + d
            self.levels[lim.kind] = min(level, lim.capacity) if d > 0 else level
        if est[1] >= 1.0 and act[1] > 0.0:
            e, a, dev = self.sums
            e, a = 0.9 * e + est[1], 0.9 * a + act[1]
            dev = 0.9 * dev + est[1] * abs(act[1] / est[1] - a / e)
            self.sums = [e, a, dev]
            self.ratio = 1.0 if a <= e else min(4.0, (a + dev) / e)


shapes = st.lists(st.sampled_from(KINDS), min_size=1, max_size=4, unique=True).flatmap(
    lambda kinds: st.tuples(
        st.just(kinds),
        st.lists(st.floats(60, 60_000), min_size=len(kinds), max_size=len(kinds)),
        st.one_of(st.none(), st.floats(1.0, 30.0))))
ops = st.lists(st.one_of(
    st.tuples(st.just("advance"), st.floats(0, 3)),
    st.tuples(st.just("admit"), st.integers(0, 2), st.floats(0, 3000), st.floats(0, 3000)),
    st.tuples(st.just("settle"), st.floats(0, 3000), st.floats(0, 3000), st.floats(0, 500),
              st.floats(0, 500), st.sampled_from([1.0, 1.2, 1.7])),
), max_size=60)


@settings(max_examples=200, deadline=None)
@given(shape=shapes, script=ops)
def test_the_compiled_machine_agrees_with_the_reference(shape, script):
    kinds, per_minute, burst = shape
    limits = limits_for(dict(zip(kinds, per_minute, strict=True)), burst)
    now = 0.0
    m, ref = Buckets(limits, now), Reference(limits, now)
    for op in script:
        if op[0] == "advance":
            now += op[1]
        elif op[0] == "admit":
            _, req, inp, out = op
            assert m.admit(req, inp, out, now) == pytest.approx(ref.admit(req, inp, out, now))
        else:
            _, in_e, in_a, out_e, out_a, ratio = op
            m.settle((1, in_e, out_e), (1, in_a, out_a), now, ratio)
            ref.settle((1, in_e, out_e), (1, in_a, out_a), now, ratio)
        assert m.levels == pytest.approx([ref.levels[lim.kind] for lim in limits])
        assert m.ratio == pytest.approx(ref.ratio)


def test_the_reference_catches_a_machine_that_forgets_the_cap():
    """The comparison above can fail: a bucket refilled past capacity is caught."""
    limits = limits_for({"tokens": 600}, 1.0)
    m, ref = Buckets(limits, 0.0), Reference(limits, 0.0)
    m.levels[0] = 50.0  # what an uncapped refill would leave
    ref.refill(100.0)
    m.admit(0, 0, 0, 100.0, pay=False)
    assert m.levels[0] == 10.0 == ref.levels["tokens"]
    m.levels[0] += 5  # overfilled behind the machine's back
    assert m.levels != pytest.approx([ref.levels["tokens"]])


# ----------------------------------------------------------------------------- the ports


def _stores(tmp_path, redis_url=None):
    out = {"memory": MemoryStateStore(clock=VirtualClock(1000.0)),
           "sqlite": SQLiteStateStore(tmp_path / "s.db", clock=VirtualClock(1000.0))}
    if redis_url is not None:
        from llm_patterns.state.redis import RedisStore

        out["redis"] = RedisStore(redis_url, clock=VirtualClock(1000.0), server_time=False,
                                  prefix=f"machine{random.randrange(10**9)}")
    return out


def _random_script(rng: random.Random, n: int = 150):
    script = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            script.append(("advance", rng.choice([0.0, 0.01, 0.1, 0.5, 1.7, 4.0])))
        elif r < 0.55:
            script.append(("acquire", rng.randrange(4), (1, rng.randrange(0, 1500),
                                                        rng.randrange(0, 300)),
                           rng.choice([None, 0.0, 2.0, 30.0])))
        elif r < 0.65:
            script.append(("leave", rng.randrange(4)))
        elif r < 0.8:
            script.append(("settle", (1, rng.randrange(1, 900), rng.randrange(0, 300)),
                           (1, rng.randrange(0, 1200), rng.randrange(0, 300)),
                           rng.choice([1.0, 1.25])))
        elif r < 0.88:
            script.append(("lower", {rng.choice(["requests", "tokens", "output_tokens"]):
                                     rng.uniform(-50, 800)}))
        elif r < 0.94:
            script.append(("pause", rng.choice([0.0, 0.3, 2.0, 1e9])))
        else:
            script.append(("levels",))
    return script


LIMITS = (Limit("requests", 600.0, 10.0, 10.0), Limit("tokens", 60_000.0, 1000.0, 60_000.0),
          Limit("output_tokens", 12_000.0, 200.0, 200.0))


def _play(store, script):
    """Run ``script`` on ``store``: every answer, tickets replaced by whether there is one."""
    tickets: dict[int, str | None] = {}
    answers = []
    for op in script:
        kind = op[0]
        if kind == "advance":
            store.clock.advance(op[1])
            continue
        if kind == "acquire":
            _, who, demand, max_wait = op
            g = store.limiter_acquire("k", LIMITS, demand, ticket=tickets.get(who), lease=1.0,
                                      max_wait=max_wait if tickets.get(who) is None else None)
            tickets[who] = g.ticket
            answers.append(("acquire", g.wait, g.ticket is not None, g.ratio, g.waiting, g.at))
        elif kind == "leave":
            if tickets.get(op[1]):
                store.limiter_leave("k", tickets.pop(op[1]))
        elif kind == "settle":
            answers.append(("settle", store.limiter_settle("k", LIMITS, op[1], op[2], op[3])))
        elif kind == "lower":
            answers.append(("lower", store.limiter_lower("k", LIMITS, op[1])))
        elif kind == "pause":
            answers.append(("pause", store.limiter_pause("k", LIMITS, op[1])))
        else:
            answers.append(("levels", store.limiter_levels("k", LIMITS)))
    return answers


def _assert_same(reference, other, name):
    assert len(reference) == len(other)
    for i, (a, b) in enumerate(zip(reference, other, strict=True)):
        assert a[0] == b[0]
        if isinstance(a[1], dict):
            assert a[1] == pytest.approx(b[1], rel=1e-12, abs=1e-9), (name, i, a, b)
        else:
            assert a[1:] == pytest.approx(b[1:], rel=1e-12, abs=1e-9), (name, i, a, b)


@pytest.mark.parametrize("seed", range(6))
def test_memory_and_sqlite_stores_answer_alike(tmp_path, seed):
    script = _random_script(random.Random(seed))
    stores = _stores(tmp_path)
    answers = {name: _play(s, script) for name, s in stores.items()}
    _assert_same(answers["memory"], answers["sqlite"], "sqlite")
    assert any(a[0] == "acquire" and a[2] for a in answers["memory"])  # some waiters queued
    for s in stores.values():
        s.close()


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None
                    or importlib.util.find_spec("redis") is None, reason="needs redis-server")
def test_the_lua_port_answers_like_the_python_machine(tmp_path):
    from test_redis_store import RedisServer

    srv = RedisServer(tmp_path)
    srv.start()
    try:
        for seed in range(8):
            script = _random_script(random.Random(100 + seed))
            stores = _stores(tmp_path, srv.url)
            answers = {name: _play(s, script) for name, s in stores.items()}
            _assert_same(answers["memory"], answers["redis"], f"redis seed {seed}")
            for s in stores.values():
                s.close()
            (tmp_path / "s.db").unlink()
    finally:
        srv.stop()


# ----------------------------------------------------------------------------- the default


def window_excess(log, allowed, rate):
    """The worst ``paid - (allowed + rate * length)`` over every window of a grant log."""
    log = sorted(log)
    worst = float("-inf")
    for i in range(len(log)):
        total = 0.0
        for j in range(i, len(log)):
            total += log[j][1]
            worst = max(worst, total - (allowed + rate * (log[j][0] - log[i][0])))
    return worst


@settings(max_examples=100, deadline=None)
@given(tpm=st.sampled_from([600, 6000, 60_000]),
       sizes=st.lists(st.floats(0, 1.0), min_size=1, max_size=40),
       gaps=st.lists(st.floats(0, 2.0), min_size=1, max_size=40))
def test_the_default_pays_at_most_a_slice_or_one_request_plus_refill(tpm, sizes, gaps):
    clock = VirtualClock()
    lim = RateLimiter(tpm=tpm, clock=clock)  # a one-second slice, overdraft to a minute
    rate, slice_ = tpm / 60, tpm / 60
    log = []
    for size, gap in zip(sizes, gaps * (len(sizes) // len(gaps) + 1), strict=False):
        clock.advance(gap)
        tokens = size * tpm  # up to a whole minute's limit
        lim.acquire(tokens)
        log.append((clock.now(), tokens))
    biggest = max(t for _, t in log)
    assert window_excess(log, max(slice_, biggest), rate) <= 1e-6 * tpm
    assert lim.status()["tokens_available"] <= slice_


def test_window_excess_catches_a_per_minute_burst():
    clock = VirtualClock()
    lim = RateLimiter(tpm=6000, clock=clock, burst_seconds=60)  # the old default
    log = []
    for _ in range(60):
        lim.acquire(100)
        log.append((clock.now(), 100))
    assert window_excess(log, 100, 100.0) > 5000  # a minute's budget in one instant
