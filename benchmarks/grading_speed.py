"""Benchmark 10: how long ``grade`` takes per submission and for a class, sandboxed.

A submission is a copy of the course: ``solutions/`` (every task right) or ``notebooks/`` (every
task a stub). ``grade`` extracts each task's definitions, loads them into a confined worker and
runs the checks on proxies: graded code only, no plots or simulations. Figures: real seconds for
one submission (median of several), and for a class of N submissions (half right, half stubs)
graded in parallel over the machine's cores, projected to a class of 100. The peer is what
``grade`` did before: re-running the six task notebooks with nbval in the student's kernel
(full runs only; ``--quick`` skips it).

    .venv/bin/python benchmarks/grading_speed.py [--quick] [--repeats N] [--class-size N]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common  # type: ignore[import-not-found]

from llm_patterns.course.grading import grade as G
from llm_patterns.course.grading.sandbox import isolation

NAME = "grading_speed"
TARGET_SUBMISSION_S = 15.0
TARGET_CLASS_100_S = 15 * 60.0
TASK_NOTEBOOKS = ("01_rate_limiting", "02_backoff", "03_cost_tracking", "04_fallback",
                  "05_circuit_breaker", "07_token_limits")


def _submission(folder: Path, source: Path) -> Path:
    folder.mkdir(parents=True)
    for stem in TASK_NOTEBOOKS:
        shutil.copy(source / f"{stem}.ipynb", folder / f"{stem}.ipynb")
    return folder


def time_one(folder: Path, repeats: int, jobs: int) -> tuple[float, dict[str, Any]]:
    times, report = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = G.grade(folder, jobs=jobs)
        times.append(time.perf_counter() - t0)
    return common.median(times), report


def time_class(root: Path, size: int, jobs: int) -> dict[str, Any]:
    for i in range(size):
        source = common.ROOT / ("solutions" if i % 2 == 0 else "notebooks")
        _submission(root / f"student{i:03d}", source)
    t0 = time.perf_counter()
    result = G.grade_class(root, jobs=jobs)
    seconds = time.perf_counter() - t0
    reports = result["students"]
    right = [r for name, r in reports.items() if int(name[-3:]) % 2 == 0]
    stubs = [r for name, r in reports.items() if int(name[-3:]) % 2 == 1]
    return {
        "submissions": size,
        "seconds": common.rnd(seconds),
        "seconds_per_submission": common.rnd(seconds / size),
        "projected_class_of_100_s": common.rnd(seconds / size * 100),
        "full_marks": sum(1 for r in right if r.get("score") == r.get("max")),
        "zero_for_stubs": sum(1 for r in stubs if r.get("score") == 0),
    }


def time_nbval(folder: Path) -> float:
    """The peer: what grading cost before (nbval re-running the task notebooks)."""
    cmd = [sys.executable, "-m", "pytest", "-p", "nbval.plugin", "--nbval-lax",
           "--nbval-current-env", "-p", "no:cacheprovider", "-q", "-o", "addopts=",
           *(str(folder / f"{stem}.ipynb") for stem in TASK_NOTEBOOKS)]
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=folder, env=env, capture_output=True, check=False, timeout=1200)
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = common.parser((__doc__ or "").splitlines()[0])
    p.add_argument("--class-size", type=int, default=None,
                   help="submissions in the class run (default 20, 4 with --quick)")
    args = p.parse_args(argv)
    common.quiet_logs()
    repeats = args.repeats or (1 if args.quick else 3)
    size = args.class_size or (4 if args.quick else 20)
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmpdir = Path(tmp)
        right = _submission(tmpdir / "right", common.ROOT / "solutions")
        stub = _submission(tmpdir / "stub", common.ROOT / "notebooks")
        right_s, right_report = time_one(right, repeats, jobs)
        print(f"  one correct submission: {right_s:.2f} s", file=sys.stderr, flush=True)
        stub_s, stub_report = time_one(stub, repeats, jobs)
        print(f"  one stub submission: {stub_s:.2f} s", file=sys.stderr, flush=True)
        klass = time_class(tmpdir / "class", size, jobs)
        print(f"  class of {size}: {klass['seconds']} s", file=sys.stderr, flush=True)
        peer = None if args.quick else time_nbval(_submission(tmpdir / "peer",
                                                              common.ROOT / "solutions"))
    per_submission = max(right_s, stub_s)
    targets = {
        f"one submission within {TARGET_SUBMISSION_S:g} s": per_submission <= TARGET_SUBMISSION_S,
        "a class of 100 within 15 min (projected)":
            klass["projected_class_of_100_s"] <= TARGET_CLASS_100_S,
        "correct submissions get full marks": right_report["score"] == right_report["max"]
        and klass["full_marks"] == (size + 1) // 2,
        "stubs get 0": stub_report["score"] == 0 and klass["zero_for_stubs"] == size // 2,
    }
    result = {
        "setup": {"repeats": repeats, "jobs": jobs, "sandbox": isolation(),
                  "class_size": size},
        "one_submission": {"correct_s": common.rnd(right_s), "stub_s": common.rnd(stub_s),
                           "score": f"{right_report['score']}/{right_report['max']}"},
        "class": klass,
        "peer_nbval_rerun_s": None if peer is None else common.rnd(peer),
        "speedup_vs_nbval": None if peer is None else common.rnd(peer / right_s, 1),
        "targets": targets,
    }
    detail = common.markdown_table(
        ["what", "seconds"],
        [["one correct submission (all tasks)", common.rnd(right_s)],
         ["one stub submission", common.rnd(stub_s)],
         [f"class of {size}, {jobs} jobs: per submission", klass["seconds_per_submission"]],
         ["class of 100, projected", klass["projected_class_of_100_s"]],
         ["peer: nbval re-running the six task notebooks",
          "skipped" if peer is None else common.rnd(peer)]])
    detail += "\n\nTargets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}"
                                          for k, v in targets.items())
    common.finish(args, NAME, result,
                  history_headers=["one submission s", "class per submission s",
                                   "class of 100 s (projected)", "nbval peer s"],
                  history_row=[common.rnd(right_s), klass["seconds_per_submission"],
                               klass["projected_class_of_100_s"],
                               "-" if peer is None else common.rnd(peer)],
                  detail=detail)
    return result


if __name__ == "__main__":
    main()
