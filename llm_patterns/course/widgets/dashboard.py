"""``Dashboard``: the live instructor dashboard, every widget plus the controls of a
``LiveDemo``."""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from llm_patterns.clock import Clock
from llm_patterns.events import Event

from ..simulation import PRIMARY, SECONDARY
from ._base import LEVEL_COLORS
from .board import DEFAULT_SKIP, EventLog, ProviderBoard
from .breaker import BreakerLight
from .gauges import BucketGauge, CostMeter
from .timeline import TimelineFigure

__all__ = ["Dashboard"]

LOG_SKIP = DEFAULT_SKIP | {"client.response", "fallback.success", "cost.record",
                           "breaker.rejected", "breaker.failure", "fallback.failure"}

_STYLE = """<style>
.lp-dashboard { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; }
.lp-dashboard .widget-label { font-size: 13px; }
.lp-card { background: #fff; border-radius: 6px; }
.lp-dashboard .jupyter-button { border-radius: 5px; font-weight: 600; }
</style>"""


def _card(*children: W.Widget, **layout: Any) -> W.VBox:
    box = W.VBox(list(children), layout=W.Layout(border="1px solid #d9dee5", padding="6px 10px",
                                                 margin="4px", **layout))
    box.add_class("lp-card")
    return box


class Dashboard(W.VBox):
    """Controls and live views of a ``LiveDemo``: rate, limits, error rate, budget, speed,
    take the primary down / bring it back, reset; bucket gauges, breaker lights, the cost
    meter, the provider board, the timeline chart and the event log. ``flush()`` draws every
    view now. The views re-attach when the demo rebuilds its pieces."""

    def __init__(self, demo: Any, *, interval: float = 0.1, redraw_clock: Clock | None = None,
                 schedule: bool = True, window: float = 60.0, log_size: int = 10,
                 width: int | None = 980) -> None:
        super().__init__()
        self.add_class("lp-dashboard")
        self.demo = demo
        opts: dict[str, Any] = dict(interval=interval, redraw_clock=redraw_clock,
                                    schedule=schedule)
        self.gauges = {PRIMARY: BucketGauge(demo.limiters[PRIMARY],
                                            title="primary limiter", **opts),
                       SECONDARY: BucketGauge(demo.limiters[SECONDARY],
                                              title="secondary limiter", **opts)}
        self.lights = {name: BreakerLight(demo.breakers[name], title=f"{name} breaker", **opts)
                       for name in (PRIMARY, SECONDARY)}
        self.cost = CostMeter(demo.cost, title="spend vs budget", **opts)
        self.board = ProviderBoard(demo.client, **opts)
        slow = dict(opts, interval=max(interval, 0.25))  # the chart: 4 frames a second is plenty
        self.timeline = TimelineFigure(demo.client, window=window, height=480, width=width,
                                       **slow)
        self.event_log = EventLog(*self._log_sources(), size=log_size, skip=LOG_SKIP,
                            origin=demo.started_at, **opts)
        self.views = [*self.gauges.values(), *self.lights.values(), self.cost, self.board,
                      self.timeline, self.event_log]
        self._build_controls()
        self.status = W.HTML()
        self.status.add_class("lp-status")
        header = W.HBox([W.HTML("<div style='font-size:20px;font-weight:700'>LLM resilience "
                                "· live</div><div style='color:#666;font-size:12px'>two mock "
                                "providers behind ResilientClient: rate limiter → retry → "
                                "breaker → fallback → cost</div>"), self.status],
                        layout=W.Layout(justify_content="space-between", align_items="center",
                                        padding="0 6px"))
        gauges = W.GridBox(
            [self.gauges[PRIMARY], self.lights[PRIMARY], self.gauges[SECONDARY],
             self.lights[SECONDARY]],  # one row per provider: its limiter, its breaker
            layout=W.Layout(grid_template_columns="minmax(300px, 1.4fr) minmax(240px, 1fr)",
                            width="100%"))
        money = W.GridBox([self.board, self.cost],
                          layout=W.Layout(grid_template_columns="minmax(440px, 1.6fr) "
                                                                "minmax(260px, 1fr)",
                                          width="100%"))
        self.children = (W.HTML(_STYLE), header, self.controls, gauges, money, self.timeline,
                         self.event_log)
        self._unsubscribe = demo.subscribe(self._on_demo)
        self._update_status()

    # -- controls -------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        demo, s = self.demo, self.demo.scenario
        style = {"description_width": "92px"}
        wide = W.Layout(width="300px")
        self.rate = W.FloatSlider(value=s.request_rate, min=0.5, max=30.0, step=0.5,
                                  description="requests/s", continuous_update=False,
                                  style=style, layout=wide, readout_format=".1f")
        self.rpm = W.IntSlider(value=s.primary_rpm, min=10, max=600, step=10,
                               description="primary RPM", continuous_update=False, style=style,
                               layout=wide)
        self.tpm = W.IntSlider(value=s.primary_tpm, min=5_000, max=300_000, step=5_000,
                               description="primary TPM", continuous_update=False, style=style,
                               layout=wide)
        self.error_rate = W.FloatSlider(value=s.error_rate, min=0.0, max=0.5, step=0.01,
                                        description="error rate", continuous_update=False,
                                        style=style, layout=wide, readout_format=".0%")
        self.budget = W.FloatSlider(value=s.budget, min=0.05, max=5.0, step=0.05,
                                    description="budget $", continuous_update=False,
                                    style=style, layout=wide, readout_format=".2f")
        speed = getattr(demo.clock, "speed", 1.0)
        self.speed = W.ToggleButtons(options=[("1×", 1.0), ("10×", 10.0)],
                                     value=10.0 if speed >= 10 else 1.0, description="speed",
                                     style={"description_width": "50px", "button_width": "60px"},
                                     disabled=not hasattr(demo.clock, "set_speed"))
        self.down = W.Button(description="take primary down", button_style="danger",
                             icon="plug", layout=W.Layout(width="180px"))
        self.up = W.Button(description="bring it back", button_style="success",
                           icon="check", layout=W.Layout(width="150px"))
        self.reset = W.Button(description="reset", button_style="warning", icon="refresh",
                              layout=W.Layout(width="100px"))
        for button in (self.down, self.up, self.reset):
            button.add_class("lp-button")
        self.down.add_class("lp-take-down")
        self.up.add_class("lp-bring-up")
        self.reset.add_class("lp-reset")
        self.rate.observe(lambda ch: demo.set_rate(ch["new"]), "value")
        self.rpm.observe(lambda ch: demo.set_limits(rpm=ch["new"]), "value")
        self.tpm.observe(lambda ch: demo.set_limits(tpm=ch["new"]), "value")
        self.error_rate.observe(lambda ch: demo.set_error_rate(ch["new"]), "value")
        self.budget.observe(lambda ch: demo.set_budget(ch["new"]), "value")
        self.speed.observe(lambda ch: demo.set_speed(ch["new"]), "value")
        self.down.on_click(lambda _b: demo.take_down())
        self.up.on_click(lambda _b: demo.bring_up())
        self.reset.on_click(lambda _b: demo.reset())
        self.controls = _card(
            W.HBox([W.VBox([self.rate, self.error_rate]), W.VBox([self.rpm, self.tpm]),
                    W.VBox([self.budget, self.speed])], layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.down, self.up, self.reset], layout=W.Layout(margin="4px 0 0 96px")))

    # -- following the demo ----------------------------------------------------------------------
    def _log_sources(self) -> list[Any]:
        d = self.demo
        return [d, *d.breakers.values(), d.client, d.client.chain, *d.limiters.values(), d.cost]

    def _on_demo(self, event: Event) -> None:
        if event.kind == "rebuild":
            self.reattach()
        elif event.kind == "tick":
            self._update_status(event.data)
        if event.kind in ("control", "tick", "rebuild"):
            for view in self.views:
                view.refresh()
            if event.kind != "tick":
                self._update_status()

    def reattach(self) -> None:
        """Point every view at the demo's current pieces (after a reset or new limits)."""
        d = self.demo
        for name, gauge in self.gauges.items():
            gauge.attach(d.limiters[name])
        for name, light in self.lights.items():
            light.attach(d.breakers[name])
        self.cost.attach(d.cost)
        self.board.attach(d.client)
        self.timeline.attach(d.client)
        self.event_log.origin = d.started_at
        self.event_log.attach(*self._log_sources())

    def _update_status(self, stats: dict[str, Any] | None = None) -> None:
        s = stats or self.demo.stats()
        down = s["primary_down"]
        shed = f" · shed <b>{s['shed']}</b>" if s["shed"] else ""
        primary = (f"<b style='color:{LEVEL_COLORS['danger']}'>primary DOWN</b>" if down else
                   f"<b style='color:{LEVEL_COLORS['success']}'>primary up</b>")
        self.status.value = (
            f"<div style='font-size:13px;text-align:right;font-variant-numeric:tabular-nums'>"
            f"{primary} · t = <b>{s['elapsed']:.1f} s</b> · speed <b>{s['speed']:g}×</b> · "
            f"<b>{s['rate']:g}</b> req/s<br>sent <b class='lp-sent'>{s['sent']}</b> · answered "
            f"<b>{s['succeeded']}</b> · failed <b>{s['failed']}</b> · in flight "
            f"<b>{s['in_flight']}</b>{shed}"
            f"</div>")

    def flush(self) -> None:
        """Draw every view now."""
        for view in self.views:
            view.flush()
        self._update_status()

    def close(self) -> None:
        unsubscribe = getattr(self, "_unsubscribe", None)
        if unsubscribe is not None:
            unsubscribe()
        for view in getattr(self, "views", []):
            view.close()
        super().close()

    def __repr__(self) -> str:
        return f"Dashboard({self.demo!r})"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = repr(self)
        return bundle
