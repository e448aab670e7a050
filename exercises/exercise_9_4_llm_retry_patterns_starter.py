"""Exercise 9.4 · LLM API retry patterns: the starter (the script path).

Replace every ``raise NotImplementedError(...)`` with your code, then run this file::

    .venv/bin/python exercises/exercise_9_4_llm_retry_patterns_starter.py            # all tasks
    .venv/bin/python exercises/exercise_9_4_llm_retry_patterns_starter.py --task 2   # task 2 only

Each task is checked by the same checks as the notebooks (``llm_patterns.course.grading``): one line
per criterion, ✓ or ✗ with a hint, then a score line ("2/5 required tasks pass; bonus 0/1"). The
exit status is 0 when every required task passes (task 7 is a bonus). The story, the acceptance criteria and the seed hints (with the bugs to
find in them) are in ``exercises/exercise_9_4.md``.

Rules of the game (the checks enforce them):
- Time comes only from the ``clock`` you are given: ``clock.now()`` and ``clock.sleep(s)``.
  The checks pass a VirtualClock, where ``clock.sleep(60)`` returns at once and moves time on
  by 60 s. ``time.time()`` and ``time.sleep()`` do not move with it (a check that catches
  ``time.sleep`` says so).
- Randomness comes only from the ``rng`` you are given (``rng.uniform(a, b)``).
- Shared state that several threads update goes under a ``threading.Lock``.
"""

from __future__ import annotations

import logging
import random
import re  # noqa: F401 - handy for chunk_text
import threading  # noqa: F401 - you will need a Lock
from decimal import Decimal  # noqa: F401 - exact money, if you like

from llm_patterns.clock import SystemClock  # noqa: F401 - the default clock: clock or SystemClock()
from llm_patterns.errors import (  # noqa: F401 - the error taxonomy your code deals with
    AllProvidersFailed,
    AuthenticationError,
    BudgetExceeded,
    ConnectionFailed,
    ContextWindowExceeded,
    InvalidRequestError,
    MalformedResponse,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
)
from llm_patterns.course.grading.script import run_checks
from llm_patterns.tokens import estimate_tokens  # noqa: F401 - about 4 characters a token

logger = logging.getLogger("exercise_9_4")


# =============================================================================================
# Task 1 · Rate limiting: a token bucket, and a limiter with one bucket for RPM and one for TPM
# =============================================================================================


class TokenBucket:
    """Holds up to ``capacity`` tokens and gains ``refill_rate`` tokens per second.

    - Starts full: a burst of ``capacity`` requests passes at once.
    - Refills from ``clock.now()``: ``tokens = min(capacity, tokens + elapsed * refill_rate)``.
    - ``consume(n)`` takes n tokens and returns True, or takes nothing and returns False.
    - ``wait_time(n)`` is the seconds until n tokens are there (0.0 if they are there now).
    - ``n`` above ``capacity`` raises ValueError naming both numbers (it could never succeed).
    - Thread-safe: two threads must never both get the last token.
    """

    def __init__(self, capacity: float, refill_rate: float, clock=None) -> None:
        # Keep capacity, refill_rate, the clock (clock or SystemClock()), the current `tokens`,
        # the time of the last refill, and a threading.Lock.
        raise NotImplementedError("TokenBucket.__init__: store the settings, start full")

    def consume(self, n: float = 1) -> bool:
        raise NotImplementedError(
            "TokenBucket.consume: refill, then take n tokens if they are there"
        )

    def wait_time(self, n: float = 1) -> float:
        raise NotImplementedError("TokenBucket.wait_time: refill, then (n - tokens) / refill_rate")


class RateLimiter:
    """``rpm`` requests and ``tpm`` tokens per minute: two TokenBuckets, each refilling
    limit/60 per second and holding one minute's worth.

    ``acquire(tokens)`` waits with ``clock.sleep`` until BOTH buckets can pay (one request and
    ``tokens`` tokens), then takes from both at once, and returns the seconds it waited. It never
    takes from one bucket while it waits for the other. When the wait would pass ``max_wait``
    it raises ``RateLimitTimeout`` at once, taking nothing (backpressure); each wait is logged
    with its length.
    """

    def __init__(self, rpm: float, tpm: float, clock=None, max_wait=None) -> None:
        raise NotImplementedError("RateLimiter.__init__: one bucket for requests, one for tokens")

    def acquire(self, tokens: int = 0) -> float:
        raise NotImplementedError("RateLimiter.acquire: wait until both buckets can pay, then pay")


# =============================================================================================
# Task 2 · Backoff: exponential delays with jitter, and which errors deserve a retry
# =============================================================================================


def calculate_backoff(
    attempt: int, base_delay: float = 1.0, max_delay: float = 60.0, rng=random
) -> float:
    """Seconds to wait before retry ``attempt`` (0, 1, 2 …).

    About base_delay * 2 ** attempt (1, 2, 4, 8 … with base_delay=1), randomized with ``rng``
    (e.g. full jitter: ``rng.uniform(0, ceiling)``), and NEVER above ``max_delay``, jitter
    included.
    """
    raise NotImplementedError("calculate_backoff: exponential, jittered with rng, capped")


def is_retryable(error: BaseException) -> bool:
    """True when trying again later may work: RateLimitError (429), ServerError (5xx, 529),
    ProviderTimeout, ConnectionFailed. False for QuotaExceededError (429 insufficient_quota:
    careful, it is a subclass of RateLimitError), InvalidRequestError, AuthenticationError,
    ContextWindowExceeded and BudgetExceeded."""
    raise NotImplementedError("is_retryable: transient errors True, permanent ones False")


# =============================================================================================
# Task 3 · Cost tracking: per task and per DAG, with budget alerts
# =============================================================================================


class CostTracker:
    """Adds up what every LLM call cost.

    ``pricing`` is ``{model: {"input": usd_per_1M_tokens, "output": usd_per_1M_tokens}}``.
    ``record(model, usage, dag_id=None, task_id=None)`` takes an OpenAI usage dict
    (``prompt_tokens``, ``completion_tokens``), adds the cost everywhere and returns it (float
    or Decimal). An unknown model raises KeyError naming it. Each of ``alert_thresholds``
    (fractions of ``budget``) fires once, when the total reaches threshold * budget: append it
    to ``alerts`` and log a warning. Thread-safe.
    """

    def __init__(self, pricing: dict, budget: float, alert_thresholds=(0.5, 0.8, 1.0)) -> None:
        raise NotImplementedError("CostTracker.__init__: prices, budget, totals, a lock")

    def record(self, model: str, usage: dict, dag_id=None, task_id=None):
        raise NotImplementedError("CostTracker.record: price the usage, add it up, fire alerts")

    @property
    def total(self):
        """Every record's cost, added up (USD)."""
        raise NotImplementedError("CostTracker.total")

    @property
    def alerts(self) -> list:
        """The thresholds that fired, in order, e.g. [0.5, 0.8]."""
        raise NotImplementedError("CostTracker.alerts")

    def by_task(self) -> dict:
        """``{(dag_id, task_id): usd}``."""
        raise NotImplementedError("CostTracker.by_task")

    def by_dag(self) -> dict:
        """``{dag_id: usd}``."""
        raise NotImplementedError("CostTracker.by_dag")


# =============================================================================================
# Task 4 · Fallback: ask the next provider when one fails, but never past the budget
# =============================================================================================


def call_with_fallback(prompt: str, providers: list[dict]) -> dict:
    """Try ``providers`` (a list of ``{"name": str, "call_fn": callable}``) in order.

    Return ``{"provider": name, "response": call_fn(prompt), "fallback_used": bool}`` for the
    first that answers. Any exception moves on to the next provider, except BudgetExceeded,
    which is re-raised at once. Log (with ``logger``, not print) who failed and who answered.
    When all fail, raise ``AllProvidersFailed(errors)`` with every ``(name, error)`` in order.
    """
    raise NotImplementedError("call_with_fallback: try each provider in order")


# =============================================================================================
# Task 5 · Circuit breaker: stop calling a provider that is down, probe it once in a while
# =============================================================================================


class CircuitBreaker:
    """closed → open after ``failure_threshold`` consecutive failures → half_open once
    ``reset_timeout`` seconds have passed on ``clock`` → closed after a successful trial, or
    open again (with a fresh cooldown) after a failed one.

    ``state`` is "closed", "open" or "half_open". ``can_execute()`` says whether a call may go
    out; in half-open it is True for exactly ONE caller (the trial) until that trial reports
    ``record_success()`` or ``record_failure()``.
    """

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 60.0, clock=None) -> None:
        raise NotImplementedError("CircuitBreaker.__init__: state, failure count, a lock")

    @property
    def state(self) -> str:
        raise NotImplementedError("CircuitBreaker.state: open becomes half_open after the cooldown")

    def can_execute(self) -> bool:
        raise NotImplementedError("CircuitBreaker.can_execute: closed yes, open no, half-open once")

    def record_success(self) -> None:
        raise NotImplementedError("CircuitBreaker.record_success: close, reset the count")

    def record_failure(self) -> None:
        raise NotImplementedError("CircuitBreaker.record_failure: count; open at the threshold")

    def health(self) -> dict:
        raise NotImplementedError(
            'CircuitBreaker.health: {"state": ..., "failures": ..., "retry_in": ...}')


# =============================================================================================
# Task 7 (optional) · Token limits: split long text into chunks that fit the context window
# =============================================================================================


def chunk_text(text: str, max_tokens: int, overlap: int = 0):
    """Return (or yield) chunks of ``text``, each within ``max_tokens`` by ``estimate_tokens``.

    Split at paragraph, then sentence, then word boundaries; cut a word only when it alone is
    longer than a chunk. With ``overlap=0``, ``"".join(chunks) == text``. Empty text gives no
    chunks; ``max_tokens <= 0`` or ``overlap >= max_tokens`` raise ValueError.
    """
    raise NotImplementedError("chunk_text: split at paragraphs, sentences, words")


if __name__ == "__main__":
    raise SystemExit(run_checks(globals()))
