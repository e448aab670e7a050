"""``BucketGauge`` (a rate limiter's RPM and TPM levels) and ``CostMeter`` (spend vs budget)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import ipywidgets as W

from llm_patterns.clock import Clock

from ._base import LEVEL_COLORS, LiveView, esc, fmt_num, level_style

__all__ = ["BucketGauge", "CostMeter", "usd_text"]

_CARD = dict(border="1px solid #d9dee5", padding="6px 10px", margin="4px")
_UNITS = {"requests": "requests", "tokens": "tokens"}


class BucketGauge(LiveView, W.VBox):
    """A rate limiter's buckets as coloured bars with numbers, and the queue of waiters.

    ``source``: a ``RateLimiter``, or a student's ``TokenBucket`` / ``RateLimiter`` (watched
    with :func:`watch`). Redraws on the source's events, at most every ``interval`` seconds
    (``redraw_clock``: the clock the throttle reads; real time by default). Levels come from
    the source's public ``status()`` at draw time, so refill between events shows too.
    """

    def __init__(self, source: Any, *, title: str | None = None, interval: float = 0.1,
                 redraw_clock: Clock | None = None, schedule: bool = True) -> None:
        W.VBox.__init__(self, layout=W.Layout(min_width="260px", **_CARD))
        self.add_class("lp-card")
        self.add_class("lp-bucket-gauge")
        self._lp_setup(interval, redraw_clock, schedule)
        self._title = title
        self._header = W.HTML()
        self._rows: dict[str, tuple[W.HBox, W.FloatProgress, W.HTML]] = {}
        for kind in ("requests", "tokens"):
            label = W.HTML(f"<span style='color:#555'>{kind}</span>",
                           layout=W.Layout(width="64px"))
            bar = W.FloatProgress(value=0.0, min=0.0, max=1.0,
                                  layout=W.Layout(flex="1 1 auto", width="auto"))
            number = W.HTML(layout=W.Layout(width="118px"))
            number.add_class("lp-bucket-number")
            row = W.HBox([label, bar, number], layout=W.Layout(align_items="center"))
            self._rows[kind] = (row, bar, number)
        self.source: Any = None
        self.attach(source)

    def attach(self, source: Any) -> None:
        """Follow another limiter (e.g. after the dashboard rebuilt it with new limits)."""
        self.follow(source)

    def snapshot(self) -> dict[str, Any]:
        """The numbers shown: the source's ``status()``."""
        return dict(self.source.status())

    def _draw(self) -> None:
        s = self.snapshot()
        name = self._title if self._title is not None else (s.get("name") or "rate limiter")
        waiting = int(s.get("waiting") or 0)
        penalty = float(s.get("penalty_remaining") or 0.0)
        badge_color = LEVEL_COLORS["warning"] if waiting else "#8a939e"
        extra = (f" <span style='color:{LEVEL_COLORS['danger']}'>paused {penalty:.1f} s</span>"
                 if penalty > 0 else "")
        self._header.value = (
            f"<div style='display:flex;justify-content:space-between;align-items:baseline'>"
            f"<b style='font-size:14px'>{esc(name)}</b>"
            f"<span class='lp-waiting' style='color:{badge_color};font-size:13px'>"
            f"queued: <b>{waiting}</b>{extra}</span></div>")
        children = [self._header]
        for kind, (row, bar, number) in self._rows.items():
            cap = s.get(f"{kind}_capacity")
            level = s.get(f"{kind}_available")
            if cap is None or level is None:
                continue
            cap = float(cap)
            level = float(level)
            with bar.hold_sync():
                if bar.max != cap:
                    bar.max = cap
                bar.value = max(0.0, min(cap, level))
                bar.bar_style = level_style(level / cap if cap else None)
            color = LEVEL_COLORS[level_style(level / cap if cap else None)]
            number.value = (f"<span style='font-variant-numeric:tabular-nums'>"
                            f"<b style='color:{color}'>{fmt_num(level)}</b>"
                            f" / {fmt_num(cap)}</span>")
            children.append(row)
        if tuple(getattr(self, "children", ())) != tuple(children):  # a trait: untyped
            self.children = tuple(children)

    def __repr__(self) -> str:
        s = self.snapshot()
        parts = []
        for kind in ("requests", "tokens"):
            cap, level = s.get(f"{kind}_capacity"), s.get(f"{kind}_available")
            if cap is not None and level is not None:
                parts.append(f"{kind}={fmt_num(float(level))}/{fmt_num(float(cap))}")
        parts.append(f"waiting={int(s.get('waiting') or 0)}")
        return f"BucketGauge({s.get('name') or ''!r}, {', '.join(parts)})"


def usd_text(amount: float | Decimal | None) -> str:
    """``$0.0123`` under a dollar (4 decimals), ``$12.50`` above."""
    if amount is None:
        return "–"
    value = float(amount)
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def _cost_snapshot(source: Any) -> dict[str, Any]:
    summary = dict(source.summary())
    total = float(summary.get("total") or 0)
    budget = summary.get("budget")
    budget = None if budget is None else float(budget)
    alert_at = summary.get("alert_at", getattr(source, "alert_at", ()))
    alerts = summary.get("alerts", getattr(source, "alerts", ()))
    return {"name": summary.get("name") or "", "total": total, "budget": budget,
            "fraction": (total / budget) if budget else None,
            "alert_at": tuple(float(t) for t in alert_at), "alerts": [float(a) for a in alerts]}


class CostMeter(LiveView, W.VBox):
    """Spend against the budget: a bar coloured by the alert thresholds it passed, the
    thresholds marked on it, and which alerts fired. ``source``: a ``CostTracker`` or a
    student's (watched). Redraws on ``record``/``alert`` events."""

    def __init__(self, source: Any, *, title: str = "cost", interval: float = 0.1,
                 redraw_clock: Clock | None = None, schedule: bool = True) -> None:
        W.VBox.__init__(self, layout=W.Layout(min_width="260px", **_CARD))
        self.add_class("lp-card")
        self.add_class("lp-cost-meter")
        self._lp_setup(interval, redraw_clock, schedule)
        self._title = title
        self._html = W.HTML()
        self.children = (self._html,)
        self.source: Any = None
        self.attach(source)

    def attach(self, source: Any) -> None:
        """Follow another cost tracker."""
        self.follow(source)

    def snapshot(self) -> dict[str, Any]:
        return _cost_snapshot(self.source)

    def _draw(self) -> None:
        s = self.snapshot()
        total, budget, frac = s["total"], s["budget"], s["fraction"]
        if budget is None:
            self._html.value = (f"<b style='font-size:14px'>{esc(self._title)}</b><br>"
                                f"<span style='font-size:20px'>{usd_text(total)}</span> spent "
                                f"(no budget)")
            return
        passed = [t for t in s["alert_at"] if frac >= t]
        if not passed:
            color = LEVEL_COLORS["success"]
        elif max(passed) >= 1.0:
            color = LEVEL_COLORS["danger"]
        else:
            color = LEVEL_COLORS["warning"]
        scale = max([1.0, frac, *s["alert_at"]]) * 1.05 if frac > 1 else 1.0
        width = min(100.0, 100.0 * frac / scale)
        ticks = "".join(
            f"<div style='position:absolute;left:{100 * t / scale:.2f}%;top:-3px;bottom:-3px;"
            f"border-left:2px {'solid' if t in s['alerts'] else 'dashed'} "
            f"{LEVEL_COLORS['danger'] if t in s['alerts'] else '#555'}'></div>"
            f"<div style='position:absolute;left:{100 * t / scale:.2f}%;top:24px;"
            f"transform:translateX(-50%);font-size:11px;color:#555'>{t:.0%}</div>"
            for t in s["alert_at"])
        fired = ", ".join(f"{t:.0%}" for t in s["alerts"]) or "none yet"
        self._html.value = (
            f"<div style='display:flex;justify-content:space-between;align-items:baseline'>"
            f"<b style='font-size:14px'>{esc(self._title)}</b>"
            f"<span class='lp-cost-total' style='font-variant-numeric:tabular-nums'>"
            f"<b style='font-size:18px;color:{color}'>{usd_text(total)}</b>"
            f" of {usd_text(budget)} ({frac:.1%})</span></div>"
            f"<div style='position:relative;height:20px;margin:6px 8px 22px 8px;"
            f"background:#eef1f4;border-radius:4px'>"
            f"<div style='position:absolute;left:0;top:0;bottom:0;width:{width:.2f}%;"
            f"background:{color};border-radius:4px'></div>{ticks}</div>"
            f"<div style='font-size:12px;color:#555'>alerts fired: "
            f"<span class='lp-alerts'>{fired}</span></div>")

    def __repr__(self) -> str:
        s = self.snapshot()
        budget = "none" if s["budget"] is None else usd_text(s["budget"])
        return (f"CostMeter(total={usd_text(s['total'])}, budget={budget}, "
                f"alerts={[f'{t:g}' for t in s['alerts']]})")
