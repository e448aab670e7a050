"""Benchmark: what our stream reading costs per chunk, and what the full stack adds before the
first token, side by side with the official SDKs in the same run.

1. **Per chunk.** The same server-sent events (a long answer from the mock's own frame builder:
   OpenAI ``chat.completion.chunk`` events with a usage chunk and ``[DONE]``; Anthropic's full
   event sequence), handed over by an in-process transport one event per read, read to the end
   by: our provider (``OpenAIProvider.stream`` / ``AnthropicProvider.stream``: bounded body,
   SSE, decoder, deltas) and the official SDK (``client.chat.completions.create(stream=True)``
   iterated, ``client.messages.stream(...).text_stream``), each over its own HTTP library's
   mock transport. Per-chunk cost = (time for a long stream - time for a short one) /
   (difference in events): the per-request cost (building and sending the request) cancels.
2. **Time to first token.** Real microseconds from the call to the first text delta against a
   zero-latency in-process transport: raw httpx (the floor), the openai SDK, our provider, and
   ``ResilientClient.stream`` with the full stack (limiter, retry, breaker, cost tracker with a
   hard budget); "added by the stack" = client - provider.

Both are CPU costs (no waiting anywhere): medians of round-robin repeats, perf_counter and
process time. Target: our per-chunk cost at or below the openai SDK's.

    .venv/bin/python benchmarks/streaming.py [--quick] [--repeats 7]
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import common  # type: ignore[import-not-found]
import httpx

from llm_patterns.backoff import BackoffPolicy
from llm_patterns.circuit_breaker import CircuitBreaker
from llm_patterns.client import ResilientClient
from llm_patterns.cost import CostTracker
from llm_patterns.mock.replies import Reply
from llm_patterns.mock.stream import build_stream
from llm_patterns.mock.wire import Usage as WireUsage
from llm_patterns.providers import AnthropicProvider, OpenAIProvider
from llm_patterns.rate_limit import RateLimiter
from llm_patterns.retry import RetryPolicy

NAME = "streaming"
OA_MODEL, AN_MODEL = "gpt-4o-mini", "claude-haiku-4-5"
KEY = "sk-bench-0123456789abcdefghij"
WORDS = ("retry", "budget", "jitter", "breaker", "limit", "token", "stream", "delta")
SSE = {"content-type": "text/event-stream; charset=utf-8"}


def frames(api: str, words: int) -> list[bytes]:
    """The mock's own events for an answer of ``words`` words (about one event per word)."""
    text = " ".join(WORDS[i % len(WORDS)] for i in range(words))
    reply = Reply(text, (), "stop", words, 0)
    plan = build_stream(api, ident="bench", created=1_700_000_000,
                        model=OA_MODEL if api == "openai" else AN_MODEL, reply=reply,
                        usage=WireUsage(20, words, 0, 0, 0, 0), include_usage=True, gap=0.0)
    return list(plan.frames)


class _Body(httpx.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Any:
        return iter(self.chunks)


def ours(api: str, chunks: list[bytes]) -> Callable[[], int]:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, headers=SSE,
                                                             stream=_Body(chunks)))
    cls = OpenAIProvider if api == "openai" else AnthropicProvider
    provider = cls("bench", OA_MODEL if api == "openai" else AN_MODEL, api_key=KEY,
                   client=httpx.Client(transport=transport))

    def run() -> int:
        with provider.stream("hello", max_tokens=4096) as s:
            return sum(1 for _ in s)

    return run


def sdk(api: str, chunks: list[bytes]) -> Callable[[], int]:
    import httpx2

    class Body(httpx2.SyncByteStream):
        def __iter__(self) -> Any:
            return iter(chunks)

    transport = httpx2.MockTransport(lambda r: httpx2.Response(200, headers=SSE, stream=Body()))
    http = httpx2.Client(transport=transport)
    if api == "openai":
        import openai

        client = openai.OpenAI(api_key=KEY, base_url="http://bench/v1", http_client=http,
                               max_retries=0)

        def run() -> int:
            n = 0
            for chunk in client.chat.completions.create(
                    model=OA_MODEL, messages=[{"role": "user", "content": "hello"}],
                    max_tokens=4096, stream=True, stream_options={"include_usage": True}):
                if chunk.choices and chunk.choices[0].delta.content:
                    n += 1
            return n

        return run
    import anthropic

    an = anthropic.Anthropic(api_key=KEY, base_url="http://bench", http_client=http,
                             max_retries=0)

    def run_an() -> int:
        with an.messages.stream(model=AN_MODEL, max_tokens=4096,
                                messages=[{"role": "user", "content": "hello"}]) as st:
            return sum(1 for _ in st.text_stream)

    return run_an


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def first_token_cases() -> list[tuple[str, Callable[[], tuple[float, float]]]]:
    """(label, call) against a zero-latency in-process answer; each call returns the (wall,
    CPU) seconds from its start to the first text delta (closing the stream is not counted)."""
    import httpx2
    import openai

    chunks = frames("openai", 40)

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, stream=_Body(chunks))

    transport = httpx.MockTransport(respond)
    raw = httpx.Client(transport=transport, base_url="http://bench/v1")

    def raw_httpx() -> tuple[float, float]:
        w0, c0 = _clocks()
        with raw.stream("POST", "/chat/completions", json={"model": OA_MODEL}) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content":"' in line[:400]:
                    w1, c1 = _clocks()
                    break
        return w1 - w0, c1 - c0

    class Body2(httpx2.SyncByteStream):
        def __iter__(self) -> Any:
            return iter(chunks)

    oa = openai.OpenAI(api_key=KEY, base_url="http://bench/v1", max_retries=0,
                       http_client=httpx2.Client(transport=httpx2.MockTransport(
                           lambda r: httpx2.Response(200, headers=SSE, stream=Body2()))))

    def openai_sdk() -> tuple[float, float]:
        w0, c0 = _clocks()
        stream = oa.chat.completions.create(
            model=OA_MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=256,
            stream=True, stream_options={"include_usage": True})
        try:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    w1, c1 = _clocks()
                    break
        finally:
            stream.close()
        return w1 - w0, c1 - c0

    provider = OpenAIProvider("bench", OA_MODEL, api_key=KEY,
                              client=httpx.Client(transport=transport))

    def ours_provider() -> tuple[float, float]:
        w0, c0 = _clocks()
        with provider.stream("hello") as s:
            next(iter(s))
            w1, c1 = _clocks()
        return w1 - w0, c1 - c0

    client = ResilientClient(
        [OpenAIProvider("bench", OA_MODEL, api_key=KEY, client=httpx.Client(transport=transport))],
        limiters={"bench": RateLimiter(rpm=1e9, tpm=1e12, name="bench")},
        retry=RetryPolicy(max_attempts=5, backoff=BackoffPolicy(base_delay=0.5, max_delay=8)),
        breakers={"bench": CircuitBreaker("bench", failure_threshold=5, reset_timeout=60.0)},
        cost=CostTracker(budget=1e9, hard_limit=True))

    def ours_client() -> tuple[float, float]:
        w0, c0 = _clocks()
        with client.stream("hello") as s:
            next(iter(s))
            w1, c1 = _clocks()
        return w1 - w0, c1 - c0

    return [("raw httpx (floor)", raw_httpx), ("openai SDK", openai_sdk),
            ("ours: OpenAIProvider.stream", ours_provider),
            ("ours: ResilientClient.stream (full stack)", ours_client)]


def timed_first(fns: Sequence[Callable[[], tuple[float, float]]], loops: int,
                repeats: int) -> tuple[list[float], list[float]]:
    """Median seconds to the first token (wall, CPU) of each fn, round-robin repeats."""
    for fn in fns:
        for _ in range(max(3, loops // 4)):
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            gc.collect()
            w = c = 0.0
            for _ in range(loops):
                dw, dc = fn()
                w += dw
                c += dc
            wall[i].append(w / loops)
            cpu[i].append(c / loops)
    return [common.median(x) for x in wall], [common.median(x) for x in cpu]


def timed(fns: Sequence[Callable[[], Any]], loops: Sequence[int],
          repeats: int) -> tuple[list[float], list[float]]:
    """Median seconds per call (perf_counter, process time) of each fn, round-robin repeats."""
    for fn, n in zip(fns, loops, strict=True):  # warm-up: lazy imports, first-use caches
        for _ in range(max(3, n // 4)):
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, (fn, n) in enumerate(zip(fns, loops, strict=True)):
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(n):
                fn()
            wall[i].append((time.perf_counter() - t0) / n)
            cpu[i].append((time.process_time() - c0) / n)
    return [common.median(w) for w in wall], [common.median(c) for c in cpu]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = common.parser((__doc__ or "").splitlines()[0]).parse_args(argv)
    common.quiet_logs()
    repeats = args.repeats or (2 if args.quick else 7)
    long_words, short_words = (200, 20) if args.quick else (2000, 100)
    scale = 0.05 if args.quick else 1.0

    rows = []
    for api in ("openai", "anthropic"):
        long_f, short_f = frames(api, long_words), frames(api, short_words)
        events = len(long_f) - len(short_f)
        fns = [ours(api, long_f), ours(api, short_f), sdk(api, long_f), sdk(api, short_f)]
        assert fns[0]() == fns[2]() == long_words  # both read every delta
        loops = [max(1, int(n * scale)) for n in (20, 200, 20, 200)]
        wall, cpu = timed(fns, loops, repeats)
        for who, (lw, sw, lc, sc) in (("ours", (wall[0], wall[1], cpu[0], cpu[1])),
                                      ("sdk", (wall[2], wall[3], cpu[2], cpu[3]))):
            rows.append({"api": api, "reader": who if who == "ours" else f"{api} SDK",
                         "us_per_chunk": (lw - sw) / events * 1e6,
                         "cpu_us_per_chunk": (lc - sc) / events * 1e6,
                         "us_per_stream_long": lw * 1e6, "chunks_long": len(long_f),
                         "us_per_stream_short": sw * 1e6, "chunks_short": len(short_f)})
        print(f"  {api}: ours {rows[-2]['us_per_chunk']:.2f} us/chunk, SDK "
              f"{rows[-1]['us_per_chunk']:.2f} us/chunk", file=sys.stderr, flush=True)

    cases = first_token_cases()
    wall, cpu = timed_first([fn for _, fn in cases], max(2, int(300 * scale)), repeats)
    ttft = [{"path": label, "us_to_first_token": w * 1e6, "cpu_us_to_first_token": c * 1e6}
            for (label, _), w, c in zip(cases, wall, cpu, strict=True)]
    by = {r["path"]: r["us_to_first_token"] for r in ttft}
    added = by["ours: ResilientClient.stream (full stack)"] - by["ours: OpenAIProvider.stream"]

    per = {(r["api"], r["reader"].split()[0] if r["reader"] == "ours" else "sdk"):
           r["us_per_chunk"] for r in rows}
    ratios = {f"{api}_ours_vs_sdk_per_chunk": per[(api, "ours")] / per[(api, "sdk")]
              for api in ("openai", "anthropic")}
    ratios["full_stack_first_token_vs_openai_sdk"] = (
        by["ours: ResilientClient.stream (full stack)"] / by["openai SDK"])
    targets = {"per chunk <= openai SDK": ratios["openai_ours_vs_sdk_per_chunk"] <= 1.0,
               "per chunk <= anthropic SDK": ratios["anthropic_ours_vs_sdk_per_chunk"] <= 1.0,
               "full stack first token <= openai SDK first token":
                   ratios["full_stack_first_token_vs_openai_sdk"] <= 1.0}
    result = {
        "setup": {"repeats": repeats, "words_long": long_words, "words_short": short_words,
                  "transport": "in-process, one event per read, zero latency"},
        "per_chunk": [{k: common.rnd(v, 3) for k, v in r.items()} for r in rows],
        "first_token": [{k: common.rnd(v, 2) for k, v in r.items()} for r in ttft],
        "stack_added_us_to_first_token": round(added, 2),
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "targets": targets,
    }
    detail = (
        f"Per chunk: the mock's own events for a {long_words}-word and a {short_words}-word "
        f"answer, one event per read, in-process transport; (long - short) / extra events, "
        f"median of {repeats} round-robin repeats.\n\n"
        + common.markdown_table(
            ["API", "reader", "us / chunk", "CPU us / chunk", "us / long stream"],
            [[r["api"], r["reader"], r["us_per_chunk"], r["cpu_us_per_chunk"],
              r["us_per_stream_long"]] for r in rows])
        + "\n\nTime to first token, zero-latency in-process answer (real microseconds):\n\n"
        + common.markdown_table(["path", "us to first token", "CPU us"],
                                [[r["path"], r["us_to_first_token"],
                                  r["cpu_us_to_first_token"]] for r in ttft])
        + f"\n\nAdded by the full stack before the first token: {added:.1f} us.\n\nTargets: "
        + "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    common.finish(
        args, NAME, result,
        history_headers=["openai us/chunk (ours / SDK)", "anthropic us/chunk (ours / SDK)",
                         "first token us (client / provider / SDK)", "stack added us"],
        history_row=[f"{per[('openai', 'ours')]:.2f} / {per[('openai', 'sdk')]:.2f}",
                     f"{per[('anthropic', 'ours')]:.2f} / {per[('anthropic', 'sdk')]:.2f}",
                     f"{by['ours: ResilientClient.stream (full stack)']:.0f} / "
                     f"{by['ours: OpenAIProvider.stream']:.0f} / {by['openai SDK']:.0f}",
                     f"{added:.1f}"],
        detail=detail)
    return result


if __name__ == "__main__":
    main()
