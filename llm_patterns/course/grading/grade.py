"""``python -m llm_patterns grade PATH [--json]``: run notebooks, score one point per task.

The notebooks under PATH run with nbval (``--nbval-lax --nbval-current-env``, a cell timeout)
on a temporary copy in which every check cell has been restored from the canonical notebook
``solutions/<same name>.ipynb`` (like nbgrader's checksum restore), so editing or deleting a
check cell cannot earn a point. A task (cell tags ``check`` + ``task:N``, cell id
``check-taskN``) scores 1 when all its check cells pass. A low score is not an error: the exit
status is 0 unless something really went wrong (2 for a bad PATH).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from .nbplugin import task_of_cell

__all__ = ["add_parser", "grade", "main", "restore_check_cells", "run"]

REPO_ROOT = Path(__file__).resolve().parents[3]  # course/grading/grade.py -> the repository
_IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", ".git", ".pytest_cache")


class GradeError(Exception):
    """A real problem (bad path, pytest crashed): reported, exit status non-zero."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``grade`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "grade",
        help="run notebooks with their canonical check cells and print a score per task",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a notebook (.ipynb) or a directory of notebooks")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument(
        "--solutions",
        default=None,
        help="directory of canonical notebooks (default: solutions/ in the repository)",
    )
    p.add_argument(
        "--cell-timeout", type=float, default=60.0, help="seconds a cell may run (default 60)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show pytest's output")


# --- restoring the canonical check cells -------------------------------------------------------


def _is_check(cell: Any) -> bool:
    return cell.get("cell_type") == "code" and task_of_cell(cell) is not None


def _ensure_ids(nb: Any) -> None:
    """nbformat 4.5+ cell ids (older notebooks have none)."""
    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        nb.nbformat_minor = 5
    used = {c.get("id") for c in nb.cells}
    for i, cell in enumerate(nb.cells):
        if not cell.get("id"):
            new = f"cell-{i}"
            while new in used:
                new += "x"
            cell["id"] = new
            used.add(new)


def _fresh(cell: Any) -> Any:
    out = copy.deepcopy(cell)
    out["outputs"] = []
    out["execution_count"] = None
    return out


def restore_check_cells(submission: Any, canonical: Any) -> Any:
    """A copy of ``submission`` whose check cells are exactly the canonical ones.

    Each canonical check cell replaces the submission's cell with the same id (or, failing
    that, the same task tag); a missing one is re-inserted after the cell it follows in the
    canonical notebook (or at the end). Check tags on any other cell are removed.
    """
    nb = copy.deepcopy(submission)
    _ensure_ids(nb)
    canon_cells = canonical.cells
    for index, ccell in enumerate(canon_cells):
        if not _is_check(ccell):
            continue
        task = task_of_cell(ccell)
        pos = next((i for i, c in enumerate(nb.cells) if c.get("id") == ccell.get("id")), None)
        if pos is None:
            pos = next((i for i, c in enumerate(nb.cells) if task_of_cell(c) == task), None)
        if pos is not None:
            nb.cells[pos] = _fresh(ccell)
            continue
        anchor = None
        for prev in reversed(canon_cells[:index]):
            anchor = next(
                (i for i, c in enumerate(nb.cells) if prev.get("id") and c.get("id") == prev["id"]),
                None,
            )
            if anchor is not None:
                break
        nb.cells.insert(len(nb.cells) if anchor is None else anchor + 1, _fresh(ccell))
    canonical_ids = {c.get("id") for c in canon_cells if _is_check(c)}
    for cell in nb.cells:
        if cell.get("id") not in canonical_ids and task_of_cell(cell) is not None:
            tags = cell["metadata"].get("tags", [])
            cell["metadata"]["tags"] = [t for t in tags if t != "check"]
    for cell in nb.cells:  # graded runs compare nothing: clear stored outputs
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def _tasks_of(nb: Any) -> list[str]:
    return [t for t in (task_of_cell(c) for c in nb.cells if _is_check(c)) if t]


# --- running ---------------------------------------------------------------------------------


def _notebooks(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".ipynb":
            raise GradeError(f"grade: {path} is not a notebook (.ipynb)", 2)
        return [path]
    found = sorted(
        p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file()
    )
    if not found:
        raise GradeError(f"grade: no notebooks (.ipynb) under {path}", 2)
    return found


def grade(
    path: str | os.PathLike[str],
    *,
    solutions: str | os.PathLike[str] | None = None,
    cell_timeout: float = 60.0,
    verbose: bool = False,
) -> dict[str, Any]:
    """Grade the notebooks under ``path``; returns ``{"tasks": {...}, "score": n, "max": m}``."""
    src = Path(path)
    if not src.exists():
        raise GradeError(f"grade: no such file or directory: {src}", 2)
    sol_dir = Path(solutions) if solutions is not None else REPO_ROOT / "solutions"
    if solutions is not None and not sol_dir.is_dir():
        raise GradeError(f"grade: --solutions {sol_dir} is not a directory", 2)
    if not cell_timeout > 0:
        raise GradeError(f"grade: --cell-timeout must be > 0, got {cell_timeout}", 2)
    notebooks = _notebooks(src)
    expected: dict[str, str] = {}  # task -> notebook name, from the canonical check cells
    with tempfile.TemporaryDirectory(prefix="llm-patterns-grade-") as tmp_name:
        tmp = Path(tmp_name)
        work = tmp / "work"
        if src.is_dir():
            shutil.copytree(src, work, ignore=_IGNORE)
            targets = [work / nb.relative_to(src) for nb in notebooks]
        else:
            work.mkdir()
            targets = [work / src.name]
        for original, target in zip(notebooks, targets):
            try:
                nb = nbformat.read(original, as_version=4)
            except Exception as exc:  # noqa: BLE001 - a broken notebook scores 0, we go on
                print(f"grade: cannot read {original}: {exc}", file=sys.stderr)
                target.unlink(missing_ok=True)
                continue
            canonical_path = sol_dir / original.name
            if canonical_path.is_file() and canonical_path.resolve() != original.resolve():
                canonical = nbformat.read(canonical_path, as_version=4)
                nb = restore_check_cells(nb, canonical)
                tasks = _tasks_of(canonical)
            else:
                if not canonical_path.is_file():
                    print(
                        f"grade: no canonical notebook {canonical_path}; the check cells of "
                        f"{original.name} are used as submitted",
                        file=sys.stderr,
                    )
                nb = restore_check_cells(nb, nb)
                tasks = _tasks_of(nb)
            for task in tasks:
                expected.setdefault(task, original.name)
            nbformat.write(nb, target)
        results = _run_pytest(tmp, [t for t in targets if t.exists()], cell_timeout, verbose)
    return _score(expected, results)


def _run_pytest(
    tmp: Path, targets: list[Path], cell_timeout: float, verbose: bool
) -> dict[str, Any]:
    if not targets:
        return {}
    ini = tmp / "pytest.ini"
    ini.write_text("[pytest]\n", encoding="utf-8")
    out_json = tmp / "grade.json"
    cmd = [
        sys.executable, "-m", "pytest", "-p", "nbval.plugin",
        "--nbval-lax", "--nbval-current-env", f"--nbval-cell-timeout={cell_timeout:g}",
        "-p", "llm_patterns.course.grading.nbplugin", f"--grade-json={out_json}",
        "-p", "no:cacheprovider", "-c", str(ini), "--rootdir", str(tmp),
        "--color=no", "-q", *map(str, targets),
    ]  # fmt: skip
    env = dict(os.environ)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only nbval and ours: faster, and isolated
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    if verbose:
        sys.stderr.write(proc.stdout + proc.stderr)
    if proc.returncode not in (0, 1, 5) or not out_json.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise GradeError(f"grade: pytest failed (exit status {proc.returncode}):\n{tail}", 1)
    return json.loads(out_json.read_text(encoding="utf-8")).get("tasks", {})


def _task_key(task: str) -> tuple[int, str]:
    digits = task.removeprefix("task")
    return (int(digits), task) if digits.isdigit() else (10**9, task)


def _score(expected: dict[str, str], results: dict[str, Any]) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for task in sorted(set(expected) | set(results), key=_task_key):
        res = results.get(task, {})
        notebook = expected.get(task) or ", ".join(res.get("notebooks", [])) or "?"
        passed = bool(res.get("passed", False))
        tasks[task] = {"passed": passed, "notebook": notebook, "points": int(passed), "max": 1}
    score = sum(t["points"] for t in tasks.values())
    return {"tasks": tasks, "score": score, "max": len(tasks)}


def format_table(report: dict[str, Any]) -> str:
    """The score table: task, notebook, ✓/✗, points."""
    rows = [("task", "notebook", "status", "points")]
    for task, t in report["tasks"].items():
        rows.append((task, t["notebook"], "✓" if t["passed"] else "✗", f"{t['points']}/{t['max']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"score: {report['score']}/{report['max']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Grade ``args.path``; print the table (or JSON). 0 whatever the score, 2 for a bad path."""
    try:
        report = grade(
            args.path,
            solutions=getattr(args, "solutions", None),
            cell_timeout=getattr(args, "cell_timeout", 60.0),
            verbose=getattr(args, "verbose", False),
        )
    except GradeError as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    text = json.dumps(report, indent=2) if getattr(args, "json", False) else format_table(report)
    try:
        print(text)
    except UnicodeEncodeError:  # a terminal that cannot show ✓/✗
        print(text.replace("✓", "ok").replace("✗", "FAIL"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_patterns.course.grading.grade")
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
