"""Instrumentation hooks: components announce what they do; widgets, logs and metrics listen.

Every pattern (limiter, retry, breaker, cost tracker, fallback chain, client) is an
``Observable``: ``subscribe(callback)`` registers ``callback(event)`` and returns a function that
unsubscribes it. Emitting with no subscribers costs one attribute check, and a callback that
raises is logged and never breaks the call it watches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "Observable"]

logger = logging.getLogger("llm_patterns.events")


@dataclass(frozen=True)
class Event:
    """One thing that happened: ``source`` is the component kind ("rate_limit", "retry",
    "breaker", "cost", "fallback", "client"), ``name`` its instance name, ``kind`` the verb."""

    source: str
    name: str
    kind: str
    time: float
    data: dict[str, Any] = field(default_factory=dict)


Subscriber = Callable[[Event], None]


class Observable:
    """Mixin: ``subscribe`` / ``emit``. Subclasses set ``_event_source`` and have ``name``."""

    _event_source = "component"
    _subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` on every event from now on; returns an unsubscribe function."""
        lock = self.__dict__.setdefault("_subscribers_lock", threading.Lock())
        with lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    @property
    def observed(self) -> bool:
        """Whether anyone listens: a hot path skips building an event's data when not."""
        return bool(self._subscribers)

    def emit(self, kind: str, time: float, **data: Any) -> None:
        """Send ``kind`` (at ``time``, with ``data``) to every subscriber."""
        subscribers = self._subscribers
        if not subscribers:
            return
        event = _new_event(self._event_source, getattr(self, "name", "") or "", kind, time, data)
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken listener must not break the call it watches
                logger.exception("event subscriber %r failed on %s.%s",
                                 callback, event.source, kind)

    _emit = emit  # the name the components use on themselves


def _new_event(source: str, name: str, kind: str, time: float, data: dict[str, Any]) -> Event:
    """``Event(...)`` without the frozen dataclass's five ``object.__setattr__`` calls: the
    fields go straight into the instance dict (the same object, built at every emit)."""
    event = object.__new__(Event)
    event.__dict__.update(source=source, name=name, kind=kind, time=time, data=data)
    return event
