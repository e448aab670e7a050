"""A controlled scheduler that finds races in student code whatever its names or shape.

Several threads run the student's methods, but only one runs at a time: at every bytecode of
the student's code (``sys.settrace`` opcode events, so every attribute read and write is a
possible switch) a seeded :class:`Schedule` decides which thread goes on. Trying a few dozen
schedules (switch at every step, PCT-style priority changes, random switches) reaches the
interleavings a check-then-act or read-modify-write race needs in milliseconds, and the same
code always gets the same schedules, so the same verdict.

Locks created while the scheduler's lock factories are installed (:func:`sched_locks`, always
on in a grading worker) cooperate: a thread that would block on a held lock hands its turn to
another thread, so correctly locked code runs under every schedule and a lock cycle is
reported as a deadlock instead of hanging. A thread stuck anywhere else (a real lock created
before, a C call) is detected after ``stall`` real seconds; the run then goes on without
control (``controlled`` is False). A violation found that way is still a real execution.
"""

from __future__ import annotations

import _thread
import contextlib
import linecache
import random
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

from ._framework import harness_code
from ._student import is_student_file

__all__ = [
    "Call",
    "Deadlock",
    "RaceFound",
    "RaceRun",
    "SchedLock",
    "SchedRLock",
    "Schedule",
    "StopWaiting",
    "WaitingClock",
    "default_schedules",
    "describe_interleaving",
    "explore",
    "run_race",
    "sched_locks",
]

# The real primitives, captured at import: student code that patches threading or sys later
# cannot change what the scheduler itself uses.
_real_settrace = sys.settrace
_real_gettrace = sys.gettrace
_allocate = _thread.allocate_lock
_monotonic = time.monotonic
_get_ident = _thread.get_ident
_RealLock = threading.Lock
_RealRLock = threading.RLock
_RealThreadRLock = getattr(_thread, "RLock", None)

STALL = 0.5
"""Real seconds the running thread may stay outside traced student code before the run gives
up control (it is blocked on something the scheduler does not know, or computing in C)."""

MAX_STEPS = 200_000
"""Switch points one run may take; beyond that the run goes on uncontrolled (an endless loop is
then the criterion's time budget's business)."""


class Deadlock(Exception):
    """Every thread of a controlled run waits for a lock another waiting thread holds."""


class StopWaiting(BaseException):
    """Raised by :class:`WaitingClock` when a thread starts to wait: it did not get through.

    A BaseException, so a student's ``except Exception`` does not swallow it."""


class WaitingClock:
    """A clock that stands still and ends any wait at once with :class:`StopWaiting`.

    A race on a limiter only asks which threads get through *now*; a thread that sleeps is one
    that did not, and need not wait a virtual minute to prove it."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = float(start)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            raise StopWaiting(f"waited {seconds!r} s")

    def advance(self, seconds: float) -> None:
        self.t += max(0.0, float(seconds))

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def __repr__(self) -> str:
        return f"WaitingClock(t={self.t:g})"


@dataclass(frozen=True)
class Call:
    """One operation of a race: ``getattr(target, method)(*args, **kwargs)`` in its own thread.

    ``stamp`` (a clock) is read right after the call returns, in the same turn: the result of the
    op is then ``(value, clock reading)``.
    """

    target: Any
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    stamp: Any = None

    def __call__(self) -> Any:
        value = getattr(self.target, self.method)(*self.args, **self.kwargs)
        if self.stamp is not None:
            return value, self.stamp.now()
        return value


@dataclass(frozen=True)
class Schedule:
    """How one run picks the next thread; ``seed`` makes it reproducible.

    - ``alternate``: switch to the next thread at every step (the old lockstep);
    - ``pct``: random thread priorities, lowered at ``depth - 1`` random steps below ``horizon``
      (probabilistic concurrency testing: a bug of depth d is found with probability at least
      1 / (threads * horizon ** (d - 1)) per run);
    - ``random``: at each step switch to a random thread with probability ``switch``.
    """

    kind: str
    seed: int = 0
    depth: int = 2
    horizon: int = 100
    switch: float = 0.5

    def chooser(self, threads: int) -> _Chooser:
        if self.kind == "alternate":
            return _Alternate()
        rng = random.Random(self.seed * 7919 + threads)
        if self.kind == "pct":
            return _PCT(rng, threads, self.depth, max(2, self.horizon))
        if self.kind == "random":
            return _RandomSwitch(rng, self.switch)
        raise ValueError(f"Schedule.kind must be 'alternate', 'pct' or 'random', got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "depth": self.depth,
                "horizon": self.horizon, "switch": self.switch}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        return cls(str(data["kind"]), int(data["seed"]), int(data["depth"]),
                   int(data["horizon"]), float(data["switch"]))


def default_schedules(count: int = 48, horizon: int = 100) -> list[Schedule]:
    """The schedules a race criterion tries, in order. Fixed, so a verdict never depends on
    luck: one serial run (which also measures the horizon), PCT runs with one priority change
    (a race found there reads as "thread 1 paused here while thread 2 ran"), PCT with two
    changes, random switching at several rates, and switching at every step."""
    out = [Schedule("pct", seed=0, depth=1, horizon=horizon)]
    rest = count - 2
    d2, d3 = rest // 2, rest // 4
    out += [Schedule("pct", seed=1 + i, depth=2, horizon=horizon) for i in range(d2)]
    out += [Schedule("pct", seed=1000 + i, depth=3, horizon=horizon) for i in range(d3)]
    rates = (0.5, 0.2, 0.05)
    out += [Schedule("random", seed=2000 + i, switch=rates[i % len(rates)])
            for i in range(rest - d2 - d3)]
    out.append(Schedule("alternate"))
    return out


class _Chooser:
    def choose(self, current: int | None, runnable: list[int], step: int) -> int:
        raise NotImplementedError


class _Alternate(_Chooser):
    def choose(self, current: int | None, runnable: list[int], step: int) -> int:
        if current is None:
            return runnable[0]
        later = [t for t in runnable if t > current]
        return later[0] if later else runnable[0]


class _PCT(_Chooser):
    def __init__(self, rng: random.Random, threads: int, depth: int, horizon: int) -> None:
        self.priority = dict(enumerate(rng.sample(range(threads), threads)))
        points = rng.sample(range(1, horizon), max(0, min(depth - 1, horizon - 1)))
        self.change = {step: -(i + 1) for i, step in enumerate(sorted(points))}

    def choose(self, current: int | None, runnable: list[int], step: int) -> int:
        if current is not None and step in self.change:
            self.priority[current] = self.change[step]
        return max(runnable, key=lambda t: self.priority[t])


class _RandomSwitch(_Chooser):
    def __init__(self, rng: random.Random, switch: float) -> None:
        self.rng = rng
        self.switch = switch

    def choose(self, current: int | None, runnable: list[int], step: int) -> int:
        if current in runnable and self.rng.random() >= self.switch:
            return current
        return runnable[self.rng.randrange(len(runnable))]


# --- cooperative locks ---------------------------------------------------------------------

_runs: dict[int, _Run] = {}  # thread ident -> the controlled run it belongs to


def _current_run() -> _Run | None:
    run = _runs.get(_get_ident())
    return run if run is not None and run.controlled else None


class SchedLock:
    """A ``threading.Lock`` that hands its thread's turn on instead of blocking in a run."""

    __slots__ = ("__weakref__", "_holder", "_lock")

    def __init__(self) -> None:
        self._lock = _allocate()
        self._holder: int | None = None  # who took it last (to name a self-deadlock)

    def _free(self) -> bool:
        return not self._lock.locked()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        run = _current_run()
        if run is None:
            got = _blocking_acquire(self._lock, blocking, timeout)
        else:
            while True:
                got = self._lock.acquire(False)
                if got or not blocking:
                    break
                if not run.block_on(self, self._holder == _get_ident()):
                    got = _blocking_acquire(self._lock, True, timeout)
                    break
        if got:
            self._holder = _get_ident()
        return got

    def release(self) -> None:
        self._holder = None
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()  # type: ignore[attr-defined]

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<SchedLock {'locked' if self.locked() else 'unlocked'}>"


class SchedRLock:
    """A ``threading.RLock`` that cooperates with the scheduler (and with ``Condition``)."""

    __slots__ = ("__weakref__", "_count", "_lock", "_owner")

    def __init__(self) -> None:
        self._lock = _allocate()
        self._owner: int | None = None
        self._count = 0

    def _free(self) -> bool:
        return self._owner is None

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = _get_ident()
        if self._owner == me:
            self._count += 1
            return True
        run = _current_run()
        if run is None:
            got = _blocking_acquire(self._lock, blocking, timeout)
        else:
            while True:
                got = self._lock.acquire(False)
                if got or not blocking:
                    break
                if not run.block_on(self):
                    got = _blocking_acquire(self._lock, True, timeout)
                    break
        if got:
            self._owner, self._count = me, 1
        return got

    def release(self) -> None:
        if self._owner != _get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if self._count == 0:
            self._owner = None
            self._lock.release()

    def locked(self) -> bool:
        return self._owner is not None

    # what threading.Condition uses
    def _is_owned(self) -> bool:
        return self._owner == _get_ident()

    def _release_save(self) -> tuple[int, int | None]:
        state = (self._count, self._owner)
        self._count, self._owner = 0, None
        self._lock.release()
        return state

    def _acquire_restore(self, state: tuple[int, int | None]) -> None:
        self.acquire()
        self._count, self._owner = state

    def _at_fork_reinit(self) -> None:
        self._lock._at_fork_reinit()  # type: ignore[attr-defined]
        self._owner, self._count = None, 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<SchedRLock owner={self._owner} count={self._count}>"


_blocked: dict[int, object] = {}  # thread ident -> lock it waits for outside a run


def _blocking_acquire(lock: Any, blocking: bool, timeout: float) -> bool:
    """A real acquire that records, while it waits, that this thread is blocked on a lock (the
    grading worker reports it: a criterion that overran was deadlocked, not looping)."""
    if not blocking:
        return bool(lock.acquire(False))
    if lock.acquire(False):
        return True
    me = _get_ident()
    _blocked[me] = lock
    try:
        return bool(lock.acquire(True, timeout))
    finally:
        _blocked.pop(me, None)


def blocked_on_lock() -> bool:
    """Whether some thread is waiting for a cooperative lock right now (outside any run)."""
    return bool(_blocked)


_patch_depth = 0
_patch_guard = _allocate()


def install_sched_locks() -> None:
    """Make ``threading.Lock``/``RLock`` (and ``_thread``'s) create cooperative locks from now
    on (a grading worker does this once, before the student's code is loaded)."""
    _set_factories(SchedLock, SchedRLock, SchedLock, SchedRLock)


def _uninstall_sched_locks() -> None:
    _set_factories(_RealLock, _RealRLock, _allocate, _RealThreadRLock)


def _set_factories(lock: Any, rlock: Any, allocate: Any, thread_rlock: Any) -> None:
    modules: tuple[Any, Any] = (threading, _thread)
    modules[0].Lock, modules[0].RLock = lock, rlock
    modules[1].allocate_lock = allocate
    if _RealThreadRLock is not None:
        modules[1].RLock = thread_rlock


_REAL_FACTORIES: dict[int, Any] = {id(_RealLock): SchedLock, id(_RealRLock): SchedRLock,
                                   id(_allocate): SchedLock}
if _RealThreadRLock is not None:
    _REAL_FACTORIES[id(_RealThreadRLock)] = SchedRLock


@contextmanager
def sched_locks(*student_objects: Any) -> Iterator[None]:
    """Within the block, locks the student's code creates cooperate with the scheduler.

    Besides ``threading.Lock``/``RLock``, names in the student's globals bound to the real
    factories (``from threading import Lock``) are swapped for the block and put back after.
    """
    global _patch_depth
    swapped: list[tuple[dict[str, Any], str, Any]] = []
    for namespace in _globals_of(student_objects):
        for name, value in list(namespace.items()):
            replacement = _REAL_FACTORIES.get(id(value))
            if replacement is not None and any(
                value is f for f in (_RealLock, _RealRLock, _allocate, _RealThreadRLock)
            ):
                swapped.append((namespace, name, value))
                namespace[name] = replacement
    with _patch_guard:
        if _patch_depth == 0:
            install_sched_locks()
        _patch_depth += 1
    try:
        yield
    finally:
        with _patch_guard:
            _patch_depth -= 1
            if _patch_depth == 0:
                _uninstall_sched_locks()
        for namespace, name, value in swapped:
            if namespace.get(name) in (SchedLock, SchedRLock):
                namespace[name] = value


def _globals_of(objects: Iterable[Any]) -> list[dict[str, Any]]:
    seen: dict[int, dict[str, Any]] = {}
    for obj in objects:
        functions = [obj]
        if isinstance(obj, type):
            functions = [v for k in obj.__mro__ for v in vars(k).values()]
        for fn in functions:
            fn = getattr(fn, "fget", fn)  # properties
            fn = getattr(fn, "__func__", fn)  # static/class methods
            namespace = getattr(fn, "__globals__", None)
            if isinstance(namespace, dict) and is_student_file(
                getattr(getattr(fn, "__code__", None), "co_filename", "")
            ):
                seen[id(namespace)] = namespace
    return list(seen.values())


# --- one controlled run ------------------------------------------------------------------


@dataclass
class _Thread:
    index: int
    ident: int | None = None
    done: bool = False
    waiting_for: Any = None  # a cooperative lock this thread found held


@dataclass
class RaceRun:
    """What one run did: per op its result or exception, and how the threads interleaved."""

    results: list[Any]
    errors: list[BaseException | None]
    interleaving: list[tuple[int, str, int, str]]  # (thread, function, line, source) at switches
    steps: int
    controlled: bool
    deadlock: bool = False


class _Run:
    def __init__(self, threads: int, schedule: Schedule, stall: float) -> None:
        self.cond = threading.Condition(_allocate())
        self.threads = [_Thread(i) for i in range(threads)]
        self.chooser = schedule.chooser(threads)
        self.stall = stall
        self.current: int | None = None
        self.steps = 0
        self.controlled = True
        self.deadlock = False
        self.interleaving: list[tuple[int, str, int, str]] = []
        self.last_where: dict[int, tuple[str, int, str]] = {}

    # called with self.cond held
    def _runnable(self) -> list[int]:
        return [
            t.index for t in self.threads
            if not t.done and (t.waiting_for is None or t.waiting_for._free())
        ]

    def _hand_on(self, me: int | None, record: bool = True) -> None:
        runnable = self._runnable()
        if not runnable:
            if any(not t.done for t in self.threads):
                self.deadlock = True
                self.controlled = False
            self.current = None
            self.cond.notify_all()
            return
        nxt = self.chooser.choose(me, runnable, self.steps)
        if record and nxt != me and me is not None and len(self.interleaving) < 200:
            where = self.last_where.get(me)
            if where is not None:
                func, line, filename = where
                text = linecache.getline(filename, line).strip()[:120]
                self.interleaving.append((me, func, line, text))
        self.current = nxt
        self.cond.notify_all()

    @harness_code
    def _wait_turn(self, me: int) -> None:
        # a timed wait: an exception injected into a stopped criterion's thread gets delivered
        while self.controlled and self.current != me:
            self.cond.wait(0.05)

    def point(self, me: int, where: tuple[str, int, str]) -> None:
        with self.cond:
            if not self.controlled:
                return
            self.steps += 1
            self.last_where[me] = where
            if self.steps > MAX_STEPS:
                self.controlled = False
                self.cond.notify_all()
                return
            self._hand_on(me)
            self._wait_turn(me)

    def block_on(self, lock: Any, own: bool = False) -> bool:
        """The running thread found ``lock`` held (by itself when ``own``): let another run.
        False once the run is no longer controlled."""
        me = _runs_index.get(_get_ident())
        if me is None:
            return False
        if own:
            raise Deadlock("a thread waits for a lock it already holds")
        with self.cond:
            if not self.controlled:
                return False
            thread = self.threads[me]
            thread.waiting_for = lock
            self.steps += 1
            self._hand_on(me)
            self._wait_turn(me)
            thread.waiting_for = None
            if self.deadlock:
                raise Deadlock("every thread waits for a lock another waiting thread holds")
            return self.controlled

    def start(self, me: int) -> None:
        with self.cond:
            self.threads[me].ident = _get_ident()
            self._wait_turn(me)

    def finish(self, me: int) -> None:
        with self.cond:
            self.threads[me].done = True
            if self.controlled:
                self._hand_on(me, record=False)  # a thread that ends is not preempted

    def give_up(self) -> None:
        with self.cond:
            self.controlled = False
            self.cond.notify_all()


_runs_index: dict[int, int] = {}  # thread ident -> its index in its run


def _tracer(run: _Run, me: int) -> Callable[[FrameType, str, Any], Any]:
    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode":
            code = frame.f_code
            run.point(me, (code.co_name, frame.f_lineno or 0, code.co_filename))
        return local

    def global_trace(frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call" or not run.controlled:
            return None
        if not is_student_file(frame.f_code.co_filename):
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return local

    return global_trace


@harness_code
def run_race(
    ops: Sequence[Callable[[], Any]],
    schedule: Schedule,
    *,
    stall: float = STALL,
    spawn: Callable[[Callable[[], None], str], threading.Thread] | None = None,
    on_start: Callable[[_Run], object] | None = None,
) -> RaceRun:
    """Run each op in its own thread under ``schedule``; wait for all of them.

    ``spawn(target, name)`` starts a thread (default: a daemon ``threading.Thread``); a check
    passes ``spawn_guarded`` so the threads share the criterion's budget and guards.
    """
    run = _Run(len(ops), schedule, stall)
    if on_start is not None:
        on_start(run)
    results: list[Any] = [None] * len(ops)
    errors: list[BaseException | None] = [None] * len(ops)

    def body(i: int, op: Callable[[], Any]) -> Callable[[], None]:
        def target() -> None:
            ident = _get_ident()
            _runs[ident] = run
            _runs_index[ident] = i
            try:
                run.start(i)
                _real_settrace(_tracer(run, i))
                try:
                    results[i] = op()
                finally:
                    _real_settrace(None)
            except BaseException as exc:
                errors[i] = exc
            finally:
                _runs.pop(ident, None)
                _runs_index.pop(ident, None)
                run.finish(i)

        return target

    if spawn is None:
        def spawn(target: Callable[[], None], name: str) -> threading.Thread:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            return t

    with run.cond:
        run._hand_on(None)
    threads = [spawn(body(i, op), f"race-{i}") for i, op in enumerate(ops)]
    last, last_change = -1, _monotonic()
    while any(t.is_alive() for t in threads):
        alive = next(t for t in threads if t.is_alive())
        alive.join(0.01)  # short: this thread stays stoppable, and never looks deadlocked
        with run.cond:
            now = _monotonic()
            if run.steps != last:
                last, last_change = run.steps, now
            elif (run.controlled and now - last_change > run.stall
                  and not all(x.done for x in run.threads)):
                run.controlled = False  # stuck outside traced code: let everyone run
                run.cond.notify_all()
    controlled = run.controlled and not run.deadlock
    return RaceRun(results, errors, run.interleaving, run.steps, controlled, run.deadlock)


def describe_interleaving(steps: Sequence[tuple[int, str, int, str]], limit: int = 3) -> str:
    """How the threads interleaved, in words: where one paused and how far the next one ran."""
    if not steps:
        return ""
    parts = []
    for i, (thread, func, line, text) in enumerate(list(steps)[:limit]):
        code = f"`{text}` " if text else ""
        verb = "paused at" if i == 0 else "ran to"
        parts.append(f"thread {thread + 1} {verb} {code}({func}, line {line})")
    more = "" if len(steps) <= limit else f", and {len(steps) - limit} more switches"
    return "how: " + ", then ".join(parts) + more


# --- exploring schedules -----------------------------------------------------------------


@dataclass(frozen=True)
class RaceFound:
    """A schedule under which the judge saw a broken invariant."""

    problem: str
    schedule: Schedule
    run: RaceRun
    serial: bool = False  # found with the threads one after the other: not a race at all

    def hint(self) -> str:
        how = describe_interleaving(self.run.interleaving)
        return f"{self.problem} ({how})" if how else self.problem

    def fail(self, first: str) -> Exception:
        """The criterion's failure: the race, or (when the threads did not even interleave)
        a pointer to the criterion that covers the plain bug."""
        from ._framework import Fail

        if self.serial:
            return Fail(f"fix '{first}' first: it goes wrong even with one thread after the "
                        f"other ({self.problem.split(':')[0]})")
        return Fail(self.hint())


Judge = Callable[[RaceRun], "str | None"]


def explore(
    setup: Callable[[], tuple[Sequence[Call], Judge]],
    *,
    student: Sequence[Any] = (),
    schedules: Sequence[Schedule] | None = None,
) -> RaceFound | None:
    """Run ``setup()``'s calls as a race under each schedule until the judge objects.

    ``setup()`` builds fresh objects and returns ``(calls, judge)``; ``judge(run)`` returns a
    description of the broken invariant, or None. ``student`` are the student's classes or
    functions (their locks are made cooperative for the exploration). The calls run here, or
    in the grading worker when their targets are the worker's objects.
    """
    from .remote import is_remote

    schedules = list(schedules if schedules is not None else default_schedules())
    remote = any(is_remote(x) for x in student)
    with contextlib.nullcontext() if remote else sched_locks(*student):
        horizon: int | None = None
        for schedule in schedules:
            calls, judge = setup()
            if schedule.kind == "pct" and horizon is not None:
                schedule = replace(schedule, horizon=horizon)
            run = _execute(list(calls))(schedule)
            if horizon is None:
                horizon = max(10, run.steps)
            problem = judge(run)
            if problem:
                return RaceFound(problem, schedule, run, serial=not run.interleaving)
    return None


def _execute(calls: list[Call]) -> Callable[[Schedule], RaceRun]:
    from .remote import Remote, session_of

    targets = [c.target for c in calls]
    if targets and all(isinstance(t, Remote) for t in targets):
        session = session_of(targets[0])
        return lambda schedule: session.race(calls, schedule)
    return lambda schedule: _local(calls, schedule)


def _local(calls: list[Call], schedule: Schedule) -> RaceRun:
    from ._framework import current_guard, spawn_guarded

    guard = current_guard()
    runs: list[Any] = []

    def spawn(target: Callable[[], None], name: str) -> threading.Thread:
        return spawn_guarded(target, name=name)

    if guard is not None:
        guard.on_stop.append(lambda: [r.give_up() for r in runs] and None)
    return run_race(calls, schedule, spawn=spawn, on_start=runs.append)


def race_errors(run: RaceRun) -> None:
    """Raise what went wrong in a run that is not a wrong result: a deadlock (as a hint) or the
    first exception of the student's code (reported as it is)."""
    from ._framework import Fail

    if any(isinstance(e, Deadlock) and "already holds" in str(e) for e in run.errors):
        raise Fail(
            "deadlock: a thread waits for a lock it already holds (a method that holds the lock "
            "calls another that takes the same threading.Lock): use threading.RLock or take "
            "the lock once"
        )
    if run.deadlock or any(isinstance(e, Deadlock) for e in run.errors):
        raise Fail(
            "the threads deadlocked: each waits for a lock another one holds. Take locks in one "
            "fixed order, or use one lock for the whole operation"
            + (f" ({describe_interleaving(run.interleaving)})" if run.interleaving else "")
        )
    for err in run.errors:
        if err is not None and not isinstance(err, StopWaiting):
            raise err
