"""CostTracker: exact totals, breakdowns, alerts once, the hard-limit gate, thread safety."""

from __future__ import annotations

import asyncio
import logging
import threading
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_patterns.clock import VirtualClock
from llm_patterns.cost import OTHER, CostTracker
from llm_patterns.errors import BudgetExceeded
from llm_patterns.ledger import SQLiteLedger
from llm_patterns.pricing import PriceTable, Pricing
from llm_patterns.protocols import Demand
from llm_patterns.response import Usage

D = Decimal
PRICES = {
    "gpt-4o": Pricing(2.5, 10, 1.25),
    "claude": Pricing(3, 15, 0.3, cache_write_per_million=3.75),
    "flat": {"input": 1, "output": 1},
}


def openai(prompt, completion, cached=0):
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def tracker(**kw):
    kw.setdefault("wall", lambda: 1_700_000_000.0)
    return CostTracker(PRICES, **kw)


# --------------------------------------------------------------------------- recording

def test_record_openai_anthropic_and_usage_objects():
    t = tracker()
    # 800 x 2.5 + 200 x 1.25 + 500 x 10 = 7250 per million
    assert t.record("gpt-4o", openai(1000, 500, cached=200)) == D("0.00725")
    # Anthropic: 500 x 3 + 300 x 0.3 + 200 x 3.75 + 100 x 15 = 3840 per million
    anthropic = {"input_tokens": 500, "output_tokens": 100,
                 "cache_read_input_tokens": 300, "cache_creation_input_tokens": 200}
    assert t.record("claude", anthropic, provider="anthropic") == D("0.00384")
    usage = SimpleNamespace(prompt_tokens=2_000_000, completion_tokens=0, cached_tokens=0)
    assert t.record("flat", usage) == D(2)
    assert t.total == D("2.01109")
    assert isinstance(t.total, Decimal)
    first, second, third = t.records
    assert (first.model, first.prompt_tokens, first.completion_tokens, first.cached_tokens,
            first.cost, first.time) == ("gpt-4o", 1000, 500, 200, D("0.00725"), 1_700_000_000.0)
    assert (second.prompt_tokens, second.cached_tokens, second.cache_write_tokens,
            second.provider) == (1000, 300, 200, "anthropic")
    assert third.cost == 2


def test_response_usage_dataclass_if_present():
    response = pytest.importorskip("llm_patterns.response")
    t = tracker()
    assert t.record("gpt-4o", response.Usage(prompt_tokens=1000, completion_tokens=500,
                                             cached_tokens=200)) == D("0.00725")


def test_per_million_not_per_thousand():
    t = tracker()
    assert t.record("flat", openai(1000, 0)) == D("0.001")


def test_unknown_model_is_a_key_error_and_records_nothing():
    t = tracker(budget=1)
    with pytest.raises(KeyError, match="gpt-5-imaginary"):
        t.record("gpt-5-imaginary", openai(10, 10))
    assert t.total == 0 and t.records == [] and t.by_model() == {}


def test_default_price_is_used_when_given():
    t = CostTracker(PriceTable(PRICES, default=Pricing(100, 100)))
    assert t.record("mystery", openai(10_000, 0)) == 1


@pytest.mark.parametrize("usage, exc", [
    (openai(-1, 10), ValueError),
    ({"input_tokens": 10, "output_tokens": -2}, ValueError),
    (openai(10, 1, cached=20), ValueError),
    ({"tokens": 3}, TypeError),
    ("100 tokens", TypeError),
])
def test_bad_usage_records_nothing(usage, exc):
    t = tracker()
    with pytest.raises(exc):
        t.record("gpt-4o", usage)
    assert t.total == 0 and t.records == []


def test_labels_must_be_strings():
    with pytest.raises(TypeError, match="dag_id"):
        tracker().record("flat", openai(1, 1), dag_id=3)


def test_breakdowns():
    t = tracker()
    t.record("flat", openai(1_000_000, 0), dag_id="etl", task_id="a", provider="p1")
    t.record("flat", openai(2_000_000, 0), dag_id="etl", task_id="b", provider="p2")
    t.record("gpt-4o", openai(0, 100_000), dag_id="etl", task_id="a", provider="p1")
    t.record("flat", openai(500_000, 0), dag_id="report", task_id="a")
    t.record("flat", openai(250_000, 0))
    assert t.by_task() == {("etl", "a"): D(2), ("etl", "b"): D(2), ("report", "a"): D("0.5"),
                           (None, None): D("0.25")}
    assert t.by_dag() == {"etl": D(4), "report": D("0.5"), None: D("0.25")}
    assert t.by_model() == {"flat": D("3.75"), "gpt-4o": D(1)}
    assert t.by_provider() == {"p1": D(2), "p2": D(2), None: D("0.75")}
    assert t.total == D("4.75")
    assert t.remaining is None
    assert tracker(budget=10).remaining == 10


def test_float_drift_does_not_happen():
    t = CostTracker({"m": Pricing(1300, 0)})
    for _ in range(10_000):
        t.record("m", openai(1, 0))  # $0.0013 each
    assert t.total == D(13)
    assert sum([0.0013] * 10_000) != 13  # what a float total would say


def test_constructor_validation():
    with pytest.raises(ValueError, match="budget"):
        CostTracker(PRICES, budget=0)
    with pytest.raises(ValueError, match="budget"):
        CostTracker(PRICES, budget=-5)
    with pytest.raises(ValueError, match="alert_at"):
        CostTracker(PRICES, budget=1, alert_at=(0.5, 0))
    with pytest.raises(ValueError, match="alert_at"):
        CostTracker(PRICES, budget=1, alert_at=(11,))
    with pytest.raises(TypeError, match="alert_at"):
        CostTracker(PRICES, budget=1, alert_at=("half",))
    with pytest.raises(ValueError, match="hard_limit"):
        CostTracker(PRICES, hard_limit=True)
    with pytest.raises(TypeError, match="prices"):
        CostTracker(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ledger"):
        CostTracker(PRICES, ledger="costs.db")  # type: ignore[arg-type]
    assert CostTracker(PRICES, budget=1, alert_at=[1.0, 0.25, 0.5]).alert_at == (0.25, 0.5, 1.0)
    assert isinstance(CostTracker().prices, PriceTable)  # default: genai-prices


# --------------------------------------------------------------------------- alerts

def test_each_threshold_fires_once_in_order_even_when_one_record_crosses_several(caplog):
    calls = []
    t = tracker(budget=10, on_alert=lambda *a: calls.append(a))
    with caplog.at_level(logging.WARNING, logger="llm_patterns.cost"):
        t.record("flat", openai(4_000_000, 0))       # $4: 40%, nothing
        assert calls == []
        t.record("flat", openai(4_020_000, 0))       # $8.02: crosses 50% and 80%
        t.record("flat", openai(10_000, 0))          # $8.03: nothing new
        t.record("flat", openai(5_000_000, 0))       # $13.03: crosses 100%
        t.record("flat", openai(5_000_000, 0))       # nothing new
    assert calls == [(0.5, D("8.02"), D(10)), (0.8, D("8.02"), D(10)), (1.0, D("13.03"), D(10))]
    assert t.alerts == [0.5, 0.8, 1.0]
    messages = [r.getMessage() for r in caplog.records if r.name == "llm_patterns.cost"
                and r.levelno == logging.WARNING and "cost alert" in r.getMessage()]
    assert messages == [
        "cost alert: $8.02 of $10.00 budget spent (50%)",
        "cost alert: $8.02 of $10.00 budget spent (80%)",
        "cost alert: $13.03 of $10.00 budget spent (100%)",
    ]


def test_alert_at_exact_threshold_and_no_alerts_without_budget():
    calls = []
    t = tracker(budget=2, alert_at=(0.5,), on_alert=lambda *a: calls.append(a[0]))
    t.record("flat", openai(1_000_000, 0))  # exactly 50%
    assert calls == [0.5]
    quiet = tracker(on_alert=lambda *a: calls.append(a))
    quiet.record("flat", openai(10_000_000, 0))
    assert calls == [0.5]


def test_a_broken_on_alert_does_not_lose_the_record(caplog):
    def boom(*a):
        raise RuntimeError("pager down")

    t = tracker(budget=1, on_alert=boom)
    with caplog.at_level(logging.ERROR, logger="llm_patterns.cost"):
        assert t.record("flat", openai(2_000_000, 0)) == 2
    assert t.total == 2
    assert any("pager down" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_events():
    clock = VirtualClock(start=5.0)
    t = tracker(budget=1, alert_at=(1.0,), name="nightly", clock=clock)
    events = []
    t.subscribe(events.append)
    t.record("flat", openai(1_500_000, 0), dag_id="d", task_id="t", provider="p")
    assert [(e.source, e.name, e.kind, e.time) for e in events] == [
        ("cost", "nightly", "record", 5.0), ("cost", "nightly", "alert", 5.0)]
    assert events[0].data == {"model": "flat", "provider": "p", "cost": D("1.5"),
                              "total": D("1.5"), "dag_id": "d", "task_id": "t", "budget": D(1)}
    assert events[1].data == {"threshold": 1.0, "total": D("1.5"), "budget": D(1)}


# --------------------------------------------------------------------------- hard limit

def test_check_raises_before_a_call_that_would_pass_the_budget():
    t = tracker(budget=1, hard_limit=True)
    t.record("flat", openai(900_000, 0))  # $0.90 spent
    t.check(D("0.10"))                     # lands exactly on the budget: allowed
    with pytest.raises(BudgetExceeded) as info:
        t.check(0.25)
    message = str(info.value)
    assert "$0.25" in message and "$0.90" in message and "$1.00" in message
    assert not info.value.retryable
    with pytest.raises(ValueError, match="estimated_usd"):
        t.check(-1)


def test_check_is_a_no_op_without_hard_limit():
    t = tracker(budget=1)
    t.record("flat", openai(900_000, 0))
    t.check(100)  # soft budget: alerts only


def test_record_never_refuses_but_logs_past_a_hard_budget(caplog):
    t = tracker(budget=1, hard_limit=True)
    with caplog.at_level(logging.WARNING, logger="llm_patterns.cost"):
        assert t.record("flat", openai(3_000_000, 0)) == 3
    assert t.total == 3 and t.remaining == -2
    assert any("past the hard budget" in r.getMessage() for r in caplog.records)


def test_estimate_is_worst_case():
    t = tracker()
    # 1000 in x 2.5 + 500 out x 10 = 7500 per million
    assert t.estimate("gpt-4o", 1000, 500) == D("0.0075")
    with pytest.raises(KeyError):
        t.estimate("nope", 1, 1)


def flat_demand(usd):
    """A Demand whose estimate on the "flat" model ($1/M in and out) is ``usd``."""
    return Demand(input_tokens=int(D(usd) * 1_000_000), output_tokens=0)


def test_reserve_holds_in_flight_estimates_until_commit_or_release():
    t = tracker(budget=1, hard_limit=True)
    held = t.reserve("flat", flat_demand("0.6"))
    assert held.amount == D("0.6") and t.reserved == D("0.6")
    with pytest.raises(BudgetExceeded, match="reserved"):
        t.check(0.5)
    with pytest.raises(BudgetExceeded, match="reserved"):
        t.reserve("flat", flat_demand("0.5"))
    assert t.commit(held, "flat", openai(550_000, 0), task_id="t") == D("0.55")
    assert t.reserved == 0 and t.total == D("0.55")  # the hold became the real spend
    t.check(D("0.45"))
    second = t.reserve("flat", flat_demand("0.45"))
    t.release(second)
    t.release(second)  # idempotent
    assert t.reserved == 0 and t.total == D("0.55")
    with pytest.raises(ValueError, match="already"):
        t.commit(second, "flat", openai(1, 0))
    with pytest.raises(TypeError, match="Demand"):
        t.reserve("flat", 1000)
    with pytest.raises(TypeError, match="BudgetHold"):
        t.commit(object(), "flat", openai(1, 0))


def test_the_estimate_is_the_prompt_uncached_plus_max_tokens_at_the_model_prices():
    t = tracker(budget=10, hard_limit=True)
    hold = t.reserve("gpt-4o", Demand(input_tokens=1000.4, output_tokens=500))
    assert hold.amount == t.estimate("gpt-4o", 1001, 500) == D("0.0075025")


def test_without_a_hard_limit_a_hold_is_free_and_never_refused():
    t = tracker(budget=D("0.000001"))
    hold = t.reserve("no-such-model", Demand(10**6, 10**6))  # nothing priced, nothing refused
    assert hold.amount == 0 and t.reserved == 0


def test_reservations_stop_concurrent_overshoot():
    t = tracker(budget=1, hard_limit=True)
    admitted, barrier = [], threading.Barrier(8)
    barrier_after = threading.Barrier(8)

    def worker():
        barrier.wait()
        try:
            hold = t.reserve("flat", flat_demand("0.3"))
        except BudgetExceeded:
            barrier_after.wait()
            return
        admitted.append(1)
        barrier_after.wait()
        t.commit(hold, "flat", openai(300_000, 0))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    assert len(admitted) == 3  # 3 x $0.30 fits in $1; a 4th would not
    assert t.total == D("0.9") and t.reserved == 0


def test_an_unpriced_answer_is_kept_recorded_unpriced_and_charged_the_estimate(caplog):
    t = tracker(budget=1, hard_limit=True)
    with caplog.at_level(logging.WARNING, logger="llm_patterns.cost"):
        for _ in range(3):
            hold = t.reserve("flat", flat_demand("0.1"))
            assert t.commit(hold, "gpt-9-preview", openai(10, 10), task_id="x") is None
    warnings = [r for r in caplog.records if "gpt-9-preview" in r.getMessage()]
    assert len(warnings) == 1 and "unpriced" in warnings[0].getMessage()
    assert t.unpriced == 3 and t.reserved == 0
    assert t.total == D("0.3")  # the budget was charged the estimates
    record = t.records[-1]
    assert (record.model, record.priced, record.cost, record.prompt_tokens) == (
        "gpt-9-preview", False, D("0.1"), 10)
    with pytest.raises(BudgetExceeded):
        t.check(D("0.71"))
    # record() itself never guesses: an unknown model stays a KeyError there
    with pytest.raises(KeyError):
        t.record("gpt-9-preview", openai(1, 1))


def test_an_unpriced_answer_without_a_hard_limit_is_charged_the_estimate_priced_now():
    t = tracker(budget=1)
    hold = t.reserve("flat", flat_demand("0.25"))
    assert t.commit(hold, "mystery", openai(1, 1)) is None
    assert t.total == D("0.25") and t.records[-1].priced is False


def test_a_dated_snapshot_of_a_priced_family_is_priced():
    t = tracker()
    hold = t.reserve("gpt-4o", Demand(10, 10))
    assert t.commit(hold, "gpt-4o-2024-08-06", openai(1000, 500, cached=200)) == D("0.00725")
    assert t.unpriced == 0


def test_a_usage_that_cannot_be_read_still_counts_against_the_budget():
    t = tracker(budget=1, hard_limit=True)
    hold = t.reserve("flat", flat_demand("0.4"))
    with pytest.raises(TypeError):
        t.commit(hold, "flat", "garbage")
    assert t.reserved == 0
    with pytest.raises(BudgetExceeded):
        t.check(D("0.61"))  # $0.40 kept as spent although no record could be made


def test_a_failed_ledger_write_keeps_the_spend_against_the_budget(tmp_path, caplog,
                                                                  monkeypatch):
    import sqlite3

    ledger = SQLiteLedger(tmp_path / "l.db")
    t = tracker(budget=1, hard_limit=True, ledger=ledger)
    hold = t.reserve("flat", flat_demand("0.3"))

    def locked(record):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ledger, "add", locked)
    with caplog.at_level(logging.ERROR, logger="llm_patterns.cost"), \
            pytest.raises(sqlite3.OperationalError):
        t.commit(hold, "flat", openai(300_000, 0))
    assert "could not write" in caplog.text and t.reserved == 0 and t.total == 0
    t.check(D("0.7"))
    with pytest.raises(BudgetExceeded):
        t.check(D("0.71"))  # the spent $0.30 is still counted though no record holds it


def test_async_twins_release_on_cancellation_and_never_block_with_a_ledger(tmp_path):
    t = tracker(budget=1, hard_limit=True, ledger=SQLiteLedger(tmp_path / "l.db"))
    assert t.blocking

    async def main():
        hold = await t.areserve("flat", flat_demand("0.2"))
        assert t.reserved == D("0.2")
        await t.acommit(hold, "flat", openai(200_000, 0), task_id="a")
        other = await t.areserve("flat", flat_demand("0.3"))
        await t.arelease(other)
        # cancelled while the reservation runs in its thread: given back when it completes
        task = asyncio.ensure_future(t.areserve("flat", flat_demand("0.5")))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            if t.reserved == 0:
                break
            await asyncio.sleep(0.005)

    asyncio.run(main())
    assert t.reserved == 0 and t.total == D("0.2")
    assert t.by_task() == {(None, "a"): D("0.2")}


# --------------------------------------------------------------------------- memory


def test_two_hundred_thousand_task_ids_keep_memory_bounded(caplog):
    """Issue 20: 200,000 distinct task_ids grew the tracker by 60 MB (measured: 58.8 MB with
    the breakdowns unbounded); with the defaults it stays under 10 MB (measured: 4.9 MB)."""
    import tracemalloc

    t = CostTracker({"flat": Pricing(1, 1)})
    usage = Usage(prompt_tokens=1, completion_tokens=0)
    tracemalloc.start()
    try:
        with caplog.at_level(logging.WARNING, logger="llm_patterns.cost"):
            for i in range(200_000):
                t.record("flat", usage, dag_id="d", task_id=f"task-{i}")
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current < 10_000_000, current
    by_task = t.by_task()
    assert len(by_task) <= 10_001 and by_task[("d", OTHER)] == D("0.19")
    assert t.total == D("0.2") and t.count == 200_000  # totals stay exact
    assert sum(by_task.values()) == t.total and len(t.records) == 10_000
    assert len([r for r in caplog.records if "max_breakdown_keys" in r.getMessage()]) == 1


def test_folded_breakdowns_stay_bounded_whatever_the_labels():
    t = CostTracker({"flat": Pricing(1, 1)}, max_breakdown_keys=3, max_records=0)
    usage = Usage(prompt_tokens=1, completion_tokens=0)
    for i in range(50):
        t.record("flat", usage, dag_id=f"dag-{i}", task_id=f"t{i}", provider=f"p{i % 7}")
    assert len(t.by_task()) <= 7 and len(t.by_provider()) <= 7
    assert sum(t.by_dag().values()) == t.total == D("0.00005")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"alert_at": 0.9}, TypeError, r"alert_at must be a list or tuple.*0\.9"),
    ({"alert_at": "0.5"}, TypeError, "alert_at"),
    ({"alert_at": (0.5, float("nan"))}, ValueError, r"alert_at\[1\]"),
    ({"alert_at": (True,)}, TypeError, r"alert_at\[0\]"),
    ({"hard_limit": "yes"}, TypeError, "hard_limit must be True or False"),
    ({"max_records": -1}, ValueError, "max_records"),
    ({"max_records": 2.5}, TypeError, "max_records"),
    ({"max_breakdown_keys": 0}, ValueError, "max_breakdown_keys"),
    ({"budget": "lots"}, ValueError, "budget"),
    ({"budget": [1]}, TypeError, "budget"),
    ({"name": 3}, TypeError, "name"),
    ({"wall": 5}, TypeError, "wall"),
])
def test_bad_arguments_name_the_parameter(kwargs, exc, words):
    kwargs = {"budget": 1, **kwargs}
    with pytest.raises(exc, match=words):
        CostTracker(PRICES, **kwargs)


# --------------------------------------------------------------------------- concurrency

def test_sixteen_threads_lose_nothing():
    t = tracker(budget=100)
    alerts = []
    t.on_alert = lambda *a: alerts.append(a[0])
    start = threading.Barrier(16)

    def worker(i):
        start.wait()
        for _ in range(200):
            t.record("gpt-4o", openai(1000, 100, cached=300), dag_id=f"d{i % 4}", task_id=f"t{i}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    each = D("0.003125")  # 700 x 2.5 + 300 x 1.25 + 100 x 10 = 3125 per million
    assert t.total == each * 3200
    assert len(t.records) == 3200
    assert sum(t.by_task().values()) == t.total
    assert t.by_dag() == {f"d{k}": each * 800 for k in range(4)}
    assert alerts == []  # $10 of $100: below 50%


# --------------------------------------------------------------------------- properties

record_st = st.tuples(
    st.sampled_from(["gpt-4o", "claude", "flat"]),
    st.integers(0, 2_000_000), st.integers(0, 200_000), st.floats(0, 1),
    st.sampled_from([None, "d1", "d2"]), st.sampled_from([None, "t1", "t2", "t3"]),
    st.sampled_from([None, "openai", "anthropic"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(record_st, max_size=40), st.booleans())
def test_totals_are_the_sum_of_records_and_partitions_add_up(rows, use_ledger):
    ledger = SQLiteLedger(":memory:") if use_ledger else None
    t = tracker(ledger=ledger)
    expected = D(0)
    for model, prompt, completion, frac, dag, task, provider in rows:
        usage = openai(prompt, completion, cached=int(prompt * frac))
        cost = t.record(model, usage, dag_id=dag, task_id=task, provider=provider)
        assert cost == PriceTable(PRICES)[model].cost(usage)
        expected += cost
    total = t.total
    assert total == expected == sum((r.cost for r in t.records), D(0))
    for part in (t.by_task(), t.by_dag(), t.by_model(), t.by_provider()):
        assert sum(part.values(), D(0)) == total
    assert len(t.records) == len(rows)
    if ledger is not None:
        ledger.close()
