"""The "Watch your X at work" sections of notebooks 01, 03 and 05, without a kernel (fast).

Each of those notebooks wraps the student's own class with ``watch(...)`` right after its check
cell and shows a live widget (``BucketGauge``, ``CostMeter``, ``BreakerLight``) while a small
burst runs on a virtual clock. Here we check, from the ``solutions/*.py`` sources:

- the section is there, after the check cell, guarded by ``except NotImplementedError``, and
  ends with ``flush()`` and a ``display(...)`` of the widget;
- the widget adapters follow the reference solution classes taken from the notebooks' task cells
  (a burst on a ``VirtualClock``, then the numbers the widget shows);
- the cells themselves, run against the solution, show the expected story, and run against the
  student stubs print "implement X above first" instead of failing (the student notebook must
  fail only its check cells), and run against the 05 draft breaker reveal its half-open bug.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import math
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jupytext
import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.course.widgets import (
    BreakerLight,
    BucketGauge,
    CostMeter,
    WatchedBreaker,
    WatchedBucket,
    WatchedCostTracker,
    watch,
)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"

# stem -> (task number, widget class name shown, the student class the cell needs)
SECTIONS = {
    "01_rate_limiting": (1, "BucketGauge", "TokenBucket and RateLimiter"),
    "03_cost_tracking": (3, "CostMeter", "CostTracker"),
    "05_circuit_breaker": (5, "BreakerLight", "CircuitBreaker"),
}


@cache
def _build_tool() -> Any:
    spec = importlib.util.spec_from_file_location("_build_notebooks_for_widget_tests",
                                                  ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@cache
def _cells(stem: str) -> tuple[Any, ...]:
    return tuple(jupytext.read(SOLUTIONS / f"{stem}.py").cells)


def _code(stem: str) -> list[Any]:
    return [c for c in _cells(stem) if c.cell_type == "code"]


def _tags(cell: Any) -> list[str]:
    return list(cell.metadata.get("tags", []))


def _check_index(stem: str, task: int) -> int:
    code = _code(stem)
    found = [i for i, c in enumerate(code) if "check" in _tags(c) and f"task:{task}" in _tags(c)]
    assert len(found) == 1, f"{stem}: expected one check cell for task {task}, found {found}"
    return found[0]


def _watch_cells(stem: str) -> list[Any]:
    """The section's code cells: the one calling watch(...) and the ones after it that use it."""
    code = _code(stem)
    start = next((i for i, c in enumerate(code) if re.search(r"\bwatch\(", c.source)), None)
    assert start is not None, f"{stem}: no code cell calls watch(...)"
    name = re.search(r"^(my_\w+) = None$", code[start].source, re.MULTILINE)
    cells = [code[start]]
    if name:  # a follow-up cell continues with the same object ("if my_x is None: ...")
        cells += [c for c in code[start + 1:] if f"if {name.group(1)} is None" in c.source]
    return cells


def _definitions(source: str) -> ast.Module:
    """Only the imports, function and class definitions and literal constants of a cell: what
    later cells need, without running the cell's demo (pipelines, threads, plots, logging)."""
    keep = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef)):
            keep.append(node)
        elif isinstance(node, ast.Assign):
            try:
                ast.literal_eval(node.value)
            except ValueError:
                continue
            keep.append(node)
    return ast.Module(body=keep, type_ignores=[])


def _namespace(stem: str, *, student: bool) -> dict[str, Any]:
    """The notebook's definitions up to its check cell, with the task cells as the solution or
    as the student's stubs (rendered by the build tool)."""
    task = SECTIONS[stem][0]
    render = _build_tool().render_source
    ns: dict[str, Any] = {"__name__": f"nb_{stem}"}
    for cell in _code(stem)[: _check_index(stem, task)]:
        if f"task:{task}" in _tags(cell):
            exec(compile(render(cell.source, student=student), stem, "exec"), ns)
        else:
            exec(compile(_definitions(cell.source), stem, "exec"), ns)
    return ns


def _run_section(stem: str, ns: dict[str, Any]) -> tuple[list[str], list[Any]]:
    """Run the section's cells in ``ns``; return each cell's printed text and what it displayed."""
    shown: list[Any] = []
    ns["display"] = lambda *objs: shown.extend(objs)
    outputs = []
    for cell in _watch_cells(stem):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(cell.source, stem, "exec"), ns)
        outputs.append(out.getvalue())
    return outputs, shown


# -- the sections are there and follow the conventions ---------------------------------------------

@pytest.mark.parametrize("stem", sorted(SECTIONS))
def test_each_source_watches_the_students_class_after_its_check_cell(stem):
    task, widget, _ = SECTIONS[stem]
    code = _code(stem)
    cells = _watch_cells(stem)
    first = code.index(cells[0])
    assert first == _check_index(stem, task) + 1, f"{stem}: the watch cell must follow the check"
    src = cells[0].source
    assert re.search(r"\bwatch\(my_\w+", src), f"{stem}: watch(<the student's object>) missing"
    assert re.search(rf"\b{widget}\(", src), f"{stem}: no {widget} in the watch cell"
    assert "except NotImplementedError:" in src and "above first, then re-run" in src
    assert "VirtualClock()" in src or "clock" not in src  # virtual time only, never real waits
    for cell in cells:
        assert not ({"check"} & set(_tags(cell))), "the watch cells are not check cells"
        assert re.search(r"\.flush\(\)\n\s*display\(\w+\)\s*$", cell.source), (
            f"{stem}: a watch cell must end with <widget>.flush() and display(<widget>)")
        assert "time.sleep" not in cell.source and "NBVAL_IGNORE_OUTPUT" not in cell.source


# -- the adapters on the reference solutions taken from the notebooks -------------------------------

def test_bucket_gauge_follows_the_solution_limiter_through_a_burst_and_a_refill():
    ns = _namespace("01_rate_limiting", student=False)
    clock = VirtualClock()
    limiter = ns["RateLimiter"](rpm=10, tpm=2_000, clock=clock)
    gauge = BucketGauge(watch(limiter, name="mine"), redraw_clock=clock, schedule=False)
    assert isinstance(gauge.source, WatchedBucket) and gauge.source.patched
    waits = [limiter.acquire(100) for _ in range(10)]  # ten requests fit at once
    assert waits == [0.0] * 10
    gauge.flush()
    s = gauge.snapshot()
    assert (s["requests_available"], s["requests_capacity"]) == (0.0, 10.0)
    assert (s["tokens_available"], s["tokens_capacity"]) == (1_000.0, 2_000.0)
    bar = gauge.children[1].children[1]  # the requests row's progress bar
    assert bar.value == 0.0 and bar.max == 10.0 and bar.bar_style == "danger"
    assert repr(gauge) == "BucketGauge('mine', requests=0/10, tokens=1,000/2,000, waiting=0)"

    waited = limiter.acquire(100)  # the 11th waits one request refill: 60 s / 10
    assert waited == pytest.approx(6.0, abs=1e-3) and clock.now() == pytest.approx(6.0, abs=1e-3)
    gauge.flush()
    s = gauge.snapshot()
    assert s["requests_available"] == pytest.approx(0.0, abs=1e-3)
    assert s["tokens_available"] == pytest.approx(1_000 - 100 + 6 * 2_000 / 60, abs=0.1)

    clock.sleep(60)  # a quiet minute refills both buckets, never above capacity
    assert limiter.acquire(200) == 0.0
    gauge.flush()
    assert repr(gauge) == "BucketGauge('mine', requests=9/10, tokens=1,800/2,000, waiting=0)"
    assert bar.value == pytest.approx(9.0) and bar.bar_style == "success"


def test_bucket_gauge_follows_the_solution_token_bucket():
    ns = _namespace("01_rate_limiting", student=False)
    clock = VirtualClock()
    bucket = ns["TokenBucket"](capacity=5, refill_rate=1.0, clock=clock)
    gauge = BucketGauge(bucket, redraw_clock=clock, schedule=False)  # watches it itself
    kinds: list[str] = []
    gauge.source.subscribe(lambda e: kinds.append(e.kind))
    assert [bucket.consume(1) for _ in range(7)] == [True] * 5 + [False] * 2
    assert kinds == ["acquire"] * 5 + ["reject"] * 2
    gauge.flush()
    assert repr(gauge) == "BucketGauge('', tokens=0/5, waiting=0)"
    clock.advance(3)
    assert bucket.consume(1) is True
    gauge.flush()
    assert gauge.snapshot()["tokens_available"] == pytest.approx(2.0)


def test_cost_meter_follows_the_solution_tracker_across_the_thresholds():
    ns = _namespace("03_cost_tracking", student=False)
    tracker = ns["CostTracker"]({"m": {"input": 1.0, "output": 2.0}}, 1.0)
    clock = VirtualClock()
    meter = CostMeter(watch(tracker, name="mine"), redraw_clock=clock, schedule=False)
    assert isinstance(meter.source, WatchedCostTracker)
    totals, alerts = [], []
    for _ in range(4):  # $0.30 each (300k input tokens at $1 per 1M): 0.3, 0.6, 0.9, 1.2
        tracker.record("m", {"prompt_tokens": 300_000, "completion_tokens": 0})
        meter.flush()
        s = meter.snapshot()
        totals.append(round(s["total"], 6))
        alerts.append(s["alerts"])
    assert totals == [0.3, 0.6, 0.9, 1.2]
    assert alerts == [[], [0.5], [0.5, 0.8], [0.5, 0.8, 1.0]]
    assert meter.snapshot()["alert_at"] == (0.5, 0.8, 1.0)
    assert repr(meter) == "CostMeter(total=$1.20, budget=$1.00, alerts=['0.5', '0.8', '1'])"
    with pytest.raises(KeyError):  # errors pass through the adapter unchanged
        tracker.record("unknown-model", {"prompt_tokens": 1, "completion_tokens": 1})
    assert math.isclose(meter.snapshot()["total"], 1.2)


def test_breaker_light_follows_the_solution_breaker_open_half_open_closed():
    ns = _namespace("05_circuit_breaker", student=False)
    clock = VirtualClock()
    breaker = ns["CircuitBreaker"](failure_threshold=3, reset_timeout=30.0, clock=clock)
    light = BreakerLight(watch(breaker, name="mine"), redraw_clock=clock, schedule=False)
    assert isinstance(light.source, WatchedBreaker)
    for _ in range(3):
        breaker.record_failure()
    light.flush()
    assert (light.state, light.failures, light.threshold, light.retry_in) == ("open", 3, 3, 30.0)
    clock.advance(10)
    assert breaker.can_execute() is False
    light.flush()
    assert (light.state, light.rejections, light.retry_in) == ("open", 1, 20.0)
    clock.advance(20)
    assert breaker.can_execute() is True  # the one trial
    assert breaker.can_execute() is False  # nobody else while it is out
    light.flush()
    assert (light.state, light.rejections) == ("half_open", 2)
    breaker.record_success()
    light.flush()
    assert repr(light) == "BreakerLight('mine', CLOSED, failures=0/3, retry_in=0.0)"


# -- the notebook cells themselves ------------------------------------------------------------------

@pytest.mark.parametrize("stem", sorted(SECTIONS))
def test_watch_cells_on_the_student_stubs_ask_for_the_implementation(stem):
    _, _, what = SECTIONS[stem]
    outputs, shown = _run_section(stem, _namespace(stem, student=True))
    assert shown == []
    for text in outputs:  # no exception, one friendly line per cell
        assert text.startswith(f"implement {what} above first, then re-run"), text


def test_watch_cells_on_the_solution_limiter():
    outputs, shown = _run_section("01_rate_limiting", _namespace("01_rate_limiting", student=False))
    burst, quiet = outputs
    lines = burst.splitlines()
    assert len(lines) == 14 and all(re.match(r"#\d+ +sent at t=", line) for line in lines)
    assert sum(" waited 0.0 s" in line for line in lines) == 9  # nine fit at once
    assert "left: 9.0 requests, 1,800 tokens" in quiet
    assert [type(w).__name__ for w in shown] == ["BucketGauge", "BucketGauge"]
    assert shown[0] is shown[1]  # one widget, shown after each cell
    assert re.fullmatch(r"BucketGauge\('your RateLimiter', requests=9/10, tokens=1,800/2,000, "
                        r"waiting=0\)", repr(shown[1]))


def test_watch_cell_on_the_solution_tracker():
    ns = _namespace("03_cost_tracking", student=False)
    (text,), shown = _run_section("03_cost_tracking", ns)
    costs = [float(m) for m in re.findall(r": \$(\d+\.\d+), total", text)]
    assert len(costs) == 12
    assert "alerts fired: [0.5, 0.8, 1.0]" in text
    (meter,) = shown
    assert isinstance(meter, CostMeter) and meter.snapshot()["alerts"] == [0.5, 0.8, 1.0]
    assert meter.snapshot()["total"] == pytest.approx(sum(costs), abs=1e-3)
    assert meter.snapshot()["total"] > ns["budget"]


def test_watch_cells_on_the_solution_breaker_and_on_the_buggy_draft():
    ns = _namespace("05_circuit_breaker", student=False)
    (trip, recover), shown = _run_section("05_circuit_breaker", ns)
    assert trip.count("call failed") == 3 and trip.count("call refused") == 3
    assert "trial call admitted: True, breaker half_open" in recover
    assert "a second caller admitted: False" in recover
    assert "the trial succeeded, breaker closed" in recover
    assert [w.state for w in shown] == ["closed", "closed"]  # one live widget: its last state
    assert repr(shown[0]) == "BreakerLight('your CircuitBreaker', CLOSED, failures=0/3, retry_in=0.0)"

    ns = _namespace("05_circuit_breaker", student=False)
    ns["CircuitBreaker"] = ns["DraftBreaker"]  # the notebook's buggy first draft
    (_, recover), _ = _run_section("05_circuit_breaker", ns)
    assert "a second caller admitted: True" in recover  # the section shows the draft's bug
