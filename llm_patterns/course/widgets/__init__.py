"""Live views of the patterns for Jupyter and Voila (ipywidgets 8, anywidget, plotly).

Every widget subscribes to a component's events (``Observable.subscribe``), never polls, and
redraws at most about ten times a second while always drawing the final state (``flush()``
draws it at once). They take the library's classes or a student's own (see :func:`watch`).

- ``BucketGauge(limiter)``: RPM and TPM levels, coloured by level, and the queue of waiters.
- ``BreakerLight(breaker)``: CLOSED / OPEN / HALF-OPEN badge, failures, countdown to half-open.
- ``CostMeter(tracker)``: spend vs budget, alert thresholds marked, alerts fired.
- ``ProviderBoard(client)``: who answers, fallbacks, per-provider health.
- ``EventLog(*sources)``: the last N events, one line each.
- ``TimelineFigure(client)``: a plotly FigureWidget of the run's timelines.
- ``Dashboard(demo)``: all of them with the controls of a ``live.LiveDemo``.
"""

from __future__ import annotations

from ._throttle import Throttle
from .adapters import WatchedBreaker, WatchedBucket, WatchedCostTracker, watch
from .board import EventLog, ProviderBoard, format_event
from .breaker import BreakerLight
from .dashboard import Dashboard
from .gauges import BucketGauge, CostMeter
from .timeline import TimelineFigure

__all__ = [
    "BreakerLight",
    "BucketGauge",
    "CostMeter",
    "Dashboard",
    "EventLog",
    "ProviderBoard",
    "Throttle",
    "TimelineFigure",
    "WatchedBreaker",
    "WatchedBucket",
    "WatchedCostTracker",
    "format_event",
    "watch",
]
