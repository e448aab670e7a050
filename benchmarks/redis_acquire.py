"""Benchmark: acquisitions per second from N processes on one shared limiter (Redis, SQLite)
against the in-process ``RateLimiter`` (each process its own: no sharing, the lower bound).

Each process runs ``try_acquire(tokens)`` of an RPM+TPM limiter whose limits are far above the
load (nothing is ever refused or waited for: the cost of the decision alone) for ``--seconds``;
the figure is the sum over processes of acquisitions / second, plus the per-call latency (median
and p99, microseconds) seen by one process. Redis: ``SharedRateLimiter`` on a ``RedisStore``
(one Lua script per call, one round trip on loopback) against a ``redis-server`` this script
starts on 127.0.0.1 (or ``--url``). SQLite: the same limiter on a ``SQLiteStateStore`` file
(one ``BEGIN IMMEDIATE`` transaction per call). Processes are forked and start together.

    .venv/bin/python benchmarks/redis_acquire.py [--quick] [--procs 1,2,4] [--seconds 2]
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # type: ignore[import-not-found]

from llm_patterns.rate_limit import RateLimiter
from llm_patterns.state import SharedRateLimiter, SQLiteStateStore

NAME = "redis_acquire"
HUGE = 1e12  # limits nobody reaches: no waiting, only the bookkeeping
TOKENS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: str) -> tuple[subprocess.Popen, str]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH (apt-get install redis-server), "
                         "or pass --url redis://host:port/0")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start on port {port}") from None
            time.sleep(0.02)


def _limiter(kind: str, target: str, key: str) -> Any:
    if kind == "in_process":
        return RateLimiter(rpm=HUGE, tpm=HUGE)
    if kind == "redis":
        from llm_patterns.state.redis import RedisStore

        store: Any = RedisStore(target, prefix="bench")
    else:
        store = SQLiteStateStore(target)
    return SharedRateLimiter(rpm=HUGE, tpm=HUGE, store=store, name=key)


def _worker(kind: str, target: str, key: str, seconds: float, barrier, out,
            measure_latency: bool) -> None:
    lim = _limiter(kind, target, key)
    for _ in range(50):  # warm-up: connection, script load, page cache
        lim.try_acquire(TOKENS)
    barrier.wait()
    count, lat = 0, []
    perf = time.perf_counter
    end = perf() + seconds
    if measure_latency:
        while True:
            t0 = perf()
            if t0 >= end:
                break
            lim.try_acquire(TOKENS)
            lat.append(perf() - t0)
            count += 1
    else:
        while perf() < end:
            lim.try_acquire(TOKENS)
            count += 1
    out.put((count, lat))


def run(kind: str, target: str, n: int, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    barrier, q = ctx.Barrier(n), ctx.Queue()
    key = f"{kind}-{n}-{time.time_ns()}"
    procs = [ctx.Process(target=_worker, args=(kind, target, key, seconds, barrier, q, i == 0))
             for i in range(n)]
    for p in procs:
        p.start()
    results = [q.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    total = sum(c for c, _ in results)
    lat = sorted(x for _, ls in results for x in ls)
    return {
        "store": kind, "processes": n, "acquisitions": total,
        "per_second": round(total / seconds),
        "per_second_per_process": round(total / seconds / n),
        "latency_us_p50": common.rnd(common.percentile(lat, 50) * 1e6, 1) if lat else None,
        "latency_us_p99": common.rnd(common.percentile(lat, 99) * 1e6, 1) if lat else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--procs", default="1,2,4", help="process counts, comma-separated")
    p.add_argument("--seconds", type=float, default=None, help="per run (default 2, quick 0.3)")
    p.add_argument("--url", default=None, help="an existing Redis (default: start one)")
    args = p.parse_args(argv)
    common.quiet_logs()
    counts = [int(x) for x in args.procs.split(",") if x.strip()]
    seconds = args.seconds or (0.3 if args.quick else 2.0)
    repeats = args.repeats or 1
    tmp = tempfile.mkdtemp(prefix="llm-patterns-bench-")
    server = None
    url = args.url
    if url is None:
        server, url = start_redis(tmp)
    try:
        import redis

        info = redis.Redis.from_url(url).info("server")
        rows = []
        for n in counts:
            for kind, target in (("in_process", ""), ("redis", url),
                                 ("sqlite", str(Path(tmp) / "state.db"))):
                runs = [run(kind, target, n, seconds) for _ in range(repeats)]
                runs.sort(key=lambda r: r["per_second"])
                rows.append(runs[len(runs) // 2])
                print(f"{kind:>10} x{n}: {rows[-1]['per_second']:>10,} acquisitions/s",
                      file=sys.stderr, flush=True)
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    def get(kind: str, n: int) -> dict[str, Any]:
        return next(r for r in rows if r["store"] == kind and r["processes"] == n)

    result = {
        "seconds_per_run": seconds, "repeats": repeats, "tokens_per_acquire": TOKENS,
        "redis_server": info.get("redis_version"), "rows": rows,
        "redis_vs_in_process": {str(n): common.rnd(get("redis", n)["per_second"] / max(
            1, get("in_process", n)["per_second"]), 4) for n in counts},
    }
    detail = common.markdown_table(
        ["store", "processes", "acquisitions/s", "per process/s", "p50 µs", "p99 µs"],
        [[r["store"], r["processes"], f"{r['per_second']:,}", f"{r['per_second_per_process']:,}",
          r["latency_us_p50"], r["latency_us_p99"]] for r in rows])
    top = max(counts)
    common.finish(args, NAME, result,
                  history_headers=[f"redis x{n} /s" for n in counts] + [f"in-process x{top} /s",
                                                                          f"sqlite x{top} /s"],
                  history_row=[f"{get('redis', n)['per_second']:,}" for n in counts] + [
                      f"{get('in_process', top)['per_second']:,}",
                      f"{get('sqlite', top)['per_second']:,}"],
                  detail=detail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
