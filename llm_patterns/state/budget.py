"""A hard budget shared by every worker: reserve the worst case before a call, settle after.

Counting spend after the fact cannot enforce a hard budget across workers: N workers that all
check "spent < budget" before their calls all pass, then all spend (LiteLLM #34732; research
§7). ``SharedBudget`` makes the check and the hold ONE atomic store operation
(``machines.budget``)::

    r = budget.reserve(estimated_usd)     # BudgetExceeded if spent + held + est > limit
    try:
        response = call()
    except BaseException:
        budget.release(r)                 # nothing spent
        raise
    budget.commit(r, actual_usd)          # held -> spent

so the sum of what was spent and what is held never passes the limit while every call costs
at most its estimate. A reservation expires after ``reservation_ttl`` seconds, so a worker that
dies mid-call frees its hold.

``SharedCostTracker`` is a ``CostTracker`` whose hard gate is a ``SharedBudget``: the same
``CostGate`` protocol (``reserve(model, demand)`` -> ``commit`` | ``release``) that
``ResilientClient`` drives for every call, released on every failure path. Its async twins run
the store calls in a worker thread when the store does I/O (SQLite, Redis): the event loop never
waits for another process's lock.

Money is held in the store as integer nano-USD (exact, and Lua's doubles are exact up to 2**53
units, $9M), estimates and actual costs rounded UP (conservative). Stores: ``RedisStore`` (Lua
script); memory / SQLite stores run ``machines.budget`` in their atomic step. The store
operations (``budget_reserve``, ``budget_commit``, ``budget_release``, ``budget_read``,
``budget_reset``, each answering ``(ok, spent, held, in_flight)``) are public, so a script can
drive any store through the same steps.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_CEILING, Decimal
from typing import Any

from .. import _validate as v
from ..cost import BudgetHold, CostTracker, check_labels, check_reserve, usd
from ..errors import BudgetExceeded
from ..machines.budget import MAX_AMOUNT, check_amount
from ..protocols import Demand

__all__ = ["Reservation", "SharedBudget", "SharedCostTracker", "check_units",
           "dict_budget_ops"]

logger = logging.getLogger("llm_patterns.cost")

UNITS_PER_USD = Decimal(10) ** 9  # nano-USD
_ZERO = Decimal(0)


def check_units(name: str, value: Any) -> int:
    """An amount in budget units (an int in [0, 2**53])."""
    return check_amount(name, value)


def to_units(name: str, usd_amount: Any) -> int:
    """USD -> integer nano-USD, rounded up."""
    money = v.money(name, usd_amount)
    units = int((money * UNITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))
    if units > MAX_AMOUNT:
        raise ValueError(f"{name}={usd_amount!r} is more than a budget can hold "
                         f"(at most ${Decimal(MAX_AMOUNT) / UNITS_PER_USD})")
    return units


def to_usd(units: int) -> Decimal:
    return Decimal(units) / UNITS_PER_USD


def dict_budget_ops(store: Any) -> Any:
    """The object carrying the budget operations for ``store`` (the store itself)."""
    if callable(getattr(store, "budget_reserve", None)):
        return store
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
    ``blocking``: whether its operations wait on I/O (the store's), so async callers run them
    in a worker thread.
    """

    def __init__(self, limit: Any, *, store: Any = None, name: str,
                 reservation_ttl: float = 600.0) -> None:
        from .shared import _resolve_store

        money = v.money("limit", limit)
        if money <= 0:
            raise ValueError(f"limit must be > 0 dollars, got {limit!r}")
        self.name = v.text("name", name)
        self.reservation_ttl = v.real("reservation_ttl", reservation_ttl, minimum=0.0,
                                      strict_min=True)
        self.limit = money
        self.key = f"budget:{name}"
        self.store = _resolve_store(store)
        self._ops = dict_budget_ops(self.store)
        self.blocking = bool(getattr(self.store, "blocking", True))
        self._limit_units = to_units("limit", money)

    def _refused(self, units: int, answer: tuple[bool, int, int, int]) -> BudgetExceeded:
        _, spent, held, n = answer
        est = to_usd(units)
        logger.warning("shared budget %r: refusing %s: %s spent + %s held by %d call(s) in "
                       "flight would pass %s", self.name, usd(est), usd(to_usd(spent)),
                       usd(to_usd(held)), n, usd(self.limit))
        return BudgetExceeded(
            f"estimated {usd(est)} would pass the shared {usd(self.limit)} budget "
            f"{self.name!r}: {usd(to_usd(spent))} spent, {usd(to_usd(held))} reserved by "
            f"{n} call(s) in flight")

    def try_reserve(self, estimated_usd: Any) -> Reservation | None:
        """Hold ``estimated_usd`` if it fits under the limit with everything spent and held."""
        units = to_units("estimated_usd", estimated_usd)
        return self._reserve(units)[0]

    def _reserve(self, units: int) -> tuple[Reservation | None, tuple[bool, int, int, int]]:
        rid = uuid.uuid4().hex
        answer = self._ops.budget_reserve(self.key, rid, units, self._limit_units,
                                          self.reservation_ttl)
        if not answer[0]:
            return None, answer
        return Reservation(rid, to_usd(units), units, self.name), answer

    def reserve(self, estimated_usd: Any) -> Reservation:
        """``try_reserve`` or ``BudgetExceeded`` naming the numbers."""
        units = to_units("estimated_usd", estimated_usd)
        r, answer = self._reserve(units)
        if r is None:
            raise self._refused(units, answer)
        return r

    def check(self, estimated_usd: Any) -> None:
        """``BudgetExceeded`` if ``estimated_usd`` would not fit now; holds nothing."""
        units = to_units("estimated_usd", estimated_usd)
        answer = self._ops.budget_read(self.key)
        if answer[1] + answer[2] + units > self._limit_units:
            raise self._refused(units, answer)

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
        return self.status()["spent"]  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Forget spend and holds (a new budget period; operators only)."""
        self._ops.budget_reset(self.key)

    def __repr__(self) -> str:
        return f"SharedBudget({self.name!r}, limit={usd(self.limit)}, store={self.store!r})"


# --------------------------------------------------------------------------- the tracker

class SharedCostTracker(CostTracker):
    """A ``CostTracker`` whose hard gate is a ``SharedBudget`` (every process, one budget).

    Same arguments as ``CostTracker`` plus ``store`` (store or URL; None:
    ``LLM_PATTERNS_STATE``), ``budget_name`` (default ``name`` or ``"cost"``) and
    ``reservation_ttl``. ``hard_limit`` defaults to True and needs ``budget``. Totals, the
    breakdowns and alerts are the ``CostTracker``'s (per process, or global with a ledger);
    the gate (``check``, ``reserve``/``commit``/``release``) is the shared budget.
    """

    def __init__(self, prices: Any = None, *, budget: Any, store: Any = None,
                 budget_name: str | None = None, reservation_ttl: float = 600.0,
                 hard_limit: bool = True, **kwargs: Any) -> None:
        super().__init__(prices, budget=budget, hard_limit=hard_limit, **kwargs)
        assert self.budget is not None
        self.shared = SharedBudget(self.budget, store=store,
                                   name=budget_name or self.name or "cost",
                                   reservation_ttl=reservation_ttl)

    @property
    def blocking(self) -> bool:
        return self.shared.blocking or self.ledger is not None

    def check(self, estimated_usd: Any) -> None:
        """``BudgetExceeded`` if ``estimated_usd`` more would pass the shared budget (spent and
        held by every process); holds nothing."""
        estimate = v.money("estimated_usd", estimated_usd)
        if self.hard_limit:
            self.shared.check(estimate)

    def reserve(self, model: str, demand: Demand) -> BudgetHold:
        """Hold the call's estimate in the shared budget (``BudgetExceeded`` if it does not
        fit beside what every process spent and holds); ``reserved`` shows this process's."""
        check_reserve(model, demand)
        if not self.hard_limit:
            return BudgetHold(_ZERO, model, demand)
        amount = self._estimate_demand(model, demand)
        reservation = self.shared.reserve(amount)
        with self._lock:
            self._reserved += reservation.amount
        return BudgetHold(reservation.amount, model, demand, reservation)

    def commit(self, hold: BudgetHold, model: str, usage: object, *,
               dag_id: str | None = None, task_id: str | None = None,
               run_id: str | None = None, provider: str | None = None) -> Decimal | None:
        """Record the call in this tracker's totals and turn its shared hold into the spend
        (the estimate, when the model has no price)."""
        self._check_hold(hold)
        reservation = hold.reservation
        try:
            cost, charged = self._commit(hold, model, usage,
                                         check_labels(dag_id, task_id, run_id, provider))
        except BaseException:
            if reservation is not None:  # paid, but unreadable or unwritable: keep it charged
                self.shared.commit(reservation, reservation.amount)
            raise
        if reservation is not None:
            self.shared.commit(reservation, charged)
        else:
            self.shared.add(charged)
        return cost

    def release(self, hold: BudgetHold) -> None:
        """Give the hold back to the shared budget. Idempotent."""
        if hold.settled:
            return
        super().release(hold)
        if hold.reservation is not None:
            self.shared.release(hold.reservation)

    def record(self, model: str, usage: object, **labels: Any) -> Decimal:
        """``CostTracker.record``, the cost added to the shared spend (no hold)."""
        cost = super().record(model, usage, **labels)
        self.shared.add(cost)
        return cost
