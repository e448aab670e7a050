"""One script, four runtimes: the patterns decide and announce alike wherever their state lives.

The same seeded script of operations on a rate limiter, a circuit breaker and a budget -- sync
and async calls, outcomes of every kind, permits held across time, trips, resets, 429 pauses,
header syncs, budget holds -- runs on each runtime, each on its own ``VirtualClock``:

- ``in-process``: ``RateLimiter``, ``CircuitBreaker``, ``CostTracker(hard_limit=True)``;
- ``memory``, ``sqlite``, ``redis``: ``SharedRateLimiter``, ``SharedCircuitBreaker`` and
  ``SharedBudget`` over ``MemoryStateStore``, ``SQLiteStateStore`` and a real ``redis-server``
  started here (``RedisStore(server_time=False)``: the script's clock is the state's).

Every decision (return values, errors with their type and ``retry_after``, breaker
``health()``, limiter ``status()``, budget totals) and every event (the limiter's and the
breaker's ``subscribe`` streams, the breaker's ``on_state_change`` calls) must match the
in-process run: the breaker's exactly, the limiter's to float precision, the budget's to the
nano-dollar. What the runtimes are known to report differently (a shared store's URL in
``health()``, extra fields in some limiter events) is listed below, so new drift fails.

The budget runs through the reserve -> commit | release protocol (``CostGate``):
``CostTracker`` in process, ``SharedCostTracker`` over each store.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from llm_patterns.circuit_breaker import CircuitBreaker
from llm_patterns.clock import VirtualClock
from llm_patterns.cost import CostTracker
from llm_patterns.errors import (
    BudgetExceeded,
    CircuitOpenError,
    InvalidRequestError,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
)
from llm_patterns.pricing import Pricing
from llm_patterns.protocols import Demand
from llm_patterns.rate_limit import RateLimiter
from llm_patterns.response import Usage
from llm_patterns.state import (
    MemoryStateStore,
    SharedCircuitBreaker,
    SharedRateLimiter,
    SQLiteStateStore,
)
from llm_patterns.state.budget import SharedCostTracker

START = 5000.0
RUNTIMES = ["in-process", "memory", "sqlite", "redis"]
LIMITER = {"rpm": 120, "tpm": 6000, "burst_seconds": 1.0, "max_wait": 3.0}  # 2 req, 100 tok
BREAKER = {"failure_threshold": 2, "reset_timeout": 10.0, "half_open_max_calls": 2,
           "probe_timeout": 4.0}
BUDGET_USD = Decimal("1.000")
USD_PER_TOKEN = Decimal("0.001")  # the in-process tracker prices $0.001 per prompt token

# What the runtimes report differently on purpose: event fields only one side has.
LIMITER_EVENT_EXTRAS = {
    "in-process": {"requests_available", "tokens_available"},  # the levels, with each event
    "shared": {"at", "ticket"},  # the store's time of the decision; the queue ticket
}


# ----------------------------------------------------------------------------- budgets


PRICES = {"m": Pricing(float(USD_PER_TOKEN * 10**6), 0.0)}  # $0.001 per prompt token


class GateBudget:
    """A budget through the ``CostGate`` (reserve -> commit | release), the protocol
    ``ResilientClient`` drives: ``CostTracker`` in process, ``SharedCostTracker`` over the
    runtime's store (its ``SharedBudget``'s store operations)."""

    def __init__(self, tracker: CostTracker) -> None:
        self.tracker = tracker
        self.open: set[int] = set()

    def reserve(self, usd: Decimal) -> Any:
        try:
            hold = self.tracker.reserve("m", Demand(int(usd / USD_PER_TOKEN), 0))
        except BudgetExceeded:
            return None
        self.open.add(id(hold))
        return hold

    def commit(self, hold: Any, usd: Decimal) -> None:
        self.open.discard(id(hold))
        self.tracker.commit(hold, "m", Usage(prompt_tokens=int(usd / USD_PER_TOKEN),
                                             completion_tokens=0))

    def release(self, hold: Any) -> None:
        self.open.discard(id(hold))
        self.tracker.release(hold)

    def status(self) -> tuple[Decimal, Decimal, int]:
        if isinstance(self.tracker, SharedCostTracker):  # the store's own count
            st = self.tracker.shared.status()
            return st["spent"], st["reserved"], st["in_flight"]
        return self.tracker.total, self.tracker.reserved, len(self.open)


BUDGETS: dict[str, Callable[[Any, VirtualClock], Any]] = {
    "in-process": lambda store, clock: GateBudget(CostTracker(
        PRICES, budget=BUDGET_USD, hard_limit=True, clock=clock)),
    "store": lambda store, clock: GateBudget(SharedCostTracker(
        PRICES, budget=BUDGET_USD, store=store, budget_name="team", reservation_ttl=600,
        clock=clock)),
}


# ----------------------------------------------------------------------------- runtimes


class Runtime:
    """A limiter, a breaker and a budget on one clock, every event they announce logged."""

    def __init__(self, kind: str, tmp_path: Any, redis_url: str | None = None) -> None:
        self.kind = kind
        self.clock = clock = VirtualClock(START)
        if kind == "in-process":
            self.store = None
            self.limiter = RateLimiter(**LIMITER, clock=clock, name="api")
            self.breaker = CircuitBreaker("api", **BREAKER, clock=clock)
            self.budget = BUDGETS["in-process"](None, clock)
        else:
            if kind == "memory":
                store: Any = MemoryStateStore(clock=clock)
            elif kind == "sqlite":
                store = SQLiteStateStore(tmp_path / "parity.db", clock=clock)
            else:
                from llm_patterns.state.redis import RedisStore

                store = RedisStore(redis_url, clock=clock, server_time=False,
                                   prefix=f"parity{random.randrange(10**9)}")
            self.store = store
            self.limiter = SharedRateLimiter(**LIMITER, store=store, clock=clock, name="api")
            self.breaker = SharedCircuitBreaker("api", **BREAKER, store=store, clock=clock)
            self.budget = BUDGETS["store"](store, clock)
        self.events: list[tuple] = []
        self.limiter.subscribe(lambda e: self.events.append(
            ("limiter", e.kind, e.time, dict(e.data))))
        self.breaker.subscribe(lambda e: self.events.append(
            ("breaker", e.kind, e.time, dict(e.data))))
        self.breaker.on_state_change(lambda br, old, new: self.events.append(
            ("listener", old.value, new.value, br is self.breaker)))
        self.permits: dict[int, Any] = {}
        self.holds: dict[int, Any] = {}

    def close(self) -> None:
        self.breaker.close()
        if hasattr(self.limiter, "close"):
            self.limiter.close()
        if self.store is not None:
            self.store.close()


# ----------------------------------------------------------------------------- the script

ERRORS: dict[str, Callable[[], BaseException] | None] = {
    "ok": None,
    "outage": lambda: ServerError("down", status_code=503),
    "429": lambda: RateLimitError("slow down", status_code=429),
    "400": lambda: InvalidRequestError("bad", status_code=400),
}


def script(seed: int, n: int = 400) -> list[tuple]:
    rng = random.Random(seed)
    ops: list[tuple] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.16:
            ops.append(("advance", rng.choice([0.0, 0.25, 0.5, 1.0, 2.5, 4.0, 7.0, 10.0, 31.0])))
        elif r < 0.22:
            ops.append(("lim.try", rng.choice([0, 10, 60, 100])))
        elif r < 0.27:
            ops.append((rng.choice(["lim.acquire", "lim.acquire_async"]),
                        rng.choice([0, 30, 90, 100])))
        elif r < 0.30:
            ops.append(("lim.settle", rng.choice([10, 50]), rng.choice([0, 20, 80])))
        elif r < 0.32:
            ops.append(("lim.penalize", rng.choice([0.5, 2.0, 2.0, 2.0, 1e9])))
        elif r < 0.34:
            ops.append(("lim.headers", str(rng.choice([0, 5, 40, 500]))))
        elif r < 0.36:
            ops.append(("lim.status",))
        elif r < 0.48:
            ops.append((rng.choice(["br.call", "br.call", "br.call_async"]),
                        rng.choice(["ok", "ok", "outage", "outage", "429", "400"])))
        elif r < 0.56:
            ops.append((rng.choice(["br.admit", "br.admit_async"]), rng.randrange(3)))
        elif r < 0.64:
            ops.append(("br.settle", rng.randrange(3),
                        rng.choice(["ok", "outage", "outage", "429", "release"])))
        elif r < 0.68:
            ops.append(("br.allow",))
        elif r < 0.72:
            ops.append(("br.record", rng.choice(["ok", "outage", "429"])))
        elif r < 0.75:
            ops.append((rng.choice(["br.health", "br.state", "br.retry_in"]),))
        elif r < 0.77:
            ops.append((rng.choice(["br.trip", "br.reset"]),))
        elif r < 0.87:
            ops.append(("budget.reserve", rng.randrange(4),
                        Decimal(rng.choice([50, 120, 300, 450])) * USD_PER_TOKEN))
        elif r < 0.94:
            ops.append(("budget.commit", rng.randrange(4), rng.choice([0.0, 0.5, 1.0])))
        elif r < 0.97:
            ops.append(("budget.release", rng.randrange(4)))
        else:
            ops.append(("budget.status",))
    return ops


async def _answer(outcome: str) -> str:
    factory = ERRORS[outcome]
    if factory is not None:
        raise factory()
    return "answer"


def _error(exc: BaseException) -> tuple:
    return ("raised", type(exc).__name__, getattr(exc, "retry_after", None))


def step(rt: Runtime, op: tuple) -> Any:
    """Run one operation; its decision (errors are decisions too)."""
    kind = op[0]
    lim, br = rt.limiter, rt.breaker
    try:
        if kind == "advance":
            rt.clock.advance(op[1])
            return None
        if kind == "lim.try":
            return lim.try_acquire(op[1])
        if kind == "lim.acquire":
            return lim.acquire(op[1])
        if kind == "lim.acquire_async":
            return asyncio.run(lim.acquire_async(op[1]))
        if kind == "lim.settle":
            return lim.settle(op[1], op[2])
        if kind == "lim.penalize":
            return lim.penalize(op[1])
        if kind == "lim.headers":
            return lim.update_from_headers({"x-ratelimit-remaining-tokens": op[1]})
        if kind == "lim.status":
            st = lim.status()
            return {k: st[k] for k in ("requests_available", "tokens_available",
                                       "penalty_remaining", "estimate_ratio", "waiting")}
        if kind == "br.call":
            return br.call(lambda: asyncio.run(_answer(op[1])))
        if kind == "br.call_async":
            return asyncio.run(br.call_async(_answer, op[1]))
        if kind in ("br.admit", "br.admit_async"):
            old = rt.permits.pop(op[1], None)
            if old is not None:
                old.release()
            permit = (br.admit() if kind == "br.admit" else asyncio.run(br.admit_async()))
            rt.permits[op[1]] = permit
            return ("permit", permit.trial, permit.lease)
        if kind == "br.settle":
            permit = rt.permits.pop(op[1], None)
            if permit is None:
                return "no permit"
            if op[2] == "ok":
                permit.success()
            elif op[2] == "release":
                permit.release()
            else:
                permit.failure(ERRORS[op[2]]())
            return op[2]
        if kind == "br.allow":
            return br.allow_request()
        if kind == "br.record":
            factory = ERRORS[op[1]]
            return br.record_success() if factory is None else br.record_failure(factory())
        if kind == "br.health":
            return {k: v for k, v in br.health().items() if k != "store"}
        if kind == "br.state":
            return br.state.value
        if kind == "br.retry_in":
            return br.retry_in()
        if kind == "br.trip":
            return br.trip()
        if kind == "br.reset":
            return br.reset()
        if kind == "budget.reserve":
            old = rt.holds.pop(op[1], None)
            if old is not None:
                rt.budget.release(old[0])
            hold = rt.budget.reserve(op[2])
            if hold is not None:
                rt.holds[op[1]] = (hold, op[2])
            return hold is not None
        if kind == "budget.commit":
            held = rt.holds.pop(op[1], None)
            if held is None:
                return "no hold"
            actual = (held[1] * Decimal(str(op[2]))).quantize(USD_PER_TOKEN)
            rt.budget.commit(held[0], actual)
            return actual
        if kind == "budget.release":
            held = rt.holds.pop(op[1], None)
            if held is not None:
                rt.budget.release(held[0])
            return held is not None
        return tuple(rt.budget.status())
    except (CircuitOpenError, RateLimitTimeout, ServerError, RateLimitError,
            InvalidRequestError, BudgetExceeded) as exc:
        return _error(exc)


def transcript(rt: Runtime, ops: list[tuple]) -> list[tuple]:
    """Per operation: the operation, its decision, the events it caused, the time after."""
    out = []
    for op in ops:
        before = len(rt.events)
        decision = step(rt, op)
        out.append((op, decision, rt.events[before:], rt.clock.now()))
    return out


# ----------------------------------------------------------------------------- comparison


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            a == pytest.approx(b, rel=1e-9, abs=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _limiter_event(event: tuple, side: str) -> tuple:
    """A limiter event without the fields only ``side`` reports (checked to be only those)."""
    source, kind, at, data = event
    extras = LIMITER_EVENT_EXTRAS[side]
    return source, kind, at, {k: v for k, v in data.items() if k not in extras}


def compare(reference: list[tuple], other: list[tuple], name: str) -> None:
    assert len(reference) == len(other)
    for i, (ref, got) in enumerate(zip(reference, other, strict=True)):
        op, decision, events, now = ref
        where = f"{name}: step {i} {op}"
        assert got[0] == op
        assert _same_value(decision, got[1]), (where, decision, got[1])
        assert _same_value(now, got[3]), (where, "clock", now, got[3])
        ours = [_limiter_event(e, "in-process") if e[0] == "limiter" else e for e in events]
        side = "in-process" if name == "in-process" else "shared"
        theirs = [_limiter_event(e, side) if e[0] == "limiter" else e for e in got[2]]
        assert _same_value(ours, theirs), (where, events, got[2])


def coverage(run: list[tuple]) -> set[str]:
    seen = set()
    for op, decision, events, _ in run:
        if isinstance(decision, tuple) and decision and decision[0] == "raised":
            seen.add(f"{op[0].split('.')[0]} raised {decision[1]}")
        if op[0] == "budget.reserve" and decision is False:
            seen.add("budget refused")
        for e in events:
            if e[0] == "listener":
                seen.add(f"{e[1]}>{e[2]}")
            else:
                seen.add(f"{e[0]} {e[1]}")
    return seen


SEEDS = [3, 11]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[int, list[tuple]]:
    out = {}
    for seed in SEEDS:
        rt = Runtime("in-process", tmp_path_factory.mktemp("ref"))
        out[seed] = transcript(rt, script(seed))
        rt.close()
    return out


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    redis_store = pytest.importorskip("test_redis_store")
    srv = redis_store.RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv.url
    srv.stop()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_every_runtime_decides_and_announces_alike(runtime, seed, reference, tmp_path,
                                                    request):
    url = request.getfixturevalue("redis_url") if runtime == "redis" else None
    rt = Runtime(runtime, tmp_path, url)
    try:
        run = transcript(rt, script(seed))
    finally:
        rt.close()
    compare(reference[seed], run, runtime)


def test_the_scripts_exercise_what_they_claim(reference):
    seen = set().union(*(coverage(run) for run in reference.values()))
    assert seen >= {
        "closed>open", "open>half_open", "half_open>closed", "half_open>open", "open>closed",
        "breaker rejected", "breaker lease_expired", "breaker ignored", "breaker failure",
        "breaker success", "limiter wait", "limiter acquire", "limiter penalize",
        "limiter settle", "limiter sync", "lim raised RateLimitTimeout",
        "br raised CircuitOpenError", "budget refused",
    }, seen


def test_the_comparison_catches_a_drifted_runtime(reference, tmp_path):
    """The control: a shared breaker that forgets to announce rejections, or a limiter one
    token off, is caught by ``compare``."""
    seed = SEEDS[0]
    rt = Runtime("memory", tmp_path)
    run = transcript(rt, script(seed))
    rt.close()
    compare(reference[seed], run, "memory")  # the honest run passes
    muted = [(op, d, [e for e in ev if e[1] != "rejected"], t) for op, d, ev, t in run]
    with pytest.raises(AssertionError):
        compare(reference[seed], muted, "muted")
    off = [(op, {**d, "tokens_available": d["tokens_available"] + 1}
            if op[0] == "lim.status" else d, ev, t) for op, d, ev, t in run]
    with pytest.raises(AssertionError):
        compare(reference[seed], off, "off by one")


def test_limiter_event_extras_are_only_the_known_ones(reference, tmp_path):
    """The fields one side's limiter events carry and the other's do not are exactly the
    documented ones: anything new is drift."""
    seed = SEEDS[0]
    rt = Runtime("memory", tmp_path)
    run = transcript(rt, script(seed))
    rt.close()
    local = [e for _, _, ev, _ in reference[seed] for e in ev if e[0] == "limiter"]
    shared = [e for _, _, ev, _ in run for e in ev if e[0] == "limiter"]
    only_local, only_shared = set(), set()
    for a, b in zip(local, shared, strict=True):
        only_local |= a[3].keys() - b[3].keys()
        only_shared |= b[3].keys() - a[3].keys()
    assert only_local <= LIMITER_EVENT_EXTRAS["in-process"], only_local
    assert only_shared <= LIMITER_EVENT_EXTRAS["shared"], only_shared
