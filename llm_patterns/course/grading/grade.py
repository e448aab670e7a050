"""``python -m llm_patterns grade PATH``: score a submission, or a whole class, without trusting it.

For each task of the course (required tasks 1-5, bonus task 7) the grader finds the notebook
that defines the task's names (whatever it is called), keeps only the statements those names
need (:mod:`.extract`), loads them into a sandboxed worker process (:mod:`.sandbox`,
:mod:`.worker`) and runs the task's ``check_taskN`` *here*, on proxies of the student's objects
(:mod:`.remote`). The check cells in the notebook are never what counts: no line of the
submission runs in this process, so nothing it does can change a verdict.

Points are per criterion. A missing, renamed-away, unreadable or crashing notebook scores 0 for
its task with the reason; the maximum is always the whole course. ``PATH`` is one submission (a
folder with notebooks, or one notebook) or a class: a folder of submission folders, graded in
parallel, with ``--csv`` for a gradebook and ``--feedback DIR`` for one Markdown file per student.
A low score is not an error: the exit status is 0 unless grading itself failed (2 for a bad PATH).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import csv
import io
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from ._framework import CheckFailed, CriterionResult, Fail, deadline, on_overrun, output_to
from .extract import NotFound, Program, find_program, load_documents
from .remote import SandboxError, Session, WorkerLost
from .sandbox import Limits, Sandbox, isolation, read_no_follow
from .script import TASKS, TaskSpec

__all__ = ["GradeError", "add_parser", "format_table", "grade", "grade_class", "main", "run"]

DOCUMENT_SUFFIXES = (".ipynb", ".py")


class GradeError(Exception):
    """A real problem (bad path, the grader itself failed): reported, exit status non-zero."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# --- one task ---------------------------------------------------------------------------


class _Missing:
    """Stands for a name the grader could not load: every use fails with the reason."""

    def __init__(self, reason: str) -> None:
        self._reason = reason

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise Fail(self._reason)

    def __getattr__(self, name: str) -> Any:
        raise Fail(self._reason)


@cache
def _criteria_of(number: int) -> tuple[tuple[str, float], ...]:
    """The names and points of a task's criteria (its check run on stand-ins, here)."""
    spec = TASKS[number]
    with output_to(io.StringIO()):
        try:
            result = spec.check(*[_Missing("-")] * len(spec.names), budget=1.0)
            results = result.criteria
        except CheckFailed as exc:
            results = exc.results
    return tuple((r.name, r.points) for r in results)


def _zero(spec: TaskSpec, reason: str, notebook: str = "") -> dict[str, Any]:
    criteria = [CriterionResult(name, False, reason, points) for name, points in
                _criteria_of(spec.number)]
    return _task_report(spec, notebook, criteria, reason)


def _num(x: float) -> float | int:
    return int(x) if float(x).is_integer() else round(x, 3)


def _task_report(spec: TaskSpec, notebook: str, criteria: Sequence[CriterionResult],
                 reason: str | None, seconds: float = 0.0) -> dict[str, Any]:
    points = sum(c.earned for c in criteria)
    worth = sum(c.points for c in criteria)
    return {
        "title": spec.title,
        "notebook": notebook,
        "passed": bool(criteria) and all(c.passed for c in criteria) and reason is None,
        "points": _num(points),
        "max": _num(worth),
        "bonus": spec.bonus,
        "reason": reason,
        "criteria": [{"name": c.name, "passed": c.passed, "points": _num(c.earned),
                      "max": _num(c.points), "hint": c.hint} for c in criteria],
        "seconds": round(seconds, 2),
    }


def _grade_task(sandbox: Sandbox, program: Program | NotFound, spec: TaskSpec, limits: Limits,
                stop_at: float) -> dict[str, Any]:
    started = time.monotonic()
    if time.monotonic() >= stop_at:
        return _zero(spec, f"not graded: the time limit for the submission "
                           f"({limits.submission_seconds:g} s) was reached")
    if isinstance(program, NotFound):
        return _zero(spec, program.reason, program.document)
    task_stop = min(stop_at, started + limits.task_seconds)
    session = Session(sandbox, program.chunks, list(spec.names),
                      load_seconds=max(1.0, min(limits.task_seconds, task_stop - time.monotonic())))
    try:
        try:
            missing = [name for name in spec.names if not session.defined(name)]
        except WorkerLost as exc:
            return _zero(spec, f"your code could not be loaded: {exc.hint}", program.document)
        if missing:
            errors = "; ".join(f"{f}: {e}" for f, e in session.load_errors[:3])
            reason = (f"{' and '.join(missing)} not defined after running your cells"
                      + (f" ({errors})" if errors else ""))
            return _zero(spec, reason, program.document)
        out = io.StringIO()
        with output_to(out), on_overrun(session.overrun), deadline(task_stop):
            try:
                result = spec.check(*[session.root(n) for n in spec.names],
                                    budget=limits.criterion_seconds)
                criteria: Sequence[CriterionResult] = result.criteria
            except CheckFailed as exc:
                criteria = exc.results
        return _task_report(spec, program.document, criteria, None, time.monotonic() - started)
    except SandboxError as exc:
        raise GradeError(f"grade: {exc}") from None
    except Exception as exc:
        return _zero(spec, f"the grader failed on this task: {type(exc).__name__}: {exc}",
                     program.document)
    finally:
        session.close()


# --- one submission -----------------------------------------------------------------------


def _tasks(numbers: Iterable[int] | None) -> list[TaskSpec]:
    if numbers is None:
        return [TASKS[n] for n in sorted(TASKS)]
    out = []
    for n in numbers:
        if n not in TASKS:
            raise GradeError(f"grade: --task {n}: no such task (tasks: "
                             f"{', '.join(map(str, sorted(TASKS)))})", 2)
        out.append(TASKS[n])
    return out


def grade(path: str | os.PathLike[str], *, limits: Limits | None = None, jobs: int = 1,
          tasks: Iterable[int] | None = None, hide: Sequence[str] = (),
          level: str | None = None) -> dict[str, Any]:
    """Grade one submission (a folder or a notebook); returns the report (see module doc)."""
    src = Path(path)
    if not src.exists() and not src.is_symlink():
        raise GradeError(f"grade: no such file or directory: {src}", 2)
    if src.is_symlink():
        raise GradeError(f"grade: {src} is a symbolic link: give the submission itself", 2)
    limits = limits or Limits()
    specs = _tasks(tasks)
    started = time.monotonic()
    stop_at = started + limits.submission_seconds
    with tempfile.TemporaryDirectory(prefix="llm-patterns-grade-one-") as single:
        folder = src
        if src.is_file():  # one notebook: grade a folder holding just that file
            if src.suffix not in DOCUMENT_SUFFIXES:
                raise GradeError(f"grade: {src} is not a notebook (.ipynb) or a .py file", 2)
            folder = Path(single)
            try:
                (folder / src.name).write_bytes(read_no_follow(src, limits.copy_bytes))
            except OSError as exc:
                raise GradeError(f"grade: {src}: {exc}", 2) from None
        where = src.resolve().parent if src.is_file() else src.resolve()
        with Sandbox(folder, limits=limits, level=level, hide=(str(where), *hide)) as sandbox:
            documents, notes = load_documents(sandbox.work)
            copy = sandbox.copy
            if copy is not None and copy.truncated:
                notes.append(f"the submission is over {limits.copy_bytes >> 20} MB: only part "
                             "of it was copied for grading")
            if not documents:
                notes.append("no notebooks (.ipynb) or Python files (.py) in the submission")
            # static, and first: CPython 3.11's ast.parse is not safe in parallel threads
            programs = {spec.key: find_program(documents, spec.number, spec.names, spec.notebook)
                        for spec in specs}
            results: dict[str, dict[str, Any]] = {}
            if jobs > 1 and len(specs) > 1:
                with cf.ThreadPoolExecutor(max_workers=jobs) as pool:
                    futures = {spec.key: pool.submit(_grade_task, sandbox, programs[spec.key],
                                                     spec, limits, stop_at) for spec in specs}
                    results = {key: f.result() for key, f in futures.items()}
            else:
                results = {spec.key: _grade_task(sandbox, programs[spec.key], spec, limits,
                                                 stop_at) for spec in specs}
            level_used = sandbox.level
    return _summary(results, notes, level_used, time.monotonic() - started)


def _summary(tasks: dict[str, dict[str, Any]], notes: list[str], level: str,
             seconds: float) -> dict[str, Any]:
    required = [t for t in tasks.values() if not t["bonus"]]
    bonus = [t for t in tasks.values() if t["bonus"]]
    return {
        "tasks": tasks,
        "score": _num(sum(t["points"] for t in required)),
        "max": _num(sum(t["max"] for t in required)),
        "bonus": {"score": _num(sum(t["points"] for t in bonus)),
                  "max": _num(sum(t["max"] for t in bonus))},
        "notes": notes,
        "sandbox": level,
        "seconds": round(seconds, 2),
    }


# --- a class --------------------------------------------------------------------------------


def _has_documents(folder: Path) -> bool:
    try:
        return any(p.suffix in DOCUMENT_SUFFIXES and p.is_file() and not p.is_symlink()
                   for p in folder.iterdir())
    except OSError:
        return False


def is_class_folder(path: Path) -> bool:
    """A folder of submission folders (no notebooks of its own, sub-folders that have some)."""
    if not path.is_dir() or _has_documents(path):
        return False
    return any(p.is_dir() and not p.is_symlink() and not p.name.startswith(".")
               for p in path.iterdir())


def _grade_one_student(args: tuple[str, str, Limits, str | None, str]) -> dict[str, Any]:
    folder, _name, limits, level, class_root = args
    try:
        return grade(folder, limits=limits, jobs=1, hide=(class_root,), level=level)
    except GradeError as exc:
        return {"error": str(exc)}
    except Exception as exc:
        return {"error": f"the grader failed on this submission: {type(exc).__name__}: {exc}"}


def grade_class(path: str | os.PathLike[str], *, limits: Limits | None = None,
                jobs: int | None = None, level: str | None = None,
                progress: Any = None) -> dict[str, Any]:
    """Grade every submission folder under ``path`` in parallel (``jobs`` processes)."""
    root = Path(path)
    if not root.is_dir():
        raise GradeError(f"grade: {root} is not a folder of submissions", 2)
    limits = limits or Limits()
    jobs = jobs or os.cpu_count() or 1
    students = sorted(p for p in root.iterdir()
                      if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    skipped = sorted(p.name for p in root.iterdir() if p.is_symlink())
    if not students:
        raise GradeError(f"grade: no submission folders under {root}", 2)
    started = time.monotonic()
    work = [(str(p), p.name, limits, level, str(root.resolve())) for p in students]
    reports: dict[str, dict[str, Any]] = {}
    if jobs > 1 and len(work) > 1:
        ctx = multiprocessing.get_context("forkserver" if sys.platform.startswith("linux")
                                          else "spawn")
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            for item, report in zip(work, pool.map(_grade_one_student, work), strict=True):
                name = item[1]
                reports[name] = report
                if progress is not None:
                    progress(name, report)
    else:
        for item in work:
            reports[item[1]] = _grade_one_student(item)
            if progress is not None:
                progress(item[1], reports[item[1]])
    seconds = time.monotonic() - started
    return {"students": reports, "count": len(reports), "seconds": round(seconds, 2),
            "seconds_per_submission": round(seconds / max(1, len(reports)), 2),
            "jobs": jobs, "skipped": [f"{s} is a symbolic link: not graded" for s in skipped]}


# --- output -----------------------------------------------------------------------------


def _pts(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def format_table(report: dict[str, Any], details: bool = True) -> str:
    """The score table (task, notebook, ✓/✗, points, note), then the failed criteria."""
    rows = [("task", "notebook", "status", "points", "note")]
    for key, t in report["tasks"].items():
        note = "bonus" if t["bonus"] else ""
        if t["reason"]:
            note = (note + ": " if note else "") + t["reason"]
        rows.append((key, t["notebook"] or "-", "✓" if t["passed"] else "✗",
                     f"{_pts(t['points'])}/{_pts(t['max'])}", note[:160]))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)), r[4]]).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths) + "  ----")
    bonus = report.get("bonus") or {}
    extra = f" (+{_pts(bonus['score'])}/{_pts(bonus['max'])} bonus)" if bonus.get("max") else ""
    lines.append(f"score: {_pts(report['score'])}/{_pts(report['max'])}{extra}")
    if details:
        for key, t in report["tasks"].items():
            failed = [c for c in t["criteria"] if not c["passed"]]
            if t["reason"] or not failed:
                continue
            if len(failed) > 1 and len({c["hint"] for c in failed}) == 1:
                lines.append(f"  {key} ✗ all {len(failed)} failing criteria — {failed[0]['hint']}")
                continue
            lines.extend(f"  {key} ✗ {c['name']} — {c['hint']}" for c in failed)
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    return "\n".join(lines)


def feedback_markdown(name: str, report: dict[str, Any]) -> str:
    """A student's feedback: the score, then every task's criteria with their hints."""
    if "error" in report:
        return f"# Feedback for {name}\n\nYour submission could not be graded: {report['error']}\n"
    bonus = report.get("bonus") or {}
    extra = f" (+{_pts(bonus['score'])}/{_pts(bonus['max'])} bonus)" if bonus.get("max") else ""
    out = [f"# Feedback for {name}", "",
           f"**Score: {_pts(report['score'])}/{_pts(report['max'])}**{extra}", ""]
    for t in report["tasks"].values():
        where = f" ({t['notebook']})" if t["notebook"] else ""
        tag = " — bonus" if t["bonus"] else ""
        out += [f"## {t['title']}: {_pts(t['points'])}/{_pts(t['max'])}{tag}{where}", ""]
        if t["reason"]:
            out += [f"Not graded: {t['reason']}", ""]
            continue
        for c in t["criteria"]:
            if c["passed"]:
                out.append(f"- ✓ {c['name']}")
            else:
                out.append(f"- ✗ **{c['name']}** — {c['hint']}")
        out.append("")
    for note in report.get("notes", []):
        out.append(f"> note: {note}")
    return "\n".join(out).rstrip() + "\n"


def _task_keys(reports: Iterable[dict[str, Any]]) -> list[str]:
    keys = [spec.key for spec in _tasks(None)]
    seen = {k for r in reports for k in r.get("tasks", {})}
    return [k for k in keys if k in seen] or keys


def write_csv(path: str, reports: dict[str, dict[str, Any]]) -> None:
    """One row per student, one column per task (points), then the totals and the notes."""
    keys = _task_keys(reports.values())
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["student", *keys, "score", "max", "bonus", "bonus_max", "seconds",
                         "notes"])
        for name, report in reports.items():
            if "error" in report:
                writer.writerow([name, *([""] * len(keys)), "", "", "", "", "", report["error"]])
                continue
            tasks = report["tasks"]
            notes = [f"{k}: {t['reason']}" for k, t in tasks.items() if t.get("reason")]
            writer.writerow([name, *(tasks[k]["points"] if k in tasks else "" for k in keys),
                             report["score"], report["max"], report["bonus"]["score"],
                             report["bonus"]["max"], report["seconds"],
                             "; ".join(notes + report.get("notes", []))])


def classroom_result(report: dict[str, Any]) -> dict[str, Any]:
    """The result a GitHub Classroom reporter reads (autograding-grading-reporter, version 1):
    one test per criterion, its points as score."""
    tests = [{"name": f"{key}: {c['name']}", "status": "pass" if c["passed"] else "fail",
              "score": c["points"], "message": c["hint"] or "", "line_no": 0,
              "test_code": f"check_{key}", "filename": t["notebook"], "execution_time": "0s"}
             for key, t in report["tasks"].items() for c in t["criteria"]]
    return {"version": 1, "status": "pass" if report["score"] == report["max"] else "fail",
            "max_score": report["max"], "tests": tests}


def _one_line(report: dict[str, Any]) -> str:
    if "error" in report:
        return "error: " + report["error"]
    return (f"{_pts(report['score'])}/{_pts(report['max'])} "
            f"(+{_pts(report['bonus']['score'])} bonus)")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "student"


# --- command line ---------------------------------------------------------------------------


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``grade`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "grade",
        help="score a submission (or a class) in a sandbox, per criterion",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a submission (folder or notebook), or a folder of submissions")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--csv", metavar="FILE", help="write a gradebook: one row per student")
    p.add_argument("--feedback", metavar="DIR", help="write one Markdown feedback file per student")
    p.add_argument("--classroom", metavar="FILE",
                   help="write the result for GitHub Classroom's autograding reporter")
    p.add_argument("--class", dest="class_mode", action="store_true",
                   help="PATH is a folder of submission folders (detected when it has no "
                        "notebooks of its own)")
    p.add_argument("-j", "--jobs", type=int, default=None,
                   help="parallel work (default: the number of CPUs)")
    p.add_argument("--task", type=int, action="append", metavar="N",
                   help="grade only task N (repeatable)")
    p.add_argument("--criterion-seconds", type=float, default=Limits.criterion_seconds,
                   help=f"real seconds per criterion (default {Limits.criterion_seconds:g})")
    p.add_argument("--task-seconds", type=float, default=Limits.task_seconds,
                   help=f"real seconds per task (default {Limits.task_seconds:g})")
    p.add_argument("--submission-seconds", type=float, default=Limits.submission_seconds,
                   help=f"real seconds per submission (default {Limits.submission_seconds:g})")
    p.add_argument("--sandbox", choices=("auto", "namespaces", "user", "none"), default="auto",
                   help="confinement of the student's code (default: the strongest available)")


def _limits(args: argparse.Namespace) -> Limits:
    for name in ("criterion_seconds", "task_seconds", "submission_seconds"):
        value = getattr(args, name, None)
        if value is not None and not value > 0:
            raise GradeError(f"grade: --{name.replace('_', '-')} must be > 0, got {value}", 2)
    return replace(Limits(), criterion_seconds=args.criterion_seconds,
                   task_seconds=args.task_seconds, submission_seconds=args.submission_seconds)


def _level(choice: str) -> str | None:
    if choice == "auto":
        return None
    best = isolation()
    order = ("none", "user", "namespaces")
    if order.index(choice) > order.index(best):
        raise GradeError(f"grade: --sandbox {choice} is not available here (best: {best})", 2)
    return choice


def _print(text: str) -> None:
    try:
        print(text)
    except UnicodeEncodeError:  # a terminal that cannot show ✓/✗
        print(text.replace("✓", "ok").replace("✗", "FAIL").replace("—", "-"))


def run(args: argparse.Namespace) -> int:
    """Grade ``args.path``; print the table (or JSON). 0 whatever the score, 2 for a bad path."""
    try:
        limits = _limits(args)
        level = _level(getattr(args, "sandbox", "auto"))
        path = Path(args.path)
        if not path.exists():
            raise GradeError(f"grade: no such file or directory: {path}", 2)
        if getattr(args, "jobs", None) is not None and args.jobs < 1:
            raise GradeError(f"grade: --jobs must be >= 1, got {args.jobs}", 2)
        jobs = args.jobs or os.cpu_count() or 1
        class_mode = getattr(args, "class_mode", False) or is_class_folder(path)
        if class_mode:
            if args.task:
                raise GradeError("grade: --task is for one submission, not a class", 2)

            def progress(name: str, report: dict[str, Any]) -> None:
                if not args.json:
                    score = ("error" if "error" in report
                             else f"{_pts(report['score'])}/{_pts(report['max'])}")
                    print(f"{name}: {score}", file=sys.stderr, flush=True)

            result = grade_class(path, limits=limits, jobs=jobs, level=level, progress=progress)
            reports = result["students"]
        else:
            if not path.is_file() and not any(
                p.suffix in DOCUMENT_SUFFIXES for p in path.rglob("*") if not p.is_symlink()
            ):
                raise GradeError(f"grade: no notebooks (.ipynb) or .py files under {path}", 2)
            report = grade(path, limits=limits, jobs=jobs, tasks=args.task, level=level)
            name = (path.stem if path.is_file() else path.resolve().name) or "submission"
            reports = {name: report}
            result = report
    except GradeError as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    if args.csv:
        write_csv(args.csv, reports)
    if args.feedback:
        folder = Path(args.feedback)
        folder.mkdir(parents=True, exist_ok=True)
        for name, report in reports.items():
            (folder / f"{_safe_name(name)}.md").write_text(feedback_markdown(name, report),
                                                          encoding="utf-8")
    if getattr(args, "classroom", None) and not class_mode:
        Path(args.classroom).write_text(json.dumps(classroom_result(result)), encoding="utf-8")
    if args.json:
        _print(json.dumps(result, indent=2, ensure_ascii=False))
    elif class_mode:
        lines = [f"{name}: " + _one_line(r) for name, r in reports.items()]
        lines.append(f"{result['count']} submissions in {result['seconds']:g} s "
                     f"({result['seconds_per_submission']:g} s each, {result['jobs']} jobs)")
        _print("\n".join(lines))
    else:
        _print(format_table(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_patterns.course.grading.grade")
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
