"""``grade``: canonical check cells are restored from solutions/, then each task is scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llm_patterns.course.grading import grade as G


def _check(task: int, source: str):
    cell = new_code_cell(source, id=f"check-task{task}")
    cell.metadata["tags"] = ["check", f"task:{task}"]
    return cell


def _nb(*cells):
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def solution_demo():
    return _nb(
        new_markdown_cell("# Demo", id="intro"),
        new_code_cell("x = 1", id="task-1"),
        _check(1, "assert x == 1, 'x must be 1'"),
        new_code_cell("y = 2", id="task-2"),
        _check(2, "assert y == 2, 'y must be 2'"),
    )


def solution_other():
    return _nb(new_code_cell("z = 3", id="task-3"), _check(3, "assert z == 3"))


@pytest.fixture
def layout(tmp_path: Path):
    sol, sub = tmp_path / "solutions", tmp_path / "submission"
    sol.mkdir()
    sub.mkdir()
    nbformat.write(solution_demo(), sol / "01_demo.ipynb")
    nbformat.write(solution_other(), sol / "02_other.ipynb")
    return sol, sub


def test_restore_replaces_tampered_and_reinserts_missing_check_cells():
    canonical = solution_demo()
    submission = _nb(
        new_markdown_cell("# Demo", id="intro"),
        new_code_cell("x = 5", id="task-1"),
        _check(1, "pass  # tampered"),
        new_code_cell("y = 2", id="task-2"),
        # check-task2 deleted
    )
    fake = new_code_cell("pass", id="my-own")
    fake.metadata["tags"] = ["check", "task:1"]  # a home-made second check for task 1
    submission.cells.append(fake)
    restored = G.restore_check_cells(submission, canonical)
    ids = [c.get("id") for c in restored.cells]
    assert ids == ["intro", "task-1", "check-task1", "task-2", "check-task2", "my-own"]
    by_id = {c["id"]: c for c in restored.cells}
    assert by_id["check-task1"].source == "assert x == 1, 'x must be 1'"
    assert by_id["task-1"].source == "x = 5"  # the student's work is kept
    assert by_id["check-task2"].source == "assert y == 2, 'y must be 2'"
    assert by_id["check-task2"].metadata["tags"] == ["check", "task:2"]
    assert "check" not in by_id["my-own"].metadata["tags"]  # a home-made check earns nothing
    assert submission.cells[2].source == "pass  # tampered"  # the input is not modified


def test_restore_replaces_a_renamed_check_cell_by_its_task_tag():
    submission = solution_other()
    submission.cells[1]["id"] = "renamed"
    submission.cells[1].source = "pass"
    restored = G.restore_check_cells(submission, solution_other())
    assert [c["id"] for c in restored.cells] == ["task-3", "check-task3"]
    assert restored.cells[1].source == "assert z == 3"


def test_restore_gives_ids_to_old_notebooks_and_appends_when_no_anchor():
    old = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    old.nbformat_minor = 4
    del old.cells[0]["id"]
    restored = G.restore_check_cells(old, solution_other())
    assert restored.nbformat_minor >= 5
    assert [c.get("id") for c in restored.cells] == ["cell-0", "check-task3"]
    nbformat.validate(restored)


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    assert G.main([str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_empty_directory_is_an_error(tmp_path, capsys):
    assert G.main([str(tmp_path)]) == 2
    assert "no notebooks" in capsys.readouterr().err


def test_add_parser_wires_a_grade_subcommand():
    import argparse

    parser = argparse.ArgumentParser()
    G.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["grade", "some/dir", "--json", "--solutions", "sol"])
    assert args.func is G.run and args.json and args.path == "some/dir"


def test_grade_restores_canonical_checks_and_scores(layout, capsys):
    sol, sub = layout
    # 01_demo: task 1 wrong but its check tampered to `pass`; task 2 right, check deleted
    tampered = solution_demo()
    tampered.cells[1].source = "x = 2"
    tampered.cells[2].source = "pass"
    del tampered.cells[4]
    nbformat.write(tampered, sub / "01_demo.ipynb")

    assert G.main([str(sub), "--solutions", str(sol), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "tasks": {
            "task1": {"passed": False, "notebook": "01_demo.ipynb", "points": 0, "max": 1},
            "task2": {"passed": True, "notebook": "01_demo.ipynb", "points": 1, "max": 1},
        },
        "score": 1,
        "max": 2,
    }
    # the submission on disk is untouched: grading ran on a copy
    assert nbformat.read(sub / "01_demo.ipynb", as_version=4).cells[2].source == "pass"


@pytest.mark.slow
def test_grade_table_for_a_single_file_through_the_module_entry_point(layout):
    sol, sub = layout
    nbformat.write(solution_demo(), sub / "01_demo.ipynb")
    proc = subprocess.run(
        [sys.executable, "-m", "llm_patterns.course.grading.grade", str(sub / "01_demo.ipynb"),
         "--solutions", str(sol)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["task", "notebook", "status", "points"]
    assert lines[2].split() == ["task1", "01_demo.ipynb", "✓", "1/1"]
    assert lines[3].split() == ["task2", "01_demo.ipynb", "✓", "1/1"]
    assert lines[-1] == "score: 2/2"
