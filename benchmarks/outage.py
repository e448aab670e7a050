"""Benchmark 3: what each client sends into a provider outage, and how it comes back.

200 requests evenly over 10 s (one every 50 ms, each on its own, whatever happened to the
others); every request arriving in [2 s, 6 s) gets 503; 50 ms latency, no rate limits; real time.
Counted by the mock: attempts that arrived during the outage, and the peak number of attempts in
any 100 ms window after recovery (the steady load is 2 per 100 ms). Every client may retry 10
times. Ours: ResilientClient with CircuitBreaker(failure_threshold=5, reset_timeout=1 s) and
RetryPolicy (full jitter, base 0.5 s) in four set-ups: retrying CircuitOpenError with plain
full-jitter backoff (callers wait the outage out, like the peers) with a RateLimiter
(1,800 RPM, 0.1 s burst: 1.5x the steady load) pacing every attempt (the headline row) and
without it; as
configured by default (an open breaker fails the call at once, for a fallback chain to move
on); retrying CircuitOpenError after its retry_after (the breaker's remaining cooldown).
Target: attempts into the outage <= threshold + one probe per cooldown (5 + 4 = 9); no retry
spike after recovery.

    .venv/bin/python benchmarks/outage.py [--quick]
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import clients as C  # type: ignore[import-not-found]
import common  # type: ignore[import-not-found]
from harness import public, run_paced  # type: ignore[import-not-found]

from llm_patterns.clock import SystemClock
from llm_patterns.mock import MockLLMServer

NAME = "outage"
OURS_PACED = "ours: breaker + full-jitter backoff + RateLimiter pacing, retries CircuitOpenError"
OURS_JITTER = "ours: breaker + full-jitter backoff, retries CircuitOpenError"
OURS_FAST = "ours: breaker + backoff, fails fast (default config)"
OURS_HONOUR = "ours: breaker + backoff, retries CircuitOpenError after its retry_after"
CLIENTS: list[tuple[str, C.Factory]] = [
    (OURS_PACED, C.ours_breaker_paced),
    (OURS_JITTER, C.ours_breaker_jitter),
    (OURS_FAST, C.ours_breaker_fail_fast),
    (OURS_HONOUR, C.ours_breaker_waits),
    ("tenacity wait_random_exponential", C.tenacity_backoff),
    ("openai SDK (max_retries=10)", C.openai_sdk),
]
FULL = dict(n=200, duration=10.0, outage=(2.0, 6.0), latency=0.05, threshold=5, cooldown=1.0,
            window=0.1, pace_rpm=1800, pace_burst=0.1)
QUICK = dict(n=20, duration=1.0, outage=(0.2, 0.6), latency=0.005, threshold=3, cooldown=0.2,
             window=0.05, pace_rpm=1800, pace_burst=0.1)


def peak(times: Sequence[float], since: float, window: float) -> int:
    """Most arrivals in any window of ``window`` seconds starting at or after ``since``."""
    ts = sorted(t for t in times if t >= since)
    best = 0
    for i, t in enumerate(ts):
        best = max(best, bisect_left(ts, t + window) - i)
    return best


def measure(label: str, factory: C.Factory, setup: dict[str, Any],
            reqs: Sequence[common.Request]) -> dict[str, Any]:
    clock = SystemClock()
    server = MockLLMServer(latency=setup["latency"], seed=0, clock=clock)
    a, b = setup["outage"]
    cfg = C.Config(rpm=setup["pace_rpm"], burst_seconds=setup["pace_burst"],
                   failure_threshold=setup["threshold"], reset_timeout=setup["cooldown"], seed=1)
    row = run_paced(factory, server, clock, cfg, reqs, setup["duration"] / setup["n"],
                    on_start=lambda t0: server.outage(t0 + a, t0 + b, status=503))
    times = [rec["time"] - row["start"] for rec in row["log"]]
    row["attempts_into_outage"] = sum(1 for t in times if a <= t < b)
    row["peak_per_window_after_recovery"] = peak(times, b, setup["window"])
    row["steady_per_window"] = setup["window"] * setup["n"] / setup["duration"]
    row["http_503"] = row["by_status"].get(503, 0)
    return {"client": label, **row}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = common.parser((__doc__ or "").splitlines()[0]).parse_args(argv)
    common.quiet_logs()
    setup = QUICK if args.quick else FULL
    reqs = common.workload(setup["n"], 0)
    a, b = setup["outage"]
    probes = math.ceil((b - a) / setup["cooldown"])
    bound = setup["threshold"] + probes
    rows = []
    for label, factory in CLIENTS:
        row = measure(label, factory, setup, reqs)
        rows.append(row)
        print(f"  {label}: {row['attempts_into_outage']} into the outage, peak "
              f"{row['peak_per_window_after_recovery']}, {row['failed']} failed",
              file=sys.stderr, flush=True)
    ours = rows[0]
    peers = [r for r in rows if not r["client"].startswith("ours")]
    fewest_peer = min(peers, key=lambda r: r["attempts_into_outage"])
    spike_limit = 2 * max(ours["steady_per_window"], 1) + 1
    targets = {
        f"attempts into the outage <= threshold + probes ({bound})":
            all(r["attempts_into_outage"] <= bound for r in rows if r["client"].startswith("ours")),
        f"no retry spike after recovery (peak <= {spike_limit:g} per "
        f"{setup['window'] * 1000:g} ms, steady load {ours['steady_per_window']:g}; headline "
        "row)": ours["peak_per_window_after_recovery"] <= spike_limit,
    }
    result = {
        "setup": {**setup, "bound": bound, "probes_per_outage": probes},
        "clients": [{**public(r), "attempts_into_outage": r["attempts_into_outage"],
                     "peak_per_window_after_recovery": r["peak_per_window_after_recovery"]}
                    for r in rows],
        "ratio_attempts_into_outage_vs_fewest_peer": common.rnd(
            ours["attempts_into_outage"] / fewest_peer["attempts_into_outage"]
            if fewest_peer["attempts_into_outage"] else None),
        "targets": targets,
    }
    table = common.markdown_table(
        ["client", "attempts into outage", f"peak / {setup['window'] * 1000:g} ms after",
         "attempts", "503s", "failed", "p50 s", "p99 s", "wall s"],
        [[r["client"], r["attempts_into_outage"], r["peak_per_window_after_recovery"],
          r["attempts"], r["http_503"], r["failed"], r["p50_s"], r["p99_s"], r["wall_s"]]
         for r in rows])
    detail = (f"{setup['n']} requests evenly over {setup['duration']:g} s, 503 during "
              f"[{a:g} s, {b:g} s), latency {setup['latency'] * 1000:g} ms; breaker threshold "
              f"{setup['threshold']}, cooldown {setup['cooldown']:g} s (bound {bound}).\n\n"
              f"{table}\n\nTargets: "
              + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    common.finish(
        args, NAME, result,
        history_headers=["ours into outage (paced / jitter / fail fast / retry_after)", "bound",
                         "ours peak after (paced / jitter / fail fast / retry_after)",
                         "fewest peer", "peer into outage", "peer peak after",
                         "ours / peer attempts"],
        history_row=[" / ".join(str(r["attempts_into_outage"]) for r in rows[:4]), bound,
                     " / ".join(str(r["peak_per_window_after_recovery"]) for r in rows[:4]),
                     fewest_peer["client"],
                     fewest_peer["attempts_into_outage"],
                     fewest_peer["peak_per_window_after_recovery"],
                     result["ratio_attempts_into_outage_vs_fewest_peer"]],
        detail=detail)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
