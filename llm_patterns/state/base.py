"""The state-store protocol: the few ATOMIC operations a shared limiter and breaker need.

A rate limiter or a circuit breaker held in one process's memory protects nothing once a
pipeline runs in many processes (Airflow workers): each has its own bucket and its own breaker.
A ``StateStore`` keeps that state in one place and changes it only through operations that are
atomic where the state lives, so two processes can never spend the same token or both take the
single half-open probe:

| operation | what it does, atomically |
|---|---|
| ``acquire(key, buckets, now)`` | refill every bucket, then take ``amount`` from ALL of them or from none; 0.0 = taken, else the seconds until it could be (a pause counts) |
| ``adjust(key, bucket, delta, now)`` | add (give back, capped at capacity) or charge (may go negative: a debt) |
| ``lower(key, bucket, ceiling, now)`` | level = min(level, ceiling) (a provider's ``x-ratelimit-remaining``) |
| ``pause(key, seconds, now)`` | nobody acquires until ``seconds`` from now (a 429's Retry-After); a longer pause is kept |
| ``levels(key, buckets, now)`` | read the refilled levels and the pause left |
| ``breaker_admit(key, config, now)`` | closed: admit; open: reject with retry_after; due or half-open: hand out one of ``half_open_max_calls`` probe LEASES (each expires after ``probe_timeout``, so a crashed probe cannot wedge the breaker) |
| ``breaker_record(key, config, outcome, generation, lease, now)`` | success / failure / ignored, with threshold and cooldown semantics |
| ``breaker_release(key, lease)`` | give a probe lease back (an interrupted or ignored trial) |
| ``breaker_read(key, config, now)`` / ``breaker_force(key, config, state, now)`` | snapshot; operator reset / trip |

Time is explicit: every operation takes ``now`` (seconds on the store's time base); ``None``
means "the store's clock, read inside the atomic step". SQLite (one host): the store's clock,
by default wall time (``time.time``), shared by every process on the host and meaningful across
reboots; read inside the write transaction, so grants are ordered. Redis (many hosts; issue 8):
the server's ``TIME`` inside the Lua script, so workers with skewed clocks share one rate; a
Redis store should ignore or reject a caller's ``now``.

The semantics live here once, as pure functions over plain dicts (``bucket_acquire``,
``breaker_admit`` ...). The memory and SQLite stores run them under their lock / inside one
``BEGIN IMMEDIATE`` transaction; a Redis store ports the same functions to Lua, and
``tests/test_state_sqlite.py`` states the behaviour any implementation must have.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..clock import SystemClock

__all__ = [
    "Admission",
    "BreakerConfig",
    "BreakerOutcome",
    "Bucket",
    "StateStore",
    "WallClock",
    "breaker_admit",
    "breaker_force",
    "breaker_read",
    "breaker_record",
    "breaker_release",
    "bucket_acquire",
    "bucket_adjust",
    "bucket_levels",
    "bucket_lower",
    "bucket_pause",
    "new_breaker_state",
    "new_bucket_state",
]

_REL_EPS = 1e-9  # float slack as a fraction of capacity, as in rate_limit.py
_MIN_RETRY_AFTER = 0.001


class WallClock(SystemClock):
    """Wall time (``time.time``): one time base for every process on a host, across reboots.

    Sleeping is the system clock's; only the reading differs (monotonic time is per boot).
    """

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "WallClock()"


class Bucket(NamedTuple):
    """One token bucket of a key: ``capacity``, ``refill_per_s`` and the ``amount`` to take.

    The store keeps only the level and the time of the last refill; the shape travels with
    every call (so two limiters configured alike share one bucket, and a store needs no schema).
    """

    name: str
    capacity: float
    refill_per_s: float
    amount: float = 0.0


@dataclass(frozen=True)
class BreakerConfig:
    """What a breaker operation needs to know about the breaker (sent with every call)."""

    failure_threshold: int = 5
    reset_timeout: float = 60.0
    half_open_max_calls: int = 1
    probe_timeout: float = 60.0


@dataclass(frozen=True)
class Admission:
    """``breaker_admit``'s answer: ``allowed``; the ``state`` it was admitted or refused in;
    the breaker ``generation`` (bumped on every transition: a result from an older episode is
    stale); the probe ``lease`` (half-open only); ``retry_after`` when refused; ``transition``
    (old, new) if this call moved the breaker (open -> half-open)."""

    allowed: bool
    state: str
    generation: int
    lease: str | None = None
    retry_after: float = 0.0
    transition: tuple[str, str] | None = None


@dataclass(frozen=True)
class BreakerOutcome:
    """``breaker_record``'s answer: the state after the call and the transitions it caused."""

    state: str
    consecutive_failures: int
    transitions: tuple[tuple[str, str], ...] = ()


@runtime_checkable
class StateStore(Protocol):
    """Atomic shared state for ``SharedRateLimiter`` and ``SharedCircuitBreaker``.

    ``clock`` is the store's time base (used when ``now`` is None); ``url`` names the store.
    """

    url: str
    clock: Any

    def acquire(self, key: str, buckets: Sequence[Bucket], now: float | None = None) -> float: ...

    def adjust(self, key: str, bucket: Bucket, delta: float, now: float | None = None) -> float: ...

    def lower(self, key: str, bucket: Bucket, ceiling: float, now: float | None = None) -> float: ...

    def pause(self, key: str, seconds: float, now: float | None = None) -> float: ...

    def levels(
        self, key: str, buckets: Sequence[Bucket], now: float | None = None
    ) -> dict[str, float]: ...

    def breaker_admit(
        self, key: str, config: BreakerConfig, now: float | None = None
    ) -> Admission: ...

    def breaker_record(
        self,
        key: str,
        config: BreakerConfig,
        outcome: str,
        *,
        generation: int | None = None,
        lease: str | None = None,
        error: str | None = None,
        now: float | None = None,
    ) -> BreakerOutcome: ...

    def breaker_release(self, key: str, lease: str) -> None: ...

    def breaker_read(
        self, key: str, config: BreakerConfig, now: float | None = None
    ) -> dict[str, Any]: ...

    def breaker_force(
        self, key: str, config: BreakerConfig, state: str, now: float | None = None
    ) -> BreakerOutcome: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- validation


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty str, got {key!r}")
    return key


def check_bucket(bucket: Any) -> Bucket:
    try:
        b = Bucket(*bucket)
    except TypeError:
        raise TypeError(
            f"bucket must be (name, capacity, refill_per_s[, amount]), got {bucket!r}"
        ) from None
    if not isinstance(b.name, str) or not b.name:
        raise ValueError(f"bucket name must be a non-empty str, got {b.name!r}")
    for field, value, positive in (
        ("capacity", b.capacity, True), ("refill_per_s", b.refill_per_s, True),
        ("amount", b.amount, False),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
            value
        ) or value < 0 or (positive and value == 0):
            want = "> 0" if positive else ">= 0"
            raise ValueError(f"bucket {b.name!r}: {field} must be a finite number {want}, "
                             f"got {value!r}")
    if b.amount > b.capacity:
        raise ValueError(
            f"bucket {b.name!r}: amount={b.amount:g} is more than its capacity={b.capacity:g}: "
            "it could never be taken"
        )
    return b


def check_finite(name: str, value: Any, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    return float(value)


OUTCOMES = ("success", "failure", "ignored")
STATES = ("closed", "open", "half_open")


# --------------------------------------------------------------------------- buckets (pure)
# State of one limiter key: {"b": {name: [level, last]}, "pause": until}


def new_bucket_state() -> dict[str, Any]:
    return {"b": {}, "pause": -math.inf}


def _refill(state: dict[str, Any], b: Bucket, now: float) -> list[float]:
    entry = state["b"].get(b.name)
    if entry is None:  # a new bucket starts full
        entry = state["b"][b.name] = [float(b.capacity), now]
    level, last = entry
    if now > last:
        level = min(float(b.capacity), level + (now - last) * b.refill_per_s)
    elif level > b.capacity:  # the capacity was lowered by a re-configuration
        level = float(b.capacity)
    # a clock that stepped back (now < last) refills nothing but never stalls the bucket
    entry[0], entry[1] = level, now
    return entry


def bucket_acquire(state: dict[str, Any], buckets: Sequence[Bucket], now: float) -> float:
    """All-or-nothing take; 0.0 if taken, else the seconds until every bucket could pay."""
    wait = max(0.0, state.get("pause", -math.inf) - now)
    entries = []
    for b in buckets:
        entry = _refill(state, b, now)
        entries.append(entry)
        deficit = b.amount - entry[0]
        if deficit > b.capacity * _REL_EPS:
            wait = max(wait, deficit / b.refill_per_s)
    if wait > 0.0:
        return wait
    for b, entry in zip(buckets, entries):
        entry[0] -= b.amount
    return 0.0


def bucket_adjust(state: dict[str, Any], b: Bucket, delta: float, now: float) -> float:
    entry = _refill(state, b, now)
    entry[0] = min(float(b.capacity), entry[0] + delta) if delta > 0 else entry[0] + delta
    return entry[0]


def bucket_lower(state: dict[str, Any], b: Bucket, ceiling: float, now: float) -> float:
    entry = _refill(state, b, now)
    entry[0] = min(entry[0], ceiling)
    return entry[0]


def bucket_pause(state: dict[str, Any], seconds: float, now: float) -> float:
    until = now + seconds
    if until > state.get("pause", -math.inf):
        state["pause"] = until
    return max(0.0, state["pause"] - now)


def bucket_levels(state: dict[str, Any], buckets: Sequence[Bucket], now: float) -> dict[str, float]:
    out = {b.name: _refill(state, b, now)[0] for b in buckets}
    out["pause_remaining"] = max(0.0, state.get("pause", -math.inf) - now)
    return out


# --------------------------------------------------------------------------- breaker (pure)

_COUNTERS = ("calls", "successes", "failures", "ignored_errors", "rejections", "opened_count")


def new_breaker_state(now: float) -> dict[str, Any]:
    return {
        "state": "closed", "consecutive": 0, "opened_at": 0.0, "generation": 0,
        "changed_at": now, "leases": {}, "last_error": None, **dict.fromkeys(_COUNTERS, 0),
    }


def _transition(s: dict[str, Any], new: str, at: float, out: list[tuple[str, str]]) -> None:
    old = s["state"]
    s["state"] = new
    s["generation"] += 1
    s["leases"] = {}
    s["changed_at"] = at
    if new == "closed":
        s["consecutive"] = 0
    if new == "open":
        s["opened_at"] = at
        s["opened_count"] += 1
    out.append((old, new))


def _breaker_refresh(s: dict[str, Any], cfg: BreakerConfig, now: float,
                     out: list[tuple[str, str]]) -> str:
    """The lazy OPEN -> HALF_OPEN move (stamped when it became due); drop expired leases."""
    if s["state"] == "open" and now >= s["opened_at"] + cfg.reset_timeout:
        _transition(s, "half_open", s["opened_at"] + cfg.reset_timeout, out)
    if s["leases"]:
        s["leases"] = {k: v for k, v in s["leases"].items() if v > now}
    return s["state"]


def breaker_admit(s: dict[str, Any], cfg: BreakerConfig, now: float) -> Admission:
    moved: list[tuple[str, str]] = []
    state = _breaker_refresh(s, cfg, now, moved)
    transition = moved[-1] if moved else None
    if state == "closed":
        s["calls"] += 1
        return Admission(True, state, s["generation"], transition=transition)
    if state == "half_open":
        if len(s["leases"]) < cfg.half_open_max_calls:
            lease = uuid.uuid4().hex
            s["leases"][lease] = now + cfg.probe_timeout
            s["calls"] += 1
            return Admission(True, state, s["generation"], lease, transition=transition)
        retry_after = max(_MIN_RETRY_AFTER, min(s["leases"].values()) - now)
    else:
        retry_after = max(_MIN_RETRY_AFTER, s["opened_at"] + cfg.reset_timeout - now)
    s["rejections"] += 1
    return Admission(False, state, s["generation"], None, retry_after, transition)


def breaker_record(s: dict[str, Any], cfg: BreakerConfig, outcome: str, generation: int | None,
                   lease: str | None, error: str | None, now: float) -> BreakerOutcome:
    """Settle one admitted call. ``generation``/``lease`` None: the caller has no token (the
    manual protocol); the result then counts for the current episode."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    moved: list[tuple[str, str]] = []
    state = _breaker_refresh(s, cfg, now, moved)
    if lease is None and state == "half_open" and generation is None and s["leases"]:
        lease = next(iter(s["leases"]))  # manual protocol: the oldest live probe
    current = (generation is None or generation == s["generation"]) and (
        state != "half_open" or lease is None or lease in s["leases"]
    )
    if state == "half_open" and lease is not None:
        s["leases"].pop(lease, None)
    if outcome == "failure":
        s["last_error"] = error
    if outcome == "success":
        s["successes"] += 1
        if current and state != "open":
            s["consecutive"] = 0
            if state == "half_open":
                _transition(s, "closed", now, moved)
    elif outcome == "ignored":
        s["ignored_errors"] += 1
    else:
        s["failures"] += 1
        if current and state != "open":
            s["consecutive"] += 1
            if state == "half_open" or s["consecutive"] >= cfg.failure_threshold:
                _transition(s, "open", now, moved)
    return BreakerOutcome(s["state"], s["consecutive"], tuple(moved))


def breaker_release(s: dict[str, Any], lease: str) -> None:
    s["leases"].pop(lease, None)


def breaker_force(s: dict[str, Any], cfg: BreakerConfig, state: str, now: float) -> BreakerOutcome:
    if state not in ("open", "closed"):
        raise ValueError(f"state must be 'open' or 'closed', got {state!r}")
    moved: list[tuple[str, str]] = []
    _breaker_refresh(s, cfg, now, moved)
    if state == "closed":
        s["consecutive"] = 0
        if s["state"] != "closed":
            _transition(s, "closed", now, moved)
    elif s["state"] == "open":  # a fresh cooldown, no transition
        s["opened_at"] = now
        s["opened_count"] += 1
        s["generation"] += 1
    else:
        _transition(s, "open", now, moved)
    return BreakerOutcome(s["state"], s["consecutive"], tuple(moved))


def breaker_read(s: dict[str, Any], cfg: BreakerConfig, now: float) -> dict[str, Any]:
    moved: list[tuple[str, str]] = []
    state = _breaker_refresh(s, cfg, now, moved)
    retry_in = max(0.0, s["opened_at"] + cfg.reset_timeout - now) if state == "open" else 0.0
    return {
        "state": state,
        "consecutive_failures": s["consecutive"],
        "retry_in": retry_in,
        "generation": s["generation"],
        "trials_in_flight": len(s["leases"]),
        "last_error": s["last_error"],
        "last_state_change": s["changed_at"],
        **{k: s[k] for k in _COUNTERS},
        "transitions": tuple(moved),
    }
