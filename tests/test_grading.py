"""The notebook checks accept correct student code and reject each classic bug by criterion."""

from __future__ import annotations

import contextlib
import io
import threading
import time

import pytest
import student_impls as S

from llm_patterns.course.grading import (
    CheckFailed,
    CheckResult,
    check_task1,
    check_task2,
    check_task3,
    check_task4,
    check_task5,
    check_task7,
)


def run(check, *args, **kw):
    """Run a check quietly: (result or None, {failed criterion: hint}, printed text)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            result = check(*args, **kw)
        except CheckFailed as exc:
            return None, dict(exc.failures), out.getvalue()
    return result, {}, out.getvalue()


def failed_keys(failures: dict[str, str], keys: dict[str, str]) -> set[str]:
    """Map failed criterion names onto short test keys (by a distinctive substring)."""
    found = set()
    for name in failures:
        matches = [k for k, sub in keys.items() if sub in name]
        assert len(matches) == 1, f"criterion {name!r} matches {matches}"
        found.add(matches[0])
    return found


T1 = {
    "full": "starts full",
    "refill": "refills at refill_rate",
    "overfill": "never holds more than capacity",
    "wait_time": "wait_time(n)",
    "above_capacity": "n above capacity",
    "lock": "thread-safe: two threads",
    "acquire": "acquire waits",
    "all_or_nothing": "both buckets or from neither",
    "limiter_lock": "RateLimiter is thread-safe",
    "backpressure": "backpressure: past max_wait",
    "logs": "logs each wait",
}
# a limiter whose own acquire has neither max_wait nor a log line fails both of these too
WAITS = ("backpressure", "logs")
T2 = {
    "first": "attempt 0",
    "growth": "doubles",
    "cap": "never above max_delay",
    "jitter": "jittered",
    "transient": "retries 429",
    "permanent": "refuses",
}
T3 = {
    "per_million": "per 1M",
    "total": "total adds up",
    "unknown": "unknown model",
    "labels": "by_task() and by_dag()",
    "alerts": "alert threshold",
    "warns": "alert logs a warning",
    "lock": "thread-safe",
}
T4 = {
    "first": "first provider",
    "moves_on": "moves on",
    "budget": "BudgetExceeded",
    "all_failed": "AllProvidersFailed",
    "logs": "logs who failed",
    "interrupts": "Ctrl-C and sys.exit()",
}
T5 = {
    "closed": "starts closed",
    "opens": "opens after failure_threshold",
    "reset": "success resets",
    "stays_open": "stays open",
    "half_opens": "half-opens after",
    "one_trial": "admits exactly one trial",
    "success_closes": "successful trial",
    "failure_reopens": "failed trial",
    "lock": "thread-safe",
    "health": "health() reports",
}
T7 = {
    "lost": "loses no text",
    "limit": "fits in max_tokens",
    "word_cut": "no word cut",
    "cuts": "cuts at a paragraph break",
    "long_word": "longer than the limit",
    "empty_bad": "empty text",
    "overlap": "with overlap",
}


def hint_for(failures: dict[str, str], substring: str) -> str:
    (hint,) = [h for name, h in failures.items() if substring in name]
    return hint


def assert_accepts(check, *impl):
    result, failures, printed = run(check, *impl)
    assert failures == {}, failures
    assert isinstance(result, CheckResult) and result.passed == result.total
    n = result.total
    assert printed.splitlines()[-1] == f"{n}/{n} criteria passed · {n}/{n} points"
    assert "✗" not in printed


def assert_rejects(check, impl, keys, expected: set[str], **kw):
    result, failures, printed = run(check, *impl, **kw)
    assert result is None, "the check accepted a buggy implementation"
    assert failed_keys(failures, keys) == expected, failures
    for name, hint in failures.items():
        assert f"✗ {name} — {hint}" in printed
    return failures


# --- task 1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "impl",
    [(S.GoodLazyBucket, S.GoodLimiter), (S.GoodGCRABucket, S.GoodPollingLimiter),
     (S.GoodLazyBucket, S.GoodPollingLimiter), (S.GoodLazyBucket, S.GoodConditionLimiter)],
    ids=["lazy-refill", "gcra+polling", "lazy+polling", "condition"],
)
def test_task1_accepts(impl):
    assert_accepts(check_task1, *impl)


@pytest.mark.parametrize(
    ("bucket", "limiter", "expected"),
    [
        (S.BugOverfillBucket, S.GoodLimiter, {"overfill"}),
        (S.BugStrictComparisonBucket, S.GoodLimiter,
         {"full", "refill", "overfill", "wait_time", "lock"}),
        (S.BugWallClockBucket, S.GoodLimiter, {"refill", "overfill", "wait_time"}),
        (S.BugUnlockedBucket, S.GoodLimiter, {"lock"}),
        (S.BugOneLineUnlockedBucket, S.GoodLimiter, {"lock"}),
        (S.BugRefillBeforeLockBucket, S.GoodLimiter, {"lock"}),
        (S.BugHintBucket, S.GoodLimiter, {"lock"}),
        (S.GoodGCRABucket, S.BugCheckThenTakeLimiter, {"limiter_lock", *WAITS}),
        (S.BugNoCapacityCheckBucket, S.GoodLimiter, {"above_capacity"}),
        (S.GoodLazyBucket, S.BugSpendWhileWaitingLimiter, {"all_or_nothing", *WAITS}),
        (S.GoodLazyBucket, S.BugTokensFirstLimiter, {"all_or_nothing", *WAITS}),
        (S.GoodLazyBucket, S.BugShortCircuitLimiter, {"all_or_nothing", *WAITS}),
        (S.GoodLazyBucket, S.BugRealSleepLimiter,
         {"acquire", "all_or_nothing", "limiter_lock", *WAITS}),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_task1_rejects(bucket, limiter, expected):
    failures = assert_rejects(check_task1, (bucket, limiter), T1, expected)
    if bucket is S.BugOverfillBucket:
        assert "capacity is 10" in hint_for(failures, T1["overfill"])
    if bucket is S.BugStrictComparisonBucket:  # the first failure names the comparison
        assert "(>=, not >)" in hint_for(failures, T1["full"])
    if bucket is S.BugWallClockBucket:
        assert "time.time()" in hint_for(failures, T1["refill"])
    if limiter is S.BugRealSleepLimiter:
        assert all("used time.sleep — use clock.sleep" in h for h in failures.values())


def test_task1_real_sleep_is_refused_only_during_the_check_and_restored():
    original = time.sleep
    run(check_task1, S.GoodLazyBucket, S.BugRealSleepLimiter)
    assert time.sleep is original
    run(check_task1, S.StubBucket, S.StubLimiter)
    assert time.sleep is original


RACES = [
    # (criterion, implementation, None if correct else a phrase the hint must hold)
    ("bucket", S.BugUnlockedBucket, "both passed the check before either took"),
    ("bucket", S.BugHintBucket, "both passed the check before either took"),
    ("bucket", S.BugRefillBeforeLockBucket, "both granted"),
    ("bucket", S.BugOneLineUnlockedBucket, "both granted"),
    ("bucket", S.GoodLazyBucket, None),
    ("bucket", S.GoodGCRABucket, None),
    ("limiter", S.BugCheckThenTakeLimiter, "hold one lock across checking both buckets"),
    ("limiter", S.GoodLimiter, None),
    ("limiter", S.GoodPollingLimiter, None),
    ("limiter", S.GoodConditionLimiter, None),
    ("tracker", S.BugUnlockedTracker, "one update was lost"),
    ("tracker", S.GoodFloatTracker, None),
    ("tracker", S.GoodDecimalTracker, None),
    ("breaker", S.BugUnlockedHalfOpenBreaker, "let through as the half-open trial"),
    ("breaker", S.GoodLazyBreaker, None),
    ("breaker", S.GoodEagerBreaker, None),
]


def _race_verdict(kind, impl):
    """The race criterion alone: None when it passes, else its hint."""
    from llm_patterns.course.grading import task1_rate_limit, task3_cost, task5_circuit_breaker
    from llm_patterns.course.grading._framework import Fail

    criterion = {
        "bucket": task1_rate_limit._thread_safe,
        "limiter": task1_rate_limit._limiter_thread_safe,
        "tracker": task3_cost._thread_safe,
        "breaker": task5_circuit_breaker._half_open_race,
    }[kind]
    try:
        criterion(impl)
    except Fail as exc:
        return exc.hint
    return None


@pytest.mark.parametrize(("kind", "impl", "phrase"), RACES,
                         ids=[f"{k}-{i.__name__}" for k, i, _ in RACES])
def test_races_are_caught_whatever_the_shape_and_the_verdict_is_identical_20_times(
        kind, impl, phrase):
    verdicts = {_race_verdict(kind, impl) for _ in range(20)}
    assert len(verdicts) == 1, verdicts  # same code, same schedules, same words
    (verdict,) = verdicts
    if phrase is None:
        assert verdict is None
    else:
        assert verdict is not None and phrase in verdict, verdict
        assert "how: thread" in verdict  # the hint says where the threads interleaved


def test_a_lock_order_deadlock_under_the_scheduler_is_named_not_hung():
    """Two threads taking two locks in opposite orders deadlock under some schedule: the
    scheduler sees every thread waiting and reports it at once, without a timeout."""
    from llm_patterns.course.grading.scheduler import Call, explore, race_errors

    class Transfer:
        def __init__(self):
            self.a, self.b = threading.Lock(), threading.Lock()

        def ab(self):
            with self.a, self.b:
                return 1

        def ba(self):
            with self.b, self.a:
                return 2

    def setup():
        t = Transfer()

        def judge(run):
            race_errors(run)
            return None

        return [Call(t, "ab"), Call(t, "ba")], judge

    t0 = time.perf_counter()
    with pytest.raises(Exception, match="deadlocked"):
        explore(setup, student=(Transfer,))
    assert time.perf_counter() - t0 < 10  # a hang guard, not a speed test


def test_endless_loop_fails_within_budget_and_returns():
    before = set(threading.enumerate())  # a deadlock test may leave a blocked daemon behind
    t0 = time.perf_counter()
    _, failures, _ = run(check_task1, S.GoodLazyBucket, S.BugBusyWaitLimiter, budget=0.5)
    assert time.perf_counter() - t0 < 10  # a hang guard, not a speed test
    assert failed_keys(failures, T1) == {"acquire", "all_or_nothing", "limiter_lock", *WAITS}
    assert all(h.startswith("did not finish within 0.5 s — an endless loop?")
               for h in failures.values())
    # the stopped threads are gone: the async exception reached them
    deadline = time.perf_counter() + 5
    while any(t.name == "check-criterion" for t in set(threading.enumerate()) - before):
        assert time.perf_counter() < deadline, "a criterion thread survived its budget"
        time.sleep(0.01)


def test_deadlock_is_named_and_does_not_spill_into_later_checks():
    """A lock taken twice blocks forever: the hint says so, and the next check is unharmed."""
    _, failures, _ = run(check_task1, S.GoodLazyBucket, S.BugDeadlockLimiter, budget=0.3)
    assert failed_keys(failures, T1) == {"acquire", "all_or_nothing", "limiter_lock", *WAITS}
    # on one thread: a criterion stuck in the lock; under the race scheduler: named at once
    assert all("stuck waiting for a lock" in h or "waits for a lock it already holds" in h
               for h in failures.values()), failures
    assert "waits for a lock it already holds" in hint_for(failures, T1["limiter_lock"])
    for _ in range(3):  # the lockstep thread-safety criteria still pass on correct code
        _, failures, _ = run(check_task3, S.GoodFloatTracker)
        assert failures == {}
        _, failures, _ = run(check_task3, S.BugUnlockedTracker)
        assert failed_keys(failures, T3) == {"lock"}


@pytest.mark.parametrize(
    ("check", "impl", "keys"),
    [
        (check_task1, (S.StubBucket, S.StubLimiter), T1),
        (check_task2, (S.stub_backoff, S.stub_is_retryable), T2),
        (check_task3, (S.StubTracker,), T3),
        (check_task4, (S.stub_fallback,), T4),
        (check_task5, (S.StubBreaker,), T5),
        (check_task7, (S.stub_chunk,), T7),
    ],
    ids=["task1", "task2", "task3", "task4", "task5", "task7"],
)
def test_stub_reads_not_implemented_for_every_criterion(check, impl, keys):
    _, failures, printed = run(check, *impl)
    assert failed_keys(failures, keys) == set(keys)
    assert all(h == "not implemented yet — replace the `raise NotImplementedError` with your code"
               for h in failures.values())
    assert printed.splitlines()[-1] == f"0/{len(keys)} criteria passed · 0/{len(keys)} points"


# --- task 2 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "impl",
    [(S.good_full_jitter, S.good_is_retryable), (S.good_equal_jitter, S.good_is_retryable_by_status),
     (S.good_proportional_jitter, S.good_is_retryable)],
    ids=["full", "equal", "proportional"],
)
def test_task2_accepts(impl):
    assert_accepts(check_task2, *impl)


@pytest.mark.parametrize(
    ("impl", "expected"),
    [
        ((S.bug_jitter_after_cap, S.good_is_retryable), {"cap", "first"}),
        ((S.bug_no_jitter, S.good_is_retryable), {"jitter"}),
        ((S.bug_linear, S.good_is_retryable), {"growth"}),
        ((S.bug_off_by_one, S.good_is_retryable), {"first"}),
        ((S.bug_global_random, S.good_is_retryable), {"jitter"}),
        ((S.good_full_jitter, S.bug_retries_quota), {"permanent"}),
        ((S.good_full_jitter, S.bug_misses_529_and_timeouts), {"transient"}),
        ((S.good_full_jitter, S.bug_retries_everything), {"permanent"}),
    ],
    ids=lambda x: "+".join(f.__name__ for f in x) if isinstance(x, tuple) else None,
)
def test_task2_rejects(impl, expected):
    failures = assert_rejects(check_task2, impl, T2, expected)
    text = " ".join(failures.values())
    if impl[0] is S.bug_no_jitter:
        assert "thundering herd" in text
    if impl[1] is S.bug_retries_quota:
        assert "QuotaExceededError" in text
    if impl[1] is S.bug_misses_529_and_timeouts:
        assert "529" in text and "ProviderTimeout" in text


# --- task 3 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", [S.GoodFloatTracker, S.GoodDecimalTracker, S.GoodRecordsTracker])
def test_task3_accepts(impl):
    assert_accepts(check_task3, impl)


@pytest.mark.parametrize(
    ("impl", "expected"),
    [
        (S.BugPer1KTracker, {"per_million", "total", "labels", "alerts", "warns", "lock"}),
        (S.BugCheapDefaultTracker, {"unknown"}),
        (S.BugAlertEveryCallTracker, {"alerts", "warns"}),
        (S.BugSilentAlertTracker, {"warns"}),
        (S.BugUnlockedTracker, {"lock"}),
        (S.BugByTaskIdOnlyTracker, {"labels"}),
        (S.BugOverwriteByTaskTracker, {"labels"}),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_task3_rejects(impl, expected):
    failures = assert_rejects(check_task3, (impl,), T3, expected)
    if impl is S.BugPer1KTracker:
        assert "per 1M" in failures["prices are per 1M tokens"]
        assert "1,000" in failures["prices are per 1M tokens"]
    if impl is S.BugAlertEveryCallTracker:
        assert "fired 2 times" in failures["each alert threshold fires once"]


# --- task 4 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", [S.good_fallback, S.good_fallback_other_style,
                                  S.good_fallback_own_handler, S.good_fallback_root_logger])
def test_task4_accepts(impl):
    assert_accepts(check_task4, impl)


@pytest.mark.parametrize(
    ("impl", "expected"),
    [
        (S.bug_no_fallback, {"moves_on", "all_failed", "logs"}),
        (S.bug_swallows_budget, {"budget"}),
        (S.bug_reraises_last, {"all_failed"}),
        (S.bug_prints_instead_of_logging, {"logs"}),
        (S.bug_logs_only_failures, {"logs"}),
        (S.bug_catches_base_exception, {"interrupts"}),
        (S.bug_bare_except, {"interrupts"}),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_task4_rejects(impl, expected):
    failures = assert_rejects(check_task4, (impl,), T4, expected)
    if impl is S.bug_no_fallback:  # an unexpected error points at the student's line
        hint = failures["logs who failed and who answered"]
        assert hint.startswith("raised ServerError: ") and "in bug_no_fallback, line" in hint
    if impl is S.bug_logs_only_failures:
        assert "anthropic-backup" in failures["logs who failed and who answered"]


def test_task4_logging_capture_leaves_root_logger_alone():
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    run(check_task4, S.good_fallback)
    assert root.handlers == handlers and root.level == level


# --- task 5 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", [S.GoodLazyBreaker, S.GoodEagerBreaker])
def test_task5_accepts(impl):
    assert_accepts(check_task5, impl)


@pytest.mark.parametrize(
    ("impl", "expected"),
    [
        (S.BugEveryoneInHalfOpen, {"one_trial", "lock"}),
        (S.BugNeverHalfOpens,
         {"half_opens", "one_trial", "success_closes", "failure_reopens", "lock"}),
        (S.BugWallClockBreaker,
         {"half_opens", "one_trial", "success_closes", "failure_reopens", "lock", "health"}),
        (S.BugTrialFailureStaysHalfOpen, {"failure_reopens", "lock"}),
        (S.BugStaleCooldown, {"failure_reopens"}),
        (S.BugNoSuccessReset, {"reset", "success_closes"}),
        (S.BugStraightToClosed, {"half_opens", "one_trial", "failure_reopens", "lock"}),
        (S.BugUnlockedHalfOpenBreaker, {"lock"}),
        (S.BugFrozenRetryInBreaker, {"health"}),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_task5_rejects(impl, expected):
    failures = assert_rejects(check_task5, (impl,), T5, expected)
    if impl is S.BugEveryoneInHalfOpen:
        assert "6 of 6 callers" in failures["half-open admits exactly one trial"]
        assert "fix 'half-open admits exactly one trial' first" in hint_for(failures, "thread-safe")
    if impl is S.BugUnlockedHalfOpenBreaker:
        assert "let through as the half-open trial" in hint_for(failures, "thread-safe")


# --- task 7 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", [S.good_chunk_recursive, S.good_chunk_greedy_words])
def test_task7_accepts(impl):
    assert_accepts(check_task7, impl)


@pytest.mark.parametrize(
    ("impl", "expected"),
    [
        (S.bug_chunk_loses_whitespace, {"lost", "word_cut", "cuts", "long_word", "overlap"}),
        (S.bug_chunk_over_limit, {"limit", "cuts", "long_word", "overlap"}),
        (S.bug_chunk_cuts_words, {"word_cut", "cuts"}),
        (S.bug_chunk_words_only, {"cuts"}),
        (S.bug_chunk_empty_text, {"empty_bad"}),
        (S.bug_chunk_no_validation, {"empty_bad"}),
    ],
    ids=lambda x: getattr(x, "__name__", None),
)
def test_task7_rejects(impl, expected):
    assert_rejects(check_task7, (impl,), T7, expected)


def test_task7_endless_loop_on_a_long_word_is_a_failed_criterion():
    failures = assert_rejects(
        check_task7, (S.bug_chunk_endless_on_long_word,), T7, {"long_word", "cuts"}, budget=0.3
    )
    assert "did not finish within 0.3 s" in hint_for(failures, T7["long_word"])


# --- output and rendering ----------------------------------------------------------------------


def test_output_is_deterministic_and_short():
    first = run(check_task1, S.GoodGCRABucket, S.GoodLimiter)
    second = run(check_task1, S.GoodGCRABucket, S.GoodLimiter)
    assert first[2] == second[2]
    assert first[2].splitlines()[0] == "Task 1 · Rate limiting"
    assert repr(first[0]) == "CheckResult(passed=11, total=11)"
    _, _, a = run(check_task3, S.BugCheapDefaultTracker)
    _, _, b = run(check_task3, S.BugCheapDefaultTracker)
    assert a == b and "0x" not in a


def test_check_failed_renders_short():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(CheckFailed) as info:
        check_task5(S.BugEveryoneInHalfOpen)
    exc = info.value
    assert isinstance(exc, AssertionError)
    lines = exc._render_traceback_()
    assert lines[0] == "CheckFailed: Task 5 · Circuit breaker: 2 of 10 criteria failed"
    assert lines[1] == "  ✗ half-open admits exactly one trial"
    assert len(lines) <= 10
    assert "half-open admits exactly one trial" in str(exc)
    assert out.getvalue().splitlines()[-1] == "8/10 criteria passed · 8/10 points"


def test_ipython_shows_the_short_rendering():
    ipython = pytest.importorskip("IPython.core.interactiveshell")
    shell = ipython.InteractiveShell.instance()
    shell.user_ns["check_task5"] = check_task5
    shell.user_ns["Impl"] = S.BugEveryoneInHalfOpen
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        shell.run_cell("check_task5(Impl)")
    text = out.getvalue() + err.getvalue()
    assert "CheckFailed: Task 5 · Circuit breaker: 2 of 10 criteria failed" in text
    assert "Traceback" not in text and "task5_circuit_breaker.py" not in text


def test_bad_budget_is_a_value_error():
    with pytest.raises(ValueError, match="budget"):
        check_task2(S.good_full_jitter, S.good_is_retryable, budget=0)


def test_task3_thread_safety_is_judged_before_by_task_exists():
    class NoGroupsYet(S.GoodFloatTracker):
        def by_task(self):
            raise NotImplementedError

    _, failures, _ = run(check_task3, NoGroupsYet)
    assert failed_keys(failures, T3) == {"labels"}
    _, failures, _ = run(check_task3, type("Racy", (S.BugUnlockedTracker,),
                                           {"by_task": NoGroupsYet.by_task}))
    assert "one update was lost" in hint_for(failures, T3["lock"])


def test_task5_stale_cooldown_is_named_not_told_to_reopen():
    _, failures, _ = run(check_task5, S.BugStaleCooldown)
    hint = hint_for(failures, T5["failure_reopens"])
    assert "restarts the cooldown" in hint and "must re-open" not in hint


# --- under_guard: demo cells run student code like the checks do --------------------------------


def test_under_guard_stops_a_real_sleep_and_a_loop_with_a_message_and_returns_values():
    from llm_patterns.course.grading import Stopped, under_guard

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert under_guard(lambda: 42) == 42
        slept = under_guard(lambda: time.sleep(120), what="the burst through your limiter")
        t0 = time.perf_counter()

        def spin():
            while True:
                pass

        looped = under_guard(spin, what="the demo", budget=0.3)
        spent = time.perf_counter() - t0
    assert isinstance(slept, Stopped) and not slept and "use clock.sleep" in slept.reason
    assert isinstance(looped, Stopped) and "did not finish within 0.3 s" in looped.reason
    assert spent < 10  # a hang guard, not a speed test
    assert "⚠ the burst through your limiter was stopped: used time.sleep" in out.getvalue()
    with pytest.raises(NotImplementedError):  # a stub's error is the student's to read
        under_guard(_stub_call)
    assert time.sleep.__name__ == "sleep" and time.sleep is _REAL_SLEEP  # restored


_REAL_SLEEP = time.sleep


def _stub_call():
    raise NotImplementedError("implement RateLimiter")
