"""Run the exercise checks from a plain Python file: the script path of exercise 9.4.

The starter (``exercises/exercise_9_4_llm_retry_patterns_starter.py``) and the solution
(``solutions/solution_9_4_llm_retry_patterns.py``) both end with::

    if __name__ == "__main__":
        raise SystemExit(run_checks(globals()))

``run_checks`` finds the student's names in that namespace, runs the library's own
``check_task1`` … ``check_task7`` on them (the same checks the notebooks call), lets every task
run even when an earlier one fails, and ends with a score line such as
``4/5 required tasks pass; bonus 1/1`` (task 7 is a bonus: never in the denominator).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import (
    task1_rate_limit,
    task2_backoff,
    task3_cost,
    task4_fallback,
    task5_circuit_breaker,
    task7_chunking,
)
from ._framework import CheckFailed

__all__ = ["TASKS", "TaskSpec", "run_checks"]


@dataclass(frozen=True)
class TaskSpec:
    """One task of the course: its title, the names the student defines, its check, the
    notebook it lives in, and whether it is a bonus (outside the course's maximum)."""

    number: int
    title: str
    names: tuple[str, ...]
    check: Callable[..., Any]
    notebook: str = ""
    bonus: bool = False

    @property
    def key(self) -> str:
        return f"task{self.number}"


TASKS: dict[int, TaskSpec] = {
    spec.number: spec
    for spec in (
        TaskSpec(1, task1_rate_limit.TITLE, ("TokenBucket", "RateLimiter"),
                 task1_rate_limit.check_task1, "01_rate_limiting.ipynb"),
        TaskSpec(2, task2_backoff.TITLE, ("calculate_backoff", "is_retryable"),
                 task2_backoff.check_task2, "02_backoff.ipynb"),
        TaskSpec(3, task3_cost.TITLE, ("CostTracker",), task3_cost.check_task3,
                 "03_cost_tracking.ipynb"),
        TaskSpec(4, task4_fallback.TITLE, ("call_with_fallback",), task4_fallback.check_task4,
                 "04_fallback.ipynb"),
        TaskSpec(5, task5_circuit_breaker.TITLE, ("CircuitBreaker",),
                 task5_circuit_breaker.check_task5, "05_circuit_breaker.ipynb"),
        TaskSpec(7, task7_chunking.TITLE, ("chunk_text",), task7_chunking.check_task7,
                 "07_token_limits.ipynb", bonus=True),
    )
}
"""Every task of the course: 1-5 required, 7 a bonus (task 6, the capstone, has no check)."""

_SYMBOLS = "✓✗·—"
_RESULT = "\x1eresult\x1e"  # marks the line on which a child process reports its outcome


def _printable(stream: Any) -> None:
    """Keep a console that cannot show ✓/✗ (an old Windows code page) from crashing the run."""
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        _SYMBOLS.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="replace")


def _parse(namespace: Mapping[str, Any], available: list[int], argv: list[str] | None) -> list[int]:
    """The tasks to run: ``available``, or the ones named with ``--task N``."""
    script = namespace.get("__file__")
    parser = argparse.ArgumentParser(
        prog=os.path.basename(script) if isinstance(script, str) else "run_checks",
        description="Run the checks of exercise 9.4 on the code in this file.",
    )
    parser.add_argument(
        "--task",
        type=int,
        action="append",
        metavar="N",
        help=f"run only task N (one of {', '.join(map(str, available))}); may be repeated",
    )
    if argv is None:  # options come from the command line only when the file runs as a script
        argv = sys.argv[1:] if namespace.get("__name__") == "__main__" else []
    args = parser.parse_args(argv)
    if not args.task:
        return available
    unknown = [n for n in args.task if n not in available]
    if unknown:
        parser.error(
            f"--task {unknown[0]}: no such task here (tasks: {', '.join(map(str, available))})"
        )
    return [n for n in available if n in args.task]


def _run_task(
    spec: TaskSpec, namespace: Mapping[str, Any], budget: float | None
) -> tuple[bool, str]:
    """Run one task's check; returns (passed, "k/n criteria" or why it could not run)."""
    missing = [name for name in spec.names if name not in namespace]
    if missing:
        print(spec.title, flush=True)
        for name in missing:
            print(
                f"✗ {name} is not defined — keep the stub's name and signature, the check "
                "looks it up by name",
                flush=True,
            )
        return False, f"{', '.join(missing)} not defined"
    keywords = {} if budget is None else {"budget": budget}
    try:
        result = spec.check(*(namespace[name] for name in spec.names), **keywords)
    except CheckFailed as exc:
        return False, f"{exc.passed}/{exc.total} criteria"
    except Exception as exc:
        print(f"✗ the check could not run: {type(exc).__name__}: {exc}", flush=True)
        return False, "could not run"
    return True, f"{result.passed}/{result.total} criteria"


def _run_task_in_child(
    spec: TaskSpec, namespace: Mapping[str, Any], budget: float | None
) -> tuple[bool, str]:
    """``_run_task`` in a forked child; its output is relayed line by line as it comes."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the check, report, and never return into the caller's code
        status = 1
        try:
            os.close(read_fd)
            out = open(write_fd, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
            sys.stdout = out
            passed, detail = _run_task(spec, namespace, budget)
            out.write(_RESULT + json.dumps([passed, detail]) + "\n")
            out.flush()
            status = 0
        finally:
            os._exit(status)  # skips atexit and the check's stuck daemon threads
    os.close(write_fd)
    outcome = None
    with open(read_fd, encoding="utf-8", errors="replace") as pipe:
        for line in pipe:
            if line.startswith(_RESULT):
                outcome = json.loads(line[len(_RESULT) :])
            else:
                sys.stdout.write(line)
                sys.stdout.flush()
    _, status = os.waitpid(pid, 0)
    if outcome is None:
        print(f"✗ the check stopped without a result (wait status {status})", flush=True)
        return False, "crashed"
    return bool(outcome[0]), str(outcome[1])


def run_checks(
    namespace: Mapping[str, Any],
    tasks: Iterable[int] | None = None,
    argv: list[str] | None = None,
    *,
    budget: float | None = None,
    isolate: bool | None = None,
) -> int:
    """Check the student's code in ``namespace`` (usually ``globals()``); return an exit status.

    ``tasks`` limits the run to those task numbers (default: 1, 2, 3, 4, 5 and 7). ``argv`` are
    command-line options (``--task N``, repeatable, to run only task N); when None they are read
    from ``sys.argv`` if ``namespace`` is a script run as ``__main__``, else none are used.
    Each check prints one line per criterion; every task runs even when another fails. Returns
    0 when every task run passes, else 1 (argparse exits with 2 on a bad option).

    ``budget`` is the real seconds a criterion may take (the checks' default when None).
    ``isolate`` runs each task in a forked child process; by default it does when ``os.fork``
    exists and the caller runs a single thread (forking a multi-threaded process, such as a
    Jupyter kernel, is unsafe), else the tasks run in this process.
    """
    if budget is not None and not budget > 0:
        raise ValueError(f"budget must be > 0 seconds, got {budget!r}")
    if isolate is None:
        isolate = hasattr(os, "fork") and threading.active_count() == 1
    elif isolate and not hasattr(os, "fork"):
        raise ValueError("isolate=True needs os.fork, which this platform does not have")
    run_task = _run_task_in_child if isolate else _run_task
    if tasks is None:
        available = sorted(TASKS)
    else:
        available = []
        for n in tasks:
            if n not in TASKS:
                raise ValueError(
                    f"tasks: no task {n!r}; expected numbers from {', '.join(map(str, TASKS))}"
                )
            if n not in available:
                available.append(n)
        available.sort()
        if not available:
            raise ValueError("tasks is empty: name at least one task to check")
    chosen = _parse(namespace, available, argv)
    _printable(sys.stdout)
    print(
        f"Checking task{'s' if len(chosen) > 1 else ''} {', '.join(map(str, chosen))}", flush=True
    )
    outcomes: list[tuple[TaskSpec, bool, str]] = []
    for number in chosen:
        spec = TASKS[number]
        print(flush=True)
        passed, detail = run_task(spec, namespace, budget)
        outcomes.append((spec, passed, detail))
    width = max(len(spec.title) for spec, _, _ in outcomes)
    print("\nSummary", flush=True)
    for spec, passed, detail in outcomes:
        print(f"  {'PASS' if passed else 'FAIL'}  {spec.title:<{width}}  {detail}", flush=True)
    print(score_line(outcomes), flush=True)
    required = [passed for spec, passed, _ in outcomes if not spec.bonus]
    return 0 if all(required) else 1


def score_line(outcomes: list[tuple[TaskSpec, bool, str]]) -> str:
    """``4/5 required tasks pass; bonus 1/1``: a bonus task is never in the denominator."""
    required = [passed for spec, passed, _ in outcomes if not spec.bonus]
    bonus = [passed for spec, passed, _ in outcomes if spec.bonus]
    parts = []
    if required:
        parts.append(f"{sum(required)}/{len(required)} required tasks pass")
    if bonus:
        parts.append(f"bonus {sum(bonus)}/{len(bonus)}")
    return "; ".join(parts)
