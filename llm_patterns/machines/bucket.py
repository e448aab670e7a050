"""The token-bucket machine: the one definition of a rate limiter's arithmetic.

A limiter is a few buckets, each a ``Limit``: what it counts (``requests``, ``tokens``,
``input_tokens``, ``output_tokens``), its rate per minute, its ``capacity`` (the burst) and
``ceiling`` (the largest single charge it ever admits). A bucket's level refills continuously at
``per_minute / 60`` per second and never rises above ``capacity``. A ``Demand`` (one request,
its input and output tokens) costs, in each kind of bucket:

| bucket          | charged at arrival           | settled to (``settle``)     |
|-----------------|------------------------------|-----------------------------|
| requests        | ``requests``                 | actual ``requests``         |
| tokens          | ``input x ratio + output``   | actual ``input + output``   |
| input_tokens    | ``input x ratio``            | actual ``input``            |
| output_tokens   | ``output`` (``max_tokens``)  | actual ``output``           |

and is charged to every bucket at once or to none (``take``). A cost above ``capacity`` but
within ``ceiling`` (an *overdraft*) is admitted when that bucket is full and leaves a debt that
refill pays off before anything else passes: the long-run rate stays exact and a request larger
than a one-second slice is never refused for it (providers refuse only what exceeds a whole
minute's limit).

``ratio`` is the learned estimate error: the provider may count more input tokens than we
estimate (another tokenizer, hidden system tokens). ``settle`` feeds each call's estimated and
actual input tokens to decayed sums; once recent calls count more than estimated on average,
the ratio charged is ``actual / estimated`` over them plus their mean deviation from it (a
cushion for calls that count more than average), at most ``MAX_RATIO``. It is never below 1: a
provider that counts fewer tokens than we estimate is simply over-charged until ``settle``
gives the difference back.

Everything here is pure: state plus transitions, ``now`` passed in, no clock read, no I/O, no
lock. ``RateLimiter`` runs it under its lock; the memory and SQLite stores run it inside one
atomic step over a JSON record (``from_record`` / ``to_record``); ``state/redis.py`` holds its
Lua port, held to the same contract by the same tests. The FIFO projection (``Projection``,
``serve``) and the shared ticket queue (``queue_*``) live here too, so the in-process queue and
the store's queue agree on who is served when.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MethodType
from typing import Any

from .._validate import real
from ..protocols import MAX_COUNT, Demand

__all__ = [
    "INPUT",
    "KINDS",
    "MAX_PAUSE",
    "MAX_RATIO",
    "OUTPUT",
    "REQUESTS",
    "TOKENS",
    "Buckets",
    "GrantLog",
    "Limit",
    "as_demand",
    "check_fits",
    "costs_of",
    "limits_for",
    "new_record",
    "queue_leave",
    "queue_step",
]

REQUESTS, TOKENS, INPUT, OUTPUT = "requests", "tokens", "input_tokens", "output_tokens"
KINDS = (REQUESTS, TOKENS, INPUT, OUTPUT)
_CODE = {kind: i for i, kind in enumerate(KINDS)}

REL_EPS = 1e-9  # float slack as a fraction of capacity: 0.999999999 tokens counts as 1
MAX_RATIO = 4.0  # the most the learned estimate error may multiply an input estimate by
RATIO_DECAY = 0.9  # weight of the past in the learned ratio's sums (~10 calls of memory)
MIN_SAMPLE = 1.0  # input estimates below this teach nothing (a ratio of tiny counts is noise)
MAX_PAUSE = 86_400.0  # seconds: the longest pause any runtime keeps, whatever it is asked


@dataclass(frozen=True, slots=True)
class Limit:
    """One bucket: ``kind`` (one of ``KINDS``), ``per_minute``, ``capacity`` (the burst, in
    units of ``kind``) and ``ceiling`` (the largest single charge admitted, >= capacity)."""

    kind: str
    per_minute: float
    capacity: float
    ceiling: float

    @property
    def rate(self) -> float:
        """Refill per second."""
        return self.per_minute / 60.0


def limits_for(per_minute: Mapping[str, float | None], burst_seconds: float | None,
               headroom: float = 0.0) -> tuple[Limit, ...]:
    """The buckets of a limiter configured with ``{kind: per-minute limit or None}``.

    ``burst_seconds`` None (the default of the limiters): one-second slices, the way providers
    enforce per-minute limits (OpenAI documents 60,000 RPM enforced as 1,000 per second), with
    an overdraft up to a whole minute's limit so a request larger than a slice still passes,
    alone, when its bucket is full. A number: a bucket of exactly that many seconds of refill,
    and nothing larger is ever admitted (a provider that enforces exactly that bucket). Less
    ``headroom`` seconds of refill either way (requests granted, not yet counted by the server).
    Checks the combination; the caller has checked each number."""
    strict = burst_seconds is not None
    seconds = 1.0 if burst_seconds is None else burst_seconds
    if headroom >= seconds:
        raise ValueError(f"headroom must be less than burst_seconds ({seconds:g}): the buckets "
                         f"would hold nothing, got headroom={headroom!r}")
    out = []
    for kind in KINDS:
        limit = per_minute.get(kind)
        if limit is None:
            continue
        rate = limit / 60.0
        capacity = rate * (seconds - headroom)
        if strict:
            ceiling = capacity
            if kind == REQUESTS and capacity < 1.0:
                raise ValueError(
                    f"burst_seconds must hold at least 1 request: rpm={limit:g} with "
                    f"burst_seconds={burst_seconds!r}"
                    f"{f' less headroom {headroom:g}' if headroom else ''} gives a request "
                    f"bucket of {capacity:g} < 1, so no request could ever pass; expected "
                    f"burst_seconds >= {60.0 / limit + headroom:g}")
        else:
            ceiling = max(capacity, limit)
        if not math.isfinite(capacity) or not math.isfinite(ceiling):
            raise ValueError(f"burst_seconds={burst_seconds!r} with {kind} per minute "
                             f"{limit:g} gives a bucket that is not a finite number")
        out.append(Limit(kind, float(limit), capacity, ceiling))
    if not out:
        raise ValueError("a rate limiter needs at least one limit (rpm, tpm, itpm or otpm), "
                         "got none")
    return tuple(out)


# --------------------------------------------------------------------------- demands


def as_demand(value: Any, name: str = "demand") -> tuple[float, float, float]:
    """``(requests, input, output)`` of a ``Demand`` (checked when it was made) or a token
    count (a total with no split: all of it counted as input); TypeError/ValueError naming
    ``name`` for anything else."""
    cls = value.__class__
    if cls is int or cls is float:
        if 0 <= value <= MAX_COUNT:
            return 1.0, value, 0.0
        real(name, value, minimum=0.0, maximum=MAX_COUNT)  # raises: NaN, inf, <0, huge
    if isinstance(value, Demand):
        return value.requests, value.input_tokens, value.output_tokens
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a Demand or a number of tokens, got {value!r}")
    return 1.0, real(name, value, minimum=0.0, maximum=MAX_COUNT), 0.0


def _describe(kind: str, req: float, inp: float, out: float) -> str:
    if kind == REQUESTS:
        return f"{req:g} request(s)"
    if kind == INPUT:
        return f"{inp:g} input tokens"
    if kind == OUTPUT:
        return f"{out:g} output tokens"
    return f"{inp:g} input + {out:g} output tokens" if out else f"{inp:g} tokens"


def check_fits(limits: Sequence[Limit], req: float, inp: float, out: float,
               how: Mapping[str, str], shown: str) -> None:
    """ValueError naming both numbers if some bucket could never admit this demand (its cost,
    as estimated, is above the bucket's ``ceiling``). ``shown`` is the argument as the user
    wrote it (``demand=11``); ``how[kind]`` explains the ceiling.

    The learned ratio is left out on purpose: a scaled cost above the ceiling is admitted when
    the bucket is full, and the provider is the judge of what it counts."""
    for limit in limits:
        cost = _cost(_CODE[limit.kind], req, inp, out)
        if cost > limit.ceiling * (1 + REL_EPS):
            raise ValueError(
                f"{shown} is more than the {limit.kind} bucket can ever admit: "
                f"{_describe(limit.kind, req, inp, out)} need {cost:.6g} and the most it admits "
                f"is {limit.ceiling:g} ({how.get(limit.kind, '')}), so it could never be "
                f"served; expected at most {limit.ceiling:g} (split the request, or raise the "
                "limit or burst_seconds)")


def costs_of(limits: Sequence[Limit], req: float, inp: float, out: float,
             ratio: float) -> list[float]:
    """What ``(requests, input, output)`` costs in each bucket, input scaled by ``ratio``."""
    scaled = inp * ratio
    return [_cost(_CODE[lim.kind], req, scaled, out) for lim in limits]


def _cost(code: int, req: float, scaled_in: float, out: float) -> float:
    if code == 0:
        return req
    if code == 1:
        return scaled_in + out
    if code == 2:
        return scaled_in
    return out


# --------------------------------------------------------------------------- the machine


# The hot paths (``Buckets.admit``, run on every acquire, and ``Buckets.settle``, on every
# answer) are compiled once per shape from these templates: one block per bucket with its
# constants inlined; ``_REFILL`` is the one definition of the refill both share. A loop over the
# buckets costs about twice as much per call (benchmarks/overhead.py "RateLimiter.acquire":
# 0.96 vs 0.70 us with two buckets; settle 3.5 vs 0.8 us).
_REFILL = """\
    # bucket {i}: {kind}, capacity {capacity!r}, refill {rate!r} per second
    level = levels[{i}]
    if dt > 0.0:
        level += dt * {rate!r}
        if level > {capacity!r}:
            level = {capacity!r}
"""
_ADMIT = """\
def admit(m, req, inp, out, now, pay=True):
    levels = m.levels
    dt = now - m.last
    m.last = now
    wait = m.pause_until - now
    if wait < 0.0:
        wait = 0.0
    scaled = inp * m.ratio
{buckets}
    if wait == 0.0 and pay:
{pays}
    return wait
"""
_ADMIT_BUCKET = _REFILL + """\
        levels[{i}] = level
    level{i} = level
    cost{i} = {cost}
    need = cost{i} if cost{i} < {capacity!r} else {capacity!r}
    if need - level > {eps!r}:
        need = (need - level) / {rate!r}
        if need > wait:
            wait = need
"""
_DERIVE = """\
    # the charged ratio: the decayed mean plus its mean deviation (a cushion, only once the
    # provider counts more than we estimate on average), at most MAX_RATIO
    if m.act_sum <= m.est_sum:
        m.ratio = 1.0
    else:
        r = (m.act_sum + m.dev_sum) / m.est_sum
        m.ratio = {max_ratio!r} if r > {max_ratio!r} else r
"""
_SETTLE = """\
def settle(m, estimated, actual, now, ratio=1.0):
    req_e, in_e, out_e = estimated
    req_a, in_a, out_a = actual
    levels = m.levels
    dt = now - m.last
    m.last = now
    scaled = in_e * ratio
{buckets}
    # learn the input ratio from this call (decayed sums)
    if in_e < {min_sample!r} or in_a <= 0.0:
        return
    est = m.est_sum = {decay!r} * m.est_sum + in_e
    act = m.act_sum = {decay!r} * m.act_sum + in_a
    dev = in_a / in_e - act / est
    m.dev_sum = {decay!r} * m.dev_sum + in_e * (dev if dev > 0.0 else -dev)
{derive}
def derive_ratio(m):
{derive}
"""
_SETTLE_BUCKET = _REFILL + """\
    delta = ({cost}) - ({used})
    level += delta
    if delta > 0.0 and level > {capacity!r}:
        level = {capacity!r}
    levels[{i}] = level
"""
_COST_EXPR = {REQUESTS: "req", TOKENS: "scaled + out", INPUT: "scaled", OUTPUT: "out"}
_CHARGED_EXPR = {REQUESTS: "req_e", TOKENS: "scaled + out_e", INPUT: "scaled", OUTPUT: "out_e"}
_USED_EXPR = {REQUESTS: "req_a", TOKENS: "in_a + out_a", INPUT: "in_a", OUTPUT: "out_a"}
_COMPILED: dict[tuple[Limit, ...], tuple[Any, Any, Any]] = {}


def _compile(limits: tuple[Limit, ...]) -> tuple[Any, Any, Any]:
    """``(admit, settle, derive_ratio)`` for this shape (cached)."""
    fns = _COMPILED.get(limits)
    if fns is None:
        def blocks(template: str, **exprs: dict[str, str]) -> str:
            return "".join(template.format(
                i=i, kind=lim.kind, capacity=lim.capacity, rate=lim.rate,
                eps=lim.capacity * REL_EPS, **{k: e[lim.kind] for k, e in exprs.items()})
                for i, lim in enumerate(limits))
        pays = "".join(f"        levels[{i}] = level{i} - cost{i}\n"
                       for i in range(len(limits)))
        source = (_ADMIT.format(buckets=blocks(_ADMIT_BUCKET, cost=_COST_EXPR), pays=pays)
                  + _SETTLE.format(buckets=blocks(_SETTLE_BUCKET, cost=_CHARGED_EXPR,
                                                  used=_USED_EXPR),
                                   min_sample=MIN_SAMPLE, decay=RATIO_DECAY,
                                   derive=_DERIVE.format(max_ratio=MAX_RATIO)))
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<bucket machine {'/'.join(lim.kind for lim in limits)}>",
                     "exec"), namespace)
        fns = (namespace["admit"], namespace["settle"], namespace["derive_ratio"])
        if len(_COMPILED) < 256:  # shapes are few; never an unbounded cache
            _COMPILED[limits] = fns
    return fns


class Buckets:
    """One limiter's buckets and its state: the levels (in the order of ``limits``; below 0
    is a debt), the time of the last refill, the pause, and the learned ratio's sums. Every
    transition takes ``now``.

    ``admit(req, inp, out, now, pay=True) -> float``, the hot path of every admission: refill
    to ``now``, cost the demand (the learned ratio applied to input) and -- all or nothing --
    pay it if every bucket can (``pay``): 0.0 when it can, else the seconds until it could (the
    pause included), nothing taken. A cost above a bucket's capacity (an overdraft) needs that
    bucket full.

    ``settle(estimated, actual, now, ratio=1.0)``: a call's real usage is known (demands as
    ``(requests, input, output)``): charge each bucket the excess over what ``estimated`` cost
    it when it was admitted with ``ratio`` (the learned ratio then; 1.0 when unknown: the safe
    side, it may over-charge but never under-charges while the ratio grows), or give back the
    unused part (never above capacity); then learn the input ratio from it: decayed sums of the
    estimated and actual input tokens and of their deviation (an estimate under ``MIN_SAMPLE``
    teaches nothing). ``derive_ratio()``: the charged ratio from the sums.

    These three are compiled per shape from ``_ADMIT``/``_SETTLE`` and bound to the instance."""

    __slots__ = ("act_sum", "admit", "caps", "derive_ratio", "dev_sum", "eps", "est_sum", "last",
                 "levels", "limits", "n", "pause_until", "rates", "ratio", "settle")

    def __init__(self, limits: Sequence[Limit], now: float) -> None:
        self.limits = tuple(limits)
        self.n = len(self.limits)
        self.caps = [lim.capacity for lim in self.limits]
        self.rates = [lim.rate for lim in self.limits]
        self.eps = [lim.capacity * REL_EPS for lim in self.limits]
        self.levels = list(self.caps)  # a new bucket starts full
        self.last = now
        self.pause_until = -math.inf
        self.est_sum = self.act_sum = self.dev_sum = 0.0
        self.ratio = 1.0  # what input estimates are multiplied by (derived from the sums)
        admit, settle, derive = _compile(self.limits)
        self.admit: Callable[..., float] = MethodType(admit, self)
        self.settle: Callable[..., None] = MethodType(settle, self)
        self.derive_ratio: Callable[[], None] = MethodType(derive, self)

    # -- costs
    def costs(self, req: float, inp: float, out: float) -> list[float]:
        """What ``(requests, input, output)`` costs in each bucket, the learned ratio applied."""
        return costs_of(self.limits, req, inp, out, self.ratio)

    # -- time
    def refill(self, now: float) -> None:
        """Bring every level up to ``now`` (capped). A clock that stepped back refills
        nothing and never stalls a bucket: the last refill moves back with it."""
        self.admit(0.0, 0.0, 0.0, now, pay=False)

    def add(self, deltas: Sequence[float], now: float) -> None:
        """Give back (positive, capped at capacity) or charge (negative, may leave a debt)."""
        self.refill(now)
        levels, caps = self.levels, self.caps
        for i, d in enumerate(deltas):
            if d > 0.0:
                level = levels[i] + d
                levels[i] = level if level < caps[i] else caps[i]
            else:
                levels[i] += d

    def lower(self, ceilings: Mapping[str, float], now: float) -> list[tuple[str, float, float]]:
        """Each named bucket's level becomes ``min(level, ceiling)`` (never raised); the
        ``(kind, old, new)`` of those lowered."""
        self.refill(now)
        moved = []
        for i, lim in enumerate(self.limits):
            ceiling = ceilings.get(lim.kind)
            if ceiling is not None and ceiling < self.levels[i]:
                moved.append((lim.kind, self.levels[i], ceiling))
                self.levels[i] = ceiling
        return moved

    def pause(self, seconds: float, now: float) -> float:
        """Nobody is admitted until ``now + seconds`` (a longer pause already set is kept);
        the pause left. The caller bounds ``seconds`` (``max_retry_after``); ``MAX_PAUSE`` is
        the last line."""
        until = now + min(seconds, MAX_PAUSE)
        if until > self.pause_until:
            self.pause_until = until
        return max(0.0, self.pause_until - now)

    # -- reading
    def levels_by_kind(self) -> dict[str, float]:
        return {lim.kind: level for lim, level in zip(self.limits, self.levels, strict=True)}

    # -- FIFO projection: (time, levels) when a waiter is served
    def start(self, now: float) -> tuple[float, list[float]]:
        """The projection of an empty queue: the time the first waiter could be looked at
        (after any pause) and the levels then."""
        self.refill(now)
        return self.catch_up((now, list(self.levels)), max(now, self.pause_until))

    def serve(self, projection: tuple[float, list[float]],
              costs: Sequence[float]) -> tuple[float, list[float]]:
        """The projection after one more waiter of ``costs`` is served, FIFO, from
        ``projection`` (time, levels): the time it is served and the levels just after."""
        t, levels = projection
        dt = 0.0
        for i, need in enumerate(costs):
            need = min(need, self.caps[i])
            if need - levels[i] > self.eps[i]:
                dt = max(dt, (need - levels[i]) / self.rates[i])
        t, levels = self.catch_up((t, levels), t + dt)
        return t, [level - cost for level, cost in zip(levels, costs, strict=True)]

    def catch_up(self, projection: tuple[float, list[float]],
                 now: float) -> tuple[float, list[float]]:
        """A projection refilled to ``now`` (unchanged if its time is not before ``now``)."""
        t, levels = projection
        if t >= now:
            return projection
        dt = now - t
        return now, [min(c, level + dt * r)
                     for c, r, level in zip(self.caps, self.rates, levels, strict=True)]

    # -- the store's JSON record
    def load(self, record: Mapping[str, Any], now: float) -> None:
        """Adopt a store record's state (``save``'s format) at ``now``: missing buckets start
        full, each level refilled from its own last refill and capped at this shape's
        capacity (another process may have configured the key differently)."""
        saved = record.get("b") or {}
        for i, lim in enumerate(self.limits):
            entry = saved.get(lim.kind)
            if entry is None:
                self.levels[i] = lim.capacity
            else:
                level, last = float(entry[0]), float(entry[1])
                if now > last:
                    level += (now - last) * lim.rate
                self.levels[i] = min(level, lim.capacity)
        self.last = now
        pause = record.get("pause")
        self.pause_until = -math.inf if pause is None else float(pause)
        sums = record.get("ratio") or (0.0, 0.0, 0.0)
        self.est_sum, self.act_sum, self.dev_sum = (float(x) for x in sums)
        self.derive_ratio()

    def save(self, record: dict[str, Any]) -> None:
        """Write the state into ``record`` (buckets of other shapes in it are kept)."""
        saved = record.setdefault("b", {})
        for lim, level in zip(self.limits, self.levels, strict=True):
            saved[lim.kind] = [level, self.last]
        record["pause"] = None if self.pause_until == -math.inf else self.pause_until
        record["ratio"] = [self.est_sum, self.act_sum, self.dev_sum]


def new_record() -> dict[str, Any]:
    """An empty limiter record for a store: buckets appear (full) when first used."""
    return {"b": {}, "pause": None, "ratio": [0.0, 0.0, 0.0], "q": []}


# --------------------------------------------------------------------------- the shared queue
# A store keeps waiters first come, first served in ``record["q"]``: one ticket per waiting
# caller, ``[ticket, expires, requests, input, output]``, in arrival order (the order of the
# store's atomic steps). Only the ticket at the head may take; a ticket whose holder stopped
# asking (a crashed process) expires. Tickets are unique strings the caller's store draws.


def queue_step(m: Buckets, record: dict[str, Any], demand: tuple[float, float, float],
               ticket: str | None, new_ticket: str, lease: float, max_wait: float | None,
               now: float) -> tuple[float, str | None]:
    """One waiter's turn at the store, atomically, on a machine ``m`` loaded from ``record``.

    Expired tickets are dropped; the caller's ``ticket`` (None: a newcomer) is renewed until
    ``now + wait + lease``. A caller at the head whose buckets can pay is granted
    ``(0.0, None)``: paid, its ticket gone. Otherwise ``(wait, ticket)``: the projected seconds
    until its turn (the queue ahead served FIFO) and its ticket (a newcomer is queued at the
    tail as ``new_ticket``) -- or, when a newcomer's wait passes ``max_wait``, ``(wait, None)``
    with nothing queued and nothing taken. A caller whose ticket expired queues afresh."""
    live = [t for t in record.get("q", ()) if t[1] > now]
    mine = None
    if ticket is not None:
        for i, t in enumerate(live):
            if t[0] == ticket:
                mine = i
                break
    if mine == 0 or (mine is None and not live):
        wait = m.admit(*demand, now)
        if wait == 0.0:
            record["q"] = live[1:] if mine == 0 else live
            return 0.0, None
    else:  # behind others: their service, FIFO, then ours
        projection = m.start(now)
        for t in live[:len(live) if mine is None else mine]:
            projection = m.serve(projection, m.costs(t[2], t[3], t[4]))
        projection = m.serve(projection, m.costs(*demand))
        wait = max(projection[0] - now, 1e-6)
    if mine is None:
        if max_wait is not None and wait > max_wait + 1e-9:
            record["q"] = live
            return wait, None
        live.append([new_ticket, now + wait + lease, *demand])
        record["q"] = live
        return wait, new_ticket
    live[mine][1] = now + wait + lease
    record["q"] = live
    return wait, ticket


def queue_leave(record: dict[str, Any], ticket: str) -> None:
    """Drop ``ticket`` (its holder gave up: a timeout, a cancellation, an error)."""
    record["q"] = [t for t in record.get("q", ()) if t[0] != ticket]


# --------------------------------------------------------------------------- header staleness


class GrantLog:
    """What a limiter granted recently, so a provider's header can be aged: a header written
    when the server received request R cannot count what was granted after R was sent.
    Entries are ``(time, requests, input, output, ratio)``: costed only when read."""

    __slots__ = ("_log", "horizon")

    def __init__(self, horizon: float = 120.0, size: int = 10_000) -> None:
        self.horizon = horizon
        self._log: deque[tuple[float, float, float, float, float]] = deque(maxlen=size)

    def add(self, grant: tuple[float, float, float, float, float]) -> None:
        self._log.append(grant)

    def since(self, t: float, limits: Sequence[Limit], now: float) -> list[float]:
        """Per bucket of ``limits``, the total granted strictly after time ``t`` (entries
        older than the horizon are dropped first)."""
        log = self._log
        while log and log[0][0] < now - self.horizon:
            log.popleft()
        total = [0.0] * len(limits)
        for at, req, inp, out, ratio in reversed(log):
            if at <= t:
                break
            for i, cost in enumerate(costs_of(limits, req, inp, out, ratio)):
                total[i] += cost
        return total
