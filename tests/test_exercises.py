"""The script path of exercise 9.4: the starter fails every task, the solution passes them all,
and the runner (llm_patterns.course.grading.script.run_checks) reports a planted bug in the right task.

The scripts run in a subprocess with the same interpreter, as a student runs them.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import llm_patterns.chunking
from llm_patterns.course.grading.script import TASKS, run_checks

REQUIRED = [n for n, spec in TASKS.items() if not spec.bonus]

ROOT = Path(__file__).resolve().parents[1]
STARTER = ROOT / "exercises" / "exercise_9_4_llm_retry_patterns_starter.py"
SOLUTION = ROOT / "solutions" / "solution_9_4_llm_retry_patterns.py"
EXERCISE = ROOT / "exercises" / "exercise_9_4.md"
TITLES = {n: spec.title for n, spec in TASKS.items()}


def run(script: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        check=False,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def titles_in(output: str) -> list[int]:
    return [
        n
        for n, title in TITLES.items()
        if re.search(rf"^{re.escape(title)}$", output, re.MULTILINE)
    ]


def summary(output: str) -> dict[int, str]:
    """{task number: "PASS" | "FAIL"} from the summary table."""
    found = {}
    for n, title in TITLES.items():
        m = re.search(rf"^  (PASS|FAIL)  {re.escape(title)}\b", output, re.MULTILINE)
        if m:
            found[n] = m.group(1)
    return found


def test_starter_runs_and_every_task_reads_not_implemented():
    code, out = run(STARTER)
    assert code == 1, out
    assert titles_in(out) == sorted(TASKS)
    fails = [line for line in out.splitlines() if line.startswith("✗ ")]
    assert fails, out
    assert all("not implemented yet" in line for line in fails), out
    assert not [line for line in out.splitlines() if line.startswith("✓ ")]
    assert summary(out) == dict.fromkeys(TASKS, "FAIL")
    assert out.rstrip().splitlines()[-1] == f"0/{len(REQUIRED)} required tasks pass; bonus 0/1"


def test_solution_passes_every_task():
    code, out = run(SOLUTION)
    assert code == 0, out
    assert titles_in(out) == sorted(TASKS)
    assert not [line for line in out.splitlines() if line.startswith("✗ ")], out
    assert summary(out) == dict.fromkeys(TASKS, "PASS")
    n = len(REQUIRED)
    assert out.rstrip().splitlines()[-1] == f"{n}/{n} required tasks pass; bonus 1/1"


def test_task_option_runs_only_that_task(capsys):
    code, out = run(SOLUTION, "--task", "2")
    assert code == 0, out
    assert titles_in(out) == [2]
    assert summary(out) == {2: "PASS"}
    assert out.rstrip().splitlines()[-1] == "1/1 required tasks pass"

    namespace = runpy.run_path(str(STARTER), run_name="starter")
    assert run_checks(namespace, argv=["--task", "2", "--task", "5"]) == 1
    out = capsys.readouterr().out
    assert titles_in(out) == [2, 5]
    assert out.rstrip().splitlines()[-1] == "0/2 required tasks pass"


def test_unknown_task_is_a_usage_error(capsys):
    namespace = runpy.run_path(str(STARTER), run_name="starter")
    with pytest.raises(SystemExit) as exit_info:
        run_checks(namespace, argv=["--task", "6"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--task 6" in err and "1, 2, 3, 4, 5, 7" in err


# Each classic bug, planted in a copy of the solution the way a student would write it, must
# fail exactly its own task.
BUGS = {
    "jitter added after the cap": (
        2,
        (
            "    delay = rng.uniform(0.0, ceiling)  # jitter within the capped value ...\n"
            "    return min(delay, max_delay)  # ... and the cap has the last word: never above"
            " max_delay\n"
        ),
        "    return min(max_delay, exponential) + rng.uniform(0.0, 1.0)\n",
    ),
    "half-open lets every caller through": (
        5,
        "            if self.trial_in_flight:\n                return False\n",
        "",
    ),
    "unknown model priced as a cheap one": (
        3,
        "            price = self.pricing[model]\n",
        (
            "            price = self.pricing.get(model) or min(\n"
            "                self.pricing.values(), key=lambda p: p['input']\n"
            "            )\n"
        ),
    ),
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_a_planted_bug_fails_exactly_its_task(bug, tmp_path, capsys):
    task, old, new = BUGS[bug]
    source = SOLUTION.read_text(encoding="utf-8")
    assert source.count(old) == 1, f"the solution no longer contains the line(s) to break: {old!r}"
    buggy = tmp_path / "student_9_4.py"  # a file outside the package: traced as student code
    buggy.write_text(source.replace(old, new), encoding="utf-8")
    namespace = runpy.run_path(str(buggy), run_name="student_9_4")
    bonus = TASKS[task].bonus  # a failed bonus task does not fail the run
    assert run_checks(namespace, argv=[]) == (0 if bonus else 1)
    out = capsys.readouterr().out
    assert summary(out) == {n: ("FAIL" if n == task else "PASS") for n in TASKS}, out
    n = len(REQUIRED)
    assert out.rstrip().splitlines()[-1] == (
        f"{n}/{n} required tasks pass; bonus 0/1" if bonus
        else f"{n - 1}/{n} required tasks pass; bonus 1/1")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="task isolation needs os.fork")
def test_a_deadlock_in_one_task_does_not_fail_another(tmp_path, capsys):
    # A RateLimiter that takes its own Lock twice deadlocks; the check gives up on it, but its
    # thread stays blocked. Run in the same process, that left-over thread made task 3's
    # (correct) thread-safety criterion spin until it timed out; each task runs in a child.
    source = SOLUTION.read_text(encoding="utf-8")
    old = "                if wait == 0.0:\n"
    assert source.count(old) == 1
    new = (
        old
        + "                    with self.lock:  # already held: deadlock\n"
        + ("                        pass\n")
    )
    buggy = tmp_path / "student_deadlock.py"
    buggy.write_text(source.replace(old, new), encoding="utf-8")
    namespace = runpy.run_path(str(buggy), run_name="student_deadlock")
    assert run_checks(namespace, tasks=[1, 3], argv=[], budget=1.0) == 1
    out = capsys.readouterr().out
    assert summary(out) == {1: "FAIL", 3: "PASS"}, out


def test_run_checks_rejects_bad_budget():
    with pytest.raises(ValueError, match="budget"):
        run_checks({}, tasks=[7], argv=[], budget=0)


def test_run_checks_reports_missing_names_and_goes_on(capsys):
    namespace = {"__name__": "not_main", "chunk_text": llm_patterns.chunking.chunk_text}
    # in this process (isolate=False); argv is ignored: the namespace is not a script
    assert run_checks(namespace, tasks=[4, 7], isolate=False) == 1
    out = capsys.readouterr().out
    assert "✗ call_with_fallback is not defined" in out
    assert summary(out) == {4: "FAIL", 7: "PASS"}
    assert out.rstrip().splitlines()[-1] == "0/1 required tasks pass; bonus 1/1"
    assert run_checks(namespace, tasks=[7], argv=[]) == 0


def test_run_checks_rejects_unknown_tasks():
    with pytest.raises(ValueError, match="no task 6"):
        run_checks({}, tasks=[6], argv=[])
    with pytest.raises(ValueError, match="tasks is empty"):
        run_checks({}, tasks=[], argv=[])


def test_solution_script_is_not_a_notebook_source():
    # tools/build_notebooks.py turns jupytext sources under solutions/ into notebooks; the
    # plain solution script must not be one of them.
    assert not re.match(r"\d\d_", SOLUTION.name)
    assert not re.search(r"^# %%", SOLUTION.read_text(encoding="utf-8"), re.MULTILINE)
    tool = ROOT / "tools" / "build_notebooks.py"
    if tool.exists():
        sys.path.insert(0, str(tool.parent))
        try:
            import build_notebooks
        finally:
            sys.path.remove(str(tool.parent))
        assert not build_notebooks.is_notebook_source(SOLUTION)
        assert SOLUTION not in build_notebooks.find_sources()


def test_exercise_text_names_every_task_interface():
    text = EXERCISE.read_text(encoding="utf-8")
    for spec in TASKS.values():
        for name in spec.names:
            assert name in text, name
    assert "make lab" in text
    assert "exercise_9_4_llm_retry_patterns_starter.py" in text
    assert "python -m llm_patterns grade notebooks/" in text
