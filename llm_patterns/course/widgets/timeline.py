"""``TimelineFigure``: the run's timelines (bucket level, breaker state, latency, cost) as a
live plotly ``FigureWidget``, built by the same ``charts.timeline_figure`` as the static
report, and fed by the components' events through a ``simulation.Timeline``."""

from __future__ import annotations

import bisect
from typing import Any

import ipywidgets as W

from llm_patterns.clock import Clock
from llm_patterns.events import Event

from ..charts import STATE_LEVEL, timeline_figure
from ..simulation import Timeline
from ._base import LiveView

__all__ = ["TimelineFigure"]


def _trim(points: list[tuple[float, Any]], start: float) -> None:
    """Drop points before ``start``, keeping the last one before it (a step line starts there)."""
    i = bisect.bisect_left(points, start, key=lambda p: p[0])
    if i > 1:
        del points[: i - 1]


class TimelineFigure(LiveView, W.VBox):
    """Live four-row chart of a ``ResilientClient``'s run over the last ``window`` seconds.

    Rows: requests available in each limiter, each breaker's state, latency of each answer by
    provider, cost so far against the budget. Follows the client's limiters, breakers, cost
    tracker and its own events; redraws (one batched plotly update) at most every
    ``interval`` seconds. ``figure`` is the ``plotly.graph_objects.FigureWidget``.
    """

    def __init__(self, client: Any, *, window: float = 120.0, height: int = 600,
                 width: int | None = None, title: str = "", interval: float = 0.1,
                 redraw_clock: Clock | None = None,
                 schedule: bool = True) -> None:
        import plotly.graph_objects as go

        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        W.VBox.__init__(self)
        self.add_class("lp-timeline")
        self._lp_setup(interval, redraw_clock, schedule)
        self.window = float(window)
        self.providers = [p.name for p in client.providers]
        cost = getattr(client, "cost", None)
        budget = None if cost is None or cost.budget is None else float(cost.budget)
        fig = timeline_figure(Timeline(keep_log=False), providers=self.providers, budget=budget,
                              title=title)
        if width is not None:  # the widget cannot always measure its container when first drawn
            fig.update_layout(width=width)
        fig.update_layout(height=height, uirevision="live", margin={"t": 40, "b": 30, "l": 50,
                                                                     "r": 10},
                          legend={"orientation": "h", "y": -0.06})
        fig.update_annotations(font_size=12)
        self.figure = go.FigureWidget(fig)
        self._index = {trace.name: i for i, trace in enumerate(self.figure.data)}
        self.children = (self.figure,)
        self.client: Any = None
        self.attach(client)

    def attach(self, client: Any) -> None:
        """Follow another client (the chart starts again), or the same one again after some of
        its pieces were replaced (the history stays)."""
        self.detach()
        now = client.clock.now()
        if client is not self.client:
            self.client = client
            self.timeline = Timeline(keep_log=False)
            self.latest = now
            self.start = now
        for name, breaker in getattr(client, "breakers", {}).items():
            self.timeline.series[f"{name}.state"].append((now, str(breaker.health()["state"])))
        for name, limiter in getattr(client, "limiters", {}).items():
            status = limiter.status()
            self.timeline.series[f"{name}.requests"].append((now, status["requests_available"]))
        for source in (*getattr(client, "limiters", {}).values(),
                       *getattr(client, "breakers", {}).values(), client):
            self._lp_listen(source)
        if getattr(client, "cost", None) is not None:
            self._lp_listen(client.cost)
        self.refresh()
        self.flush()

    def _on_event(self, e: Event) -> None:
        self.timeline(e)
        self.latest = max(self.latest, e.time)

    def arrays(self) -> dict[str, tuple[list[float], list[Any]]]:
        """Trace name -> (x, y) as drawn now (the last ``window`` seconds)."""
        series = self.timeline.series
        start = self.latest - self.window
        for points in series.values():
            _trim(points, start)
        out: dict[str, tuple[list[float], list[Any]]] = {}
        for name in self.providers:
            pts = series.get(f"{name}.requests", [])
            out[f"{name} bucket"] = ([round(t, 3) for t, _ in pts],
                                     [None if v is None else round(v, 3) for _, v in pts])
            states = list(series.get(f"{name}.state", []))
            if states:
                states.append((self.latest, states[-1][1]))
            out[f"{name} breaker"] = ([round(t, 3) for t, _ in states],
                                      [STATE_LEVEL.get(v, 0) for _, v in states])
        answers, latencies = series.get("provider", []), series.get("latency", [])
        for name in self.providers:
            pts = [(t, lat) for (t, p), (_, lat) in zip(answers, latencies) if p == name]
            out[f"answered by {name}"] = ([round(t, 3) for t, _ in pts],
                                          [round(v, 3) for _, v in pts])
        cost = series.get("cost", [])
        out["cost"] = ([round(t, 3) for t, _ in cost], [round(v, 6) for _, v in cost])
        return out

    def _draw(self) -> None:
        arrays = self.arrays()
        fig = self.figure
        cost = getattr(self.client, "cost", None)
        budget = None if cost is None or cost.budget is None else float(cost.budget)
        lo = max(self.start, self.latest - self.window)
        hi = max(self.latest, lo + 1.0)
        with fig.batch_update():
            for name, (x, y) in arrays.items():
                i = self._index.get(name)
                if i is not None:
                    fig.data[i].x = x
                    fig.data[i].y = y
            fig.layout.xaxis4.range = [lo, hi]
            if budget is not None and fig.layout.shapes:
                shape = fig.layout.shapes[-1]
                if shape.y0 != budget:
                    shape.y0 = shape.y1 = budget
                    for ann in fig.layout.annotations:
                        if ann.text == "budget":
                            ann.y = budget

    def __repr__(self) -> str:
        counts = {name: len(x) for name, (x, _) in self.arrays().items()}
        points = sum(counts.values())
        return (f"TimelineFigure(providers={self.providers!r}, window={self.window:g}, "
                f"points={points})")
