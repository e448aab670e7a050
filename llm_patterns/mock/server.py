"""``MockLLMServer``: an OpenAI / Anthropic look-alike that misbehaves on demand.

It answers ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic) in
process, through ``httpx.MockTransport``, so students, tests, notebooks, benchmarks and demos can
meet every failure the patterns exist for: 429s from real RPM/TPM token buckets (with
``retry-after`` and ``x-ratelimit-*`` headers), outages, quota errors, timeouts, overloads,
context-window errors, HTML from a proxy, bad keys.

How a request is answered, in order (the first rule that applies wins):

1. unknown path -> 404, not POST -> 405;
2. a queued ``fail_next`` fault (first in, first out);
3. ``take_down`` (until ``bring_up``), then any ``outage(start, end)`` window containing now;
4. a body that is not a chat request -> 400 ``invalid_request_error``;
5. ``context_window``: prompt + max_tokens above it -> 400 ``context_length_exceeded``;
6. the RPM/TPM buckets: each request pays 1 request and ``prompt_tokens + max_tokens`` tokens at
   arrival, all or nothing, else 429 with the exact wait (a request larger than the TPM bucket
   can ever hold: 429 "Request too large", no retry-after);
7. ``error_rate``: a seeded 500 (after the charge: the work was accepted, then failed);
8. the completion: text and ids deterministic from the seed and the request sequence.

Every answer except a 429 takes ``latency`` seconds on the injected clock (429s are immediate:
providers refuse before doing any work). With a ``VirtualClock`` and a seed a run is exactly
reproducible and costs no real time; the async path awaits ``clock.asleep`` so many concurrent
requests overlap in virtual time.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ..clock import Clock, SystemClock
from ..events import Observable
from ..tokens import estimate_tokens
from . import wire
from .limits import ServerLimits, retry_after_headers

__all__ = ["APIS", "FAULT_KINDS", "MockLLMServer"]

logger = logging.getLogger("llm_patterns.mock")

FAULT_KINDS = (
    "rate_limit",
    "insufficient_quota",
    "server_error",
    "overloaded",
    "timeout",
    "context_length_exceeded",
    "malformed",
    "auth",
)
APIS = ("openai", "anthropic")
BASE_URLS = {"openai": "http://mock.llm/v1", "anthropic": "http://mock.llm"}

# Wall-clock origin for a non-system clock, so "created" is a plausible, reproducible timestamp.
_VIRTUAL_EPOCH = 1_700_000_000
_DEFAULT_CONTEXT = {"openai": 128_000, "anthropic": 200_000}

Latency = float | Callable[[random.Random], float]
_UNSET: Any = object()


@dataclass
class _Plan:
    """What the server decided at arrival: the answer, and how long it takes to give it."""

    status: int | None  # None: the request times out
    body: Any  # a JSON-able answer, or bytes sent as they are (HTML, or b"" for a timeout)
    headers: dict[str, str]
    delay: float
    record: dict[str, Any]

    def content(self) -> bytes:
        """The body as sent on the wire."""
        return self.body if isinstance(self.body, bytes) else wire.dumps(self.body)


class _Transport(httpx.MockTransport):
    """A MockTransport whose async path awaits the latency on the clock instead of blocking."""

    def __init__(self, server: MockLLMServer) -> None:
        super().__init__(server.handle)
        self._server = server

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        return await self._server.ahandle(request)


def _probability(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _error_status(name: str, status: int) -> int:
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"{name} must be an HTTP error status (400-599), got {status!r}")
    return status


class MockLLMServer(Observable):
    """An in-process OpenAI / Anthropic API with real rate limits and faults on demand.

    ``rpm`` / ``tpm``: per-minute limits (None: unlimited), buckets holding ``burst_seconds`` of
    refill. ``latency``: seconds per answer, or ``callable(rng) -> seconds`` for seeded jitter.
    ``error_rate``: seeded probability of a 500. ``api`` picks the base URL and the error format
    for unknown paths (both endpoints always answer). ``model``: the model named in answers
    (None: echo the request's). ``tpm_multiplier``: the server's token count is that many times
    the shared estimate (a tokenizer mismatch). ``context_window``: prompt + max_tokens above it
    answers ``context_length_exceeded``. ``timeout_after``: how long a ``timeout`` fault hangs
    (None: the request's read timeout, else ``latency``).
    """

    _event_source = "mock"

    def __init__(
        self,
        *,
        rpm: float | None = None,
        tpm: float | None = None,
        burst_seconds: float = 60.0,
        latency: Latency = 0.05,
        error_rate: float = 0.0,
        seed: int = 0,
        clock: Clock | None = None,
        api: str = "openai",
        model: str | None = None,
        name: str = "mock",
        tpm_multiplier: float = 1.0,
        context_window: int | None = None,
        timeout_after: float | None = None,
        keep_log: bool = True,
        log_size: int = 100_000,
    ) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        if not callable(latency):
            latency = _seconds("latency", latency)
        if isinstance(tpm_multiplier, bool) or not isinstance(tpm_multiplier, (int, float)) or not (
            math.isfinite(tpm_multiplier) and tpm_multiplier > 0
        ):
            raise ValueError(f"tpm_multiplier must be a finite number > 0, got {tpm_multiplier!r}")
        if context_window is not None and (
            isinstance(context_window, bool)
            or not isinstance(context_window, int)
            or context_window < 1
        ):
            raise ValueError(
                f"context_window must be an integer >= 1 or None, got {context_window!r}"
            )
        if timeout_after is not None:
            timeout_after = _seconds("timeout_after", timeout_after)
        if isinstance(log_size, bool) or not isinstance(log_size, int) or log_size < 1:
            raise ValueError(f"log_size must be an integer >= 1, got {log_size!r}")
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.api = api
        self.model = model
        self.name = name
        self.seed = seed
        self.latency: Latency = latency
        self.error_rate = _probability("error_rate", error_rate)
        self.tpm_multiplier = float(tpm_multiplier)
        self.context_window = context_window
        self.timeout_after = timeout_after
        self.keep_log = keep_log
        self._log_size = log_size
        self._lock = threading.Lock()
        self._limits = ServerLimits(rpm, tpm, burst_seconds, self.clock)
        self._outages: list[tuple[float, float, int]] = []
        self._down: int | None = None
        self._faults: deque[str] = deque()
        self._reset_state()
        self.transport: httpx.MockTransport = _Transport(self)

    # ------------------------------------------------------------------ clients

    @property
    def base_url(self) -> str:
        """What a client's ``base_url`` should be: OpenAI's includes ``/v1``, Anthropic's not."""
        return BASE_URLS[self.api]

    def client(self, **kwargs: Any) -> httpx.Client:
        """An ``httpx.Client`` wired to this server (``base_url`` set; override with kwargs)."""
        kwargs.setdefault("base_url", self.base_url)
        return httpx.Client(transport=self.transport, **kwargs)

    def async_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` wired to this server; latency is awaited on the clock."""
        kwargs.setdefault("base_url", self.base_url)
        return httpx.AsyncClient(transport=self.transport, **kwargs)

    # ------------------------------------------------------------------ controls

    def outage(self, start: float, end: float, status: int = 503) -> None:
        """Answer ``status`` to every request arriving at clock time ``start <= now < end``."""
        start = _seconds("start", start)
        end = _seconds("end", end)
        if not start < end:
            raise ValueError(f"outage start must be before end, got start={start!r}, end={end!r}")
        status = _error_status("status", status)
        with self._lock:
            self._outages.append((start, end, status))
        logger.info("%s: outage scheduled from t=%.3f to t=%.3f with HTTP %d",
                    self.name, start, end, status)

    def fail_next(self, kind: str, count: int = 1) -> None:
        """Queue ``count`` answers of fault ``kind`` (see ``FAULT_KINDS``) for the next requests."""
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        with self._lock:
            self._faults.extend([kind] * count)
        logger.info("%s: the next %d request(s) will fail with %s", self.name, count, kind)

    def take_down(self, status: int = 503) -> None:
        """Answer ``status`` to everything until ``bring_up()`` (the live dashboard's switch)."""
        status = _error_status("status", status)
        with self._lock:
            self._down = status
        logger.info("%s: taken down (HTTP %d)", self.name, status)

    def bring_up(self) -> None:
        """Undo ``take_down``."""
        with self._lock:
            self._down = None
        logger.info("%s: back up", self.name)

    def set_limits(
        self, *, rpm: float | None = _UNSET, tpm: float | None = _UNSET,
        burst_seconds: float = _UNSET,
    ) -> None:
        """Change limits (None removes one); the new buckets start full."""
        with self._lock:
            new = ServerLimits(
                self._limits.rpm if rpm is _UNSET else rpm,
                self._limits.tpm if tpm is _UNSET else tpm,
                self._limits.burst_seconds if burst_seconds is _UNSET else burst_seconds,
                self.clock,
            )
            self._limits = new
        logger.info("%s: limits now rpm=%s tpm=%s burst_seconds=%g", self.name, new.rpm, new.tpm,
                    new.burst_seconds)

    def set_error_rate(self, p: float) -> None:
        """Change the probability of a random 500."""
        p = _probability("error_rate", p)
        with self._lock:
            self.error_rate = p

    def reset(self) -> None:
        """Back to a freshly built server with the current settings: stats, faults, outages,
        take_down, full buckets and re-seeded randomness."""
        with self._lock:
            self._outages.clear()
            self._faults.clear()
            self._down = None
            lim = self._limits
            self._limits = ServerLimits(lim.rpm, lim.tpm, lim.burst_seconds, self.clock)
            self._reset_state()

    def _reset_state(self) -> None:
        self._ids = random.Random(f"{self.seed}:ids")
        self._errors = random.Random(f"{self.seed}:errors")
        self._jitter = random.Random(f"{self.seed}:latency")
        self._requests = 0
        self._by_status: Counter[int] = Counter()
        self._by_fault: Counter[str] = Counter()
        self._tokens_charged = 0
        self._rejected_429 = 0
        self._timeouts = 0
        self._log: deque[dict[str, Any]] = deque(maxlen=self._log_size)

    # ------------------------------------------------------------------ state

    @property
    def rpm(self) -> float | None:
        return self._limits.rpm

    @property
    def tpm(self) -> float | None:
        return self._limits.tpm

    @property
    def pending_faults(self) -> list[str]:
        """The queued ``fail_next`` faults, next first."""
        with self._lock:
            return list(self._faults)

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: requests, by_status, by_fault, tokens_charged, rejected_429, timeouts,
        the limits and what is left in the buckets, and ``log`` (one dict per request)."""
        with self._lock:
            lim = self._limits
            return {
                "requests": self._requests,
                "by_status": dict(sorted(self._by_status.items())),
                "by_fault": dict(self._by_fault),
                "tokens_charged": self._tokens_charged,
                "rejected_429": self._rejected_429,
                "timeouts": self._timeouts,
                "down": self._down,
                "rpm": lim.rpm,
                "tpm": lim.tpm,
                "requests_remaining": None if lim.requests is None else lim.requests.available,
                "tokens_remaining": None if lim.tokens is None else lim.tokens.available,
                "log": list(self._log),
            }

    def __repr__(self) -> str:
        return (f"MockLLMServer(name={self.name!r}, api={self.api!r}, rpm={self.rpm}, "
                f"tpm={self.tpm}, error_rate={self.error_rate:g}, seed={self.seed!r})")

    # ------------------------------------------------------------------ handling

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (sync): decide at arrival, sleep the latency, answer."""
        request.read()
        plan = self._arrive(request)
        self.clock.sleep(plan.delay)
        return self._answer(request, plan)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (async): the latency is awaited on the clock."""
        await request.aread()
        plan = self._arrive(request)
        await self.clock.asleep(plan.delay)
        return self._answer(request, plan)

    def _answer(self, request: httpx.Request, plan: _Plan) -> httpx.Response:
        self._answered(plan)
        if plan.status is None:
            raise httpx.ReadTimeout(
                f"mock timeout: no answer after {plan.delay:g} s", request=request
            )
        return httpx.Response(plan.status, headers=plan.headers, content=plan.content(),
                              request=request)

    def _answered(self, plan: _Plan) -> None:
        """The "request" event, at answer time (after the latency)."""
        if self._subscribers:
            rec = plan.record
            self._emit("request", self.clock.now(), path=rec["path"], status=rec["status"],
                       prompt_tokens=rec["prompt_tokens"], max_tokens=rec["max_tokens"],
                       tokens_charged=rec["tokens_charged"], fault=rec["fault"])

    def provider(self, name: str, model: str | None = None, *, api: str | None = None,
                 timeout: float | httpx.Timeout | None = None, clock: Clock | None = None) -> Any:
        """A provider answered by this server in process, without HTTP or JSON (fast).

        It behaves as ``OpenAIProvider`` / ``AnthropicProvider`` (``api``, default this server's)
        wired to ``client()`` would: same validation, same decisions (buckets, faults, latency
        on the clock, stats), same §3 errors with ``retry_after``; see ``mock.direct``.
        """
        from .direct import DirectProvider

        return DirectProvider(self, name, model, api=api or self.api, timeout=timeout,
                              clock=clock)

    def _wall(self, now: float) -> float:
        return time.time() if isinstance(self.clock, SystemClock) else _VIRTUAL_EPOCH + now

    def _latency(self) -> float:
        if callable(self.latency):
            value = self.latency(self._jitter)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0
            ):
                raise ValueError(f"latency callable returned {value!r}; expected seconds >= 0")
            return float(value)
        return self.latency

    def _arrive(self, request: httpx.Request) -> _Plan:
        """Decide the whole answer at arrival time, under the lock (no sleeping here)."""
        path = request.url.path
        route = wire.api_for_path(path)
        parsed: wire.ChatRequest | None = None
        bad: wire.BadRequest | None = None
        if route is not None and request.method == "POST":
            try:
                parsed = wire.parse_request(route, request.content)
            except wire.BadRequest as exc:
                bad = exc
        read = (request.extensions.get("timeout") or {}).get("read")
        return self._decide(route, request.method, path, parsed, bad, read)

    def _decide(self, route: str | None, method: str, path: str,
                parsed: wire.ChatRequest | None, bad: wire.BadRequest | None,
                read_timeout: float | None) -> _Plan:
        """The answer to a request already parsed (by ``_arrive``, or a direct provider)."""
        api = route or self.api
        prompt_tokens = 0
        if parsed is not None:
            prompt_tokens = math.ceil(
                round(estimate_tokens(parsed.prompt) * self.tpm_multiplier, 6)
            )
        max_tokens = parsed.max_tokens if parsed is not None else None

        with self._lock:
            now = self.clock.now()
            ident = f"{self._ids.getrandbits(96):024x}"
            headers: dict[str, str] = {"content-type": "application/json"}
            headers["request-id" if api == "anthropic" else "x-request-id"] = f"req_{ident}"
            delay = self._latency()
            fault: str | None = None
            charged = 0
            status: int | None
            body: Any

            def err(code_status: int, message: str, **kw: Any) -> tuple[int, Any]:
                return code_status, wire.error_body(api, code_status, message, **kw)

            if route is None:
                fault = "not_found"
                status, body = err(404, f"Invalid URL ({method} {path})")
            elif method != "POST":
                fault = "method_not_allowed"
                status, body = err(405, f"Method {method} not allowed on {path}; use POST")
            elif self._faults:
                fault = self._faults.popleft()
                status, body, extra = self._fault_answer(api, fault, prompt_tokens, max_tokens)
                headers.update(extra)
                if fault == "timeout":
                    delay = self._timeout_delay(read_timeout, delay)
            elif self._down is not None or self._in_outage(now) is not None:
                fault = "down" if self._down is not None else "outage"
                status = self._down if self._down is not None else self._in_outage(now)
                assert status is not None
                _, body = err(status, f"The service is unavailable (mock {fault}, HTTP {status})")
            elif bad is not None:
                fault = "bad_request"
                status, body = err(400, bad.message, param=bad.param,
                                   **({} if api == "anthropic" else {"code": "invalid_request"}))
            elif (self.context_window is not None and parsed is not None
                  and prompt_tokens + parsed.max_tokens > self.context_window):
                fault = "context_window"
                status, body = self._context_error(api, prompt_tokens, parsed.max_tokens,
                                                   self.context_window)
            else:
                assert parsed is not None
                status, body, charged, fault = self._charge_and_answer(
                    api, parsed, prompt_tokens, ident, now, headers
                )
            if status == 429:
                delay = 0.0  # providers refuse before doing any work
            headers.update(self._limits.openai_headers())
            if api == "anthropic":
                headers.update(self._limits.anthropic_headers(self._wall(now)))
            if fault == "malformed":
                headers["content-type"] = "text/html; charset=utf-8"
                content = body
            elif status is None:  # a timeout: nothing is ever sent
                content = b""
            else:
                content = body  # serialized only on the HTTP path (_Plan.content)
            record = {
                "time": now,
                "path": path,
                "status": status,
                "prompt_tokens": prompt_tokens,
                "max_tokens": max_tokens,
                "tokens_charged": charged,
                "fault": fault,
            }
            self._count(record)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: %s %s -> %s (prompt %d tokens, fault %s)", self.name, method,
                         path, status if status is not None else "timeout", prompt_tokens, fault)
        return _Plan(status, content, headers, delay, record)

    def _count(self, record: dict[str, Any]) -> None:
        self._requests += 1
        status = record["status"]
        if status is None:
            self._timeouts += 1
        else:
            self._by_status[status] += 1
        if status == 429:
            self._rejected_429 += 1
        if record["fault"] is not None:
            self._by_fault[record["fault"]] += 1
        self._tokens_charged += record["tokens_charged"]
        if self.keep_log:
            self._log.append(record)

    def _in_outage(self, now: float) -> int | None:
        for start, end, status in self._outages:
            if start <= now < end:
                return status
        return None

    def _timeout_delay(self, read: float | None, latency: float) -> float:
        if self.timeout_after is not None:
            return self.timeout_after
        return float(read) if read is not None else latency

    def _charge_and_answer(
        self, api: str, parsed: wire.ChatRequest, prompt_tokens: int, ident: str, now: float,
        headers: dict[str, str],
    ) -> tuple[int, Any, int, str | None]:
        """Charge the buckets: a 429 if they refuse, else a 500 (error_rate) or a completion."""
        tokens = prompt_tokens + parsed.max_tokens
        charge = self._limits.charge(tokens)
        model = self.model or parsed.model or wire.DEFAULT_MODELS[api]
        if not charge.ok:
            limit = charge.limit
            assert limit is not None
            if charge.too_large:
                message = (f"Request too large for {model} on tokens per min (TPM): Limit "
                           f"{limit.per_minute:g} (a burst of at most {limit.capacity:g}), "
                           f"Requested {tokens}. The input or output tokens must be reduced in "
                           "order to run successfully.")
                body = wire.error_body(api, 429, message,
                                       type="tokens" if api == "openai" else None,
                                       code="rate_limit_exceeded")
                return 429, body, 0, "request_too_large"
            unit = "requests per min (RPM)" if limit.kind == "requests" else "tokens per min (TPM)"
            used = max(0, math.ceil(limit.capacity - limit.available))
            asked = 1 if limit.kind == "requests" else tokens
            headers.update(retry_after_headers(charge.wait))
            message = (f"Rate limit reached for {model} on {unit}: Limit {limit.per_minute:g}, "
                       f"Used {used}, Requested {asked}. Please try again in "
                       f"{headers['retry-after-ms']}ms.")
            body = wire.error_body(api, 429, message,
                                   type=limit.kind if api == "openai" else None,
                                   code="rate_limit_exceeded")
            return 429, body, 0, "rate_limited"
        if self.error_rate > 0 and self._errors.random() < self.error_rate:
            return (*self._fault_answer(api, "server_error", prompt_tokens, parsed.max_tokens)[:2],
                    tokens, "error_rate")
        text, truncated = wire.completion_text(self.seed, parsed)
        body = wire.success_body(
            api, ident=ident, created=int(self._wall(now)), model=model, text=text,
            prompt_tokens=prompt_tokens, completion_tokens=estimate_tokens(text),
            truncated=truncated,
        )
        return 200, body, tokens, None

    def _context_error(self, api: str, prompt_tokens: int, max_tokens: int,
                       window: int) -> tuple[int, Any]:
        if api == "anthropic":
            if prompt_tokens > window:
                message = f"prompt is too long: {prompt_tokens} tokens > {window} maximum"
            else:
                message = (f"input length and `max_tokens` exceed context limit: {prompt_tokens} "
                           f"+ {max_tokens} > {window}, decrease input length or `max_tokens` "
                           "and try again")
            return 400, wire.error_body(api, 400, message, type="invalid_request_error")
        message = (f"This model's maximum context length is {window} tokens. However, you "
                   f"requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
                   f"messages, {max_tokens} in the completion). Please reduce the length of the "
                   "messages or completion.")
        return 400, wire.error_body(api, 400, message, type="invalid_request_error",
                                    code="context_length_exceeded", param="messages")

    def _fault_answer(
        self, api: str, kind: str, prompt_tokens: int, max_tokens: int | None
    ) -> tuple[int | None, Any, dict[str, str]]:
        """(status, body, extra headers) of a named fault; status None for a timeout."""
        if kind == "rate_limit":
            body = wire.error_body(api, 429, "Rate limit reached (mock fault). Please try again "
                                   "in 1s.", type="requests" if api == "openai" else None,
                                   code="rate_limit_exceeded")
            return 429, body, retry_after_headers(1.0)
        if kind == "insufficient_quota":
            message = ("You exceeded your current quota, please check your plan and billing "
                       "details.")
            return 429, wire.error_body(api, 429, message, type="insufficient_quota",
                                        code="insufficient_quota"), {}
        if kind == "server_error":
            message = ("The server had an error while processing your request. Sorry about "
                       "that!" if api == "openai" else "Internal server error")
            return 500, wire.error_body(api, 500, message, type="server_error"
                                        if api == "openai" else "api_error"), {}
        if kind == "overloaded":
            return 529, wire.error_body("anthropic", 529, "Overloaded", type="overloaded_error"), {}
        if kind == "timeout":
            return None, b"", {}
        if kind == "context_length_exceeded":
            window = self.context_window or _DEFAULT_CONTEXT[api]
            return (*self._context_error(api, max(prompt_tokens, window + 1), max_tokens or 0,
                                         window), {})
        if kind == "malformed":
            return 200, b"<html>502 Bad Gateway</html>", {}
        if kind == "auth":
            if api == "anthropic":
                return 401, wire.error_body(api, 401, "invalid x-api-key",
                                            type="authentication_error"), {}
            message = ("Incorrect API key provided. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.")
            return 401, wire.error_body(api, 401, message, type="invalid_request_error",
                                        code="invalid_api_key"), {}
        raise AssertionError(f"unhandled fault kind {kind!r}")  # pragma: no cover
