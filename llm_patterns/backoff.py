"""Exponential backoff with jitter: how long to wait before the next attempt.

The un-jittered delay for attempt ``a`` (0-based) is ``min(base_delay * multiplier**a,
max_delay)``: 1, 2, 4, 8 ... s with the defaults. Jitter spreads clients that failed together so
they do not all come back in the same instant (AWS, "Exponential Backoff and Jitter"):

| jitter         | delay                                   |
|----------------|-----------------------------------------|
| "none"         | d                                       |
| "full"         | U(0, d)                                 |
| "equal"        | d/2 + U(0, d/2)                         |
| "decorrelated" | min(max_delay, U(base_delay, 3 * previous)) |

``max_delay`` holds after jitter, always, and the exponent never overflows (attempt 10**9 is fine).
Full (the default) and decorrelated jitter spread a herd best; equal jitter keeps a floor of d/2.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from . import _validate as v

__all__ = ["JITTER_MODES", "BackoffPolicy"]

JITTER_MODES = ("none", "full", "equal", "decorrelated")

# Shared source for callers that pass no rng. random.Random's methods are safe to share between
# threads in CPython (each draw is one C call under the GIL).
_default_rng = random.Random()


@dataclass(frozen=True)
class BackoffPolicy:
    """How long to wait before retry number ``attempt`` (0-based): exponential, capped, jittered.

    A frozen, hashable value: share one policy between any number of callers and threads.
    """

    base_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: str = "full"

    def __post_init__(self) -> None:
        base = v.real("base_delay", self.base_delay, minimum=0.0, strict_min=True)
        mult = v.real("multiplier", self.multiplier, minimum=1.0)
        cap = v.real("max_delay", self.max_delay)
        if not cap >= base:
            raise ValueError(f"max_delay must be >= base_delay ({base:g}), got {self.max_delay!r}")
        v.choice("jitter", self.jitter, JITTER_MODES)
        object.__setattr__(self, "base_delay", base)
        object.__setattr__(self, "multiplier", mult)
        object.__setattr__(self, "max_delay", cap)

    def exponential(self, attempt: int) -> float:
        """The un-jittered delay ``min(base_delay * multiplier**attempt, max_delay)``.

        Computed without overflow: past the attempt where the curve crosses ``max_delay`` the
        power is never evaluated.
        """
        attempt = v.integer("attempt", attempt, minimum=0)
        base, mult, cap = self.base_delay, self.multiplier, self.max_delay
        if mult == 1.0 or cap == base:
            return base
        # base * mult**a >= cap  <=>  a >= log(cap/base) / log(mult); one step of slack for rounding
        if attempt > math.log(cap / base) / math.log(mult) + 1:
            return cap
        try:
            return min(base * mult**attempt, cap)
        except OverflowError:  # a second guard: float pow raises rather than returning inf
            return cap

    def delay(
        self,
        attempt: int,
        rng: random.Random | None = None,
        previous: float | None = None,
    ) -> float:
        """Seconds to wait before retry ``attempt`` (0-based), jittered with ``rng``, <= max_delay.

        ``previous`` is the last delay, used by decorrelated jitter (default ``base_delay``);
        the other modes ignore it.
        """
        d = self.exponential(attempt)
        r = _default_rng if rng is None else rng
        mode = self.jitter
        if mode == "none":
            value = d
        elif mode == "full":
            value = r.uniform(0.0, d)
        elif mode == "equal":
            value = d / 2 + r.uniform(0.0, d / 2)
        else:  # decorrelated
            if previous is None:
                prev = self.base_delay
            else:
                prev = v.real("previous", previous, minimum=0.0)
            # U(base, 3*prev); when 3*prev < base the draw stays at >= base (the AWS floor)
            hi = max(self.base_delay, 3.0 * prev)
            value = r.uniform(self.base_delay, hi) if math.isfinite(hi) else self.max_delay
        # the cap holds after jitter (and rounding), always
        return max(0.0, min(value, self.max_delay))

    def delays(self, n: int, rng: random.Random | None = None) -> Iterator[float]:
        """The first ``n`` delays (attempts 0 .. n-1), each fed into the next as ``previous``."""
        return self._iter_delays(v.integer("n", n, minimum=0), rng)

    def _iter_delays(self, n: int, rng: random.Random | None) -> Iterator[float]:
        previous: float | None = None
        for attempt in range(n):
            previous = self.delay(attempt, rng, previous)
            yield previous
