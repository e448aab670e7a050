"""The mock's server-side RPM / TPM limits and the headers that report them.

Sized like the client ``RateLimiter``: a ``TokenBucket`` per limit, refilling ``limit/60`` per
second, holding ``burst_seconds`` of refill. A request is charged 1 request and its tokens at
arrival, from both buckets or from neither, the way OpenAI counts ``max_tokens`` against TPM
before doing any work. Not thread-safe on its own: the server calls it under its lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..clock import Clock
from ..rate_limit import TokenBucket

__all__ = ["Charge", "Limit", "ServerLimits", "openai_duration", "retry_after_headers"]


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


def _fmt_limit(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class Limit:
    """One per-minute limit ("requests" or "tokens") enforced with a token bucket."""

    def __init__(self, kind: str, per_minute: float, burst_seconds: float, clock: Clock) -> None:
        if isinstance(per_minute, bool) or not isinstance(per_minute, (int, float)):
            raise TypeError(f"{kind} limit must be a number, got {per_minute!r}")
        if not (math.isfinite(per_minute) and per_minute > 0):
            raise ValueError(f"{kind} per minute must be a finite number > 0, got {per_minute!r}")
        self.kind = kind
        self.per_minute = float(per_minute)
        self.refill = self.per_minute / 60.0
        self.capacity = burst_seconds * self.refill
        if self.capacity < 1:
            raise ValueError(
                f"a {kind} bucket of {self.per_minute:g}/min over burst_seconds={burst_seconds:g} "
                f"holds {self.capacity:g} < 1: no request could ever pass; "
                "raise the limit or burst_seconds"
            )
        self.bucket = TokenBucket(self.capacity, self.refill, clock=clock)

    @property
    def available(self) -> float:
        return float(self.bucket.available)

    def reset_in(self, available: float | None = None) -> float:
        """Seconds until the bucket is full again (from ``available`` tokens, if read already)."""
        if available is None:
            available = self.available
        return max(0.0, (self.capacity - available) / self.refill)


@dataclass(frozen=True)
class Charge:
    """The outcome of charging one request: ``ok``, or the wait and the limit that refused."""

    ok: bool
    wait: float = 0.0
    limit: Limit | None = None
    too_large: bool = False


class ServerLimits:
    """The mock's RPM and TPM buckets (either may be None: not limited)."""

    def __init__(
        self, rpm: float | None, tpm: float | None, burst_seconds: float, clock: Clock
    ) -> None:
        if isinstance(burst_seconds, bool) or not isinstance(burst_seconds, (int, float)):
            raise TypeError(f"burst_seconds must be a number, got {burst_seconds!r}")
        if not (math.isfinite(burst_seconds) and burst_seconds > 0):
            raise ValueError(f"burst_seconds must be a finite number > 0, got {burst_seconds!r}")
        self.burst_seconds = float(burst_seconds)
        self.requests = None if rpm is None else Limit("requests", rpm, burst_seconds, clock)
        self.tokens = None if tpm is None else Limit("tokens", tpm, burst_seconds, clock)

    @property
    def rpm(self) -> float | None:
        return None if self.requests is None else self.requests.per_minute

    @property
    def tpm(self) -> float | None:
        return None if self.tokens is None else self.tokens.per_minute

    def charge(self, tokens: int) -> Charge:
        """Take 1 request and ``tokens`` tokens, all or nothing."""
        if self.tokens is not None and tokens > self.tokens.capacity:
            return Charge(False, limit=self.tokens, too_large=True)
        wait_r = self.requests.bucket.wait_time(1) if self.requests is not None else 0.0
        wait_t = self.tokens.bucket.wait_time(tokens) if self.tokens is not None and tokens else 0.0
        if wait_r > 0 or wait_t > 0:
            limit = self.requests if wait_r >= wait_t else self.tokens
            return Charge(False, wait=max(wait_r, wait_t), limit=limit)
        if self.requests is not None and not self.requests.bucket.consume(1):
            return Charge(False, wait=self.requests.bucket.wait_time(1), limit=self.requests)
        if self.tokens is not None and tokens and not self.tokens.bucket.consume(tokens):
            # cannot happen under the server's lock (wait_time said 0); never hand out a free pass
            return Charge(False, wait=self.tokens.bucket.wait_time(tokens), limit=self.tokens)
        return Charge(True)

    def openai_headers(self) -> dict[str, str]:
        """``x-ratelimit-*`` for each configured limit, as OpenAI sends them."""
        headers: dict[str, str] = {}
        for limit in (self.requests, self.tokens):
            if limit is None:
                continue
            k = limit.kind
            available = limit.available  # read once: both headers describe the same moment
            headers[f"x-ratelimit-limit-{k}"] = _fmt_limit(limit.per_minute)
            headers[f"x-ratelimit-remaining-{k}"] = str(max(0, math.floor(available)))
            headers[f"x-ratelimit-reset-{k}"] = openai_duration(limit.reset_in(available))
        return headers

    def anthropic_headers(self, wall_now: float) -> dict[str, str]:
        """``anthropic-ratelimit-*`` (reset as an RFC 3339 time), as Anthropic sends them."""
        import datetime as _dt

        headers: dict[str, str] = {}
        for limit in (self.requests, self.tokens):
            if limit is None:
                continue
            k = limit.kind
            available = limit.available
            reset = _dt.datetime.fromtimestamp(wall_now + limit.reset_in(available),
                                               tz=_dt.timezone.utc)
            headers[f"anthropic-ratelimit-{k}-limit"] = _fmt_limit(limit.per_minute)
            headers[f"anthropic-ratelimit-{k}-remaining"] = str(max(0, math.floor(available)))
            headers[f"anthropic-ratelimit-{k}-reset"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
        return headers
