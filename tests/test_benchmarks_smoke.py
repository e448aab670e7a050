"""Smoke tests for benchmarks/: each script runs on a tiny workload (``--quick``) and prints one
JSON document with the keys the README and the dashboard read. Nothing here asserts on speed:
figures belong to ``make bench``, not to the test suite."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

COMMON_KEYS = {"benchmark", "date", "quick", "versions", "machine", "targets"}
RATE_ROW_KEYS = {"client", "clock", "wall_s", "utilization", "http_429", "attempts", "failed",
                 "p50_s", "p99_s"}


def run(script: str, tmp_path: Path, *extra: str) -> dict:
    readme = tmp_path / "README.md"
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--results-dir", str(tmp_path),
         *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)  # the whole stdout is one JSON document
    assert set(data) >= COMMON_KEYS, sorted(COMMON_KEYS - set(data))
    assert data["quick"] is True
    assert data["benchmark"] == script.removesuffix(".py")
    assert isinstance(data["targets"], dict) and data["targets"]
    assert all(isinstance(v, bool) for v in data["targets"].values())
    written = json.loads((tmp_path / f"{data['benchmark']}-quick.json").read_text())
    assert written == data
    assert not readme.exists()  # --quick never touches a README unless asked
    return data


def check_rate_rows(data: dict, peers: set[str]) -> None:
    rows = data["clients"]
    for row in rows:
        assert set(row) >= RATE_ROW_KEYS, sorted(RATE_ROW_KEYS - set(row))
        assert row["attempts"] >= row["requests"] - row["failed"]
    names = {r["client"] for r in rows}
    assert peers <= names, sorted(peers - names)
    assert any(r["clock"] == "virtual" for r in rows)
    assert data["setup"]["theoretical_min_s"] > 0
    assert "ratio_vs_best_peer" in data and "best_peer" in data


@pytest.mark.slow
def test_rate_limit_utilization(tmp_path: Path) -> None:
    data = run("rate_limit_utilization.py", tmp_path)
    check_rate_rows(data, {"tenacity wait_random_exponential", "tenacity + Retry-After",
                           "openai SDK (max_retries=10)", "aiolimiter (RPM+TPM) + tenacity",
                           "pyrate-limiter (RPM+TPM) + tenacity"})
    assert data["setup"]["tpm_multiplier"] == 1.0


@pytest.mark.slow
def test_estimate_mismatch(tmp_path: Path) -> None:
    data = run("estimate_mismatch.py", tmp_path)
    check_rate_rows(data, {"openai SDK (max_retries=10)", "pyrate-limiter (RPM+TPM) + tenacity"})
    assert data["setup"]["tpm_multiplier"] == 1.2


@pytest.mark.slow
def test_burst_default(tmp_path: Path) -> None:
    data = run("burst_default.py", tmp_path)
    cells = {(c["provider"], c["limiter"]): c for c in data["cells"]}
    assert len(cells) == 4
    for cell in cells.values():
        assert {"http_429", "wall_s", "utilization", "burst_above_pacing",
                "first_second_requests"} <= set(cell)
    assert "utilization_cost_vs_per_minute_provider" in data


@pytest.mark.slow
def test_outage(tmp_path: Path) -> None:
    data = run("outage.py", tmp_path)
    rows = data["clients"]
    assert {"tenacity wait_random_exponential", "openai SDK (max_retries=10)"} <= {
        r["client"] for r in rows}
    for row in rows:
        assert {"attempts_into_outage", "peak_per_window_after_recovery", "attempts",
                "failed", "p99_s"} <= set(row)
        assert 0 <= row["attempts_into_outage"] <= row["attempts"]
    assert data["setup"]["bound"] == data["setup"]["threshold"] + data["setup"][
        "probes_per_outage"]


@pytest.mark.slow
def test_overhead(tmp_path: Path) -> None:
    data = run("overhead.py", tmp_path)
    names = {r["name"] for r in data["patterns"]}
    assert {"RateLimiter.acquire(tokens)", "RetryPolicy.call", "CircuitBreaker.call",
            "CostTracker.record", "FallbackChain.complete (1 provider)",
            "ResilientClient.complete (full stack)", "tenacity @retry", "pybreaker.call"} <= names
    assert all(r["us_per_call"] > 0 for r in data["patterns"])
    assert set(data["ratios"]) >= {"full_stack_vs_tenacity_plus_pybreaker", "retry_vs_tenacity",
                                   "breaker_vs_pybreaker"}


def test_streaming(tmp_path: Path) -> None:
    data = run("streaming.py", tmp_path)
    readers = {(r["api"], r["reader"]) for r in data["per_chunk"]}
    assert readers == {("openai", "ours"), ("openai", "openai SDK"), ("anthropic", "ours"),
                       ("anthropic", "anthropic SDK")}
    assert all(r["us_per_stream_long"] > r["us_per_stream_short"] > 0 for r in data["per_chunk"])
    paths = {r["path"] for r in data["first_token"]}
    assert {"openai SDK", "ours: OpenAIProvider.stream",
            "ours: ResilientClient.stream (full stack)"} <= paths
    assert set(data["ratios"]) >= {"openai_ours_vs_sdk_per_chunk",
                                   "full_stack_first_token_vs_openai_sdk"}


def test_simulation_speed(tmp_path: Path) -> None:
    data = run("simulation_speed.py", tmp_path)
    sim = data["simulation"]
    assert sim["requests"] > 0 and sim["succeeded"] + sim["failed"] == sim["requests"]
    assert sim["requests_per_real_s"] > 0 and sim["requests_per_cpu_s"] > 0
    assert data["notebooks"]["skipped"] == "--quick"


@pytest.mark.redis
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server (make test "
                    "installs it with apt-get)")
def test_redis_acquire(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "redis_acquire.py"), "--quick",
                           "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert data["benchmark"] == "redis_acquire" and data["quick"] is True
    assert {"redis", "sqlite", "in_process"} <= {r["store"] for r in data["rows"]}
    assert all(r["per_second"] > 0 and r["acquisitions"] > 0 for r in data["rows"])


def test_check_speed(tmp_path: Path) -> None:
    data = run("check_speed.py", tmp_path)
    assert [r["task"] for r in data["checks"]] == [1, 2]
    assert all(r["passed"] and r["median_s"] > 0 for r in data["checks"])


@pytest.mark.slow
def test_grading_speed(tmp_path: Path) -> None:
    data = run("grading_speed.py", tmp_path, "--class-size", "2")
    assert data["class"]["submissions"] == 2 and data["class"]["seconds"] > 0
    earned, worth = data["one_submission"]["score"].split("/")
    assert earned == worth and int(worth) > 0
    assert data["targets"]["correct submissions get full marks"]
    assert data["targets"]["stubs get 0"]


def test_readme_row_is_appended_when_asked(tmp_path: Path) -> None:
    readme = tmp_path / "BENCH.md"
    readme.write_text("# Benchmarks\n")
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, str(BENCH / "simulation_speed.py"), "--quick", "--results-dir",
             str(tmp_path), "--readme", str(readme)],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
    text = readme.read_text()
    history = text.split("<!-- history:simulation_speed start -->")[1].split(
        "<!-- history:simulation_speed end -->")[0]
    rows = [line for line in history.splitlines() if line.startswith("| ")]
    assert len(rows) == 3  # header + one row per run
    assert text.count("<!-- latest:simulation_speed start -->") == 1


@pytest.mark.slow
def test_run_all_quick_subset(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--only",
         "overhead,simulation_speed", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout[proc.stdout.rindex('{\n  "summary"'):])
    assert [r["name"] for r in summary["summary"]] == ["overhead", "simulation_speed"]
    assert all(r["ok"] for r in summary["summary"])
    assert (tmp_path / "overhead-quick.json").exists()


def test_run_all_rejects_unknown_benchmark() -> None:
    proc = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--only", "nope"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode != 0
    assert "nope" in proc.stderr
