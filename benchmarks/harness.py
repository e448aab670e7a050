"""Drive a workload through one client against a fresh mock, and measure it.

``run_saturating``: a fixed pool of workers pulls the requests in order (the rate-limit
benchmarks). ``run_paced``: request i starts at ``i * interval`` whatever happens to the others
(the outage benchmark). Attempts and 429s are the mock's own counts, so a client cannot hide
its retries.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from clients import Config, Factory  # type: ignore[import-not-found]
from common import Request, percentile, rnd  # type: ignore[import-not-found]

from llm_patterns.clock import Clock
from llm_patterns.mock import MockLLMServer

RUN_TIMEOUT = 240.0  # seconds (clock time) after which a run is abandoned and reported as such


async def _warm_up(factory: Factory, clock: Clock, cfg: Config, req: Request) -> None:
    """One request through a throwaway client and an unlimited mock: lazy imports, first-use
    caches and connection setup are paid before the clock starts (for every client alike)."""
    server = MockLLMServer(latency=0.0, clock=clock)
    client = factory(server, clock, Config(rpm=cfg.rpm, tpm=cfg.tpm,
                                           burst_seconds=cfg.burst_seconds, seed=cfg.seed))
    try:
        await client.call(req)
    finally:
        await client.close()


async def _drive(factory: Factory, server: MockLLMServer, clock: Clock, cfg: Config,
                 reqs: Sequence[Request], *, concurrency: int | None,
                 interval: float | None,
                 on_start: Callable[[float], None] | None = None) -> dict[str, Any]:
    await _warm_up(factory, clock, cfg, reqs[0])
    client = factory(server, clock, cfg)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    finished: list[float] = []

    async def one(req: Request) -> None:
        t0 = clock.now()
        try:
            await client.call(req)
        except Exception as exc:
            errors[type(exc).__name__] += 1
        else:
            latencies.append(clock.now() - t0)
        finished.append(clock.now())

    start = clock.now()
    if on_start is not None:
        on_start(start)  # e.g. schedule an outage relative to the start
    real0 = time.perf_counter()
    timed_out = False
    try:
        if concurrency is not None:
            it = iter(reqs)

            async def worker() -> None:
                for req in it:
                    await one(req)

            work = asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            assert interval is not None

            async def paced() -> None:
                tasks = []
                for i, req in enumerate(reqs):
                    await clock.asleep(start + i * interval - clock.now())
                    tasks.append(asyncio.ensure_future(one(req)))
                await asyncio.gather(*tasks)

            work = paced()
        try:
            await asyncio.wait_for(work, RUN_TIMEOUT) if _is_real(clock) else await work
        except TimeoutError:
            timed_out = True
    finally:
        await client.close()
    end = max(finished) if finished else clock.now()
    stats = server.stats
    return {
        "wall_s": end - start,
        "real_s": time.perf_counter() - real0,
        "requests": len(reqs),
        "succeeded": len(latencies),
        "failed": sum(errors.values()) + (len(reqs) - len(finished)),
        "errors": dict(errors),
        "attempts": stats["requests"],
        "http_429": stats["by_status"].get(429, 0),
        "by_status": stats["by_status"],
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "timed_out": timed_out,
        "start": start,
        "log": stats["log"],
        "notes": client.notes,
    }


def _is_real(clock: Clock) -> bool:
    from llm_patterns.clock import VirtualClock

    return not isinstance(clock, VirtualClock)


def run_saturating(factory: Factory, server: MockLLMServer, clock: Clock, cfg: Config,
                   reqs: Sequence[Request], concurrency: int) -> dict[str, Any]:
    return asyncio.run(_drive(factory, server, clock, cfg, reqs, concurrency=concurrency,
                              interval=None))


def run_paced(factory: Factory, server: MockLLMServer, clock: Clock, cfg: Config,
              reqs: Sequence[Request], interval: float,
              on_start: Callable[[float], None] | None = None) -> dict[str, Any]:
    return asyncio.run(_drive(factory, server, clock, cfg, reqs, concurrency=None,
                              interval=interval, on_start=on_start))


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A run's figures for the JSON (no request log, floats rounded)."""
    return {k: rnd(v) for k, v in row.items() if k not in ("log", "start", "notes")}
