"""The clients under test, each built the way its documentation (or the OpenAI cookbook) shows.

A client factory takes ``(server, clock, cfg)`` and returns a ``Client``: ``call(request)`` sends
one workload request and returns when it succeeded (raises when it gave up), ``close()`` frees
what it opened. Peers talk to the mock with plain ``httpx`` (or the ``openai`` SDK) through
``server.transport``: the same in-process wire as our ``OpenAIProvider``, so the only difference
between rows is the client-side logic.

Every retrying client gets the same budget: 10 retries (11 attempts), as ``openai``
``max_retries=10``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from common import MODEL, Request  # type: ignore[import-not-found]

from llm_patterns.backoff import BackoffPolicy
from llm_patterns.circuit_breaker import CircuitBreaker
from llm_patterns.client import ResilientClient
from llm_patterns.clock import Clock
from llm_patterns.cost import CostTracker
from llm_patterns.errors import CircuitOpenError, is_retryable
from llm_patterns.mock import MockLLMServer
from llm_patterns.pricing import Pricing
from llm_patterns.providers import OpenAIProvider
from llm_patterns.rate_limit import RateLimiter
from llm_patterns.retry import RetryPolicy

ATTEMPTS = 11  # 1 + 10 retries, like openai max_retries=10
API_KEY = "sk-bench-not-a-real-key"


@dataclass
class Config:
    rpm: float | None = None
    tpm: float | None = None
    burst_seconds: float | None = 1.0  # None: the RateLimiter default
    # RateLimiter(headroom=): seconds of refill held back from our buckets for requests granted
    # but not yet charged by the server (the real-time rows use one server latency; see
    # rate_limit_utilization.measure)
    headroom: float = 0.0
    # outage benchmark: breaker settings
    failure_threshold: int = 5
    reset_timeout: float = 1.0
    seed: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Client:
    call: Callable[[Request], Awaitable[Any]]
    close: Callable[[], Awaitable[None]]
    # what the client saw on its side (optional; the mock's own counts are authoritative)
    notes: dict[str, Any] = field(default_factory=dict)


Factory = Callable[[MockLLMServer, Clock, Config], Client]


# ----------------------------------------------------------------------------- plain httpx

def _body(req: Request) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": req.prompt}],
            "max_tokens": req.max_tokens}


def _http(server: MockLLMServer) -> tuple[httpx.AsyncClient, Callable[[Request], Awaitable[Any]]]:
    http = httpx.AsyncClient(transport=server.transport, base_url="http://mock.llm/v1",
                             headers={"authorization": f"Bearer {API_KEY}"}, timeout=60.0)

    async def post(req: Request) -> Any:
        response = await http.post("/chat/completions", json=_body(req))
        response.raise_for_status()  # 429/5xx -> httpx.HTTPStatusError (has .response)
        return response.json()

    return http, post


def _http_retryable(exc: BaseException) -> bool:
    """What a careful tenacity user retries: 408/409/429/5xx and transport errors."""
    if isinstance(exc, httpx.HTTPStatusError):
        s = exc.response.status_code
        return s in (408, 409, 429) or s >= 500
    return isinstance(exc, httpx.TransportError)


def _retry_after(exc: BaseException) -> float | None:
    """The server's retry-after-ms / retry-after, read the way the openai SDK reads them."""
    if not isinstance(exc, httpx.HTTPStatusError):
        return None
    h = exc.response.headers
    for key, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = h.get(key)
        if raw is not None:
            try:
                v = float(raw) * scale
            except ValueError:
                continue
            if 0 < v <= 60:
                return v
    return None


# ----------------------------------------------------------------------------- tenacity

def _tenacity(wait: Any, seed: int) -> Any:
    import tenacity

    return tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=wait,
        retry=tenacity.retry_if_exception(_http_retryable),
        reraise=True,
    )


def tenacity_backoff(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """tenacity as the OpenAI cookbook shows it: ``wait_random_exponential(min=1, max=60)``."""
    import tenacity

    random.seed(cfg.seed)  # tenacity's jitter uses the module-level random
    http, post = _http(server)
    retrying = _tenacity(tenacity.wait_random_exponential(min=1, max=60), cfg.seed)

    async def call(req: Request) -> Any:
        return await retrying(post, req)

    return Client(call, http.aclose)


def tenacity_retry_after(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """tenacity waiting exactly the server's Retry-After when given, else the cookbook backoff."""
    import tenacity

    random.seed(cfg.seed)
    fallback = tenacity.wait_random_exponential(min=1, max=60)

    def wait(state: Any) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        ra = _retry_after(exc) if exc is not None else None
        return ra if ra is not None else fallback(state)

    http, post = _http(server)
    retrying = _tenacity(wait, cfg.seed)

    async def call(req: Request) -> Any:
        return await retrying(post, req)

    return Client(call, http.aclose)


def aiolimiter_tenacity(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """aiolimiter leaky buckets for RPM and TPM (``burst_seconds`` of each, as the provider),
    acquired in turn inside a tenacity retry (cookbook backoff)."""
    import tenacity
    from aiolimiter import AsyncLimiter

    random.seed(cfg.seed)
    b = cfg.burst_seconds
    rpm_l = AsyncLimiter(cfg.rpm / 60.0 * b, b) if cfg.rpm else None
    tpm_l = AsyncLimiter(cfg.tpm / 60.0 * b, b) if cfg.tpm else None
    http, post = _http(server)

    async def attempt(req: Request) -> Any:
        if rpm_l is not None:
            await rpm_l.acquire(1)
        if tpm_l is not None:
            await tpm_l.acquire(req.tokens)
        return await post(req)

    retrying = _tenacity(tenacity.wait_random_exponential(min=1, max=60), cfg.seed)

    async def call(req: Request) -> Any:
        return await retrying(attempt, req)

    return Client(call, http.aclose)


def pyrate_tenacity(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """pyrate-limiter 4 token buckets (GCRA state, burst = the provider's window) for RPM and
    TPM, blocking async acquire of each in turn, inside a tenacity retry (cookbook backoff)."""
    import tenacity
    from pyrate_limiter import Duration, Limiter, Rate, StateBucket, TokenBucket

    random.seed(cfg.seed)
    b = cfg.burst_seconds

    def limiter(per_minute: float) -> Limiter:
        rate = Rate(int(per_minute), Duration.MINUTE, burst=max(1, int(per_minute / 60.0 * b)))
        return Limiter(StateBucket([rate], algorithm=TokenBucket()))

    rpm_l = limiter(cfg.rpm) if cfg.rpm else None
    tpm_l = limiter(cfg.tpm) if cfg.tpm else None
    http, post = _http(server)

    async def attempt(req: Request) -> Any:
        if rpm_l is not None:
            await rpm_l.try_acquire_async("rpm", 1)
        if tpm_l is not None:
            await tpm_l.try_acquire_async("tpm", req.tokens)
        return await post(req)

    retrying = _tenacity(tenacity.wait_random_exponential(min=1, max=60), cfg.seed)

    async def call(req: Request) -> Any:
        return await retrying(attempt, req)

    async def close() -> None:
        await http.aclose()
        for lim in (rpm_l, tpm_l):
            if lim is not None:
                lim.close()

    return Client(call, close)


# ----------------------------------------------------------------------------- openai SDK

def openai_sdk(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """The official SDK's own retries (``max_retries=10``), nothing else."""
    from openai import AsyncOpenAI

    http = httpx.AsyncClient(transport=server.transport)
    sdk = AsyncOpenAI(api_key=API_KEY, base_url="http://mock.llm/v1", http_client=http,
                      max_retries=cfg.extra.get("max_retries", 10))

    async def call(req: Request) -> Any:
        return await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": req.prompt}],
            max_tokens=req.max_tokens)

    async def close() -> None:
        await sdk.close()

    return Client(call, close)


def no_retry(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    http, post = _http(server)
    return Client(post, http.aclose)


# ----------------------------------------------------------------------------- ours

def _provider(server: MockLLMServer, clock: Clock) -> OpenAIProvider:
    return OpenAIProvider("openai", MODEL, base_url=server.base_url, api_key=API_KEY,
                          async_client=server.async_client(), clock=clock, timeout=60.0)


def _limiter(cfg: Config, clock: Clock) -> RateLimiter:
    return RateLimiter(rpm=cfg.rpm, tpm=cfg.tpm, burst_seconds=cfg.burst_seconds, clock=clock,
                       name="openai", headroom=cfg.headroom)


def _retry(clock: Clock, cfg: Config, **kw: Any) -> RetryPolicy:
    return RetryPolicy(max_attempts=ATTEMPTS,
                       backoff=BackoffPolicy(base_delay=0.5, max_delay=8.0, jitter="full"),
                       clock=clock, rng=random.Random(cfg.seed), **kw)


def ours_client(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """The full stack: ResilientClient(OpenAIProvider) with RateLimiter(burst_seconds=1),
    RetryPolicy (full jitter, 11 attempts), CircuitBreaker and CostTracker. It settles each
    estimate against the reported usage and re-syncs from the x-ratelimit headers."""
    provider = _provider(server, clock)
    client = ResilientClient(
        [provider],
        limiters={"openai": _limiter(cfg, clock)} if (cfg.rpm or cfg.tpm) else None,
        retry=_retry(clock, cfg),
        breakers={"openai": CircuitBreaker("openai", failure_threshold=cfg.failure_threshold,
                                           reset_timeout=cfg.reset_timeout, clock=clock)},
        cost=CostTracker({MODEL: Pricing(0.15, 0.60, 0.075)}),
        clock=clock,
    )

    async def call(req: Request) -> Any:
        return await client.acomplete(req.prompt, max_tokens=req.max_tokens)

    async def close() -> None:
        await provider.aclose()

    return Client(call, close, {"limiter": client.limiters.get("openai")})


def ours_limiter_only(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """RateLimiter + RetryPolicy around OpenAIProvider, no feedback: no settle, no header sync,
    no penalize (what a user wiring the two patterns by hand gets)."""
    provider = _provider(server, clock)
    limiter = _limiter(cfg, clock)
    retry = _retry(clock, cfg)

    async def attempt(req: Request) -> Any:
        await limiter.acquire_async(req.tokens)
        return await provider.acomplete(req.prompt, max_tokens=req.max_tokens)

    async def call(req: Request) -> Any:
        return await retry.call_async(attempt, req)

    async def close() -> None:
        await provider.aclose()

    return Client(call, close, {"limiter": limiter})


def _breaker_client(server: MockLLMServer, clock: Clock, cfg: Config,
                    retry: RetryPolicy, limiter: RateLimiter | None = None) -> Client:
    provider = _provider(server, clock)
    client = ResilientClient(
        [provider], retry=retry, limiters={"openai": limiter} if limiter else None,
        breakers={"openai": CircuitBreaker("openai", failure_threshold=cfg.failure_threshold,
                                           reset_timeout=cfg.reset_timeout, clock=clock)},
        clock=clock,
    )

    async def call(req: Request) -> Any:
        return await client.acomplete(req.prompt, max_tokens=req.max_tokens)

    async def close() -> None:
        await provider.aclose()

    return Client(call, close)


def _also_open(e: BaseException) -> bool:
    return isinstance(e, CircuitOpenError) or is_retryable(e)


def ours_breaker_jitter(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """The full stack with a single provider whose callers wait an outage out: the retry policy
    also retries CircuitOpenError, with plain full-jitter backoff (``respect_retry_after=False``:
    no server- or breaker-directed waits)."""
    return _breaker_client(server, clock, cfg,
                           _retry(clock, cfg, retry_on=_also_open, respect_retry_after=False))


def ours_breaker_paced(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """``ours_breaker_jitter`` plus a RateLimiter (``cfg.rpm``, ``cfg.burst_seconds``) that
    paces every attempt, so the backlog an outage leaves drains at a bounded rate."""
    limiter = RateLimiter(rpm=cfg.rpm, burst_seconds=cfg.burst_seconds, clock=clock,
                          name="openai") if cfg.rpm else None
    return _breaker_client(server, clock, cfg,
                           _retry(clock, cfg, retry_on=_also_open, respect_retry_after=False),
                           limiter)


def ours_breaker_waits(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """As ``ours_breaker_jitter`` but honouring CircuitOpenError.retry_after (the breaker's
    remaining cooldown) as the policy does by default for every error that carries one."""
    return _breaker_client(server, clock, cfg, _retry(clock, cfg, retry_on=_also_open))


def ours_breaker_fail_fast(server: MockLLMServer, clock: Clock, cfg: Config) -> Client:
    """The full stack as configured by default: an open breaker fails the call at once
    (CircuitOpenError is not retried; with a second provider the chain would move on)."""
    return _breaker_client(server, clock, cfg, _retry(clock, cfg))
