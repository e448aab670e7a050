"""Benchmark 2: the same load when the server counts 20% more tokens than the client estimates.

``MockLLMServer(tpm_multiplier=1.2)``: the server's prompt-token count is 1.2x the shared
``estimate_tokens`` (a tokenizer the client does not have). A client-side limiter that trusts
its estimate over-admits and collects 429s. Ours (``ResilientClient``) settles each estimate
against the reported usage, and the limiter LEARNS the ratio of actual to estimated tokens from
those settlements and charges later calls with it (``RateLimiter.settle``, issue 15); it also
lowers its levels to the ``x-ratelimit-remaining-*`` headers, aged for what was sent since.
The "ours, plain dual bucket" row is the same RPM+TPM limiter and retry policy wired by hand,
with no feedback at all. Target (issue 15): utilization >= 0.97 with at most one 429 (the first
wave, sent before any answer could teach the limiter anything).

    .venv/bin/python benchmarks/estimate_mismatch.py [--quick] [--repeats 3]
"""

from __future__ import annotations

import sys

import clients as C  # type: ignore[import-not-found]
from rate_limit_utilization import OURS, run  # type: ignore[import-not-found]

NAME = "estimate_mismatch"
CLIENTS: list[tuple[str, C.Factory]] = [
    (OURS, C.ours_client),
    ("ours, plain dual bucket: RateLimiter + RetryPolicy by hand, no feedback",
     C.ours_limiter_only),
    ("openai SDK (max_retries=10)", C.openai_sdk),
    ("aiolimiter (RPM+TPM) + tenacity", C.aiolimiter_tenacity),
    ("pyrate-limiter (RPM+TPM) + tenacity", C.pyrate_tenacity),
]

if __name__ == "__main__":
    run(sys.argv[1:], name=NAME, multiplier=1.2, clients=CLIENTS, target_util=0.97,
        target_429_max=1, description=__doc__ or "")
