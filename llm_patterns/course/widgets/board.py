"""``ProviderBoard`` (who answers, fallbacks, per-provider health) and ``EventLog``."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import ipywidgets as W

from llm_patterns.clock import Clock
from llm_patterns.events import Event

from ._base import LEVEL_COLORS, LiveView, esc
from .breaker import LABELS

__all__ = ["DEFAULT_SKIP", "EventLog", "ProviderBoard", "format_event"]

_CARD = dict(border="1px solid #d9dee5", padding="6px 10px", margin="4px")
_STATE_COLOR = {"closed": LEVEL_COLORS["success"], "open": LEVEL_COLORS["danger"],
                "half_open": LEVEL_COLORS["warning"]}


class ProviderBoard(LiveView, W.VBox):
    """Per provider of a ``ResilientClient``: breaker state, answers, attempts, errors and the
    last latency; and overall: who is answering now, how many answers were fallbacks, how many
    requests failed everywhere. Follows the client's, its fallback chain's and its breakers'
    events."""

    def __init__(self, client: Any, *, title: str = "providers", interval: float = 0.1,
                 redraw_clock: Clock | None = None, schedule: bool = True) -> None:
        W.VBox.__init__(self, layout=W.Layout(min_width="360px", overflow="hidden", **_CARD))
        self.add_class("lp-card")
        self.add_class("lp-provider-board")
        self._lp_setup(interval, redraw_clock, schedule)
        self._title = title
        self._html = W.HTML()
        self.children = (self._html,)
        self.client: Any = None
        self.attach(client)

    def attach(self, client: Any) -> None:
        """Follow another client (counters start from zero)."""
        self.detach()
        self.client = client
        self.providers = [p.name for p in getattr(client, "providers", [])]
        self.answered: Counter[str] = Counter()
        self.attempts: Counter[str] = Counter()
        self.errors: dict[str, Counter[str]] = {p: Counter() for p in self.providers}
        self.latency: dict[str, float] = {}
        self.fallbacks = 0
        self.failed = 0
        self.answering: str | None = None
        self._lp_listen(client)
        chain = getattr(client, "chain", None)
        if chain is not None:
            self._lp_listen(chain)
        for breaker in getattr(client, "breakers", {}).values():
            self._lp_listen(breaker)
        self.refresh()
        self.flush()

    def _on_event(self, e: Event) -> None:
        d = e.data
        if e.source == "client":
            provider = str(d.get("provider"))
            if e.kind == "attempt":
                self.attempts[provider] += 1
            elif e.kind == "error":
                self.errors.setdefault(provider, Counter())[d.get("error_type") or "error"] += 1
            elif e.kind == "response":
                self.latency[provider] = float(d.get("latency") or 0.0)
        elif e.source == "fallback":
            if e.kind == "success":
                self.answered[d["provider"]] += 1
                self.fallbacks += bool(d.get("fallback_used"))
                self.answering = d["provider"]
            elif e.kind == "exhausted":
                self.failed += 1
                self.answering = None

    def _health(self) -> dict[str, dict[str, Any]]:
        health = getattr(self.client, "health", None)
        return health() if callable(health) else {}

    def _draw(self) -> None:
        health = self._health()
        total = sum(self.answered.values())
        rows = []
        for name in self.providers:
            b = health.get(name, {}).get("breaker", {})
            state = str(b.get("state", "closed"))
            color = _STATE_COLOR.get(state, "#888")
            errors = self.errors.get(name, Counter())
            top = ", ".join(f"{k.replace('Error', '')} {v}"
                            for k, v in errors.most_common(1)) or "–"
            now = name == self.answering
            latency = self.latency.get(name)
            tag = (" <span class='lp-answering' style='color:#3b7dd8'>◀ answering</span>"
                   if now else "")
            rows.append(
                f"<tr style='{'background:#eef6ff;' if now else ''}'>"
                f"<td><span style='color:{color};font-size:16px'>●</span> <b>{esc(name)}</b>"
                f"{tag}</td>"
                f"<td><span style='color:{color};font-weight:600'>"
                f"{LABELS.get(state, state)}</span></td>"
                f"<td style='text-align:right'><b>{self.answered[name]}</b></td>"
                f"<td style='text-align:right'>{self.attempts[name]}</td>"
                f"<td style='text-align:right'>{sum(errors.values())}</td>"
                f"<td style='text-align:right'>"
                f"{'–' if latency is None else f'{latency:.2f} s'}</td>"
                f"<td style='color:#777;font-size:11px'>{esc(top)}</td></tr>")
        fb_color = LEVEL_COLORS["warning"] if self.fallbacks else "#333"
        failed_color = LEVEL_COLORS["danger"] if self.failed else "#333"
        self._html.value = (
            f"<div style='display:flex;justify-content:space-between;align-items:baseline'>"
            f"<b style='font-size:14px'>{esc(self._title)}</b><span style='font-size:13px'>"
            f"answered <b class='lp-answered'>{total}</b> · fallbacks "
            f"<b class='lp-fallbacks' style='color:{fb_color}'>{self.fallbacks}</b> · failed "
            f"<b class='lp-failed' style='color:{failed_color}'>{self.failed}</b></span></div>"
            f"<table style='width:100%;border-collapse:collapse;font-size:13px;"
            f"font-variant-numeric:tabular-nums;white-space:nowrap;margin-top:4px'>"
            f"<tr style='color:#666;font-size:11px;text-align:left'><th>provider</th>"
            f"<th>breaker</th><th style='text-align:right'>answers</th>"
            f"<th style='text-align:right'>attempts</th><th style='text-align:right'>errors</th>"
            f"<th style='text-align:right'>latency</th><th>top error</th></tr>"
            f"{''.join(rows)}</table>")

    def __repr__(self) -> str:
        answered = ", ".join(f"{p}={self.answered[p]}" for p in self.providers)
        return f"ProviderBoard({answered}, fallbacks={self.fallbacks}, failed={self.failed})"


DEFAULT_SKIP = frozenset({"rate_limit.acquire", "rate_limit.settle", "rate_limit.sync",
                          "client.attempt", "breaker.success", "mock.request", "live.tick"})

_KEYS = {
    ("breaker", "state_change"): ("old", "new", "consecutive_failures"),
    ("breaker", "failure"): ("consecutive_failures", "error_type"),
    ("breaker", "rejected"): ("state", "retry_in"),
    ("client", "error"): ("provider", "error_type", "status_code"),
    ("client", "response"): ("provider", "latency", "attempts", "cost"),
    ("fallback", "success"): ("provider", "fallback_used"),
    ("fallback", "failure"): ("provider", "error_type"),
    ("rate_limit", "wait"): ("seconds", "waiting", "tokens"),
    ("rate_limit", "timeout"): ("retry_after", "tokens"),
    ("rate_limit", "penalize"): ("seconds",),
    ("retry", "retry"): ("attempt", "delay", "error_type"),
    ("cost", "record"): ("model", "cost", "total"),
    ("cost", "alert"): ("threshold", "total", "budget"),
}


def _value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, Decimal):
        return f"{float(v):.4f}"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, (int, str)):
        text = str(v)
        return text if len(text) <= 40 else text[:37] + "..."
    return str(getattr(v, "value", type(v).__name__))


def format_event(e: Event, origin: float = 0.0) -> str:
    """One line: ``   12.34 s  breaker/primary  state_change  old=closed new=open ...``."""
    keys = _KEYS.get((e.source, e.kind))
    items = [(k, e.data[k]) for k in keys if k in e.data] if keys else [
        (k, v) for k, v in e.data.items() if isinstance(v, (bool, int, float, str, Decimal))
        or v is None][:5]
    detail = " ".join(f"{k}={_value(v)}" for k, v in items)
    who = f"{e.source}/{e.name}" if e.name else e.source
    return f"{e.time - origin:9.2f} s  {who:<22} {e.kind:<13} {detail}".rstrip()


def _same(a: Event, b: Event) -> bool:
    """Same source, name, kind and details (times aside)?"""
    return (a.source, a.name, a.kind) == (b.source, b.name, b.kind) and \
        format_event(a).split(None, 2)[2] == format_event(b).split(None, 2)[2]


def _line_color(e: Event) -> str:
    if e.kind in ("error", "failure", "exhausted", "timeout", "alert") or (
            e.kind == "state_change" and e.data.get("new") == "open"):
        return LEVEL_COLORS["danger"]
    if e.kind in ("state_change", "control", "penalize", "rejected", "wait"):
        return "#b37400"
    return "#333"


class EventLog(LiveView, W.VBox):
    """The last ``size`` events from ``sources``, newest first, one line each.

    ``skip``: ``"source.kind"`` pairs left out (the default drops the per-request chatter:
    limiter acquires, attempts, successes); ``origin``: subtracted from event times.
    """

    def __init__(self, *sources: Any, size: int = 12, skip: Iterable[str] = DEFAULT_SKIP,
                 origin: float = 0.0, title: str = "events", interval: float = 0.1,
                 redraw_clock: Clock | None = None, schedule: bool = True) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        W.VBox.__init__(self, layout=W.Layout(**_CARD))
        self.add_class("lp-card")
        self.add_class("lp-event-log")
        self._lp_setup(interval, redraw_clock, schedule)
        self.size = size
        self.skip = frozenset(skip)
        self.origin = float(origin)
        self._title = title
        self.events: deque[Event] = deque(maxlen=size)
        self._counts: deque[int] = deque(maxlen=size)  # repeats folded into each line
        self.seen = 0
        self._html = W.HTML()
        self.children = (self._html,)
        self.attach(*sources)

    def attach(self, *sources: Any) -> None:
        """Follow other sources (the lines already shown stay)."""
        from .adapters import watch

        self.detach()
        for source in sources:
            self._lp_listen(watch(source))
        self.refresh()
        self.flush()

    def _on_event(self, e: Event) -> None:
        if f"{e.source}.{e.kind}" in self.skip:
            return
        self.seen += 1
        if self.events and _same(self.events[-1], e):  # a burst of the same event: one line
            self.events[-1] = e
            self._counts[-1] += 1
            return
        self.events.append(e)
        self._counts.append(1)

    def lines(self) -> list[str]:
        """The shown lines, newest first (a run of identical events is one line, ``×N``)."""
        return [format_event(e, self.origin) + (f"  ×{n}" if n > 1 else "")
                for e, n in zip(reversed(self.events), reversed(self._counts))]

    def _draw(self) -> None:
        body = "".join(
            f"<div style='color:{_line_color(e)}'>{esc(line)}</div>"
            for e, line in zip(reversed(self.events), self.lines())
        ) or "<div style='color:#888'>no events yet</div>"
        self._html.value = (
            f"<b style='font-size:14px'>{esc(self._title)}</b> "
            f"<span style='color:#777;font-size:12px'>(last {self.size}, newest first)</span>"
            f"<div class='lp-event-lines' style='font-family:ui-monospace,Menlo,Consolas,"
            f"monospace;font-size:12px;white-space:pre;overflow-x:auto;line-height:1.45'>"
            f"{body}</div>")

    def __repr__(self) -> str:
        return f"EventLog(size={self.size}, shown={len(self.events)}, seen={self.seen})"
