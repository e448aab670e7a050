"""``watch(obj)``: make a student's own TokenBucket / RateLimiter / CircuitBreaker / CostTracker
emit the same events as the library's classes, so every widget works on it.

The student classes from the course tasks have no events. ``watch`` wraps their public methods
on the instance (``consume``; ``acquire``; ``can_execute``/``allow_request``,
``record_success``, ``record_failure``; ``record``) so that each call also emits an ``Event``
after it returns. Behaviour is unchanged: arguments, return values and exceptions pass through.

    bucket = TokenBucket(capacity=10, refill_rate=1, clock=clock)   # the student's class
    gauge = BucketGauge(bucket)            # calls watch(bucket) for you
    for _ in range(15):
        bucket.consume(1)                  # the gauge follows

``unwatch()`` on the adapter restores the original methods. A class with ``__slots__`` (the
library's own ``TokenBucket``) cannot be patched: then call through the adapter instead
(``w = watch(bucket); w.consume(1)``), which forwards to the object and emits the events.
Levels are read through the object's public attributes (``tokens`` / ``available``,
``capacity``, ``state``, ``failure_count`` ...), never private ones.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from llm_patterns.course.grading._student import alert_threshold
from llm_patterns.events import Observable

__all__ = ["Watched", "WatchedBreaker", "WatchedBucket", "WatchedCostTracker", "watch"]

_ATTR = "_lp_watcher"


def _number(value: Any) -> float | None:
    if callable(value):
        value = value()
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    return float(value)


def _read(obj: Any, *names: str) -> float | None:
    for name in names:
        try:
            value = getattr(obj, name)
        except Exception:  # a property that raises (e.g. NotImplementedError) reads as missing
            continue
        number = _number(value)
        if number is not None:
            return number
    return None


def _now_of(obj: Any) -> float:
    clock = getattr(obj, "clock", None) or getattr(obj, "_clock", None)
    now = getattr(clock, "now", None)
    if callable(now):
        try:
            return float(now())
        except Exception:
            pass
    return 0.0


class Watched(Observable):
    """Base of the adapters: wraps methods on the watched instance, restores them on unwatch."""

    def __init__(self, obj: Any, *, name: str = "") -> None:
        self.obj = obj
        self.name = name or str(getattr(obj, "name", "") or "")
        self.patched = True
        self._originals: dict[str, Callable[..., Any]] = {}
        self._lock = threading.Lock()

    def _wrap(self, method: str, after: Callable[..., None]) -> None:
        original = getattr(self.obj, method)

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = self._before(method)
            try:
                result = original(*args, **kwargs)
            except BaseException:
                self._failed_call(method)
                raise
            after(result, before, *args, **kwargs)
            return result

        self._originals[method] = original
        setattr(self, method, wrapper)  # the adapter always forwards
        try:
            object.__setattr__(self.obj, method, wrapper)
        except (AttributeError, TypeError):
            self.patched = False  # __slots__: call through the adapter instead

    def _before(self, method: str) -> Any:
        return None

    def _failed_call(self, method: str) -> None:
        pass

    def unwatch(self) -> None:
        """Put the original methods back on the object."""
        if self.patched:
            for method in self._originals:
                try:
                    delattr(self.obj, method)
                except AttributeError:
                    pass
        try:
            delattr(self.obj, _ATTR)
        except (AttributeError, TypeError):
            pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.obj).__name__}, name={self.name!r})"


class WatchedBucket(Watched):
    """A student's ``TokenBucket`` (``consume``) or ``RateLimiter`` (``acquire``) as a
    ``rate_limit`` event source with a ``status()`` like ``RateLimiter.status()``."""

    _event_source = "rate_limit"

    def __init__(self, obj: Any, *, name: str = "") -> None:
        super().__init__(obj, name=name)
        self.waiting = 0
        self._buckets = self._find_buckets(obj)
        if callable(getattr(obj, "consume", None)):
            self._wrap("consume", self._after_consume)
        if callable(getattr(obj, "acquire", None)):
            self._wrap("acquire", self._after_acquire)
        if not self._originals:
            raise TypeError(f"watch() needs a bucket with consume() or a limiter with acquire(), "
                            f"got {obj!r}")

    @staticmethod
    def _find_buckets(obj: Any) -> dict[str, Any]:
        """{"requests": bucket, "tokens": bucket}: the object itself, or its bucket attributes."""
        if callable(getattr(obj, "consume", None)):
            return {"tokens": obj}
        found: dict[str, Any] = {}
        for attr, value in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else ():
            if attr.startswith("_") or not callable(getattr(value, "consume", None)):
                continue
            kind = "requests" if "req" in attr.lower() or "rpm" in attr.lower() else "tokens"
            found.setdefault(kind, value)
        return found

    def _before(self, method: str) -> Any:
        if method == "acquire":
            with self._lock:
                self.waiting += 1
        return None

    def _failed_call(self, method: str) -> None:
        if method == "acquire":
            with self._lock:
                self.waiting -= 1

    def _levels(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for kind in ("requests", "tokens"):
            bucket = self._buckets.get(kind)
            out[f"{kind}_available"] = (None if bucket is None
                                        else _read(bucket, "tokens", "available"))
            out[f"{kind}_capacity"] = None if bucket is None else _read(bucket, "capacity")
        return out

    def _after_consume(self, result: Any, _before: Any, n: Any = 1, *a: Any, **kw: Any) -> None:
        levels = self._levels()
        self._emit("acquire" if result else "reject", _now_of(self.obj), tokens=n,
                   requests_available=levels["requests_available"],
                   tokens_available=levels["tokens_available"])

    def _after_acquire(self, result: Any, _before: Any, tokens: Any = 0, *a: Any,
                       **kw: Any) -> None:
        with self._lock:
            self.waiting -= 1
        levels = self._levels()
        self._emit("acquire", _now_of(self.obj), tokens=tokens, waited=_number(result),
                   requests_available=levels["requests_available"],
                   tokens_available=levels["tokens_available"])

    def status(self) -> dict[str, Any]:
        """The same keys as ``RateLimiter.status()`` that the gauge reads."""
        return {"name": self.name, **self._levels(), "waiting": self.waiting,
                "penalty_remaining": 0.0}


def _state(value: Any) -> str:
    text = str(getattr(value, "value", value)).lower().replace("-", "_").replace(" ", "_")
    if "." in text:  # an Enum without a str value: "CircuitState.OPEN"
        text = text.rsplit(".", 1)[1]
    return text


class WatchedBreaker(Watched):
    """A student's ``CircuitBreaker`` (``can_execute``/``allow_request``, ``record_success``,
    ``record_failure``, ``state``) as a ``breaker`` event source with a ``health()``."""

    _event_source = "breaker"

    def __init__(self, obj: Any, *, name: str = "") -> None:
        super().__init__(obj, name=name)
        self._own_failures = 0
        self._opened_at: float | None = None
        self._rejections = 0
        self._last_state = self._read_state()
        for method in ("can_execute", "allow_request"):
            if callable(getattr(obj, method, None)):
                self._wrap(method, self._after_admit)
        for method, after in (("record_success", self._after_success),
                              ("record_failure", self._after_failure)):
            if callable(getattr(obj, method, None)):
                self._wrap(method, after)
        if not self._originals:
            raise TypeError(f"watch() needs a breaker with can_execute()/record_failure(), "
                            f"got {obj!r}")

    def _read_state(self) -> str:
        try:
            return _state(self.obj.state)
        except Exception:
            return "closed"

    def _failures(self) -> int:
        n = _read(self.obj, "consecutive_failures", "failure_count", "failures", "_failure_count")
        return int(n) if n is not None else self._own_failures

    def _changed(self, now: float) -> None:
        new = self._read_state()
        old, self._last_state = self._last_state, new
        if new != old:
            if new == "open":
                self._opened_at = now
            self._emit("state_change", now, old=old, new=new,
                       consecutive_failures=self._failures())

    def _after_admit(self, result: Any, _before: Any, *a: Any, **kw: Any) -> None:
        now = _now_of(self.obj)
        self._changed(now)
        if not result:
            self._rejections += 1
            self._emit("rejected", now, retry_in=self._retry_in(now), state=self._last_state)

    def _after_success(self, _result: Any, _before: Any, *a: Any, **kw: Any) -> None:
        now = _now_of(self.obj)
        self._own_failures = 0
        self._emit("success", now)
        self._changed(now)

    def _after_failure(self, _result: Any, _before: Any, *a: Any, **kw: Any) -> None:
        now = _now_of(self.obj)
        self._own_failures += 1
        self._emit("failure", now, consecutive_failures=self._failures(), error_type=None)
        self._changed(now)

    def _retry_in(self, now: float) -> float:
        if self._last_state != "open":
            return 0.0
        reset = _read(self.obj, "reset_timeout", "recovery_timeout")
        opened = _read(self.obj, "opened_at", "last_failure_time")
        if opened is None:
            opened = self._opened_at
        if reset is None or opened is None:
            return 0.0
        return max(0.0, opened + reset - now)

    def health(self) -> dict[str, Any]:
        """The keys of ``CircuitBreaker.health()`` that the light reads."""
        now = _now_of(self.obj)
        self._last_state = self._read_state()
        threshold = _read(self.obj, "failure_threshold", "threshold")
        return {"name": self.name, "state": self._last_state,
                "consecutive_failures": self._failures(),
                "failure_threshold": None if threshold is None else int(threshold),
                "retry_in": self._retry_in(now), "rejections": self._rejections}


class WatchedCostTracker(Watched):
    """A student's ``CostTracker`` (``record``, ``total``, ``budget``) as a ``cost`` source."""

    _event_source = "cost"

    def __init__(self, obj: Any, *, name: str = "") -> None:
        super().__init__(obj, name=name)
        self._wrap("record", self._after_record)

    def _after_record(self, result: Any, _before: Any, *a: Any, **kw: Any) -> None:
        s = self.summary()
        self._emit("record", _now_of(self.obj), cost=result, total=s["total"], budget=s["budget"])

    def summary(self) -> dict[str, Any]:
        total = _read(self.obj, "total") or 0.0
        budget = _read(self.obj, "budget")
        alert_at: Any = (getattr(self.obj, "alert_thresholds", None)
                         or getattr(self.obj, "alert_at", ()))
        alerts = getattr(self.obj, "alerts", None) or ()
        return {"name": self.name, "total": total, "budget": budget,
                "alert_at": tuple(float(t) for t in alert_at),
                "alerts": [t for a in ((alerts() if callable(alerts) else alerts) or ())
                           if (t := alert_threshold(a)) is not None]}


def watch(obj: Any, *, name: str = "") -> Any:
    """An event source for ``obj``: the object itself when it already emits events (the
    library's RateLimiter, CircuitBreaker, CostTracker ...), else an adapter (see the module
    docstring). Watching the same object twice returns the same adapter."""
    if isinstance(obj, (Observable,)):
        return obj
    existing = getattr(obj, _ATTR, None)
    if isinstance(existing, Watched):
        return existing
    if any(callable(getattr(obj, m, None)) for m in ("can_execute", "allow_request")):
        adapter: Watched = WatchedBreaker(obj, name=name)
    elif callable(getattr(obj, "consume", None)) or callable(getattr(obj, "acquire", None)):
        adapter = WatchedBucket(obj, name=name)
    elif callable(getattr(obj, "record", None)) and hasattr(obj, "total"):
        adapter = WatchedCostTracker(obj, name=name)
    else:
        raise TypeError(
            f"watch() got {type(obj).__name__}, expected a token bucket (consume), a rate "
            f"limiter (acquire), a circuit breaker (can_execute/record_failure) or a cost "
            f"tracker (record/total)")
    try:
        object.__setattr__(obj, _ATTR, adapter)
    except (AttributeError, TypeError):
        pass
    return adapter
