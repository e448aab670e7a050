"""The loopback HTTP server answers byte for byte as the in-process transport does: the same
seeded server, the same requests (completions, streams, tool calls, faults, bad bodies, wrong
content types, unknown paths), the same statuses, headers and bodies."""

from __future__ import annotations

import httpx

from llm_patterns.clock import VirtualClock
from llm_patterns.mock import MockLLMServer, running

SKIP = {"content-length", "transfer-encoding", "connection", "date", "server"}
OA = {"model": "gpt-4o-mini", "max_tokens": 40,
      "messages": [{"role": "user", "content": "Explain token buckets in one line"}]}
AN = {"model": "claude-haiku-4-5", "max_tokens": 40,
      "messages": [{"role": "user", "content": "Explain token buckets in one line"}]}
TOOL = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

# (fault to queue or None, path, body bytes, content type)
SCRIPT = [
    (None, "/v1/chat/completions", OA, "application/json"),
    (None, "/v1/messages", AN, "application/json"),
    (None, "/v1/chat/completions", OA | {"stream": True, "stream_options":
                                         {"include_usage": True}}, "application/json"),
    (None, "/v1/messages", AN | {"stream": True}, "application/json"),
    (None, "/v1/messages", AN | {"tools": [{"name": "w", "input_schema": TOOL}]},
     "application/json"),
    (None, "/v1/chat/completions", OA | {"tools": [{"type": "function", "function": {
        "name": "w", "parameters": TOOL}}], "stream": True}, "application/json"),
    ("rate_limit", "/v1/chat/completions", OA, "application/json"),
    ("credit_balance_too_low", "/v1/messages", AN, "application/json"),
    ("enforced_spend_limit_reached", "/v1/messages", AN, "application/json"),
    ("model_not_found", "/v1/chat/completions", OA, "application/json"),
    ("content_filter", "/v1/messages", AN, "application/json"),
    ("stream_error", "/v1/messages", AN | {"stream": True}, "application/json"),
    ("malformed", "/v1/chat/completions", OA, "application/json"),
    (None, "/v1/messages", {"model": "m", "messages": []}, "application/json"),
    (None, "/v1/chat/completions", b"{not json", "application/json"),
    (None, "/v1/chat/completions", OA, "text/plain"),
    (None, "/v1/nowhere", OA, "application/json"),
    (None, "/v1/chat/completions", OA, "application/json"),  # 429 from the RPM bucket
]


def _server() -> MockLLMServer:
    return MockLLMServer(clock=VirtualClock(), latency=0.0, seed=11, rpm=480, burst_seconds=1.0,
                         itpm=100_000, otpm=20_000)


def _answers(server: MockLLMServer, client: httpx.Client) -> list[tuple]:
    out = []
    for fault, path, body, ctype in SCRIPT:
        if fault:
            server.fail_next(fault)
        content = body if isinstance(body, bytes) else httpx.Request(
            "POST", "http://x", json=body).content
        r = client.post(path, content=content, headers={"content-type": ctype})
        out.append((r.status_code, {k: v for k, v in r.headers.items() if k not in SKIP},
                    r.read()))
    stats = server.stats
    stats.pop("log")
    return [*out, stats]


def test_loopback_http_answers_as_the_in_process_transport():
    local_server = _server()
    with local_server.client(base_url="http://mock.llm") as client:
        local = _answers(local_server, client)
    remote_server = _server()
    with running(remote_server) as url, httpx.Client(base_url=url, timeout=5) as client:
        remote = _answers(remote_server, client)
    statuses = [status for status, _, _ in local[:-1]]
    assert statuses == [200, 200, 200, 200, 200, 200, 429, 400, 429, 404, 200, 200, 200, 400,
                        400, 415, 404, 429]
    assert local[2][1]["content-type"].startswith("text/event-stream")
    for i, (a, b) in enumerate(zip(local, remote, strict=True)):
        assert a == b, f"step {i} differs"
