"""``python -m llm_patterns serve-mock``: the mock LLM API on 127.0.0.1 for real clients.

Point the official SDKs (or curl) at it: ``openai.OpenAI(base_url="http://127.0.0.1:N/v1",
api_key="anything")`` or ``anthropic.Anthropic(base_url="http://127.0.0.1:N", ...)`` with
``--api anthropic``. Both endpoints always answer; streams too. Outage times are seconds after
the server starts. Stalled clients are dropped after --read-timeout, at most --workers requests
are answered at once, bodies above --max-body-bytes get 413 before they are read.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from ..clock import SystemClock
from .http import make_server
from .server import APIS, FAULT_KINDS, MAX_BODY_BYTES, MockLLMServer

__all__ = ["add_parser", "run"]

_DESCRIPTION = __doc__


def _outage(text: str) -> tuple[float, float, int]:
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        start, end = float(parts[0]), float(parts[1])
        status = int(parts[2]) if len(parts) == 3 else 503
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--outage takes START:END[:STATUS] (seconds after start, HTTP status), got {text!r}"
        ) from None
    if not 0 <= start < end:
        raise argparse.ArgumentTypeError(f"--outage needs 0 <= START < END, got {text!r}")
    if not 400 <= status <= 599:
        raise argparse.ArgumentTypeError(f"--outage STATUS must be 400-599, got {text!r}")
    return start, end, status


def _fail(text: str) -> tuple[str, int]:
    kind, _, count_text = text.partition(":")
    if kind not in FAULT_KINDS:
        raise argparse.ArgumentTypeError(
            f"--fail KIND must be one of {', '.join(FAULT_KINDS)}, got {kind!r}"
        )
    try:
        count = int(count_text) if count_text else 1
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"--fail COUNT must be an integer >= 1, got {text!r}")
    return kind, count


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve-mock`` on an argparse subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve-mock", help="serve the mock LLM API on 127.0.0.1 for real clients",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port; 8000)")
    p.add_argument("--api", choices=APIS, default="openai", help="which API's URL to announce")
    p.add_argument("--rpm", type=float, default=None, help="requests per minute (unlimited)")
    p.add_argument("--tpm", type=float, default=None, help="tokens per minute (unlimited)")
    p.add_argument("--itpm", type=float, default=None,
                   help="Anthropic input tokens per minute (unlimited)")
    p.add_argument("--otpm", type=float, default=None,
                   help="Anthropic output tokens per minute (unlimited)")
    p.add_argument("--burst-seconds", type=float, default=60.0,
                   help="bucket size in seconds of refill (60; 1 for per-second enforcement)")
    p.add_argument("--latency", type=float, default=0.05,
                   help="seconds to the first byte of an answer (0.05)")
    p.add_argument("--chunk-delay", type=float, default=0.0,
                   help="seconds between two streamed deltas (0)")
    p.add_argument("--prompt-caching", action="store_true",
                   help="report prompt-cache reads and writes as the APIs bill them")
    p.add_argument("--reasoning-tokens", type=int, default=0,
                   help="hidden reasoning tokens per OpenAI answer (0)")
    p.add_argument("--error-rate", type=float, default=0.0, help="probability of a random 500")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="model named in answers (echo the request's)")
    p.add_argument("--context-window", type=int, default=None,
                   help="tokens; prompt + max_tokens above it answers context_length_exceeded")
    p.add_argument("--outage", type=_outage, action="append", default=[],
                   metavar="START:END[:STATUS]", help="an outage window (repeatable)")
    p.add_argument("--fail", type=_fail, action="append", default=[], metavar="KIND[:COUNT]",
                   help=f"fail the next requests (repeatable); KIND in {', '.join(FAULT_KINDS)}")
    p.add_argument("--read-timeout", type=float, default=10.0,
                   help="seconds a client has to send a request head before it is dropped (10)")
    p.add_argument("--workers", type=int, default=64,
                   help="requests answered at once; more wait with their bodies unread (64)")
    p.add_argument("--max-connections", type=int, default=1024,
                   help="open connections; more are closed at once (1024)")
    p.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES,
                   help=f"larger request bodies get 413 before being read ({MAX_BODY_BYTES})")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    return p


def run(args: argparse.Namespace) -> int:
    """Build the server from ``args`` and serve until Ctrl+C (or SIGTERM)."""
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.verbose:
        logging.getLogger("llm_patterns.mock").setLevel(logging.DEBUG)
    clock = SystemClock()
    try:
        mock = MockLLMServer(
            rpm=args.rpm, tpm=args.tpm, itpm=args.itpm, otpm=args.otpm,
            burst_seconds=args.burst_seconds, latency=args.latency, chunk_delay=args.chunk_delay,
            error_rate=args.error_rate, seed=args.seed, clock=clock, api=args.api,
            model=args.model, context_window=args.context_window,
            prompt_caching=args.prompt_caching, reasoning_tokens=args.reasoning_tokens,
            max_body_bytes=args.max_body_bytes,
        )
        t0 = clock.now()
        for start, end, status in args.outage:
            mock.outage(t0 + start, t0 + end, status)
        for kind, count in args.fail:
            mock.fail_next(kind, count)
        httpd = make_server(mock, args.port, workers=args.workers,
                            max_connections=args.max_connections,
                            read_timeout=args.read_timeout)
    except (ValueError, TypeError, OSError) as err:
        print(f"serve-mock: {err}", file=sys.stderr)
        return 2 if not isinstance(err, OSError) else 1
    url = httpd.url + ("/v1" if args.api == "openai" else "")
    print(f"serving mock {args.api} API on {url} (Ctrl+C to stop)", flush=True)
    def on_sigterm(signum: int, frame: object) -> None:
        httpd.stop_soon()

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a test)
        previous = None
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        stats = mock.stats
        print(f"stopped after {stats['requests']} requests {stats['by_status']}", flush=True)
    return 0
