"""The notebooks' text against the numbers their own cells print (the committed outputs, which
strict nbval keeps equal to a fresh run): a claim in the prose that a printed number contradicts
fails here, so a demo cannot drift away from the sentence beside it."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cells(name: str) -> list[dict]:
    return json.loads((ROOT / "solutions" / name).read_text(encoding="utf-8"))["cells"]


def _printed(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")


def _markdown_after(cells: list[dict], index: int) -> str:
    for cell in cells[index + 1:]:
        if cell["cell_type"] == "markdown":
            return "".join(cell["source"])
    raise AssertionError("no text after the cell")


def test_the_jitter_demo_shows_what_its_text_says():
    cells = _cells("02_backoff.ipynb")
    index, printed = next((i, _printed(c)) for i, c in enumerate(cells)
                          if "busiest" in _printed(c))
    peaks = {name.strip(): int(n) for name, n in
             re.findall(r"^(.+?)\s+busiest 10 ms:\s+(\d+) retries$", printed, re.M)}
    none, small, full = (peaks["no jitter (1, 2, 4, 8 s)"], peaks["+ up to 10% jitter"],
                         peaks["full jitter"])
    text = " ".join(_markdown_after(cells, index).split())
    assert "all 1,000 within the same 10 ms" in text and none == 1000
    # "smears each spike ...: the peak drops several-fold"
    assert "the peak drops several-fold" in text and small * 3 <= none
    # full jitter: "the peak drops again several-fold"
    assert "drops again several-fold" in text and full * 3 <= small


def _table_after(text: str, heading: str) -> list[str]:
    """The first column of the table that follows ``heading`` in the exercise file."""
    rows = []
    for line in text[text.index(heading):].splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        if line.startswith("|") and not line.startswith(("| Criterion", "|---")):
            rows.append(line.split("|")[1].strip())
    return rows


def test_the_exercise_file_lists_exactly_the_criteria_each_check_runs():
    """The exercise's acceptance tables and the checks name the same criteria, in order: a
    stub fails every criterion, and the failures are the check's own list."""
    import contextlib
    import io

    import student_impls as S

    from llm_patterns.course.grading import (
        check_task1,
        check_task2,
        check_task3,
        check_task4,
        check_task5,
        check_task7,
    )
    from llm_patterns.course.grading._framework import CheckFailed

    text = (ROOT / "exercises" / "exercise_9_4.md").read_text(encoding="utf-8")
    stubs = {
        "check_task1(": (check_task1, (S.StubBucket, S.StubLimiter)),
        "check_task2(": (check_task2, (S.stub_backoff, S.stub_is_retryable)),
        "check_task3(": (check_task3, (S.StubTracker,)),
        "check_task4(": (check_task4, (S.stub_fallback,)),
        "check_task5(": (check_task5, (S.StubBreaker,)),
        "check_task7(": (check_task7, (S.stub_chunk,)),
    }
    for call, (check, stub) in stubs.items():
        names: list[str] = []
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                check(*stub)
            except CheckFailed as exc:
                names = [name for name, _ in exc.failures]
        listed = _table_after(text, f"**Acceptance criteria** (`{call}")
        assert listed == names, f"{call}: the exercise lists {listed}, the check runs {names}"


def test_the_advertised_time_is_the_sum_of_the_notebooks_own():
    minutes = {}
    for source in sorted((ROOT / "solutions").glob("0[0-9]_*.py")):
        found = re.search(r"^# \*\*Time:\*\* about (\d+) minutes", source.read_text("utf-8"), re.M)
        assert found, f"{source.name} states no time budget"
        minutes[source.name[:2]] = int(found.group(1))
    text = " ".join((ROOT / "exercises" / "exercise_9_4.md").read_text("utf-8")[:600].split())
    claim = re.search(r"about (\d+) minutes for the tour and the five required tasks "
                      r"\(notebooks 00–05\); task 7 is a bonus \(about (\d+) more\); notebooks "
                      r"06, 08 and 09 are to read and run \(about (\d+) more\)", text)
    assert claim, text
    required, bonus, reading = map(int, claim.groups())
    assert required == sum(minutes[n] for n in ("00", "01", "02", "03", "04", "05"))
    assert bonus == minutes["07"]
    assert reading == sum(minutes[n] for n in ("06", "08", "09"))
