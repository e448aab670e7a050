"""Coalesce redraws: many events, at most one draw per ``interval``, and always the last state.

A component can emit thousands of events a second; a browser can show about ten frames. The
``Throttle`` marks the view dirty on every event and draws at most once per ``interval`` seconds
(of its own clock, real time by default, whatever clock the simulation runs on). An event inside
the interval schedules one deferred draw on the running asyncio loop, so the final state is
always drawn; ``flush()`` draws it at once (tests, the end of a run, a loop-less script).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from llm_patterns.clock import Clock, SystemClock

__all__ = ["Throttle"]

logger = logging.getLogger("llm_patterns.course.widgets")


class Throttle:
    """Call ``draw()`` at most once per ``interval`` seconds of ``clock``, never losing the last
    request. ``schedule=False`` disables the deferred draw (the next request or ``flush()``
    draws instead), which tests use with a ``VirtualClock``."""

    def __init__(self, draw: Callable[[], Any], interval: float = 0.1, *,
                 clock: Clock | None = None, schedule: bool = True) -> None:
        if not callable(draw):
            raise TypeError(f"draw must be callable, got {draw!r}")
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not (
                math.isfinite(interval) and interval >= 0):
            raise ValueError(f"interval must be a finite number of seconds >= 0, got {interval!r}")
        self._draw = draw
        self.interval = float(interval)
        self._now = (clock if clock is not None else SystemClock()).now
        self._schedule = schedule
        self._lock = threading.Lock()
        self._last = -math.inf
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None
        self.requests = 0  # how many times a draw was asked for
        self.draws = 0  # how many draws happened

    @property
    def pending(self) -> bool:
        """Whether a requested state has not been drawn yet."""
        return self._dirty

    def request(self) -> None:
        """Something changed: draw now if the interval has passed, else once it has."""
        with self._lock:
            self.requests += 1
            self._dirty = True
            now = self._now()
            wait = self._last + self.interval - now
            if wait > 0:
                if self._timer is None and self._schedule:
                    self._timer = _call_later(wait, self._on_timer)
                return
        self._run()

    def flush(self) -> None:
        """Draw the latest state now if it has not been drawn."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._run()

    def cancel(self) -> None:
        """Drop a scheduled draw (the view is going away)."""
        with self._lock:
            timer, self._timer = self._timer, None
            self._dirty = False
        if timer is not None:
            timer.cancel()

    def _on_timer(self) -> None:
        with self._lock:
            self._timer = None
        self._run()

    def _run(self) -> None:
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            self._last = self._now()
            self.draws += 1
        try:
            self._draw()
        except Exception:  # a broken view must not break the component it watches
            logger.exception("widget redraw %r failed", self._draw)


def _call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """``loop.call_later`` on this thread's running loop; None when there is none."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop.call_later(delay, callback)
