"""What every live widget shares: subscriptions, a redraw throttle, flush/refresh/close."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from llm_patterns.clock import Clock
from llm_patterns.events import Event

from ._throttle import Throttle

__all__ = ["LEVEL_COLORS", "LiveView", "esc", "fmt_num", "level_style"]

# colour by level: plenty / getting low / nearly empty (and the same for the breaker states)
LEVEL_COLORS = {"success": "#2e9d4f", "warning": "#e6a019", "danger": "#d6453d", "info": "#3b7dd8"}


def level_style(fraction: float | None) -> str:
    """``success`` above half, ``warning`` above a fifth, ``danger`` below: the bar colour."""
    if fraction is None:
        return "info"
    if fraction >= 0.5:
        return "success"
    if fraction >= 0.2:
        return "warning"
    return "danger"


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_num(value: float | None) -> str:
    """A readable level: ``12``, ``1.5``, ``840``, ``38.4k``, ``-120`` (a debt), ``–`` if
    unknown."""
    if value is None:
        return "–"
    if abs(value) >= 10_000:
        return f"{value / 1000:,.1f}k"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value - round(value)) < 0.05:
        return f"{round(value):d}"
    return f"{value:.1f}"


class LiveView:
    """Mixin for an ipywidgets container that follows event sources.

    Subclasses call ``_lp_setup`` in ``__init__``, ``_lp_listen(source)`` for each source,
    update cheap bookkeeping in ``_on_event`` and rebuild the view in ``_draw``. Events only
    mark the view dirty; the throttle draws at most every ``interval`` seconds (default 0.1,
    about 10 frames a second) and always draws the last state.
    """

    _lp_throttle: Throttle
    _lp_unsubs: list[Callable[[], None]]

    def _lp_setup(self, interval: float, redraw_clock: Clock | None, schedule: bool) -> None:
        self._lp_unsubs = []
        self._lp_throttle = Throttle(self._draw, interval, clock=redraw_clock, schedule=schedule)

    def _lp_listen(self, source: Any) -> None:
        self._lp_unsubs.append(source.subscribe(self._lp_event))

    def _lp_event(self, event: Event) -> None:
        self._on_event(event)
        self._lp_throttle.request()

    def _on_event(self, event: Event) -> None:
        """Cheap bookkeeping per event (no drawing)."""

    def _draw(self) -> None:  # pragma: no cover - every widget overrides it
        raise NotImplementedError

    # -- public ------------------------------------------------------------------------------
    @property
    def draws(self) -> int:
        """How many times the view was redrawn (the throttle's count)."""
        return self._lp_throttle.draws

    def refresh(self) -> None:
        """Ask for a redraw (throttled), e.g. from a timer while nothing else happens."""
        self._lp_throttle.request()

    def flush(self) -> None:
        """Draw the latest state now (tests, the end of a run)."""
        self._lp_throttle.flush()

    def follow(self, source: Any) -> None:
        """Follow one source from now on (a student's own object is adapted by ``watch``)."""
        from .adapters import watch  # adapters build on this module

        self.detach()
        self.source = watch(source)
        self._lp_listen(self.source)
        self.refresh()
        self.flush()

    def detach(self) -> None:
        """Stop following the current sources."""
        for unsubscribe in getattr(self, "_lp_unsubs", ()):
            unsubscribe()
        self._lp_unsubs = []

    def close(self) -> None:  # ipywidgets' close, plus unsubscribing
        self.detach()
        throttle = getattr(self, "_lp_throttle", None)
        if throttle is not None:
            throttle.cancel()
        super().close()  # type: ignore[misc]

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        # ipywidgets cuts text/plain at 110 characters; ours are short and deterministic
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        if isinstance(data, dict):
            data["text/plain"] = repr(self)
        return bundle
