"""Benchmark 5: simulated requests per real second on the VirtualClock, and notebook wall time.

(a) ``llm_patterns.course.simulation.Simulation`` (two mock providers over httpx.MockTransport
behind the full ResilientClient: limiter, retry, breaker, fallback, cost) with a large scenario on a
VirtualClock, one process, one core: simulated requests / real second. Target >= 20,000/s.
When below, the run is profiled (cProfile, a smaller scenario) and the top hotspots go into
the JSON. (b) The wall time to execute every ``solutions/*.ipynb`` with nbclient (skipped with
a note when there are none).

    .venv/bin/python benchmarks/simulation_speed.py [--quick] [--no-notebooks]
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common  # type: ignore[import-not-found]

from llm_patterns.clock import VirtualClock
from llm_patterns.course.simulation import Scenario, Simulation

NAME = "simulation_speed"
TARGET = 20_000.0
FULL = dict(duration=300.0, request_rate=20.0)  # ~6,000 requests
QUICK = dict(duration=20.0, request_rate=5.0)
PROFILE = dict(duration=50.0, request_rate=20.0)  # ~1,000 requests under the profiler
NOTEBOOK_TIMEOUT = 300  # seconds per cell


def scenario(duration: float, request_rate: float) -> Scenario:
    """Steady traffic near the providers' limits, with the default outage of the primary."""
    return Scenario(duration=duration, request_rate=request_rate, primary_rpm=2400,
                    primary_tpm=1_000_000, secondary_rpm=2400, secondary_tpm=1_000_000,
                    budget=1000.0, outage=(duration * 0.3, duration * 0.5), seed=0)


def simulate(duration: float, request_rate: float) -> dict[str, Any]:
    sim = Simulation(scenario(duration, request_rate), clock=VirtualClock(), keep_log=False)
    t0, c0 = time.perf_counter(), time.process_time()
    res = sim.run_sync()
    real, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"requests": res.requests, "succeeded": res.succeeded, "failed": res.failed,
            "fallbacks": res.fallbacks, "virtual_s": sim.clock.now(), "real_s": real,
            "cpu_s": cpu,
            "requests_per_real_s": res.requests / real if real > 0 else None,
            # robust to other processes competing for the CPU (a shared machine)
            "requests_per_cpu_s": res.requests / cpu if cpu > 0 else None,
            "speedup_vs_real_time": sim.clock.now() / real if real > 0 else None}


def profile(duration: float, request_rate: float, top: int = 15) -> dict[str, Any]:
    """cProfile of a smaller run: the top functions by own time and by cumulative time."""
    sim = Simulation(scenario(duration, request_rate), clock=VirtualClock(), keep_log=False)
    prof = cProfile.Profile()
    prof.enable()
    res = sim.run_sync()
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]

    def rows(key: str) -> list[dict[str, Any]]:
        items = []
        for (path, line, func), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
            items.append({"function": f"{_short(path)}:{line}({func})", "calls": nc,
                          "own_s": round(tt, 4), "cumulative_s": round(ct, 4),
                          "own_share": round(tt / total, 4) if total else None,
                          "per_request_us": round((tt if key == "own" else ct)
                                                  / max(1, res.requests) * 1e6, 2)})
        items.sort(key=lambda r: r["own_s" if key == "own" else "cumulative_s"], reverse=True)
        return items[:top]

    areas: dict[str, float] = {}
    for (path, _, func), (_, _, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        areas[_area(path, func)] = areas.get(_area(path, func), 0.0) + tt
    by_area = [{"area": k, "own_s": round(v, 4), "share": round(v / total, 4) if total else None,
                "per_request_us": round(v / max(1, res.requests) * 1e6, 1)}
               for k, v in sorted(areas.items(), key=lambda kv: -kv[1])]
    return {"requests": res.requests, "profiled_s": round(total, 3),
            "note": "times under cProfile (about 2x slower than unprofiled)",
            "by_area": by_area, "top_own_time": rows("own"), "top_cumulative": rows("cum")}


def _area(path: str, func: str) -> str:
    """Group a profiled function: an llm_patterns module, a third-party package, or stdlib."""
    p = path.replace("\\", "/")
    if "/llm_patterns/" in p:
        return "llm_patterns/" + p.split("/llm_patterns/", 1)[1]
    if "site-packages/" in p:
        return p.split("site-packages/", 1)[1].split("/", 1)[0]
    if p.startswith("~"):
        return "builtins"
    name = p.rsplit("/", 1)[-1]
    if "/asyncio/" in p:
        return "asyncio"
    if "/json/" in p:
        return "json"
    return "stdlib " + name


def _short(path: str) -> str:
    p = path.replace("\\", "/")
    for marker in ("site-packages/", "/llm_patterns/", "/lib/python3"):
        if marker in p:
            return p.split(marker, 1)[1] if marker != "/llm_patterns/" else "llm_patterns/" + \
                p.split(marker, 1)[1]
    return p


def run_notebooks(folder: Path) -> dict[str, Any]:
    """Execute each ``*.ipynb`` in ``folder`` (in memory; nothing is written back)."""
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        return {"skipped": f"no notebooks in {folder}", "notebooks": []}
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as exc:
        return {"skipped": f"nbclient unavailable: {exc}", "notebooks": []}
    out = []
    t_all = time.perf_counter()
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(nb, timeout=NOTEBOOK_TIMEOUT, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        t0 = time.perf_counter()
        error = None
        try:
            client.execute()
        except Exception as exc:
            text = str(exc).strip()
            error = f"{type(exc).__name__}: {text.splitlines()[-1][:200] if text else ''}"
        out.append({"notebook": path.name, "wall_s": round(time.perf_counter() - t0, 2),
                    "cells": len(nb.cells), "error": error})
        print(f"  {path.name}: {out[-1]['wall_s']:.1f} s{' (' + error + ')' if error else ''}",
              file=sys.stderr, flush=True)
    return {"folder": str(folder), "notebooks": out,
            "total_wall_s": round(time.perf_counter() - t_all, 2),
            "failed": sum(1 for r in out if r["error"])}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = common.parser((__doc__ or "").splitlines()[0])
    p.add_argument("--no-notebooks", action="store_true", help="skip the notebook timing")
    p.add_argument("--notebooks-dir", type=Path, default=common.ROOT / "solutions")
    args = p.parse_args(argv)
    common.quiet_logs()
    setup = QUICK if args.quick else FULL
    repeats = args.repeats or 1
    runs = sorted((simulate(**setup) for _ in range(repeats)),
                  key=lambda r: r["requests_per_real_s"] or 0)
    sim = runs[len(runs) // 2]
    print(f"  simulation: {sim['requests']} requests in {sim['real_s']:.2f} s = "
          f"{sim['requests_per_real_s']:,.0f}/s", file=sys.stderr, flush=True)
    prof = None
    if not args.quick and (sim["requests_per_real_s"] or 0) < TARGET:
        prof = profile(**PROFILE)
    if args.quick or args.no_notebooks:
        notebooks = {"skipped": "--quick" if args.quick else "--no-notebooks", "notebooks": []}
    else:
        notebooks = run_notebooks(args.notebooks_dir)
    targets = {f">= {TARGET:,.0f} simulated requests / real s":
               bool(sim["requests_per_real_s"] and sim["requests_per_real_s"] >= TARGET)}
    result = {"setup": {**setup, "repeats": repeats, "clock": "VirtualClock",
                        "scenario": "two mock providers, full ResilientClient, outage 30-50%"},
              "simulation": {k: common.rnd(v, 2) for k, v in sim.items()},
              "target_requests_per_real_s": TARGET,
              "ratio_vs_target": common.rnd((sim["requests_per_real_s"] or 0) / TARGET),
              "profile": prof, "notebooks": notebooks, "targets": targets}
    nb_rows = [[r["notebook"], r["cells"], r["wall_s"], r["error"] or "ok"]
               for r in notebooks.get("notebooks", [])]
    detail = (f"Simulation: {sim['requests']:,} requests over {sim['virtual_s']:,.0f} virtual s "
              f"in {sim['real_s']:.2f} real s = **{sim['requests_per_real_s']:,.0f} requests / "
              f"real s** (target {TARGET:,.0f}; {sim['speedup_vs_real_time']:,.0f}x real time).")
    detail += (f" CPU time {sim['cpu_s']:.2f} s = {sim['requests_per_cpu_s']:,.0f} requests / "
               "CPU s (the figure that does not depend on other load on the machine).")
    if prof:
        detail += "\n\nWhere the time goes (cProfile own time by module):\n\n" + \
            common.markdown_table(["module", "own s", "share", "us / request (profiled)"],
                                  [[a["area"], a["own_s"], a["share"], a["per_request_us"]]
                                   for a in prof["by_area"][:12]])
    if nb_rows:
        detail += (f"\n\nSolution notebooks ({notebooks['total_wall_s']:.1f} s in all):\n\n"
                   + common.markdown_table(["notebook", "cells", "wall s", "result"], nb_rows))
    else:
        detail += f"\n\nNotebooks: skipped ({notebooks.get('skipped')})."
    detail += "\n\nTargets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}"
                                          for k, v in targets.items())
    common.finish(
        args, NAME, result,
        history_headers=["simulated req / real s", "req / CPU s", "vs target 20,000",
                         "requests", "notebooks wall s", "notebooks failed"],
        history_row=[sim["requests_per_real_s"], sim["requests_per_cpu_s"],
                     result["ratio_vs_target"], sim["requests"],
                     notebooks.get("total_wall_s"), notebooks.get("failed")],
        detail=detail)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
