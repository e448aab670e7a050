"""``BreakerLight``: a circuit breaker's state badge, failure count and countdown to half-open.

An anywidget: the countdown ticks in the browser between updates (at the clock's speed: 10x
under a ``ScaledClock(10)``, frozen on a ``VirtualClock``), so it moves smoothly with no kernel
round trips, and snaps to the breaker's own number on every event.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets as t

from llm_patterns.clock import Clock, ScaledClock, VirtualClock

from ._base import LiveView

__all__ = ["LABELS", "BreakerLight"]

LABELS = {"closed": "CLOSED", "open": "OPEN", "half_open": "HALF-OPEN"}

_ESM = r"""
const LABELS = {closed: "CLOSED", open: "OPEN", half_open: "HALF-OPEN"};
const TRAITS = ["name", "state", "failures", "threshold", "retry_in", "speed", "rejections",
                "stamp"];

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function render({ model, el: host }) {
  host.classList.add("lp-breaker");
  const card = el("div", "lp-breaker-card");
  const head = el("div", "lp-breaker-head");
  const title = el("span", "lp-breaker-name");
  const badge = el("span", "lp-breaker-badge");
  head.append(title, badge);
  const failures = el("div", "lp-breaker-failures");
  const countdown = el("div", "lp-breaker-countdown");
  card.append(head, failures, countdown);
  host.appendChild(card);
  let base = performance.now();

  function tick() {
    const state = model.get("state");
    if (state !== "open") {
      countdown.textContent = state === "half_open" ? "trial call allowed"
                                                    : "calls pass through";
      return;
    }
    const elapsed = (performance.now() - base) / 1000 * (model.get("speed") || 0);
    const left = Math.max(0, model.get("retry_in") - elapsed);
    countdown.textContent = "half-open in " + left.toFixed(1) + " s";
  }

  function draw() {
    const state = model.get("state");
    title.textContent = model.get("name") || "breaker";
    badge.textContent = LABELS[state] || String(state).toUpperCase();
    badge.dataset.state = state;
    card.dataset.state = state;
    const threshold = model.get("threshold");
    failures.textContent = "consecutive failures: " + model.get("failures") +
      (threshold ? " / " + threshold : "") + " \u00b7 rejected: " + model.get("rejections");
    base = performance.now();
    tick();
  }

  for (const name of TRAITS) model.on("change:" + name, draw);
  draw();
  const timer = setInterval(tick, 100);
  return () => {
    clearInterval(timer);
    for (const name of TRAITS) model.off("change:" + name, draw);
  };
}
export default { render };
"""

_CSS = r"""
.lp-breaker-card { border: 1px solid #d9dee5; border-left: 6px solid #2e9d4f; border-radius: 6px;
  padding: 6px 10px; margin: 4px; min-width: 220px; font-family: system-ui, sans-serif;
  background: #fff; }
.lp-breaker-card[data-state="open"] { border-left-color: #d6453d; background: #fdf1f0; }
.lp-breaker-card[data-state="half_open"] { border-left-color: #e6a019; background: #fff8e8; }
.lp-breaker-head { display: flex; justify-content: space-between; align-items: center; }
.lp-breaker-name { font-weight: 600; font-size: 14px; color: #222; }
.lp-breaker-badge { font-weight: 700; font-size: 13px; color: #fff; padding: 2px 10px;
  border-radius: 10px; background: #2e9d4f; letter-spacing: 0.04em; }
.lp-breaker-badge[data-state="open"] { background: #d6453d; }
.lp-breaker-badge[data-state="half_open"] { background: #e6a019; }
.lp-breaker-failures, .lp-breaker-countdown { font-size: 12px; color: #444; margin-top: 3px;
  font-variant-numeric: tabular-nums; }
"""


def clock_speed(clock: Any) -> float:
    """How fast the clock runs against real time: 1 (system), its speed (scaled), 0 (virtual)."""
    if isinstance(clock, VirtualClock):
        return 0.0
    if isinstance(clock, ScaledClock):
        return float(clock.speed)
    return 1.0 if clock is not None else 0.0


class BreakerLight(LiveView, anywidget.AnyWidget):
    """A breaker's state (CLOSED green, OPEN red, HALF-OPEN amber), its consecutive failures
    against the threshold, rejections, and the countdown to half-open.

    ``source``: a ``CircuitBreaker`` or a student's breaker (watched with :func:`watch`).
    Redraws on its events (throttled), reading the public ``health()``.
    """

    _esm = _ESM
    _css = _CSS
    name = t.Unicode("").tag(sync=True)
    state = t.Unicode("closed").tag(sync=True)
    failures = t.Int(0).tag(sync=True)
    threshold = t.Int(0).tag(sync=True)
    retry_in = t.Float(0.0).tag(sync=True)
    speed = t.Float(1.0).tag(sync=True)
    rejections = t.Int(0).tag(sync=True)
    stamp = t.Int(0).tag(sync=True)

    def __init__(self, source: Any, *, title: str | None = None, interval: float = 0.1,
                 redraw_clock: Clock | None = None, schedule: bool = True) -> None:
        anywidget.AnyWidget.__init__(self)
        self._lp_setup(interval, redraw_clock, schedule)
        self._title = title
        self.source: Any = None
        self.attach(source)

    def attach(self, source: Any) -> None:
        """Follow another breaker."""
        self.follow(source)

    def snapshot(self) -> dict[str, Any]:
        h = dict(self.source.health())
        state = str(getattr(h.get("state"), "value", h.get("state")) or "closed")
        obj = getattr(self.source, "obj", self.source)
        clock = getattr(obj, "clock", None) or getattr(obj, "_clock", None)
        return {"name": self._title if self._title is not None else (h.get("name") or ""),
                "state": state.lower().replace("-", "_"),
                "failures": int(h.get("consecutive_failures") or 0),
                "threshold": int(h.get("failure_threshold") or 0),
                "retry_in": round(float(h.get("retry_in") or 0.0), 3),
                "rejections": int(h.get("rejections") or 0),
                "speed": clock_speed(clock)}

    def _draw(self) -> None:
        s = self.snapshot()
        with self.hold_sync():
            for key, value in s.items():
                setattr(self, key, value)
            self.stamp += 1

    def __repr__(self) -> str:
        s = self.snapshot()
        threshold = f"/{s['threshold']}" if s["threshold"] else ""
        return (f"BreakerLight({s['name']!r}, {LABELS.get(s['state'], s['state'])}, "
                f"failures={s['failures']}{threshold}, retry_in={s['retry_in']:.1f})")
