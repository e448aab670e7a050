"""Task 5 check: a circuit breaker that opens, cools down on the clock, and probes once."""

from __future__ import annotations

from typing import Any

from llm_patterns.clock import VirtualClock

from ._framework import DEFAULT_BUDGET, CheckResult, Criterion, Fail, run_check
from ._student import construct, norm_state
from .scheduler import Call, explore, race_errors

__all__ = ["check_task5"]

TITLE = "Task 5 · Circuit breaker"
THRESHOLD = 3
RESET = 30.0


def _breaker(CircuitBreaker: Any, clock: VirtualClock) -> Any:
    return construct(CircuitBreaker, THRESHOLD, RESET, clock=clock)


def _state(breaker: Any) -> str:
    return norm_state(breaker.state)


def _opened(CircuitBreaker: Any) -> tuple[Any, VirtualClock]:
    clock = VirtualClock()
    breaker = _breaker(CircuitBreaker, clock)
    for _ in range(THRESHOLD):
        breaker.can_execute()
        breaker.record_failure()
    if _state(breaker) != "open":
        raise Fail(
            f"after {THRESHOLD} failures (failure_threshold={THRESHOLD}) the state is "
            f"{_state(breaker)!r}, expected 'open' — fix 'opens after failure_threshold "
            "failures' first"
        )
    return breaker, clock


def _half_open(CircuitBreaker: Any) -> tuple[Any, VirtualClock]:
    breaker, clock = _opened(CircuitBreaker)
    clock.advance(RESET + 0.001)
    if not breaker.can_execute():
        raise Fail(
            f"after clock.advance({RESET:g}) past reset_timeout={RESET:g} can_execute() is still "
            "False — fix 'half-opens after reset_timeout' first"
        )
    return breaker, clock


def _starts_closed(CircuitBreaker: Any) -> None:
    breaker = _breaker(CircuitBreaker, VirtualClock())
    if _state(breaker) != "closed":
        raise Fail(f"a new breaker is {_state(breaker)!r}: it starts 'closed'")
    if not all(breaker.can_execute() for _ in range(5)):
        raise Fail("a new (closed) breaker refused a call: closed lets every call through")


def _opens(CircuitBreaker: Any) -> None:
    clock = VirtualClock()
    breaker = _breaker(CircuitBreaker, clock)
    for i in range(THRESHOLD - 1):
        breaker.record_failure()
        if _state(breaker) != "closed" or not breaker.can_execute():
            raise Fail(
                f"after {i + 1} failure(s) with failure_threshold={THRESHOLD} the breaker is "
                f"{_state(breaker)!r}: it opens only at the threshold (count >= threshold)"
            )
    breaker.record_failure()
    if _state(breaker) != "open":
        raise Fail(
            f"after {THRESHOLD} failures (failure_threshold={THRESHOLD}) the state is "
            f"{_state(breaker)!r}, expected 'open'"
        )
    if breaker.can_execute():
        raise Fail("an open breaker let a call through: while open, can_execute() is False")


def _success_resets(CircuitBreaker: Any) -> None:
    breaker = _breaker(CircuitBreaker, VirtualClock())
    for _ in range(THRESHOLD - 1):
        breaker.record_failure()
    breaker.record_success()
    for _ in range(THRESHOLD - 1):
        breaker.record_failure()
    if _state(breaker) != "closed":
        raise Fail(
            f"{THRESHOLD - 1} failures, a success, then {THRESHOLD - 1} failures opened the "
            "breaker: only consecutive failures count — reset the count on success"
        )


def _stays_open(CircuitBreaker: Any) -> None:
    breaker, clock = _opened(CircuitBreaker)
    clock.advance(RESET - 0.5)
    if breaker.can_execute():
        raise Fail(
            f"{RESET - 0.5:g} s after opening (reset_timeout={RESET:g}) the breaker let a call "
            "through: stay open until reset_timeout has passed"
        )
    if _state(breaker) != "open":
        raise Fail(f"{RESET - 0.5:g} s after opening the state is {_state(breaker)!r}, not 'open'")


def _half_opens(CircuitBreaker: Any) -> None:
    breaker, clock = _opened(CircuitBreaker)
    clock.advance(RESET + 0.001)
    allowed = breaker.can_execute()
    state = _state(breaker)
    if not allowed:
        raise Fail(
            f"after clock.advance({RESET:g}) (reset_timeout={RESET:g}) your breaker still refuses "
            "calls: compare self.clock.now() - opened_at with reset_timeout (not time.time() — "
            "the check runs in virtual time) and move to 'half_open'"
        )
    if state == "closed":
        raise Fail(
            "after reset_timeout your breaker went straight back to 'closed': go to 'half_open' "
            "and let one trial call decide"
        )
    if state != "half_open":
        raise Fail(f"after reset_timeout the state is {breaker.state!r}, expected 'half_open'")


def _one_trial(CircuitBreaker: Any) -> None:
    breaker, _clock = _half_open(CircuitBreaker)
    extra = sum(1 for _ in range(5) if breaker.can_execute())
    if extra:
        raise Fail(
            f"in half-open your breaker let {extra + 1} of 6 callers through before the trial "
            "finished: let exactly one trial through (remember that it was handed out) and "
            "refuse the rest until it succeeds or fails"
        )


def _trial_success_closes(CircuitBreaker: Any) -> None:
    breaker, _clock = _half_open(CircuitBreaker)
    breaker.record_success()
    if _state(breaker) != "closed":
        raise Fail(f"a successful trial left the breaker {_state(breaker)!r}: close it")
    if not all(breaker.can_execute() for _ in range(5)):
        raise Fail("after a successful trial the closed breaker still refuses calls")
    for _ in range(THRESHOLD - 1):
        breaker.record_failure()
    if _state(breaker) != "closed":
        raise Fail(
            f"after closing, {THRESHOLD - 1} failures re-opened the breaker: reset the failure "
            "count when the trial succeeds"
        )


def _trial_failure_reopens(CircuitBreaker: Any) -> None:
    breaker, clock = _half_open(CircuitBreaker)
    breaker.record_failure()
    if _state(breaker) != "open":
        raise Fail(
            f"a failed trial left the breaker {_state(breaker)!r}: a failure in half-open "
            "re-opens it at once (whatever the failure count)"
        )
    if breaker.can_execute():
        raise Fail(
            "right after a failed trial the breaker is 'open' yet let a call through: its "
            "cooldown had already run out — a failed trial restarts the cooldown "
            "(opened_at = clock.now() on every opening, not only the first)"
        )
    clock.advance(RESET - 0.5)
    if breaker.can_execute():
        raise Fail(
            "after a failed trial the breaker half-opened again too soon: restart the cooldown "
            "(opened_at = clock.now()) when the trial fails"
        )
    clock.advance(1.0)
    if not breaker.can_execute():
        raise Fail("reset_timeout after a failed trial the breaker did not half-open again")


def _health_of(breaker: Any, when: str) -> dict[str, Any]:
    health = getattr(breaker, "health", None)
    if not callable(health):
        raise Fail("the breaker has no health() method: add one that returns a dict "
                   '{"state": ..., "failures": ..., "retry_in": ...} for dashboards')
    got = health()
    if not isinstance(got, dict):
        raise Fail(f"health() returned {type(got).__name__} {when}: return a dict "
                   '{"state": ..., "failures": ..., "retry_in": ...}')
    missing = [k for k in ("state", "failures", "retry_in") if k not in got]
    if missing:
        raise Fail(f"health() {when} has no {', '.join(map(repr, missing))} "
                   f"(it returned {sorted(got)!r}): a dashboard needs all three")
    return got


def _health(CircuitBreaker: Any) -> None:
    clock = VirtualClock()
    breaker = _breaker(CircuitBreaker, clock)
    expectations = []  # (when, state, failures, retry_in)
    got = _health_of(breaker, "on a new breaker")
    expectations.append(("on a new breaker", got, "closed", 0, 0.0))
    breaker.can_execute()
    breaker.record_failure()
    got = _health_of(breaker, "after one failure")
    expectations.append(("after one failure", got, "closed", 1, 0.0))
    for _ in range(THRESHOLD - 1):
        breaker.can_execute()
        breaker.record_failure()
    clock.advance(10.0)
    got = _health_of(breaker, "10 s after opening")
    expectations.append(("10 s after opening", got, "open", THRESHOLD, RESET - 10.0))
    for when, health, state, failures, retry_in in expectations:
        try:
            seen = norm_state(health["state"])
        except (TypeError, ValueError, AttributeError):
            seen = repr(health["state"])
        if seen != state:
            raise Fail(f"health()['state'] {when} is {health['state']!r}, expected {state!r}: "
                       "report the breaker's own state")
        try:
            count, wait = int(health["failures"]), float(health["retry_in"])
        except (TypeError, ValueError):
            raise Fail(f"health() {when} gave failures={health['failures']!r}, "
                       f"retry_in={health['retry_in']!r}: expected numbers") from None
        if count != failures:
            raise Fail(f"health()['failures'] {when} is {count}, expected {failures}: the "
                       "failures in a row the breaker has counted")
        if abs(wait - retry_in) > 1e-6:
            raise Fail(f"health()['retry_in'] {when} is {wait:g} s, expected {retry_in:g}: the "
                       "seconds until an open breaker lets a trial through (0 unless open), "
                       "from self.clock")


def _half_open_race(CircuitBreaker: Any) -> None:
    """Two threads ask an open breaker whose cooldown is over: exactly one is the trial."""

    def setup() -> tuple[list[Call], Any]:
        clock = VirtualClock()
        breaker = _breaker(CircuitBreaker, clock)
        for _ in range(THRESHOLD):
            breaker.can_execute()
            breaker.record_failure()
        clock.advance(RESET + 0.001)

        def judge(run: Any) -> str | None:
            race_errors(run)
            allowed = sum(1 for r in run.results if r is True)
            if allowed > 1:
                return (
                    f"{allowed} threads calling can_execute() at once after the cooldown were all "
                    "let through as the half-open trial: each saw 'no trial yet' before any "
                    "marked it taken. Check and mark the trial under one threading.Lock"
                )
            if allowed == 0:
                return ("two threads calling can_execute() at once after the cooldown were both "
                        "refused: one of them should be the trial")
            return None

        return [Call(breaker, "can_execute"), Call(breaker, "can_execute")], judge

    found = explore(setup, student=(CircuitBreaker,))
    if found is not None:
        raise found.fail("half-open admits exactly one trial")


def check_task5(CircuitBreaker: Any, *, budget: float = DEFAULT_BUDGET) -> CheckResult:
    """Check a student's ``CircuitBreaker(failure_threshold, reset_timeout, clock)``."""
    criteria = [
        Criterion("starts closed and lets calls through", lambda: _starts_closed(CircuitBreaker)),
        Criterion("opens after failure_threshold failures", lambda: _opens(CircuitBreaker)),
        Criterion("a success resets the failure count", lambda: _success_resets(CircuitBreaker)),
        Criterion("stays open until reset_timeout has passed", lambda: _stays_open(CircuitBreaker)),
        Criterion(
            "half-opens after reset_timeout (on the given clock)",
            lambda: _half_opens(CircuitBreaker),
        ),
        Criterion("half-open admits exactly one trial", lambda: _one_trial(CircuitBreaker)),
        Criterion("a successful trial closes it", lambda: _trial_success_closes(CircuitBreaker)),
        Criterion(
            "a failed trial re-opens it with a fresh cooldown",
            lambda: _trial_failure_reopens(CircuitBreaker),
        ),
        Criterion(
            "thread-safe: concurrent callers after the cooldown get exactly one trial",
            lambda: _half_open_race(CircuitBreaker),
        ),
        Criterion("health() reports state, failures and retry_in", lambda: _health(CircuitBreaker)),
    ]
    return run_check(TITLE, criteria, budget=budget, timeout_hint="a breaker never needs to loop")
