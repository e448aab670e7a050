"""A simulated pipeline: steady LLM traffic through ResilientClient against two mock providers.

The same scenario serves the ``demo`` command (virtual clock: ten minutes replay in about a
second), the instructor dashboard (system or accelerated clock) and the benchmarks. A
``Timeline`` listens to the components' events and keeps what the charts draw: limiter levels,
breaker states, which provider answered, latency and cost over time.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from llm_patterns.backoff import BackoffPolicy
from llm_patterns.circuit_breaker import CircuitBreaker
from llm_patterns.client import ResilientClient
from llm_patterns.clock import Clock, VirtualClock
from llm_patterns.cost import CostTracker
from llm_patterns.errors import LLMError
from llm_patterns.events import Event
from llm_patterns.mock import MockLLMServer
from llm_patterns.pricing import Pricing
from llm_patterns.providers import AnthropicProvider, OpenAIProvider
from llm_patterns.rate_limit import RateLimiter
from llm_patterns.retry import RetryPolicy

__all__ = ["Scenario", "Simulation", "SimulationResult", "Timeline"]

TASKS = ("summarize", "classify", "extract")
PRIMARY, SECONDARY = "primary", "secondary"
PRIMARY_MODEL, SECONDARY_MODEL = "gpt-4o-mini", "claude-haiku-4-5"


@dataclass
class Scenario:
    """What the simulated pipeline does; times are seconds from the start."""

    duration: float = 600.0
    request_rate: float = 2.0  # requests per second arriving from the pipeline
    prompt_words: tuple[int, int] = (40, 400)
    max_tokens: int = 200
    primary_rpm: int = 60
    primary_tpm: int = 40_000
    secondary_rpm: int = 600
    secondary_tpm: int = 400_000
    outage: tuple[float, float] | None = (180.0, 300.0)  # the primary answers 503 then
    error_rate: float = 0.02
    budget: float = 2.0
    seed: int = 0
    dag_id: str = "nightly_summaries"
    breaker_threshold: int = 5  # consecutive outage failures that open a breaker
    breaker_reset: float = 30.0  # seconds a breaker stays open before its half-open trial

    def __post_init__(self) -> None:
        for key in ("duration", "request_rate", "budget"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.outage is not None and not 0 <= self.outage[0] < self.outage[1]:
            raise ValueError(
                f"outage must be (start, end) with 0 <= start < end, got {self.outage!r}")


@dataclass(repr=False)
class Timeline:
    """Time series gathered from events: (time, value) pairs per series."""

    series: dict[str, list[tuple[float, Any]]] = field(default_factory=lambda: defaultdict(list))
    log: list[Event] = field(default_factory=list)
    keep_log: bool = True
    # limiter name -> its two level series (looked up once, not formatted per event)
    _levels: dict[str, tuple[list, list]] = field(default_factory=dict, init=False,
                                                  compare=False)

    def __call__(self, event: Event) -> None:
        if self.keep_log:
            self.log.append(event)
        d, t = event.data, event.time
        if event.source == "rate_limit" and "requests_available" in d:
            lists = self._levels.get(event.name)
            if lists is None:
                lists = self._levels[event.name] = (self.series[f"{event.name}.requests"],
                                                    self.series[f"{event.name}.tokens"])
            lists[0].append((t, d["requests_available"]))
            lists[1].append((t, d.get("tokens_available")))
        elif event.source == "breaker" and event.kind == "state_change":
            state = str(getattr(d["new"], "value", d["new"]))
            self.series[f"{event.name}.state"].append((t, state))
        elif event.source == "client" and event.kind == "response":
            self.series["provider"].append((t, d["provider"]))
            self.series["latency"].append((t, d["latency"]))
        elif event.source == "cost" and event.kind == "record":
            self.series["cost"].append((t, float(d["total"])))

    def __repr__(self) -> str:  # short: a run's series hold thousands of points
        sizes = ", ".join(f"{name}: {len(points)}" for name, points in self.series.items())
        return f"Timeline({{{sizes}}}, log={len(self.log)} events)"


@dataclass
class SimulationResult:
    scenario: Scenario
    requests: int
    succeeded: int
    failed: int
    by_provider: dict[str, int]
    fallbacks: int
    attempts: int
    retries: int
    server_429s: int
    limiter_waits: int
    breaker_trips: int
    calls_into_outage: int
    cost_by_task: dict[tuple[str | None, str | None], Decimal]
    total_cost: Decimal
    errors: dict[str, int]
    timeline: Timeline

    def summary_rows(self) -> list[tuple[str, str]]:
        rows = [
            ("requests", f"{self.requests}"),
            ("succeeded", f"{self.succeeded}"),
            ("failed", f"{self.failed}"),
            *((f"answered by {name}", f"{n}") for name, n in sorted(self.by_provider.items())),
            ("fallbacks", f"{self.fallbacks}"),
            ("attempts sent", f"{self.attempts}"),
            ("retries", f"{self.retries}"),
            ("429s from the providers", f"{self.server_429s}"),
            ("429s avoided (limiter waits)", f"{self.limiter_waits}"),
            ("breaker trips", f"{self.breaker_trips}"),
            ("calls into the outage", f"{self.calls_into_outage}"),
        ]
        rows += [(f"cost {task}", f"${cost:.4f}") for (_, task), cost in
                 sorted(self.cost_by_task.items(), key=lambda kv: str(kv[0]))]
        rows.append(("cost total", f"${self.total_cost:.4f} of ${self.scenario.budget:.2f}"))
        return rows

    def table(self) -> str:
        rows = self.summary_rows()
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v:>12}" for k, v in rows)


PRICES = {
    PRIMARY_MODEL: Pricing(0.15, 0.60, 0.075),
    SECONDARY_MODEL: Pricing(1.00, 5.00, 0.10),
}


_WORDS = ("pipeline", "invoice", "customer", "shipment", "report", "delay", "quarter", "revenue",
          "incident", "forecast")


def _choices(rng: random.Random, population: tuple[str, ...], k: int) -> list[str]:
    """``[rng.choice(population) for _ in range(k)]``, the same picks from the same state, in
    a few calls instead of ``k``.

    ``choice`` on n <= 16 items takes the top ``n.bit_length()`` bits of one 32-bit Mersenne
    Twister output, drawing again while the value is >= n; ``getrandbits(32 * m)`` returns the
    next ``m`` outputs, first one lowest. Only the outputs consumed are drawn, so the generator
    ends in the same state as ``k`` calls of ``choice`` (a test checks both against each other).
    The top byte of each output is turned into its pick's index by ``bytes.translate``, which
    also drops the values that are drawn again.
    """
    n = len(population)
    if type(rng) is not random.Random or not 1 <= n <= 16 or k <= 0:
        return [rng.choice(population) for _ in range(k)]
    to_index, rejected = _index_table(n)
    picks: list[str] = []
    need = k
    while need > 0:
        raw = rng.getrandbits(32 * need).to_bytes(4 * need, "little")
        picks += map(population.__getitem__, raw[3::4].translate(to_index, rejected))
        need = k - len(picks)
    return picks


@functools.lru_cache(maxsize=16)
def _index_table(n: int) -> tuple[bytes, bytes]:
    """For ``n`` items: (byte -> its pick's index, the bytes whose pick is drawn again)."""
    shift = 8 - n.bit_length()
    return (bytes(min(b >> shift, 255) for b in range(256)),
            bytes(b for b in range(256) if b >> shift >= n))


class Simulation:
    """Two mock providers behind a ResilientClient, all on one clock, with a seeded workload."""

    def __init__(self, scenario: Scenario | None = None, *, clock: Clock | None = None,
                 keep_log: bool = True, track: bool = True, transport: str = "direct") -> None:
        """``transport``: "direct" (default) calls the mock servers in process through
        ``MockLLMServer.provider`` (same decisions and errors, no HTTP or JSON: fast); "http"
        goes through ``OpenAIProvider`` / ``AnthropicProvider`` and ``httpx`` (what a real
        deployment runs). Both give the same results for the same scenario."""
        if transport not in ("direct", "http"):
            raise ValueError(f"transport must be 'direct' or 'http', got {transport!r}")
        self.transport = transport
        self.scenario = s = scenario or Scenario()
        self.clock = clock or VirtualClock()
        self.rng = random.Random(s.seed)
        self.primary_server = MockLLMServer(rpm=s.primary_rpm, tpm=s.primary_tpm, latency=0.4,
                                            error_rate=s.error_rate, seed=s.seed,
                                            clock=self.clock, api="openai", model=PRIMARY_MODEL)
        self.secondary_server = MockLLMServer(rpm=s.secondary_rpm, tpm=s.secondary_tpm,
                                              latency=0.8, seed=s.seed + 1, clock=self.clock,
                                              api="anthropic", model=SECONDARY_MODEL)
        if s.outage is not None:
            self.primary_server.outage(*s.outage, status=503)
        self.providers: list[Any] = [
            self.primary_server.provider(PRIMARY, PRIMARY_MODEL, api="openai"),
            self.secondary_server.provider(SECONDARY, SECONDARY_MODEL, api="anthropic"),
        ] if transport == "direct" else [
            OpenAIProvider(PRIMARY, PRIMARY_MODEL, base_url="http://mock.llm/v1",
                           api_key="test-key",
                           client=self.primary_server.client(),
                           async_client=self.primary_server.async_client(), clock=self.clock),
            AnthropicProvider(SECONDARY, SECONDARY_MODEL, base_url="http://mock.llm",
                              api_key="test-key", client=self.secondary_server.client(),
                              async_client=self.secondary_server.async_client(), clock=self.clock),
        ]
        # the mock providers enforce per-minute buckets (MockLLMServer's burst_seconds=60): the
        # limiters match them, opening burst included
        self.limiters = {
            PRIMARY: RateLimiter(rpm=s.primary_rpm, tpm=s.primary_tpm, clock=self.clock,
                                 max_wait=30.0, name=PRIMARY, burst_seconds=60.0),
            SECONDARY: RateLimiter(rpm=s.secondary_rpm, tpm=s.secondary_tpm, clock=self.clock,
                                   max_wait=30.0, name=SECONDARY, burst_seconds=60.0),
        }
        self.breakers = {
            name: CircuitBreaker(name, failure_threshold=s.breaker_threshold,
                                 reset_timeout=s.breaker_reset, clock=self.clock)
            for name in (PRIMARY, SECONDARY)
        }
        self.retry = RetryPolicy(max_attempts=3, backoff=BackoffPolicy(base_delay=0.5, max_delay=8),
                                 clock=self.clock, rng=random.Random(s.seed + 2))
        self.cost = CostTracker(PRICES, budget=s.budget, clock=self.clock)
        self.client = ResilientClient(self.providers, limiters=self.limiters, retry=self.retry,
                                      breakers=self.breakers, cost=self.cost, clock=self.clock)
        self.timeline = Timeline(keep_log=keep_log)
        if track:  # a live demo (track=False) draws from its own listeners, unbounded lists here
            # the retry policy's events only go into the log (no series): without a log it is
            # left unobserved, which keeps its fast path
            for component in (*self.limiters.values(), *self.breakers.values(), self.client,
                              self.cost, *((self.retry,) if keep_log else ())):
                component.subscribe(self.timeline)
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.fallbacks = 0

    def _prompt(self) -> str:
        lo, hi = self.scenario.prompt_words
        words = self.rng.randint(lo, hi)
        return "Summarize this document: " + " ".join(_choices(self.rng, _WORDS, words))

    async def one(self, index: int) -> None:
        """One request of the workload, the ``index``-th (its task label), with a fresh prompt;
        counted in ``outcomes``, ``errors`` and ``fallbacks``. The live dashboard drives it."""
        await self._one(index, self._prompt())

    async def _one(self, index: int, prompt: str) -> None:
        task = TASKS[index % len(TASKS)]
        try:
            response = await self.client.acomplete(prompt, max_tokens=self.scenario.max_tokens,
                                                   dag_id=self.scenario.dag_id, task_id=task)
        except LLMError as err:
            self.outcomes["failed"] += 1
            self.errors[type(err).__name__] += 1
            return
        self.outcomes["succeeded"] += 1
        self.outcomes[response.provider] += 1
        self.fallbacks += response.fallback_used

    async def run(self, progress: Callable[[float], None] | None = None) -> SimulationResult:
        """Replay the scenario; ``progress(fraction)`` is called as virtual time passes."""
        s, tasks, t, index = self.scenario, [], 0.0, 0
        start = self.clock.now()
        while True:
            t += self.rng.expovariate(s.request_rate)
            if t >= s.duration:
                break
            await self.clock.asleep(start + t - self.clock.now())
            tasks.append(asyncio.ensure_future(self._one(index, self._prompt())))
            index += 1
            if progress is not None and index % 25 == 0:
                progress(min(1.0, t / s.duration))
        await asyncio.gather(*tasks)
        if progress is not None:
            progress(1.0)
        return self.result(index)

    def run_sync(self, progress: Callable[[float], None] | None = None) -> SimulationResult:
        return asyncio.run(self.run(progress))

    def result(self, requests: int) -> SimulationResult:
        log = self.timeline.log
        attempts = sum(1 for e in log if e.source == "client" and e.kind == "attempt")
        retries = sum(1 for e in log if e.source == "retry" and e.kind == "retry")
        waits = sum(1 for e in log if e.source == "rate_limit" and e.kind == "wait")
        trips = sum(1 for e in log if e.source == "breaker" and e.kind == "state_change"
                    and str(getattr(e.data["new"], "value", e.data["new"])) == "open")
        into_outage = 0
        if self.scenario.outage is not None:
            a, b = self.scenario.outage
            into_outage = sum(1 for rec in self.primary_server.stats["log"]
                              if a <= rec["time"] < b)
        s429 = (self.primary_server.stats["by_status"].get(429, 0)
                + self.secondary_server.stats["by_status"].get(429, 0))
        return SimulationResult(
            scenario=self.scenario, requests=requests, succeeded=self.outcomes["succeeded"],
            failed=self.outcomes["failed"],
            by_provider={p.name: self.outcomes[p.name] for p in self.providers},
            fallbacks=self.fallbacks, attempts=attempts, retries=retries, server_429s=s429,
            limiter_waits=waits, breaker_trips=trips, calls_into_outage=into_outage,
            cost_by_task=self.cost.by_task(), total_cost=Decimal(self.cost.total),
            errors=dict(self.errors), timeline=self.timeline,
        )
