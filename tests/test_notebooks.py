"""The course notebooks: up to date with their sources, deterministic, and graded as intended.

- ``tools/build_notebooks.py --check``: the committed notebooks match ``solutions/*.py``;
- strict ``--nbval`` (every stored output compared) and ``--nbval-lax`` pass on every solution
  notebook;
- every student notebook fails exactly its check cells under ``--nbval-lax``, nothing else;
- ``python -m llm_patterns grade`` (sandboxed, per criterion) gives the solutions full marks and
  the untouched student notebooks 0, every task found and every criterion run.

The slow parts (kernels) start together in background processes when the first of them is
needed, so the whole file costs about as long as its slowest run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "tools" / "build_notebooks.py"
CELL_TIMEOUT = 120
SANITIZE = "tools/nbval_sanitize.cfg"
RUN_TIMEOUT = 900  # a whole nbval run; pytest-timeout on the slow tests is above it

SOLUTION_NBS = sorted(SOLUTIONS.glob("*.ipynb"))
STUDENT_NBS = sorted(NOTEBOOKS.glob("*.ipynb"))

pytestmark = pytest.mark.skipif(not SOLUTION_NBS, reason="no notebooks built yet")


def _rel(paths: list[Path]) -> list[str]:
    return [p.relative_to(ROOT).as_posix() for p in paths]


def _nbval_cmd(mode: str, paths: list[Path], junit: Path | None = None) -> list[str]:
    cmd = [
        # plugin autoload is off (faster, isolated): load pytest-timeout by hand, so the ini's
        # `timeout` is a known option and a hard limit per cell (nbval's own cell timeout is
        # below it); the sanitize file keeps package versions and addresses out of comparisons
        sys.executable, "-m", "pytest", "-p", "nbval.plugin", "-p", "pytest_timeout",
        "-p", "no:cacheprovider", mode, "--nbval-current-env",
        f"--nbval-cell-timeout={CELL_TIMEOUT}", f"--nbval-sanitize-with={SANITIZE}",
        # several runs start kernels at once on 2 cores: a kernel slow to answer is load,
        # not a failure of the notebook (one full run saw 08's kernel miss the 60 s default)
        "--nbval-kernel-startup-timeout=240",
        "-o", "addopts=", "-q", "--color=no", *_rel(paths),
    ]
    if junit is not None:
        cmd.append(f"--junitxml={junit}")
    return cmd


class _Run:
    """A background command; ``result()`` waits for it and returns (returncode, output)."""

    def __init__(self, cmd: list[str], log: Path) -> None:
        env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1", PYTHONHASHSEED="0")
        self.cmd = cmd
        self.log = log
        self._fh = log.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self._fh,
                                     stderr=subprocess.STDOUT, text=True)
        self._rc: int | None = None

    def result(self) -> tuple[int, str]:
        if self._rc is None:
            try:
                self._rc = self.proc.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._rc = -9
            self._fh.close()
        return self._rc, self.log.read_text(encoding="utf-8")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if not self._fh.closed:
            self._fh.close()


def _grade_available() -> bool:
    try:
        from llm_patterns.course.grading import grade  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """Start every slow run at once; tests pick the one they need."""
    tmp = tmp_path_factory.mktemp("nbruns")
    started: dict[str, _Run] = {
        "strict": _Run(_nbval_cmd("--nbval", SOLUTION_NBS), tmp / "strict.log"),
        "lax": _Run(
            # solutions are not run again here: strict --nbval fails on everything --nbval-lax
            # fails on (an error) and more (an output that differs)
            _nbval_cmd("--nbval-lax", STUDENT_NBS, tmp / "lax.xml"),
            tmp / "lax.log",
        ),
    }
    if _grade_available():
        for name, where in (("grade_solutions", SOLUTIONS), ("grade_notebooks", NOTEBOOKS)):
            cmd = [sys.executable, "-m", "llm_patterns", "grade", str(where), "--json"]
            started[name] = _Run(cmd, tmp / f"{name}.log")
    started["_tmp"] = tmp  # type: ignore[assignment]
    yield started
    for name, run in started.items():
        if name != "_tmp":
            run.stop()


# --- the build is up to date ---------------------------------------------------------------


def test_committed_notebooks_are_up_to_date_with_their_sources():
    proc = subprocess.run([sys.executable, str(BUILD), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (
        "notebooks are out of date: run `make notebooks`\n" + proc.stdout + proc.stderr
    )


def test_every_student_notebook_has_a_solution_and_ids_are_stable():
    assert _rel(STUDENT_NBS) == [f"notebooks/{p.name}" for p in SOLUTION_NBS]
    for path in SOLUTION_NBS + STUDENT_NBS:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata == {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        }, path
        for index, cell in enumerate(nb.cells):
            tags = cell.metadata.get("tags", [])
            if "check" in tags:
                task = next(t.split(":", 1)[1] for t in tags if t.startswith("task:"))
                assert cell.id == f"check-task{task}", (path, index)
            else:
                assert cell.id == f"{path.stem}-{index:02d}", (path, index)


def test_student_notebooks_have_no_outputs_and_no_solutions():
    for path in STUDENT_NBS:
        text = path.read_text(encoding="utf-8")
        assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text, path
        nb = nbformat.reads(text, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, (path, cell.id)


def test_solution_notebooks_hold_no_local_paths_or_key_like_strings():
    home = str(Path.home())
    for path in SOLUTION_NBS + STUDENT_NBS:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"sk-[A-Za-z0-9_-]{8,}", text), f"key-like string in {path}"
        assert str(ROOT) not in text and (home == "/" or home not in text), f"local path in {path}"


def test_build_tool_is_deterministic_and_stubs_regions(tmp_path):
    sys.path.insert(0, str(BUILD.parent))
    try:
        import build_notebooks as B
    finally:
        sys.path.remove(str(BUILD.parent))
    source = "\n".join([
        "def f(x):",
        "    y = 1",
        "    ### BEGIN SOLUTION: return x + y",
        "    return x + y",
        "    ### END SOLUTION",
    ])
    assert B.render_source(source, student=False) == "def f(x):\n    y = 1\n    return x + y"
    assert B.render_source(source, student=True) == (
        'def f(x):\n    y = 1\n    # YOUR CODE HERE\n    raise NotImplementedError("return x + y")'
    )
    with pytest.raises(B.BuildError, match="never ended"):
        B.render_source("### BEGIN SOLUTION\nx = 1", student=True)
    for src in sorted(SOLUTIONS.glob("*.py")):
        if B.is_notebook_source(src):
            built = B.build(src)
            assert B.dumps(built.student) == B.dumps(B.build(src).student)


# --- nbval ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_strict_nbval_passes_on_every_solution_notebook(runs):
    rc, out = runs["strict"].result()
    assert rc == 0, f"strict --nbval failed on solutions/:\n{out[-6000:]}"


def _junit_outcomes(xml_path: Path) -> dict[tuple[str, str], str]:
    """{(notebook relative path, cell name): 'passed' | 'failed' | 'skipped'}."""
    outcomes = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        state = "passed"
        if case.find("failure") is not None or case.find("error") is not None:
            state = "failed"
        elif case.find("skipped") is not None:
            state = "skipped"
        outcomes[(classname, name)] = state
    return outcomes


def _code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def _cells_by_outcome(outcomes: dict, path: Path) -> dict[str, set[str]]:
    """Map the junit cases of one notebook to cell ids, grouped by outcome."""
    classname = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".") + ".ipynb"
    cells = _code_cells(path)
    mine = {name: state for (cls, name), state in outcomes.items()
            if cls in (classname, path.name, path.relative_to(ROOT).as_posix())}
    numbers = sorted(int(m.group(1)) for n in mine if (m := re.fullmatch(r"Cell (\d+)", n)))
    assert len(numbers) == len(cells), f"{path}: {len(cells)} code cells, junit has {sorted(mine)}"
    base = numbers[0] if numbers else 0  # nbval 0.11 numbers cells from 0, its master from 1
    grouped: dict[str, set[str]] = {"passed": set(), "failed": set(), "skipped": set()}
    for name, state in mine.items():
        k = int(name.split()[1]) - base
        grouped[state].add(cells[k].id)
    return grouped


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_student_notebooks_fail_only_their_check_cells_under_nbval_lax(runs):
    rc, out = runs["lax"].result()
    xml = runs["_tmp"] / "lax.xml"
    assert xml.exists(), f"nbval-lax produced no junit report:\n{out[-4000:]}"
    outcomes = _junit_outcomes(xml)
    problems = []
    for path in STUDENT_NBS:
        checks = {c.id for c in _code_cells(path) if "check" in c.metadata.get("tags", [])}
        got = _cells_by_outcome(outcomes, path)
        if got["failed"] != checks or got["skipped"]:
            problems.append(f"{path.name} (student): failing {sorted(got['failed'])}, "
                            f"expected exactly the check cells {sorted(checks)}")
    assert not problems, "\n".join(problems) + f"\n\n{out[-6000:]}"
    any_check = any("check" in c.metadata.get("tags", []) for p in STUDENT_NBS
                    for c in _code_cells(p))
    assert rc == (1 if any_check else 0), f"pytest exit status {rc}:\n{out[-4000:]}"


# --- grading ---------------------------------------------------------------------------------


def _score(run: _Run) -> dict:
    rc, out = run.result()
    assert rc == 0, f"grade exited {rc}:\n{out[-4000:]}"
    start = out.find("{")
    assert start >= 0, f"grade --json printed no JSON:\n{out[-4000:]}"
    return json.loads(out[start:])


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_grade_gives_the_solutions_full_marks(runs):
    if "grade_solutions" not in runs:
        pytest.skip("llm_patterns.course.grading.grade is not there yet")
    report = _score(runs["grade_solutions"])
    assert report["max"] > 0 and report["score"] == report["max"], report
    assert report["bonus"]["score"] == report["bonus"]["max"] > 0, report
    assert all(t["reason"] is None for t in report["tasks"].values()), report


@pytest.mark.slow
@pytest.mark.timeout(RUN_TIMEOUT + 60)
def test_grade_gives_the_untouched_student_notebooks_zero(runs):
    if "grade_notebooks" not in runs:
        pytest.skip("llm_patterns.course.grading.grade is not there yet")
    report = _score(runs["grade_notebooks"])
    assert report["max"] > 0 and report["score"] == 0 and report["bonus"]["score"] == 0, report
    for task in report["tasks"].values():  # every task found, every criterion run and failed
        assert task["reason"] is None and task["criteria"], task
        assert not any(c["passed"] for c in task["criteria"]), task
