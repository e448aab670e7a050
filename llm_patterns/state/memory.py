"""``MemoryStateStore``: the state-store protocol in one process's memory (``memory://``).

For tests, notebooks and single-process pipelines: the same semantics as the shared stores
(it runs the same pure functions from ``base``), under one lock, with no sharing at all across
processes. Default time base: ``SystemClock`` (monotonic), or the ``clock`` you inject (a
``VirtualClock`` makes it deterministic).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from ..circuit_breaker import check_clock
from ..clock import Clock
from ..machines import budget as budget_machine
from ..machines.breaker import Circuit
from . import base
from .base import (
    Admission,
    BreakerConfig,
    BreakerOutcome,
    BreakerSnapshot,
    Demand3,
    Grant,
    Limit,
)

__all__ = ["DictStateStore", "MemoryStateStore"]

T = TypeVar("T")
Op = Callable[[dict[str, Any], float], T]


class DictStateStore:
    """The protocol's operations over dict states; a subclass supplies the atomic step.

    ``_limiter(key, now, fn)`` / ``_breaker(key, now, fn)`` must, atomically: read the key's
    state (or a new one), read the time if ``now`` is None, run ``fn(state, now)``, save the
    state, and return ``fn``'s result.
    """

    clock: Any
    url: str

    def _limiter(self, key: str, now: float | None, fn: Op[T]) -> T:
        raise NotImplementedError

    def _breaker(self, key: str, now: float | None, fn: Op[T]) -> T:
        raise NotImplementedError

    # -- limiter (see ``base``: each operation is one atomic step over the key's record)
    blocking = False  # overridden by stores that do I/O

    def limiter_acquire(self, key: str, limits: Sequence[Limit], demand: Demand3, *,
                        ticket: str | None = None, lease: float = base.DEFAULT_LEASE,
                        max_wait: float | None = None, now: float | None = None) -> Grant:
        ls, d = base.check_limits(limits), base.check_demand("demand", demand)
        ticket = base.check_ticket(ticket)
        lease = base.check_finite("lease", lease, minimum=0.0)
        if max_wait is not None:
            max_wait = base.check_finite("max_wait", max_wait, minimum=0.0)
        new = uuid.uuid4().hex
        return self._limiter(key, now, lambda s, t: base.limiter_acquire(
            s, ls, d, ticket, new, lease, max_wait, t))

    def limiter_leave(self, key: str, ticket: str) -> None:
        ticket = base.check_ticket(ticket)  # type: ignore[assignment]
        self._limiter(key, None, lambda s, t: base.limiter_leave(s, ticket))

    def limiter_settle(self, key: str, limits: Sequence[Limit], estimated: Demand3,
                       actual: Demand3, ratio: float = 1.0,
                       now: float | None = None) -> dict[str, float]:
        ls = base.check_limits(limits)
        est, act = base.check_demand("estimated", estimated), base.check_demand("actual", actual)
        r = base.check_finite("ratio", ratio, minimum=1.0)
        return self._limiter(key, now, lambda s, t: base.limiter_settle(s, ls, est, act, r, t))

    def limiter_lower(self, key: str, limits: Sequence[Limit], ceilings: Mapping[str, float],
                      now: float | None = None) -> dict[str, float]:
        ls = base.check_limits(limits)
        cs = {str(k): base.check_finite(f"ceilings[{k!r}]", c) for k, c in ceilings.items()}
        return self._limiter(key, now, lambda s, t: base.limiter_lower(s, ls, cs, t))

    def limiter_pause(self, key: str, limits: Sequence[Limit], seconds: float,
                      now: float | None = None) -> float:
        ls, sec = base.check_limits(limits), base.check_finite("seconds", seconds, minimum=0.0)
        return self._limiter(key, now, lambda s, t: base.limiter_pause(s, ls, sec, t))

    def limiter_levels(self, key: str, limits: Sequence[Limit],
                       now: float | None = None) -> dict[str, float]:
        ls = base.check_limits(limits)
        return self._limiter(key, now, lambda s, t: base.limiter_levels(s, ls, t))

    # -- budgets (``machines.budget``; its record sits in the key's record under "budget")
    def budget_reserve(self, key: str, reservation: str, amount: int, limit: int, ttl: float,
                       now: float | None = None) -> budget_machine.Answer:
        """Atomically: drop expired holds; hold ``amount`` under ``reservation`` for ``ttl`` s
        if ``spent + held + amount <= limit``. -> (ok, spent, held, in_flight)."""
        rid = base.check_key(reservation)
        amount = budget_machine.check_amount("amount", amount)
        limit = budget_machine.check_amount("limit", limit)
        ttl = base.check_finite("ttl", ttl, minimum=0.001)
        return self._limiter(key, now, lambda s, t: budget_machine.reserve(
            _budget(s), rid, amount, limit, ttl, t))

    def budget_commit(self, key: str, reservation: str | None, actual: int,
                      now: float | None = None) -> budget_machine.Answer:
        """Drop ``reservation`` (if still held; None: spend without a hold) and add ``actual``
        to the spend. -> (was_live, spent, held, in_flight)."""
        actual = budget_machine.check_amount("actual", actual)
        rid = reservation or ""
        return self._limiter(key, now, lambda s, t: budget_machine.settle(
            _budget(s), rid, actual, t))

    def budget_release(self, key: str, reservation: str,
                       now: float | None = None) -> budget_machine.Answer:
        """Give a hold back (the call was not answered)."""
        rid = base.check_key(reservation)
        return self._limiter(key, now, lambda s, t: budget_machine.settle(
            _budget(s), rid, None, t))

    def budget_read(self, key: str, now: float | None = None) -> budget_machine.Answer:
        return self._limiter(key, now, lambda s, t: budget_machine.read(_budget(s), t))

    def budget_reset(self, key: str) -> None:
        """Forget the spend and the holds (a new budget period)."""
        self._limiter(key, None, lambda s, t: budget_machine.reset(_budget(s)))

    # -- breakers (see ``base``: the circuit machine over the key's record)
    def _circuit(self, key: str, config: BreakerConfig, now: float | None,
                 op: Callable[[Circuit, float], T]) -> T:
        cfg = base.check_config(config)
        return self._breaker(key, now, lambda s, t: base.run_breaker(s, cfg, t,
                                                                    lambda m: op(m, t)))

    def breaker_admit(self, key: str, config: BreakerConfig,
                      now: float | None = None) -> Admission:
        return self._circuit(key, config, now, lambda m, t: m.admit(t))

    def breaker_record(self, key: str, config: BreakerConfig, outcome: str,
                       generation: int | None = None, lease: str | None = None,
                       error: str | None = None, now: float | None = None) -> BreakerOutcome:
        outcome = base.check_outcome(outcome)
        lease = base.check_lease(lease, optional=True)
        return self._circuit(key, config, now, lambda m, t: m.record(
            outcome, generation, lease, error, t))

    def breaker_release(self, key: str, config: BreakerConfig, lease: str,
                        now: float | None = None) -> BreakerOutcome:
        lease = base.check_lease(lease)  # type: ignore[assignment]
        return self._circuit(key, config, now, lambda m, t: m.release(lease, t))

    def breaker_read(self, key: str, config: BreakerConfig,
                     now: float | None = None) -> BreakerSnapshot:
        return self._circuit(key, config, now, lambda m, t: m.read(t))

    def breaker_force(self, key: str, config: BreakerConfig, state: str,
                      now: float | None = None) -> BreakerOutcome:
        return self._circuit(key, config, now, lambda m, t: m.force(state, t))

    def close(self) -> None:
        """Release resources (nothing here; kept for the protocol)."""


def _budget(record: dict[str, Any]) -> dict[str, Any]:
    """The budget machine's state inside a key's record."""
    b = record.get("budget")
    if b is None:
        b = record["budget"] = budget_machine.new_budget()
    return b


class MemoryStateStore(DictStateStore):
    """In-process state store; see the module docstring."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock: Clock = check_clock(clock)
        self.url = "memory://"
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[str, Any]] = {}
        self._breakers: dict[str, dict[str, Any]] = {}

    def _limiter(self, key: str, now: float | None, fn: Op[T]) -> T:
        base.check_key(key)
        with self._lock:
            t = self.clock.now() if now is None else base.check_finite("now", now)
            state = self._buckets.get(key)
            if state is None:
                state = self._buckets[key] = base.new_bucket_state()
            return fn(state, t)

    def _breaker(self, key: str, now: float | None, fn: Op[T]) -> T:
        base.check_key(key)
        with self._lock:
            t = self.clock.now() if now is None else base.check_finite("now", now)
            return fn(self._breakers.setdefault(key, {}), t)

    def __repr__(self) -> str:
        return f"MemoryStateStore(clock={self.clock!r})"
