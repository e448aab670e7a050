"""Checks that give students kind, per-criterion feedback in the course notebooks (SPEC §6).

Each ``check_taskN`` runs named criteria against the student's code on a virtual clock, prints
"✓ criterion" or "✗ criterion — hint" for each, and raises :class:`CheckFailed` (an
``AssertionError``) listing the failures, so nbval fails exactly the check cell. ``grade.py``
runs whole notebooks and scores them per task.
"""

from __future__ import annotations

from ._framework import CheckFailed, CheckResult, Stopped, under_guard
from .task1_rate_limit import check_task1
from .task2_backoff import check_task2
from .task3_cost import check_task3
from .task4_fallback import check_task4
from .task5_circuit_breaker import check_task5
from .task7_chunking import check_task7

__all__ = [
    "CheckFailed",
    "CheckResult",
    "Stopped",
    "check_task1",
    "check_task2",
    "check_task3",
    "check_task4",
    "check_task5",
    "check_task7",
    "under_guard",
]
