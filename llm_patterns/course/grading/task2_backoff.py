"""Task 2 check: exponential backoff with jitter, and which errors are worth retrying."""

from __future__ import annotations

import random
from typing import Any

from llm_patterns import errors as E

from ._framework import DEFAULT_BUDGET, CheckResult, Criterion, Fail, run_check
from ._student import fmt

__all__ = ["check_task2"]

TITLE = "Task 2 · Backoff and retries"
SEEDS = range(40)


def _delay(calculate_backoff: Any, attempt: int, seed: int, **kw: Any) -> float:
    value = calculate_backoff(attempt, rng=random.Random(seed), **kw)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise Fail(f"calculate_backoff({attempt}) returned {value!r}: "
                   "return the delay in seconds") from None


def _samples(calculate_backoff: Any, attempt: int, **kw: Any) -> list[float]:
    return [_delay(calculate_backoff, attempt, seed, **kw) for seed in SEEDS]


def _first_attempt(calculate_backoff: Any) -> None:
    for base in (1.0, 0.5):
        delays = _samples(calculate_backoff, 0, base_delay=base, max_delay=60.0)
        lo, hi = min(delays), max(delays)
        if lo < 0:
            raise Fail(f"calculate_backoff(0) returned {fmt(lo)}: a delay is never negative")
        if hi > 2 * base:
            why = ("is the exponent one too high?" if base == 1.0 else
                   "the jitter does not shrink with base_delay: make it a fraction of the delay")
            raise Fail(
                f"with base_delay={fmt(base)}, attempt 0 gave delays up to {fmt(hi)}: attempt 0 "
                f"waits about base_delay (base_delay * 2**0), at most twice that with jitter — "
                f"{why}"
            )
        if hi < 0.5 * base:
            raise Fail(
                f"with base_delay={fmt(base)}, attempt 0 gave delays up to {fmt(hi)}: attempt 0 "
                "waits about base_delay (base_delay * 2**0), jittered below it"
            )


def _grows(calculate_backoff: Any) -> None:
    ceilings = []
    for attempt in range(9):
        delays = _samples(calculate_backoff, attempt, base_delay=1.0, max_delay=1e9)
        ceilings.append(max(delays))
    for attempt, hi in enumerate(ceilings):
        expected = 2.0**attempt
        if hi < 0.5 * expected or hi > 3 * expected:
            shown = ", ".join(fmt(c) for c in ceilings[:6])
            raise Fail(
                f"the largest delays for attempts 0..5 were {shown}: expected about 1, 2, 4, 8, "
                "16, 32 — the delay doubles each attempt: base_delay * 2 ** attempt"
            )


def _capped(calculate_backoff: Any) -> None:
    for attempt in range(31):
        delays = _samples(calculate_backoff, attempt, base_delay=1.0, max_delay=10.0)
        worst = max(delays)
        if worst > 10.0 + 1e-9:
            raise Fail(
                f"calculate_backoff({attempt}, max_delay=10) returned {fmt(worst)}, above "
                "max_delay: you add the jitter after capping. Cap last: min(max_delay, ...) "
                "around the jittered value, or jitter within the capped value"
            )
        if attempt >= 8 and worst < 5.0:
            raise Fail(
                f"calculate_backoff({attempt}, max_delay=10) never went above {fmt(worst)}: "
                "once the exponential passes max_delay the delay should reach up to max_delay"
            )


def _jitter(calculate_backoff: Any) -> None:
    delays = _samples(calculate_backoff, 3, base_delay=1.0, max_delay=60.0)
    if len({round(d, 9) for d in delays}) == 1:
        raise Fail(
            f"every client waits exactly {fmt(delays[0])} s before attempt 3: without jitter "
            "they all retry at the same instant (a thundering herd). Randomize the delay with "
            "rng, e.g. rng.uniform(0, delay)"
        )
    again = _samples(calculate_backoff, 3, base_delay=1.0, max_delay=60.0)
    if again != delays:
        raise Fail(
            "the same seed gave different delays: draw the randomness from the rng argument "
            "(rng.uniform / rng.random), not the random module, so runs are reproducible"
        )


_RETRY = [
    ("RateLimitError (429)", E.RateLimitError("rate limited", status_code=429, retry_after=1.0)),
    ("ServerError (500)", E.ServerError("internal error", status_code=500)),
    ("ServerError (503)", E.ServerError("unavailable", status_code=503)),
    ("ServerError (529 overloaded)", E.ServerError("overloaded", status_code=529)),
    ("ProviderTimeout", E.ProviderTimeout("timed out")),
    ("ConnectionFailed", E.ConnectionFailed("connection reset")),
]
_NO_RETRY = [
    (
        "QuotaExceededError (429 insufficient_quota)",
        E.QuotaExceededError("insufficient_quota", status_code=429),
    ),
    ("InvalidRequestError (400)", E.InvalidRequestError("bad request", status_code=400)),
    ("AuthenticationError (401)", E.AuthenticationError("invalid api key", status_code=401)),
    (
        "ContextWindowExceeded (400)",
        E.ContextWindowExceeded("context_length_exceeded", status_code=400),
    ),
    ("BudgetExceeded", E.BudgetExceeded("budget exhausted")),
]


def _retries_transient(is_retryable: Any) -> None:
    wrong = [name for name, err in _RETRY if not is_retryable(err)]
    if wrong:
        raise Fail(
            f"is_retryable said no to {', '.join(wrong)}: rate limits (429), server errors "
            "(5xx, 529 overloaded), timeouts and connection failures are transient — retry them"
        )


def _refuses_permanent(is_retryable: Any) -> None:
    wrong = [name for name, err in _NO_RETRY if is_retryable(err)]
    if not wrong:
        return
    hint = (
        f"is_retryable said yes to {', '.join(wrong)}: these fail the same way every time, so "
        "a retry only costs time and money"
    )
    if wrong[0].startswith("QuotaExceededError"):
        hint += (
            ". QuotaExceededError is a subclass of RateLimitError (both are 429): test for it "
            "first, or check the error's retryable flag"
        )
    raise Fail(hint)


def check_task2(
    calculate_backoff: Any, is_retryable: Any, *, budget: float = DEFAULT_BUDGET
) -> CheckResult:
    """Check ``calculate_backoff(attempt, base_delay, max_delay, rng)`` and ``is_retryable``."""
    criteria = [
        Criterion("attempt 0 waits about base_delay", lambda: _first_attempt(calculate_backoff)),
        Criterion(
            "the delay doubles each attempt (exponential)", lambda: _grows(calculate_backoff)
        ),
        Criterion("never above max_delay, jitter included", lambda: _capped(calculate_backoff)),
        Criterion(
            "jittered with the given rng (no thundering herd)", lambda: _jitter(calculate_backoff)
        ),
        Criterion(
            "is_retryable retries 429, 5xx/529, timeouts and connection errors",
            lambda: _retries_transient(is_retryable),
        ),
        Criterion(
            "is_retryable refuses insufficient_quota, 400, 401, context length, budget",
            lambda: _refuses_permanent(is_retryable),
        ),
    ]
    return run_check(
        TITLE,
        criteria,
        budget=budget,
        timeout_hint="calculate_backoff computes a number, it never waits",
    )
