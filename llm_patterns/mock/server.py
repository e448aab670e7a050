"""``MockLLMServer``: an OpenAI / Anthropic look-alike that misbehaves on demand.

It answers ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic) in
process, through ``httpx.MockTransport``, so students, tests, notebooks, benchmarks and demos can
meet every answer the real APIs send: 429s from real RPM/TPM (OpenAI) and RPM/ITPM/OTPM
(Anthropic) buckets with their headers, outages, billing errors, timeouts, overloads,
context-window errors, HTML from a proxy, bad keys, unknown models, refusals, streams that die
part-way, and 400s for requests the real API would refuse.

How a request is answered, in order (the first rule that applies wins):

1. unknown path -> 404, not POST -> 405, body above ``max_body_bytes`` -> 413, a content type
   that is not JSON -> 415 (the gateway's answers: before anything else);
2. a queued ``fail_next`` fault (first in, first out; see ``faults.FAULT_KINDS``);
3. ``take_down`` (until ``bring_up``), then any ``outage(start, end)`` window containing now;
4. a body the API would refuse -> 400 in its envelope (``request.py``);
5. ``context_window``: prompt + max_tokens above it -> 400 ``context_length_exceeded``;
6. the rate limits (``limits.py``): all buckets or none, else 429 with the exact wait;
7. ``error_rate``: a seeded 500 (after the charge: the work was accepted, then failed);
8. the completion (``replies.py``): text or a tool call, deterministic from the seed and the
   request; streamed as server-sent events when the request asks (``stream.py``).

Every answer carries a request id (``x-request-id``; Anthropic ``request-id``). Every answer
except a 429 takes ``latency`` seconds on the injected clock before its first byte (429s are
immediate: providers refuse before doing any work); a stream then takes ``chunk_delay`` per
content delta. With a ``VirtualClock`` and a seed a run is exactly reproducible and costs no
real time; the async path awaits ``clock.asleep`` so concurrent requests overlap in virtual time.
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

from .._validate import boolean, choice, integer, optional, real, text
from ..clock import Clock, SystemClock
from ..events import Observable
from ..tokens import CHARS_PER_TOKEN, estimate_tokens
from . import faults, wire
from .apis import APIS, BASE_URLS, DEFAULT_MODELS, api_for_path
from .caching import NO_CACHE, CacheUse, PromptCache
from .direct import DirectProvider
from .limits import Demand, ServerLimits, retry_after_headers
from .replies import make_reply
from .request import BadRequest, ChatRequest, parse_request
from .stream import EventStream, StreamPlan, build_stream

__all__ = ["APIS", "FAULT_KINDS", "MAX_BODY_BYTES", "MockLLMServer", "Plan"]

logger = logging.getLogger("llm_patterns.mock")

FAULT_KINDS = tuple(faults.FAULT_KINDS)
MAX_BODY_BYTES = 32 * 1024 * 1024  # Anthropic's documented limit for the Messages API

# Wall-clock origin for a non-system clock, so "created" is a plausible, reproducible timestamp.
_VIRTUAL_EPOCH = 1_700_000_000
_JSON_TYPES = ("application/json",)

Latency = float | Callable[[random.Random], float]
_UNSET: Any = object()


@dataclass(frozen=True)
class _Fault:
    """A queued ``fail_next`` fault and its options."""

    kind: str
    status: int | None
    should_retry: bool | None

    def mark(self, headers: dict[str, str]) -> None:
        """Add the server's word on retrying, when the fault has one."""
        if self.should_retry is not None:
            headers["x-should-retry"] = "true" if self.should_retry else "false"


@dataclass
class Plan:
    """What the server decided at arrival: the answer, and how long it takes to give it."""

    status: int | None  # None: no answer (a timeout, or a dropped connection when ``dropped``)
    body: Any  # a JSON-able answer, or bytes sent as they are (HTML, or b"" for no answer)
    headers: dict[str, str]
    delay: float
    record: dict[str, Any]
    stream: StreamPlan | None = None
    dropped: bool = False
    unused_output: int = 0  # OTPM charged at arrival and not generated: given back when done

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


def _error_status(name: str, status: Any) -> int:
    return integer(name, status, minimum=400, maximum=599)


class MockLLMServer(Observable):
    """An in-process OpenAI / Anthropic API with real rate limits and faults on demand.

    ``rpm`` / ``tpm``: per-minute limits (None: unlimited), buckets holding ``burst_seconds``
    of refill; ``itpm`` / ``otpm``: Anthropic's input / output token limits (its endpoint only).
    ``latency``: seconds to the first byte, or ``callable(rng) -> seconds`` for seeded jitter;
    ``chunk_delay``: seconds between two streamed content deltas. ``error_rate``: seeded
    probability of a 500. ``api`` picks the base URL and the error format for unknown paths
    (both endpoints always answer). ``model``: the model named in answers (None: echo the
    request's). ``tpm_multiplier``: the server's token count is that many times the shared
    estimate (a tokenizer mismatch). ``context_window``: prompt + max_tokens above it answers
    ``context_length_exceeded``. ``timeout_after``: how long a ``timeout`` fault hangs (None:
    the request's read timeout, else ``latency``). ``prompt_caching``: report cache reads and
    writes as each API bills them (``caching.py``; off: every prompt token is uncached).
    ``reasoning_tokens``: hidden reasoning tokens each OpenAI answer spends before its text
    (reported in ``completion_tokens_details``, counted against max_tokens).
    ``max_body_bytes``: larger request bodies are refused with 413.
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
        itpm: float | None = None,
        otpm: float | None = None,
        chunk_delay: float = 0.0,
        prompt_caching: bool = False,
        reasoning_tokens: int = 0,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.api = choice("api", api, APIS)
        self.seed = integer("seed", seed)
        if not callable(latency):
            latency = real("latency", latency, minimum=0)
        self.latency: Latency = latency
        self.error_rate = real("error_rate", error_rate, minimum=0, maximum=1)
        self.tpm_multiplier = real("tpm_multiplier", tpm_multiplier, minimum=0, strict_min=True)
        self.context_window: int | None = optional(integer, "context_window", context_window,
                                                   minimum=1)
        self.timeout_after: float | None = optional(real, "timeout_after", timeout_after,
                                                    minimum=0)
        self.model: str | None = optional(text, "model", model)
        self.name = text("name", name)
        self.keep_log = boolean("keep_log", keep_log)
        self._log_size = integer("log_size", log_size, minimum=1)
        self.chunk_delay = real("chunk_delay", chunk_delay, minimum=0)
        self.prompt_caching = boolean("prompt_caching", prompt_caching)
        self.reasoning_tokens = integer("reasoning_tokens", reasoning_tokens, minimum=0)
        self.max_body_bytes = integer("max_body_bytes", max_body_bytes, minimum=1)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._limits = ServerLimits(rpm, tpm, burst_seconds, self.clock, itpm=itpm, otpm=otpm)
        self._outages: list[tuple[float, float, int]] = []
        self._down: int | None = None
        self._faults: deque[_Fault] = deque()
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

    def provider(self, name: str, model: str | None = None, *, api: str | None = None,
                 timeout: float | httpx.Timeout | None = None,
                 clock: Clock | None = None) -> DirectProvider:
        """A provider answered by this server in process, without HTTP or JSON (fast).

        It behaves as ``OpenAIProvider`` / ``AnthropicProvider`` (``api``, default this server's)
        wired to ``client()`` would: same validation, same decisions (buckets, faults, latency
        on the clock, stats), same §3 errors with ``retry_after``; see ``mock.direct``.
        """
        return DirectProvider(self, name, model, api=api or self.api, timeout=timeout,
                              clock=clock)

    # ------------------------------------------------------------------ controls

    def outage(self, start: float, end: float, status: int = 503) -> None:
        """Answer ``status`` to every request arriving at clock time ``start <= now < end``."""
        start = real("start", start, minimum=0)
        end = real("end", end, minimum=0)
        if not start < end:
            raise ValueError(f"outage start must be before end, got start={start!r}, end={end!r}")
        status = _error_status("status", status)
        with self._lock:
            self._outages.append((start, end, status))
        logger.info("%s: outage scheduled from t=%.3f to t=%.3f with HTTP %d",
                    self.name, start, end, status)

    def fail_next(self, kind: str, count: int = 1, *, status: int | None = None,
                  should_retry: bool | None = None) -> None:
        """Queue ``count`` answers of fault ``kind`` (see ``FAULT_KINDS``) for the next requests.

        ``status`` sends the fault's body with another HTTP status (a billing code with 402,
        say); ``should_retry`` adds ``x-should-retry: true|false``, the server's word on
        retrying that both official SDKs obey.
        """
        choice("kind", kind, FAULT_KINDS)
        integer("count", count, minimum=1)
        status = optional(_error_status, "status", status)
        should_retry = optional(boolean, "should_retry", should_retry)
        with self._lock:
            self._faults.extend([_Fault(kind, status, should_retry)] * count)
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
        burst_seconds: float = _UNSET, itpm: float | None = _UNSET, otpm: float | None = _UNSET,
    ) -> None:
        """Change limits (None removes one); the new buckets start full."""
        with self._lock:
            lim = self._limits

            def pick(value: Any, old: Any) -> Any:
                return old if value is _UNSET else value

            new = ServerLimits(pick(rpm, lim.rpm), pick(tpm, lim.tpm),
                               pick(burst_seconds, lim.burst_seconds), self.clock,
                               itpm=pick(itpm, lim.itpm), otpm=pick(otpm, lim.otpm))
            self._limits = new
        logger.info("%s: limits now rpm=%s tpm=%s itpm=%s otpm=%s burst_seconds=%g", self.name,
                    new.rpm, new.tpm, new.itpm, new.otpm, new.burst_seconds)

    def set_error_rate(self, p: float) -> None:
        """Change the probability of a random 500."""
        p = real("error_rate", p, minimum=0, maximum=1)
        with self._lock:
            self.error_rate = p

    def reset(self) -> None:
        """Back to a freshly built server with the current settings: stats, faults, outages,
        take_down, full buckets, an empty prompt cache and re-seeded randomness."""
        with self._lock:
            self._outages.clear()
            self._faults.clear()
            self._down = None
            lim = self._limits
            self._limits = ServerLimits(lim.rpm, lim.tpm, lim.burst_seconds, self.clock,
                                        itpm=lim.itpm, otpm=lim.otpm)
            self._reset_state()

    def _reset_state(self) -> None:
        self._ids = random.Random(f"{self.seed}:ids")
        self._errors = random.Random(f"{self.seed}:errors")
        self._jitter = random.Random(f"{self.seed}:latency")
        self._cache = PromptCache(self.clock.now)
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
    def itpm(self) -> float | None:
        return self._limits.itpm

    @property
    def otpm(self) -> float | None:
        return self._limits.otpm

    @property
    def pending_faults(self) -> list[str]:
        """The queued ``fail_next`` faults, next first."""
        with self._lock:
            return [f.kind for f in self._faults]

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot: requests, by_status, by_fault, tokens_charged, rejected_429, timeouts,
        the limits and what is left in the buckets, and ``log`` (one dict per request)."""
        with self._lock:
            lim = self._limits

            def left(limit: Any) -> float | None:
                return None if limit is None else limit.available

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
                "itpm": lim.itpm,
                "otpm": lim.otpm,
                "requests_remaining": left(lim.requests),
                "tokens_remaining": left(lim.tokens),
                "input_tokens_remaining": left(lim.input_tokens),
                "output_tokens_remaining": left(lim.output_tokens),
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
        return self._respond(request, plan)

    async def ahandle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request (async): the latency is awaited on the clock."""
        await request.aread()
        plan = self._arrive(request)
        await self.clock.asleep(plan.delay)
        return self._respond(request, plan)

    def _respond(self, request: httpx.Request, plan: Plan) -> httpx.Response:
        self.settle(plan)
        if plan.status is None:
            if plan.dropped:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                                request=request)
            raise httpx.ReadTimeout(
                f"mock timeout: no answer after {plan.delay:g} s", request=request
            )
        if plan.stream is not None:
            return httpx.Response(plan.status, headers=plan.headers,
                                  stream=EventStream(plan.stream, self.clock), request=request)
        return httpx.Response(plan.status, headers=plan.headers, content=plan.content(),
                              request=request)

    def settle(self, plan: Plan) -> None:
        """The answer is given: output tokens not generated go back to the OTPM bucket, and
        the "request" event is emitted (at answer time, after the latency)."""
        if plan.unused_output:
            with self._lock:
                self._limits.settle_output(plan.unused_output)
        if self._subscribers:
            rec = plan.record
            self._emit("request", self.clock.now(), path=rec["path"], status=rec["status"],
                       prompt_tokens=rec["prompt_tokens"], max_tokens=rec["max_tokens"],
                       tokens_charged=rec["tokens_charged"], fault=rec["fault"])

    def refuse_oversized(self, method: str, path: str, length: int) -> Plan:
        """The 413 for a body of ``length`` bytes, decided from its Content-Length before any
        of it is read (the HTTP front end's path; in process the body's size is checked)."""
        return self.decide(api_for_path(path), method, path, None, None, None,
                           gate=self._too_large(api_for_path(path) or self.api, length))

    def _too_large(self, api: str, length: int) -> tuple[int, str, str | None]:
        if api == "anthropic":
            return (413, ("Request exceeds the maximum allowed number of bytes. The maximum "
                    f"request size is {self.max_body_bytes} bytes."), "request_too_large")
        return (413, (f"Request too large: the body is {length} bytes; the maximum is "
                f"{self.max_body_bytes} bytes."), None)

    def _wall(self, now: float) -> float:
        return time.time() if isinstance(self.clock, SystemClock) else _VIRTUAL_EPOCH + now

    def _latency(self) -> float:
        if callable(self.latency):
            return real("latency callable's result", self.latency(self._jitter), minimum=0)
        return self.latency

    def _arrive(self, request: httpx.Request) -> Plan:
        """Read the request (gateway checks, then the API's rules) and decide its answer."""
        path = request.url.path
        route = api_for_path(path)
        parsed: ChatRequest | None = None
        bad: BadRequest | None = None
        gate: tuple[int, str, str | None] | None = None
        if route is not None and request.method == "POST":
            content = request.content
            ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if len(content) > self.max_body_bytes:
                gate = self._too_large(route, len(content))
            elif ctype not in _JSON_TYPES:
                gate = (415, (f"Unsupported content type {ctype or '(none)'!r}: send the body as "
                        "application/json."), None)
            else:
                try:
                    parsed = parse_request(route, content)
                except BadRequest as exc:
                    bad = exc
        read = (request.extensions.get("timeout") or {}).get("read")
        return self.decide(route, request.method, path, parsed, bad, read, gate=gate)

    def decide(self, route: str | None, method: str, path: str, parsed: ChatRequest | None,
               bad: BadRequest | None, read_timeout: float | None, *,
               gate: tuple[int, str, str | None] | None = None) -> Plan:
        """The answer to a request already read (by ``_arrive``, the HTTP front end or a direct
        provider): under the lock, no sleeping; ``settle`` once it is given."""
        api = route or self.api
        prompt_tokens = 0
        if parsed is not None:
            prompt_tokens = self._count(parsed.prompt)
        max_tokens = parsed.max_tokens if parsed is not None else None

        with self._lock:
            now = self.clock.now()
            ident = wire.request_id(api, self._ids)
            headers: dict[str, str] = {"content-type": "application/json"}
            headers["request-id" if api == "anthropic" else "x-request-id"] = ident
            delay = self._latency()
            fault: str | None = None
            charged = 0
            unused = 0
            stream: StreamPlan | None = None
            dropped = False
            status: int | None
            body: Any

            def err(code_status: int, message: str, **kw: Any) -> tuple[int, Any]:
                return code_status, wire.error_body(api, code_status, message,
                                                    request_id=ident, **kw)

            if route is None:
                fault = "not_found"
                status, body = err(404, f"Invalid URL ({method} {path})")
            elif method != "POST":
                fault = "method_not_allowed"
                status, body = err(405, f"Method {method} not allowed on {path}; use POST")
            elif gate is not None:
                fault = "too_large" if gate[0] == 413 else "unsupported_media_type"
                status, body = err(gate[0], gate[1], type=gate[2])
            elif self._faults and not self._deferred(self._faults[0].kind, parsed):
                queued = self._faults.popleft()
                fault = queued.kind
                ctx = self._fault_context(api, parsed, prompt_tokens, ident, now)
                answer = faults.fault_answer(fault, ctx)
                status, body, dropped = answer.status, answer.body, answer.dropped
                headers.update(answer.headers)
                if status is not None and queued.status is not None:
                    status = queued.status
                queued.mark(headers)
                if status is None and not dropped:
                    delay = self._timeout_delay(read_timeout, delay)
                elif dropped:
                    delay = 0.0
            elif self._down is not None or self._in_outage(now) is not None:
                fault = "down" if self._down is not None else "outage"
                status = self._down if self._down is not None else self._in_outage(now)
                assert status is not None
                _, body = err(status, f"The service is unavailable (mock {fault}, HTTP {status})")
            elif bad is not None:
                fault = "bad_request"
                status, body = err(400, bad.message, param=bad.param, code=bad.code)
            elif (self.context_window is not None and parsed is not None
                  and prompt_tokens + parsed.max_tokens > self.context_window):
                fault = "context_window"
                ctx = self._fault_context(api, parsed, prompt_tokens, ident, now)
                answer = faults.context_error(ctx, prompt_tokens, self.context_window)
                status, body = answer.status, answer.body
            else:
                assert parsed is not None
                head = self._faults[0] if self._faults else None
                status, body, charged, fault, unused, stream = self._charge_and_answer(
                    api, parsed, prompt_tokens, ident, now, headers,
                    head.kind if head is not None else None,
                )
                if head is not None and fault == head.kind:  # the fault changed this answer
                    self._faults.popleft()
                    head.mark(headers)
            if status == 429:
                delay = 0.0  # providers refuse before doing any work
            if api == "anthropic":
                headers.update(self._limits.anthropic_headers(self._wall(now)))
            else:
                headers.update(self._limits.openai_headers())
            if stream is not None:
                headers["content-type"] = "text/event-stream; charset=utf-8"
            elif isinstance(body, bytes) and status is not None:
                headers["content-type"] = "text/html; charset=utf-8"
            record = {
                "time": now,
                "path": path,
                "status": status,
                "prompt_tokens": prompt_tokens,
                "max_tokens": max_tokens,
                "tokens_charged": charged,
                "fault": fault,
            }
            self._record(record)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s: %s %s -> %s (prompt %d tokens, fault %s, %s)", self.name, method,
                         path, status if status is not None else "no answer", prompt_tokens,
                         fault, ident)
        return Plan(status, body, headers, delay, record, stream, dropped, unused)

    def _count(self, prompt: str) -> int:
        """The server's token count of a prompt (the shared estimate times the multiplier)."""
        if self.tpm_multiplier == 1.0:
            return estimate_tokens(prompt)
        return math.ceil(round(estimate_tokens(prompt) * self.tpm_multiplier, 6))

    @staticmethod
    def _deferred(kind: str, parsed: ChatRequest | None) -> bool:
        """Whether a queued fault changes the completion rather than replacing it: it then waits
        for the completion step, after the limits (a refusal on a completion, a break in a
        stream; a stream fault on a request that does not stream is answered at once)."""
        if kind in faults.REPLY_FAULTS:
            return True
        return kind in faults.STREAM_FAULTS and (parsed is None or parsed.stream)

    def _fault_context(self, api: str, parsed: ChatRequest | None, prompt_tokens: int,
                       ident: str, now: float) -> faults.FaultContext:
        model = self.model or (parsed.model if parsed is not None else None) or DEFAULT_MODELS[api]
        return faults.FaultContext(api, model, prompt_tokens,
                                   parsed.max_tokens if parsed is not None else 0,
                                   self.context_window, ident, self._wall(now))

    def _record(self, record: dict[str, Any]) -> None:
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

    def _cache_use(self, api: str, parsed: ChatRequest, model: str, commit: bool) -> CacheUse:
        if not self.prompt_caching:
            return NO_CACHE
        if api == "anthropic":
            return self._cache.anthropic(model, parsed.prompt, parsed.breakpoints, self._count,
                                         commit=commit)
        return self._cache.openai(model, parsed.prompt, self._count, commit=commit,
                                  chars_per_token=CHARS_PER_TOKEN / self.tpm_multiplier)

    def _charge_and_answer(
        self, api: str, parsed: ChatRequest, prompt_tokens: int, ident: str, now: float,
        headers: dict[str, str], reply_fault: str | None,
    ) -> tuple[int, Any, int, str | None, int, StreamPlan | None]:
        """Charge the buckets: a 429 if they refuse, else a 500 (error_rate) or a completion.
        Returns (status, body, tokens charged, fault, unused output tokens, stream plan)."""
        model = self.model or parsed.model or DEFAULT_MODELS[api]
        cache = self._cache_use(api, parsed, model, commit=False)
        tokens = prompt_tokens + parsed.max_tokens
        demand = Demand(tokens, prompt_tokens - cache.read, parsed.max_tokens)
        charge = self._limits.charge(api, demand)
        if not charge.ok:
            status, body, fault = self._refusal(api, model, charge, headers)
            return status, body, 0, fault, 0, None
        if self.prompt_caching:
            self._cache_use(api, parsed, model, commit=True)
        if self.error_rate > 0 and self._errors.random() < self.error_rate:
            ctx = self._fault_context(api, parsed, prompt_tokens, ident, now)
            answer = faults.fault_answer("server_error", ctx)
            return answer.status or 500, answer.body, tokens, "error_rate", 0, None
        reply = make_reply(api, self.seed, parsed, content_filter=reply_fault == "content_filter",
                           reasoning_tokens=self.reasoning_tokens)
        usage = wire.Usage(prompt_tokens, reply.output_tokens, cache.read, cache.write_5m,
                           cache.write_1h, reply.reasoning_tokens)
        unused = max(0, parsed.max_tokens - reply.output_tokens) if api == "anthropic" else 0
        created = int(self._wall(now))
        if parsed.stream:
            plan = build_stream(api, ident=ident, created=created, model=model, reply=reply,
                                usage=usage, include_usage=parsed.include_usage,
                                gap=self.chunk_delay,
                                fault=reply_fault if reply_fault in faults.STREAM_FAULTS
                                else None, request_id=ident)
            return 200, b"", tokens, reply_fault, unused, plan
        body = wire.success_body(api, ident=ident, created=created, model=model, reply=reply,
                                 usage=usage)
        return 200, body, tokens, reply_fault, unused, None

    def _refusal(self, api: str, model: str, charge: Any,
                 headers: dict[str, str]) -> tuple[int, Any, str]:
        """The 429 of a refused charge, worded as each API words it."""
        limit = charge.limit
        assert limit is not None
        ident = headers.get("request-id")
        units = {"requests": "requests per min (RPM)", "tokens": "tokens per min (TPM)",
                 "input-tokens": "input tokens per minute",
                 "output-tokens": "output tokens per minute"}
        if charge.too_large:
            message = (f"Request too large for {model} on {units[limit.kind]}: Limit "
                       f"{limit.per_minute:g} (a burst of at most {limit.capacity:g}), "
                       f"Requested {charge.requested}. The input or output tokens must be reduced "
                       "in order to run successfully.")
            body = wire.error_body(api, 429, message,
                                   type="tokens" if api == "openai" else None,
                                   code="rate_limit_exceeded", request_id=ident)
            return 429, body, "request_too_large"
        wait_headers = retry_after_headers(charge.wait)
        if api == "anthropic":
            headers["retry-after"] = wait_headers["retry-after"]  # seconds only, as Anthropic
            unit = {"requests": "requests", "tokens": "tokens", "input-tokens": "input tokens",
                    "output-tokens": "output tokens"}[limit.kind]
            message = (f"This request would exceed the rate limit for your organization of "
                       f"{limit.per_minute:,.0f} {unit} per minute. For details, refer to: "
                       "https://docs.claude.com/en/api/rate-limits. You can see the response "
                       "headers for current usage. Please reduce the prompt length or the "
                       "maximum tokens requested, or try again later.")
            return 429, wire.error_body(api, 429, message, request_id=ident), "rate_limited"
        headers.update(wait_headers)
        used = max(0, math.ceil(limit.capacity - limit.available))
        message = (f"Rate limit reached for {model} on {units[limit.kind]}: Limit "
                   f"{limit.per_minute:g}, Used {used}, Requested {charge.requested}. Please try "
                   f"again in {wait_headers['retry-after-ms']}ms.")
        body = wire.error_body(api, 429, message, type=limit.kind, code="rate_limit_exceeded")
        return 429, body, "rate_limited"
