"""Run every benchmark (``make bench``): each script in its own process, in order.

Each prints its JSON, writes ``benchmarks/results/<name>.json`` and appends its row to
``benchmarks/README.md``; this runner prints one summary JSON at the end (per benchmark: the
wall time it took and whether its targets were met). ``--quick`` runs tiny workloads (seconds,
README untouched). When ``benchmarks/dashboard_update.py`` exists (another helper's), it runs
last, with the results directory.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only outage,overhead] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPTS = ("rate_limit_utilization", "estimate_mismatch", "burst_default", "outage", "overhead",
           "simulation_speed", "check_speed", "redis_acquire", "streaming", "grading_speed")
BUDGET_S = 600.0
PER_SCRIPT_TIMEOUT_S = 900.0


def run_one(name: str, passthrough: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *passthrough],
                              capture_output=True, text=True, timeout=PER_SCRIPT_TIMEOUT_S,
                              cwd=HERE.parent)
    except subprocess.TimeoutExpired:
        return {"name": name, "ok": False, "seconds": round(time.perf_counter() - t0, 1),
                "error": f"timed out after {PER_SCRIPT_TIMEOUT_S:g} s"}
    seconds = round(time.perf_counter() - t0, 1)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        return {"name": name, "ok": False, "seconds": seconds,
                "error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"}
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        return {"name": name, "ok": False, "seconds": seconds, "error": f"bad JSON: {exc}"}
    print(proc.stdout, flush=True)
    return {"name": name, "ok": True, "seconds": seconds, "targets": result.get("targets", {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny workloads; README untouched")
    p.add_argument("--only", default="", help="comma-separated subset of " + ", ".join(SCRIPTS))
    p.add_argument("--repeats", type=int, default=None, help="passed to every script")
    p.add_argument("--results-dir", type=Path, default=None, help="passed to every script")
    p.add_argument("--no-readme", action="store_true", help="passed to every script")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCRIPTS)
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        p.error(f"--only names unknown benchmarks {unknown}; known: {', '.join(SCRIPTS)}")
    passthrough: list[str] = []
    if args.quick:
        passthrough.append("--quick")
    if args.repeats:
        passthrough += ["--repeats", str(args.repeats)]
    if args.results_dir:
        passthrough += ["--results-dir", str(args.results_dir)]
    if args.no_readme:
        passthrough.append("--no-readme")
    t0 = time.perf_counter()
    runs = []
    for name in names:
        print(f"== {name}", file=sys.stderr, flush=True)
        runs.append(run_one(name, passthrough))
    dashboard = HERE / "dashboard_update.py"
    extra: dict[str, Any] = {}
    if dashboard.exists() and not args.quick:
        cmd = [sys.executable, str(dashboard)]
        if args.results_dir:
            cmd += ["--results-dir", str(args.results_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent,
                              timeout=PER_SCRIPT_TIMEOUT_S)
        extra["dashboard_update"] = {"exit": proc.returncode,
                                     "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
    total = round(time.perf_counter() - t0, 1)
    summary = {"summary": runs, "total_seconds": total,
               "within_budget": total <= BUDGET_S, "budget_seconds": BUDGET_S, **extra}
    print(json.dumps(summary, indent=2), flush=True)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
