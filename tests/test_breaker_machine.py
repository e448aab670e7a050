"""The breaker machine and its ports: one definition, the same answers everywhere.

Random scripts of every breaker operation (admit, success / failure / ignored with a permit or
without one, release, force, read, time passing past cooldowns and trial leases) run on the
machine itself (``Circuit``, as ``CircuitBreaker`` runs it), on the memory and SQLite stores
(the machine over a JSON record, ``load``/``save`` every step) and on Redis (the Lua port),
and every answer -- decisions, generations, leases, retry_after, the ordered changes -- must be
identical, to the last bit of every float. A machine with one small bug is caught by the same
comparison (the control).
"""

from __future__ import annotations

import importlib.util
import random
import shutil

import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.machines.breaker import (
    CLOSED,
    OPEN,
    Admission,
    BreakerConfig,
    BreakerOutcome,
    Change,
    Circuit,
)
from llm_patterns.state import MemoryStateStore, SQLiteStateStore

START = 1000.0


class MachineStore:
    """The machine run directly (no record in between), behind the store's breaker ops."""

    def __init__(self, clock: VirtualClock, machine: type[Circuit] = Circuit) -> None:
        self.clock = clock
        self.machine = machine
        self.m: Circuit | None = None

    def _get(self, config: BreakerConfig) -> Circuit:
        if self.m is None:
            self.m = self.machine(config, self.clock.now())
        self.m.config = config
        return self.m

    def breaker_admit(self, key, config):
        return self._get(config).admit(self.clock.now())

    def breaker_record(self, key, config, outcome, generation=None, lease=None, error=None):
        return self._get(config).record(outcome, generation, lease, error, self.clock.now())

    def breaker_release(self, key, config, lease):
        return self._get(config).release(lease, self.clock.now())

    def breaker_force(self, key, config, state):
        return self._get(config).force(state, self.clock.now())

    def breaker_read(self, key, config):
        return self._get(config).read(self.clock.now())

    def close(self) -> None:
        pass


def random_script(rng: random.Random, n: int = 200) -> tuple[BreakerConfig, list[tuple]]:
    config = BreakerConfig(failure_threshold=rng.randint(1, 3), reset_timeout=10.0,
                           half_open_max_calls=rng.randint(1, 3),
                           probe_timeout=rng.choice([4.0, 10.0, 25.0]))
    script: list[tuple] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.2:
            script.append(("advance", rng.choice([0.0, 0.5, 1.0, 3.9, 4.0, 9.99, 10.0, 12.5])))
        elif r < 0.45:
            script.append(("admit", rng.randrange(4)))
        elif r < 0.75:
            outcome = rng.choice(["success", "failure", "failure", "ignored"])
            error = rng.choice([None, "ServerError: HTTP 503", "ProviderTimeout: slow"])
            script.append(("record", rng.randrange(5), outcome, error))  # who 4: no permit
        elif r < 0.82:
            script.append(("release", rng.randrange(4)))
        elif r < 0.87:
            script.append(("force", rng.choice([OPEN, CLOSED])))
        else:
            script.append(("read",))
    return config, script


def play(store, config: BreakerConfig, script: list[tuple]) -> list[tuple]:
    """Every answer of ``store`` to ``script`` (admissions are kept per player)."""
    held: dict[int, Admission] = {}
    answers: list[tuple] = []
    for op in script:
        kind = op[0]
        if kind == "advance":
            store.clock.advance(op[1])
        elif kind == "admit":
            adm = store.breaker_admit("k", config)
            if adm.allowed:
                held[op[1]] = adm
            answers.append(tuple(adm))
        elif kind == "record":
            adm = held.pop(op[1], None)
            out = store.breaker_record("k", config, op[2],
                                       None if adm is None else adm.generation,
                                       None if adm is None else adm.lease, op[3])
            answers.append(tuple(out))
        elif kind == "release":
            adm = held.pop(op[1], None)
            if adm is not None and adm.lease is not None:
                answers.append(tuple(store.breaker_release("k", config, adm.lease)))
        elif kind == "force":
            answers.append(tuple(store.breaker_force("k", config, op[1])))
        else:
            snap = store.breaker_read("k", config)
            answers.append((*snap[:7], dict(snap.counters), snap.changes, snap.at))
    return answers


def stores(tmp_path, redis_url: str | None = None) -> dict[str, object]:
    out = {"machine": MachineStore(VirtualClock(START)),
           "memory": MemoryStateStore(clock=VirtualClock(START)),
           "sqlite": SQLiteStateStore(tmp_path / f"b{random.randrange(10**9)}.db",
                                      clock=VirtualClock(START))}
    if redis_url is not None:
        from llm_patterns.state.redis import RedisStore

        out["redis"] = RedisStore(redis_url, clock=VirtualClock(START), server_time=False,
                                  prefix=f"bm{random.randrange(10**9)}")
    return out


def assert_same(reference: list[tuple], other: list[tuple], name: str) -> None:
    assert len(reference) == len(other), name
    for i, (a, b) in enumerate(zip(reference, other, strict=True)):
        assert a == b, (name, i, a, b)


def coverage(answers: list[tuple]) -> set[str]:
    """What a script exercised: the kinds of change and the transitions it produced."""
    seen = set()
    for answer in answers:
        for item in answer:
            if isinstance(item, tuple):
                for c in item:
                    if isinstance(c, Change):
                        seen.add(c.kind if c.kind != "state_change" else f"{c.state}>{c.new}")
    return seen


@pytest.mark.parametrize("seed", range(8))
def test_memory_and_sqlite_stores_answer_like_the_machine(tmp_path, seed):
    config, script = random_script(random.Random(seed))
    runtimes = stores(tmp_path)
    answers = {name: play(s, config, script) for name, s in runtimes.items()}
    for name in ("memory", "sqlite"):
        assert_same(answers["machine"], answers[name], name)
    for s in runtimes.values():
        s.close()


def test_the_scripts_reach_every_transition_and_change(tmp_path):
    seen: set[str] = set()
    for seed in range(8):
        config, script = random_script(random.Random(seed))
        seen |= coverage(play(MachineStore(VirtualClock(START)), config, script))
    assert seen >= {"closed>open", "open>half_open", "half_open>closed", "half_open>open",
                    "open>closed", "success", "failure", "ignored", "rejected",
                    "lease_expired"}, seen


class _LeasesNeverExpire(Circuit):
    """A port that forgot the lease expiry: a hung probe wedges half-open."""

    def _refresh(self, now, changes):
        leases, self.leases = self.leases, {}
        try:
            return super()._refresh(now, changes)
        finally:
            if self.state == "half_open" and not self.leases:
                self.leases = leases


class _StaleResultsCount(Circuit):
    """A port that lets a late answer from an earlier episode decide the state."""

    def record(self, outcome, generation, lease, error, now):
        return super().record(outcome, None, None, error, now)


@pytest.mark.parametrize("broken", [_LeasesNeverExpire, _StaleResultsCount])
def test_the_comparison_catches_a_broken_port(broken):
    caught = 0
    for seed in range(8):
        config, script = random_script(random.Random(seed))
        good = play(MachineStore(VirtualClock(START)), config, script)
        bad = play(MachineStore(VirtualClock(START), broken), config, script)
        caught += good != bad
    assert caught >= 4, f"{broken.__name__} slipped through {8 - caught} of 8 scripts"


def test_record_round_trip_is_exact():
    """``save`` then ``load`` gives the same machine (what the stores rely on every step)."""
    m = Circuit(BreakerConfig(failure_threshold=1, probe_timeout=4.0, half_open_max_calls=2),
                0.1)
    m.record("failure", None, None, "ServerError: HTTP 503", 0.2)
    m.admit(60.3)
    record: dict = {}
    m.save(record)
    again = Circuit.from_record(m.config, record, 99.0)
    assert {k: getattr(again, k) for k in Circuit.__slots__} == \
        {k: getattr(m, k) for k in Circuit.__slots__}
    assert again.leases == {"1": 64.3} and again.last_error == "ServerError: HTTP 503"


def test_a_record_from_before_numbered_leases_is_adopted(tmp_path):
    """A SQLite state file written by the previous version (uuid leases, no serial)."""
    import json
    import sqlite3

    old = {"state": "half_open", "consecutive": 2, "opened_at": 5.0, "generation": 2,
           "changed_at": 15.0, "leases": {"3f2a9c0d": 30.0}, "last_error": "ServerError 503",
           "calls": 7, "successes": 4, "failures": 2, "ignored_errors": 0, "rejections": 1,
           "opened_count": 1}
    store = SQLiteStateStore(tmp_path / "old.db", clock=VirtualClock(20.0))
    store.breaker_read("k", BreakerConfig())  # the table exists
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute("UPDATE llm_state SET value = ? WHERE kind = 'breaker' AND key = 'k'",
                     (json.dumps(old),))
    cfg = BreakerConfig(reset_timeout=10.0)
    adm = store.breaker_admit("k", cfg)
    assert adm.allowed and adm.lease == "1" and adm.generation == 2
    snap = store.breaker_read("k", cfg)
    assert snap.counters["calls"] == 8 and snap.last_error == "ServerError 503"
    store.close()


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None
                    or importlib.util.find_spec("redis") is None, reason="needs redis-server")
def test_the_lua_port_answers_like_the_machine(tmp_path):
    from test_redis_store import RedisServer

    srv = RedisServer(tmp_path)
    srv.start()
    try:
        for seed in range(12):
            config, script = random_script(random.Random(500 + seed))
            runtimes = stores(tmp_path, srv.url)
            answers = {name: play(s, config, script) for name, s in runtimes.items()}
            assert_same(answers["machine"], answers["redis"], f"redis seed {500 + seed}")
            for s in runtimes.values():
                s.close()
    finally:
        srv.stop()


def test_outcome_and_admission_shapes():
    """The answers are plain tuples: what the Lua port returns, field for field."""
    assert Admission._fields == ("allowed", "state", "generation", "lease", "retry_after",
                                 "changes", "at")
    assert BreakerOutcome._fields == ("state", "consecutive_failures", "changes", "at")
