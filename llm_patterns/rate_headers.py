"""What a provider's rate-limit headers say, read once for every limiter.

OpenAI sends ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (reset as a Go duration:
"6m0s", "20ms"); Anthropic sends ``anthropic-ratelimit-{requests,input-tokens,output-tokens,
tokens}-{limit,remaining,reset}`` (reset as an RFC 3339 time). Both are read into one
``RateHeaders`` keyed by the limiter's bucket kinds (``requests``, ``tokens``, ``input_tokens``,
``output_tokens``). Unreadable, negative or non-finite values are skipped (logged at DEBUG): a
header never raises past this module. A non-mapping ``headers`` is the caller's mistake: a
``TypeError``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .machines.bucket import INPUT, OUTPUT, REQUESTS, TOKENS

__all__ = ["RateHeaders", "header_number", "parse_duration", "parse_rate_headers"]

logger = logging.getLogger("llm_patterns.rate_limit")

# bucket kind -> (OpenAI's word, Anthropic's word)
_NAMES = {REQUESTS: ("requests", "requests"), TOKENS: ("tokens", "tokens"),
          INPUT: (None, "input-tokens"), OUTPUT: (None, "output-tokens")}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SIMPLE_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float | None:
    """OpenAI's reset durations ("1s", "6m0s", "20ms", "1h2m3.5s", "0.5") as seconds."""
    text = text.strip()
    if not text.endswith(("s", "m", "h")):  # no unit: a plain number of seconds
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) and value >= 0 else None
    simple = _SIMPLE_DURATION.fullmatch(text)  # the common "1.5s" / "20ms"
    if simple is not None:
        return float(simple.group(1)) * _UNITS[simple.group(2)]
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 and math.isfinite(total) else None


def parse_time(text: str) -> float | None:
    """An RFC 3339 time ("2026-12-05T04:52:00Z") as epoch seconds; None if unreadable."""
    try:
        when = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when.timestamp()


def header_number(headers: Mapping[str, Any], *names: str) -> float | None:
    """The first of ``names`` present with a finite number >= 0."""
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(str(raw).strip())
        except ValueError:
            logger.debug("ignoring unreadable header %s=%r", name, raw)
            continue
        if math.isfinite(value) and value >= 0:
            return value
        logger.debug("ignoring out-of-range header %s=%r", name, raw)
    return None


@dataclass(frozen=True)
class RateHeaders:
    """Per bucket kind: ``remaining`` and ``limit`` counts, ``reset_in`` (seconds, OpenAI) and
    ``reset_at`` (epoch seconds, Anthropic). Kinds the provider did not report are absent."""

    remaining: dict[str, float] = field(default_factory=dict)
    limit: dict[str, float] = field(default_factory=dict)
    reset_in: dict[str, float] = field(default_factory=dict)
    reset_at: dict[str, float] = field(default_factory=dict)

    def event_data(self) -> dict[str, Any]:
        """The "sync" event's fields: remaining_<kind>, limit_<kind>, reset_<kind> (seconds),
        reset_<kind>_at (epoch)."""
        data: dict[str, Any] = {f"remaining_{k}": self.remaining.get(k)
                                for k in (REQUESTS, TOKENS)}
        data.update({f"remaining_{k}": v for k, v in self.remaining.items()})
        data.update({f"limit_{k}": v for k, v in self.limit.items()})
        data.update({f"reset_{k}": v for k, v in self.reset_in.items()})
        data.update({f"reset_{k}_at": v for k, v in self.reset_at.items()})
        return data


def _lowered(headers: Any) -> Mapping[str, Any]:
    if not isinstance(headers, Mapping):
        raise TypeError(f"headers must be a mapping of header names to values (a dict or "
                        f"httpx.Headers), got {headers!r}")
    if hasattr(headers, "multi_items"):  # httpx.Headers: already case-insensitive
        return headers
    try:
        return {str(k).lower(): v for k, v in headers.items()}
    except Exception as exc:  # a broken mapping
        raise TypeError(f"headers could not be read as a mapping: {exc}") from exc


def parse_rate_headers(headers: Any) -> RateHeaders:
    """Read OpenAI's and Anthropic's rate-limit headers (see the module docstring)."""
    h = _lowered(headers)
    out = RateHeaders()
    for kind, (openai, anthropic) in _NAMES.items():
        names = {"remaining": [], "limit": [], "reset": []}  # type: dict[str, list[str]]
        if openai is not None:
            for part in names:
                names[part].append(f"x-ratelimit-{part}-{openai}")
        for part in names:
            names[part].append(f"anthropic-ratelimit-{anthropic}-{part}")
        remaining = header_number(h, *names["remaining"])
        if remaining is not None:
            out.remaining[kind] = remaining
        limit = header_number(h, *names["limit"])
        if limit is not None:
            out.limit[kind] = limit
        for name in names["reset"]:
            raw = h.get(name)
            if raw is None:
                continue
            text = str(raw)
            if name.startswith("x-"):
                seconds = parse_duration(text)
                if seconds is not None:
                    out.reset_in[kind] = seconds
            else:
                at = parse_time(text)
                if at is not None:
                    out.reset_at[kind] = at
            if kind not in out.reset_in and kind not in out.reset_at:
                logger.debug("ignoring unreadable header %s=%r", name, raw)
    return out
