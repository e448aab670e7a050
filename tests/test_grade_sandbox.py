"""A grade no notebook can forge: every tampering technique scores 0 on a stub, and is contained.

Each submission below is the untouched stub of task 3 plus one attack, run from the class body
(so the attack surely runs in the worker: the grader loads only what the task's names need).
The attacks change the worker, never the grader: the checks run in the grader's process.
"""

from __future__ import annotations

import hashlib
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
import submissions as SUB

from llm_patterns.course.grading import grade as G
from llm_patterns.course.grading.sandbox import SLOTS, UID_BASE, Limits, isolation

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

LIMITS = Limits(criterion_seconds=2.0, task_seconds=20.0, submission_seconds=60.0)
IMPORTS_3 = SUB.imports("03_cost_tracking")
GRADER_FILES = [Path(G.__file__).with_name(n) for n in ("task3_cost.py", "_framework.py",
                                                         "grade.py", "__init__.py")]
NOT_IMPLEMENTED = "not implemented yet — replace the `raise NotImplementedError` with your code"


def stub_with(attack: str, *, in_method: bool = False) -> str:
    """The task 3 stub whose class body (or ``record``) runs ``_attack()``."""
    body = textwrap.dedent(attack).strip("\n")
    call_in_body = "" if in_method else "    _attack()\n"
    call_in_record = "        _attack()\n" if in_method else ""
    return (f"{body}\n\n\nclass CostTracker:\n{call_in_body}"
            "    def __init__(self, pricing, budget, alert_thresholds=(0.5, 0.8, 1.0)):\n"
            "        self.pricing = pricing\n\n"
            "    def record(self, model, usage, dag_id=None, task_id=None):\n"
            f"{call_in_record}"
            "        raise NotImplementedError('record')\n\n"
            "    @property\n"
            "    def total(self):\n"
            "        raise NotImplementedError('total')\n")


def grade_attack(tmp_path: Path, attack: str, *, in_method: bool = False,
                 limits: Limits = LIMITS) -> dict:
    SUB.write(tmp_path / "sub", "03_cost_tracking.ipynb", IMPORTS_3,
              stub_with(attack, in_method=in_method),
              ("from llm_patterns.course.grading import check_task3\ncheck_task3(CostTracker)",
               ["check", "task:3"]))
    return G.grade(tmp_path / "sub", limits=limits, tasks=[3])["tasks"]["task3"]


def sandbox_processes() -> list[str]:
    """Processes still running as a sandbox user, or running the attacks' marker commands."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if "\nState:\tZ" in status:  # a zombie is dead already, waiting to be reaped
            continue
        if UID_BASE <= uid < UID_BASE + SLOTS or "sleep 4242" in cmdline:
            found.append(f"{pid} uid={uid} {cmdline[:80]}")
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    deadline = time.monotonic() + 10
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes() == []


def fingerprint(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


ATTACKS = {
    "patch-the-check-module": """
        def _attack():
            import llm_patterns.course.grading as g
            import llm_patterns.grading as old_name
            from llm_patterns.course.grading import task3_cost
            g.check_task3 = old_name.check_task3 = lambda *a, **k: None
            task3_cost.check_task3 = lambda *a, **k: None
    """,
    "patch-the-verdict": """
        def _attack():
            from llm_patterns.course.grading import _framework as f
            f._verdict = lambda *a, **k: None
            f.run_check = lambda title, criteria, **k: f.CheckResult(title, 99, 99)
            f.Fail.__init__ = lambda self, *a, **k: None
    """,
    "patch-builtins": """
        def _attack():
            import builtins
            builtins.isinstance = lambda *a: True
            builtins.float = lambda *a: 0.0075
            builtins.print = lambda *a, **k: None
    """,
    "replace-sys-modules": """
        def _attack():
            import sys, types
            fake = types.ModuleType("fake")
            fake.check_task3 = lambda *a, **k: None
            for name in ("llm_patterns.course.grading", "llm_patterns.course.grading.task3_cost",
                         "llm_patterns.course.grading._framework", "json"):
                sys.modules[name] = fake
    """,
    "write-to-the-pipe": """
        def _attack():
            import json, os
            for fd in range(3, 40):
                for rid in range(1, 6):
                    forged = json.dumps({"t": "res", "id": rid, "ok": True,
                                         "value": {"$m": [["score", 99]]}}).encode()
                    try:
                        os.write(fd, len(forged).to_bytes(4, "big") + forged)
                    except OSError:
                        pass
                try:
                    os.write(fd, b"\\xff\\xff\\xff\\x7f garbage")
                except OSError:
                    pass
    """,
    "forge-a-keyboard-interrupt": """
        def _attack():
            import json, os
            for kind in ("KeyboardInterrupt", "SystemExit"):
                error = {"$e": {"mro": [["builtins", kind]], "args": {"$t": []}, "attrs": {},
                                "str": "", "where": ""}}
                for rid in range(1, 4):
                    forged = json.dumps({"t": "res", "id": rid, "ok": False,
                                         "error": error}).encode()
                    for fd in range(3, 40):
                        try:
                            os.write(fd, len(forged).to_bytes(4, "big") + forged)
                        except OSError:
                            pass
    """,
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_tampering_scores_zero_on_a_stub(tmp_path, name):
    before = fingerprint(GRADER_FILES)
    task = grade_attack(tmp_path, ATTACKS[name])
    assert task["points"] == 0 and task["max"] == SUB.T3_MAX, task
    assert not any(c["passed"] for c in task["criteria"])
    assert fingerprint(GRADER_FILES) == before


def test_a_class_that_reads_the_checker_s_stack_finds_nothing_to_copy(tmp_path):
    peeking = """
        import sys

        def _peek(*names):
            frame = sys._getframe(1)
            while frame is not None:
                for name in names:
                    if name in frame.f_locals:
                        return frame.f_locals[name]
                frame = frame.f_back
            raise NotImplementedError("no checker on the stack")

        def _attack():
            pass
    """
    source = stub_with(peeking).replace(
        "raise NotImplementedError('record')", "return _peek('expected', 'want', 'cost')"
    ).replace("raise NotImplementedError('total')", "return _peek('expected', 'total')")
    SUB.write(tmp_path / "sub", "03_cost_tracking.ipynb", IMPORTS_3, source)
    task = G.grade(tmp_path / "sub", limits=LIMITS, tasks=[3])["tasks"]["task3"]
    assert task["points"] == 0, task


def test_exiting_the_worker_scores_zero_and_is_reported(tmp_path):
    at_load = grade_attack(tmp_path / "a", "def _attack():\n    import os\n    os._exit(0)")
    assert at_load["points"] == 0
    assert "could not be loaded" in at_load["reason"] and "exit status 0" in at_load["reason"]
    in_method = grade_attack(tmp_path / "b", "def _attack():\n    import os\n    os._exit(3)",
                             in_method=True)
    assert in_method["points"] == 0 and in_method["reason"] is None
    hints = " ".join(c["hint"] for c in in_method["criteria"])
    assert "the process running your code ended (exit status 3)" in hints


def test_a_hang_is_cut_per_criterion_and_per_task(tmp_path):
    limits = Limits(criterion_seconds=0.5, task_seconds=4.0, submission_seconds=30.0)
    t0 = time.monotonic()
    task = grade_attack(tmp_path / "a", "def _attack():\n    while True:\n        pass",
                        in_method=True, limits=limits)
    assert time.monotonic() - t0 < 30  # a hang guard, not a speed test
    assert task["points"] == 0
    hints = [c["hint"] for c in task["criteria"]]
    assert any(h.startswith("did not finish within 0.5 s — an endless loop?") for h in hints)
    at_load = grade_attack(tmp_path / "b", "def _attack():\n    while True:\n        pass",
                           limits=limits)
    assert at_load["points"] == 0 and "an endless loop at the top level" in at_load["reason"]


def test_a_huge_allocation_fails_the_student_not_the_grader(tmp_path):
    task = grade_attack(tmp_path, "def _attack():\n    return bytearray(4 << 30)", in_method=True)
    assert task["points"] == 0
    assert any("MemoryError" in (c["hint"] or "") for c in task["criteria"]), task


def test_fifty_processes_and_a_fork_bomb_are_limited_and_killed(tmp_path):
    spawner = """
        def _attack():
            import subprocess
            started = 0
            for _ in range(60):
                try:
                    subprocess.Popen(["sleep", "4242"])
                    started += 1
                except OSError:
                    break
            raise RuntimeError(f"started {started} processes")
    """
    task = grade_attack(tmp_path / "a", spawner, in_method=True)
    assert task["points"] == 0
    started = int(task["criteria"][0]["hint"].split("started ")[1].split()[0])
    if isolation() != "none":
        assert started < LIMITS.processes  # the process limit of the sandbox user
    bomb = """
        def _attack():
            import os, signal
            forked = 0
            for _ in range(500):
                try:
                    if os.fork() == 0:
                        signal.pause()
                        os._exit(0)
                    forked += 1
                except OSError:
                    break
            raise RuntimeError(f"forked {forked} times")
    """
    task = grade_attack(tmp_path / "b", bomb, in_method=True)
    assert task["points"] == 0
    forked = int(task["criteria"][0]["hint"].split("forked ")[1].split()[0])
    if isolation() != "none":
        assert forked < LIMITS.processes
    # the autouse fixture checks that none of these processes is left


def test_writes_outside_the_submission_do_not_land_and_cannot_rig_the_next(tmp_path):
    repo = Path(G.__file__).resolve().parents[3]
    targets = [repo / "llm_patterns" / "course" / "grading" / "task3_cost.py",
               repo / "pwned.txt", Path("/tmp/llm-patterns-pwned.txt"),
               tmp_path / "sub" / "pwned.txt", Path("/root/pwned.txt"),
               Path(sys.prefix) / "lib" / "sitecustomize.py"]
    attack = f"""
        def _attack():
            for target in {[str(t) for t in targets]!r}:
                try:
                    with open(target, "a") as fh:
                        fh.write("import os; os.environ['PWNED'] = '1'\\n")
                except OSError:
                    pass
    """
    before = fingerprint(GRADER_FILES)
    task = grade_attack(tmp_path, attack)
    assert task["points"] == 0
    assert fingerprint(GRADER_FILES) == before
    if isolation() != "none":
        assert not any(t.exists() for t in targets[1:]), [t for t in targets if t.exists()]
    # the next submission, an untouched stub, still scores 0
    nxt = tmp_path / "next"
    SUB.write(nxt, "03_cost_tracking.ipynb", IMPORTS_3, SUB.STUB_TRACKER)
    assert G.grade(nxt, limits=LIMITS, tasks=[3])["tasks"]["task3"]["points"] == 0


@pytest.mark.skipif(isolation() != "namespaces", reason="needs root and unshare")
def test_the_worker_sees_no_network_no_home_and_no_other_submission(tmp_path):
    other = tmp_path / "other-student"
    other.mkdir()
    (other / "answer.txt").write_text("the other student's work")
    probe = f"""
        def _attack():
            import os, socket
            seen = []
            try:
                socket.create_connection(("1.1.1.1", 53), timeout=1)
                seen.append("network")
            except OSError:
                pass
            for path in ("/root", "{other}", "/etc/shadow"):
                try:
                    if os.path.isdir(path):
                        seen.extend(path + "/" + name for name in os.listdir(path))
                    elif open(path).read(1):
                        seen.append(path)
                except OSError:
                    pass
            raise RuntimeError("seen: " + ",".join(seen) + f" uid={{os.getuid()}}")
    """
    task = grade_attack(tmp_path, probe, in_method=True)
    hint = task["criteria"][0]["hint"]
    assert "seen: " in hint
    seen = hint.split("seen: ", 1)[1].split(" uid=")[0].split(",")
    assert "network" not in seen and not any("other-student" in s for s in seen)
    # /root is an empty tmpfs but for the Python installation mounted back (read-only)
    mounted_back = {"/root/" + Path(p).relative_to("/root").parts[0]
                    for p in (sys.base_prefix, sys.prefix) if p.startswith("/root/")}
    assert all(s in mounted_back for s in seen if s.startswith("/root")), seen
    assert "/etc/shadow" not in seen
    assert " uid=0 " not in hint and " uid=" in hint  # an unprivileged user


LEVELS = [lvl for lvl in ("none", "user", "namespaces")
          if ("none", "user", "namespaces").index(lvl)
          <= ("none", "user", "namespaces").index(isolation())]


@pytest.mark.parametrize("level", LEVELS)
def test_every_confinement_level_grades_alike_and_cleans_up(tmp_path, level):
    good = SUB.solution_cell("03_cost_tracking", 3)
    SUB.write(tmp_path / "good", "03_cost_tracking.ipynb", IMPORTS_3, good)
    report = G.grade(tmp_path / "good", limits=LIMITS, tasks=[3], level=level)
    assert report["sandbox"] == level and report["tasks"]["task3"]["points"] == SUB.T3_MAX
    spawner = "def _attack():\n    import subprocess\n    subprocess.Popen(['sleep', '4242'])"
    SUB.write(tmp_path / "bad", "03_cost_tracking.ipynb", IMPORTS_3, stub_with(spawner))
    report = G.grade(tmp_path / "bad", limits=LIMITS, tasks=[3], level=level)
    assert report["tasks"]["task3"]["points"] == 0
