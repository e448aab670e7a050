"""The state-store protocol: the few ATOMIC operations a shared limiter and breaker need.

A rate limiter or a circuit breaker held in one process's memory protects nothing once a
pipeline runs in many processes (Airflow workers): each has its own bucket and its own breaker.
A ``StateStore`` keeps that state in one place and changes it only through operations that are
atomic where the state lives, so two processes can never spend the same token or both take the
single half-open probe:

- ``limiter_acquire(key, limits, demand, ticket=, lease=, max_wait=)``: first come, first
  served across processes: the caller's ticket (None: a newcomer) is renewed, expired tickets
  dropped; the head of the queue pays ALL buckets or none. A ``Grant``: 0.0 = paid, else the
  projected wait and the caller's ticket (None: refused past ``max_wait``, nothing queued).
- ``limiter_leave(key, ticket)``: a waiter gave up: its ticket leaves the queue.
- ``limiter_settle(key, limits, estimated, actual, ratio)``: charge the excess (may go
  negative: a debt) or give back (capped at capacity); learn the estimate ratio.
- ``limiter_lower(key, limits, ceilings)``: level = min(level, ceiling) per bucket kind (a
  provider's ``x-ratelimit-remaining``).
- ``limiter_pause(key, limits, seconds)``: nobody is admitted until ``seconds`` from now (a
  429's Retry-After; at most ``MAX_PAUSE``); a longer pause is kept.
- ``limiter_levels(key, limits)``: the refilled levels, the pause left, the learned ratio, the
  queue's length.
- ``breaker_admit(key, config)``: closed: admit; open: reject with ``retry_after``; due or
  half-open: hand out one of ``half_open_max_calls`` trial LEASES (each expires after
  ``probe_timeout``, so a crashed probe cannot wedge the breaker). An ``Admission``.
- ``breaker_record(key, config, outcome, generation, lease, error)``: success / failure /
  ignored, with threshold and cooldown semantics. A ``BreakerOutcome``.
- ``breaker_release(key, config, lease)``: give a trial lease back (an interrupted call).
- ``breaker_read(key, config)``: a ``BreakerSnapshot``; ``breaker_force(key, config, state)``:
  an operator's reset / trip.

Time is explicit: every operation takes ``now`` (seconds on the store's time base); ``None``
means "the store's clock, read inside the atomic step". SQLite (one host): the store's clock,
by default wall time (``time.time``), shared by every process on the host and meaningful across
reboots; read inside the write transaction, so grants are ordered. Redis (many hosts; issue 8):
the server's ``TIME`` inside the Lua script, so workers with skewed clocks share one rate; a
Redis store should ignore or reject a caller's ``now``.

The semantics live once, in the pure machines: the limiter's in ``machines.bucket`` (run by
``limiter_*`` below), the breaker's in ``machines.breaker`` (``run_breaker`` below; every
breaker answer carries the machine's ``changes``). The memory and SQLite stores run them under
their lock / inside one ``BEGIN IMMEDIATE`` transaction over a JSON record; a Redis store ports
them to Lua, and ``tests/test_state_sqlite.py`` and ``tests/test_breaker_machine.py`` state the
behaviour any implementation must have.

``blocking``: whether an operation may wait on I/O or a lock (SQLite, Redis): async callers run
those in a worker thread, never on the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from .._validate import real
from ..clock import SystemClock
from ..machines.breaker import (
    Admission,
    BreakerConfig,
    BreakerOutcome,
    BreakerSnapshot,
    Circuit,
    check_outcome,
)
from ..machines.bucket import KINDS, Buckets, Limit, new_record, queue_leave, queue_step

__all__ = [
    "Admission",
    "BreakerConfig",
    "BreakerOutcome",
    "BreakerSnapshot",
    "Grant",
    "Limit",
    "StateStore",
    "WallClock",
    "check_config",
    "check_outcome",
    "limiter_acquire",
    "limiter_leave",
    "limiter_levels",
    "limiter_lower",
    "limiter_pause",
    "limiter_settle",
    "new_bucket_state",
    "run_breaker",
]

Demand3 = tuple[float, float, float]  # a limiter demand: (requests, input tokens, output tokens)
T = TypeVar("T")
DEFAULT_LEASE = 2.0  # seconds a queue ticket outlives its holder's expected return


class WallClock(SystemClock):
    """Wall time (``time.time``): one time base for every process on a host, across reboots.

    Sleeping is the system clock's; only the reading differs (monotonic time is per boot).
    """

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "WallClock()"


@runtime_checkable
class StateStore(Protocol):
    """Atomic shared state for ``SharedRateLimiter`` and ``SharedCircuitBreaker``.

    ``clock`` is the store's time base (used when ``now`` is None); ``url`` names the store;
    ``blocking`` says whether its operations may wait on I/O or a lock.
    """

    url: str
    clock: Any
    blocking: bool

    # -- limiter (the token-bucket machine, ``machines.bucket``)
    def limiter_acquire(self, key: str, limits: Sequence[Limit], demand: Demand3, *,
                        ticket: str | None = None, lease: float = DEFAULT_LEASE,
                        max_wait: float | None = None, now: float | None = None) -> Grant: ...

    def limiter_leave(self, key: str, ticket: str) -> None: ...

    def limiter_settle(self, key: str, limits: Sequence[Limit], estimated: Demand3,
                       actual: Demand3, ratio: float = 1.0,
                       now: float | None = None) -> dict[str, float]: ...

    def limiter_lower(self, key: str, limits: Sequence[Limit], ceilings: Mapping[str, float],
                      now: float | None = None) -> dict[str, float]: ...

    def limiter_pause(self, key: str, limits: Sequence[Limit], seconds: float,
                      now: float | None = None) -> float: ...

    def limiter_levels(self, key: str, limits: Sequence[Limit],
                       now: float | None = None) -> dict[str, float]: ...

    # -- breaker (the circuit machine, ``machines.breaker``)
    def breaker_admit(self, key: str, config: BreakerConfig,
                      now: float | None = None) -> Admission: ...

    def breaker_record(self, key: str, config: BreakerConfig, outcome: str,
                       generation: int | None = None, lease: str | None = None,
                       error: str | None = None, now: float | None = None) -> BreakerOutcome: ...

    def breaker_release(self, key: str, config: BreakerConfig, lease: str,
                        now: float | None = None) -> BreakerOutcome: ...

    def breaker_read(self, key: str, config: BreakerConfig,
                     now: float | None = None) -> BreakerSnapshot: ...

    def breaker_force(self, key: str, config: BreakerConfig, state: str,
                      now: float | None = None) -> BreakerOutcome: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- validation


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty str, got {key!r}")
    return key


def check_limits(limits: Any) -> tuple[Limit, ...]:
    """A limiter's shape: a non-empty sequence of ``Limit`` of distinct kinds."""
    if isinstance(limits, Limit) or not isinstance(limits, (list, tuple)) or not limits or \
            not all(isinstance(x, Limit) for x in limits):
        raise TypeError(f"limits must be a non-empty sequence of Limit, got {limits!r}")
    kinds = [x.kind for x in limits]
    if len(set(kinds)) != len(kinds) or not set(kinds) <= set(KINDS):
        raise ValueError(f"limits must be of distinct kinds among {KINDS}, got {kinds}")
    for x in limits:
        for field in ("per_minute", "capacity", "ceiling"):
            check_finite(f"limit {x.kind}: {field}", getattr(x, field), minimum=0.0)
        if not (x.per_minute > 0 and x.capacity > 0 and x.ceiling >= x.capacity):
            raise ValueError(f"limit {x.kind}: per_minute and capacity must be > 0 and ceiling "
                             f">= capacity, got {x!r}")
    return tuple(limits)


def check_demand(name: str, demand: Any) -> Demand3:
    """``(requests, input tokens, output tokens)``, each a finite number >= 0."""
    if not isinstance(demand, (tuple, list)) or len(demand) != 3:
        raise TypeError(f"{name} must be (requests, input_tokens, output_tokens), got {demand!r}")
    req, inp, out = (check_finite(f"{name}[{i}]", x, minimum=0.0) for i, x in enumerate(demand))
    return req, inp, out


def check_finite(name: str, value: Any, *, minimum: float | None = None) -> float:
    """A finite number (>= ``minimum``): TypeError for a non-number, ValueError otherwise."""
    return real(name, value, minimum=minimum)


def check_ticket(ticket: Any) -> str | None:
    if ticket is not None and (not isinstance(ticket, str) or not ticket):
        raise TypeError(f"ticket must be a str from limiter_acquire or None, got {ticket!r}")
    return ticket





# --------------------------------------------------------------------------- limiter (pure)
# A limiter key's state is a ``machines.bucket`` record (``new_record()``): per bucket kind
# [level, last refill], the pause, the learned ratio's sums, the FIFO ticket queue. Each
# operation loads the machine from it at ``now``, runs one transition and saves it back.

class Grant(NamedTuple):
    """``limiter_acquire``'s answer: ``wait`` 0.0 when paid, else the projected seconds until
    the caller's turn; ``ticket`` the caller's place in the queue (None when paid, or when
    refused past ``max_wait``: nothing queued); ``ratio`` the learned estimate ratio the demand
    was (or will be) charged with; ``waiting`` the queue's length after the call; ``at`` the
    store's time of the decision."""

    wait: float
    ticket: str | None
    ratio: float
    waiting: int
    at: float


def new_bucket_state() -> dict[str, Any]:
    """A new limiter key's record."""
    return new_record()


def _machine(record: dict[str, Any], limits: Sequence[Limit], now: float) -> Buckets:
    m = Buckets(limits, now)
    m.load(record, now)
    return m


def _levels(m: Buckets, record: dict[str, Any], now: float) -> dict[str, float]:
    out = m.levels_by_kind()
    out["pause_remaining"] = max(0.0, m.pause_until - now)
    out["ratio"] = m.ratio
    out["waiting"] = float(sum(1 for t in record.get("q", ()) if t[1] > now))
    return out


def limiter_acquire(record: dict[str, Any], limits: Sequence[Limit], demand: Demand3,
                    ticket: str | None, new_ticket: str, lease: float, max_wait: float | None,
                    now: float) -> Grant:
    m = _machine(record, limits, now)
    ratio = m.ratio
    wait, mine = queue_step(m, record, demand, ticket, new_ticket, lease, max_wait, now)
    m.save(record)
    return Grant(wait, mine, ratio, len(record["q"]), now)


def limiter_leave(record: dict[str, Any], ticket: str) -> None:
    queue_leave(record, ticket)


def limiter_settle(record: dict[str, Any], limits: Sequence[Limit], estimated: Demand3,
                   actual: Demand3, ratio: float, now: float) -> dict[str, float]:
    m = _machine(record, limits, now)
    m.settle(estimated, actual, now, ratio)
    m.save(record)
    return _levels(m, record, now)


def limiter_lower(record: dict[str, Any], limits: Sequence[Limit],
                  ceilings: Mapping[str, float], now: float) -> dict[str, float]:
    m = _machine(record, limits, now)
    m.lower(ceilings, now)
    m.save(record)
    return _levels(m, record, now)


def limiter_pause(record: dict[str, Any], limits: Sequence[Limit], seconds: float,
                  now: float) -> float:
    m = _machine(record, limits, now)
    remaining = m.pause(seconds, now)
    m.save(record)
    return remaining


def limiter_levels(record: dict[str, Any], limits: Sequence[Limit],
                   now: float) -> dict[str, float]:
    m = _machine(record, limits, now)
    m.save(record)
    return _levels(m, record, now)


# --------------------------------------------------------------------------- breaker
# A breaker key's state is a ``machines.breaker`` record (``Circuit.save``; {} for a new key).
# Each operation loads the machine from it with the caller's config, runs one transition and
# saves it back.


def check_config(config: Any) -> BreakerConfig:
    if not isinstance(config, BreakerConfig):
        raise TypeError(f"config must be a BreakerConfig, got {config!r}")
    return config


def check_lease(lease: Any, *, optional: bool = False) -> str | None:
    if lease is None and optional:
        return None
    if not isinstance(lease, str) or not lease:
        raise TypeError(f"lease must be a str from breaker_admit, got {lease!r}")
    return lease


def run_breaker(record: dict[str, Any], config: BreakerConfig, now: float,
                op: Callable[[Circuit], T]) -> T:
    """``op`` on the machine of ``record`` (at ``now``), the record updated."""
    m = Circuit.from_record(config, record, now)
    result = op(m)
    m.save(record)
    return result
