"""Building student submissions for the ``grade`` tests: notebooks from cell sources.

The sources are cut from the real course files (``solutions/*.py``, ``tests/student_impls.py``)
so a test grades what students really write, renamed, broken or tampered with as a test needs.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
IMPLS = ROOT / "tests" / "student_impls.py"


def notebook(*cells: str | tuple[str, list[str]]) -> nbformat.NotebookNode:
    """A notebook of code cells; a cell is its source, or (source, tags)."""
    nb = new_notebook(cells=[new_markdown_cell("# A submission", id="intro")])
    for i, cell in enumerate(cells):
        source, tags = (cell, []) if isinstance(cell, str) else cell
        code = new_code_cell(source, id=f"cell-{i}")
        if tags:
            code.metadata["tags"] = list(tags)
        nb.cells.append(code)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def write(folder: Path, name: str, *cells: str | tuple[str, list[str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(notebook(*cells), path)
    return path


def solution_cell(stem: str, task: int) -> str:
    """The task cell of a solution notebook (``solutions/<stem>.py``), markers removed."""
    text = (SOLUTIONS / f"{stem}.py").read_text(encoding="utf-8")
    cells = re.split(r"^# %%.*$", text, flags=re.M)
    headers = re.findall(r"^# %%.*$", text, flags=re.M)
    for header, body in zip(headers, cells[1:], strict=True):
        if f'"task:{task}"' in header and '"check"' not in header:
            lines = [line for line in body.strip("\n").split("\n")
                     if "### BEGIN SOLUTION" not in line and "### END SOLUTION" not in line]
            return "\n".join(lines)
    raise LookupError(f"no task {task} cell in {stem}")


def imports(stem: str) -> str:
    """The first code cell of a solution notebook (its imports)."""
    text = (SOLUTIONS / f"{stem}.py").read_text(encoding="utf-8")
    cells = re.split(r"^# %%.*$", text, flags=re.M)
    headers = re.findall(r"^# %%.*$", text, flags=re.M)
    for header, body in zip(headers, cells[1:], strict=True):
        if "[markdown]" not in header:
            return body.strip("\n")
    raise LookupError(stem)


def impls_source() -> str:
    return IMPLS.read_text(encoding="utf-8")


STUB_TRACKER = '''
import threading

class CostTracker:
    def __init__(self, pricing, budget, alert_thresholds=(0.5, 0.8, 1.0)):
        raise NotImplementedError("implement CostTracker")

    def record(self, model, usage, dag_id=None, task_id=None):
        raise NotImplementedError("record")
'''


def criteria_count(task: int) -> int:
    """How many criteria (points) task ``task``'s check has: its stub fails every one."""
    import contextlib
    import io

    import student_impls as S

    from llm_patterns.course.grading import check_task1, check_task3, check_task7
    from llm_patterns.course.grading._framework import CheckFailed

    check, stub = {1: (check_task1, (S.StubBucket, S.StubLimiter)),
                   3: (check_task3, (S.StubTracker,)),
                   7: (check_task7, (S.stub_chunk,))}[task]
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            check(*stub)
        except CheckFailed as exc:
            return len(exc.failures)
    raise AssertionError(f"the stub passed task {task}'s check")


T1_MAX = criteria_count(1)
T3_MAX = criteria_count(3)
T7_MAX = criteria_count(7)
