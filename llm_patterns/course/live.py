"""``LiveDemo``: a live workload through ``ResilientClient`` for the instructor dashboard.

Two mock providers behind one client (the ``simulation`` pieces), requests arriving at a
Poisson rate, running as an asyncio task on the current loop (in Jupyter: the kernel's), on the
system clock or an accelerated ``ScaledClock``. Every knob of the dashboard is a method here:
``set_rate``, ``set_limits``, ``set_error_rate``, ``set_budget``, ``set_speed``, ``take_down``,
``bring_up``, ``reset``. The demo is an ``Observable`` (source ``"live"``): ``control`` events
for each knob turned, ``rebuild`` when the client's pieces were replaced (widgets re-attach),
and ``tick`` every ``tick`` real seconds so views can show refill and countdowns between events.

On a ``VirtualClock`` (tests) nothing waits for real: ``await demo.run_for(60)`` replays a minute.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import replace
from decimal import Decimal
from typing import Any

from llm_patterns.clock import Clock, ScaledClock, VirtualClock
from llm_patterns.events import Observable
from llm_patterns.rate_limit import RateLimiter

from .simulation import PRIMARY, Scenario, Simulation

__all__ = ["LiveDemo"]

logger = logging.getLogger("llm_patterns.course.live")


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


class LiveDemo(Observable):
    """A running pipeline you can poke. See the module docstring.

    ``speed``: a ``ScaledClock`` at that speed is made when ``clock`` is None. The breakers
    open after ``breaker_threshold`` outage failures and try again after ``breaker_reset``
    seconds (short, so a demo shows the whole cycle). At most ``max_in_flight`` requests are
    outstanding; arrivals beyond that are shed and counted.
    """

    _event_source = "live"

    def __init__(self, *, request_rate: float = 4.0, primary_rpm: int = 120,
                 primary_tpm: int = 60_000, error_rate: float = 0.0, budget: float = 0.5,
                 speed: float = 1.0, clock: Clock | None = None, seed: int = 0,
                 breaker_threshold: int = 3, breaker_reset: float = 5.0,
                 max_in_flight: int = 200, tick: float | None = 0.25, name: str = "demo") -> None:
        self.name = name
        self.clock: Clock = clock if clock is not None else ScaledClock(speed)
        self.scenario = Scenario(duration=1e9, request_rate=_positive("request_rate", request_rate),
                                 primary_rpm=int(primary_rpm), primary_tpm=int(primary_tpm),
                                 outage=None, error_rate=float(error_rate),
                                 budget=_positive("budget", budget), seed=seed,
                                 breaker_threshold=breaker_threshold, breaker_reset=breaker_reset,
                                 dag_id="live_demo")
        if (isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int)
                or max_in_flight < 1):
            raise ValueError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")
        self.max_in_flight = max_in_flight
        self.tick = None if isinstance(self.clock, VirtualClock) else tick
        self.primary_down = False
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._build()

    # -- the pieces ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.sim = Simulation(self.scenario, clock=self.clock, keep_log=False, track=False)
        self.rng = random.Random(self.scenario.seed + 7)
        self.started_at = self.clock.now()
        self.sent = 0
        self.shed = 0
        self.crashed = 0

    @property
    def client(self) -> Any:
        return self.sim.client

    @property
    def limiters(self) -> dict[str, Any]:
        return self.sim.client.limiters

    @property
    def breakers(self) -> dict[str, Any]:
        return self.sim.breakers

    @property
    def cost(self) -> Any:
        return self.sim.cost

    @property
    def primary_server(self) -> Any:
        return self.sim.primary_server

    @property
    def secondary_server(self) -> Any:
        return self.sim.secondary_server

    @property
    def speed(self) -> float:
        return float(getattr(self.clock, "speed", 1.0))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def elapsed(self) -> float:
        """Clock seconds since the demo (or its last reset) started."""
        return self.clock.now() - self.started_at

    def stats(self) -> dict[str, Any]:
        """Counters for the dashboard's status line."""
        out = self.sim.outcomes
        return {"elapsed": round(self.elapsed(), 3), "sent": self.sent,
                "succeeded": out["succeeded"], "failed": out["failed"],
                "fallbacks": self.sim.fallbacks, "in_flight": len(self._in_flight),
                "shed": self.shed, "by_provider": {p.name: out[p.name] for p in self.sim.providers},
                "primary_down": self.primary_down, "speed": self.speed,
                "rate": self.scenario.request_rate, "cost": float(self.cost.total)}

    # -- running ------------------------------------------------------------------------------
    def start(self) -> asyncio.Task[None]:
        """Start the workload on the running event loop (Jupyter: the kernel's) and return the
        task. Calling it while running changes nothing."""
        if self.running:
            assert self._task is not None
            return self._task
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = asyncio.get_event_loop()
        self._task = loop.create_task(self._workload())
        if self.tick is not None and (self._ticker is None or self._ticker.done()):
            self._ticker = loop.create_task(self._ticking())
        self._control("start", True)
        return self._task

    def stop(self) -> None:
        """Stop sending and cancel the requests in flight."""
        for task in (self._task, self._ticker, *self._in_flight):
            if task is not None and not task.done():
                task.cancel()
        self._task = self._ticker = None
        self._in_flight.clear()
        self._control("stop", True)

    async def run_for(self, seconds: float) -> None:
        """Let the demo run for ``seconds`` of its clock (starting it if needed)."""
        self.start()
        await self.clock.asleep(seconds)

    async def _workload(self) -> None:
        index = 0
        while True:
            await self.clock.asleep(self.rng.expovariate(self.scenario.request_rate))
            if len(self._in_flight) >= self.max_in_flight:
                self.shed += 1
                continue
            task = asyncio.ensure_future(self._one(index, self.sim))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            index += 1
            self.sent += 1

    async def _one(self, index: int, sim: Simulation) -> None:
        try:
            await sim.one(index)
        except asyncio.CancelledError:
            raise
        except Exception:  # never let one odd failure kill the demo
            self.crashed += 1
            logger.exception("live demo request %d crashed", index)

    async def _ticking(self) -> None:
        while True:
            await asyncio.sleep(self.tick or 0.25)
            try:
                self._emit("tick", self.clock.now(), **self.stats())
            except Exception:  # the ticker must outlive any one bad reading
                logger.exception("live demo tick failed")

    # -- the knobs ----------------------------------------------------------------------------
    def _control(self, what: str, value: Any) -> None:
        logger.info("live demo: %s -> %s", what, value)
        self._emit("control", self.clock.now(), control=what, value=value)

    def set_rate(self, requests_per_second: float) -> None:
        """Requests arriving per second (of the demo's clock)."""
        rate = _positive("requests_per_second", requests_per_second)
        self.scenario = replace(self.scenario, request_rate=rate)
        self.sim.scenario = replace(self.sim.scenario, request_rate=rate)
        self._control("rate", rate)

    def set_limits(self, rpm: int | None = None, tpm: int | None = None) -> None:
        """The primary's RPM/TPM limits, on the provider (mock) AND in the client's limiter
        (a new limiter with full buckets: widgets re-attach on the ``rebuild`` event)."""
        rpm = self.scenario.primary_rpm if rpm is None else int(_positive("rpm", rpm))
        tpm = self.scenario.primary_tpm if tpm is None else int(_positive("tpm", tpm))
        self.scenario = replace(self.scenario, primary_rpm=rpm, primary_tpm=tpm)
        self.sim.scenario = self.scenario
        self.primary_server.set_limits(rpm=rpm, tpm=tpm)
        limiter = RateLimiter(rpm=rpm, tpm=tpm, clock=self.clock, max_wait=30.0, name=PRIMARY,
                              burst_seconds=60.0)  # as the mock's per-minute buckets
        self.sim.limiters[PRIMARY] = limiter
        self.client.set_limiter(PRIMARY, limiter)
        self._control("limits", f"{rpm} RPM / {tpm} TPM")
        self._emit("rebuild", self.clock.now(), what="limiter")

    def set_error_rate(self, p: float) -> None:
        """Probability of a random 500 from the primary."""
        self.primary_server.set_error_rate(p)
        self.scenario = replace(self.scenario, error_rate=float(p))
        self._control("error_rate", float(p))

    def set_budget(self, usd: float) -> None:
        """The cost tracker's budget (alerts already fired stay fired)."""
        usd = _positive("usd", usd)
        self.cost.budget = Decimal(str(usd))
        self.scenario = replace(self.scenario, budget=usd)
        self._control("budget", usd)  # views redraw on control events

    def set_speed(self, speed: float) -> None:
        """How fast the demo's clock runs (needs a ``ScaledClock``)."""
        speed = _positive("speed", speed)
        if not isinstance(self.clock, ScaledClock):
            raise ValueError(f"set_speed needs a ScaledClock, the demo runs on {self.clock!r}")
        self.clock.set_speed(speed)
        self._control("speed", speed)

    def take_down(self) -> None:
        """The primary answers 503 to everything until ``bring_up()``."""
        self.primary_server.take_down(503)
        self.primary_down = True
        self._control("take_down", PRIMARY)

    def bring_up(self) -> None:
        """The primary answers again (its breaker closes after its half-open trial)."""
        self.primary_server.bring_up()
        self.primary_down = False
        self._control("bring_up", PRIMARY)

    def reset(self) -> None:
        """Start over with the current settings: fresh providers, limiters, breakers, costs."""
        was_running = self.running
        self.stop()
        self.primary_down = False
        self._build()
        self._emit("rebuild", self.clock.now(), what="all")
        self._control("reset", True)
        if was_running:
            self.start()

    def __repr__(self) -> str:
        return (f"LiveDemo(rate={self.scenario.request_rate:g}/s, primary "
                f"{self.scenario.primary_rpm} RPM / {self.scenario.primary_tpm} TPM, "
                f"speed={self.speed:g}, running={self.running})")
