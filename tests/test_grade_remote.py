"""The checks through the worker: every correct design scores full marks, every bug is caught with
the same words as in the notebook, and the race verdicts are identical run after run."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import student_impls as S
import submissions as SUB

from llm_patterns.course.grading import grade as G
from llm_patterns.course.grading import task1_rate_limit as T1
from llm_patterns.course.grading import task3_cost as T3
from llm_patterns.course.grading import task5_circuit_breaker as T5
from llm_patterns.course.grading._framework import Fail, on_overrun, output_to
from llm_patterns.course.grading.remote import Session
from llm_patterns.course.grading.sandbox import Limits, Sandbox
from llm_patterns.course.grading.script import TASKS

LIMITS = Limits(criterion_seconds=5.0, task_seconds=60.0, submission_seconds=180.0)

# one correct design per task in each column: every one must score full marks
COLUMNS = [
    {"TokenBucket": "GoodLazyBucket", "RateLimiter": "GoodLimiter",
     "calculate_backoff": "good_full_jitter", "is_retryable": "good_is_retryable",
     "CostTracker": "GoodFloatTracker", "call_with_fallback": "good_fallback",
     "CircuitBreaker": "GoodLazyBreaker", "chunk_text": "good_chunk_recursive"},
    {"TokenBucket": "GoodGCRABucket", "RateLimiter": "GoodPollingLimiter",
     "calculate_backoff": "good_equal_jitter", "is_retryable": "good_is_retryable_by_status",
     "CostTracker": "GoodDecimalTracker", "call_with_fallback": "good_fallback_other_style",
     "CircuitBreaker": "GoodEagerBreaker", "chunk_text": "good_chunk_greedy_words"},
    {"TokenBucket": "GoodLazyBucket", "RateLimiter": "GoodConditionLimiter",
     "calculate_backoff": "good_proportional_jitter", "is_retryable": "good_is_retryable",
     "CostTracker": "GoodRecordsTracker", "call_with_fallback": "good_fallback_own_handler",
     "CircuitBreaker": "GoodEagerBreaker", "chunk_text": "good_chunk_recursive"},
]


def submission(folder: Path, names: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    aliases = "\n".join(f"{task_name} = {impl}" for task_name, impl in names.items())
    (folder / "my_course.py").write_text(SUB.impls_source() + "\n\n" + aliases + "\n")
    return folder


@pytest.mark.parametrize("column", range(len(COLUMNS)))
def test_every_correct_design_scores_full_marks_through_the_worker(tmp_path, column):
    report = G.grade(submission(tmp_path / "s", COLUMNS[column]), limits=LIMITS, jobs=2)
    for key, task in report["tasks"].items():
        failed = {c["name"]: c["hint"] for c in task["criteria"] if not c["passed"]}
        assert task["points"] == task["max"] and not failed, (key, task["reason"], failed)
    assert report["score"] == report["max"] and report["bonus"]["score"] == report["bonus"]["max"]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """One worker holding every implementation of student_impls.py."""
    folder = tmp_path_factory.mktemp("impls")
    names = [n for n in dir(S) if n.startswith(("Good", "Bug", "good", "bug", "Stub", "stub"))]
    with Sandbox(folder, limits=LIMITS) as box:
        s = Session(box, [{"filename": "student_impls.py", "source": SUB.impls_source()}], names)
        yield s
        s.close()


def remote_verdict(session, criterion, name):
    """A criterion run on the worker's object ``name``: None when it passes, else its hint."""
    try:
        with on_overrun(session.overrun):
            criterion(session.root(name))
    except Fail as exc:
        return exc.hint
    return None


def local_verdict(criterion, impl):
    try:
        criterion(impl)
    except Fail as exc:
        return exc.hint
    return None


RACES = [
    (T1._thread_safe, "BugHintBucket", True),
    (T1._thread_safe, "BugRefillBeforeLockBucket", True),
    (T1._limiter_thread_safe, "BugCheckThenTakeLimiter", True),
    (T3._thread_safe, "BugUnlockedTracker", True),
    (T5._half_open_race, "BugUnlockedHalfOpenBreaker", True),
    (T1._thread_safe, "GoodLazyBucket", False),
    (T5._half_open_race, "GoodLazyBreaker", False),
]


@pytest.mark.parametrize(("criterion", "name", "racy"), RACES, ids=[n for _, n, _ in RACES])
def test_races_through_the_worker_match_the_notebook_and_repeat(session, criterion, name, racy):
    runs = 20 if racy or name == "GoodLazyBucket" else 5
    verdicts = {remote_verdict(session, criterion, name) for _ in range(runs)}
    assert len(verdicts) == 1, verdicts
    (verdict,) = verdicts
    assert (verdict is not None) == racy, verdict
    # the same schedules and the same words as the check cell in the notebook
    assert verdict == local_verdict(criterion, getattr(S, name))


def test_each_buggy_implementation_fails_the_same_criteria_as_in_the_notebook(session):
    cases = [
        (1, ("BugOverfillBucket", "GoodLimiter")),
        (1, ("GoodLazyBucket", "BugShortCircuitLimiter")),
        (2, ("bug_jitter_after_cap", "good_is_retryable")),
        (2, ("good_full_jitter", "bug_retries_quota")),
        (3, ("BugPer1KTracker",)),
        (3, ("BugAlertEveryCallTracker",)),
        (3, ("BugSilentAlertTracker",)),
        (4, ("bug_swallows_budget",)),
        (4, ("bug_reraises_last",)),
        (4, ("bug_prints_instead_of_logging",)),
        (4, ("bug_catches_base_exception",)),
        (4, ("bug_bare_except",)),
        (5, ("BugStaleCooldown",)),
        (7, ("bug_chunk_cuts_words",)),
    ]
    for number, names in cases:
        check = TASKS[number].check
        local = _failures(check, *(getattr(S, n) for n in names))
        with on_overrun(session.overrun):
            remote = _failures(check, *(session.root(n) for n in names), budget=5.0)
        assert remote == local and remote, (names, remote, local)


def test_a_deadlock_in_the_worker_is_named(session):
    with on_overrun(session.overrun):
        failures = _failures(TASKS[1].check, session.root("GoodLazyBucket"),
                             session.root("BugDeadlockLimiter"), budget=1.0)
    assert "stuck waiting for a lock" in failures[
        "RateLimiter.acquire waits with clock.sleep and returns the seconds waited"]
    assert "waits for a lock it already holds" in failures[
        "RateLimiter is thread-safe: concurrent acquires never get more than there is"]


def _failures(check, *impl, budget=2.0):
    from llm_patterns.course.grading import CheckFailed

    with output_to(io.StringIO()):
        try:
            check(*impl, budget=budget)
        except CheckFailed as exc:
            return dict(exc.failures)
    return {}
