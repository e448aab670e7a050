"""The mock's server-side rate limits and the headers that report them, as each API enforces them.

Token buckets refilling ``limit/60`` per second and holding ``burst_seconds`` of refill (the
model both providers document: capacity replenishes continuously up to the limit). A request
is charged at arrival, from every bucket that applies or from none:

- OpenAI: RPM and TPM, ``prompt + max_tokens`` tokens (OpenAI counts ``max_tokens`` at
  arrival). Reported in ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``.
- Anthropic: RPM, ITPM (input tokens; cache reads are not counted, as on current models) and
  OTPM (``max_tokens`` at arrival, settled to the actual output when the answer is done, as
  Anthropic documents), plus the legacy combined TPM when one is set. Reported in
  ``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}``
  with the reset as an RFC 3339 time and token counts rounded to the nearest thousand (as the
  real headers are); the ``tokens`` headers show the most restrictive token limit.

The buckets are the mock's own (a model of the provider, independent of the client-side
limiter it is there to test). Not thread-safe on their own: the server calls them under its lock.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

from .._validate import optional, real
from ..clock import Clock

__all__ = ["Charge", "Demand", "Limit", "ServerLimits", "openai_duration",
           "retry_after_headers"]

_REL_EPS = 1e-9  # float slack, as a fraction of capacity: 0.999999999 tokens counts as 1


def openai_duration(seconds: float) -> str:
    """OpenAI's reset format (a Go duration): "120ms", "1s", "1.5s", "6m0s", "1h2m3s"."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{math.ceil(seconds * 1000 - 1e-9)}ms"
    ms_total = math.ceil(seconds * 1000 - 1e-9)
    hours, rest = divmod(ms_total, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def retry_after_headers(wait: float) -> dict[str, str]:
    """``retry-after`` (whole seconds, rounded up) and ``retry-after-ms`` (ms, rounded up).

    Rounding up means a client that waits exactly the hint finds the capacity there.
    """
    ms = max(1, math.ceil(wait * 1000))
    return {"retry-after": str(max(1, math.ceil(ms / 1000))), "retry-after-ms": str(ms)}


@functools.lru_cache(maxsize=512)
def _rfc3339(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def _fmt_limit(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class Limit:
    """One per-minute limit enforced with a token bucket that starts full."""

    __slots__ = ("_clock", "_eps", "_last", "_level", "capacity", "kind", "per_minute", "refill")

    def __init__(self, kind: str, per_minute: float, burst_seconds: float, clock: Clock) -> None:
        self.kind = kind  # "requests", "tokens", "input-tokens" or "output-tokens"
        self.per_minute = per_minute
        self.refill = per_minute / 60.0
        self.capacity = burst_seconds * self.refill
        if self.capacity < 1:
            raise ValueError(
                f"a {kind} bucket of {per_minute:g}/min over burst_seconds={burst_seconds:g} "
                f"holds {self.capacity:g} < 1: no request could ever pass; "
                "raise the limit or burst_seconds"
            )
        self._clock = clock
        self._eps = self.capacity * _REL_EPS
        self._level = self.capacity
        self._last = clock.now()

    @property
    def available(self) -> float:
        return self.level_at(self._clock.now())

    def level_at(self, now: float) -> float:
        """The level at clock time ``now`` (brought up to date)."""
        if now > self._last:
            self._level = min(self.capacity, self._level + (now - self._last) * self.refill)
            self._last = now
        return self._level

    def wait(self, n: float, level: float) -> float:
        """Seconds until ``n`` is there from ``level`` (0.0: now). Takes nothing."""
        deficit = n - level
        return deficit / self.refill if deficit > self._eps else 0.0

    def take(self, n: float, level: float) -> None:
        """Take ``n`` from ``level``, the level read at the current time."""
        self._level = level - n

    def give_back(self, n: float) -> None:
        self._level = min(self.capacity, self.available + n)

    def reset_in(self, available: float) -> float:
        """Seconds until the bucket is full again from ``available``."""
        return max(0.0, (self.capacity - available) / self.refill)


@dataclass(frozen=True)
class Demand:
    """What one request costs at arrival, per kind of bucket."""

    tokens: int  # prompt + max_tokens (OpenAI TPM, Anthropic's legacy combined TPM)
    input_tokens: int  # Anthropic ITPM: input as counted (cache reads excluded)
    output_tokens: int  # Anthropic OTPM: max_tokens, settled later


@dataclass(frozen=True)
class Charge:
    """The outcome of charging one request: ``ok``, or the wait and the limit that refused."""

    ok: bool
    wait: float = 0.0
    limit: Limit | None = None
    too_large: bool = False
    requested: int = 0


class ServerLimits:
    """The mock's buckets: RPM, TPM, ITPM, OTPM (each None: not limited)."""

    def __init__(self, rpm: float | None, tpm: float | None, burst_seconds: float, clock: Clock,
                 *, itpm: float | None = None, otpm: float | None = None) -> None:
        self.burst_seconds = real("burst_seconds", burst_seconds, minimum=0, strict_min=True)
        self.clock = clock

        def make(kind: str, name: str, value: float | None) -> Limit | None:
            per_minute = optional(real, name, value, minimum=0, strict_min=True)
            return None if per_minute is None else Limit(kind, per_minute, self.burst_seconds,
                                                         clock)

        self.requests = make("requests", "rpm", rpm)
        self.tokens = make("tokens", "tpm", tpm)
        self.input_tokens = make("input-tokens", "itpm", itpm)
        self.output_tokens = make("output-tokens", "otpm", otpm)

    def _get(self, kind: str) -> float | None:
        limit = getattr(self, kind)
        return None if limit is None else float(limit.per_minute)

    @property
    def rpm(self) -> float | None:
        return self._get("requests")

    @property
    def tpm(self) -> float | None:
        return self._get("tokens")

    @property
    def itpm(self) -> float | None:
        return self._get("input_tokens")

    @property
    def otpm(self) -> float | None:
        return self._get("output_tokens")

    def _applying(self, api: str, demand: Demand) -> list[tuple[Limit, int]]:
        pairs: list[tuple[Limit | None, int]] = [(self.requests, 1), (self.tokens, demand.tokens)]
        if api == "anthropic":
            pairs += [(self.input_tokens, demand.input_tokens),
                      (self.output_tokens, demand.output_tokens)]
        return [(limit, n) for limit, n in pairs if limit is not None]

    def charge(self, api: str, demand: Demand) -> Charge:
        """Take 1 request and the demand's tokens from every bucket that applies, or nothing."""
        applying = self._applying(api, demand)
        for limit, n in applying:
            if n > limit.capacity:
                return Charge(False, limit=limit, too_large=True, requested=n)
        now = self.clock.now()
        levels = [limit.level_at(now) for limit, _ in applying]
        worst: tuple[float, Limit, int] | None = None
        for (limit, n), level in zip(applying, levels, strict=False):
            wait = limit.wait(n, level) if n else 0.0
            if wait > 0 and (worst is None or wait > worst[0]):
                worst = (wait, limit, n)
        if worst is not None:
            return Charge(False, wait=worst[0], limit=worst[1], requested=worst[2])
        for (limit, n), level in zip(applying, levels, strict=False):
            limit.take(n, level)
        return Charge(True)

    def settle_output(self, unused: int) -> None:
        """Give back the output tokens charged at arrival but not generated (Anthropic OTPM)."""
        if self.output_tokens is not None and unused > 0:
            self.output_tokens.give_back(unused)

    def openai_headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` for RPM and TPM, as OpenAI sends them."""
        headers: dict[str, str] = {}
        for limit in (self.requests, self.tokens):
            if limit is None:
                continue
            k = limit.kind
            available = limit.available  # read once: the headers describe the same moment
            headers[f"x-ratelimit-limit-{k}"] = _fmt_limit(limit.per_minute)
            headers[f"x-ratelimit-remaining-{k}"] = str(max(0, math.floor(available)))
            headers[f"x-ratelimit-reset-{k}"] = openai_duration(limit.reset_in(available))
        return headers

    def anthropic_headers(self, wall_now: float) -> dict[str, str]:
        """``anthropic-ratelimit-*`` as Anthropic sends them (see the module docstring)."""
        headers: dict[str, str] = {}
        token_limits = [lim for lim in (self.tokens, self.input_tokens, self.output_tokens)
                        if lim is not None]
        entries: list[tuple[str, Limit, float]] = []
        if self.requests is not None:
            entries.append(("requests", self.requests, self.requests.available))
        entries.extend((lim.kind, lim, lim.available) for lim in token_limits
                       if lim is not self.tokens)
        if self.tokens is not None:
            entries.append(("tokens", self.tokens, self.tokens.available))
        elif token_limits:  # the most restrictive token limit in effect
            tightest = min(((lim.available, lim) for lim in token_limits), key=lambda p: p[0])
            entries.append(("tokens", tightest[1], tightest[0]))
        for name, limit, available in entries:
            remaining = max(0, math.floor(available))
            if name != "requests":
                remaining = int(round(remaining, -3))  # "rounded to the nearest thousand"
            reset = math.ceil(wall_now + limit.reset_in(available))  # whole seconds, rounded up
            headers[f"anthropic-ratelimit-{name}-limit"] = _fmt_limit(limit.per_minute)
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = _rfc3339(reset)
        return headers
