"""Provider timeouts (SDK defaults, per call, capped by a deadline) and response bounds
(overall deadline, body-size cap, bounded decompression), for both APIs, sync and async.

Time is virtual: a "slow" server advances the VirtualClock as it sends, so the overall deadline is
exercised without waiting. One loopback test drips bytes from a real socket server.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from llm_patterns import Request, VirtualClock
from llm_patterns.errors import (
    ConnectionFailed,
    InvalidRequestError,
    MalformedResponse,
    ProviderTimeout,
    RateLimitError,
    ServerError,
)
from llm_patterns.providers import DEFAULT_TIMEOUT, AnthropicProvider, OpenAIProvider

KEY = "sk-proj-BOUNDSabcdefghijklmnopqrstuvwxyz0123456789"
APIS = ["openai", "anthropic"]


def ok_body(api: str) -> dict:
    if api == "openai":
        return {"id": "c", "object": "chat.completion", "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    return {"id": "m", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "text", "text": "hi"}], "stop_reason": "max_tokens",
            "usage": {"input_tokens": 3, "output_tokens": 1}}


def make(api, handler, **kw):
    cls = OpenAIProvider if api == "openai" else AnthropicProvider
    transport = httpx.MockTransport(handler)
    kw.setdefault("api_key", KEY)
    return cls("p", "m", client=httpx.Client(transport=transport, timeout=5.0),
               async_client=httpx.AsyncClient(transport=transport, timeout=5.0), **kw)


def call(provider, mode, *args, **kw):
    if mode == "sync":
        return provider.complete(*args, **kw)
    return asyncio.run(provider.acomplete(*args, **kw))


class Seen:
    """A handler that answers ``ok_body`` and keeps each request's timeout extension."""

    def __init__(self, api):
        self.api = api
        self.timeouts: list[dict] = []

    def __call__(self, request):
        self.timeouts.append(request.extensions["timeout"])
        return httpx.Response(200, json=ok_body(self.api))


# -- timeouts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sdk_default_timeout_applies_over_a_passed_clients_own(api, mode):
    seen = Seen(api)
    r = call(make(api, seen), mode, "x")
    assert seen.timeouts == [{"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0}]
    assert httpx.Timeout(600, connect=5) == DEFAULT_TIMEOUT
    assert r.finish_reason == "length"


@pytest.mark.parametrize("api", APIS)
def test_per_call_timeout_and_time_left(api):
    seen = Seen(api)
    p = make(api, seen)
    p.complete("x", timeout=20)
    p.complete("x", timeout=httpx.Timeout(30, connect=2))
    p.send(Request("x"), time_left=2.5)  # a retry deadline with 2.5 s left
    p.send(Request("x", timeout=1.0), time_left=2.5)
    assert seen.timeouts == [
        {"connect": 20.0, "read": 20.0, "write": 20.0, "pool": 20.0},
        {"connect": 2.0, "read": 30.0, "write": 30.0, "pool": 30.0},
        {"connect": 2.5, "read": 2.5, "write": 2.5, "pool": 2.5},
        {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0},
    ]
    for bad, exc in ((0, ValueError), (-1, ValueError), (float("nan"), ValueError),
                     ("5", TypeError)):
        with pytest.raises(exc, match="time_left"):
            p.send(Request("x"), time_left=bad)


# -- the overall deadline -------------------------------------------------------------------------
class Drip(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body sent one byte at a time, each ``gap`` virtual seconds apart."""

    def __init__(self, clock, content: bytes, gap: float = 0.02):
        self.clock, self.content, self.gap, self.sent = clock, content, gap, 0

    def __iter__(self) -> Iterator[bytes]:
        for i in range(len(self.content)):
            self.clock.advance(self.gap)
            self.sent += 1
            yield self.content[i:i + 1]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dripping_server_is_cut_at_the_deadline(api, mode):
    clock = VirtualClock()
    body = json.dumps(ok_body(api)).encode() + b" " * 5000  # 100+ s at 20 ms a byte
    streams = []

    def handler(request):
        streams.append(Drip(clock, body))
        return httpx.Response(200, stream=streams[-1])

    p = make(api, handler, clock=clock, timeout=1.0)
    with pytest.raises(ProviderTimeout, match="deadline") as info:
        call(p, mode, "x")
    assert clock.now() <= 1.0 + 0.02 + 1e-9  # not one read timeout per byte
    assert streams[0].sent <= 51
    assert info.value.provider == "p" and info.value.status_code == 200
    # a body that arrives in time is read whole
    whole = json.dumps(ok_body(api)).encode()
    start = clock.now()
    fast = make(api, lambda r: httpx.Response(200, stream=Drip(clock, whole, gap=0.001)),
                clock=clock, timeout=1.0)
    assert call(fast, mode, "x").text == "hi"
    assert clock.now() - start == pytest.approx(len(whole) * 0.001)


@pytest.mark.parametrize("api", APIS)
def test_time_left_shrinks_the_deadline(api):
    clock = VirtualClock()
    body = json.dumps(ok_body(api)).encode() + b" " * 5000
    p = make(api, lambda r: httpx.Response(200, stream=Drip(clock, body)), clock=clock)
    with pytest.raises(ProviderTimeout, match="deadline"):
        p.send(Request("x"), time_left=0.5)
    assert clock.now() <= 0.5 + 0.02 + 1e-9


def _dripping_server(body: bytes, gap: float,
                     stop: threading.Event) -> tuple[socket.socket, threading.Thread]:
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: %d\r\n\r\n" % len(body))
            for i in range(len(body)):
                if stop.wait(gap):
                    return
                try:
                    conn.sendall(body[i:i + 1])
                except OSError:
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


def test_a_real_dripping_socket_is_cut_at_the_deadline():
    body = json.dumps(ok_body("openai")).encode() + b" " * 2000  # 40 s at 20 ms a byte
    stop = threading.Event()
    server, thread = _dripping_server(body, 0.02, stop)
    port = server.getsockname()[1]
    try:
        with OpenAIProvider("p", "m", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY,
                            timeout=0.3) as p, pytest.raises(ProviderTimeout, match="deadline"):
            p.complete("x")  # each read returns in 20 ms: only the deadline can stop it
    finally:
        stop.set()
        server.close()
        thread.join(5)
    assert not thread.is_alive()


# -- size cap and decompression -------------------------------------------------------------------
class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks):
        self.chunks, self.sent = list(chunks), 0

    def __iter__(self):
        for c in self.chunks:
            self.sent += len(c)
            yield c

    async def __aiter__(self):
        for c in self:
            yield c


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_cap_is_refused(api, mode, declared):
    big = b'{"pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    stream = Chunks([big[i:i + 65536] for i in range(0, len(big), 65536)])
    headers = {"content-length": str(len(big))} if declared else {}
    p = make(api, lambda r: httpx.Response(200, headers=headers, stream=stream),
             max_response_bytes=1024 * 1024)
    with pytest.raises(MalformedResponse, match="1048576-byte limit"):
        call(p, mode, "x")
    assert stream.sent <= (0 if declared else 1024 * 1024 + 65536)


def _bomb(size: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1024 * 1024)
    return b"".join([*(z.compress(block) for _ in range(size // len(block))), z.flush()])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_gzip_bomb_never_expands_past_the_cap(mode):
    bomb = _bomb(64 * 1024 * 1024)
    assert len(bomb) < 200_000
    p = make("openai", lambda r: httpx.Response(
        200, headers={"content-encoding": "gzip"}, stream=Chunks([bomb])),
        max_response_bytes=1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedResponse, match="limit"):
            call(p, mode, "x")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024  # 64 MB expanded in full would be 4x this


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("encoding, compress", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, no zlib header
])
def test_compressed_answers_are_read(api, encoding, compress):
    data = compress(json.dumps(ok_body(api)).encode())
    chunks = [data[i:i + 7] for i in range(0, len(data), 7)]
    p = make(api, lambda r: httpx.Response(200, headers={"content-encoding": encoding},
                                           stream=Chunks(chunks)))
    assert p.complete("x").text == "hi"


def test_we_ask_only_for_encodings_we_bound():
    seen = []

    def handler(request):
        seen.append(request.headers["accept-encoding"])
        return httpx.Response(200, json=ok_body("openai"))

    make("openai", handler).complete("x")
    assert seen == ["gzip, deflate"]


@pytest.mark.parametrize("encoding, content", [("br", b"\x8b\x00"), ("gzip", b"not gzip")])
def test_unsupported_or_broken_encoding_is_malformed(encoding, content):
    p = make("openai", lambda r: httpx.Response(200, headers={"content-encoding": encoding},
                                                stream=Chunks([content])))
    with pytest.raises(MalformedResponse, match=r"content-encoding|gzip"):
        p.complete("x")


@pytest.mark.parametrize("status, cls", [(400, InvalidRequestError), (429, RateLimitError),
                                         (503, ServerError)])
def test_a_huge_error_body_is_read_only_for_its_message(status, cls):
    head = json.dumps({"error": {"message": "real reason", "type": "t"}}).encode()
    stream = Chunks([head, *([b" " * 65536] * 200)])  # 13 MB of padding after the JSON
    p = make("openai", lambda r: httpx.Response(status, stream=stream,
                                                headers={"x-request-id": "req_big"}))
    with pytest.raises(cls) as info:
        p.complete("x")
    assert info.value.request_id == "req_big" and info.value.status_code == status
    assert stream.sent < 200 * 1024  # stopped after the first 64 KiB


@pytest.mark.parametrize("api", APIS)
def test_max_response_bytes_is_validated(api):
    with pytest.raises(ValueError, match="max_response_bytes"):
        make(api, Seen(api), max_response_bytes=10)
    with pytest.raises(TypeError, match="max_response_bytes"):
        make(api, Seen(api), max_response_bytes="big")


class Breaks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that breaks after its first chunk (the connection dropped mid-answer)."""

    def __iter__(self):
        yield b'{"choices": '
        raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self):
        for chunk in self:
            yield chunk


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("should_retry, retryable", [(None, True), ("false", False)])
def test_a_body_broken_mid_answer_keeps_the_answers_id_and_x_should_retry(mode, should_retry,
                                                                          retryable):
    headers = {"x-request-id": "req_mid"}
    if should_retry:
        headers["x-should-retry"] = should_retry
    p = make("openai", lambda r: httpx.Response(200, headers=headers, stream=Breaks()))
    with pytest.raises(ConnectionFailed) as info:
        call(p, mode, "x")
    err = info.value
    assert (err.request_id, err.status_code, err.retryable) == ("req_mid", 200, retryable)
    assert "req_mid" in str(err) and "ReadError" in str(err)
