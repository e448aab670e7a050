"""Know the bill: price every request, add it up per task, DAG, model and provider, warn on budget.

``CostTracker.record(model, usage, dag_id=..., task_id=...)`` prices one request (exact
``Decimal`` USD) and adds it to the totals under one lock: no read-modify-write race, the bug
that lost most of the spend in naive trackers (research §7). With a ``SQLiteLedger`` the records
live in a file that every process shares, so ``total``, the ``by_*`` breakdowns and the budget
alerts cover all of them, and each alert fires once overall.

Budgets: alerts fire once per threshold (default 50%, 80%, 100%). ``hard_limit=True`` adds a
gate, ``check(estimated_usd)`` before a call (``estimate(model, prompt_tokens, max_tokens)``
gives the worst case), raising ``BudgetExceeded``; ``reserve(estimated_usd)`` checks and holds the
estimate so concurrent callers in this process cannot all pass the same check (admission without
reservation overshoots by the concurrency, LiteLLM #34732). ``record`` never refuses: that money
is already spent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

from .clock import Clock, SystemClock
from .errors import BudgetExceeded
from .events import Observable
from .ledger import CostRecord, SQLiteLedger
from .pricing import MONEY_CONTEXT, PriceTable, TokenCounts, normalize_usage, to_money

__all__ = ["CostRecord", "CostTracker"]

logger = logging.getLogger("llm_patterns.cost")

AlertCallback = Callable[[float, Decimal, Decimal], None]
_ZERO = Decimal(0)


def usd(amount: Decimal) -> str:
    """``$8.02``; small amounts keep their significant digits (``$0.00045``)."""
    if amount != 0 and abs(amount) < Decimal("0.01"):
        return f"${amount.normalize():f}"
    return f"${amount:,.2f}"


def _label(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{name} must be a str or None, got {value!r} ({type(value).__name__})")


class CostTracker(Observable):
    """Prices requests and keeps the totals; see the module docstring.

    ``prices``: a ``PriceTable``, a ``{model: Pricing | dict}`` mapping, or None (genai-prices).
    ``budget``: USD > 0 or None. ``alert_at``: fractions of the budget in (0, 10].
    ``on_alert(threshold, total, budget)`` is called once per threshold. ``ledger``: a
    ``SQLiteLedger`` shared by processes (then totals and alerts are global to the ledger; an
    alert is keyed by ``name``, budget and threshold). ``clock`` stamps events; ``wall``
    (default ``time.time``) stamps records with epoch seconds. ``max_records``: how many of the
    most recent records ``records`` keeps in memory (None: all, 0: none), so a long-running
    process does not grow without bound; ``total`` and the ``by_*`` breakdowns are kept exactly
    and incrementally whatever it is (with a ledger every record is in the ledger).
    """

    _event_source = "cost"

    def __init__(
        self,
        prices: PriceTable | Mapping[str, Any] | None = None,
        *,
        budget: float | Decimal | str | None = None,
        alert_at: tuple[float, ...] | list[float] = (0.5, 0.8, 1.0),
        on_alert: AlertCallback | None = None,
        hard_limit: bool = False,
        ledger: SQLiteLedger | None = None,
        name: str = "",
        clock: Clock | None = None,
        wall: Callable[[], float] | None = None,
        max_records: int | None = 10_000,
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
        self.budget: Decimal | None = to_money("budget", budget, allow_none=True)
        if self.budget is not None and self.budget <= 0:
            raise ValueError(f"budget must be > 0 dollars (or None for no budget), got {budget!r}")
        thresholds = []
        for t in alert_at:
            if isinstance(t, bool) or not isinstance(t, (int, float, Decimal)):
                raise TypeError(f"alert_at values must be numbers, got {t!r} in {alert_at!r}")
            if not 0 < t <= 10:
                raise ValueError(
                    f"alert_at values must be fractions of the budget in (0, 10], got {t!r} "
                    f"in {alert_at!r}"
                )
            thresholds.append(float(t))
        self.alert_at: tuple[float, ...] = tuple(sorted(set(thresholds)))
        if on_alert is not None and not callable(on_alert):
            raise TypeError(f"on_alert must be callable, got {on_alert!r}")
        self.on_alert = on_alert
        if hard_limit and self.budget is None:
            raise ValueError("hard_limit=True needs a budget; got budget=None")
        self.hard_limit = bool(hard_limit)
        if ledger is not None and not isinstance(ledger, SQLiteLedger):
            raise TypeError(f"ledger must be a SQLiteLedger or None, got {ledger!r}")
        self.ledger = ledger
        if max_records is not None and (
            isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 0
        ):
            raise ValueError(f"max_records must be an int >= 0 or None, got {max_records!r}")
        self.max_records = max_records
        self.name = name
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._wall = wall if wall is not None else time.time
        self._lock = threading.RLock()
        self._fired: set[float] = set()
        self._reserved = Decimal(0)
        # in-memory totals (unused with a ledger, which is then the one source of truth)
        # the most recent records as CostRecord field tuples (built into CostRecords on read)
        self._records: deque[tuple[Any, ...]] = deque(maxlen=max_records)
        self._count = 0
        self._thresholds: tuple[Decimal | None, tuple[tuple[float, Decimal], ...]] = (None, ())
        self._total = Decimal(0)
        # exact USD per (dag_id, task_id, model, provider): one addition per record; the by_*
        # breakdowns are summed from it when read (few keys, read far less often than written)
        self._by_key: dict[tuple[str | None, str | None, str, str | None], Decimal] = {}

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
        if not (
            (dag_id is None or type(dag_id) is str) and (task_id is None or type(task_id) is str)
            and (run_id is None or type(run_id) is str)
            and (provider is None or type(provider) is str)
        ):
            dag_id, task_id = _label("dag_id", dag_id), _label("task_id", task_id)
            run_id, provider = _label("run_id", run_id), _label("provider", provider)
        prices = self.prices
        if type(prices).cost is PriceTable.cost:  # usage read once, repeated usage priced once
            counts, cost = prices._price(model, usage)
        else:  # a subclass that prices its own way
            counts = normalize_usage(usage)
            cost = prices.cost(model, counts)
        fields = (self._wall(), model, provider, dag_id, task_id, run_id, counts.prompt_tokens,
                  counts.completion_tokens, counts.cached_tokens, cost, counts.cache_write_tokens)
        with self._lock:
            if self.ledger is not None:
                total = self.ledger.add(CostRecord(*fields))
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
        return cost

    def _add(self, fields: tuple[Any, ...]) -> Decimal:
        """Add one record (CostRecord field order) to the in-memory totals; under the lock."""
        add = MONEY_CONTEXT.add  # exact: 60 digits, whatever the thread's decimal context
        _, model, provider, dag_id, task_id, _, _, _, _, cost, _ = fields
        if self.max_records != 0:
            self._records.append(fields)
        self._count += 1
        self._total = add(self._total, cost)
        by, key = self._by_key, (dag_id, task_id, model, provider)
        by[key] = add(by.get(key, _ZERO), cost)
        return self._total

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

    # -- budget gate

    def estimate(self, model: str, prompt_tokens: int, max_tokens: int) -> Decimal:
        """Worst-case cost of a call: ``prompt_tokens`` uncached in, ``max_tokens`` out."""
        return self.prices.cost(model, TokenCounts(prompt_tokens, max_tokens))

    def check(self, estimated_usd: float | Decimal | str) -> None:
        """With ``hard_limit``: raise ``BudgetExceeded`` if spending ``estimated_usd`` more (on
        top of what is spent and reserved) would pass the budget. Otherwise does nothing."""
        estimate = to_money("estimated_usd", estimated_usd)
        assert estimate is not None
        if not self.hard_limit or self.budget is None:
            return
        with self._lock:
            self._check_locked(estimate)

    def _check_locked(self, estimate: Decimal) -> None:
        assert self.budget is not None
        total = self.total
        if total + self._reserved + estimate > self.budget:
            held = f", {usd(self._reserved)} reserved by calls in flight" if self._reserved else ""
            raise BudgetExceeded(
                f"estimated {usd(estimate)} would pass the {usd(self.budget)} budget: "
                f"{usd(total)} spent{held}"
            )

    @contextmanager
    def reserve(self, estimated_usd: float | Decimal | str) -> Iterator[Decimal]:
        """``with tracker.reserve(est): call(); tracker.record(...)``: ``check`` and hold ``est``
        until the block ends, so concurrent callers in this process see each other's calls in
        flight. Without ``hard_limit`` it only holds the amount (it never raises)."""
        estimate = to_money("estimated_usd", estimated_usd)
        assert estimate is not None
        with self._lock:
            if self.hard_limit and self.budget is not None:
                self._check_locked(estimate)
            self._reserved += estimate
        try:
            yield estimate
        finally:
            with self._lock:
                self._reserved -= estimate

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
        """USD held by ``reserve`` blocks in flight in this process."""
        return self._reserved

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
        """What a dashboard shows: total, budget, remaining, fraction spent, count, by model."""
        total = self.total
        return {
            "name": self.name,
            "total": total,
            "budget": self.budget,
            "remaining": None if self.budget is None else self.budget - total,
            "spent_fraction": None if self.budget is None else float(total / self.budget),
            "records": self.ledger.count() if self.ledger is not None else self._count,
            "by_model": self.by_model(),
        }

    def __repr__(self) -> str:
        budget = f" of {usd(self.budget)}" if self.budget is not None else ""
        where = f", ledger={self.ledger.path!r}" if self.ledger is not None else ""
        return f"CostTracker({self.name!r}: {usd(self.total)}{budget}{where})"
