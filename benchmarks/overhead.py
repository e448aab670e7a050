"""Benchmark 4: what each pattern costs per call when the provider itself costs nothing.

Microseconds per call, sync path, SystemClock, no waiting anywhere (limits far above the load,
no failures): the bookkeeping alone. The provider is a trivial in-process object returning a
prebuilt ``LLMResponse`` (no HTTP). Each figure: ``time.perf_counter`` around a loop sized to
~0.15 s, after a warm-up; the median of several repeats taken round-robin; the bare call is
reported too and subtracted in the "net" column. The same client over no-op protocol
implementations (``NoOps``) measures what the layers themselves cost (the structure of issue 16:
generators, per-call objects, the fallback and retry loops), apart from the patterns'
bookkeeping. Peers in the same run: tenacity (the ``@retry``
decorator as documented, and a prebuilt ``Retrying`` object), pybreaker, and the two stacked.
Target: the full ResilientClient stack costs less than tenacity + pybreaker together.

    .venv/bin/python benchmarks/overhead.py [--quick] [--repeats 7]
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import common  # type: ignore[import-not-found]

from llm_patterns.backoff import BackoffPolicy
from llm_patterns.circuit_breaker import CircuitBreaker
from llm_patterns.client import ResilientClient
from llm_patterns.cost import CostTracker
from llm_patterns.fallback import FallbackChain
from llm_patterns.pricing import Pricing
from llm_patterns.rate_limit import RateLimiter
from llm_patterns.response import LLMResponse, Usage
from llm_patterns.retry import RetryPolicy

NAME = "overhead"
LAYERS_ONLY = "ResilientClient.complete, layers only (no-op limiter, breaker, budget)"
MODEL = common.MODEL
USAGE = Usage(prompt_tokens=12, completion_tokens=5)
RESPONSE = LLMResponse(text="ok", model=MODEL, provider="fake", usage=USAGE)
PRICES = {MODEL: Pricing(0.15, 0.60, 0.075)}


class TrivialProvider:
    """A provider that answers at once: the zero-latency baseline."""

    name = "fake"
    model = MODEL

    def complete(self, prompt: str | None = None, *, messages: Any = None,
                 max_tokens: int = 256, **kw: Any) -> LLMResponse:
        return RESPONSE

    async def acomplete(self, prompt: str | None = None, *, messages: Any = None,
                        max_tokens: int = 256, **kw: Any) -> LLMResponse:
        return RESPONSE


def _fn() -> LLMResponse:
    return RESPONSE


class _NoPermit:
    trial = False

    def success(self) -> None: ...

    def failure(self, error: BaseException) -> None: ...

    def release(self) -> None: ...


class NoOps:
    """A limiter, breaker and budget that decide nothing (each protocol's methods, empty): the
    client built over them costs what its layers cost, without any pattern's bookkeeping."""

    prices = None
    _permit = _NoPermit()

    def acquire(self, demand: Any = 0) -> float:
        return 0.0

    async def acquire_async(self, demand: Any = 0) -> float:
        return 0.0

    def check(self, demand: Any) -> None: ...

    def settle(self, estimated: Any, actual: Any) -> None: ...

    async def asettle(self, estimated: Any, actual: Any) -> None: ...

    def penalize(self, seconds: float) -> None: ...

    async def apenalize(self, seconds: float) -> None: ...

    def update_from_headers(self, headers: Any, *, sent_at: float | None = None) -> None: ...

    async def aupdate_from_headers(self, headers: Any, *, sent_at: float | None = None) -> None:
        ...

    def status(self) -> dict[str, Any]:
        return {}

    def admit(self) -> _NoPermit:
        return self._permit

    async def admit_async(self) -> _NoPermit:
        return self._permit

    def health(self) -> dict[str, Any]:
        return {}

    def reserve(self, model: str, demand: Any) -> None: ...

    async def areserve(self, model: str, demand: Any) -> None: ...

    def commit(self, hold: Any, model: str, usage: Any, **labels: Any) -> None: ...

    async def acommit(self, hold: Any, model: str, usage: Any, **labels: Any) -> None: ...

    def release(self, hold: Any) -> None: ...

    async def arelease(self, hold: Any) -> None: ...


def cases() -> list[tuple[str, str, Callable[[], Any]]]:
    """(group, label, zero-argument call) for every measured thing."""
    import pybreaker
    import tenacity

    limiter = RateLimiter(rpm=1e9, tpm=1e12, name="bench")
    retry = RetryPolicy(max_attempts=5, backoff=BackoffPolicy(base_delay=0.5, max_delay=8))
    breaker = CircuitBreaker("bench", failure_threshold=5, reset_timeout=60.0)
    cost = CostTracker(PRICES)
    provider = TrivialProvider()
    chain = FallbackChain([provider])
    client = ResilientClient(
        [provider], limiters={"fake": RateLimiter(rpm=1e9, tpm=1e12, name="fake")},
        retry=RetryPolicy(max_attempts=5, backoff=BackoffPolicy(base_delay=0.5, max_delay=8)),
        breakers={"fake": CircuitBreaker("fake", failure_threshold=5, reset_timeout=60.0)},
        cost=CostTracker(PRICES))
    noops = NoOps()
    layers_only = ResilientClient(
        [provider], limiters={"fake": cast(Any, noops)}, breakers={"fake": cast(Any, noops)},
        retry=RetryPolicy(max_attempts=5, backoff=BackoffPolicy(base_delay=0.5, max_delay=8)),
        cost=cast(Any, noops))

    @tenacity.retry(stop=tenacity.stop_after_attempt(5),
                    wait=tenacity.wait_random_exponential(multiplier=0.5, max=8), reraise=True)
    def tenacity_decorated() -> LLMResponse:
        return RESPONSE

    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(5),
                                 wait=tenacity.wait_random_exponential(multiplier=0.5, max=8),
                                 reraise=True)
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    pyb2 = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)

    @tenacity.retry(stop=tenacity.stop_after_attempt(5),
                    wait=tenacity.wait_random_exponential(multiplier=0.5, max=8), reraise=True)
    def tenacity_pybreaker() -> LLMResponse:
        return pyb2.call(_fn)

    return [
        ("baseline", "bare call", _fn),
        ("ours", "RateLimiter.acquire(tokens)", lambda: limiter.acquire(1000)),
        ("ours", "RetryPolicy.call", lambda: retry.call(_fn)),
        ("ours", "CircuitBreaker.call", lambda: breaker.call(_fn)),
        ("ours", "CostTracker.record", lambda: cost.record(MODEL, USAGE)),
        ("ours", "FallbackChain.complete (1 provider)",
         lambda: chain.complete("hello", max_tokens=16)),
        ("ours", "ResilientClient.complete (full stack)",
         lambda: client.complete("hello", max_tokens=16)),
        ("ours", LAYERS_ONLY, lambda: layers_only.complete("hello", max_tokens=16)),
        ("peer", "tenacity @retry", tenacity_decorated),
        ("peer", "tenacity Retrying object", lambda: retrying(_fn)),
        ("peer", "pybreaker.call", lambda: pyb.call(_fn)),
        ("peer", "tenacity @retry + pybreaker.call (stacked)", tenacity_pybreaker),
    ]


def calibrate(fn: Callable[[], Any], seconds: float) -> int:
    """Warm ``fn`` up and return the loop size that takes about ``seconds``.

    The warm-up matters: the first calls pay lazy imports and first-use caches (milliseconds),
    and a loop sized from them would time single cold calls."""
    end = time.perf_counter() + max(0.05, seconds / 2)
    while time.perf_counter() < end:  # warm-up
        for _ in range(100):
            fn()
    n = 100
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > seconds / 10:
            return max(1, int(n * seconds / dt))
        n *= 4


def measure_all(fns: Sequence[Callable[[], Any]], seconds: float,
                repeats: int) -> tuple[list[list[float]], list[list[float]]]:
    """Microseconds per call (perf_counter, and process CPU time), ``repeats`` samples per
    function, taken round-robin (every function sees the same background load, which on a
    shared machine moves; CPU time does not count the time other processes take)."""
    sizes = [calibrate(fn, seconds) for fn in fns]
    samples: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            n = sizes[i]
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                fn()
            samples[i].append((time.perf_counter() - t0) / n * 1e6)
            cpu[i].append((time.process_time() - c0) / n * 1e6)
    return samples, cpu


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = common.parser((__doc__ or "").splitlines()[0]).parse_args(argv)
    common.quiet_logs()
    repeats = args.repeats or (2 if args.quick else 7)
    seconds = 0.002 if args.quick else 0.15
    rows = []
    measured = cases()
    all_samples, all_cpu = measure_all([fn for _, _, fn in measured], seconds, repeats)
    for (group, label, _), samples, cpu in zip(measured, all_samples, all_cpu):
        us = common.median(samples)
        rows.append({"group": group, "name": label, "us_per_call": us,
                     "cpu_us_per_call": common.median(cpu),
                     "samples_us": [round(s, 3) for s in samples]})
        print(f"  {label}: {us:.2f} us ({common.median(cpu):.2f} us CPU)", file=sys.stderr,
              flush=True)
    by = {r["name"]: r["us_per_call"] for r in rows}
    bare = by["bare call"]
    for r in rows:
        r["net_us"] = max(0.0, r["us_per_call"] - bare) if r["group"] != "baseline" else 0.0
    full = by["ResilientClient.complete (full stack)"]
    tenacity_us = min(by["tenacity @retry"], by["tenacity Retrying object"])
    peers_sum = tenacity_us + by["pybreaker.call"]
    stacked = by["tenacity @retry + pybreaker.call (stacked)"]
    cpu = {r["name"]: r["cpu_us_per_call"] for r in rows}
    cpu_peers = min(cpu["tenacity @retry"], cpu["tenacity Retrying object"]) + cpu["pybreaker.call"]
    ratios = {
        "full_stack_vs_tenacity_plus_pybreaker": full / peers_sum,
        "full_stack_vs_tenacity_plus_pybreaker_cpu": (
            cpu["ResilientClient.complete (full stack)"] / cpu_peers if cpu_peers else 0.0),
        "full_stack_vs_stacked_peers": full / stacked,
        "retry_vs_tenacity": by["RetryPolicy.call"] / tenacity_us,
        "breaker_vs_pybreaker": by["CircuitBreaker.call"] / by["pybreaker.call"],
        "layers_only_share_of_full_stack": by[LAYERS_ONLY] / full,
    }
    targets = {"full stack < tenacity + pybreaker": full < peers_sum,
               "full stack < tenacity + pybreaker (CPU time)":
                   ratios["full_stack_vs_tenacity_plus_pybreaker_cpu"] < 1.0}
    result = {
        "setup": {"repeats": repeats, "seconds_per_loop": seconds, "clock": "SystemClock",
                  "path": "sync"},
        "patterns": [{k: common.rnd(v, 3) if k != "samples_us" else v for k, v in r.items()}
                     for r in rows],
        "tenacity_us": round(tenacity_us, 3),
        "tenacity_plus_pybreaker_us": round(peers_sum, 3),
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": targets,
    }
    table = common.markdown_table(
        ["what", "us / call", "CPU us / call", "net of bare call", "vs tenacity + pybreaker"],
        [[r["name"], r["us_per_call"], r["cpu_us_per_call"], r["net_us"],
          r["us_per_call"] / peers_sum] for r in rows])
    detail = (f"Sync path, zero-latency in-process provider, median of {repeats} loops of "
              f"~{seconds:g} s each. tenacity figure = the cheaper of the decorator and the "
              f"Retrying object ({tenacity_us:.2f} us); tenacity + pybreaker = "
              f"{peers_sum:.2f} us. The layers alone (the same client over a no-op limiter, "
              f"breaker and budget): {by[LAYERS_ONLY]:.2f} us, "
              f"{ratios['layers_only_share_of_full_stack']:.0%} of the full stack."
              f"\n\n{table}\n\nTargets: "
              + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    common.finish(
        args, NAME, result,
        history_headers=["full stack us", "tenacity us", "pybreaker us", "tenacity + pybreaker us",
                         "full / (tenacity + pybreaker)", "same, CPU time",
                         "RetryPolicy / tenacity",
                         "CircuitBreaker / pybreaker"],
        history_row=[full, tenacity_us, by["pybreaker.call"], peers_sum,
                     ratios["full_stack_vs_tenacity_plus_pybreaker"],
                     ratios["full_stack_vs_tenacity_plus_pybreaker_cpu"],
                     ratios["retry_vs_tenacity"], ratios["breaker_vs_pybreaker"]],
        detail=detail)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
