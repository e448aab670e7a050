"""Benchmark 6: how long each graded check takes on a correct solution (students wait for it).

Each ``check_taskN`` runs the reference solution (``solutions/solution_9_4_llm_retry_patterns.py``)
through every criterion on a virtual clock; the figure is the real time of one call, median of
several. Target: under 1 s per check, so feedback feels immediate.

    .venv/bin/python benchmarks/check_speed.py [--quick] [--repeats N]
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
from collections.abc import Sequence
from typing import Any

import common  # type: ignore[import-not-found]

from llm_patterns import grading

NAME = "check_speed"
TARGET_S = 1.0
SOLUTION = common.ROOT / "solutions" / "solution_9_4_llm_retry_patterns.py"
CHECKS = {  # task: (check, names the student defines)
    1: (grading.check_task1, ("TokenBucket", "RateLimiter")),
    2: (grading.check_task2, ("calculate_backoff", "is_retryable")),
    3: (grading.check_task3, ("CostTracker",)),
    4: (grading.check_task4, ("call_with_fallback",)),
    5: (grading.check_task5, ("CircuitBreaker",)),
    7: (grading.check_task7, ("chunk_text",)),
}


def _solution() -> Any:
    spec = importlib.util.spec_from_file_location("solution_9_4", SOLUTION)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)  # the runner only starts under __main__
    return module


def time_check(task: int, module: Any, repeats: int) -> dict[str, Any]:
    check, names = CHECKS[task]
    args = [getattr(module, n) for n in names]
    times, passed = [], True
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                check(*args)
        except AssertionError:
            passed = False
        times.append(time.perf_counter() - t0)
    return {"task": task, "check": check.__name__, "median_s": common.rnd(common.median(times)),
            "max_s": common.rnd(max(times)), "passed": passed}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = common.parser((__doc__ or "").splitlines()[0])
    args = p.parse_args(argv)
    common.quiet_logs()
    repeats = args.repeats or (1 if args.quick else 5)
    module = _solution()
    tasks = [1, 2] if args.quick else list(CHECKS)
    rows = [time_check(task, module, repeats) for task in tasks]
    for row in rows:
        print(f"  {row['check']}: {row['median_s']} s", file=sys.stderr, flush=True)
    slowest = max(r["median_s"] for r in rows)
    targets = {f"every check under {TARGET_S:g} s": slowest < TARGET_S,
               "the reference solution passes every check": all(r["passed"] for r in rows)}
    result = {"setup": {"repeats": repeats, "solution": SOLUTION.name}, "checks": rows,
              "slowest_s": slowest, "targets": targets}
    detail = common.markdown_table(["check", "median s", "max s", "passed"],
                                   [[r["check"], r["median_s"], r["max_s"], r["passed"]]
                                    for r in rows])
    detail += "\n\nTargets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}"
                                          for k, v in targets.items())
    common.finish(args, NAME, result,
                  history_headers=["slowest check s", *(f"task {r['task']} s" for r in rows)],
                  history_row=[slowest, *(r["median_s"] for r in rows)], detail=detail)
    return result


if __name__ == "__main__":
    main()
