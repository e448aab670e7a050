"""Exercise 9.4 · LLM API retry patterns: the solution.

One correct, commented implementation of every task in
``exercises/exercise_9_4_llm_retry_patterns_starter.py``. Run it to see every check pass::

    .venv/bin/python solutions/solution_9_4_llm_retry_patterns.py            # all tasks
    .venv/bin/python solutions/solution_9_4_llm_retry_patterns.py --task 2   # one task

The same ideas, hardened for production (FIFO waiters, Retry-After, SQLite ledgers, async), are
in the ``llm_patterns`` package: ``RateLimiter``, ``RetryPolicy``, ``CostTracker``,
``FallbackChain``, ``CircuitBreaker`` and ``chunk_text``.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
from decimal import Decimal

from llm_patterns.clock import SystemClock
from llm_patterns.course.grading.script import run_checks
from llm_patterns.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    ConnectionFailed,
    MalformedResponse,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
)
from llm_patterns.tokens import CHARS_PER_TOKEN, estimate_tokens

logger = logging.getLogger("exercise_9_4")

# Float rounding slack: after sleeping exactly wait_time(n), a bucket may hold 0.9999999999
# tokens instead of 1. Without a little tolerance the caller would sleep 1e-17 s, which a clock
# reading of 1e6 s cannot even represent: an endless loop.
EPSILON = 1e-9


# =============================================================================================
# Task 1 · Rate limiting: a token bucket, and a limiter with one bucket for RPM and one for TPM
# =============================================================================================


class TokenBucket:
    """Holds up to ``capacity`` tokens and gains ``refill_rate`` tokens per second.

    A full bucket lets a burst of ``capacity`` requests through; after that, requests pass at
    the refill rate. Thread-safe; time comes only from ``clock`` (never ``time.time()``), so a
    VirtualClock can replay an hour of traffic in a millisecond.
    """

    def __init__(self, capacity: float, refill_rate: float, clock=None) -> None:
        if not capacity > 0:
            raise ValueError(f"capacity must be > 0, got {capacity!r}")
        if not refill_rate > 0:
            raise ValueError(f"refill_rate must be > 0 tokens per second, got {refill_rate!r}")
        self.capacity = float(capacity)
        self.refill_rate = float(refill_rate)
        self.clock = clock if clock is not None else SystemClock()
        self.tokens = float(capacity)  # a new bucket starts full
        self.last_refill = self.clock.now()
        # One lock around refill + check + take: without it two threads can both see
        # "1 token left" and both take it (a check-then-act race).
        self.lock = threading.Lock()

    def _check(self, n: float) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0 tokens, got {n!r}")
        if n > self.capacity:
            # Waiting would never help: the bucket can never hold n tokens.
            raise ValueError(
                f"n={n!r} tokens can never fit in a bucket of capacity {self.capacity:g}"
            )

    def _refill(self) -> None:
        """Bring ``tokens`` up to date (call with the lock held)."""
        now = self.clock.now()
        elapsed = max(0.0, now - self.last_refill)
        # Cap at capacity: a bucket that idled for an hour is full, not "an hour of tokens".
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_rate)
        self.last_refill = now  # move the mark every time, or partial refills are counted twice

    def consume(self, n: float = 1) -> bool:
        """Take ``n`` tokens if they are there (True), else take nothing (False)."""
        self._check(n)
        with self.lock:
            self._refill()
            if self.tokens + EPSILON >= n:
                self.tokens = max(0.0, self.tokens - n)
                return True
            return False

    def wait_time(self, n: float = 1) -> float:
        """Seconds until ``n`` tokens are there (0.0 if they are there now)."""
        self._check(n)
        with self.lock:
            self._refill()
            missing = n - self.tokens
            return 0.0 if missing <= EPSILON else missing / self.refill_rate


class RateLimiter:
    """Client-side limits for one provider: ``rpm`` requests and ``tpm`` tokens per minute.

    Each limit is a bucket that refills limit/60 per second and holds a minute's worth. A request
    pays one request token and its LLM tokens together, from both buckets or from neither.
    """

    def __init__(self, rpm: float, tpm: float, clock=None, max_wait: float | None = None) -> None:
        self.clock = clock if clock is not None else SystemClock()
        self.max_wait = max_wait  # backpressure: refuse a wait longer than this (None: no limit)
        self.rpm = rpm
        self.tpm = tpm
        self.requests = TokenBucket(rpm, rpm / 60.0, self.clock)
        self.token_bucket = TokenBucket(tpm, tpm / 60.0, self.clock)
        # Makes "are both buckets able to pay? then pay both" one atomic step across threads.
        self.lock = threading.Lock()

    def acquire(self, tokens: int = 0) -> float:
        """Wait (with ``clock.sleep``) until a request of ``tokens`` LLM tokens may be sent, pay
        for it, and return the seconds waited; ``RateLimitTimeout`` at once, taking nothing, when
        the wait would pass ``max_wait``."""
        if tokens > self.tpm:
            raise ValueError(
                f"a request of {tokens} tokens can never pass a limit of tpm={self.tpm}: "
                "split the input (see chunk_text) or raise the limit"
            )
        waited = 0.0
        while True:
            with self.lock:
                # Check both buckets FIRST. Taking the request token and then waiting for the
                # LLM tokens (or the other way round) spends one limit while waiting on the
                # other: the bucket we paid keeps refilling past what it may hold.
                wait = max(self.requests.wait_time(1), self.token_bucket.wait_time(tokens))
                if wait == 0.0:
                    self.requests.consume(1)
                    self.token_bucket.consume(tokens)
                    if waited:
                        logger.info("waited %.2f s for 1 request and %d tokens", waited, tokens)
                    return waited
            if self.max_wait is not None and waited + wait > self.max_wait:
                raise RateLimitTimeout(f"acquire would wait {waited + wait:.1f} s, more than "
                                       f"max_wait={self.max_wait} s")
            logger.info("rate limited: waiting %.2f s (1 request, %d tokens)", wait, tokens)
            # Sleep outside the lock so other threads can check (and pay) in the meantime;
            # then check again: another thread may have taken the tokens we waited for.
            self.clock.sleep(wait)
            waited += wait


# =============================================================================================
# Task 2 · Backoff: exponential delays with full jitter, and which errors deserve a retry
# =============================================================================================


def calculate_backoff(
    attempt: int, base_delay: float = 1.0, max_delay: float = 60.0, rng=random
) -> float:
    """Seconds to wait before retry number ``attempt`` (0, 1, 2 …): full jitter, capped.

    The ceiling grows 1, 2, 4, 8 … × base_delay up to max_delay; the delay is drawn uniformly
    from [0, ceiling] (AWS's "full jitter"), so clients that failed together retry apart.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt!r}")
    if base_delay < 0 or max_delay < 0:
        raise ValueError(
            f"delays must be >= 0, got base_delay={base_delay!r}, max_delay={max_delay!r}"
        )
    try:
        exponential = base_delay * 2.0**attempt
    except OverflowError:  # attempt 2000: 2.0**2000 does not fit in a float, and is over any cap
        exponential = math.inf
    ceiling = min(max_delay, exponential)
    delay = rng.uniform(0.0, ceiling)  # jitter within the capped value ...
    return min(delay, max_delay)  # ... and the cap has the last word: never above max_delay


def is_retryable(error: BaseException) -> bool:
    """True for failures that a later attempt may not repeat: 429 rate limits, 5xx and 529
    overloaded, timeouts, connection failures, garbled 2xx answers."""
    # First: QuotaExceededError IS a RateLimitError (both are 429), but the account is out of
    # credit. Retrying it only delays the alert someone has to act on.
    if isinstance(error, QuotaExceededError):
        return False
    if isinstance(error, (RateLimitError, ServerError, ProviderTimeout, ConnectionFailed)):
        return True
    if isinstance(error, MalformedResponse):
        return True
    # Everything else (bad request, auth, context length, budget, content filter) fails the same
    # way next time. An error from another library may still carry an HTTP status.
    status = getattr(error, "status_code", None)
    return isinstance(status, int) and (status in (408, 409, 429) or status >= 500)


# =============================================================================================
# Task 3 · Cost tracking: exact money, per task and per DAG, with budget alerts
# =============================================================================================

MILLION = Decimal(1_000_000)


def _money(value) -> Decimal:
    """Decimal from an int, float or str; via str so 0.15 stays 0.15, not 0.1499999…"""
    return value if isinstance(value, Decimal) else Decimal(str(value))


class CostTracker:
    """Adds up what every LLM call cost, by (dag_id, task_id), by DAG and by model.

    ``pricing`` maps a model to ``{"input": usd_per_1M, "output": usd_per_1M}``. Each of
    ``alert_thresholds`` (fractions of ``budget``) logs a warning once, when spending reaches it.
    """

    def __init__(self, pricing, budget, alert_thresholds=(0.5, 0.8, 1.0)) -> None:
        if not budget > 0:
            raise ValueError(f"budget must be > 0 USD, got {budget!r}")
        self.pricing = {
            model: {"input": _money(p["input"]), "output": _money(p["output"])}
            for model, p in pricing.items()
        }
        self.budget = _money(budget)
        self.alert_thresholds = sorted(alert_thresholds)
        self.lock = threading.Lock()
        self._total = Decimal(0)
        self._by_task: dict[tuple, Decimal] = {}
        self._by_dag: dict[object, Decimal] = {}
        self._by_model: dict[str, Decimal] = {}
        self._alerts: list = []  # thresholds that fired, in order; each fires once

    def record(self, model: str, usage: dict, dag_id=None, task_id=None) -> Decimal:
        """Record one call's OpenAI ``usage`` dict; return its cost in USD."""
        try:
            price = self.pricing[model]
        except KeyError:
            # Never guess: pricing an unknown model as a cheap one hides real spend.
            raise KeyError(f"no price for model {model!r}; add it to pricing") from None
        prompt = usage.get("prompt_tokens", 0)
        completion = usage.get("completion_tokens", 0)
        if prompt < 0 or completion < 0:
            raise ValueError(f"token counts must be >= 0, got {usage!r}")
        # Prices are per 1M tokens (per 1K was the old convention: a 1000x error).
        cost = (prompt * price["input"] + completion * price["output"]) / MILLION
        # `self.total += cost` reads, adds and writes back: two threads can both read the old
        # total and one update is lost. All updates happen under one lock.
        with self.lock:
            self._total += cost
            key = (dag_id, task_id)
            self._by_task[key] = self._by_task.get(key, Decimal(0)) + cost
            self._by_dag[dag_id] = self._by_dag.get(dag_id, Decimal(0)) + cost
            self._by_model[model] = self._by_model.get(model, Decimal(0)) + cost
            self._check_alerts()
        return cost

    def _check_alerts(self) -> None:
        # Every threshold, not just the next one: one big call can cross two at once.
        for threshold in self.alert_thresholds:
            if threshold not in self._alerts and self._total >= _money(threshold) * self.budget:
                self._alerts.append(threshold)
                logger.warning(
                    "spent %.4f USD of a %.2f USD budget: passed %d%%",
                    self._total,
                    self.budget,
                    round(threshold * 100),
                )

    @property
    def total(self) -> Decimal:
        with self.lock:
            return self._total

    @property
    def alerts(self) -> list:
        with self.lock:
            return list(self._alerts)

    def by_task(self) -> dict[tuple, Decimal]:
        with self.lock:
            return dict(self._by_task)

    def by_dag(self) -> dict[object, Decimal]:
        with self.lock:
            return dict(self._by_dag)

    def by_model(self) -> dict[str, Decimal]:
        with self.lock:
            return dict(self._by_model)


# =============================================================================================
# Task 4 · Fallback: ask the next provider when one fails, but never past the budget
# =============================================================================================


def call_with_fallback(prompt: str, providers: list[dict]) -> dict:
    """Try ``providers`` (``{"name", "call_fn"}``) in order; return the first answer as
    ``{"provider", "response", "fallback_used"}``, or raise ``AllProvidersFailed``."""
    errors = []
    for provider in providers:
        name = provider["name"]
        try:
            response = provider["call_fn"](prompt)
        except BudgetExceeded:
            # Not a provider failure: the next provider would spend money the budget forbids.
            logger.error("%s: budget exceeded, not falling back", name)
            raise
        except Exception as exc:
            logger.warning(
                "%s failed (%s: %s), trying the next provider", name, type(exc).__name__, exc
            )
            errors.append((name, exc))
            continue
        if errors:
            logger.warning("%s answered after %d provider(s) failed", name, len(errors))
        else:
            logger.info("%s answered", name)
        return {"provider": name, "response": response, "fallback_used": bool(errors)}
    # Keep every (name, error) pair: "all failed" alone cannot tell an outage from a bad key.
    raise AllProvidersFailed(errors)


# =============================================================================================
# Task 5 · Circuit breaker: stop calling a provider that is down, probe it once in a while
# =============================================================================================

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """closed (calls pass) → open after ``failure_threshold`` consecutive failures (calls are
    refused) → half_open after ``reset_timeout`` s (ONE trial call) → closed or open again.

    Callers ask ``can_execute()`` before a call and report ``record_success()`` or
    ``record_failure()`` after it.
    """

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 60.0, clock=None) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {failure_threshold!r}")
        if reset_timeout < 0:
            raise ValueError(f"reset_timeout must be >= 0 seconds, got {reset_timeout!r}")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock if clock is not None else SystemClock()
        self.lock = threading.Lock()
        self._state = CLOSED
        self.failures = 0  # consecutive failures while closed
        self.opened_at = 0.0
        self.trial_in_flight = False  # half-open: has the one trial been handed out?

    def _update(self) -> None:
        """open → half_open once the cooldown has passed (call with the lock held)."""
        if self._state == OPEN and self.clock.now() - self.opened_at >= self.reset_timeout:
            self._state = HALF_OPEN
            self.trial_in_flight = False

    def _open(self) -> None:
        self._state = OPEN
        self.opened_at = self.clock.now()  # a fresh cooldown each time it opens
        self.trial_in_flight = False
        logger.warning(
            "circuit open after %d failure(s); next trial in %g s",
            self.failures,
            self.reset_timeout,
        )

    @property
    def state(self) -> str:
        with self.lock:
            self._update()
            return self._state

    def can_execute(self) -> bool:
        """May a call go out now? In half-open, True for exactly one caller: the trial."""
        with self.lock:
            self._update()
            if self._state == CLOSED:
                return True
            if self._state == OPEN:
                return False
            # Half-open: letting everyone through would hit a provider that may still be down
            # with the full load at once. Hand out one trial; refuse the rest until it reports.
            if self.trial_in_flight:
                return False
            self.trial_in_flight = True
            return True

    def record_success(self) -> None:
        with self.lock:
            if self._state != CLOSED:
                logger.info("circuit closed: the trial call succeeded")
            self._state = CLOSED
            self.failures = 0  # only CONSECUTIVE failures open the circuit
            self.trial_in_flight = False

    def record_failure(self) -> None:
        with self.lock:
            self.failures += 1
            if self._state == HALF_OPEN:
                self._open()  # the trial failed: still down, wait a whole cooldown again
            elif self._state == CLOSED and self.failures >= self.failure_threshold:
                self._open()
            # Already open (a call that started before it opened): the cooldown stays as it is.

    def health(self) -> dict:
        """For monitoring: the state, the failures in a row, the seconds until a trial."""
        with self.lock:
            self._update()
            retry_in = 0.0
            if self._state == OPEN:
                retry_in = max(0.0, self.opened_at + self.reset_timeout - self.clock.now())
            return {"state": self._state, "failures": self.failures, "retry_in": retry_in}


# =============================================================================================
# Task 7 (optional) · Token limits: split long text into chunks that fit the context window
# =============================================================================================

# Boundaries from coarse to fine. Each pattern matches a separator; a piece keeps the separator
# that follows it, so "".join(pieces) is the text again.
_BOUNDARIES = [
    re.compile(r"\n[^\S\n]*\n\s*"),  # a blank line: between paragraphs
    re.compile(r"(?<=[.!?])\s+"),  # after a sentence end
    re.compile(r"\s+"),  # between words
]


def _split_after(text: str, pattern: re.Pattern) -> list[str]:
    """Cut ``text`` after each match of ``pattern``: the separators stay in the pieces."""
    pieces, start = [], 0
    for match in pattern.finditer(text):
        if match.end() > start:
            pieces.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _pack(text: str, max_tokens: int, level: int = 0) -> list[str]:
    """Chunks of ``text`` within ``max_tokens``, cut at the coarsest boundary that works."""
    if estimate_tokens(text) <= max_tokens:
        return [text]
    if level == len(_BOUNDARIES):
        # One "word" longer than a chunk: no boundary left, so cut it into full-size slices.
        size = max_tokens * CHARS_PER_TOKEN
        return [text[i : i + size] for i in range(0, len(text), size)]
    chunks, current = [], ""
    for piece in _split_after(text, _BOUNDARIES[level]):
        if estimate_tokens(current + piece) <= max_tokens:
            current += piece  # greedy: fill the chunk as far as the budget allows
            continue
        if current:
            chunks.append(current)
            current = ""
        if estimate_tokens(piece) <= max_tokens:
            current = piece
        else:  # this paragraph (sentence) alone is too long: split it at the next finer level
            chunks.extend(_pack(piece, max_tokens, level + 1))
    if current:
        chunks.append(current)
    return chunks


def chunk_text(text: str, max_tokens: int, overlap: int = 0) -> list[str]:
    """Split ``text`` into chunks of at most ``max_tokens`` (by ``estimate_tokens``).

    Cuts at paragraph, then sentence, then word boundaries; only a word longer than a chunk is
    cut. With ``overlap=0`` the chunks join back to exactly ``text``; with ``overlap`` tokens,
    each chunk after the first repeats about that much of the text before it, for context.
    """
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < max_tokens:
        raise ValueError(
            f"overlap must be an int in [0, max_tokens={max_tokens}), got {overlap!r}: "
            "each chunk needs room for new text"
        )
    if not text:
        return []
    # Leave room for the overlap: new text gets (max_tokens - overlap) tokens of each chunk.
    pieces = _pack(text, max_tokens - overlap)
    chunks, pos = [], 0
    for piece in pieces:
        start = max(0, pos - overlap * CHARS_PER_TOKEN)
        while 0 < start < pos and not text[start - 1].isspace():
            start += 1  # begin the overlap at a word, not in the middle of one
        chunks.append(text[start : pos + len(piece)])
        pos += len(piece)
    return chunks


if __name__ == "__main__":
    raise SystemExit(run_checks(globals()))
