"""Benchmark 1: how much of a provider's RPM/TPM limit each client turns into answers.

The setup of ``shared/research/peer_benchmark.md``: N=400 seeded requests of mixed sizes,
32 concurrent workers, a mock OpenAI-compatible provider enforcing RPM 2,400 and TPM 2,000,000
with a 1 s burst window (buckets of 40 requests / 33,333 tokens), 429 + retry-after(-ms) +
x-ratelimit headers, 50 ms latency, in REAL time (SystemClock). Utilization = the theoretical
minimum wall time (the server's buckets cannot admit the workload faster) / the measured wall.
Ours also runs on a VirtualClock (exact and deterministic: no scheduler noise).

    .venv/bin/python benchmarks/rate_limit_utilization.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import clients as C  # type: ignore[import-not-found]
import common  # type: ignore[import-not-found]
from harness import public, run_saturating  # type: ignore[import-not-found]

from llm_patterns.clock import SystemClock, VirtualClock
from llm_patterns.mock import MockLLMServer

NAME = "rate_limit_utilization"
OURS = "ours: ResilientClient (RateLimiter burst 1 s + RetryPolicy)"
CLIENTS: list[tuple[str, C.Factory]] = [
    (OURS, C.ours_client),
    ("tenacity wait_random_exponential", C.tenacity_backoff),
    ("tenacity + Retry-After", C.tenacity_retry_after),
    ("openai SDK (max_retries=10)", C.openai_sdk),
    ("aiolimiter (RPM+TPM) + tenacity", C.aiolimiter_tenacity),
    ("pyrate-limiter (RPM+TPM) + tenacity", C.pyrate_tenacity),
]
FULL = dict(n=400, concurrency=32, rpm=2400, tpm=2_000_000, burst=1.0, latency=0.05, seed=0)
QUICK = dict(n=16, concurrency=8, rpm=2400, tpm=4_800_000, burst=0.25, latency=0.005, seed=0)


def measure(factory: C.Factory, setup: dict[str, Any], *, multiplier: float, virtual: bool,
            repeats: int, reqs: Sequence[common.Request]) -> dict[str, Any]:
    """Run one client ``repeats`` times on fresh mocks; the median run by wall time."""
    runs = []
    for _ in range(repeats):
        clock = VirtualClock() if virtual else SystemClock()
        server = MockLLMServer(rpm=setup["rpm"], tpm=setup["tpm"],
                               burst_seconds=setup["burst"], latency=setup["latency"],
                               seed=setup["seed"], clock=clock, tpm_multiplier=multiplier)
        # In real time a request our limiter grants reaches the server's bucket a little later
        # (event-loop and transport delay) and the x-ratelimit headers we re-sync from are one
        # latency old, so our bucket can run ahead of the server's: hold back one server latency
        # of refill (headroom). The VirtualClock run has no such delay: none there.
        cfg = C.Config(rpm=setup["rpm"], tpm=setup["tpm"], burst_seconds=setup["burst"],
                       seed=setup["seed"] + 1, headroom=0.0 if virtual else setup["latency"])
        runs.append(run_saturating(factory, server, clock, cfg, reqs, setup["concurrency"]))
    runs.sort(key=lambda r: r["wall_s"])
    row = runs[len(runs) // 2]
    if repeats > 1:
        row["walls_s"] = [round(r["wall_s"], 3) for r in runs]
    return row


def run(argv: Sequence[str] | None, *, name: str = NAME, multiplier: float = 1.0,
        clients: Sequence[tuple[str, C.Factory]] = CLIENTS, ours: str = OURS,
        target_util: float = 0.99, target_429_share: float = 0.0,
        target_429_max: int | None = None,
        description: str = __doc__ or "") -> dict[str, Any]:
    args = common.parser(description.splitlines()[0]).parse_args(argv)
    common.quiet_logs()
    setup = QUICK if args.quick else FULL
    repeats = args.repeats or 1
    reqs = common.workload(setup["n"], setup["seed"])
    t_min = common.theoretical_minimum(reqs, setup["rpm"], setup["tpm"], setup["burst"],
                                       setup["latency"], multiplier)
    rows = []
    for label, factory in clients:
        row = measure(factory, setup, multiplier=multiplier, virtual=False, repeats=repeats,
                      reqs=reqs)
        rows.append({"client": label, "clock": "real", **row})
        print(f"  {label}: {row['wall_s']:.2f} s, {row['http_429']} x 429, "
              f"{row['failed']} failed", file=sys.stderr, flush=True)
    ours_factory = dict(clients)[ours]
    vrow = measure(ours_factory, setup, multiplier=multiplier, virtual=True, repeats=1, reqs=reqs)
    rows.append({"client": ours + " [VirtualClock]", "clock": "virtual", **vrow})
    for r in rows:
        # a run that dropped requests did not deliver the workload: no utilization figure
        r["utilization"] = (t_min / r["wall_s"]) if r["failed"] == 0 and r["wall_s"] > 0 else None
        r["share_429"] = r["http_429"] / r["attempts"] if r["attempts"] else 0.0
    real_ours = rows[0]
    peers = [r for r in rows if not r["client"].startswith("ours") and r["clock"] == "real"]
    best_peer = common.best(peers, "utilization")
    ratio = (real_ours["utilization"] / best_peer["utilization"]
             if best_peer and real_ours["utilization"] else None)
    targets = {
        f"utilization >= {target_util}": bool(real_ours["utilization"]
                                              and real_ours["utilization"] >= target_util),
        **({f"at most {target_429_max} 429": real_ours["http_429"] <= target_429_max}
           if target_429_max is not None else
           {(f"429 share <= {target_429_share:.0%}" if target_429_share else "zero 429s"):
            real_ours["share_429"] <= target_429_share}),
        "at or above the best peer (within 0.5% run-to-run noise)": bool(
            ratio is not None and ratio >= 0.995),
        "VirtualClock run meets the utilization target": bool(
            rows[-1]["utilization"] and rows[-1]["utilization"] >= target_util),
    }
    result = {
        "setup": {**setup, "tpm_multiplier": multiplier, "repeats": repeats,
                  "workload_tokens": sum(q.tokens for q in reqs),
                  "theoretical_min_s": round(t_min, 3)},
        "clients": [public(r) for r in rows],
        "ours": ours,
        "best_peer": best_peer["client"] if best_peer else None,
        "ratio_vs_best_peer": common.rnd(ratio),
        "targets": targets,
    }
    table = common.markdown_table(
        ["client", "clock", "wall s", "utilization", "429s", "attempts", "failed", "p50 s",
         "p99 s"],
        [[r["client"], r["clock"], r["wall_s"], r["utilization"], r["http_429"], r["attempts"],
          r["failed"], r["p50_s"], r["p99_s"]] for r in rows])
    detail = (f"N={setup['n']}, concurrency {setup['concurrency']}, RPM {setup['rpm']:,}, "
              f"TPM {setup['tpm']:,}, burst {setup['burst']:g} s, latency "
              f"{setup['latency'] * 1000:g} ms, server token count x{multiplier:g}; workload "
              f"{result['setup']['workload_tokens']:,} estimated tokens; theoretical minimum "
              f"{t_min:.3f} s; median of {repeats} run(s) per client. Our RateLimiter "
              f"holds back headroom={setup['latency']:g} s (one latency) in the real-time "
              f"rows, none on the VirtualClock.\n\n{table}\n\n"
              f"Targets: " + "; ".join(f"{k}: {'met' if v else 'MISSED'}"
                                       for k, v in targets.items()))
    common.finish(
        args, name, result,
        history_headers=["ours util", "ours 429s", "ours wall s", "ours util (virtual)",
                         "best peer", "best peer util", "ours / best peer"],
        history_row=[real_ours["utilization"], real_ours["http_429"], real_ours["wall_s"],
                     rows[-1]["utilization"], best_peer["client"] if best_peer else None,
                     best_peer["utilization"] if best_peer else None, ratio],
        detail=detail)
    return result


if __name__ == "__main__":
    run(sys.argv[1:])
