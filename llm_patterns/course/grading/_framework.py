"""The criteria runner behind every ``check_taskN``: one line of feedback per criterion.

Each criterion is a small function that raises :class:`Fail` with a hint that teaches. The runner
runs every criterion (one failure never hides another) in a worker thread with a real-time
budget, so an endless loop in student code becomes a failed criterion instead of a hung
notebook; ``time.sleep`` is refused inside those threads, so student code must use the virtual
clock it is given. Output is deterministic (no times, addresses or random values), which keeps
the solution notebooks stable under strict nbval.
"""

from __future__ import annotations

import ctypes
import dis
import functools
import logging
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from ._student import describe_exception, is_student_file

__all__ = [
    "DEFAULT_BUDGET",
    "CheckFailed",
    "CheckResult",
    "Criterion",
    "CriterionResult",
    "Fail",
    "RealSleepUsed",
    "Stopped",
    "capture_logs",
    "deadline",
    "harness_code",
    "log_listeners",
    "on_overrun",
    "output_to",
    "run_check",
    "spawn_guarded",
    "under_guard",
]

DEFAULT_BUDGET = 2.0
"""Real seconds one criterion may take before it is stopped and marked failed."""

_real_sleep = time.sleep


class Fail(Exception):
    """Raised by a criterion: the student's code misbehaved; ``hint`` says why and what to do."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


class RealSleepUsed(BaseException):
    """Raised inside a check when student code calls ``time.sleep`` (a BaseException, so a
    student's ``except Exception`` cannot swallow it)."""


class _StopCriterion(BaseException):
    """Injected into a criterion's threads when it overruns its budget."""


@dataclass(frozen=True)
class CriterionResult:
    """One criterion's outcome: its name, whether it passed, the hint if not, its points."""

    name: str
    passed: bool
    hint: str | None = None
    points: float = 1.0

    @property
    def earned(self) -> float:
        return self.points if self.passed else 0.0


class CheckFailed(AssertionError):
    """A check found failing criteria. Renders as a few lines in IPython and nbval."""

    def __init__(self, title: str, failures: Sequence[tuple[str, str]], passed: int, total: int,
                 results: Sequence[CriterionResult] = ()):
        self.title = title
        self.failures = list(failures)
        self.passed = passed
        self.total = total
        self.results = tuple(results)
        names = "; ".join(name for name, _ in self.failures)
        super().__init__(f"{title}: {len(self.failures)} of {total} criteria failed: {names}")

    def _render_traceback_(self) -> list[str]:
        lines = [f"CheckFailed: {self.title}: {len(self.failures)} of {self.total} criteria failed"]
        lines += [f"  ✗ {name}" for name, _ in self.failures]
        lines.append("(the hints are printed above)")
        return lines


@dataclass(frozen=True)
class CheckResult:
    """What a passing check returns; its repr is short and deterministic."""

    task: str
    passed: int
    total: int
    criteria: tuple[CriterionResult, ...] = ()

    @property
    def points(self) -> float:
        return sum(c.earned for c in self.criteria)

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.criteria)

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed}, total={self.total})"

    def __bool__(self) -> bool:
        return self.passed == self.total


@dataclass(frozen=True)
class Criterion:
    """A named expectation; ``run()`` returns normally on success or raises :class:`Fail`.

    ``points`` is what it is worth in ``grade`` (partial credit is per criterion)."""

    name: str
    run: Callable[[], object]
    points: float = 1.0


# --- guards ---------------------------------------------------------------------------------

_local = threading.local()


@dataclass
class _Guard:
    """The state of one running criterion: its threads and whether it used a real sleep."""

    threads: list[threading.Thread] = field(default_factory=list)
    real_sleep: list[float] = field(default_factory=list)
    stopped: bool = False
    blocked: bool = False  # a thread was stuck in a C call (a deadlock), not looping
    on_stop: list[Callable[[], object]] = field(default_factory=list)
    handled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
            callbacks = list(self.on_stop)
            threads = [t for t in self.threads if t.is_alive()]
        for cb in callbacks:
            # a callback that returns True has stopped the work itself (the grader killed the
            # worker running the student's code): the threads wake up on their own
            self.handled = bool(cb()) or self.handled
        if self.handled:
            return
        for t in threads:
            _inject(t, _StopCriterion, self)


_CALL_OPS = frozenset(
    dis.opmap[name] for name in ("CALL", "PRECALL", "CALL_FUNCTION_EX", "BEFORE_WITH",
                                 "CALL_FUNCTION", "CALL_METHOD", "CALL_KW", "SETUP_WITH")
    if name in dis.opmap
)


def _thread_cpu(thread: threading.Thread) -> float | None:
    """CPU seconds ``thread`` has used (Linux/Unix), or None where that cannot be read."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident or 0))
    except (AttributeError, OSError, TypeError, ValueError):
        return None


_HARNESS_CODES: set[types.CodeType] = set()


def harness_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``fn`` as the checks' own waiting (a scheduler handing turns): a thread waiting
    there is never taken for the student's deadlock, and is stopped by an injected exception."""
    _HARNESS_CODES.add(fn.__code__)
    return fn


def _in_harness(frame: types.FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in _HARNESS_CODES:
            return True
        frame = frame.f_back
    return False


def _blocked_in_c(thread: threading.Thread, samples: int = 10, gap: float = 0.01) -> bool:
    """Whether ``thread`` sits still inside a C call (a lock it will never get), not a loop.

    An exception injected into such a thread is never delivered, and on CPython 3.11 the
    pending injection slows every other thread until it is; so a deadlocked thread is left
    alone (it is a daemon and uses no CPU) instead of being interrupted. A thread that burns
    CPU meanwhile is looping, however still its frame looks on a busy machine.
    """
    if _in_harness(sys._current_frames().get(thread.ident or -1)):
        return False
    cpu_before = _thread_cpu(thread)
    seen = set()
    frame = None
    for i in range(samples):
        frame = sys._current_frames().get(thread.ident or -1)
        if frame is None:
            return False
        seen.add((id(frame.f_code), frame.f_lasti))
        if len(seen) > 1:
            return False
        if i + 1 < samples:
            _real_sleep(gap)
    cpu_after = _thread_cpu(thread)
    if cpu_before is not None and cpu_after is not None and cpu_after - cpu_before > 0.002:
        return False
    if frame is None:
        return False
    code, lasti = frame.f_code.co_code, frame.f_lasti
    return 0 <= lasti < len(code) and code[lasti] in _CALL_OPS


def _inject(
    thread: threading.Thread, exc: type[BaseException], guard: _Guard | None = None
) -> None:
    if thread.ident is None or not thread.is_alive():
        return
    if _blocked_in_c(thread):
        if guard is not None:
            guard.blocked = True
        return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))


def _guarded_sleep(seconds: float) -> None:
    """``time.sleep`` while a check runs: refused when the student's code calls it inside a
    criterion; the checks' own machinery (waiting for a process, say) really sleeps."""
    guard = getattr(_local, "guard", None)
    caller = sys._getframe(1).f_code.co_filename
    if guard is None or not is_student_file(caller):
        _real_sleep(seconds)
        return
    guard.real_sleep.append(seconds)
    raise RealSleepUsed(f"time.sleep({seconds!r}) called inside a check")


_patch_lock = threading.Lock()
_patch_depth = 0


class _SleepPatch:
    """Replace ``time.sleep`` while a check runs; only the check's threads are affected."""

    def __enter__(self) -> None:
        global _patch_depth
        with _patch_lock:
            if _patch_depth == 0:
                time.sleep = _guarded_sleep  # type: ignore[assignment]
            _patch_depth += 1

    def __exit__(self, *exc: object) -> None:
        global _patch_depth
        with _patch_lock:
            _patch_depth -= 1
            if _patch_depth == 0:
                time.sleep = _real_sleep


_quiet_lock = threading.Lock()
_quiet_depth = 0
_quiet_saved: list[logging.Handler] = []


class _QuietLogging:
    """Keep the student's log lines out of the check's output (it must stay deterministic);
    counted, so checks running at once in several threads restore the handlers once."""

    def __enter__(self) -> None:
        global _quiet_depth, _quiet_saved
        with _quiet_lock:
            if _quiet_depth == 0:
                root = logging.getLogger()
                _quiet_saved = root.handlers[:]
                root.handlers = [logging.NullHandler()]
            _quiet_depth += 1

    def __exit__(self, *exc: object) -> None:
        global _quiet_depth
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logging.getLogger().handlers = _quiet_saved


_thread_state = threading.local()


@contextmanager
def output_to(stream: IO[str]) -> Iterator[None]:
    """Send the lines of checks run by this thread to ``stream`` (default: ``sys.stdout``)."""
    saved = getattr(_thread_state, "stream", None)
    _thread_state.stream = stream
    try:
        yield
    finally:
        _thread_state.stream = saved


def _emit(line: str) -> None:
    print(line, file=getattr(_thread_state, "stream", None) or sys.stdout, flush=True)


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Checks run by this thread in the block stop starting criteria at ``time.monotonic()``
    ``at`` (the rest fail as "not run"), and give each at most the time left."""
    saved = getattr(_thread_state, "deadline", None)
    _thread_state.deadline = at if saved is None else min(at, saved)
    try:
        yield
    finally:
        _thread_state.deadline = saved


@contextmanager
def on_overrun(callback: Callable[[_Guard], object]) -> Iterator[None]:
    """Call ``callback(guard)`` when a criterion run by this thread overruns its budget (the
    grader stops the worker that runs the student's code; it returns True when it did, and
    sets ``guard.blocked`` when that code was waiting for a lock)."""
    hooks = getattr(_thread_state, "overrun", None)
    if hooks is None:
        hooks = _thread_state.overrun = []
    hooks.append(callback)
    try:
        yield
    finally:
        hooks.remove(callback)


log_listeners: list[Callable[[tuple[str, int, str]], None]] = []
"""Receivers of ``(logger name, level, message)`` for every logging call of student code (in
this process while :func:`capture_logs` is active, and from every grading worker)."""

_log_patch_depth = 0
_log_patch_lock = threading.Lock()
_real_is_enabled_for = logging.Logger.isEnabledFor
_real_handle = logging.Logger.handle


def _capturing_is_enabled_for(self: logging.Logger, level: int) -> bool:
    return True


# Files of the code under check that count as the student's for ``capture_logs(code)``: the
# library's own classes when a notebook checks them (the tour), by file path, with a count.
_checked_files: dict[str, int] = {}


def _source_file(obj: Any) -> str | None:
    import inspect

    target = getattr(obj, "func", obj)  # a functools.partial of the class
    try:
        return inspect.getsourcefile(target)
    except (TypeError, OSError):  # a builtin, or a class defined in a notebook cell
        return None


def _capturing_handle(self: logging.Logger, record: logging.LogRecord) -> None:
    if is_student_file(record.pathname) or record.pathname in _checked_files:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        for listener in log_listeners:
            listener((self.name, record.levelno, text))
    if _real_is_enabled_for(self, record.levelno):
        _real_handle(self, record)


@contextmanager
def capture_logs(*code: Any) -> Iterator[list[tuple[str, int, str]]]:
    """Collect ``(logger, level, message)`` for every logging call the student's code makes
    in the block, at any level, through any logger or handler, propagating or not; what the
    student's own handlers show is unchanged. Works in a notebook and through ``grade``.
    ``code``: the classes or functions under check, whose own files count as the student's
    even when they are the library's (a notebook that checks the library's classes)."""
    global _log_patch_depth
    records: list[tuple[str, int, str]] = []
    listener = records.append
    files = [f for f in map(_source_file, code) if f]
    with _log_patch_lock:
        for f in files:
            _checked_files[f] = _checked_files.get(f, 0) + 1
        if _log_patch_depth == 0:
            logging.Logger.isEnabledFor = _capturing_is_enabled_for  # type: ignore[method-assign]
            logging.Logger.handle = _capturing_handle  # type: ignore[method-assign]
        _log_patch_depth += 1
    log_listeners.append(listener)
    try:
        yield records
    finally:
        log_listeners.remove(listener)
        with _log_patch_lock:
            for f in files:
                _checked_files[f] -= 1
                if not _checked_files[f]:
                    del _checked_files[f]
            _log_patch_depth -= 1
            if _log_patch_depth == 0:
                logging.Logger.isEnabledFor = _real_is_enabled_for  # type: ignore[method-assign]
                logging.Logger.handle = _real_handle  # type: ignore[method-assign]


def current_guard() -> _Guard | None:
    return getattr(_local, "guard", None)


def spawn_guarded(target: Callable[[], None], name: str = "check-worker") -> threading.Thread:
    """Start a daemon thread that belongs to the running criterion (same guards, same stop)."""
    guard = current_guard()

    def body() -> None:
        _local.guard = guard
        try:
            target()
        finally:
            _local.guard = None

    thread = threading.Thread(target=body, name=name, daemon=True)
    if guard is not None:
        with guard.lock:
            guard.threads.append(thread)
    thread.start()
    return thread


def _run_one(
    fn: Callable[[], object], budget: float, hooks: Sequence[Callable[[_Guard], object]] = ()
) -> tuple[str, BaseException | None, _Guard]:
    """Run ``fn`` in a guarded thread: ("ok" | "error" | "timeout", exception, guard)."""
    guard = _Guard()
    for hook in hooks:
        guard.on_stop.append(functools.partial(hook, guard))
    box: dict[str, BaseException] = {}

    def body() -> None:
        _local.guard = guard
        try:
            fn()
        except BaseException as exc:
            box["exc"] = exc
        finally:
            _local.guard = None

    thread = threading.Thread(target=body, name="check-criterion", daemon=True)
    guard.threads.append(thread)
    thread.start()
    thread.join(budget)
    if thread.is_alive():
        guard.stop()
        for _ in range(10):  # re-inject: a bare `except:` in student code may swallow one
            thread.join(0.05)
            if not thread.is_alive() or guard.blocked or guard.handled:
                break
            _inject(thread, _StopCriterion, guard)
        return "timeout", None, guard
    exc = box.get("exc")
    return ("ok" if exc is None else "error"), exc, guard


def _sleep_hint() -> str:
    return "used time.sleep — use clock.sleep so the check runs in virtual time"


def _verdict(
    status: str, exc: BaseException | None, guard: _Guard, budget: float, timeout_hint: str
) -> str | None:
    """None when the criterion passed, else the hint to print."""
    if status == "timeout":
        if guard.real_sleep:
            return _sleep_hint()
        if guard.blocked:
            return (f"did not finish within {budget:g} s — stuck waiting for a lock (a deadlock?): "
                    "a method that holds the lock calls another that takes the same "
                    "threading.Lock; use threading.RLock or take the lock once")
        return f"did not finish within {budget:g} s — an endless loop?" + (
            f" ({timeout_hint})" if timeout_hint else ""
        )
    if guard.real_sleep or isinstance(exc, RealSleepUsed):
        return _sleep_hint()
    if exc is None:
        return None
    if isinstance(exc, Fail):
        return exc.hint
    if isinstance(exc, _StopCriterion):
        return f"did not finish within {budget:g} s — an endless loop?"
    return describe_exception(exc)


TIMEOUT_HINT = "a `while` that waits for tokens must call clock.sleep so time can pass"


class Stopped:
    """What ``under_guard`` returns when it had to stop the student's code: falsy, with the
    reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"Stopped({self.reason!r})"


def under_guard(fn: Callable[[], Any], *, what: str = "your code", budget: float = 5.0,
            timeout_hint: str = TIMEOUT_HINT) -> Any:
    """Run a demo cell's call into student code the way a check runs it: a real
    ``time.sleep`` is refused, ``budget`` real seconds at most, and instead of a silent wait or
    a hung kernel one line naming what happened. Returns ``fn()``'s value, or a falsy
    :class:`Stopped`; any other exception (``NotImplementedError`` from a stub...) is raised as
    it was, for the student to read."""
    if not budget > 0:
        raise ValueError(f"budget must be > 0 seconds, got {budget!r}")
    box: dict[str, Any] = {}
    with _SleepPatch():
        status, exc, guard = _run_one(lambda: box.setdefault("value", fn()), budget)
    if status == "error" and exc is not None and not (
            guard.real_sleep or isinstance(exc, (RealSleepUsed, _StopCriterion))):
        raise exc
    hint = _verdict(status, exc, guard, budget, timeout_hint)
    if hint is None:
        return box.get("value")
    _emit(f"⚠ {what} was stopped: {hint}")
    return Stopped(hint)


def run_check(
    title: str,
    criteria: Iterable[Criterion],
    *,
    budget: float = DEFAULT_BUDGET,
    timeout_hint: str = TIMEOUT_HINT,
) -> CheckResult:
    """Run every criterion, print a line for each, raise :class:`CheckFailed` if any failed.

    The last line gives the score: criteria passed and points earned (one per criterion unless
    a criterion says otherwise). The result (or the exception) carries every criterion's
    :class:`CriterionResult`.
    """
    if not budget > 0:
        raise ValueError(f"budget must be > 0 seconds, got {budget!r}")
    criteria = list(criteria)
    hooks = list(getattr(_thread_state, "overrun", None) or [])
    _emit(title)
    results: list[CriterionResult] = []
    stop_at = getattr(_thread_state, "deadline", None)
    with _SleepPatch(), _QuietLogging():
        for criterion in criteria:
            allowed = budget
            if stop_at is not None:
                allowed = min(budget, stop_at - time.monotonic())
            if allowed <= 0:
                hint: str | None = "not run: the time limit for this task was reached"
            else:
                status, exc, guard = _run_one(criterion.run, allowed, hooks)
                hint = _verdict(status, exc, guard, allowed, timeout_hint)
            results.append(CriterionResult(criterion.name, hint is None, hint, criterion.points))
            if hint is None:
                _emit(f"✓ {criterion.name}")
            else:
                _emit(f"✗ {criterion.name} — {hint}")
    failures = [(r.name, r.hint or "") for r in results if not r.passed]
    passed = len(criteria) - len(failures)
    earned = sum(r.earned for r in results)
    worth = sum(r.points for r in results)
    _emit(f"{passed}/{len(criteria)} criteria passed · {earned:g}/{worth:g} points")
    if failures:
        err = CheckFailed(title, failures, passed, len(criteria), results)
        raise err.with_traceback(None)
    return CheckResult(title, passed, len(criteria), tuple(results))
