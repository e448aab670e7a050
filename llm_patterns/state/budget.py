"""A hard budget shared by every worker: reserve the worst case before a call, settle after.

Counting spend after the fact cannot enforce a hard budget across workers: N workers that all
check "spent < budget" before their calls all pass, then all spend (LiteLLM #34732; research
§7). ``SharedBudget`` makes the check and the hold ONE atomic store operation::

    r = budget.reserve(estimated_usd)     # BudgetExceeded if spent + held + est > limit
    try:
        response = call()
    except BaseException:
        budget.release(r)                 # nothing spent
        raise
    budget.commit(r, actual_usd)          # held -> spent

so the sum of what was spent and what is held never passes the limit while every call costs
at most its estimate (``CostTracker.estimate`` gives that worst case). A reservation expires
after ``reservation_ttl`` seconds, so a worker that dies mid-call frees its hold.

``SharedCostTracker`` is a ``CostTracker`` whose hard limit is a ``SharedBudget``: it plugs into
``ResilientClient(cost=...)`` unchanged, because the client already calls ``check(estimate)``
before a provider call and ``record(...)`` after it: ``check`` reserves (and releases this
context's earlier reservation that never got a ``record``: that call failed), ``record``
commits. ``with tracker.reserve(est): ...`` also works and releases on failure at once.

Money is held in the store as integer nano-USD (exact, and Lua's doubles are exact up to 2**53
units, $9M), estimates and actual costs rounded UP (conservative). Stores: ``RedisStore`` (Lua
script); memory / SQLite stores through their atomic step (``dict_budget_ops``).
"""

from __future__ import annotations

import contextvars
import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_CEILING, Decimal
from typing import Any

from ..cost import CostTracker, usd
from ..errors import BudgetExceeded
from ..pricing import to_money
from .memory import DictStateStore

__all__ = ["Reservation", "SharedBudget", "SharedCostTracker", "dict_budget_ops"]

logger = logging.getLogger("llm_patterns.cost")

UNITS_PER_USD = Decimal(10) ** 9  # nano-USD
_MAX_UNITS = 2**53


def check_units(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UNITS:
        raise ValueError(f"{name} must be an int in [0, 2**53] (budget units), got {value!r}")
    return value


def to_units(name: str, usd_amount: Any) -> int:
    """USD -> integer nano-USD, rounded up."""
    money = to_money(name, usd_amount)
    assert money is not None
    units = int((money * UNITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))
    if units > _MAX_UNITS:
        raise ValueError(f"{name}={usd_amount!r} is more than a budget can hold "
                         f"(at most ${Decimal(_MAX_UNITS) / UNITS_PER_USD})")
    return units


def to_usd(units: int) -> Decimal:
    return Decimal(units) / UNITS_PER_USD


# --------------------------------------------------------------------------- pure semantics
# The budget lives in a limiter-kind state dict under "budget": {"spent": int, "res": {id: [amt,
# expires]}}; the Redis script does the same with a hash, a sorted set and a hash.


def _purge(b: dict[str, Any], now: float) -> None:
    b["res"] = {k: v for k, v in b["res"].items() if v[1] > now}


def _answer(ok: bool, b: dict[str, Any]) -> tuple[bool, int, int, int]:
    return ok, b["spent"], sum(v[0] for v in b["res"].values()), len(b["res"])


def budget_reserve(state: dict[str, Any], rid: str, amount: int, limit: int, ttl: float,
                   now: float) -> tuple[bool, int, int, int]:
    b = state.setdefault("budget", {"spent": 0, "res": {}})
    _purge(b, now)
    held = sum(v[0] for v in b["res"].values())
    if b["spent"] + held + amount > limit:
        return _answer(False, b)
    b["res"][rid] = [amount, now + ttl]
    return _answer(True, b)


def budget_settle(state: dict[str, Any], rid: str, actual: int | None,
                  now: float) -> tuple[bool, int, int, int]:
    """Commit (``actual`` is an int) or release (``actual`` None) a reservation."""
    b = state.setdefault("budget", {"spent": 0, "res": {}})
    _purge(b, now)
    live = b["res"].pop(rid, None) is not None
    if actual is not None:
        b["spent"] += actual
    return _answer(live, b)


class _DictBudgetOps:
    """The budget operations on a memory / SQLite store, inside its atomic step."""

    def __init__(self, store: DictStateStore) -> None:
        self.store = store

    def budget_reserve(self, key: str, reservation: str, amount: int, limit: int,
                       ttl: float) -> tuple[bool, int, int, int]:
        return self.store._limiter(key, None, lambda s, t: budget_reserve(
            s, reservation, amount, limit, ttl, t))

    def budget_commit(self, key: str, reservation: str | None,
                      actual: int) -> tuple[bool, int, int, int]:
        return self.store._limiter(key, None, lambda s, t: budget_settle(
            s, reservation or "", actual, t))

    def budget_release(self, key: str, reservation: str) -> tuple[bool, int, int, int]:
        return self.store._limiter(key, None, lambda s, t: budget_settle(s, reservation, None, t))

    def budget_read(self, key: str) -> tuple[bool, int, int, int]:
        return self.store._limiter(key, None, lambda s, t: budget_settle(s, "", None, t))

    def budget_reset(self, key: str) -> None:
        self.store._limiter(key, None, lambda s, t: s.pop("budget", None))


def dict_budget_ops(store: Any) -> Any:
    """The object carrying the budget operations for ``store``."""
    if callable(getattr(store, "budget_reserve", None)):
        return store
    if isinstance(store, DictStateStore):
        return _DictBudgetOps(store)
    raise TypeError(f"store {store!r} has no budget operations (budget_reserve ...)")


# --------------------------------------------------------------------------- SharedBudget


class Reservation:
    """One held estimate: ``id``, ``amount`` (USD), ``budget`` (its name); settle it once."""

    __slots__ = ("amount", "budget", "id", "settled", "units")

    def __init__(self, rid: str, amount: Decimal, units: int, budget: str) -> None:
        self.id, self.amount, self.units, self.budget = rid, amount, units, budget
        self.settled = False

    def __repr__(self) -> str:
        state = "settled" if self.settled else "held"
        return f"Reservation({self.budget!r}, {usd(self.amount)}, {state})"


class SharedBudget:
    """A hard USD budget in a ``StateStore`` under ``name``, shared by every process using it.

    ``limit`` in USD (> 0); ``store`` a store or URL (None: ``LLM_PATTERNS_STATE``);
    ``reservation_ttl`` seconds a hold lives if never settled (longer than your slowest call).
    """

    def __init__(self, limit: Any, *, store: Any = None, name: str,
                 reservation_ttl: float = 600.0) -> None:
        from .shared import _resolve_store

        money = to_money("limit", limit)
        if money is None or money <= 0:
            raise ValueError(f"limit must be > 0 dollars, got {limit!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (the shared key), got {name!r}")
        if isinstance(reservation_ttl, bool) or not isinstance(reservation_ttl, (int, float)) \
                or not (math.isfinite(reservation_ttl) and reservation_ttl > 0):
            raise ValueError(f"reservation_ttl must be a finite number of seconds > 0, "
                             f"got {reservation_ttl!r}")
        self.limit = money
        self.name = name
        self.key = f"budget:{name}"
        self.reservation_ttl = float(reservation_ttl)
        self.store = _resolve_store(store)
        self._ops = dict_budget_ops(self.store)
        self._limit_units = to_units("limit", money)

    def try_reserve(self, estimated_usd: Any) -> Reservation | None:
        """Hold ``estimated_usd`` if it fits under the limit with everything spent and held."""
        units = to_units("estimated_usd", estimated_usd)
        rid = uuid.uuid4().hex
        ok, spent, held, n = self._ops.budget_reserve(self.key, rid, units, self._limit_units,
                                                      self.reservation_ttl)
        self._last = (spent, held, n)
        if not ok:
            return None
        return Reservation(rid, to_usd(units), units, self.name)

    def reserve(self, estimated_usd: Any) -> Reservation:
        """``try_reserve`` or ``BudgetExceeded`` naming the numbers."""
        r = self.try_reserve(estimated_usd)
        if r is None:
            spent, held, n = self._last
            est = to_usd(to_units("estimated_usd", estimated_usd))
            logger.warning("shared budget %r: refusing %s: %s spent + %s held by %d call(s) "
                           "in flight would pass %s", self.name, usd(est), usd(to_usd(spent)),
                           usd(to_usd(held)), n, usd(self.limit))
            raise BudgetExceeded(
                f"estimated {usd(est)} would pass the shared {usd(self.limit)} budget "
                f"{self.name!r}: {usd(to_usd(spent))} spent, {usd(to_usd(held))} reserved by "
                f"{n} call(s) in flight")
        return r

    def commit(self, reservation: Reservation | None, actual_usd: Any) -> None:
        """Turn the hold into the real spend (``reservation`` None: spend without a hold)."""
        units = to_units("actual_usd", actual_usd)
        if reservation is not None:
            if reservation.settled:
                raise ValueError(f"{reservation!r} was already settled")
            reservation.settled = True
            if units > reservation.units:
                logger.warning("shared budget %r: a call cost %s, more than its reserved "
                               "estimate %s", self.name, usd(to_usd(units)),
                               usd(reservation.amount))
        self._ops.budget_commit(self.key, None if reservation is None else reservation.id,
                                units)

    def add(self, actual_usd: Any) -> None:
        """Record spend that had no reservation."""
        self.commit(None, actual_usd)

    def release(self, reservation: Reservation) -> None:
        """Give a hold back (the call was not made, or failed at no cost). Idempotent."""
        if reservation.settled:
            return
        reservation.settled = True
        self._ops.budget_release(self.key, reservation.id)

    @contextmanager
    def hold(self, estimated_usd: Any) -> Iterator[Reservation]:
        """``with budget.hold(est) as r: ...; budget.commit(r, cost)``: released if not
        committed when the block ends (an error, or a call that cost nothing)."""
        r = self.reserve(estimated_usd)
        try:
            yield r
        finally:
            self.release(r)

    def status(self) -> dict[str, Any]:
        """``limit``, ``spent``, ``reserved``, ``in_flight``, ``remaining`` (USD, Decimal)."""
        _, spent, held, n = self._ops.budget_read(self.key)
        return {"name": self.name, "limit": self.limit, "spent": to_usd(spent),
                "reserved": to_usd(held), "in_flight": n,
                "remaining": self.limit - to_usd(spent) - to_usd(held)}

    @property
    def spent(self) -> Decimal:
        return self.status()["spent"]

    def reset(self) -> None:
        """Forget spend and holds (a new budget period; operators only)."""
        self._ops.budget_reset(self.key)

    def __repr__(self) -> str:
        return f"SharedBudget({self.name!r}, limit={usd(self.limit)}, store={self.store!r})"


# --------------------------------------------------------------------------- the tracker

class SharedCostTracker(CostTracker):
    """A ``CostTracker`` whose hard limit is a ``SharedBudget`` (every process, one budget).

    Same arguments as ``CostTracker`` plus ``store`` (store or URL; None:
    ``LLM_PATTERNS_STATE``), ``budget_name`` (default ``name`` or ``"cost"``) and
    ``reservation_ttl``. ``hard_limit`` defaults to True and needs ``budget``. Totals, the
    breakdowns and alerts are the ``CostTracker``'s (per process, or global with a ledger);
    the hard gate is the shared budget.
    """

    def __init__(self, prices: Any = None, *, budget: Any, store: Any = None,
                 budget_name: str | None = None, reservation_ttl: float = 600.0,
                 hard_limit: bool = True, **kwargs: Any) -> None:
        super().__init__(prices, budget=budget, hard_limit=hard_limit, **kwargs)
        assert self.budget is not None
        self.shared = SharedBudget(self.budget, store=store,
                                   name=budget_name or self.name or "cost",
                                   reservation_ttl=reservation_ttl)
        # this tracker's reservation awaiting its ``record``, per thread / asyncio task
        self._pending: contextvars.ContextVar[tuple[Reservation, ...]] = contextvars.ContextVar(
            f"llm_patterns_budget_pending_{id(self)}", default=())

    def _release_pending(self) -> None:
        for r in self._pending.get():
            self.shared.release(r)
        self._pending.set(())

    def check(self, estimated_usd: Any) -> None:
        """Reserve ``estimated_usd`` in the shared budget for this context's next ``record``
        (``BudgetExceeded`` if it does not fit). A reservation this context made earlier and
        never recorded belonged to a call that failed: it is released first."""
        estimate = to_money("estimated_usd", estimated_usd)
        if not self.hard_limit:
            return
        self._release_pending()
        self._pending.set((self.shared.reserve(estimate),))

    def release_pending(self) -> None:
        """Give back this context's reservation now (a call that will not be recorded)."""
        self._release_pending()

    @contextmanager
    def reserve(self, estimated_usd: Any) -> Iterator[Decimal]:
        """Hold ``estimated_usd`` in the shared budget for the block; a ``record`` inside it
        commits the hold, otherwise it is released when the block ends."""
        estimate = to_money("estimated_usd", estimated_usd)
        assert estimate is not None
        r = self.shared.reserve(estimate) if self.hard_limit else None
        token = self._pending.set((r,) if r is not None else ())
        try:
            yield estimate
        finally:
            if r is not None:
                self.shared.release(r)
            self._pending.reset(token)

    def record(self, model: str, usage: object, **labels: Any) -> Decimal:
        cost = super().record(model, usage, **labels)
        pending = self._pending.get()
        if pending:
            self._pending.set(pending[1:])
            self.shared.commit(pending[0], cost)
        else:
            self.shared.add(cost)
        return cost
