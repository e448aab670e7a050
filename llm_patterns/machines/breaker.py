"""The circuit-breaker machine: the one definition of a breaker's states and transitions.

- ``closed``: every call is admitted. A counted failure adds to the run of consecutive
  failures and at ``failure_threshold`` the breaker opens; a success resets the run.
- ``open``: nobody is admitted (``rejected``, with ``retry_after``: the cooldown left). Once
  ``reset_timeout`` has passed it reads ``half_open`` (a lazy move, stamped when it was due).
- ``half_open``: at most ``half_open_max_calls`` trial calls, each holding a *lease* that
  expires ``probe_timeout`` after it was granted, so a hung or crashed probe cannot wedge the
  breaker; the others are rejected until the first lease ends. A trial's success closes the
  breaker, its failure re-opens it with a fresh cooldown; an ignored error (a 429, a bad
  request) or a release gives its slot back.

Every transition bumps ``generation``: an outcome carries the generation (and lease) it was
admitted with, and one from an earlier episode, or from a trial whose lease ran out, is
*stale*: counted in the statistics, never deciding the state. An outcome with no generation
(the manual ``record_success()`` protocol without a permit) counts for the current episode and,
in half-open, settles the oldest live trial. Which errors count is the caller's decision
(``failure`` vs ``ignored``): the machine never sees an exception.

Every operation returns what it decided and its ``changes``: the ordered record of what
happened (``Change``), which the breakers turn into events, log lines and listener calls, so
the in-process and the store-backed breakers announce exactly the same things.

Pure: state plus transitions, ``now`` passed in, no clock read, no I/O, no lock.
``CircuitBreaker`` runs it under its lock; the memory and SQLite stores run it inside one
atomic step over a JSON record (``load``/``save``); ``state/redis.py`` holds its Lua port, held
to the same answers by ``tests/test_breaker_machine.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from .._validate import integer, optional, real

__all__ = [
    "CLOSED",
    "COUNTERS",
    "HALF_OPEN",
    "MAX_COOLDOWN",
    "MAX_THRESHOLD",
    "MAX_TRIALS",
    "OPEN",
    "OUTCOMES",
    "STATES",
    "Admission",
    "BreakerConfig",
    "BreakerOutcome",
    "BreakerSnapshot",
    "Change",
    "Circuit",
    "check_outcome",
]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)
OUTCOMES = ("success", "failure", "ignored")
COUNTERS = ("calls", "successes", "failures", "ignored_errors", "rejections", "opened_count")

MIN_RETRY_AFTER = 0.001  # a refused caller is never told "retry in 0 s"
MAX_COOLDOWN = 86_400.0  # seconds: the longest reset_timeout / probe_timeout (a day)
MAX_THRESHOLD = 1_000_000  # a breaker that needs more failures than this never opens: none
MAX_TRIALS = 10_000


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """A breaker's four numbers, checked once here (every runtime gets the same errors).

    ``probe_timeout``: the lease on a half-open trial (``BreakerConfig.of`` defaults it to
    ``reset_timeout``)."""

    failure_threshold: int = 5
    reset_timeout: float = 60.0
    half_open_max_calls: int = 1
    probe_timeout: float = 60.0

    def __post_init__(self) -> None:
        integer("failure_threshold", self.failure_threshold, minimum=1, maximum=MAX_THRESHOLD)
        integer("half_open_max_calls", self.half_open_max_calls, minimum=1, maximum=MAX_TRIALS)
        for name in ("reset_timeout", "probe_timeout"):
            value = real(name, getattr(self, name), minimum=0.0, strict_min=True,
                         maximum=MAX_COOLDOWN)
            object.__setattr__(self, name, value)

    @classmethod
    def of(cls, failure_threshold: Any = 5, reset_timeout: Any = 60.0,
           half_open_max_calls: Any = 1, probe_timeout: Any = None) -> BreakerConfig:
        """The config of a breaker's constructor arguments (``probe_timeout`` None: the
        cooldown); TypeError/ValueError naming the argument."""
        integer("failure_threshold", failure_threshold, minimum=1, maximum=MAX_THRESHOLD)
        reset = real("reset_timeout", reset_timeout, minimum=0.0, strict_min=True,
                     maximum=MAX_COOLDOWN)
        probe = optional(real, "probe_timeout", probe_timeout, minimum=0.0, strict_min=True,
                         maximum=MAX_COOLDOWN)
        return cls(failure_threshold, reset, half_open_max_calls,
                   reset if probe is None else probe)


class Change(NamedTuple):
    """One thing an operation did, in order. ``state``: the state it happened in.

    | kind            | ``new``          | ``number``                           |
    |-----------------|------------------|--------------------------------------|
    | ``state_change``| the new state    | consecutive failures after it        |
    | ``success``     |                  | consecutive failures after it        |
    | ``failure``     |                  | consecutive failures after it        |
    | ``ignored``     |                  | consecutive failures (unchanged)     |
    | ``rejected``    |                  | ``retry_after``                      |
    | ``lease_expired``|                 | trial leases freed                   |
    """

    kind: str
    at: float
    state: str
    new: str = ""
    number: float = 0.0


Changes = tuple[Change, ...]


class Admission(NamedTuple):
    """``admit``'s answer: ``allowed``; the ``state`` it was admitted or refused in; the
    ``generation`` it belongs to; the trial ``lease`` (half-open only); ``retry_after`` when
    refused; ``changes``; ``at``: the time of the decision."""

    allowed: bool
    state: str
    generation: int
    lease: str | None
    retry_after: float
    changes: Changes
    at: float

    @property
    def transitions(self) -> tuple[tuple[str, str], ...]:
        return _transitions(self.changes)


class BreakerOutcome(NamedTuple):
    """The state after an outcome, a release or a forced move, and what happened."""

    state: str
    consecutive_failures: int
    changes: Changes
    at: float

    @property
    def transitions(self) -> tuple[tuple[str, str], ...]:
        return _transitions(self.changes)


class BreakerSnapshot(NamedTuple):
    """``read``'s answer: the numbers ``health()`` shows."""

    state: str
    consecutive_failures: int
    retry_in: float
    trials_in_flight: int
    last_error: str | None
    last_state_change: float
    generation: int
    counters: Mapping[str, int]
    changes: Changes
    at: float

    @property
    def transitions(self) -> tuple[tuple[str, str], ...]:
        return _transitions(self.changes)


def _transitions(changes: Changes) -> tuple[tuple[str, str], ...]:
    return tuple((c.state, c.new) for c in changes if c.kind == "state_change")


def check_outcome(outcome: Any) -> str:
    """``outcome`` if it is one of ``OUTCOMES`` (ValueError naming it otherwise)."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    return str(outcome)


class Circuit:
    """One breaker's state and its transitions (see the module docstring); ``config`` may be
    replaced between operations (each process sends its own with every store call).

    Lease ids are the decimal strings of a counter kept in the state (``serial``): unique per
    breaker in every runtime, and the oldest live trial is the one with the smallest number.
    """

    __slots__ = ("calls", "changed_at", "config", "consecutive", "failures", "generation",
                 "ignored_errors", "last_error", "leases", "opened_at", "opened_count",
                 "rejections", "serial", "state", "successes")

    def __init__(self, config: BreakerConfig, now: float) -> None:
        self.config = config
        self.state = CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.generation = 0
        self.changed_at = now
        self.leases: dict[str, float] = {}  # trial lease id -> expiry
        self.serial = 0
        self.last_error: str | None = None
        self.calls = self.successes = self.failures = self.ignored_errors = 0
        self.rejections = self.opened_count = 0

    # -- the hot path of a healthy provider: CLOSED never changes by itself (only OPEN turns
    # HALF_OPEN as time passes), so admitting a call and recording its success need no time.
    # ``admit``/``record`` take this path too; ``CircuitBreaker`` calls it directly (no clock
    # reading, no answer objects) when nobody listens for events: 0.8 vs 1.9 us per call in
    # benchmarks/overhead.py "CircuitBreaker.call".

    def admit_closed(self) -> int:
        """Admit a call if CLOSED: count it and return the generation; -1 if not CLOSED."""
        if self.state == CLOSED:
            self.calls += 1
            return self.generation
        return -1

    def succeed_closed(self, generation: int) -> bool:
        """Record the success of a call admitted in this CLOSED generation; False (nothing
        done) if the breaker has moved since: ``record`` decides then."""
        if self.state == CLOSED and generation == self.generation:
            self.successes += 1
            self.consecutive = 0
            return True
        return False

    # -- transitions

    def admit(self, now: float) -> Admission:
        """May a call go through now? A trial lease in half-open; ``rejected`` otherwise."""
        generation = self.admit_closed()
        if generation >= 0:
            return Admission(True, CLOSED, generation, None, 0.0, (), now)
        changes: list[Change] = []
        state = self._refresh(now, changes)  # OPEN or HALF_OPEN: CLOSED was admitted above
        cfg = self.config
        if state == HALF_OPEN:
            if len(self.leases) < cfg.half_open_max_calls:
                self.serial += 1
                lease = str(self.serial)
                self.leases[lease] = now + cfg.probe_timeout
                self.calls += 1
                return Admission(True, state, self.generation, lease, 0.0, tuple(changes), now)
            retry_after = max(MIN_RETRY_AFTER, min(self.leases.values()) - now)
        else:
            retry_after = max(MIN_RETRY_AFTER, self.opened_at + cfg.reset_timeout - now)
        self.rejections += 1
        changes.append(Change("rejected", now, state, "", retry_after))
        return Admission(False, state, self.generation, None, retry_after, tuple(changes), now)

    def record(self, outcome: str, generation: int | None, lease: str | None,
               error: str | None, now: float) -> BreakerOutcome:
        """Settle one admitted call: ``success``, ``failure`` (counted) or ``ignored`` (not an
        outage: no count, no reset, a trial slot given back). ``error``: what ``health()``
        shows as ``last_error`` after a failure."""
        check_outcome(outcome)
        changes: list[Change] = []
        state = self._refresh(now, changes)
        if lease is None and generation is None and state == HALF_OPEN and self.leases:
            lease = min(self.leases, key=int)  # the manual protocol: the oldest live trial
        current = (generation is None or generation == self.generation) and (
            state != HALF_OPEN or lease is None or lease in self.leases)
        if state == HALF_OPEN and lease is not None:
            self.leases.pop(lease, None)
        deciding = current and state != OPEN
        if outcome == "success":
            self.successes += 1
            if deciding:
                self.consecutive = 0
            changes.append(Change("success", now, state, "", self.consecutive))
            if deciding and state == HALF_OPEN:
                self._move(CLOSED, now, changes)
        elif outcome == "ignored":
            self.ignored_errors += 1
            changes.append(Change("ignored", now, state, "", self.consecutive))
        else:
            self.failures += 1
            self.last_error = error
            if deciding:
                self.consecutive += 1
            changes.append(Change("failure", now, state, "", self.consecutive))
            if deciding and (state == HALF_OPEN
                             or self.consecutive >= self.config.failure_threshold):
                self._move(OPEN, now, changes)
        return BreakerOutcome(self.state, self.consecutive, tuple(changes), now)

    def release(self, lease: str, now: float) -> BreakerOutcome:
        """Give a trial lease back: the call never got an answer (cancelled, interrupted)."""
        changes: list[Change] = []
        self._refresh(now, changes)
        self.leases.pop(lease, None)
        return BreakerOutcome(self.state, self.consecutive, tuple(changes), now)

    def force(self, target: str, now: float) -> BreakerOutcome:
        """An operator's move: ``closed`` (clears the failure run) or ``open`` (a fresh
        cooldown, also when already open: then no transition, a new generation)."""
        if target not in (CLOSED, OPEN):
            raise ValueError(f"state must be 'open' or 'closed', got {target!r}")
        changes: list[Change] = []
        self._refresh(now, changes)
        if target == CLOSED:
            self.consecutive = 0
            if self.state != CLOSED:
                self._move(CLOSED, now, changes)
        elif self.state == OPEN:
            self.opened_at = now
            self.opened_count += 1
            self.generation += 1
        else:
            self._move(OPEN, now, changes)
        return BreakerOutcome(self.state, self.consecutive, tuple(changes), now)

    def read(self, now: float) -> BreakerSnapshot:
        changes: list[Change] = []
        state = self._refresh(now, changes)
        retry_in = (max(0.0, self.opened_at + self.config.reset_timeout - now)
                    if state == OPEN else 0.0)
        counters = {name: getattr(self, name) for name in COUNTERS}
        return BreakerSnapshot(state, self.consecutive, retry_in, len(self.leases),
                               self.last_error, self.changed_at, self.generation, counters,
                               tuple(changes), now)

    # -- internals

    def _refresh(self, now: float, changes: list[Change]) -> str:
        """The lazy OPEN -> HALF_OPEN move (stamped at the moment it became due); drop the
        trial leases whose time is up."""
        if self.state == OPEN and now >= self.opened_at + self.config.reset_timeout:
            self._move(HALF_OPEN, self.opened_at + self.config.reset_timeout, changes)
        if self.leases:
            expired = [lease for lease, until in self.leases.items() if until <= now]
            if expired:
                for lease in expired:
                    del self.leases[lease]
                changes.append(Change("lease_expired", now, self.state, "", len(expired)))
        return self.state

    def _move(self, new: str, at: float, changes: list[Change]) -> None:
        old = self.state
        self.state = new
        self.generation += 1
        self.leases = {}
        self.changed_at = at
        if new == CLOSED:
            self.consecutive = 0
        elif new == OPEN:
            self.opened_at = at
            self.opened_count += 1
        changes.append(Change("state_change", at, old, new, self.consecutive))

    # -- the store's JSON record

    def load(self, record: Mapping[str, Any]) -> None:
        """Adopt a store record's state (``save``'s format). A record written before leases
        were numbered (no ``serial``) is adopted too: its trials' leases are dropped (their
        holders' outcomes then count as stale, and the slots are free at once)."""
        self.state = str(record["state"])
        self.consecutive = int(record["consecutive"])
        self.opened_at = float(record["opened_at"])
        self.generation = int(record["generation"])
        self.changed_at = float(record["changed_at"])
        self.leases = {str(k): float(v) for k, v in record.get("leases", {}).items()
                       if str(k).isdigit()}
        self.serial = int(record.get("serial", 0))
        self.last_error = record.get("last_error")
        for name in COUNTERS:
            setattr(self, name, int(record.get(name, 0)))

    def save(self, record: dict[str, Any]) -> None:
        """Write the state into ``record`` (plain JSON values)."""
        record.update(
            state=self.state, consecutive=self.consecutive, opened_at=self.opened_at,
            generation=self.generation, changed_at=self.changed_at, leases=dict(self.leases),
            serial=self.serial, last_error=self.last_error,
            **{name: getattr(self, name) for name in COUNTERS})

    @classmethod
    def from_record(cls, config: BreakerConfig, record: Mapping[str, Any] | None,
                    now: float) -> Circuit:
        """The machine of a store record (None: a new breaker)."""
        m = cls(config, now)
        if record:
            m.load(record)
        return m
