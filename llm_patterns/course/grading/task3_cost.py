"""Task 3 check: a cost tracker with per-1M prices, labels, alerts and thread safety."""

from __future__ import annotations

import logging
from typing import Any

from ._framework import DEFAULT_BUDGET, CheckResult, Criterion, Fail, capture_logs, run_check
from ._student import alert_threshold, construct, fmt
from .scheduler import Call, explore, race_errors

__all__ = ["check_task3"]

TITLE = "Task 3 · Cost tracking"

PRICING = {
    "gpt-4o": {"input": 2.5, "output": 10.0},
    "gpt-4o-mini": {"input": 0.15, "output": 0.6},
    "claude-sonnet": {"input": 3.0, "output": 15.0},
}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _tracker(CostTracker: Any, pricing: dict | None = None, budget: float = 100.0) -> Any:
    return construct(CostTracker, pricing if pricing is not None else PRICING, budget)


def _num(value: Any, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Fail(f"{what} is {value!r}: expected a number of US dollars "
                   "(float or Decimal)") from None


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 + 1e-9 * abs(b)


def _call_or_get(obj: Any, name: str) -> Any:
    value = getattr(obj, name)
    return value() if callable(value) else value


def _per_million(CostTracker: Any) -> None:
    tracker = _tracker(CostTracker)
    cost = _num(tracker.record("gpt-4o", _usage(1000, 500)), "record(...)'s return value")
    expected = 1000 * 2.5 / 1e6 + 500 * 10.0 / 1e6  # 0.0075
    if _close(cost, expected):
        return
    if expected and _close(cost / expected, 1000.0):
        raise Fail(
            f"1000 prompt + 500 completion tokens of gpt-4o cost {fmt(cost)} USD, expected "
            f"{fmt(expected)}: prices are per 1M tokens, you divided by 1,000 — use "
            "tokens * price / 1_000_000"
        )
    raise Fail(
        f"1000 prompt + 500 completion tokens of gpt-4o (input 2.5, output 10 USD per 1M) cost "
        f"{fmt(cost)} USD, expected {fmt(expected)}: prompt_tokens * input / 1e6 + "
        "completion_tokens * output / 1e6"
    )


def _total(CostTracker: Any) -> None:
    tracker = _tracker(CostTracker)
    calls = [("gpt-4o", 1000, 500), ("gpt-4o-mini", 20_000, 1_000), ("claude-sonnet", 3_000, 0)]
    expected = 0.0
    for model, p, c in calls:
        tracker.record(model, _usage(p, c))
        expected += p * PRICING[model]["input"] / 1e6 + c * PRICING[model]["output"] / 1e6
    total = _num(_call_or_get(tracker, "total"), "total")
    if not _close(total, expected):
        raise Fail(
            f"after three records the total is {fmt(total)} USD, expected {fmt(expected)}: add "
            "every request's cost to the total"
        )


def _unknown_model(CostTracker: Any) -> None:
    tracker = _tracker(CostTracker)
    try:
        cost = tracker.record("gpt-99-ultra", _usage(1000, 1000))
    except KeyError:
        pass
    else:
        raise Fail(
            f"record('gpt-99-ultra', ...) returned {fmt(cost)} USD: an unknown model must raise "
            "KeyError naming it — pricing it as a cheap model hides real spend"
        )
    total = _num(_call_or_get(tracker, "total"), "total")
    if total != 0:
        raise Fail(f"a refused unknown-model record still added {fmt(total)} USD to the total")


def _labels(CostTracker: Any) -> None:
    tracker = _tracker(CostTracker)
    records = [
        ("gpt-4o", 1000, 0, "etl", "extract"),
        ("gpt-4o", 2000, 0, "etl", "extract"),
        ("gpt-4o", 4000, 0, "etl", "summarize"),
        ("gpt-4o-mini", 1_000_000, 0, "report", "extract"),
    ]
    want_task: dict[tuple[str, str], float] = {}
    want_dag: dict[str, float] = {}
    for model, p, c, dag, task in records:
        tracker.record(model, _usage(p, c), dag_id=dag, task_id=task)
        cost = p * PRICING[model]["input"] / 1e6
        want_task[(dag, task)] = want_task.get((dag, task), 0.0) + cost
        want_dag[dag] = want_dag.get(dag, 0.0) + cost
    for name, want in (("by_task", want_task), ("by_dag", want_dag)):
        got = _call_or_get(tracker, name)
        try:
            got = {k: float(v) for k, v in dict(got).items()}
        except (TypeError, ValueError):
            raise Fail(f"{name}() returned {got!r}: expected a dict of key -> USD") from None
        for key, value in want.items():
            if key not in got:
                example = "('etl', 'extract')" if name == "by_task" else "'etl'"
                raise Fail(
                    f"{name}() has no key {key!r} (keys: {sorted(map(repr, got))}): key it "
                    f"{'(dag_id, task_id)' if name == 'by_task' else 'by dag_id'}, e.g. {example}"
                )
            if not _close(got[key], value):
                raise Fail(
                    f"{name}()[{key!r}] is {fmt(got[key])} USD, expected {fmt(value)}: add each "
                    "record's cost to its group (+=), do not overwrite it"
                )
        extra = set(got) - set(want)
        if extra:
            raise Fail(f"{name}() has keys no record used: {sorted(map(repr, extra))}")


def _alerts_list(tracker: Any) -> list[float]:
    raw = _call_or_get(tracker, "alerts")
    values = [alert_threshold(x) for x in list(raw)]
    if any(v is None for v in values):
        raise Fail(f"alerts is {list(raw)!r}: expected the thresholds that fired, e.g. [0.5, 0.8]")
    return [round(v, 9) for v in values]  # type: ignore[arg-type]


def _alerts(CostTracker: Any) -> None:
    pricing = {"flat": {"input": 1.0, "output": 0.0}}  # 1 USD per 1M prompt tokens
    tracker = _tracker(CostTracker, pricing, budget=1.0)
    steps = [
        (300_000, []),
        (300_000, [0.5]),
        (100_000, [0.5]),
        (150_000, [0.5, 0.8]),
        (100_000, [0.5, 0.8]),
        (100_000, [0.5, 0.8, 1.0]),
        (100_000, [0.5, 0.8, 1.0]),
    ]
    spent = 0
    for tokens, want in steps:
        tracker.record("flat", _usage(tokens, 0))
        spent += tokens
        got = _alerts_list(tracker)
        if got != want:
            counts = {t: got.count(t) for t in set(got)}
            repeated = [t for t, n in counts.items() if n > 1]
            if repeated:
                raise Fail(
                    f"at {fmt(spent / 1e6)} USD of a 1 USD budget alerts are {got}: threshold "
                    f"{fmt(repeated[0])} fired {counts[repeated[0]]} times. Fire each threshold "
                    "once: remember which ones fired (a set) and skip them"
                )
            raise Fail(
                f"at {fmt(spent / 1e6)} USD of a 1 USD budget (thresholds 0.5, 0.8, 1.0) alerts "
                f"are {got}, expected {want}: a threshold fires when total >= threshold * budget"
            )
    tracker = _tracker(CostTracker, pricing, budget=1.0)
    tracker.record("flat", _usage(900_000, 0))
    got = _alerts_list(tracker)
    if got != [0.5, 0.8]:
        raise Fail(
            f"one record that takes spending from 0 to 0.9 USD of a 1 USD budget gave alerts "
            f"{got}, expected [0.5, 0.8]: check every threshold, not only the next one"
        )


def _alert_warns(CostTracker: Any) -> None:
    pricing = {"flat": {"input": 1.0, "output": 0.0}}
    tracker = _tracker(CostTracker, pricing, budget=1.0)
    for tokens, fired in ((400_000, None), (200_000, 0.5), (300_000, 0.8)):
        with capture_logs() as records:
            tracker.record("flat", _usage(tokens, 0))
        warnings = [m for _, level, m in records if level >= logging.WARNING]
        if fired is None and warnings:
            raise Fail(
                f"recording 0.4 USD of a 1 USD budget logged a warning ({warnings[0]!r}) before "
                "any threshold was reached: warn only when an alert fires"
            )
        if fired is not None and not warnings:
            quiet = [m for _, _, m in records]
            raise Fail(
                f"the {fmt(fired)} alert fired without a log line at WARNING or above"
                + (f" (logged {quiet[0]!r} below WARNING)" if quiet else "")
                + ": log each alert with the logging module (log.warning(...)) naming the spend "
                "and the budget, so the pipeline's operators see it"
            )
    with capture_logs() as records:
        tracker.record("flat", _usage(50_000, 0))
    if any(level >= logging.WARNING for _, level, _ in records):
        raise Fail("a record that fired no new alert logged a warning: warn once per threshold")


def _thread_safe(CostTracker: Any) -> None:
    usage = _usage(1000, 500)
    expected = 2 * 0.0075
    key = ("etl", "extract")
    # by_task is judged here only if it is right without threads (else "by_task" reports it)
    baseline = _tracker(CostTracker)
    for _ in range(2):
        baseline.record("gpt-4o", usage, dag_id="etl", task_id="extract")
    grouped_ok = _close(_grouped(baseline, key), expected)

    def setup() -> tuple[list[Call], Any]:
        tracker = _tracker(CostTracker)

        def judge(run: Any) -> str | None:
            race_errors(run)
            total = _num(_call_or_get(tracker, "total"), "total")
            grouped = _grouped(tracker, key) if grouped_ok else expected
            if _close(total, expected) and _close(grouped, expected):
                return None
            return (
                f"two threads recording 0.0075 USD at once left total={fmt(total)}"
                + (f" and by_task={fmt(grouped)}" if grouped_ok else "")
                + f", expected {fmt(expected)}: `self.total += cost` is a read-modify-write and "
                "one update was lost (both threads read the old total before either wrote it "
                "back). Do the updates inside `with self.lock:` (a threading.Lock)"
            )

        call = Call(tracker, "record", ("gpt-4o", usage), {"dag_id": "etl", "task_id": "extract"})
        return [call, call], judge

    found = explore(setup, student=(CostTracker,))
    if found is not None:
        raise found.fail("total adds up every record")


def _grouped(tracker: Any, key: tuple[str, str]) -> float:
    try:
        value = dict(_call_or_get(tracker, "by_task")).get(key, 0.0)
        return float(value)
    except (TypeError, ValueError, AttributeError, NotImplementedError):
        # no by_task yet: the thread-safety criterion judges the total alone (the by_task
        # criterion says what is missing)
        return float("nan")


def check_task3(CostTracker: Any, *, budget: float = DEFAULT_BUDGET) -> CheckResult:
    """Check a student's ``CostTracker(pricing, budget, alert_thresholds)`` (SPEC §6)."""
    criteria = [
        Criterion("prices are per 1M tokens", lambda: _per_million(CostTracker)),
        Criterion("total adds up every record", lambda: _total(CostTracker)),
        Criterion("an unknown model raises KeyError", lambda: _unknown_model(CostTracker)),
        Criterion("by_task() and by_dag() group the costs", lambda: _labels(CostTracker)),
        Criterion("each alert threshold fires once", lambda: _alerts(CostTracker)),
        Criterion("each alert logs a warning", lambda: _alert_warns(CostTracker)),
        Criterion(
            "thread-safe: concurrent records add up exactly", lambda: _thread_safe(CostTracker)
        ),
    ]
    return run_check(TITLE, criteria, budget=budget, timeout_hint="record should return at once")
