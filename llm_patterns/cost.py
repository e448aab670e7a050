"""Know the bill: price every request, add it up per task, DAG, model and provider, warn on budget.

``CostTracker.record(model, usage, dag_id=..., task_id=...)`` prices one request (exact
``Decimal`` USD) and adds it to the totals under one lock: no read-modify-write race, the bug
that lost most of the spend in naive trackers (research §7). With a ``SQLiteLedger`` the records
live in a file that every process shares, so ``total``, the ``by_*`` breakdowns and the budget
alerts cover all of them, and each alert fires once overall.

Budgets: alerts fire once per threshold (default 50%, 80%, 100%). ``hard_limit=True`` makes the
budget a gate that holds under concurrency, through the ``CostGate`` protocol
(``llm_patterns.protocols``) that ``ResilientClient`` drives for every call::

    hold = tracker.reserve(model, Demand(input_tokens, max_tokens))  # BudgetExceeded if the
    try:                                                              # estimate does not fit
        response = provider.send(request)
    except BaseException:
        tracker.release(hold)                 # not answered: nothing spent
        raise
    tracker.commit(hold, response.model, response.usage, task_id=...)   # held -> spent

The estimate is the worst case (the prompt estimate uncached in, ``max_tokens`` out), so the
recorded total never passes the budget for any number of concurrent threads or coroutines as
long as each call stays within its estimate: admission without reservation overshoots by the
concurrency (LiteLLM #34732; issue 15 measured $0.75 spent on a $0.10 budget). ``check(usd)``
is the plain admission test (spent + held + ``usd`` within the budget) and ``record`` never
refuses: that money is already spent.

A paid answer is never thrown away over bookkeeping: ``commit`` of a model with no price records
the usage as unpriced (``CostRecord.priced`` False) with the call's estimate as its cost, the
amount the budget is charged, and logs one WARNING per model.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from . import _validate as v
from .clock import Clock, SystemClock
from .errors import BudgetExceeded
from .events import Observable
from .ledger import CostRecord, SQLiteLedger
from .pricing import (
    MONEY_CONTEXT,
    PriceTable,
    TokenCounts,
    UnknownModelError,
    normalize_usage,
)
from .protocols import Demand

__all__ = ["OTHER", "BudgetHold", "CostRecord", "CostTracker", "check_labels", "check_reserve",
           "usd"]

logger = logging.getLogger("llm_patterns.cost")

_T = TypeVar("_T")
AlertCallback = Callable[[float, Decimal, Decimal], None]
_ZERO = Decimal(0)

OTHER = "(other)"
"""The label a breakdown key is folded into once ``max_breakdown_keys`` distinct keys exist."""


def usd(amount: Decimal) -> str:
    """``$8.02``; small amounts keep their significant digits (``$0.00045``)."""
    if amount != 0 and abs(amount) < Decimal("0.01"):
        return f"${amount.normalize():f}"
    return f"${amount:,.2f}"


def _label(name: str, value: object) -> str | None:
    return v.optional(v.text, name, value, empty=True)  # type: ignore[no-any-return]


class BudgetHold:
    """One call's estimated cost, held against a budget until ``commit`` or ``release`` (the
    ``Hold`` of the ``CostGate`` protocol). ``model`` and ``demand`` are what it was estimated
    from; ``reservation`` the shared budget's own hold (``SharedCostTracker``)."""

    __slots__ = ("amount", "demand", "model", "reservation", "settled")

    def __init__(self, amount: Decimal, model: str, demand: Demand,
                 reservation: Any = None) -> None:
        self.amount = amount
        self.model = model
        self.demand = demand
        self.reservation = reservation
        self.settled = False

    def __repr__(self) -> str:
        state = "settled" if self.settled else "held"
        return f"BudgetHold({self.model!r}, {usd(self.amount)}, {state})"


class CostTracker(Observable):
    """Prices requests and keeps the totals; a ``CostGate`` for ``ResilientClient`` (see the
    module docstring).

    ``prices``: a ``PriceTable``, a ``{model: Pricing | dict}`` mapping, or None (genai-prices).
    ``budget``: USD > 0 or None. ``alert_at``: a sequence of fractions of the budget in
    (0, 10]. ``on_alert(threshold, total, budget)`` is called once per threshold.
    ``hard_limit``: refuse (``BudgetExceeded``) a call whose estimate would pass the budget.
    ``ledger``: a ``SQLiteLedger`` shared by processes (then totals and alerts are global to the
    ledger; an alert is keyed by ``name``, budget and threshold; the holds of calls in flight
    are this process's: for one hard budget across processes use ``SharedCostTracker``).
    ``clock`` stamps events; ``wall`` (default ``time.time``) stamps records with epoch seconds.

    Memory stays bounded in a long-running process: ``records`` keeps the ``max_records`` most
    recent records (None: all, 0: none), and the breakdowns keep at most
    ``max_breakdown_keys`` distinct (dag_id, task_id, model, provider) keys, later new keys
    being added up under ``OTHER`` labels (a WARNING says so once). ``total`` is always exact,
    and with a ledger every record is in the ledger.
    """

    _event_source = "cost"

    def __init__(
        self,
        prices: PriceTable | Mapping[str, Any] | None = None,
        *,
        budget: float | Decimal | str | None = None,
        alert_at: Sequence[float] = (0.5, 0.8, 1.0),
        on_alert: AlertCallback | None = None,
        hard_limit: bool = False,
        ledger: SQLiteLedger | None = None,
        name: str = "",
        clock: Clock | None = None,
        wall: Callable[[], float] | None = None,
        max_records: int | None = 10_000,
        max_breakdown_keys: int = 10_000,
    ) -> None:
        if prices is None:
            prices = PriceTable()
        elif isinstance(prices, Mapping):
            prices = PriceTable(prices)
        elif not isinstance(prices, PriceTable):
            raise TypeError(
                f"prices must be a PriceTable, a {{model: Pricing}} dict or None, got {prices!r}"
            )
        self.prices: PriceTable = prices
        self.budget: Decimal | None = None if budget is None else v.money("budget", budget)
        if self.budget is not None and self.budget <= 0:
            raise ValueError(f"budget must be > 0 dollars (or None for no budget), got {budget!r}")
        self.alert_at: tuple[float, ...] = _thresholds(alert_at)
        if on_alert is not None and not callable(on_alert):
            raise TypeError(f"on_alert must be callable, got {on_alert!r}")
        self.on_alert = on_alert
        self.hard_limit = v.boolean("hard_limit", hard_limit)
        if self.hard_limit and self.budget is None:
            raise ValueError("hard_limit=True needs a budget; got budget=None")
        if ledger is not None and not isinstance(ledger, SQLiteLedger):
            raise TypeError(f"ledger must be a SQLiteLedger or None, got {ledger!r}")
        self.ledger = ledger
        self.max_records = v.optional(v.integer, "max_records", max_records, minimum=0)
        self.max_breakdown_keys = v.integer("max_breakdown_keys", max_breakdown_keys, minimum=1)
        self.name = v.text("name", name, empty=True)
        self.clock: Clock = clock if clock is not None else SystemClock()
        if wall is not None and not callable(wall):
            raise TypeError(f"wall must be a function returning epoch seconds, got {wall!r}")
        self._wall = wall if wall is not None else time.time
        self._lock = threading.RLock()
        self._fired: set[float] = set()
        self._reserved = _ZERO  # estimates held by calls in flight
        self._unrecorded = _ZERO  # spent, but its record could not be written (a ledger error)
        self._unpriced_models: set[str] = set()  # warned about once each
        self._unpriced = 0
        # the most recent records as CostRecord field tuples (built into CostRecords on read)
        self._records: deque[tuple[Any, ...]] = deque(maxlen=max_records)
        self._count = 0
        self._thresholds: tuple[Decimal | None, tuple[tuple[float, Decimal], ...]] = (None, ())
        self._total = _ZERO
        # exact USD per (dag_id, task_id, model, provider): one addition per record; the by_*
        # breakdowns are summed from it when read (few keys, read far less often than written)
        self._by_key: dict[tuple[str | None, str | None, str, str | None], Decimal] = {}
        self._folding = False  # max_breakdown_keys reached: new keys go under OTHER

    # -- recording

    def record(
        self,
        model: str,
        usage: object,
        *,
        dag_id: str | None = None,
        task_id: str | None = None,
        run_id: str | None = None,
        provider: str | None = None,
    ) -> Decimal:
        """Price one request and add it; returns its cost in USD (Decimal).

        ``usage``: an OpenAI or Anthropic usage dict/object or a ``Usage``. Raises
        ``ValueError`` (negative counts), ``TypeError`` (unknown shape), ``KeyError`` (no price
        for ``model``: never guessed as $0 or as some cheaper model).
        """
        labels = check_labels(dag_id, task_id, run_id, provider)
        counts, cost = self._price(model, usage)
        self._write(model, counts, cost, labels, priced=True, hold=None)
        return cost

    def _price(self, model: str, usage: object) -> tuple[TokenCounts, Decimal]:
        prices = self.prices
        if type(prices).cost is PriceTable.cost:  # usage read once, repeated usage priced once
            return prices.price(model, usage)
        counts = normalize_usage(usage)  # a subclass that prices its own way
        return counts, prices.cost(model, counts)

    def _write(self, model: str, counts: TokenCounts, cost: Decimal,
               labels: tuple[str | None, str | None, str | None, str | None], *,
               priced: bool, hold: BudgetHold | None) -> Decimal:
        """Add one record (and settle ``hold`` in the same step); the new total."""
        dag_id, task_id, run_id, provider = labels
        fields = (self._wall(), model, provider, dag_id, task_id, run_id, counts.prompt_tokens,
                  counts.completion_tokens, counts.cached_tokens, cost, counts.cache_write_tokens,
                  priced)
        with self._lock:
            if hold is not None:  # the hold becomes spend in one step: no window without both
                self._settle(hold)
            if self.ledger is not None:
                try:
                    total = self.ledger.add(CostRecord(*fields))
                except BaseException:
                    self._unrecorded += cost  # spent all the same: the budget keeps counting it
                    logger.error("could not write the record of %s on %s to the ledger: %s "
                                 "(%d in, %d out; kept against the budget in this process)",
                                 usd(cost), model, self.ledger.path, counts.prompt_tokens,
                                 counts.completion_tokens)
                    raise
            else:
                total = self._add(fields)
            due = self._due_alerts(total) if self.budget is not None else ()
        if logger.isEnabledFor(logging.DEBUG):  # formatting money is not free: only when logged
            logger.debug(
                "%s: %d in (%d cached) + %d out = %s; total %s",
                model, counts.prompt_tokens, counts.cached_tokens, counts.completion_tokens,
                usd(cost), usd(total),
            )
        if self._subscribers:
            self._emit(
                "record", self.clock.now(), model=model, provider=provider, cost=cost,
                total=total, dag_id=dag_id, task_id=task_id, budget=self.budget,
            )
        if self.hard_limit and self.budget is not None and total > self.budget:
            logger.warning(
                "recorded %s on %s past the hard budget: %s of %s spent",
                usd(cost), model, usd(total), usd(self.budget),
            )
        for threshold in due:
            self._fire(threshold, total)
        return total

    def _add(self, fields: tuple[Any, ...]) -> Decimal:
        """Add one record (CostRecord field order) to the in-memory totals; under the lock."""
        add = MONEY_CONTEXT.add  # exact: 60 digits, whatever the thread's decimal context
        _, model, provider, dag_id, task_id, _, _, _, _, cost, _, _ = fields
        if self.max_records != 0:
            self._records.append(fields)
        self._count += 1
        self._total = add(self._total, cost)
        by, key = self._by_key, (dag_id, task_id, model, provider)
        if key not in by and len(by) >= self.max_breakdown_keys:
            key = self._fold(key)
        by[key] = add(by.get(key, _ZERO), cost)
        return self._total

    def _fold(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """A new breakdown key once ``max_breakdown_keys`` are held: the task under OTHER, or
        (past twice the bound) the DAG too, or everything: model and provider names come from
        the providers' answers. At most ``2 * max_breakdown_keys + 1`` keys, ever."""
        by = self._by_key
        if not self._folding:
            self._folding = True
            logger.warning("cost breakdowns hold %d keys (max_breakdown_keys): new (dag_id, "
                           "task_id) pairs are added up under %r from now on; totals stay "
                           "exact", len(by), OTHER)
        dag_id, _, model, provider = key
        room = len(by) < 2 * self.max_breakdown_keys
        for folded in ((dag_id, OTHER, model, provider), (OTHER, OTHER, model, provider)):
            if room or folded in by:
                return folded
        return (OTHER, OTHER, OTHER, OTHER)

    def _due_alerts(self, total: Decimal) -> list[float]:
        """Thresholds reached and not yet fired (claimed here, under the lock), in order."""
        budget = self.budget
        if budget is None:
            return []
        cached_budget, amounts = self._thresholds
        if cached_budget is not budget:  # the budget can be changed: amounts follow it
            amounts = tuple((t, Decimal(str(t)) * budget) for t in self.alert_at)
            self._thresholds = (budget, amounts)
        due = []
        for threshold, amount in amounts:
            if threshold in self._fired or total < amount:
                continue
            if self.ledger is None or self.ledger.claim_alert(self._alert_key(threshold)):
                due.append(threshold)
            self._fired.add(threshold)  # fired here, or (ledger) by another process
        return due

    def _alert_key(self, threshold: float) -> str:
        return f"{self.name or 'cost'}|budget={self.budget}|at={threshold:g}"

    def _fire(self, threshold: float, total: Decimal) -> None:
        assert self.budget is not None
        logger.warning(
            "cost alert: %s of %s budget spent (%s%%)",
            usd(total), usd(self.budget), f"{threshold * 100:g}",
        )
        if self.on_alert is not None:
            try:
                self.on_alert(threshold, total, self.budget)
            except Exception:  # a broken callback must not lose the record
                logger.exception(
                    "on_alert callback %r failed at threshold %g", self.on_alert, threshold
                )
        self._emit("alert", self.clock.now(), threshold=threshold, total=total, budget=self.budget)

    # -- the budget gate (CostGate): reserve -> commit | release

    @property
    def gating(self) -> bool:
        """Whether ``reserve`` can refuse: a hard limit with a budget."""
        return self.hard_limit and self.budget is not None

    def estimate(self, model: str, prompt_tokens: int, max_tokens: int) -> Decimal:
        """Worst-case cost of a call: ``prompt_tokens`` uncached in, ``max_tokens`` out."""
        return self.prices.cost(model, TokenCounts(prompt_tokens, max_tokens))

    def check(self, estimated_usd: float | Decimal | str) -> None:
        """With ``hard_limit``: raise ``BudgetExceeded`` if spending ``estimated_usd`` more (on
        top of what is spent and held by calls in flight) would pass the budget. Otherwise does
        nothing. Holds nothing: use ``reserve`` to admit a call."""
        estimate = v.money("estimated_usd", estimated_usd)
        if not self.gating:
            return
        with self._lock:
            self._check_locked(estimate)

    def _spent(self) -> Decimal:
        """What the gate counts as spent: the total plus spend whose record was lost."""
        return self.total + self._unrecorded

    def _check_locked(self, estimate: Decimal) -> None:
        assert self.budget is not None
        spent = self._spent()
        if spent + self._reserved + estimate > self.budget:
            held = f", {usd(self._reserved)} reserved by calls in flight" if self._reserved else ""
            raise BudgetExceeded(
                f"estimated {usd(estimate)} would pass the {usd(self.budget)} budget: "
                f"{usd(spent)} spent{held}"
            )

    def reserve(self, model: str, demand: Demand) -> BudgetHold:
        """Hold a call's worst-case cost (``demand``: its input estimate and ``max_tokens`` at
        ``model``'s prices) until ``commit`` or ``release``; ``BudgetExceeded`` if it does not
        fit beside what is spent and held. Without a hard limit nothing can be refused and
        nothing is priced (the hold is $0)."""
        check_reserve(model, demand)
        if not (self.hard_limit and self.budget is not None):
            return BudgetHold(_ZERO, model, demand)
        amount = self._estimate_demand(model, demand)
        with self._lock:
            self._check_locked(amount)
            self._reserved += amount
        return BudgetHold(amount, model, demand)

    def _estimate_demand(self, model: str, demand: Demand) -> Decimal:
        return self.estimate(model, math.ceil(demand.input_tokens),
                             math.ceil(demand.output_tokens))

    def commit(self, hold: BudgetHold, model: str, usage: object, *,
               dag_id: str | None = None, task_id: str | None = None,
               run_id: str | None = None, provider: str | None = None) -> Decimal | None:
        """Record what the answered call cost (at ``model``, the model that answered) and drop
        the hold, in one step; returns the cost. A model with no price is not a reason to lose
        the answer: the usage is recorded unpriced, the budget charged the hold's estimate
        (one WARNING per model), and None is returned."""
        labels = check_labels(dag_id, task_id, run_id, provider)
        return self._commit(hold, model, usage, labels)[0]

    def _commit(self, hold: BudgetHold, model: str, usage: object,
                labels: tuple[str | None, str | None, str | None, str | None],
                ) -> tuple[Decimal | None, Decimal]:
        """``commit``: (the cost or None when unpriced, the amount charged)."""
        self._check_hold(hold)
        try:
            counts, cost = self._price(model, usage)
        except UnknownModelError:
            counts = normalize_usage(usage)
            charge = self._unpriced_charge(hold, model)
            self._write(model, counts, charge, labels, priced=False, hold=hold)
            return None, charge
        except BaseException:  # a usage we cannot read: the call was paid all the same
            with self._lock:
                if not hold.settled:
                    self._settle(hold)
                    self._unrecorded += hold.amount
            raise
        self._write(model, counts, cost, labels, priced=True, hold=hold)
        return cost, cost

    def _unpriced_charge(self, hold: BudgetHold, model: str) -> Decimal:
        """The estimate an unpriced answer is charged (the hold's, or priced now at the model
        the call was made for), with one WARNING per model."""
        charge = hold.amount
        if not charge:
            try:
                charge = self._estimate_demand(hold.model, hold.demand)
            except KeyError:
                charge = _ZERO
        with self._lock:
            self._unpriced += 1
            first = model not in self._unpriced_models
            if first:
                self._unpriced_models.add(model)
        if first:
            logger.warning(
                "no price for model %r in %s: its answer is kept, its usage recorded unpriced "
                "and charged at the call's estimate %s (priced as %r); further unpriced calls "
                "of this model are counted in .unpriced", model, self.prices.source, usd(charge),
                hold.model)
        return charge

    def release(self, hold: BudgetHold) -> None:
        """Give a hold back: the call was not answered, nothing was spent. Idempotent."""
        if hold.settled:
            return
        with self._lock:
            if not hold.settled:
                self._settle(hold)

    def _settle(self, hold: BudgetHold) -> None:
        """Drop ``hold`` from the reserved amount; under the lock."""
        hold.settled = True
        if hold.amount:
            self._reserved -= hold.amount

    @staticmethod
    def _check_hold(hold: Any) -> None:
        if not isinstance(hold, BudgetHold):
            raise TypeError(f"hold must be the BudgetHold reserve() returned, got {hold!r}")
        if hold.settled:
            raise ValueError(f"{hold!r} was already committed or released")

    # the async twins: with a ledger the gate reads and writes a file another process may hold
    # locked, so they run in a worker thread and the event loop never waits for it

    @property
    def blocking(self) -> bool:
        """Whether the gate's operations may wait on I/O (a ledger): async callers run them in
        a worker thread."""
        return self.ledger is not None

    async def areserve(self, model: str, demand: Demand) -> BudgetHold:
        if not (self.blocking and self.gating):
            return self.reserve(model, demand)
        return await self._in_thread(self.reserve, model, demand, undo=self.release)

    async def acommit(self, hold: BudgetHold, model: str, usage: object, *,
                      dag_id: str | None = None, task_id: str | None = None,
                      run_id: str | None = None,
                      provider: str | None = None) -> Decimal | None:
        """``commit``, in a worker thread when it writes a ledger."""
        if not self.blocking:
            return self.commit(hold, model, usage, dag_id=dag_id, task_id=task_id,
                               run_id=run_id, provider=provider)
        return await self._in_thread(lambda: self.commit(
            hold, model, usage, dag_id=dag_id, task_id=task_id, run_id=run_id,
            provider=provider))

    async def arelease(self, hold: BudgetHold) -> None:
        if not self.blocking or hold.settled:
            self.release(hold)
            return
        await self._in_thread(self.release, hold)

    @staticmethod
    async def _in_thread(fn: Callable[..., _T], *args: Any,
                         undo: Callable[[_T], None] | None = None) -> _T:
        """``fn(*args)`` in a worker thread. If the caller is cancelled meanwhile the call still
        completes; ``undo(result)`` then gives back what it took (a hold nobody will settle)."""
        fut = asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if undo is not None:
                def orphaned(done: asyncio.Future[Any]) -> None:
                    if not done.cancelled() and done.exception() is None:
                        undo(done.result())
                fut.add_done_callback(orphaned)
            raise

    # -- totals

    @property
    def total(self) -> Decimal:
        """USD spent (every record in the ledger, if there is one)."""
        if self.ledger is not None:
            return self.ledger.total()
        return self._total

    @property
    def remaining(self) -> Decimal | None:
        """``budget - total`` (negative once overspent), or None without a budget."""
        return None if self.budget is None else self.budget - self.total

    @property
    def alerts(self) -> list[float]:
        """Thresholds this tracker has seen reached, in order (with a ledger, one another
        process reached first counts too, though only that process fired it)."""
        with self._lock:
            return sorted(self._fired)

    @property
    def reserved(self) -> Decimal:
        """USD held by calls in flight in this process."""
        return self._reserved

    @property
    def unpriced(self) -> int:
        """How many answers were recorded unpriced (their model had no price)."""
        return self._unpriced

    @property
    def records(self) -> list[CostRecord]:
        """The records, oldest first (a copy): every one with a ledger, else the most recent
        ``max_records`` (``count`` says how many were recorded in all)."""
        if self.ledger is not None:
            return self.ledger.records()
        with self._lock:
            kept = list(self._records)
        return [CostRecord(*fields) for fields in kept]

    @property
    def count(self) -> int:
        """How many requests were recorded (all of them, kept in ``records`` or not)."""
        if self.ledger is not None:
            return self.ledger.count()
        return self._count

    def by_task(self) -> dict[tuple[str | None, str | None], Decimal]:
        """``{(dag_id, task_id): usd}``."""
        if self.ledger is not None:
            return self.ledger.by_task()
        return self._breakdown(lambda k: (k[0], k[1]))

    def by_dag(self) -> dict[str | None, Decimal]:
        """``{dag_id: usd}``."""
        if self.ledger is not None:
            return self.ledger.by_dag()
        return self._breakdown(lambda k: k[0])

    def by_model(self) -> dict[str, Decimal]:
        """``{model: usd}``."""
        if self.ledger is not None:
            return self.ledger.by_model()
        return self._breakdown(lambda k: k[2])

    def by_provider(self) -> dict[str | None, Decimal]:
        """``{provider: usd}``."""
        if self.ledger is not None:
            return self.ledger.by_provider()
        return self._breakdown(lambda k: k[3])

    def _breakdown(self, project: Callable[[tuple[Any, ...]], Any]) -> dict[Any, Decimal]:
        """The in-memory totals summed by ``project(key)``, in order of first appearance."""
        add = MONEY_CONTEXT.add
        out: dict[Any, Decimal] = {}
        with self._lock:
            items = list(self._by_key.items())
        for key, cost in items:
            k = project(key)
            out[k] = add(out.get(k, _ZERO), cost)
        return out

    def summary(self) -> dict[str, Any]:
        """What a dashboard shows: total, budget, remaining, fraction spent, held by calls in
        flight, count, unpriced answers, by model."""
        total = self.total
        return {
            "name": self.name,
            "total": total,
            "budget": self.budget,
            "remaining": None if self.budget is None else self.budget - total,
            "spent_fraction": None if self.budget is None else float(total / self.budget),
            "reserved": self._reserved,
            "records": self.ledger.count() if self.ledger is not None else self._count,
            "unpriced": self._unpriced,
            "by_model": self.by_model(),
        }

    def __repr__(self) -> str:
        budget = f" of {usd(self.budget)}" if self.budget is not None else ""
        where = f", ledger={self.ledger.path!r}" if self.ledger is not None else ""
        return f"CostTracker({self.name!r}: {usd(self.total)}{budget}{where})"


def check_labels(dag_id: Any, task_id: Any, run_id: Any,
            provider: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """The record's labels, each a str or None (TypeError naming the label otherwise)."""
    if ((dag_id is None or dag_id.__class__ is str)
            and (task_id is None or task_id.__class__ is str)
            and (run_id is None or run_id.__class__ is str)
            and (provider is None or provider.__class__ is str)):
        return dag_id, task_id, run_id, provider  # the common case, without four calls
    return (_label("dag_id", dag_id), _label("task_id", task_id), _label("run_id", run_id),
            _label("provider", provider))


def check_reserve(model: Any, demand: Any) -> None:
    """The arguments of ``reserve``: a model name and a ``Demand``."""
    if model.__class__ is not str or not model:
        v.text("model", model)
    if not isinstance(demand, Demand):
        raise TypeError(f"demand must be a Demand, got {demand!r}")


def _thresholds(alert_at: Any) -> tuple[float, ...]:
    """``alert_at`` as sorted distinct fractions of the budget in (0, 10]."""
    if isinstance(alert_at, (str, bytes)) or not isinstance(alert_at, Sequence):
        raise TypeError(f"alert_at must be a list or tuple of fractions of the budget in (0, 10], "
                        f"e.g. (0.9,), got {alert_at!r}")
    values = []
    for i, t in enumerate(alert_at):
        if isinstance(t, Decimal):
            t = float(t)
        values.append(v.real(f"alert_at[{i}]", t, minimum=0.0, maximum=10.0, strict_min=True))
    return tuple(sorted(set(values)))
