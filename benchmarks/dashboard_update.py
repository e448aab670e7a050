"""How many component events a second the dashboard absorbs while redrawing at 10 fps.

Every widget of the instructor dashboard subscribes to the pipeline's events: each event costs
a little bookkeeping, and each widget redraws at most ten times a second (the chart four), a
redraw serializing its new state for the browser. The kernel falls behind when the per-event
work plus a second's worth of frames take more than a second. Measured outside a browser
(widget messages are serialized, then dropped):

- ``pipeline_without_widgets`` / ``pipeline_with_dashboard``: the live workload (two mock
  providers behind ResilientClient, with an outage in the middle) on a VirtualClock, so it runs
  flat out, without and with the whole dashboard attached, throttled on real time;
- ``frame_ms``: the mean cost of one redraw of each widget during that run, and
  ``widget_cost_per_event_us``: the widgets' bookkeeping per pipeline event, redraws excluded
  (timed around each call);
- ``capacity_events_per_s_at_10fps``: ``(1 s - a second's worth of every widget's frames) /
  cost per event``: the event rate at which the kernel would do nothing but feed the dashboard.

Usage: ``python benchmarks/dashboard_update.py [--quick] [--seconds N] [--rate R]``; prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llm_patterns.clock import VirtualClock  # noqa: E402 - after the sys.path line
from llm_patterns.course.live import LiveDemo  # noqa: E402 - after the sys.path line
from llm_patterns.course.widgets import Dashboard  # noqa: E402 - after the sys.path line
from llm_patterns.course.widgets._base import LiveView  # noqa: E402 - after the sys.path line

CHART_FPS, WIDGET_FPS = 4, 10  # the dashboard's throttles: 0.25 s for the chart, 0.1 s others


def _sources(demo: LiveDemo) -> list[Any]:
    return [demo, *demo.limiters.values(), *demo.breakers.values(), demo.client,
            demo.client.chain, demo.cost, demo.sim.retry]


def run_pipeline(seconds: float, rate: float, *, dashboard: bool, seed: int = 0) -> dict[str, Any]:
    """Replay ``seconds`` of virtual traffic; count events and real time, and with the dashboard
    the time its widgets spent on events and on redraws."""
    timing = {"widget_s": 0.0}
    frames: dict[str, list[float]] = {}
    original = LiveView._lp_event

    def timed_event(self: Any, event: Any) -> None:
        t = time.perf_counter()
        original(self, event)
        timing["widget_s"] += time.perf_counter() - t

    def timed_draw(name: str, draw: Any) -> Any:
        def run() -> None:
            t = time.perf_counter()
            draw()
            frames.setdefault(name, []).append(time.perf_counter() - t)
        return run

    async def main() -> dict[str, Any]:
        clock = VirtualClock()
        demo = LiveDemo(clock=clock, request_rate=rate, seed=seed, max_in_flight=10_000)
        count = [0]

        def counter(_e: Any) -> None:
            count[0] += 1

        for source in _sources(demo):
            source.subscribe(counter)
        dash = None
        if dashboard:
            dash = Dashboard(demo, schedule=False)  # throttled on real time, drawn in-line
            views = {"primary gauge": dash.gauges["primary"],
                     "secondary gauge": dash.gauges["secondary"],
                     "primary breaker": dash.lights["primary"],
                     "secondary breaker": dash.lights["secondary"], "cost meter": dash.cost,
                     "provider board": dash.board, "timeline figure": dash.timeline,
                     "event log": dash.event_log}
            for name, view in views.items():
                view._lp_throttle._draw = timed_draw(name, view._lp_throttle._draw)
        t0 = time.perf_counter()
        await demo.run_for(seconds / 3)
        demo.take_down()
        await demo.run_for(seconds / 3)
        demo.bring_up()
        await demo.run_for(seconds / 3)
        demo.stop()
        wall = time.perf_counter() - t0
        out: dict[str, Any] = {"events": count[0], "wall_s": round(wall, 3),
                               "events_per_s": round(count[0] / wall),
                               "requests": demo.stats()["sent"]}
        if dash is not None:
            draw_s = sum(sum(v) for v in frames.values())
            out.update(
                redraws=sum(len(v) for v in frames.values()),
                redraws_per_s={k: round(len(v) / wall, 1) for k, v in frames.items()},
                frame_ms={k: round(1000 * sum(v) / len(v), 3) for k, v in frames.items()},
                widget_event_us=round(1e6 * (timing["widget_s"] - draw_s) / count[0], 2),
                widget_share_of_run=round(timing["widget_s"] / wall, 4),
            )
        return out

    LiveView._lp_event = timed_event  # type: ignore[method-assign]
    try:
        return asyncio.run(main())
    finally:
        LiveView._lp_event = original  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a short run (CI smoke test)")
    p.add_argument("--seconds", type=float, default=None, help="virtual seconds of traffic")
    p.add_argument("--rate", type=float, default=20.0, help="requests per virtual second")
    args = p.parse_args(argv)
    logging.getLogger("llm_patterns").setLevel(logging.CRITICAL)
    seconds = args.seconds or (60.0 if args.quick else 300.0)

    run_pipeline(min(seconds, 15.0), args.rate, dashboard=True)  # warm-up: imports, caches
    bare = run_pipeline(seconds, args.rate, dashboard=False)
    dash = run_pipeline(seconds, args.rate, dashboard=True)
    frames = dash["frame_ms"]
    redraw_share = sum(ms * (CHART_FPS if name == "timeline figure" else WIDGET_FPS)
                       for name, ms in frames.items()) / 1000
    per_event_s = dash["widget_event_us"] / 1e6
    capacity = (1.0 - redraw_share) / per_event_s if per_event_s > 0 else None
    result = {
        "benchmark": "dashboard_update",
        "python": platform.python_version(),
        "virtual_seconds": seconds,
        "request_rate": args.rate,
        "pipeline_without_widgets": bare,
        "pipeline_with_dashboard": dash,
        "redraw_share_of_each_second": round(redraw_share, 4),
        "widget_cost_per_event_us": dash["widget_event_us"],
        "pipeline_cost_per_event_us": round(1e6 * bare["wall_s"] / bare["events"], 2),
        "capacity_events_per_s_at_10fps": None if capacity is None else round(capacity),
        "slowdown_with_dashboard": round(dash["wall_s"] / bare["wall_s"], 3),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
