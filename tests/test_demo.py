"""The `demo` command: a simulated pipeline run on the virtual clock, table and HTML report."""

import io
import subprocess
import sys

import pytest

from llm_patterns.course.demo import run_demo
from llm_patterns.course.simulation import Scenario, Simulation


def test_demo_table_and_report(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    report = tmp_path / "report.html"
    result = run_demo(Scenario(duration=240, outage=(60, 120), seed=1), report=str(report),
                      out=out, err=err)
    text = out.getvalue()
    for row in ("requests", "fallbacks", "retries", "breaker trips", "cost summarize",
                "cost total"):
        assert row in text
    assert "100%" in err.getvalue()  # the progress bar reached the end
    assert result.succeeded + result.failed == result.requests > 300
    assert result.breaker_trips >= 1 and result.fallbacks > 0
    assert result.calls_into_outage <= 5 + 2 * 3  # threshold + a few probes, not 120 s of calls
    html = report.read_text()
    assert html.count("<script") >= 1 and "plotly" in html.lower()
    assert "circuit breaker state" in html and "cost total" in html


def test_same_seed_same_result():
    a = Simulation(Scenario(duration=120, seed=5)).run_sync()
    b = Simulation(Scenario(duration=120, seed=5)).run_sync()
    assert a.table() == b.table()
    assert [(e.kind, e.time) for e in a.timeline.log] == [(e.kind, e.time) for e in b.timeline.log]


def test_no_outage_no_trips():
    result = Simulation(Scenario(duration=120, outage=None, error_rate=0.0, seed=2)).run_sync()
    assert result.breaker_trips == 0 and result.failed == 0


@pytest.mark.parametrize("bad", [{"duration": 0}, {"request_rate": -1}, {"outage": (50, 10)}])
def test_bad_scenario(bad):
    with pytest.raises(ValueError):
        Scenario(**bad)


def test_cli_runs_and_rejects_bad_outage(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "llm_patterns", "demo", "--duration", "60",
                         "--quiet", "--outage", "none"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "requests" in ok.stdout and "Traceback" not in ok.stderr
    bad = subprocess.run([sys.executable, "-m", "llm_patterns", "demo", "--outage", "9:3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "START < END" in bad.stderr
