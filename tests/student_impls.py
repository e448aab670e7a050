"""Student solutions, right and wrong, as students write them in the course notebooks.

The graders in ``llm_patterns.course.grading`` must accept every ``Good*``/``good_*`` implementation and
reject every ``Bug*``/``bug_*`` one with the right criterion failing (tests/test_grading.py).
They are written the way a student writes them: plain classes, a lock or not, ``time.time()``
copied from the hint, and so on. Not library code.
"""

from __future__ import annotations

import logging
import random
import re
import sys
import threading
import time
from decimal import Decimal
from enum import Enum
from threading import Condition, Lock

from llm_patterns.errors import (
    AllProvidersFailed,
    BudgetExceeded,
    ConnectionFailed,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    RateLimitTimeout,
    ServerError,
)
from llm_patterns.tokens import estimate_tokens

log = logging.getLogger("student")

# =============================================================================================
# Task 1: token bucket and rate limiter
# =============================================================================================


class GoodLazyBucket:
    """The hint's design, fixed: lazy refill on each call, capped, locked, on the given clock."""

    def __init__(self, capacity, refill_rate, clock):
        self.capacity = capacity
        self.refill_rate = refill_rate
        self.clock = clock
        self.tokens = capacity
        self.last_refill = clock.now()
        self.lock = threading.Lock()

    def _refill(self):
        now = self.clock.now()
        elapsed = now - self.last_refill
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_rate)
        self.last_refill = now

    def consume(self, n=1):
        if n > self.capacity:
            raise ValueError(f"n={n} is above capacity={self.capacity}")
        with self.lock:
            self._refill()
            if self.tokens >= n:
                self.tokens -= n
                return True
            return False

    def wait_time(self, n=1):
        if n > self.capacity:
            raise ValueError(f"n={n} is above capacity={self.capacity}")
        with self.lock:
            self._refill()
            if self.tokens >= n:
                return 0.0
            return (n - self.tokens) / self.refill_rate



class BugStrictComparisonBucket(GoodLazyBucket):
    """``>`` where ``>=`` belongs: the last token is never given out."""

    def consume(self, n=1):
        if n > self.capacity:
            raise ValueError(f"n={n} is above capacity={self.capacity}")
        with self.lock:
            self._refill()
            if self.tokens > n:
                self.tokens -= n
                return True
            return False

class GoodGCRABucket:
    """GCRA: store the theoretical arrival time instead of a token count (keyword-only clock)."""

    def __init__(self, capacity, refill_rate, *, clock=None):
        self.capacity = capacity
        self.interval = 1.0 / refill_rate
        self.clock = clock
        self.tat = clock.now()  # empty "debt": full bucket
        self._lock = threading.RLock()

    @property
    def tokens(self):
        with self._lock:
            debt = max(0.0, self.tat - self.clock.now())
            return self.capacity - debt / self.interval

    def wait_time(self, n=1):
        if n > self.capacity:
            raise ValueError(f"cannot wait for {n} tokens: capacity is {self.capacity}")
        with self._lock:
            now = self.clock.now()
            tat = max(self.tat, now)
            new_tat = tat + n * self.interval
            allowed_at = new_tat - self.capacity * self.interval
            return max(0.0, allowed_at - now)

    def consume(self, n=1):
        with self._lock:
            if self.wait_time(n) > 1e-12:
                return False
            self.tat = max(self.tat, self.clock.now()) + n * self.interval
            return True


class BugOverfillBucket(GoodLazyBucket):
    """Forgot the min(capacity, ...): idling fills the bucket past capacity."""

    def _refill(self):
        now = self.clock.now()
        self.tokens = self.tokens + (now - self.last_refill) * self.refill_rate
        self.last_refill = now


class BugWallClockBucket(GoodLazyBucket):
    """Copied time.time() from the hint: the given clock is ignored."""

    def __init__(self, capacity, refill_rate, clock):
        super().__init__(capacity, refill_rate, clock)
        self.last_refill = time.time()

    def _refill(self):
        now = time.time()
        self.tokens = min(self.capacity, self.tokens + (now - self.last_refill) * self.refill_rate)
        self.last_refill = now


class BugUnlockedBucket:
    """Correct arithmetic, no lock: the check-then-take races between threads."""

    def __init__(self, capacity, refill_rate, clock):
        self.capacity = capacity
        self.refill_rate = refill_rate
        self.clock = clock
        self.tokens = capacity
        self.last_refill = clock.now()

    def _refill(self):
        now = self.clock.now()
        self.tokens = min(self.capacity, self.tokens + (now - self.last_refill) * self.refill_rate)
        self.last_refill = now

    def consume(self, n=1):
        if n > self.capacity:
            raise ValueError(f"n={n} > capacity={self.capacity}")
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def wait_time(self, n=1):
        if n > self.capacity:
            raise ValueError(f"n={n} > capacity={self.capacity}")
        self._refill()
        return max(0.0, (n - self.tokens) / self.refill_rate)


class BugOneLineUnlockedBucket(BugUnlockedBucket):
    """The race squeezed onto one line: still a read-modify-write."""

    def consume(self, n=1):
        self._refill()
        ok = self.tokens >= n; self.tokens = self.tokens - n if ok else self.tokens; return ok


class BugRefillBeforeLockBucket(GoodLazyBucket):
    """Refills before taking its lock: a refill that read the old level writes it back after
    another thread took a token."""

    def consume(self, n=1):
        if n > self.capacity:
            raise ValueError(f"n={n} is above capacity={self.capacity}")
        self._refill()
        with self.lock:
            if self.tokens >= n:
                self.tokens -= n
                return True
            return False


class BugHintBucket:
    """The seed hint's bucket with only the clock fixed: no lock at all."""

    def __init__(self, capacity, refill_rate, clock):
        self.capacity = capacity
        self.refill_rate = refill_rate
        self.clock = clock
        self.tokens = capacity
        self.last_refill = clock.now()

    def _refill(self):
        now = self.clock.now()
        elapsed = now - self.last_refill
        self.tokens = min(self.capacity, self.tokens + elapsed * self.refill_rate)
        self.last_refill = now

    def consume(self, n=1):
        if n > self.capacity:
            raise ValueError(f"n={n} > capacity={self.capacity}")
        self._refill()
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False

    def wait_time(self, n=1):
        if n > self.capacity:
            raise ValueError(f"n={n} > capacity={self.capacity}")
        self._refill()
        return max(0.0, (n - self.tokens) / self.refill_rate)


class BugNoCapacityCheckBucket(GoodLazyBucket):
    """n above capacity just waits (forever, in real life) instead of raising."""

    def consume(self, n=1):
        with self.lock:
            self._refill()
            if self.tokens >= n:
                self.tokens -= n
                return True
            return False

    def wait_time(self, n=1):
        with self.lock:
            self._refill()
            return max(0.0, (n - self.tokens) / self.refill_rate)


class GoodLimiter:
    """Wait for the longer of the two waits, then take from both buckets at once."""

    def __init__(self, rpm, tpm, clock, max_wait=None):
        self.clock = clock
        self.max_wait = max_wait
        self.requests = GoodLazyBucket(rpm, rpm / 60, clock)
        self.tokens = GoodLazyBucket(tpm, tpm / 60, clock)
        self.lock = threading.Lock()

    def acquire(self, tokens=0):
        waited = 0.0
        while True:
            with self.lock:
                wait = max(self.requests.wait_time(1), self.tokens.wait_time(tokens))
                if wait <= 0:
                    self.requests.consume(1)
                    self.tokens.consume(tokens)
                    return waited
            if self.max_wait is not None and waited + wait > self.max_wait:
                raise RateLimitTimeout(f"would wait {waited + wait:.1f} s, max_wait {self.max_wait}")
            log.info("rate limited: waiting %.2f s", wait)
            self.clock.sleep(wait)
            waited += wait


class GoodPollingLimiter:
    """Polls in small clock.sleep steps; checks both buckets and takes from both under one
    lock (the RLock of its own, taken again inside the buckets' calls, is fine)."""

    def __init__(self, rpm, tpm, *, clock, max_wait=float("inf")):
        self.clock = clock
        self.max_wait = max_wait
        self.req = GoodGCRABucket(rpm, rpm / 60, clock=clock)
        self.tok = GoodGCRABucket(tpm, tpm / 60, clock=clock)
        self.lock = threading.RLock()

    def acquire(self, tokens=0):
        start = self.clock.now()
        ahead = max(self.req.wait_time(1), self.tok.wait_time(tokens))
        if ahead > (self.max_wait if self.max_wait is not None else float("inf")):
            raise RateLimitTimeout("the wait would pass max_wait")
        if ahead > 0:
            logging.getLogger("limiter").warning(f"throttled for {ahead} seconds")
        while True:
            with self.lock:
                if self.req.wait_time(1) == 0 and self.tok.wait_time(tokens) == 0:
                    self.req.consume(1)
                    self.tok.consume(tokens)
                    return self.clock.now() - start
            self.clock.sleep(0.125)


class GoodConditionLimiter:
    """A Condition around both buckets (``from threading import Condition`` style imports)."""

    def __init__(self, rpm, tpm, clock, max_wait=None):
        self.clock = clock
        self.max_wait = max_wait
        self.requests = GoodLazyBucket(rpm, rpm / 60, clock)
        self.tokens = GoodLazyBucket(tpm, tpm / 60, clock)
        self.cond = Condition(Lock())

    def acquire(self, tokens=0):
        start = self.clock.now()
        while True:
            with self.cond:
                wait = max(self.requests.wait_time(1), self.tokens.wait_time(tokens))
                if wait <= 0:
                    self.requests.consume(1)
                    self.tokens.consume(tokens)
                    return self.clock.now() - start
                if self.max_wait is not None and self.clock.now() - start + wait > self.max_wait:
                    raise RateLimitTimeout(f"{wait:.1f} s to wait, over max_wait={self.max_wait}")
            print_wait = logging.getLogger(__name__)
            print_wait.debug("waiting %s s for both buckets", round(wait, 3))
            self.clock.sleep(max(wait, 1e-6))


class BugCheckThenTakeLimiter(GoodPollingLimiter):
    """Checks both (locked) buckets, then takes, with no lock across the check and the take:
    two threads both pass the check."""

    def acquire(self, tokens=0):
        start = self.clock.now()
        while not (self.req.wait_time(1) == 0 and self.tok.wait_time(tokens) == 0):
            self.clock.sleep(0.125)
        self.req.consume(1)
        self.tok.consume(tokens)
        return self.clock.now() - start


class BugSpendWhileWaitingLimiter(GoodLimiter):
    """Takes the request first, then waits for the tokens."""

    def acquire(self, tokens=0):
        start = self.clock.now()
        while not self.requests.consume(1):
            self.clock.sleep(self.requests.wait_time(1))
        while not self.tokens.consume(tokens):
            self.clock.sleep(self.tokens.wait_time(tokens))
        return self.clock.now() - start


class BugTokensFirstLimiter(GoodLimiter):
    """Takes the tokens first, then waits for a request."""

    def acquire(self, tokens=0):
        start = self.clock.now()
        while not self.tokens.consume(tokens):
            self.clock.sleep(self.tokens.wait_time(tokens))
        while not self.requests.consume(1):
            self.clock.sleep(self.requests.wait_time(1))
        return self.clock.now() - start


class BugShortCircuitLimiter(GoodLimiter):
    """`a.consume() and b.consume()`: a failed second consume has already spent the first."""

    def acquire(self, tokens=0):
        start = self.clock.now()
        while not (self.requests.consume(1) and self.tokens.consume(tokens)):
            self.clock.sleep(max(self.requests.wait_time(1), self.tokens.wait_time(tokens)))
        return self.clock.now() - start


class BugRealSleepLimiter(GoodLimiter):
    """Waits with time.sleep: a real minute per 429 in a check, and in tests."""

    def acquire(self, tokens=0):
        waited = 0.0
        while True:
            wait = max(self.requests.wait_time(1), self.tokens.wait_time(tokens))
            if wait <= 0:
                self.requests.consume(1)
                self.tokens.consume(tokens)
                return waited
            time.sleep(wait)
            waited += wait


class BugBusyWaitLimiter(GoodLimiter):
    """Spins until the buckets refill, but never lets (virtual) time pass: an endless loop."""

    def acquire(self, tokens=0):
        while not (self.requests.wait_time(1) == 0 and self.tokens.wait_time(tokens) == 0):
            pass
        self.requests.consume(1)
        self.tokens.consume(tokens)
        return 0.0


class StubBucket:
    def __init__(self, capacity, refill_rate, clock):
        raise NotImplementedError("implement TokenBucket")


class StubLimiter:
    def __init__(self, rpm, tpm, clock, max_wait=None):
        raise NotImplementedError("implement RateLimiter")


# =============================================================================================
# Task 2: backoff and is_retryable
# =============================================================================================


def good_full_jitter(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    delay = min(max_delay, base_delay * 2**attempt)
    return rng.uniform(0, delay)


def good_equal_jitter(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    delay = min(max_delay, base_delay * (2**attempt))
    return delay / 2 + rng.uniform(0, delay / 2)


def good_proportional_jitter(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    """±25 % around the exponential, capped last."""
    return min(max_delay, base_delay * 2**attempt * rng.uniform(0.75, 1.25))


def bug_jitter_after_cap(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    delay = min(base_delay * 2**attempt, max_delay)
    return delay + rng.uniform(0, 1)  # the hint's bug: can exceed max_delay


def bug_off_by_one(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    """The exponent one too high, with the seed hint's +10 % jitter: the first retry after 2-2.2 s."""
    delay = min(base_delay * 2 ** (attempt + 1), max_delay)
    return min(delay + rng.uniform(0, 0.1 * delay), max_delay)


def bug_no_jitter(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    return min(base_delay * 2**attempt, max_delay)


def bug_linear(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    return rng.uniform(0, min(max_delay, base_delay * (attempt + 1)))


def bug_global_random(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    return random.uniform(0, min(max_delay, base_delay * 2**attempt))


def good_is_retryable(error):
    if isinstance(error, QuotaExceededError):
        return False
    return isinstance(error, (RateLimitError, ServerError, ProviderTimeout, ConnectionFailed))


def good_is_retryable_by_status(error):
    if isinstance(error, (ProviderTimeout, ConnectionFailed)):
        return True
    status = getattr(error, "status_code", None)
    if status == 429:
        return "insufficient_quota" not in str(error)
    return status is not None and (status >= 500 or status in (408, 409))


def bug_retries_quota(error):
    return isinstance(error, (RateLimitError, ServerError, ProviderTimeout, ConnectionFailed))


def bug_misses_529_and_timeouts(error):
    if isinstance(error, QuotaExceededError):
        return False
    return getattr(error, "status_code", None) in (429, 500, 502, 503)


def bug_retries_everything(error):
    return not isinstance(error, QuotaExceededError)


def stub_backoff(attempt, base_delay=1.0, max_delay=60.0, rng=random):
    raise NotImplementedError


def stub_is_retryable(error):
    raise NotImplementedError


# =============================================================================================
# Task 3: cost tracker
# =============================================================================================


class GoodFloatTracker:
    def __init__(self, pricing, budget, alert_thresholds=(0.5, 0.8, 1.0)):
        self.pricing = pricing
        self.budget = budget
        self.alert_thresholds = alert_thresholds
        self.total = 0.0
        self._by_task = {}
        self.alerts = []
        self.lock = threading.Lock()

    def record(self, model, usage, dag_id=None, task_id=None):
        price = self.pricing[model]  # KeyError for an unknown model
        cost = (usage["prompt_tokens"] * price["input"]
                + usage["completion_tokens"] * price["output"]) / 1_000_000
        with self.lock:
            self.total += cost
            key = (dag_id, task_id)
            self._by_task[key] = self._by_task.get(key, 0.0) + cost
            for t in self.alert_thresholds:
                if self.total >= t * self.budget and t not in self.alerts:
                    self.alerts.append(t)
                    log.warning("spent %.2f of %.2f USD (%d%%)", self.total, self.budget, t * 100)
        return cost

    def by_task(self):
        with self.lock:
            return dict(self._by_task)

    def by_dag(self):
        out = {}
        for (dag, _task), cost in self.by_task().items():
            out[dag] = out.get(dag, 0.0) + cost
        return out


class GoodDecimalTracker:
    """Decimal money, alerts stored as (threshold, total) pairs."""

    def __init__(self, pricing, budget, alert_thresholds=(0.5, 0.8, 1.0)):
        self.pricing = {m: {k: Decimal(str(v)) for k, v in p.items()} for m, p in pricing.items()}
        self.budget = Decimal(str(budget))
        self.thresholds = [Decimal(str(t)) for t in alert_thresholds]
        self._total = Decimal(0)
        self._tasks = {}
        self._fired = set()
        self.alerts = []
        self._lock = threading.RLock()

    @property
    def total(self):
        return self._total

    def record(self, model, usage, dag_id=None, task_id=None):
        if model not in self.pricing:
            raise KeyError(f"no price for model {model!r}")
        p = self.pricing[model]
        cost = (Decimal(usage["prompt_tokens"]) * p["input"]
                + Decimal(usage["completion_tokens"]) * p["output"]) / Decimal(1_000_000)
        with self._lock:
            self._total += cost
            self._tasks[(dag_id, task_id)] = self._tasks.get((dag_id, task_id), Decimal(0)) + cost
            for t in self.thresholds:
                if t not in self._fired and self._total >= t * self.budget:
                    self._fired.add(t)
                    self.alerts.append((float(t), self._total))
                    log.warning("cost alert: %s of the budget reached", t)
        return cost

    def by_task(self):
        return dict(self._tasks)

    def by_dag(self):
        out = {}
        for (dag, _), c in self._tasks.items():
            out[dag] = out.get(dag, Decimal(0)) + c
        return out


class GoodRecordsTracker:
    """No lock needed: list.append is atomic, everything else is computed from the records."""

    def __init__(self, pricing, budget, alert_thresholds=(0.5, 0.8, 1.0)):
        self.pricing, self.budget, self.thresholds = pricing, budget, alert_thresholds
        self.records = []

    def record(self, model, usage, dag_id=None, task_id=None):
        price = self.pricing[model]
        cost = (usage["prompt_tokens"] * price["input"]
                + usage["completion_tokens"] * price["output"]) / 1e6
        fired = self.alerts
        self.records.append((dag_id, task_id, cost))
        for t in self.alerts[len(fired):]:
            log.warning("cost alert: %s of the budget reached", t)
        return cost

    @property
    def total(self):
        return sum(c for _, _, c in list(self.records))

    @property
    def alerts(self):
        fired, running = [], 0.0
        for _, _, c in list(self.records):
            running += c
            fired += [t for t in self.thresholds if running >= t * self.budget and t not in fired]
        return fired

    def by_task(self):
        out = {}
        for d, t, c in list(self.records):
            out[(d, t)] = out.get((d, t), 0.0) + c
        return out

    def by_dag(self):
        out = {}
        for d, _t, c in list(self.records):
            out[d] = out.get(d, 0.0) + c
        return out


class BugPer1KTracker(GoodFloatTracker):
    def record(self, model, usage, dag_id=None, task_id=None):
        price = self.pricing[model]
        cost = (usage["prompt_tokens"] * price["input"]
                + usage["completion_tokens"] * price["output"]) / 1000  # prices read per 1K
        with self.lock:
            self.total += cost
            key = (dag_id, task_id)
            self._by_task[key] = self._by_task.get(key, 0.0) + cost
        return cost


class BugCheapDefaultTracker(GoodFloatTracker):
    def record(self, model, usage, dag_id=None, task_id=None):
        if model not in self.pricing:
            model = "gpt-4o-mini"  # the hint's fallback: price unknown models as a cheap one
        return super().record(model, usage, dag_id, task_id)


class BugAlertEveryCallTracker(GoodFloatTracker):
    def record(self, model, usage, dag_id=None, task_id=None):
        price = self.pricing[model]
        cost = (usage["prompt_tokens"] * price["input"]
                + usage["completion_tokens"] * price["output"]) / 1_000_000
        with self.lock:
            self.total += cost
            self._by_task[(dag_id, task_id)] = self._by_task.get((dag_id, task_id), 0.0) + cost
            for t in self.alert_thresholds:
                if self.total >= t * self.budget:
                    self.alerts.append(t)
                    log.warning("cost alert: %s of the budget reached", t)
        return cost


class BugUnlockedTracker(GoodFloatTracker):
    """Read-modify-write of shared totals without the lock."""

    def record(self, model, usage, dag_id=None, task_id=None):
        price = self.pricing[model]
        cost = (usage["prompt_tokens"] * price["input"]
                + usage["completion_tokens"] * price["output"]) / 1_000_000
        self.total += cost
        key = (dag_id, task_id)
        self._by_task[key] = self._by_task.get(key, 0.0) + cost
        for t in self.alert_thresholds:
            if self.total >= t * self.budget and t not in self.alerts:
                self.alerts.append(t)
                log.warning("cost alert: %s of the budget reached", t)
        return cost


class BugSilentAlertTracker(GoodFloatTracker):
    """Alerts fire (the list is right) but nobody hears them: no log line."""

    def record(self, model, usage, dag_id=None, task_id=None):
        price = self.pricing[model]  # KeyError for an unknown model
        cost = (usage["prompt_tokens"] * price["input"]
                + usage["completion_tokens"] * price["output"]) / 1_000_000
        with self.lock:
            self.total += cost
            key = (dag_id, task_id)
            self._by_task[key] = self._by_task.get(key, 0.0) + cost
            for t in self.alert_thresholds:
                if self.total >= t * self.budget and t not in self.alerts:
                    self.alerts.append(t)
        return cost


class BugByTaskIdOnlyTracker(GoodFloatTracker):
    def record(self, model, usage, dag_id=None, task_id=None):
        cost = super().record(model, usage, dag_id, task_id)
        return cost

    def by_task(self):  # keyed by task_id alone: two DAGs' "extract" tasks get merged
        out = {}
        for (_dag, task), cost in super().by_task().items():
            out[task] = out.get(task, 0.0) + cost
        return out


class BugOverwriteByTaskTracker(GoodFloatTracker):
    def record(self, model, usage, dag_id=None, task_id=None):
        price = self.pricing[model]
        cost = (usage["prompt_tokens"] * price["input"]
                + usage["completion_tokens"] * price["output"]) / 1_000_000
        with self.lock:
            self.total += cost
            self._by_task[(dag_id, task_id)] = cost  # overwrites instead of adding
            for t in self.alert_thresholds:
                if self.total >= t * self.budget and t not in self.alerts:
                    self.alerts.append(t)
                    log.warning("cost alert: %s of the budget reached", t)
        return cost


class StubTracker:
    def __init__(self, pricing, budget, alert_thresholds=(0.5, 0.8, 1.0)):
        pass

    def record(self, model, usage, dag_id=None, task_id=None):
        raise NotImplementedError

    @property
    def total(self):
        raise NotImplementedError

    def by_task(self):
        raise NotImplementedError

    def by_dag(self):
        raise NotImplementedError

    @property
    def alerts(self):
        raise NotImplementedError


# =============================================================================================
# Task 4: fallback
# =============================================================================================


def good_fallback(prompt, providers):
    errors = []
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except BudgetExceeded:
            raise
        except Exception as e:
            log.warning("provider %s failed: %s", p["name"], e)
            errors.append((p["name"], e))
            continue
        log.info("provider %s answered", p["name"])
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise AllProvidersFailed(errors)


def good_fallback_other_style(prompt, providers):
    logger = logging.getLogger(__name__)
    failures = []
    for provider in providers:
        name, fn = provider["name"], provider["call_fn"]
        try:
            text = fn(prompt)
        except Exception as exc:
            if isinstance(exc, BudgetExceeded):
                logger.error("budget exceeded at %s; stopping", name)
                raise
            failures.append((name, exc))
            logger.warning(f"{name} failed with {type(exc).__name__}; trying the next provider")
        else:
            if failures:
                logger.warning(f"fallback: {name} answered after {len(failures)} failure(s)")
            else:
                logger.info(f"{name} answered")
            return dict(provider=name, response=text, fallback_used=bool(failures))
    raise AllProvidersFailed(failures)


def good_fallback_own_handler(prompt, providers):
    """Its own logger with its own handler and propagate = False (no duplicate lines)."""
    logger = logging.getLogger("my_pipeline.fallback")
    if not logger.handlers:
        logger.addHandler(logging.StreamHandler())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    errors = []
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except BudgetExceeded:
            raise
        except Exception as e:
            logger.warning("%s failed: %r", p["name"], e)
            errors.append((p["name"], e))
            continue
        logger.info("%s answered", p["name"])
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise AllProvidersFailed(errors)


def good_fallback_root_logger(prompt, providers):
    """Logs through the root logger (logging.warning), the quickest thing that works."""
    errors = []
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except BudgetExceeded:
            raise
        except Exception as e:
            logging.warning("%s failed: %s", p["name"], e)
            errors.append((p["name"], e))
            continue
        logging.warning("%s answered", p["name"])
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise AllProvidersFailed(errors)


def bug_catches_base_exception(prompt, providers):
    """``except BaseException``: Ctrl-C in a provider call falls back instead of stopping."""
    errors = []
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except BudgetExceeded:
            raise
        except BaseException as e:
            log.warning("provider %s failed: %s", p["name"], e)
            errors.append((p["name"], e))
            continue
        log.info("provider %s answered", p["name"])
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise AllProvidersFailed(errors)


def bug_bare_except(prompt, providers):
    """A bare ``except:`` that wraps everything, Ctrl-C included, in AllProvidersFailed."""
    errors = []
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except BudgetExceeded:
            raise
        except:  # noqa: E722 - the bug under test
            errors.append((p["name"], sys.exc_info()[1]))
            log.warning("provider %s failed", p["name"])
            continue
        log.info("provider %s answered", p["name"])
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise AllProvidersFailed(errors)


def bug_no_fallback(prompt, providers):
    p = providers[0]
    log.info("calling %s", p["name"])
    return {"provider": p["name"], "response": p["call_fn"](prompt), "fallback_used": False}


def bug_swallows_budget(prompt, providers):
    errors = []
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except Exception as e:  # BudgetExceeded too: the next provider spends money anyway
            log.warning("provider %s failed: %s", p["name"], e)
            errors.append((p["name"], e))
            continue
        log.info("provider %s answered", p["name"])
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise AllProvidersFailed(errors)


def bug_reraises_last(prompt, providers):
    last = None
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except BudgetExceeded:
            raise
        except Exception as e:
            log.warning("provider %s failed: %s", p["name"], e)
            last = e
            continue
        log.info("provider %s answered", p["name"])
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise last


def bug_prints_instead_of_logging(prompt, providers):
    errors = []
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except BudgetExceeded:
            raise
        except Exception as e:
            print(f"provider {p['name']} failed: {e}")
            errors.append((p["name"], e))
            continue
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise AllProvidersFailed(errors)


def bug_logs_only_failures(prompt, providers):
    errors = []
    for i, p in enumerate(providers):
        try:
            response = p["call_fn"](prompt)
        except BudgetExceeded:
            raise
        except Exception as e:
            log.warning("provider %s failed: %s", p["name"], e)
            errors.append((p["name"], e))
            continue
        log.info("got an answer")
        return {"provider": p["name"], "response": response, "fallback_used": i > 0}
    raise AllProvidersFailed(errors)


def stub_fallback(prompt, providers):
    raise NotImplementedError("implement call_with_fallback")


# =============================================================================================
# Task 5: circuit breaker
# =============================================================================================


class GoodLazyBreaker:
    """The hint's spelling ("half-open") and a lazy move to half-open in can_execute(), under
    one lock."""

    def __init__(self, failure_threshold, reset_timeout, clock):
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self.state = "closed"
        self.failures = 0
        self.opened_at = None
        self.trial_in_flight = False
        self.lock = threading.Lock()

    def can_execute(self):
        with self.lock:
            if self.state == "open":
                if self.clock.now() - self.opened_at >= self.reset_timeout:
                    self.state = "half-open"
                    self.trial_in_flight = False
                else:
                    return False
            if self.state == "half-open":
                if self.trial_in_flight:
                    return False
                self.trial_in_flight = True
                return True
            return True

    def record_success(self):
        with self.lock:
            self.state = "closed"
            self.failures = 0

    def record_failure(self):
        with self.lock:
            self.failures += 1
            if self.state == "half-open" or self.failures >= self.failure_threshold:
                self.state = "open"
                self.opened_at = self.clock.now()

    def health(self):
        with self.lock:
            retry_in = 0.0
            if self.state == "open":
                retry_in = max(0.0, self.opened_at + self.reset_timeout - self.clock.now())
            return {"state": self.state, "failures": self.failures, "retry_in": retry_in}


class BugUnlockedHalfOpenBreaker(GoodLazyBreaker):
    """Right on one thread; with two, both see "no trial yet" and both become the trial."""

    def can_execute(self):
        if self.state == "open":
            if self.clock.now() - self.opened_at >= self.reset_timeout:
                self.state = "half-open"
                self.trial_in_flight = False
            else:
                return False
        if self.state == "half-open":
            if self.trial_in_flight:
                return False
            self.trial_in_flight = True
            return True
        return True


class State(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class GoodEagerBreaker:
    """An Enum state that reads HALF_OPEN as soon as the cooldown is over (keyword clock)."""

    def __init__(self, failure_threshold=5, reset_timeout=60.0, *, clock):
        self.threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.clock = clock
        self._state = State.CLOSED
        self._consecutive = 0
        self._open_until = 0.0
        self._trials = 0
        self._lock = threading.Lock()

    @property
    def state(self):
        if self._state is State.OPEN and self.clock.now() >= self._open_until:
            self._state = State.HALF_OPEN
            self._trials = 0
        return self._state

    def can_execute(self):
        with self._lock:
            s = self.state
            if s is State.CLOSED:
                return True
            if s is State.HALF_OPEN and self._trials < 1:
                self._trials += 1
                return True
            return False

    def record_success(self):
        with self._lock:
            self._consecutive = 0
            self._state = State.CLOSED

    def record_failure(self):
        with self._lock:
            self._consecutive += 1
            if self.state is State.HALF_OPEN or self._consecutive >= self.threshold:
                self._state = State.OPEN
                self._open_until = self.clock.now() + self.reset_timeout

    def health(self):
        state = self.state
        wait = self._open_until - self.clock.now() if state is State.OPEN else 0.0
        return dict(state=state, failures=self._consecutive, retry_in=wait)


class BugEveryoneInHalfOpen(GoodLazyBreaker):
    def can_execute(self):
        if self.state == "open":
            if self.clock.now() - self.opened_at >= self.reset_timeout:
                self.state = "half-open"
            else:
                return False
        return True  # half-open: everybody in


class BugNeverHalfOpens(GoodLazyBreaker):
    def can_execute(self):
        return self.state != "open"


class BugWallClockBreaker(GoodLazyBreaker):
    def can_execute(self):
        if self.state == "open":
            if time.time() - self.opened_at >= self.reset_timeout:
                self.state = "half-open"
                self.trial_in_flight = False
            else:
                return False
        if self.state == "half-open":
            if self.trial_in_flight:
                return False
            self.trial_in_flight = True
        return True

    def record_failure(self):
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.failure_threshold:
            self.state = "open"
            self.opened_at = time.time()


class BugTrialFailureStaysHalfOpen(GoodLazyBreaker):
    def can_execute(self):
        if self.state == "open" and self.clock.now() - self.opened_at >= self.reset_timeout:
            self.state = "half-open"
            self.failures = 0
            self.trial_in_flight = False
        return super().can_execute()

    def record_failure(self):
        self.failures += 1
        if self.failures >= self.failure_threshold:  # forgot: any failure in half-open re-opens
            self.state = "open"
            self.opened_at = self.clock.now()


class BugStaleCooldown(GoodLazyBreaker):
    def record_failure(self):
        self.failures += 1
        if self.state == "half-open" or self.failures >= self.failure_threshold:
            if self.opened_at is None:
                self.opened_at = self.clock.now()  # set once: a failed trial keeps the old time
            self.state = "open"


class BugFrozenRetryInBreaker(GoodLazyBreaker):
    """health() reports the whole cooldown while open, never what is left of it."""

    def health(self):
        with self.lock:
            retry_in = self.reset_timeout if self.state == "open" else 0.0
            return {"state": self.state, "failures": self.failures, "retry_in": retry_in}


class BugNoSuccessReset(GoodLazyBreaker):
    def record_success(self):
        self.state = "closed"  # forgot to reset the failure count


class BugStraightToClosed(GoodLazyBreaker):
    def can_execute(self):
        if self.state == "open":
            if self.clock.now() - self.opened_at >= self.reset_timeout:
                self.state = "closed"
                self.failures = 0
                return True
            return False
        return True


class StubBreaker:
    def __init__(self, failure_threshold, reset_timeout, clock):
        raise NotImplementedError


# =============================================================================================
# Task 7: chunking
# =============================================================================================


def _fits(text, max_tokens):
    return estimate_tokens(text) <= max_tokens


def _split_keep(text, pattern):
    """Split after each separator match, keeping the separator with the piece before it."""
    pieces, start = [], 0
    for m in re.finditer(pattern, text):
        if m.end() > start:
            pieces.append(text[start:m.end()])
            start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def _recursive(text, max_tokens, levels):
    if _fits(text, max_tokens):
        return [text]
    if not levels:  # a single word longer than a chunk: cut it
        size = max_tokens * 4
        return [text[i:i + size] for i in range(0, len(text), size)]
    pieces = _split_keep(text, levels[0])
    if len(pieces) == 1:
        return _recursive(text, max_tokens, levels[1:])
    out, current = [], ""
    for piece in pieces:
        if _fits(current + piece, max_tokens):
            current += piece
            continue
        if current:
            out.append(current)
        if _fits(piece, max_tokens):
            current = piece
        else:
            out.extend(_recursive(piece, max_tokens, levels[1:]))
            current = ""
    if current:
        out.append(current)
    return out


def good_chunk_recursive(text, max_tokens, overlap=0):
    """Paragraphs, then sentences, then words; a word longer than a chunk is cut."""
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
    if overlap < 0 or overlap >= max_tokens:
        raise ValueError(f"overlap must be in [0, max_tokens), got {overlap}")
    if not text:
        return
    chunks = _recursive(text, max_tokens - overlap, [r"\n\s*\n", r"(?<=[.!?])\s+", r"\s+"])
    pos = 0
    for chunk in chunks:
        start = max(0, pos - overlap * 4) if pos else 0
        yield text[start:pos + len(chunk)]
        pos += len(chunk)


def good_chunk_greedy_words(text, max_tokens, overlap=0):
    """Greedy with rfind: from each cut, the last paragraph break in reach, else the last
    sentence end, else the last whitespace, else a cut word; returns a list."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    if not 0 <= overlap < max_tokens:
        raise ValueError("overlap must be smaller than max_tokens")
    limit = (max_tokens - overlap) * 4
    bounds, pos = [], 0
    while pos < len(text):
        window = text[pos:pos + limit]
        if len(window) < limit or pos + limit == len(text):
            bounds.append(len(window))
            break
        size = window.rfind("\n\n") + 2
        if size < 2:
            size = max(window.rfind(e) for e in (". ", "! ", "? ")) + 2
        if size < 2:
            size = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t")) + 1
        if size < 1:
            size = limit  # a word longer than a chunk: cut it
        bounds.append(size)
        pos += size
    chunks, pos = [], 0
    for size in bounds:
        start = max(0, pos - overlap * 4)
        chunks.append(text[start:pos + size])
        pos += size
    return chunks


def bug_chunk_words_only(text, max_tokens, overlap=0):
    """Packs whole words greedily: nothing lost, nothing too big, no word cut, but a chunk may
    end mid-sentence with a paragraph break in reach (rule 3's order ignored)."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be positive")
    if not 0 <= overlap < max_tokens:
        raise ValueError("overlap must be smaller than max_tokens")
    limit = (max_tokens - overlap) * 4
    words = re.findall(r"\s+|\S+\s*", text)
    bounds, current = [], 0
    for w in words:
        while len(w) > limit:  # cut a word that cannot fit in any chunk
            if current:
                bounds.append(current)
                current = 0
            bounds.append(limit)
            w = w[limit:]
        if current + len(w) > limit:
            bounds.append(current)
            current = 0
        current += len(w)
    if current:
        bounds.append(current)
    chunks, pos = [], 0
    for size in bounds:
        start = max(0, pos - overlap * 4)
        chunks.append(text[start:pos + size])
        pos += size
    return chunks


def bug_chunk_loses_whitespace(text, max_tokens, overlap=0):
    if max_tokens <= 0 or overlap >= max_tokens:
        raise ValueError("bad arguments")
    chunks, current = [], []
    for word in text.split():
        if current and estimate_tokens(" ".join(current + [word])) > max_tokens:
            chunks.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        chunks.append(" ".join(current))
    return chunks


def bug_chunk_over_limit(text, max_tokens, overlap=0):
    """Counts only the words, not the spaces: chunks come out too big."""
    if max_tokens <= 0 or overlap >= max_tokens:
        raise ValueError("bad arguments")
    chunks, current, size = [], "", 0
    for w in re.findall(r"\s+|\S+\s*", text):
        n = len(w.strip())
        if current and size + n > max_tokens * 4:
            chunks.append(current)
            current, size = "", 0
        current += w
        size += n
    if current:
        chunks.append(current)
    return chunks


def bug_chunk_cuts_words(text, max_tokens, overlap=0):
    """Fixed-size slices: fits and loses nothing, but cuts words in half."""
    if max_tokens <= 0 or overlap >= max_tokens:
        raise ValueError("bad arguments")
    size = max_tokens * 4
    step = size - overlap * 4
    return [text[i:i + size] for i in range(0, len(text), step)] if overlap else [
        text[i:i + size] for i in range(0, len(text), size)
    ]


def bug_chunk_endless_on_long_word(text, max_tokens, overlap=0):
    """Never cuts a word: a word longer than a chunk is retried forever."""
    if max_tokens <= 0 or overlap >= max_tokens:
        raise ValueError("bad arguments")
    words = re.findall(r"\s+|\S+\s*", text)
    i, current = 0, ""
    while i < len(words):
        if _fits(current + words[i], max_tokens):
            current += words[i]
            i += 1
        elif current:
            yield current
            current = ""
        # else: the word alone does not fit; loop again (forever)
    if current:
        yield current


def bug_chunk_empty_text(text, max_tokens, overlap=0):
    if max_tokens <= 0 or overlap >= max_tokens:
        raise ValueError("bad arguments")
    if not text:
        return [""]
    return good_chunk_greedy_words(text, max_tokens, overlap)


def bug_chunk_no_validation(text, max_tokens, overlap=0):
    if not text or max_tokens <= 0:
        return []
    return good_chunk_greedy_words(text, max_tokens, min(overlap, max_tokens - 1))


def stub_chunk(text, max_tokens, overlap=0):
    raise NotImplementedError("implement chunk_text")


class BugDeadlockLimiter(GoodLimiter):
    """Takes its own (non-reentrant) lock twice: the classic deadlock."""

    def acquire(self, tokens=0):
        with self.lock:
            return self._take(tokens)

    def _take(self, tokens):
        with self.lock:  # already held by this thread: blocks forever
            return 0.0
