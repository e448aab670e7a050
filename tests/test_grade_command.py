"""``grade``: tasks found by name, sliced, scored per criterion in a sandbox; every task counted;
tables, JSON, gradebook, feedback and GitHub Classroom results; submissions copied safely."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import submissions as SUB

from llm_patterns.course.grading import grade as G
from llm_patterns.course.grading.extract import NotFound, find_program, load_documents
from llm_patterns.course.grading.sandbox import PREFIX, Limits, clean_stale, copy_tree

FAST = Limits(criterion_seconds=3.0, task_seconds=30.0, submission_seconds=120.0)
GOOD_TRACKER = SUB.solution_cell("03_cost_tracking", 3)
IMPORTS_3 = SUB.imports("03_cost_tracking")


def tracker_submission(folder: Path, name: str = "03_cost_tracking.ipynb",
                       body: str = GOOD_TRACKER) -> Path:
    return SUB.write(folder, name, IMPORTS_3, "print('a demo that is never graded')", body,
                     ("from llm_patterns.course.grading import check_task3\n"
                      "check_task3(CostTracker)", ["check", "task:3"]))


# --- the command line -------------------------------------------------------------------


def test_missing_path_is_a_clear_error(tmp_path, capsys):
    assert G.main([str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_a_folder_without_notebooks_is_an_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert G.main([str(tmp_path)]) == 2
    assert "no notebooks" in capsys.readouterr().err


def test_bad_limits_and_jobs_are_refused(tmp_path, capsys):
    tracker_submission(tmp_path)
    assert G.main([str(tmp_path), "--criterion-seconds", "0"]) == 2
    assert "--criterion-seconds must be > 0, got 0.0" in capsys.readouterr().err
    assert G.main([str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err
    assert G.main([str(tmp_path), "--task", "6"]) == 2
    assert "no such task" in capsys.readouterr().err


def test_add_parser_wires_a_grade_subcommand():
    import argparse

    parser = argparse.ArgumentParser()
    G.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["grade", "some/dir", "--json", "--csv", "g.csv", "-j", "2"])
    assert args.func is G.run and args.json and args.path == "some/dir" and args.jobs == 2


# --- tasks found by name, every task counted ------------------------------------------------


def test_a_renamed_notebook_is_found_by_the_names_it_defines_and_every_task_counts(tmp_path):
    tracker_submission(tmp_path, name="my work (final).ipynb")
    report = G.grade(tmp_path, limits=FAST)
    t3 = report["tasks"]["task3"]
    assert t3["notebook"] == "my work (final).ipynb"
    assert t3["points"] == t3["max"] == SUB.T3_MAX and t3["passed"] and t3["reason"] is None
    assert t3["criteria"][0]["name"] == "prices are per 1M tokens"
    assert all(c["passed"] and c["points"] == 1 and c["hint"] is None for c in t3["criteria"])
    # the denominator is the whole course; the missing tasks score 0 and say why
    assert set(report["tasks"]) == {"task1", "task2", "task3", "task4", "task5", "task7"}
    assert report["max"] == sum(t["max"] for t in report["tasks"].values() if not t["bonus"])
    assert report["score"] == SUB.T3_MAX and report["max"] > SUB.T3_MAX
    t1 = report["tasks"]["task1"]
    assert t1["points"] == 0 and t1["max"] == SUB.T1_MAX and not t1["passed"]
    assert t1["reason"].startswith("no notebook defines TokenBucket and RateLimiter")
    assert "01_rate_limiting.ipynb is missing" in t1["reason"]
    assert all(c["hint"] == t1["reason"] for c in t1["criteria"])
    assert report["tasks"]["task7"]["bonus"] and report["bonus"] == {"score": 0, "max": SUB.T7_MAX}


def test_a_broken_notebook_scores_zero_with_the_reason(tmp_path):
    (tmp_path / "03_cost_tracking.ipynb").write_text("{ this is not json", encoding="utf-8")
    report = G.grade(tmp_path, limits=FAST, tasks=[3])
    t3 = report["tasks"]["task3"]
    assert t3["points"] == 0 and t3["max"] == SUB.T3_MAX
    assert "03_cost_tracking.ipynb is not a valid notebook (JSON error" in t3["reason"]


def test_a_stub_scores_zero_per_criterion_with_hints(tmp_path):
    tracker_submission(tmp_path, body=SUB.STUB_TRACKER)
    report = G.grade(tmp_path, limits=FAST, tasks=[3])
    t3 = report["tasks"]["task3"]
    assert t3["points"] == 0 and t3["reason"] is None
    assert {c["hint"] for c in t3["criteria"]} == {
        "not implemented yet — replace the `raise NotImplementedError` with your code"}


def test_partial_credit_is_per_criterion(tmp_path):
    unlocked = GOOD_TRACKER.replace("with self.lock:", "if True:")
    tracker_submission(tmp_path, body=unlocked)
    t3 = G.grade(tmp_path, limits=FAST, tasks=[3])["tasks"]["task3"]
    assert (t3["points"], t3["max"]) == (SUB.T3_MAX - 1, SUB.T3_MAX)
    (failed,) = [c for c in t3["criteria"] if not c["passed"]]
    assert failed["name"] == "thread-safe: concurrent records add up exactly"
    assert "one update was lost" in failed["hint"] and "how: thread" in failed["hint"]


def test_the_library_s_own_class_is_not_the_student_s_work(tmp_path):
    SUB.write(tmp_path, "03_cost_tracking.ipynb", "import llm_patterns as lp",
              "class CostTracker(lp.CostTracker):\n    pass")
    SUB.write(tmp_path, "02_backoff.ipynb",
              "from llm_patterns import is_retryable\n"
              "def calculate_backoff(attempt, base_delay=1.0, max_delay=60.0, rng=None):\n"
              "    return 1.0")
    report = G.grade(tmp_path, limits=FAST, tasks=[2, 3])
    assert "built on llm_patterns's class (lp.CostTracker)" in report["tasks"]["task3"]["reason"]
    assert "is_retryable is imported from llm_patterns" in report["tasks"]["task2"]["reason"]
    assert report["score"] == 0


# --- what is graded: the task's statements only --------------------------------------------


def test_slicing_keeps_the_task_and_what_it_needs_and_stops_at_the_check_cell(tmp_path):
    SUB.write(
        tmp_path, "x.ipynb",
        IMPORTS_3,
        "raise RuntimeError('a demo cell that fails does not matter')",
        "%%time\n" + GOOD_TRACKER + "\n!echo shell lines are left out",
        ("check_task3(CostTracker)", ["check", "task:3"]),
        "CostTracker = lp.CostTracker  # after the check: not what the task is graded on",
    )
    docs, _notes = load_documents(tmp_path)
    program = find_program(docs, 3, ("CostTracker",), "03_cost_tracking.ipynb")
    assert not isinstance(program, NotFound), program
    code = "\n".join(chunk["source"] for chunk in program.chunks)
    assert "class CostTracker" in code and "log = logging.getLogger" in code
    assert "RuntimeError" not in code and "lp.CostTracker" not in code and "echo" not in code
    assert [c["filename"] for c in program.chunks] == ["x.ipynb (cell 1)", "x.ipynb (cell 3)"]
    report = G.grade(tmp_path, limits=FAST, tasks=[3])
    assert report["tasks"]["task3"]["points"] == SUB.T3_MAX


def test_a_syntax_error_in_the_task_cell_is_the_reason(tmp_path):
    tracker_submission(tmp_path, body=GOOD_TRACKER.replace("def record(", "def record(:"))
    t3 = G.grade(tmp_path, limits=FAST, tasks=[3])["tasks"]["task3"]
    assert t3["points"] == 0
    assert "SyntaxError" in t3["reason"] and "cell 3" in t3["reason"]


def test_a_stub_notebook_does_not_hide_the_real_work_elsewhere(tmp_path):
    tracker_submission(tmp_path, body=SUB.STUB_TRACKER)  # the course's notebook, untouched
    tracker_submission(tmp_path, name="scratch.ipynb")  # the student worked here
    t3 = G.grade(tmp_path, limits=FAST, tasks=[3])["tasks"]["task3"]
    assert t3["notebook"] == "scratch.ipynb" and t3["points"] == SUB.T3_MAX


# --- copying the submission -----------------------------------------------------------------


def test_symbolic_links_are_never_followed(tmp_path):
    sub = tmp_path / "sub"
    tracker_submission(sub)
    big = tmp_path / "big"
    big.mkdir()
    (big / "data.bin").write_bytes(b"x" * (2 << 20))
    (sub / "loop").symlink_to(".")
    (sub / "big").symlink_to(big)
    (sub / "secret.ipynb").symlink_to("/etc/passwd")
    (sub / "dangling").symlink_to("/nowhere/at/all")
    copied = copy_tree(sub, tmp_path / "copy", max_bytes=1 << 20)
    assert copied.links == 4 and copied.files == 1 and not copied.truncated
    assert os.readlink(tmp_path / "copy" / "loop") == "."
    assert (tmp_path / "copy" / "big").is_symlink()
    report = G.grade(sub, limits=FAST, tasks=[3])
    assert report["tasks"]["task3"]["points"] == SUB.T3_MAX
    assert "secret.ipynb is a symbolic link: not graded (submit the file itself)" in report["notes"]


def test_the_copy_is_bounded(tmp_path):
    tracker_submission(tmp_path)
    (tmp_path / "zz_huge.bin").write_bytes(b"\0" * (3 << 20))
    small = Limits(copy_bytes=1 << 20, criterion_seconds=3, task_seconds=30)
    report = G.grade(tmp_path, limits=small, tasks=[3])
    assert report["tasks"]["task3"]["points"] == SUB.T3_MAX
    assert any("over 1 MB" in note for note in report["notes"])


def test_a_submission_given_as_a_link_is_refused(tmp_path, capsys):
    tracker_submission(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(G.GradeError, match="symbolic link"):
        G.grade(tmp_path / "link", limits=FAST)


def test_temporary_folders_are_removed_and_stale_ones_cleaned(tmp_path):
    tracker_submission(tmp_path / "s")
    base = Path(tempfile.gettempdir())
    before = {p.name for p in base.glob(PREFIX + "*") if p.is_dir()}
    G.grade(tmp_path / "s", limits=FAST, tasks=[3])
    after = {p.name for p in base.glob(PREFIX + "*") if p.is_dir()}
    assert after <= before
    # a folder left by a killed grader (its owner process is gone) goes at the next run
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = base / f"{PREFIX}stale-test"
    (stale / "sub").mkdir(parents=True)
    (stale / "owner").write_text(f"{dead.pid} 1\n")
    assert str(stale) in clean_stale()
    assert not stale.exists()


# --- outputs ------------------------------------------------------------------------------


def test_table_json_and_classroom_result(tmp_path, capsys):
    tracker_submission(tmp_path)
    result_file = tmp_path / "classroom.json"
    assert G.main([str(tmp_path), "--task", "3", "--classroom", str(result_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["task", "notebook", "status", "points", "note"]
    n = SUB.T3_MAX
    assert lines[2].split() == ["task3", "03_cost_tracking.ipynb", "✓", f"{n}/{n}"]
    assert lines[3] == f"score: {n}/{n}"
    classroom = json.loads(result_file.read_text())
    assert classroom["version"] == 1 and classroom["max_score"] == n
    assert len(classroom["tests"]) == n and all(t["status"] == "pass" for t in classroom["tests"])
    assert G.main([str(tmp_path), "--task", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"tasks", "score", "max", "bonus", "sandbox", "seconds"} <= set(report)


def test_a_class_gradebook_and_feedback_files(tmp_path):
    klass = tmp_path / "class"
    tracker_submission(klass / "alice")
    tracker_submission(klass / "bob", body=SUB.STUB_TRACKER)
    (klass / "carol").mkdir()
    (klass / "carol" / "03_cost_tracking.ipynb").write_text("not a notebook")
    (klass / "mallory").symlink_to(klass / "alice")  # a link to someone else's work
    gradebook, feedback = tmp_path / "gradebook.csv", tmp_path / "feedback"
    code = G.main([str(klass), "--csv", str(gradebook), "--feedback", str(feedback),
                   "--jobs", "2", "--task-seconds", "30", "--criterion-seconds", "3"])
    assert code == 0
    rows = list(csv.DictReader(gradebook.open(encoding="utf-8")))
    assert [r["student"] for r in rows] == ["alice", "bob", "carol"]
    assert [r["task3"] for r in rows] == [str(SUB.T3_MAX), "0", "0"]
    assert all(r["max"] == rows[0]["max"] and int(r["max"]) > 6 for r in rows)
    assert "not a valid notebook" in rows[2]["notes"]
    alice = (feedback / "alice.md").read_text(encoding="utf-8")
    assert "# Feedback for alice" in alice and "- ✓ prices are per 1M tokens" in alice
    bob = (feedback / "bob.md").read_text(encoding="utf-8")
    assert "- ✗ **prices are per 1M tokens** — not implemented yet" in bob
    assert not (feedback / "mallory.md").exists()


def test_the_classroom_workflow_runs_grade_and_feeds_the_reporter(tmp_path):
    """The workflow students' repositories run: its grade command works, and what it hands the
    GitHub Classroom reporter decodes the way the reporter decodes it (base64 JSON, points per
    criterion, runner name matching the environment variable)."""
    import base64
    import shlex

    yaml = pytest.importorskip("yaml")
    workflow = yaml.safe_load((SUB.ROOT / ".github" / "workflows" / "classroom.yml").read_text())
    steps = workflow["jobs"]["run-autograding-tests"]["steps"]
    grade_step = next(s for s in steps if s.get("id") == "grade")
    reporter = next(s for s in steps if "autograding-grading-reporter" in s.get("uses", ""))
    runner = reporter["with"]["runners"]
    assert f"{runner.upper()}_RESULTS" in reporter["env"]
    assert f"steps.{grade_step['id']}.outputs.result" in reporter["env"][f"{runner.upper()}_RESULTS"]
    command = grade_step["run"].split("sudo ", 1)[1].split(" > grade.json")[0]
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[1:4] == ["-m", "llm_patterns", "grade"]
    tracker_submission(tmp_path / "notebooks")
    argv = [sys.executable, *argv[1:], "--task", "3"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    encoded = base64.b64encode((tmp_path / "classroom.json").read_bytes()).decode()
    result = json.loads(base64.b64decode(encoded))
    assert result["version"] == 1 and result["max_score"] == SUB.T3_MAX
    assert sum(t["score"] for t in result["tests"]) == SUB.T3_MAX
    assert all({"name", "status", "score", "message"} <= set(t) for t in result["tests"])
    assert json.loads(proc.stdout)["score"] == SUB.T3_MAX
    assert (tmp_path / "feedback" / "notebooks.md").exists()


def test_the_submission_time_limit_leaves_a_reason_not_a_hang(tmp_path):
    tracker_submission(tmp_path)
    tight = Limits(criterion_seconds=3, task_seconds=30, submission_seconds=0.001)
    report = G.grade(tmp_path, limits=tight, tasks=[1, 3])
    for task in report["tasks"].values():
        assert task["points"] == 0
        assert task["reason"] == ("not graded: the time limit for the submission (0.001 s) "
                                  "was reached")
    # a task's own limit: the criteria after it are not run, and say so
    # (real time: the worker starts in ~1 s, then each looping criterion takes its 1 s)
    short_task = Limits(criterion_seconds=1, task_seconds=4, submission_seconds=60)
    slow = GOOD_TRACKER.replace("        if model not in self.pricing:",
                                "        while model == 'gpt-4o':\n            pass\n"
                                "        if model not in self.pricing:")
    tracker_submission(tmp_path / "slow", body=slow)
    t3 = G.grade(tmp_path / "slow", limits=short_task, tasks=[3])["tasks"]["task3"]
    hints = [c["hint"] for c in t3["criteria"]]
    assert "not run: the time limit for this task was reached" in hints
    assert any(h and h.startswith("did not finish within") for h in hints)
