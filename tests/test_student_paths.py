"""Each task notebook run top to bottom as a student would have it: with the seed hint's code,
and with correct designs other than the reference one (tests/student_impls.py). Every cell after
the check must work with any implementation that passed it, and no cell may wait or hang
silently: the demo cells run student code under the checks' guard (``under_guard``)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
CELL_SECONDS = 5.0  # any cell but a check cell
CHECK_SECONDS = 25.0  # a check cell of a broken design: a few criteria stopped at their budget

SEED = "seed hint"  # the hint's code (its bugs included): only the check cell may fail
# (notebook, the task cell's names bound to tests/student_impls.py, SEED or None for correct)
RUNS = [
    ("01_rate_limiting", {"TokenBucket": "BugHintBucket", "RateLimiter": "BugRealSleepLimiter"},
     SEED),
    ("01_rate_limiting", {"TokenBucket": "GoodGCRABucket", "RateLimiter": "GoodPollingLimiter"},
     None),
    ("01_rate_limiting", {"TokenBucket": "GoodLazyBucket", "RateLimiter": "GoodConditionLimiter"},
     None),
    ("02_backoff", {"calculate_backoff": "bug_jitter_after_cap",
                    "is_retryable": "good_is_retryable"}, SEED),
    ("02_backoff", {"calculate_backoff": "good_full_jitter",
                    "is_retryable": "good_is_retryable_by_status"}, None),
    ("02_backoff", {"calculate_backoff": "good_equal_jitter",
                    "is_retryable": "good_is_retryable"}, None),
    ("03_cost_tracking", {"CostTracker": "BugPer1KTracker"}, SEED),
    ("03_cost_tracking", {"CostTracker": "GoodDecimalTracker"}, None),
    ("03_cost_tracking", {"CostTracker": "GoodRecordsTracker"}, None),
    ("04_fallback", {"call_with_fallback": "bug_prints_instead_of_logging"}, SEED),
    ("04_fallback", {"call_with_fallback": "good_fallback_own_handler"}, None),
    ("04_fallback", {"call_with_fallback": "good_fallback_root_logger"}, None),
    ("05_circuit_breaker", {"CircuitBreaker": "BugEveryoneInHalfOpen"}, SEED),
    ("05_circuit_breaker", {"CircuitBreaker": "GoodEagerBreaker"}, None),
    ("05_circuit_breaker", {"CircuitBreaker": "GoodLazyBreaker"}, None),
    ("07_token_limits", {"chunk_text": "bug_chunk_cuts_words"}, SEED),
    ("07_token_limits", {"chunk_text": "good_chunk_greedy_words"}, None),
    ("07_token_limits", {"chunk_text": "good_chunk_recursive"}, None),
]


def _student_notebook(name: str, binding: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    (task,) = [c for c in nb.cells if any(t.startswith("task:") for t in
                                          c.metadata.get("tags", [])) and
               "check" not in c.metadata.get("tags", [])]
    names = ", ".join(binding)
    impls = ", ".join(binding.values())
    task.source = (f"import sys\nsys.path.insert(0, {str(ROOT / 'tests')!r})\n"
                   f"from student_impls import *  # noqa: F403\n"
                   f"from student_impls import {impls}\n\n{names} = {impls}\n")
    return nb


def _seconds(cell: nbformat.NotebookNode) -> float:
    stamps = cell.metadata.get("execution", {})
    start, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = [datetime.fromisoformat(s.replace("Z", "+00:00")) for s in (start, end)]
    return (parse[1] - parse[0]).total_seconds()


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize(("name", "binding", "kind"), RUNS,
                         ids=[f"{n}-{'+'.join(b.values())}" for n, b, _ in RUNS])
def test_a_student_design_runs_through_its_whole_notebook(name, binding, kind):
    nb = _student_notebook(name, binding)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    slow = [(i, round(_seconds(c), 1)) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and _seconds(c) > (
                CHECK_SECONDS if "check" in c.metadata.get("tags", []) else CELL_SECONDS)]
    assert not slow, f"cells over {CELL_SECONDS:g} s (a check cell: {CHECK_SECONDS:g} s): {slow}"
    errors = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                tags = cell.metadata.get("tags", [])
                errors.append((i, "check" in tags, out.ename, out.evalue[:200]))
    if kind is None:  # a correct design: nothing fails anywhere
        assert errors == [], json.dumps(errors, indent=1)
    else:  # the seed hint: only the check cell fails; the demo cells say what happened
        assert [e for e in errors if not e[1]] == [], json.dumps(errors, indent=1)
        assert any(e[1] for e in errors), "the check accepted the seed hint's code"
