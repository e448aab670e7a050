"""Forced interleaving: run student code in real threads that take turns bytecode by bytecode.

An unlocked read-modify-write (``if self.tokens >= n: self.tokens -= n``) almost never races in
a quick test, because the GIL switches threads only every few milliseconds. Here every thread is
traced, and before each bytecode of student code it waits until every other thread has also
executed its next bytecode. Threads running the same code therefore read shared state before any
of them writes it back: an unlocked update loses deterministically. A thread that blocks on a
lock cannot take its turn; after ``stall`` real seconds the others give up on lockstep and run
freely, so a correctly locked implementation always finishes with the right answer.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from ._framework import current_guard, spawn_guarded
from ._student import is_student_file

__all__ = ["Lockstep", "run_in_lockstep"]


class Lockstep:
    """A barrier per bytecode for ``parties`` threads, abandoned after the first stall."""

    def __init__(self, parties: int, stall: float = 0.02) -> None:
        self._cond = threading.Condition()
        self._active = parties
        self._arrived = 0
        self._generation = 0
        self._stall = stall
        self.enabled = True
        self.stalled = False

    def step(self) -> None:
        with self._cond:
            if not self.enabled:
                return
            generation = self._generation
            self._arrived += 1
            if self._arrived >= self._active:
                self._release()
                return
            ok = self._cond.wait_for(
                lambda: self._generation != generation or not self.enabled, timeout=self._stall
            )
            if not ok:
                self.stalled = True
                self.disable_locked()

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self.enabled and self._active > 0 and self._arrived >= self._active:
                self._release()

    def disable(self) -> None:
        with self._cond:
            self.disable_locked()

    def disable_locked(self) -> None:
        self.enabled = False
        self._cond.notify_all()

    def _release(self) -> None:
        self._arrived = 0
        self._generation += 1
        self._cond.notify_all()

    # sys.settrace machinery: trace only student frames, one event per bytecode
    def _global_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event != "call" or not self.enabled:
            return None
        if not is_student_file(frame.f_code.co_filename):
            return None
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._local_trace

    def _local_trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and self.enabled:
            self.step()
        return self._local_trace


def run_in_lockstep(
    fns: Sequence[Callable[[], Any]], *, stall: float = 0.02
) -> tuple[list[Any], list[BaseException | None], bool]:
    """Run each ``fn`` in its own thread in lockstep; return (results, errors, stalled).

    Must be called inside a running criterion (the threads share its guards and its budget).
    """
    lock = Lockstep(len(fns), stall=stall)
    start = threading.Barrier(len(fns))
    results: list[Any] = [None] * len(fns)
    errors: list[BaseException | None] = [None] * len(fns)
    guard = current_guard()
    if guard is not None:
        guard.on_stop.append(lock.disable)

    def make(i: int, fn: Callable[[], Any]) -> Callable[[], None]:
        def body() -> None:
            try:
                start.wait(timeout=5.0)
                sys.settrace(lock._global_trace)
                try:
                    results[i] = fn()
                finally:
                    sys.settrace(None)
            except BaseException as exc:  # noqa: BLE001 - reported by the caller
                errors[i] = exc
            finally:
                lock.leave()

        return body

    threads = [spawn_guarded(make(i, fn), name=f"check-lockstep-{i}") for i, fn in enumerate(fns)]
    for t in threads:
        t.join()
    return results, errors, lock.stalled
