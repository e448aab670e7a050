"""The budget machine: a hard limit on spend, with holds for calls in flight.

State (a plain dict, JSON-safe, kept by a store under the budget's key)::

    {"spent": int, "res": {reservation_id: [amount, expires_at]}}

Amounts are integers (``SharedBudget`` uses nano-USD): exact in JSON, in SQLite and in Lua's
doubles up to 2**53. Every operation first drops the holds whose time is up (a worker that died
mid-call frees its hold after ``ttl``), then answers ``(ok, spent, held, in_flight)``:

- ``reserve(state, rid, amount, limit, ttl, now)``: hold ``amount`` if ``spent + held + amount
  <= limit``; ``ok`` says whether it did. The check and the hold are one step, so concurrent
  callers can never all pass the same check (admission without reservation overshoots by the
  concurrency: LiteLLM #34732).
- ``settle(state, rid, actual, now)``: drop the hold ``rid`` and, unless ``actual`` is None (a
  release), add ``actual`` to the spend; ``ok`` says whether the hold was still live.
- ``read(state, now)``, ``reset(state)``.

The memory and SQLite stores run these inside their atomic step; ``RedisStore`` runs the same
operations in Lua (``state/redis.py``), held to them by the store contract tests.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_AMOUNT", "Answer", "check_amount", "new_budget", "read", "reserve", "reset",
           "settle"]

Answer = tuple[bool, int, int, int]
"""``(ok, spent, held, in_flight)``."""

MAX_AMOUNT = 2**53
"""The largest amount a budget holds exactly everywhere (Lua's doubles, JSON readers)."""


def check_amount(name: str, value: Any) -> int:
    """``value`` when it is an int in ``[0, MAX_AMOUNT]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (budget units), got {value!r}")
    if not 0 <= value <= MAX_AMOUNT:
        raise ValueError(f"{name} must be an int in [0, 2**53] (budget units), got {value!r}")
    return value


def new_budget() -> dict[str, Any]:
    """A budget nothing was spent from or held in."""
    return {"spent": 0, "res": {}}


def _purge(b: dict[str, Any], now: float) -> None:
    res = b["res"]
    expired = [rid for rid, (_, expires) in res.items() if expires <= now]
    for rid in expired:
        del res[rid]


def _answer(ok: bool, b: dict[str, Any]) -> Answer:
    return ok, b["spent"], sum(amount for amount, _ in b["res"].values()), len(b["res"])


def reserve(b: dict[str, Any], rid: str, amount: int, limit: int, ttl: float,
            now: float) -> Answer:
    """Hold ``amount`` under ``rid`` until ``now + ttl`` if it fits under ``limit``."""
    _purge(b, now)
    _, spent, held, _ = _answer(True, b)
    if spent + held + amount > limit:
        return _answer(False, b)
    b["res"][rid] = [amount, now + ttl]
    return _answer(True, b)


def settle(b: dict[str, Any], rid: str, actual: int | None, now: float) -> Answer:
    """Commit (``actual`` an int: the hold becomes that spend) or release (None) ``rid``."""
    _purge(b, now)
    live = b["res"].pop(rid, None) is not None
    if actual is not None:
        b["spent"] += actual
    return _answer(live, b)


def read(b: dict[str, Any], now: float) -> Answer:
    _purge(b, now)
    return _answer(True, b)


def reset(b: dict[str, Any]) -> Answer:
    b.clear()
    b.update(new_budget())
    return _answer(True, b)
