"""Apache Airflow 3.3 integration: the patterns mapped onto Airflow's own machinery.

The only module of the library that imports Airflow, and only when an Airflow-bound name is
used: importing it (``llm_patterns.integrations.airflow``, or its old name
``llm_patterns.airflow``) is cheap and Airflow-free, so the pure helpers
(``retry_decision``, ``backoff_task_args``, ``backpressure_delay``, ``aggregate_costs`` ...)
work in a notebook without Airflow installed.

Our pattern, and what it is in Airflow:

- classify the error, honour Retry-After, jittered backoff: ``LLMRetryPolicy``, a 3.3
  ``RetryPolicy`` (``retry_policy=`` on a task), jitter seeded per task instance INCLUDING
  ``map_index``; without a policy, ``backoff_task_args(backoff, retries)`` -> ``@task(**...)``;
- the limiter says "wait N s" past ``max_wait``: ``reschedule_on_backpressure`` raises
  ``AirflowRescheduleException``; the task gives its worker slot back and uses no retry;
- a concurrency cap across workers: an Airflow pool (``@task(pool="llm_api")``);
- one RPM/TPM budget and one breaker across workers: ``llm_patterns.state``
  (``SharedRateLimiter``, ``SharedCircuitBreaker``; ``LLM_PATTERNS_STATE``);
- cost per task and per run: ``llm_result`` (the XCom a task returns) + ``SQLiteLedger``;
  ``aggregate_costs`` (exact Decimal);
- logs an operator reads: the ``on_retry`` / ``on_failure`` / ``on_success`` callbacks.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..backoff import BackoffPolicy
from ..errors import (
    AllProvidersFailed,
    CircuitOpenError,
    LLMError,
    RateLimitTimeout,
    describe,
    is_retryable,
)
from ..pricing import MONEY_CONTEXT

__all__ = [
    "LLMRetryPolicy",  # noqa: F822  (built lazily by __getattr__)
    "RetryVerdict",
    "aggregate_costs",
    "backoff_task_args",
    "backpressure_delay",
    "instance_rng",
    "llm_result",
    "on_failure",
    "on_retry",
    "on_success",
    "reschedule_on_backpressure",
    "retry_decision",
    "task_labels",
]

logger = logging.getLogger(__name__)  # llm_patterns.integrations.airflow

_WAIT_ERRORS = (RateLimitTimeout, CircuitOpenError)  # "not now", not "broken"


# --------------------------------------------------------------------------- identity, seeds


def task_labels(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"dag_id", "task_id", "run_id", "map_index", "try_number"}`` of the running task
    instance (``map_index`` -1 when not mapped); Nones without a context."""
    ti = None if context is None else context.get("ti") or context.get("task_instance")
    if ti is None:
        return {"dag_id": None, "task_id": None, "run_id": None, "map_index": -1,
                "try_number": None}
    map_index = getattr(ti, "map_index", -1)
    return {
        "dag_id": getattr(ti, "dag_id", None),
        "task_id": getattr(ti, "task_id", None),
        "run_id": getattr(ti, "run_id", None),
        "map_index": -1 if map_index is None else int(map_index),
        "try_number": getattr(ti, "try_number", None),
    }


def ledger_task_id(labels: Mapping[str, Any]) -> str | None:
    """The task label for the ledger: ``summarize[3]`` for a mapped instance (the ledger has
    no map_index column; Airflow's UI shows mapped instances the same way)."""
    task_id, map_index = labels.get("task_id"), labels.get("map_index", -1)
    if task_id is None or map_index is None or map_index < 0:
        return task_id
    return f"{task_id}[{map_index}]"


def instance_rng(dag_id: Any, task_id: Any, run_id: Any, map_index: Any, *,
                 seed: int | str = 0) -> random.Random:
    """A ``random.Random`` seeded by the task instance's identity (map_index included).

    Reproducible across processes and runs of the worker (str seeds are hashed with SHA-512,
    not Python's randomized ``hash``), different for every mapped instance: 8 mapped tasks that
    failed together spread their retries instead of coming back in the same second (Airflow's
    own backoff hashes dag_id, task_id, logical_date and try_number, not map_index).
    """
    return random.Random(f"{seed}|{dag_id}|{task_id}|{run_id}|{map_index}")


# --------------------------------------------------------------------------- retry decisions


class RetryVerdict:
    """``retry_decision``'s answer: ``action`` ("retry" | "fail"), ``delay`` seconds, ``reason``."""

    __slots__ = ("action", "delay", "reason")

    def __init__(self, action: str, delay: float | None, reason: str) -> None:
        self.action, self.delay, self.reason = action, delay, reason

    def __repr__(self) -> str:
        delay = "" if self.delay is None else f", delay={self.delay:.3f}"
        return f"RetryVerdict({self.action!r}{delay}, reason={self.reason!r})"


def _permanent(error: BaseException) -> bool:
    """Auth, quota, bad request, context window, content filter, budget: retrying won't help."""
    if isinstance(error, _WAIT_ERRORS):
        return False
    if isinstance(error, AllProvidersFailed):
        return bool(error.errors) and all(_permanent(e) for _, e in error.errors)
    return isinstance(error, LLMError) and not is_retryable(error)


def retry_decision(
    error: BaseException,
    try_number: int,
    *,
    backoff: BackoffPolicy,
    rng: random.Random,
    respect_retry_after: bool = True,
    max_retry_after: float | None = 600.0,
    unknown: str = "retry",
) -> RetryVerdict:
    """What to do after try ``try_number`` (1-based) failed with ``error``. Pure; no Airflow.

    - non-retryable (auth, quota, bad request, context window, content filter, budget; an
      ``AllProvidersFailed`` whose every error is one of those) -> "fail" at once;
    - a provider's Retry-After -> "retry" after exactly that long ("fail" when it is above
      ``max_retry_after``: a task should not sit for hours);
    - ``AllProvidersFailed``: the soonest any provider could answer: its Retry-After, its open
      breaker's cooldown, or (no hint) the backoff delay;
    - a single ``CircuitOpenError`` is retried with backoff (its cooldown is not a
      Retry-After: with a fallback chain another provider may answer sooner);
    - otherwise ``backoff`` (attempt ``try_number - 1``) drawn from ``rng``, which the caller
      seeds per task instance (``instance_rng``); the sequence is replayed from the seed, so
      decorrelated jitter sees its previous delay too;
    - exceptions that are not ours (a bug in the task, a KeyError ...): ``unknown`` = "retry"
      (with backoff), "fail" or "default" (Airflow's own retry_delay).
    """
    if unknown not in ("retry", "fail", "default"):
        raise ValueError(f"unknown must be 'retry', 'fail' or 'default', got {unknown!r}")
    if isinstance(try_number, bool) or not isinstance(try_number, int) or try_number < 1:
        raise ValueError(f"try_number must be an int >= 1, got {try_number!r}")
    what = describe(error, brief=True)
    if _permanent(error):
        return RetryVerdict("fail", None, f"{what} is not retryable: failing at once")
    delays = list(backoff.delays(try_number, rng))
    backoff_delay = delays[-1]
    if not isinstance(error, LLMError) and not isinstance(error, AllProvidersFailed):
        if unknown == "fail":
            return RetryVerdict("fail", None, f"{what} is not an LLM error: failing")
        if unknown == "default":
            return RetryVerdict("default", None, f"{what}: Airflow's own retry delay")
    if isinstance(error, AllProvidersFailed) and error.errors:
        candidates = []
        for _name, err in error.errors:
            ra = getattr(err, "retry_after", None)
            if respect_retry_after and ra is not None and ra > 0 and not _permanent(err):
                candidates.append(float(ra))
            else:
                candidates.append(backoff_delay)
        delay = min(candidates)
        source = "Retry-After" if delay != backoff_delay else "backoff"
        return RetryVerdict("retry", delay,
                            f"all providers failed: retry in {delay:.2f} s ({source})")
    ra = getattr(error, "retry_after", None)
    if (respect_retry_after and ra is not None and ra > 0
            and not isinstance(error, CircuitOpenError)):
        if max_retry_after is not None and ra > max_retry_after:
            return RetryVerdict("fail", None, f"{what} asks to retry after {ra:g} s, over "
                                              f"max_retry_after={max_retry_after:g} s")
        return RetryVerdict("retry", float(ra), f"{what}: retry in {ra:.2f} s (Retry-After)")
    return RetryVerdict("retry", backoff_delay,
                        f"{what}: retry in {backoff_delay:.2f} s (backoff, try {try_number})")


def backoff_task_args(backoff: BackoffPolicy, retries: int) -> dict[str, Any]:
    """``@task(**backoff_task_args(policy, 5))``: Airflow's own retries shaped like ``backoff``.

    ``retry_delay`` = base_delay, ``retry_exponential_backoff`` = multiplier (a float multiplier
    since Airflow 3.2), ``max_retry_delay`` = max_delay. Airflow then waits between
    ``ceil(base * m**(n-1))`` and twice that (whole seconds, at least 1) before try n+1, with a
    deterministic hash "jitter" that ignores map_index: prefer ``LLMRetryPolicy`` for mapped
    LLM tasks, which also honours Retry-After and fails non-retryable errors at once.
    """
    if not isinstance(backoff, BackoffPolicy):
        raise TypeError(f"backoff must be a BackoffPolicy, got {backoff!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be an int >= 0, got {retries!r}")
    args: dict[str, Any] = {
        "retries": retries,
        "retry_delay": timedelta(seconds=backoff.base_delay),
        "max_retry_delay": timedelta(seconds=backoff.max_delay),
    }
    # 0 would mean "no exponential backoff" to Airflow; a multiplier of 1 is the same thing
    args["retry_exponential_backoff"] = 0 if backoff.multiplier == 1.0 else float(
        backoff.multiplier)
    return args


# --------------------------------------------------------------------------- backpressure


def backpressure_delay(error: BaseException) -> float | None:
    """Seconds until the call could go through, if ``error`` only says "not now":

    a ``RateLimitTimeout`` (our limiter would wait past ``max_wait``), or an
    ``AllProvidersFailed`` where every provider said "not now" (limiter or open breaker):
    the soonest of their ``retry_after``. None for anything else (a real failure).
    """
    if isinstance(error, RateLimitTimeout):
        return max(0.0, float(error.retry_after or 0.0))
    if isinstance(error, AllProvidersFailed) and error.errors and all(
        isinstance(e, _WAIT_ERRORS) for _, e in error.errors
    ):
        waits = [float(ra) for _, e in error.errors
                 if (ra := getattr(e, "retry_after", None)) is not None]
        return max(0.0, min(waits)) if waits else None
    return None


@contextmanager
def reschedule_on_backpressure(
    context: Mapping[str, Any] | None = None,
    *,
    max_reschedules: int | None = 20,
    min_delay: float = 1.0,
    now: datetime | None = None,
) -> Iterator[None]:
    """Turn backpressure inside the block into ``AirflowRescheduleException``.

    When the block raises a ``RateLimitTimeout`` (or every provider said "not now"), the task
    is rescheduled ``ceil(max(wait, min_delay))`` seconds later: it gives its worker (and pool)
    slot back instead of sleeping in it, and the reschedule does not use up a retry. After
    ``max_reschedules`` (``context["task_reschedule_count"]``) the error propagates, so the
    retry policy decides and a task cannot bounce forever. Anything else propagates unchanged.
    """
    try:
        yield
    except (RateLimitTimeout, AllProvidersFailed) as error:
        wait = backpressure_delay(error)
        if wait is None:
            raise
        count = int((context or {}).get("task_reschedule_count") or 0)
        if max_reschedules is not None and count >= max_reschedules:
            logger.warning("backpressure: %d reschedules already; letting %s through to the "
                           "retry policy", count, type(error).__name__)
            raise
        delay = math.ceil(max(wait, min_delay))
        when = (now or datetime.now(UTC)) + timedelta(seconds=delay)
        labels = task_labels(context)
        logger.warning(
            "backpressure in %s.%s[%s]: limiter/breaker says wait %.2f s; rescheduling at %s "
            "(reschedule %d, the worker slot is given back, no retry used)",
            labels["dag_id"], labels["task_id"], labels["map_index"], wait,
            when.isoformat(timespec="seconds"), count + 1,
        )
        from airflow.exceptions import AirflowRescheduleException

        raise AirflowRescheduleException(reschedule_date=when) from error


# --------------------------------------------------------------------------- cost via XCom


def llm_result(response: Any, cost: Decimal | None, *, context: Mapping[str, Any] | None = None,
               **extra: Any) -> dict[str, Any]:
    """The JSON-safe dict an LLM task returns (its XCom): provider, model, usage, cost as a
    Decimal STRING (exact; floats would round), attempts, fallback_used, and the instance."""
    usage = response.usage
    labels = task_labels(context)
    return {
        "provider": response.provider,
        "model": response.model,
        "usage": {"prompt_tokens": usage.prompt_tokens,
                  "completion_tokens": usage.completion_tokens,
                  "cached_tokens": usage.cached_tokens},
        "cost": str(Decimal(0) if cost is None else cost),
        "attempts": response.attempts,
        "fallback_used": response.fallback_used,
        "try_number": labels["try_number"],
        "map_index": labels["map_index"],
        **extra,
    }


def aggregate_costs(results: Iterable[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Sum the XCom results of a run's LLM tasks exactly (Decimal): total, per provider and
    model, tokens, tasks, fallbacks. Money comes back as strings. A None (a skipped or failed
    upstream with ``trigger_rule="all_done"``) is counted as missing, not as $0 silently."""
    total = Decimal(0)
    by_provider: dict[str, Decimal] = {}
    by_model: dict[str, Decimal] = {}
    tokens = {"prompt_tokens": 0, "completion_tokens": 0}
    tasks = missing = fallbacks = attempts = 0
    for r in results:
        if r is None:
            missing += 1
            continue
        if "cost" not in r:
            raise ValueError(f"an LLM task result must carry 'cost', got keys {sorted(r)!r}")
        cost = Decimal(str(r["cost"]))
        if not cost.is_finite() or cost < 0:
            raise ValueError(f"cost must be a finite Decimal >= 0, got {r['cost']!r}")
        tasks += 1
        total = MONEY_CONTEXT.add(total, cost)
        for table, key in ((by_provider, r.get("provider")), (by_model, r.get("model"))):
            table[str(key)] = MONEY_CONTEXT.add(table.get(str(key), Decimal(0)), cost)
        for k in tokens:
            tokens[k] += int((r.get("usage") or {}).get(k, 0))
        fallbacks += bool(r.get("fallback_used"))
        attempts += int(r.get("attempts") or 0)
    return {
        "total": str(total),
        "by_provider": {k: str(v) for k, v in by_provider.items()},
        "by_model": {k: str(v) for k, v in by_model.items()},
        "tokens": tokens,
        "tasks": tasks,
        "missing": missing,
        "fallbacks": fallbacks,
        "attempts": attempts,
    }


# --------------------------------------------------------------------------- callbacks


def _where(context: Mapping[str, Any]) -> str:
    labels = task_labels(context)
    mi = labels["map_index"]
    return f"{labels['dag_id']}.{labels['task_id']}" + (f"[{mi}]" if mi >= 0 else "")


def _result_of(context: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ti = context.get("ti")
    if ti is None:
        return None
    try:
        value = ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index, key="return_value")
    except Exception:  # no XCom yet, or an API that differs: logging must never fail the task
        return None
    if isinstance(value, list) and len(value) == 1:  # some versions wrap a single pull
        value = value[0]
    return value if isinstance(value, Mapping) else None


def on_retry(context: Mapping[str, Any]) -> None:
    """``on_retry_callback``: "attempt 1/4 of dag.task[3] failed: ServerError 503 ..."."""
    ti = context.get("ti")
    error = context.get("exception")
    tries = getattr(ti, "max_tries", None)
    logger.warning(
        "attempt %s/%s of %s failed: %s: %s; Airflow retries it",
        getattr(ti, "try_number", "?"), "?" if tries is None else tries + 1, _where(context),
        type(error).__name__ if error is not None else "error", str(error)[:300],
    )


def on_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback``: the final failure, with every provider's error."""
    ti = context.get("ti")
    error = context.get("exception")
    detail = ""
    if isinstance(error, AllProvidersFailed):
        detail = " (" + "; ".join(f"{n}: {type(e).__name__}" for n, e in error.errors) + ")"
    logger.error("%s FAILED after %s attempt(s): %s%s", _where(context),
                 getattr(ti, "try_number", "?"),
                 type(error).__name__ if error is not None else "error", detail)


def on_success(context: Mapping[str, Any]) -> None:
    """``on_success_callback``: provider, cost, attempts of the task's XCom result."""
    ti = context.get("ti")
    r = _result_of(context) or {}
    logger.info(
        "%s succeeded on try %s: provider=%s model=%s attempts=%s fallback=%s cost=$%s",
        _where(context), getattr(ti, "try_number", "?"), r.get("provider"), r.get("model"),
        r.get("attempts"), r.get("fallback_used"), r.get("cost"),
    )


# --------------------------------------------------------------------------- the RetryPolicy


def _build_retry_policy_class() -> type:
    from airflow.sdk import RetryDecision, RetryPolicy

    class LLMRetryPolicy(RetryPolicy):
        """Airflow 3.3 ``RetryPolicy`` from the kit's classification (see ``retry_decision``).

        ``@task(retries=5, retry_policy=LLMRetryPolicy(BackoffPolicy(base_delay=2)))``.
        ``retries`` still caps the number of tries. The delay override is NOT capped by the
        task's ``max_retry_delay`` (Airflow applies it as is): cap with ``backoff.max_delay``
        and ``max_retry_after``. Evaluated in the worker, which has the exception object.
        """

        def __init__(self, backoff: BackoffPolicy | None = None, *,
                     respect_retry_after: bool = True, max_retry_after: float | None = 600.0,
                     unknown: str = "retry", seed: int | str = 0) -> None:
            if backoff is not None and not isinstance(backoff, BackoffPolicy):
                raise TypeError(f"backoff must be a BackoffPolicy or None, got {backoff!r}")
            if unknown not in ("retry", "fail", "default"):
                raise ValueError(f"unknown must be 'retry', 'fail' or 'default', got {unknown!r}")
            self.backoff = backoff or BackoffPolicy()
            self.respect_retry_after = bool(respect_retry_after)
            self.max_retry_after = max_retry_after
            self.unknown = unknown
            self.seed = seed

        def decide(self, exception: BaseException, try_number: int,
                   context: Mapping[str, Any] | None = None) -> RetryVerdict:
            labels = task_labels(context)
            rng = instance_rng(labels["dag_id"], labels["task_id"], labels["run_id"],
                               labels["map_index"], seed=self.seed)
            return retry_decision(
                exception, try_number, backoff=self.backoff, rng=rng,
                respect_retry_after=self.respect_retry_after,
                max_retry_after=self.max_retry_after, unknown=self.unknown,
            )

        def evaluate(self, exception: BaseException, try_number: int, max_tries: int,
                     context: Any = None) -> Any:
            verdict = self.decide(exception, try_number, context)
            where = _where(context) if context is not None else "task"
            if verdict.action == "fail":
                logger.error("%s try %d: %s", where, try_number, verdict.reason)
                return RetryDecision.fail(reason=verdict.reason)
            if verdict.action == "default":
                return RetryDecision.default()
            logger.warning("%s try %d/%d: %s", where, try_number, max_tries + 1, verdict.reason)
            return RetryDecision.retry(delay=timedelta(seconds=verdict.delay or 0.0),
                                       reason=verdict.reason)

        def serialize(self) -> dict[str, Any]:
            b = self.backoff
            return {"__type": f"{__name__}.LLMRetryPolicy",
                    "backoff": {"base_delay": b.base_delay, "multiplier": b.multiplier,
                                "max_delay": b.max_delay, "jitter": b.jitter},
                    "respect_retry_after": self.respect_retry_after,
                    "max_retry_after": self.max_retry_after, "unknown": self.unknown,
                    "seed": self.seed}

        @classmethod
        def deserialize(cls, data: dict[str, Any]) -> LLMRetryPolicy:
            return cls(BackoffPolicy(**data["backoff"]),
                       respect_retry_after=data["respect_retry_after"],
                       max_retry_after=data["max_retry_after"], unknown=data["unknown"],
                       seed=data["seed"])

        def __repr__(self) -> str:
            return (f"LLMRetryPolicy({self.backoff!r}, respect_retry_after="
                    f"{self.respect_retry_after}, max_retry_after={self.max_retry_after!r})")

    LLMRetryPolicy.__module__ = __name__
    return LLMRetryPolicy


def __getattr__(name: str) -> Any:
    """``LLMRetryPolicy`` is built on first use: it subclasses Airflow's ``RetryPolicy``, and
    importing Airflow takes seconds (and writes ``$AIRFLOW_HOME``)."""
    if name == "LLMRetryPolicy":
        cls = _build_retry_policy_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
