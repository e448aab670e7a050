"""Auditing a SQLite store's grants log (``SQLiteStateStore(log_grants=True)``) against a limit.

A token bucket of capacity ``C`` refilling at ``r`` per second can never have charged more than
``C + r * (t_j - t_i)`` between the moment just before event ``i`` (its level was at most ``C``)
and just after a paid grant ``j`` (its level was still at least 0: with an explicit
``burst_seconds`` nothing above capacity is ever admitted). Settle rows count with their sign:
a debt charged after the call adds to the window, a give-back frees room, and the log records
the full give-back while the bucket caps it at capacity, so the logged sum can only be lower
than what the bucket saw: a correct limiter never fails this audit, and one that granted too
much does. Used by ``test_state_grants_log.py`` and the Airflow scheduler test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llm_patterns.state import Limit
from llm_patterns.state.sqlite import GrantRow


def charge(row: GrantRow, kind: str) -> float:
    """What ``row`` charged a bucket of ``kind`` (negative: given back)."""
    if kind == "requests":
        return row.requests
    if kind == "tokens":
        return row.input_tokens + row.output_tokens
    if kind == "input_tokens":
        return row.input_tokens
    if kind == "output_tokens":
        return row.output_tokens
    raise ValueError(f"kind must be a bucket kind, got {kind!r}")


@dataclass(frozen=True)
class Window:
    """The fullest window ending at a grant: what it charged, what the bucket allows."""

    start: float
    end: float
    charged: float
    allowed: float

    @property
    def over(self) -> float:
        return self.charged - self.allowed


def windows(rows: Sequence[GrantRow], limit: Limit) -> list[Window]:
    """For every grant ``j``, the window ``[row i, grant j]`` charging the most relative to
    what the bucket allows (``C + r * length``)."""
    prefix = [0.0]
    for row in rows:
        prefix.append(prefix[-1] + charge(row, limit.kind))
    out = []
    for j, last in enumerate(rows):
        if last.op != "grant":
            continue
        worst: Window | None = None
        for i in range(j + 1):
            w = Window(rows[i].at, last.at, prefix[j + 1] - prefix[i],
                       limit.capacity + limit.rate * (last.at - rows[i].at))
            if worst is None or w.over > worst.over:
                worst = w
        assert worst is not None
        out.append(worst)
    return out


def violations(rows: Sequence[GrantRow], limit: Limit) -> list[Window]:
    """The windows where the log charged more than the bucket allows (float slack 1e-6)."""
    slack = 1e-6 * max(1.0, limit.capacity)
    return [w for w in windows(rows, limit) if w.over > slack]


def fullest(rows: Sequence[GrantRow], limit: Limit) -> Window:
    """The window closest to (or furthest over) the limit: shows the limit was binding."""
    return max(windows(rows, limit), key=lambda w: w.over)
